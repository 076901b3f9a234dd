"""PINA's settings: network sizes, loss weights (PINA Eq. 9–12) and the two-stage schedule.

Three presets (``rgbd2avatar fit --preset``):

- ``fast``: small networks, few points and steps; a CPU demo in minutes, coarse geometry.
- ``default``: moderate networks; tens of minutes on a CPU, minutes on a GPU.
- ``quality``: ``default`` with four times the points per joint step (8 frames × 1,024) and a
  finer canonical mesh; meant for a GPU, where a larger batch costs almost nothing (the step is
  bound by launching kernels), and about half an hour on a 2-core CPU. On the ``small``
  protocol more points per step helped the training frames, more steps the training frames
  only; the networks stay ``default``'s, which reach 0.33 cm from the true poses (the error left
  is the poses'). See docs/pina_experiments.md.

Every field is plain data (JSON-able), so a configuration is recorded in the workspace manifest
and in checkpoints, and a changed setting re-runs the stage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class LossWeights:
    """Weights λ of PINA's objective (Eq. 9–10) and of our two regularisers.

    Attributes:
        sdf: λ_sdf, mean |SDF(x_d)| of observed points (on-surface, Eq. 10).
        normal: λ_n, mean ‖n_obs − n_d‖ of observed points (Eq. 10).
        off: λ_off, mean |SDF(x_d) − SDF_body(x_d)| of points away from the fitted body (Eq. 11).
        eikonal: λ_eik, mean (‖∇f_sdf(x_c)‖ − 1)² in canonical space (Eq. 12).
        skinning: ours: mean KL divergence of the learned skinning weights from the body model's on
            the canonical body surface, keeping the skinning field anchored while poses move.
        pose: ours: mean squared change of the refined poses (radians) from the body fit.
    """

    sdf: float = 1.0
    normal: float = 0.1
    off: float = 0.1
    eikonal: float = 0.1
    skinning: float = 0.1
    pose: float = 1.0


@dataclass(frozen=True)
class PinaConfig:
    """One PINA optimisation.

    Attributes:
        sdf_hidden, sdf_layers, sdf_freqs: the SDF MLP's width, depth and positional-encoding
            frequencies; skin_hidden, skin_layers: the skinning MLP's.
        pretrain_steps: stage 1, shape and skinning fitted to the canonical body mesh.
        joint_steps: stage 2, shape, skinning and every frame's pose fitted to the depth frames.
        frames_per_step, points_per_frame: observed points per step (on-surface terms).
        off_points_per_frame: off-surface points per frame and step; eikonal_points: canonical
            points per step; pretrain_points: canonical samples per pretraining step.
        lr, pose_lr: Adam learning rates of the networks and of the per-frame poses; the network
            rate decays by ``lr_decay`` over each stage (cosine).
        off_margin: off-surface points are those at least this far (m) from the fitted body.
        optimise_poses: False reproduces PINA's "w/o pose opt." ablation.
        checkpoint_every: steps between checkpoints (also written on Ctrl-C).
        mesh_resolution: MISE resolution of the canonical mesh written at the end.
        max_points: observed points kept per frame on the device (drawn once, seeded).
        seed: seeds the networks' initialisation and every sample drawn.
        weights: :class:`LossWeights`.
    """

    sdf_hidden: int = 128
    sdf_layers: int = 6
    sdf_freqs: int = 6
    skin_hidden: int = 64
    skin_layers: int = 4
    pretrain_steps: int = 300
    joint_steps: int = 1000
    frames_per_step: int = 4
    points_per_frame: int = 512
    off_points_per_frame: int = 128
    eikonal_points: int = 1024
    pretrain_points: int = 4096
    lr: float = 1e-3
    lr_decay: float = 0.1
    pose_lr: float = 5e-4
    off_margin: float = 0.05
    optimise_poses: bool = True
    checkpoint_every: int = 50
    mesh_resolution: int = 256
    max_points: int = 4000
    seed: int = 0
    weights: LossWeights = field(default_factory=LossWeights)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (nested weights included)."""
        return asdict(self)

    @staticmethod
    def from_dict(values: dict[str, Any]) -> PinaConfig:
        """Inverse of :meth:`to_dict`."""
        return PinaConfig(**{**values, "weights": LossWeights(**values["weights"])})

    @property
    def total_steps(self) -> int:
        return self.pretrain_steps + self.joint_steps


PRESETS: dict[str, PinaConfig] = {
    "fast": PinaConfig(
        sdf_hidden=96, sdf_layers=5, sdf_freqs=4, skin_hidden=48, pretrain_steps=200, joint_steps=400,
        frames_per_step=2, points_per_frame=384, off_points_per_frame=96, eikonal_points=512,
        pretrain_points=2048, lr=2e-3, checkpoint_every=25, mesh_resolution=128,
    ),
    "default": PinaConfig(),
    "quality": PinaConfig(
        frames_per_step=8, points_per_frame=1024, off_points_per_frame=256, mesh_resolution=512,
    ),
}  # fmt: skip


def preset(name: str, **overrides: Any) -> PinaConfig:
    """A preset by name, with fields replaced by ``overrides`` (``None`` values are ignored)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{key: value for key, value in overrides.items() if value is not None})
