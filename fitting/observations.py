"""What the per-frame body fit sees: person points with normals, 2D keypoints, DensePose
correspondences — padded to rectangular tensors so the fit runs batched over frames.

Shapes: F frames, N points per frame (padded), K keypoints, M DensePose correspondences per
frame (padded).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from capture.sequence import Calibration


@dataclass
class FitObservations:
    """Observations of F frames, in the depth camera's frame (metres).

    Attributes:
        frames: (F,) long, frame indices in the recording.
        points: (F, N, 3) float32 person points; padding rows are zero.
        normals: (F, N, 3) float32 PCA normals, oriented towards the camera.
        valid: (F, N) bool, which rows of ``points`` are real.
        keypoints: (F, K, 3) float32 detections (x, y, confidence) in colour-image pixels,
            confidence 0 where the detector reported nothing; None without keypoints.
        keypoint_names: the K names (``rgbd2avatar.body.keypoints.COCO17`` or ``BODY25``), or None.
        dp_points: (F, M) long, index into ``points`` of each DensePose-labelled point.
        dp_triangles: (F, M) long, the body-model triangle DensePose assigns to that point.
        dp_barycentrics: (F, M, 3) float32, its position in the triangle.
        dp_valid: (F, M) bool, which rows are real (M = 0 without DensePose).
        calibration: the recording's calibration (depth and colour cameras, depth→colour).
    """

    frames: torch.Tensor
    points: torch.Tensor
    normals: torch.Tensor
    valid: torch.Tensor
    keypoints: torch.Tensor | None
    keypoint_names: tuple[str, ...] | None
    dp_points: torch.Tensor
    dp_triangles: torch.Tensor
    dp_barycentrics: torch.Tensor
    dp_valid: torch.Tensor
    calibration: Calibration

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    def to(self, device: torch.device | str) -> FitObservations:
        """The same observations with every tensor on ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)

    def select(self, index: torch.Tensor | slice) -> FitObservations:
        """The observations of a subset of frames (an index tensor or a slice over F)."""
        picked = {
            f.name: getattr(self, f.name)[index]
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **picked)


def pad_rows(rows: list[torch.Tensor], fill: float | int | bool = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-length rows into one padded tensor.

    Args:
        rows: F tensors of shape (N_f, ...), same trailing shape and dtype.
    Returns:
        padded (F, max N_f, ...) and valid (F, max N_f) bool.
    """
    longest = max((len(r) for r in rows), default=0)
    trailing = rows[0].shape[1:] if rows else ()
    dtype = rows[0].dtype if rows else torch.float32
    padded = torch.full((len(rows), longest, *trailing), fill, dtype=dtype)
    valid = torch.zeros(len(rows), longest, dtype=torch.bool)
    for f, row in enumerate(rows):
        padded[f, : len(row)] = row
        valid[f, : len(row)] = True
    return padded, valid
