"""Differentiable camera maths in torch: the Azure Kinect's Brown–Conrady lens and the depth→colour
transform, the same model as :mod:`capture.calibration` (numpy), usable inside an optimisation.

Lens model (OpenCV's 8-coefficient rational model with tangential terms; see
:mod:`capture.calibration` for where it comes from): for an ideal normalised point (x, y) = (X/Z, Y/Z)
with r² = x² + y²::

    radial = (1 + k1 r² + k2 r⁴ + k3 r⁶) / (1 + k4 r² + k5 r⁴ + k6 r⁶)
    x_d = x·radial + 2 p1 x y + p2 (r² + 2 x²)
    y_d = y·radial + p1 (r² + 2 y²) + 2 p2 x y
    u = fx x_d + cx,   v = fy y_d + cy          (pixel centres at integers)

Unlike the numpy functions, which return NaN for points that cannot be projected, these return
finite pixels everywhere plus a validity mask, so that gradients never see a NaN: callers weight
invalid points by zero. Everything runs in the dtype and on the device of the input points.

Shapes: ... any leading batch dimensions (e.g. F frames × K keypoints).
"""

from __future__ import annotations

import torch

from capture.calibration import DEFAULT_METRIC_RADIUS
from capture.sequence import Calibration, CameraIntrinsics

MIN_DEPTH = 1e-3
"""Points closer to the camera plane than this (metres) are not projected."""


def radial_factor(r2: torch.Tensor, intrinsics: CameraIntrinsics) -> torch.Tensor:
    """The rational radial factor at squared normalised radii r² (...,) → (...,)."""
    ic = intrinsics
    numerator = 1.0 + r2 * (ic.k1 + r2 * (ic.k2 + r2 * ic.k3))
    denominator = 1.0 + r2 * (ic.k4 + r2 * (ic.k5 + r2 * ic.k6))
    return numerator / denominator


def distort(xy: torch.Tensor, intrinsics: CameraIntrinsics) -> torch.Tensor:
    """Apply the lens distortion to ideal normalised points.

    Args:
        xy: (..., 2) ideal normalised points (X/Z, Y/Z).
        intrinsics: the camera (only its distortion coefficients are used).
    Returns:
        (..., 2) distorted normalised points ((u − cx)/fx, (v − cy)/fy).
    """
    x, y = xy.unbind(-1)
    xx, yy, xy_ = x * x, y * y, x * y
    r2 = xx + yy
    radial = radial_factor(r2, intrinsics)
    p1, p2 = intrinsics.p1, intrinsics.p2
    x_d = x * radial + 2.0 * p1 * xy_ + p2 * (r2 + 2.0 * xx)
    y_d = y * radial + p1 * (r2 + 2.0 * yy) + 2.0 * p2 * xy_
    return torch.stack([x_d, y_d], -1)


def project(
    points: torch.Tensor, intrinsics: CameraIntrinsics, metric_radius: float = DEFAULT_METRIC_RADIUS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project camera-frame points through the distorted lens (matches ``capture.calibration.project``).

    Args:
        points: (..., 3) points in the camera frame (OpenCV axes, metres).
        intrinsics: the camera.
        metric_radius: valid normalised radius (see :mod:`capture.calibration`).
    Returns:
        pixels (..., 2) (u, v), pixel centres at integers, finite everywhere (meaningless where not
        valid); valid (...,) bool: in front of the camera (z > :data:`MIN_DEPTH`) and within
        ``metric_radius``.
    """
    z = points[..., 2]
    in_front = z > MIN_DEPTH
    ideal = points[..., :2] / torch.where(in_front, z, torch.ones_like(z))[..., None]
    valid = in_front & ((ideal * ideal).sum(-1) <= metric_radius**2)
    ideal = torch.where(valid[..., None], ideal, torch.zeros_like(ideal))
    x_d, y_d = distort(ideal, intrinsics).unbind(-1)
    pixels = torch.stack([intrinsics.fx * x_d + intrinsics.cx, intrinsics.fy * y_d + intrinsics.cy], -1)
    return pixels, valid


def transform_points(transform: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply a (4, 4) rigid transform to points (..., 3): ``R p + t``."""
    return points @ transform[:3, :3].T + transform[:3, 3]


def depth_to_color(calibration: Calibration, like: torch.Tensor) -> torch.Tensor:
    """(4, 4) ``calibration.depth_to_color`` as a tensor with the dtype and device of ``like``."""
    return torch.as_tensor(calibration.depth_to_color, dtype=like.dtype, device=like.device)


def project_to_color(
    points: torch.Tensor, calibration: Calibration, metric_radius: float = DEFAULT_METRIC_RADIUS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour-image pixels of depth-camera points.

    Args:
        points: (..., 3) in the depth camera's frame (metres).
        calibration: with a colour camera.
    Returns:
        pixels (..., 2) and valid (...,) as :func:`project` in the colour camera.
    """
    if calibration.color is None:
        raise ValueError("the calibration has no colour camera")
    moved = transform_points(depth_to_color(calibration, points), points)
    return project(moved, calibration.color, metric_radius)
