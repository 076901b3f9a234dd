"""The ``fit`` stage (PINA): optimise the avatar on a subject and write ``SUBJECT/pina/``::

    checkpoint.pt    the optimisation's state every ``checkpoint_every`` steps (resume point)
    avatar.pt        the fitted avatar and the refined poses (:mod:`rgbd2avatar.avatar.store`)
    poses.npz        frames (F,), poses (F, 72), trans (F, 3) refined; initial_poses, initial_trans
    canonical.ply    the canonical mesh (MISE) for the canonical pose condition
    train.json       configuration, loss history, timings (s/step per stage), device

A run that stops (Ctrl-C, a kill) leaves ``checkpoint.pt``; the next ``rgbd2avatar fit`` with the
same inputs and configuration continues from it, losing at most the steps since the last one.

Shapes: F frames.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from capture.files import save_npz, sha256_file, write_json
from fitting.pina.config import PinaConfig
from fitting.pina.data import PinaData, load_pina_data
from fitting.pina.trainer import PinaTrainer
from rgbd2avatar.avatar.meshes import canonical_mesh
from rgbd2avatar.avatar.store import save_avatar
from rgbd2avatar.body.model import BodyModel
from rgbd2avatar.logs import Timer
from rgbd2avatar.meshio import write_mesh

log = logging.getLogger(__name__)

LOG_EVERY = 50
"""Steps between loss lines in the log."""


def input_signature(subject: Path, config: PinaConfig, device: torch.device) -> str:
    """Identifies what a checkpoint was computed from: the body fits, the kept frames, the device."""
    return files_signature(
        [subject / "body_fit" / "fits.npz", subject / "preprocess" / "index.json"], config, device
    )


def files_signature(paths: list[Path], config: PinaConfig, device: torch.device) -> str:
    """A digest of the files' contents, the configuration and the device type."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(sha256_file(path).encode())
    digest.update(repr(sorted(config.to_dict().items())).encode())
    digest.update(device.type.encode())
    return digest.hexdigest()


def run_pina(
    subject: Path,
    body: BodyModel,
    config: PinaConfig,
    device: torch.device,
    model_dir: str | None = None,
    gender: str = "neutral",
    report: Callable[[int, int], None] | None = None,
) -> dict:
    """Optimise (or resume) the avatar of ``subject`` and write ``SUBJECT/pina/``.

    Returns:
        The summary written to ``train.json``.
    """
    data = load_pina_data(subject, body, config)
    signature = input_signature(subject, config, device)
    return optimise_avatar(subject / "pina", data, body, config, device, signature, model_dir, gender, report)


def optimise_avatar(
    out: Path,
    data: PinaData,
    body: BodyModel,
    config: PinaConfig,
    device: torch.device,
    signature: str,
    model_dir: str | None = None,
    gender: str = "neutral",
    report: Callable[[int, int], None] | None = None,
) -> dict:
    """PINA on prepared observations: optimise (or resume from ``out/checkpoint.pt`` when its
    ``signature`` matches) and write the avatar, poses, canonical mesh and ``train.json`` to ``out``.

    Returns:
        The summary written to ``train.json``.
    """
    checkpoint = out / "checkpoint.pt"
    data = data.to(device)
    trainer = PinaTrainer(body.to(device), data, config, signature)
    if trainer.resume(checkpoint):
        log.info("resuming from %s at step %d of %d", checkpoint, trainer.step, config.total_steps)
    first_step = trainer.step
    with Timer() as pretrain_timer:
        trainer.run(checkpoint, _reporter(report), until=config.pretrain_steps)
    middle_step = trainer.step
    with Timer() as joint_timer:
        trainer.run(checkpoint, _reporter(report))
    poses, trans = (value.detach() for value in trainer.poses())
    save_avatar(out / "avatar.pt", trainer.avatar, data.frames, poses, trans, model_dir, gender)
    save_npz(
        out / "poses.npz",
        frames=data.frames.cpu().numpy(), poses=poses.cpu().numpy(), trans=trans.cpu().numpy(),
        initial_poses=data.poses.cpu().numpy(), initial_trans=data.trans.cpu().numpy(),
    )  # fmt: skip
    with Timer() as mesh_timer:
        mesh = canonical_mesh(trainer.avatar, resolution=config.mesh_resolution)
    write_mesh(out / "canonical.ply", mesh.vertices, mesh.faces)
    summary = {
        "frames": data.num_frames,
        "device": str(device),
        "steps": config.total_steps,
        "steps_this_run": config.total_steps - first_step,
        "resumed_at_step": first_step,
        "optimisation_seconds": pretrain_timer.seconds + joint_timer.seconds,
        "seconds_per_step": (pretrain_timer.seconds + joint_timer.seconds)
        / max(config.total_steps - first_step, 1),
        "seconds_per_pretrain_step": pretrain_timer.seconds / max(middle_step - first_step, 1),
        "seconds_per_joint_step": joint_timer.seconds / max(config.total_steps - middle_step, 1),
        "mesh_seconds": mesh_timer.seconds,
        "mesh_evaluations": mesh.extraction.evaluations,
        "canonical_vertices": int(len(mesh.vertices)),
        "pose_change_rad": float((poses - data.poses).abs().mean()),
        "config": config.to_dict(),
        "history": trainer.history,
    }
    write_json(out / "train.json", summary)
    return summary


def _reporter(report: Callable[[int, int], None] | None) -> Callable[[int, int, dict[str, float]], None]:
    """Feeds the progress bar each step and logs the losses every :data:`LOG_EVERY` steps."""

    def step_done(step: int, total: int, losses: dict[str, float]) -> None:
        if report is not None:
            report(step, total)
        if step % LOG_EVERY == 0 or step == total:
            log.info("step %d/%d  %s", step, total, "  ".join(f"{k} {v:.4g}" for k, v in losses.items()))

    return step_done


def refined_poses(subject: Path) -> dict[str, np.ndarray]:
    """The ``poses.npz`` arrays of a fitted subject."""
    from capture.files import load_npz

    return load_npz(subject / "pina" / "poses.npz")
