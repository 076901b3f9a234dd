"""Body models on SMPL's 24-joint tree: the free `anny` model (default) and SMPL via smplx."""

from __future__ import annotations

from pathlib import Path

from rgbd2avatar.body.model import BodyModel, BodyOutput, canonical_pose
from rgbd2avatar.errors import UserError

BODY_MODELS = ("anny", "smpl")


def load_body_model(name: str = "anny", model_dir: Path | None = None, gender: str = "neutral") -> BodyModel:
    """Load a body model by name.

    Args:
        name: ``"anny"`` (free, built from the `anny` package and cached) or ``"smpl"``
            (needs the user's SMPL files in ``model_dir``).
        model_dir: folder with SMPL model files (``smpl`` only).
        gender: ``neutral``, ``male`` or ``female`` (``smpl`` only).
    """
    if name == "anny":
        from rgbd2avatar.body.anny_model import load_anny

        return load_anny()
    if name == "smpl":
        from rgbd2avatar.body.smpl import load_smpl

        if model_dir is None:
            raise UserError(
                "The smpl body model needs its model files: pass --model-dir pointing at your SMPL folder."
            )
        return load_smpl(Path(model_dir), gender)
    raise UserError(f"Unknown body model {name!r}: choose one of {', '.join(BODY_MODELS)}.")


__all__ = ["BODY_MODELS", "BodyModel", "BodyOutput", "canonical_pose", "load_body_model"]
