"""The fitted avatar's file, ``SUBJECT/pina/avatar.pt``: a ``torch.save`` dict of plain data
(loaded with ``weights_only=True``)::

    format, version        "rgbd2avatar-avatar", 1
    body_model             "anny" or "smpl"; model_dir, gender: how to load it again
    spec                   AvatarSpec fields (network sizes)
    state                  the Avatar's state dict (networks, shape, canonical box)
    frames, poses, trans   (F,), (F, 72), (F, 3): the training frames' refined poses

Shapes: F frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from capture.files import atomic_path
from rgbd2avatar.avatar.avatar import Avatar, AvatarSpec
from rgbd2avatar.errors import UserError

AVATAR_FORMAT = "rgbd2avatar-avatar"
AVATAR_VERSION = 1


@dataclass
class StoredAvatar:
    """A loaded avatar and its training frames' refined poses (F,), (F, 72), (F, 3)."""

    avatar: Avatar
    frames: torch.Tensor
    poses: torch.Tensor
    trans: torch.Tensor

    def mean_pose(self) -> torch.Tensor:
        """(72,) the mean of the training frames' refined poses: the SDF's pose condition for
        poses the avatar never saw (see :mod:`rgbd2avatar.avatar.meshes`)."""
        return self.poses.mean(0)


def save_avatar(
    path: Path, avatar: Avatar, frames: torch.Tensor, poses: torch.Tensor, trans: torch.Tensor,
    model_dir: str | None = None, gender: str = "neutral",
) -> None:  # fmt: skip
    """Write the avatar file atomically."""
    state = {
        "format": AVATAR_FORMAT,
        "version": AVATAR_VERSION,
        "body_model": avatar.body.name,
        "model_dir": model_dir,
        "gender": gender,
        "spec": avatar.spec.to_dict(),
        "state": {key: value.detach().cpu() for key, value in avatar.state_dict().items()},
        "frames": frames.cpu(),
        "poses": poses.detach().cpu(),
        "trans": trans.detach().cpu(),
    }
    with atomic_path(path) as temp:
        torch.save(state, temp)


def load_avatar(path: Path, device: torch.device | str = "cpu") -> StoredAvatar:
    """Read an avatar file (and load its body model) onto ``device``.

    Raises:
        UserError: no such file, or not an avatar file of this version.
    """
    from rgbd2avatar.body import load_body_model

    state = read_versioned(path, AVATAR_FORMAT, AVATAR_VERSION, "rgbd2avatar fit")
    model_dir = Path(state["model_dir"]) if state["model_dir"] else None
    body = load_body_model(state["body_model"], model_dir, state["gender"])
    avatar = Avatar(body, state["state"]["shape"], AvatarSpec(**state["spec"]))
    avatar.load_state_dict(state["state"])
    avatar = avatar.to(device)
    avatar.body = body.to(device)
    return StoredAvatar(avatar, state["frames"], state["poses"].to(device), state["trans"].to(device))


def read_versioned(path: Path, file_format: str, version: int, command: str) -> dict:
    """A ``torch.save`` dict with ``format`` and ``version`` keys, read with ``weights_only=True``.

    Args:
        command: the command that writes the file, named in the errors (``"rgbd2avatar fit"``).
    Raises:
        UserError: the file is missing, unreadable, or of another format or version.
    """
    if not path.is_file():
        raise UserError(f"{path} does not exist; run `{command} SUBJECT` first.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"{path} is not readable ({error}); run `{command}` again.") from None
    if not isinstance(state, dict) or state.get("format") != file_format:
        raise UserError(f"{path} is not a {file_format} file; run `{command}` again.")
    if state.get("version") != version:
        raise UserError(
            f"{path} has {file_format} version {state.get('version')}; this tool reads {version}: "
            f"run `{command}` again."
        )
    return state
