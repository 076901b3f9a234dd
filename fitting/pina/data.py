"""What PINA optimises against, gathered once onto the device, and the seeded samplers of a step.

From the subject workspace:

- ``preprocess/``: each kept frame's person points and PCA normals (depth camera frame), at most
  ``max_points`` per frame drawn once by (seed, frame) — :func:`fitting.load.subsample`.
- ``body_fit/fits.npz``: the frames' fitted poses and translations and the subject's shape.

Derived here (no gradients, pseudo ground truth):

- Off-surface samples per frame (Eq. 11): points around the fitted posed body, kept when at
  least ``off_margin`` from it, with their signed distance to it.
- Pretraining samples in canonical space: points near and around the canonical body mesh with
  their signed distance and the body model's skinning weights at the closest surface point.

Shapes: F frames, N points per frame, M off-surface points per frame, Q canonical samples,
V vertices, J bones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from capture.files import load_npz
from fitting.load import frame_points, preprocessed_frames, subsample
from fitting.pina.config import PinaConfig
from rgbd2avatar.body.model import BodyModel
from rgbd2avatar.errors import UserError
from rgbd2avatar.geometry import MeshQuery

OFF_SURFACE_POOL = 1024
"""Off-surface samples kept per frame (steps draw from them)."""
PRETRAIN_POOL = 60_000
"""Canonical pretraining samples (steps draw from them)."""
NEAR_SIGMAS = (0.01, 0.05)
"""Standard deviations (m) of the Gaussian offsets from the surface for near-surface samples."""


@dataclass
class PinaData:
    """A subject's observations and pseudo ground truth, on one device.

    Attributes:
        frames: (F,) long recording frame indices.
        points, normals: (F, N, 3) observed points and unit normals; rows past ``counts`` are padding.
        counts: (F,) long, real points per frame.
        poses, trans: (F, 72), (F, 3) the body fit's poses and translations; shape: (S,).
        off_points: (F, M, 3) posed points away from the fitted body; off_sdf: (F, M) their
            signed distance to it.
        canonical_points: (Q, 3) canonical samples; canonical_sdf: (Q,) their signed distance to
            the canonical body; canonical_weights: (Q, J) the body's skinning weights there.
    """

    frames: torch.Tensor
    points: torch.Tensor
    normals: torch.Tensor
    counts: torch.Tensor
    poses: torch.Tensor
    trans: torch.Tensor
    shape: torch.Tensor
    off_points: torch.Tensor
    off_sdf: torch.Tensor
    canonical_points: torch.Tensor
    canonical_sdf: torch.Tensor
    canonical_weights: torch.Tensor

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    def to(self, device: torch.device | str) -> PinaData:
        return PinaData(**{name: value.to(device) for name, value in vars(self).items()})


def load_pina_data(subject: Path, body: BodyModel, config: PinaConfig) -> PinaData:
    """Observations, body fits and pseudo ground truth of a subject workspace (on the CPU), as
    ``config`` asks (its ``max_points``, ``off_margin`` and ``seed``)."""
    fits = load_npz(subject / "body_fit" / "fits.npz")
    if str(fits["body_model"]) != body.name:
        raise UserError(
            f"{subject / 'body_fit'} was fitted with the {fits['body_model']} body model, not {body.name}; "
            "run `rgbd2avatar fit-body` again or pass the same --body-model."
        )
    frames = fits["frames"].astype(np.int64)
    missing = sorted(set(frames.tolist()) - set(preprocessed_frames(subject / "preprocess")))
    if missing:
        raise UserError(f"{subject / 'preprocess'} lacks fitted frames {missing[:5]}; re-run the stages.")
    points, normals, counts = _observed_points(subject / "preprocess", frames, config.max_points, config.seed)
    poses, trans = torch.from_numpy(fits["poses"]), torch.from_numpy(fits["trans"])
    shape = torch.from_numpy(fits["shape"])
    rng = np.random.default_rng(config.seed)
    with torch.no_grad():
        posed = body(poses, shape, trans).vertices.numpy()
        canonical = body.canonical(shape).vertices[0].numpy()
    faces = body.faces.numpy()
    off_points, off_sdf = zip(
        *(off_surface_samples(vertices, faces, config.off_margin, rng) for vertices in posed), strict=True
    )
    canonical_points, canonical_sdf, canonical_weights = canonical_samples(
        canonical, faces, body.weights.numpy(), rng
    )
    return PinaData(
        frames=torch.from_numpy(frames),
        points=points,
        normals=normals,
        counts=counts,
        poses=poses.float(),
        trans=trans.float(),
        shape=shape.float(),
        off_points=torch.from_numpy(np.stack(off_points)),
        off_sdf=torch.from_numpy(np.stack(off_sdf)),
        canonical_points=torch.from_numpy(canonical_points),
        canonical_sdf=torch.from_numpy(canonical_sdf),
        canonical_weights=torch.from_numpy(canonical_weights),
    )


def _observed_points(
    preprocess_dir: Path, frames: np.ndarray, max_points: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded (F, N, 3) points and normals and (F,) counts of the given frames."""
    rows = []
    for frame in frames:
        points, normals = frame_points(preprocess_dir, int(frame))
        keep = subsample(len(points), max_points, seed, int(frame))
        rows.append((points[keep], normals[keep]))
    width = max(len(points) for points, _ in rows)
    empty = [int(frame) for frame, (points, _) in zip(frames, rows, strict=True) if len(points) == 0]
    if empty:
        raise UserError(
            f"{preprocess_dir}: fitted frames {empty[:5]} hold no person points; re-run the stages."
        )
    padded = np.zeros((2, len(rows), width, 3), np.float32)
    for i, (points, normals) in enumerate(rows):
        padded[0, i, : len(points)], padded[1, i, : len(points)] = points, normals
    counts = torch.tensor([len(points) for points, _ in rows])
    return torch.from_numpy(padded[0]), torch.from_numpy(padded[1]), counts


def _box_samples(vertices: np.ndarray, count: int, padding: float, rng: np.random.Generator) -> np.ndarray:
    """(count, 3) points uniform in the vertices' box grown by ``padding`` on every side."""
    low, high = vertices.min(0) - padding, vertices.max(0) + padding
    return (low + rng.random((count, 3)) * (high - low)).astype(np.float32)


def _near_samples(vertices: np.ndarray, count: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """(count, 3) random vertices moved by isotropic Gaussian offsets of ``sigma`` metres."""
    picked = vertices[rng.integers(0, len(vertices), count)]
    return (picked + rng.normal(0.0, sigma, picked.shape)).astype(np.float32)


def off_surface_samples(
    vertices: np.ndarray, faces: np.ndarray, margin: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Points at least ``margin`` from one posed body and their signed distances to it (Eq. 11).

    Half are drawn in the body's box grown by 0.3 m, half 10 cm (σ) around its surface; of the
    points far enough, :data:`OFF_SURFACE_POOL` are kept (drawn again until there are enough).

    Args:
        vertices: (V, 3) posed body; faces: (T, 3).
    Returns:
        (M, 3) float32 points and (M,) float32 signed distances, negative inside.
    """
    query = MeshQuery(vertices, faces)
    kept_points, kept_sdf, total = [], [], 0
    while total < OFF_SURFACE_POOL:
        half = OFF_SURFACE_POOL
        points = np.concatenate(
            [_box_samples(vertices, half, 0.3, rng), _near_samples(vertices, half, 0.1, rng)]
        )
        sdf = query.signed_distance(points)
        far = np.abs(sdf) >= margin
        kept_points.append(points[far])
        kept_sdf.append(sdf[far])
        total += int(far.sum())
    return np.concatenate(kept_points)[:OFF_SURFACE_POOL], np.concatenate(kept_sdf)[:OFF_SURFACE_POOL]


def canonical_samples(
    vertices: np.ndarray, faces: np.ndarray, weights: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pretraining samples around the canonical body: points, signed distances, skinning weights.

    Two fifths near the surface with σ = 1 cm, two fifths with σ = 5 cm, one fifth uniform in the
    box grown by 15 cm. The weights are the body's vertex weights interpolated at the closest
    surface point (barycentric), the usual extension of mesh skinning weights into space.

    Args:
        vertices: (V, 3) canonical body; faces: (T, 3); weights: (V, J).
    Returns:
        (Q, 3) float32 points, (Q,) float32 distances, (Q, J) float32 weights.
    """
    near = [_near_samples(vertices, PRETRAIN_POOL * 2 // 5, sigma, rng) for sigma in NEAR_SIGMAS]
    uniform = _box_samples(vertices, PRETRAIN_POOL - sum(len(n) for n in near), 0.15, rng)
    points = np.concatenate([*near, uniform])
    query = MeshQuery(vertices, faces)
    closest = query.closest_points(points)
    corner_weights = weights[faces[closest.triangle_ids]]  # (Q, 3, J)
    interpolated = np.einsum("qc,qcj->qj", closest.barycentrics, corner_weights)
    return points, query.signed_distance(points), interpolated.astype(np.float32)


def sample_frames(generator: torch.Generator, num_frames: int, count: int) -> torch.Tensor:
    """(min(count, F),) distinct frame rows drawn uniformly."""
    return torch.randperm(num_frames, generator=generator)[:count]


def sample_rows(generator: torch.Generator, counts: torch.Tensor, per_row: int) -> torch.Tensor:
    """(R, per_row) random indices below each row's count (with replacement), counts: (R,) on CPU."""
    uniform = torch.rand(len(counts), per_row, generator=generator)
    return torch.minimum((uniform * counts[:, None]).long(), counts[:, None] - 1)


def gather_rows(values: torch.Tensor, rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values[rows[r], index[r, n]]: (F, N, ...) → (R, per_row, ...)."""
    return values[rows[:, None], index]
