"""Camera maths of the Azure Kinect: lens distortion, projection, back-projection, factory calibrations.

Conventions (all taken from the Azure Kinect Sensor SDK, microsoft/Azure-Kinect-Sensor-SDK):

- Lens model (``src/transformation/intrinsic_transformation.c``, ``transformation_project_internal``,
  model ``K4A_CALIBRATION_LENS_DISTORTION_MODEL_BROWN_CONRADY``): OpenCV's rational model with
  tangential terms. For an ideal normalised point (x, y) = (X/Z, Y/Z) with r² = x² + y²::

      radial = (1 + k1 r² + k2 r⁴ + k3 r⁶) / (1 + k4 r² + k5 r⁴ + k6 r⁶)
      x_d = x·radial + 2 p1 x y + p2 (r² + 2 x²)
      y_d = y·radial + p1 (r² + 2 y²) + 2 p2 x y
      u = fx x_d + cx,   v = fy y_d + cy

  which is exactly OpenCV's ``projectPoints`` with ``dist = (k1, k2, p1, p2, k3, k4, k5, k6)``
  (:attr:`capture.sequence.CameraIntrinsics.dist`). The SDK's centre of distortion (codx, cody) is
  0 for this model and is not kept. (The deprecated "Rational 6KT" model of early devices lacks the
  factor 2 on the ``x y`` tangential terms; it is not supported here.)
- Valid region (same file): the SDK refuses to project a point whose *undistorted* normalised
  radius exceeds the camera's ``metric_radius`` (the polynomial folds back beyond it), and marks an
  unprojection invalid when its Gauss–Newton iterations leave a residual above 1e-3 px. The factory
  calibration stores ``MetricRadius`` per camera; ``src/calibration/calibration.c`` replaces a
  missing value (≤ 1e-4, as for the colour camera of most devices) by 1.7 (about 120° field of view).
  :class:`~capture.sequence.CameraIntrinsics` does not keep the radius, so the functions here take
  it as an argument defaulting to :data:`DEFAULT_METRIC_RADIUS`.
- Pixel centres (``src/transformation/mode_specific_calibration.c``): the factory calibration is
  "unitized and 0-cornered" — cx, fx divided by the sensor width, cy, fy by its height, (0, 0) at
  the top-left corner of the top-left pixel. The SDK converts it to the "pixelized and 0-centered
  OpenCV convention" by scaling to the mode's binned resolution, subtracting the crop offset and
  then 0.5 — so every intrinsic the SDK hands out (and ours) has pixel centres at integer (u, v),
  the project's convention. See :func:`mode_intrinsics`.
- Extrinsics (``src/calibration/calibration.c``, ``src/transformation/extrinsic_transformation.c``):
  each camera's ``Rt`` in ``calibration.json`` is *camera-from-depth* ("world to camera", with the
  depth camera as the world: its own ``Rt`` is the identity), rotation row-major, translation in
  **metres** in the JSON; the SDK's C structures (``k4a_calibration_extrinsics_t``) multiply the
  translation by 1000 (millimetres). ``depth_to_color`` = colour.Rt ∘ depth.Rt⁻¹. Ours is metres.

Invalid results are NaN, never an exception: points behind the camera or outside the metric
radius, pixels whose undistortion does not converge, and zero (no measurement) depths.

Precision: :func:`distort`, :func:`undistort` and :func:`project` work in float64 (the iterative
undistortion converges to 1e-9 in float64 but only to ~1e-7 in float32); image-sized outputs
(:func:`pixel_rays`, :func:`backproject`) are float32.

Shapes: N points, H × W pixels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from capture.sequence import Calibration, CameraIntrinsics

DEFAULT_METRIC_RADIUS = 1.7
"""The SDK's valid normalised radius for cameras without a calibrated one (≈ 120° field of view)."""
UNDISTORT_ITERATIONS = 20
"""Newton iterations of :func:`undistort` (the SDK's ``transformation_iterative_unproject`` uses 20)."""
UNDISTORT_TOLERANCE = 1e-9
"""Largest normalised residual |distort(x) − x_d| accepted by :func:`undistort` (≈ 5e-7 px)."""


# --------------------------------------------------------------------------------------------------
# Lens model


def _coefficients(intrinsics: CameraIntrinsics) -> tuple[float, ...]:
    """(k1, k2, k3, k4, k5, k6, p1, p2) as Python floats."""
    ic = intrinsics
    return ic.k1, ic.k2, ic.k3, ic.k4, ic.k5, ic.k6, ic.p1, ic.p2


def _radial_factor(r2: np.ndarray, intrinsics: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numerator, denominator and d(radial)/d(r²) of the rational radial factor at squared radii (N,)."""
    k1, k2, k3, k4, k5, k6, _, _ = _coefficients(intrinsics)
    numerator = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    denominator = 1.0 + r2 * (k4 + r2 * (k5 + r2 * k6))
    d_numerator = k1 + r2 * (2.0 * k2 + 3.0 * k3 * r2)
    d_denominator = k4 + r2 * (2.0 * k5 + 3.0 * k6 * r2)
    d_radial = (d_numerator * denominator - numerator * d_denominator) / denominator**2
    return numerator, denominator, d_radial


def _distort_xy(x: np.ndarray, y: np.ndarray, intrinsics: CameraIntrinsics) -> tuple[np.ndarray, ...]:
    """Distortion and its Jacobian on contiguous coordinate arrays (fast; no (N, 2) strides).

    Args:
        x, y: (N,) float64 ideal normalised coordinates.
    Returns:
        x_d, y_d (N,) and the Jacobian entries dx_d/dx, dx_d/dy, dy_d/dx, dy_d/dy (N,) each.
    """
    p1, p2 = intrinsics.p1, intrinsics.p2
    xx, yy, xy = x * x, y * y, x * y
    r2 = xx + yy
    numerator, denominator, d_radial = _radial_factor(r2, intrinsics)
    radial = numerator / denominator
    x_d = x * radial + 2.0 * p1 * xy + p2 * (r2 + 2.0 * xx)
    y_d = y * radial + p1 * (r2 + 2.0 * yy) + 2.0 * p2 * xy
    cross = 2.0 * xy * d_radial + 2.0 * p1 * x + 2.0 * p2 * y  # dx_d/dy = dy_d/dx
    dxx = radial + 2.0 * xx * d_radial + 2.0 * p1 * y + 6.0 * p2 * x
    dyy = radial + 2.0 * yy * d_radial + 6.0 * p1 * y + 2.0 * p2 * x
    return x_d, y_d, dxx, cross, cross, dyy


def distort(xy: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """Apply the lens distortion to ideal normalised points.

    Args:
        xy: (N, 2) ideal normalised image points (X/Z, Y/Z).
        intrinsics: the camera (only its distortion coefficients are used).
    Returns:
        (N, 2) float64 distorted normalised points ((u − cx)/fx, (v − cy)/fy).
    """
    x, y = np.asarray(xy, dtype=np.float64).reshape(-1, 2).T.copy()
    x_d, y_d = _distort_xy(x, y, intrinsics)[:2]
    return np.stack([x_d, y_d], -1)


def _radial_guess(
    x_d: np.ndarray, y_d: np.ndarray, intrinsics: CameraIntrinsics
) -> tuple[np.ndarray, np.ndarray]:
    """Starting point of the Newton iterations: divide out the radial factor at the distorted radius
    (the SDK starts the same way)."""
    numerator, denominator, _ = _radial_factor(x_d * x_d + y_d * y_d, intrinsics)
    scale = denominator / numerator
    return x_d * scale, y_d * scale


def _pending(ex: np.ndarray, ey: np.ndarray) -> np.ndarray:
    """(N,) bool: residuals still above the tolerance and finite (diverged points are given up)."""
    with np.errstate(invalid="ignore"):
        small = np.maximum(np.abs(ex), np.abs(ey)) <= UNDISTORT_TOLERANCE * 1e-3
    return ~small & np.isfinite(ex) & np.isfinite(ey)


def _newton_undistort(
    x_d: np.ndarray, y_d: np.ndarray, intrinsics: CameraIntrinsics, iterations: int
) -> tuple[np.ndarray, np.ndarray]:
    """Newton iterations on distort(x, y) = (x_d, y_d), every point at once.

    Args:
        x_d, y_d: (N,) float64 distorted normalised coordinates.
    Returns:
        x, y (N,) float64 last iterates (unchecked).
    """
    x, y = _radial_guess(x_d, y_d, intrinsics)
    for _ in range(iterations):
        # residual (ex, ey) and Jacobian [[a, b], [c, d]] = d(x_d, y_d)/d(x, y) at the iterate
        predicted_x, predicted_y, a, b, c, d = _distort_xy(x, y, intrinsics)
        ex, ey = predicted_x - x_d, predicted_y - y_d
        if not _pending(ex, ey).any():
            break
        with np.errstate(divide="ignore", invalid="ignore"):
            inverse_det = 1.0 / (a * d - b * c)
            x = x - (d * ex - b * ey) * inverse_det
            y = y - (a * ey - c * ex) * inverse_det
    return x, y


def undistort(
    xy_distorted: np.ndarray,
    intrinsics: CameraIntrinsics,
    iterations: int = UNDISTORT_ITERATIONS,
    metric_radius: float = DEFAULT_METRIC_RADIUS,
) -> np.ndarray:
    """Invert :func:`distort` by Newton's method (analytic Jacobian), all points at once.

    Within the valid field of view the iterations converge quadratically: 4–5 reach 1e-14 for
    the Azure Kinect's lenses, starting from the SDK's radial guess.

    Args:
        xy_distorted: (N, 2) distorted normalised points ((u − cx)/fx, (v − cy)/fy).
        intrinsics: the camera (only its distortion coefficients are used).
        iterations: at most this many Newton steps.
        metric_radius: solutions farther than this from the optical axis are invalid (see the module
            docstring).
    Returns:
        (N, 2) float64 ideal normalised points; NaN where the residual stays above
        :data:`UNDISTORT_TOLERANCE` or the solution lies outside ``metric_radius``.
    """
    x_d, y_d = np.asarray(xy_distorted, dtype=np.float64).reshape(-1, 2).T.copy()
    x, y = _newton_undistort(x_d, y_d, intrinsics, iterations)
    with np.errstate(invalid="ignore"):
        check_x, check_y = _distort_xy(x, y, intrinsics)[:2]
        error = np.maximum(np.abs(check_x - x_d), np.abs(check_y - y_d))
        valid = (error <= UNDISTORT_TOLERANCE) & (x * x + y * y <= metric_radius**2)
    return np.where(valid[:, None], np.stack([x, y], -1), np.nan)


# --------------------------------------------------------------------------------------------------
# Pixels, rays and points


def normalised_to_pixels(xy_distorted: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """(N, 2) distorted normalised points → (N, 2) float64 pixel coordinates (u, v)."""
    ic = intrinsics
    xy = np.asarray(xy_distorted, dtype=np.float64)
    return xy * np.array([ic.fx, ic.fy]) + np.array([ic.cx, ic.cy])


def pixels_to_normalised(pixels: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """(N, 2) pixel coordinates (u, v), centres at integers → (N, 2) float64 distorted normalised points."""
    ic = intrinsics
    uv = np.asarray(pixels, dtype=np.float64)
    return (uv - np.array([ic.cx, ic.cy])) / np.array([ic.fx, ic.fy])


def project(
    points: np.ndarray, intrinsics: CameraIntrinsics, metric_radius: float = DEFAULT_METRIC_RADIUS
) -> tuple[np.ndarray, np.ndarray]:
    """Project camera-frame points through the distorted lens.

    Args:
        points: (N, 3) points in the camera frame (OpenCV axes, metres).
        intrinsics: the camera.
        metric_radius: valid normalised radius (see the module docstring).
    Returns:
        pixels (N, 2) float64 (u, v), pixel centres at integers, NaN for points with z ≤ 0 or
        outside ``metric_radius`` (they are *not* clipped to the image); depth (N,) float64 z.
    """
    xyz = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    z = xyz[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        ideal = xyz[:, :2] / z[:, None]
        valid = (z > 0) & ((ideal**2).sum(-1) <= metric_radius**2)
    pixels = normalised_to_pixels(distort(np.where(valid[:, None], ideal, 0.0), intrinsics), intrinsics)
    return np.where(valid[:, None], pixels, np.nan), z


def pixel_grid(intrinsics: CameraIntrinsics) -> np.ndarray:
    """(H, W, 2) float64 (u, v) coordinates of every pixel centre: integers, (0, 0) top-left."""
    u, v = np.meshgrid(np.arange(intrinsics.width), np.arange(intrinsics.height))
    return np.stack([u, v], -1).astype(np.float64)


def pixel_rays(intrinsics: CameraIntrinsics, metric_radius: float = DEFAULT_METRIC_RADIUS) -> np.ndarray:
    """Camera-frame rays through every pixel centre, lens distortion removed.

    Args:
        intrinsics: the camera.
        metric_radius: valid normalised radius (see the module docstring).
    Returns:
        (H, W, 3) float32 directions (x, y, 1) with unit z, so depth · ray is the 3D point; NaN for
        pixels outside the valid field of view.
    """
    grid = pixel_grid(intrinsics).reshape(-1, 2)
    ideal = undistort(pixels_to_normalised(grid, intrinsics), intrinsics, metric_radius=metric_radius)
    rays = np.concatenate([ideal, np.ones((len(ideal), 1))], -1)
    return rays.reshape(intrinsics.height, intrinsics.width, 3).astype(np.float32)


def backproject(
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    rays: np.ndarray | None = None,
    metric_radius: float = DEFAULT_METRIC_RADIUS,
) -> np.ndarray:
    """Lift a depth image to camera-frame points (the SDK's depth-image-to-point-cloud).

    Args:
        depth_m: (H, W) depth in metres (camera z, as the Azure Kinect measures), 0 = no measurement.
        intrinsics: the depth camera.
        rays: (H, W, 3) :func:`pixel_rays` of the camera, to reuse across frames; computed if None.
        metric_radius: valid normalised radius, used only when ``rays`` is None.
    Returns:
        (H, W, 3) float32 points in metres; NaN where the depth is 0 (or negative, or NaN) and
        where the pixel's ray is invalid. ``np.isfinite(points[..., 2])`` is the valid mask.
    """
    if rays is None:
        rays = pixel_rays(intrinsics, metric_radius)
    depth = np.asarray(depth_m, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        depth = np.where(depth > 0, depth, np.float32(np.nan))
    return (rays * depth[..., None]).astype(np.float32)


def transform_points(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4×4 rigid (or affine) transform to points.

    Args:
        transform: (4, 4), e.g. ``calibration.depth_to_color``.
        points: (..., 3).
    Returns:
        (..., 3) ``R @ p + t``, float64 computation returned in the points' float dtype.
    """
    pts = np.asarray(points)
    matrix = np.asarray(transform, dtype=np.float64)
    moved = pts.astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
    return moved.astype(pts.dtype if np.issubdtype(pts.dtype, np.floating) else np.float64)


def invert_rigid(transform: np.ndarray) -> np.ndarray:
    """(4, 4) float64 inverse of a rigid transform: [Rᵀ, −Rᵀt]."""
    matrix = np.asarray(transform, dtype=np.float64)
    inverse = np.eye(4)
    inverse[:3, :3] = matrix[:3, :3].T
    inverse[:3, 3] = -matrix[:3, :3].T @ matrix[:3, 3]
    return inverse


def world_from_color(calibration: Calibration, world_from_depth: np.ndarray) -> np.ndarray:
    """(4, 4) float64 world-from-colour-camera pose of a device whose depth camera is at
    ``world_from_depth``: ``world_from_depth ∘ depth_to_color⁻¹`` (x_color = T x_depth)."""
    return np.asarray(world_from_depth, dtype=np.float64) @ invert_rigid(calibration.depth_to_color)


# --------------------------------------------------------------------------------------------------
# Factory calibrations and sensor modes


@dataclass(frozen=True)
class FactoryCamera:
    """One camera of an Azure Kinect factory calibration (an entry of ``calibration.json``).

    Attributes:
        sensor_width, sensor_height: full sensor size in pixels (1024 × 1024 depth, 4096 × 3072 colour).
        cx, cy, fx, fy: "unitized, 0-cornered": fractions of the sensor width (cx, fx) and height
            (cy, fy), (0, 0) at the top-left *corner* of the sensor.
        k1 … k6, p1, p2: Brown–Conrady coefficients (see the module docstring).
        metric_radius: valid normalised radius; 0 in the JSON = unknown (the SDK then uses 1.7).
        rotation: 9 floats, row-major, camera-from-depth-camera rotation.
        translation: 3 floats, camera-from-depth-camera translation in metres.
    """

    sensor_width: int
    sensor_height: int
    cx: float
    cy: float
    fx: float
    fy: float
    k1: float
    k2: float
    k3: float
    k4: float
    k5: float
    k6: float
    p1: float
    p2: float
    metric_radius: float
    rotation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    translation: tuple[float, ...] = (0.0, 0.0, 0.0)

    @property
    def camera_from_depth(self) -> np.ndarray:
        """(4, 4) float64 rigid transform from depth-camera to this camera's coordinates, metres."""
        transform = np.eye(4)
        transform[:3, :3] = np.reshape(self.rotation, (3, 3))
        transform[:3, 3] = self.translation
        return transform

    @property
    def valid_radius(self) -> float:
        """``metric_radius``, or the SDK's default 1.7 where the calibration has none."""
        return self.metric_radius if self.metric_radius > 1e-4 else DEFAULT_METRIC_RADIUS


@dataclass(frozen=True)
class SensorMode:
    """How the SDK derives one mode's image from the sensor (``k4a_camera_calibration_mode_info_t``).

    Attributes:
        binned: (W, H) of the sensor image after binning, pixels.
        crop_offset: (x, y) of the mode's image inside the binned image, pixels.
        output: (W, H) of the mode's image.
    """

    binned: tuple[int, int]
    crop_offset: tuple[int, int]
    output: tuple[int, int]


DEPTH_MODES = {
    "nfov_2x2binned": SensorMode((512, 512), (96, 90), (320, 288)),
    "nfov_unbinned": SensorMode((1024, 1024), (192, 180), (640, 576)),
    "wfov_2x2binned": SensorMode((512, 512), (0, 0), (512, 512)),
    "wfov_unbinned": SensorMode((1024, 1024), (0, 0), (1024, 1024)),
    "passive_ir": SensorMode((1024, 1024), (0, 0), (1024, 1024)),
}
"""Depth modes of the 1024 × 1024 depth sensor (``transformation_get_mode_specific_depth_camera_calibration``
in ``src/transformation/mode_specific_calibration.c``)."""

COLOR_RESOLUTIONS = {
    "720p": SensorMode((1280, 960), (0, 120), (1280, 720)),
    "1080p": SensorMode((1920, 1440), (0, 180), (1920, 1080)),
    "1440p": SensorMode((2560, 1920), (0, 240), (2560, 1440)),
    "1536p": SensorMode((2048, 1536), (0, 0), (2048, 1536)),
    "2160p": SensorMode((3840, 2880), (0, 360), (3840, 2160)),
    "3072p": SensorMode((4096, 3072), (0, 0), (4096, 3072)),
}
"""Colour resolutions of the 4:3 colour sensor
(``transformation_get_mode_specific_color_camera_calibration``): 16:9 modes are a centred vertical
crop of the scaled 4:3 image."""

_LEGACY_16_9_TO_4_3 = SensorMode((4096, 2304), (0, -384), (4096, 3072))
"""Early colour calibrations were made in a 16:9 sensor mode; the SDK first re-expresses them in 4:3."""


def _crop_unitized(raw: FactoryCamera, mode: SensorMode) -> tuple[float, float, float, float]:
    """(cx, cy, fx, fy) in pixels of ``mode``'s image, still 0-cornered (pixel centres at +0.5)."""
    (bw, bh), (ox, oy) = mode.binned, mode.crop_offset
    return raw.cx * bw - ox, raw.cy * bh - oy, raw.fx * bw, raw.fy * bh


def _legacy_color_to_4_3(raw: FactoryCamera) -> FactoryCamera:
    """A 16:9 colour calibration re-expressed on the 4096 × 3072 sensor, still unitized (as the SDK does)."""
    cx, cy, fx, fy = _crop_unitized(raw, _LEGACY_16_9_TO_4_3)
    (width, height) = _LEGACY_16_9_TO_4_3.output
    return replace(
        raw,
        sensor_width=width,
        sensor_height=height,
        cx=cx / width,
        cy=cy / height,
        fx=fx / width,
        fy=fy / height,
    )


def mode_intrinsics(raw: FactoryCamera, mode: str) -> CameraIntrinsics:
    """The intrinsics of one depth mode or colour resolution, as the SDK computes them.

    The unitized factory values are scaled by the mode's binned sensor size, shifted by its crop
    offset, and moved by −0.5 px from corner- to centre-based pixel coordinates
    (``transformation_get_mode_specific_camera_calibration``). Distortion coefficients act on
    normalised coordinates and do not change.

    Args:
        raw: the factory calibration of the depth camera (for a key of :data:`DEPTH_MODES`) or of
            the colour camera (for a key of :data:`COLOR_RESOLUTIONS`).
        mode: e.g. "nfov_unbinned" or "720p".
    Returns:
        Intrinsics with pixel centres at integer coordinates.
    """
    if mode in DEPTH_MODES:
        if (raw.sensor_width, raw.sensor_height) != (1024, 1024):
            raise ValueError(f"depth mode {mode!r} needs a 1024 × 1024 depth-sensor calibration")
        sensor_mode = DEPTH_MODES[mode]
    elif mode in COLOR_RESOLUTIONS:
        if raw.sensor_width * 9 // 16 == raw.sensor_height:
            raw = _legacy_color_to_4_3(raw)
        elif raw.sensor_width * 3 // 4 != raw.sensor_height:
            raise ValueError(f"colour resolution {mode!r} needs a 4:3 or 16:9 colour-sensor calibration")
        sensor_mode = COLOR_RESOLUTIONS[mode]
    else:
        raise ValueError(f"unknown mode {mode!r}; one of {sorted(DEPTH_MODES) + sorted(COLOR_RESOLUTIONS)}")
    cx, cy, fx, fy = _crop_unitized(raw, sensor_mode)
    width, height = sensor_mode.output
    distortion = {name: getattr(raw, name) for name in ("k1", "k2", "k3", "k4", "k5", "k6", "p1", "p2")}
    return CameraIntrinsics(width, height, fx, fy, cx - 0.5, cy - 0.5, **distortion)


_LOCATIONS = {"depth": "CALIBRATION_CameraLocationD0", "color": "CALIBRATION_CameraLocationPV0"}
_BROWN_CONRADY = "CALIBRATION_LensDistortionModelBrownConrady"


def _factory_camera(entry: dict[str, Any]) -> FactoryCamera:
    """One ``Cameras`` entry of ``calibration.json`` → :class:`FactoryCamera`."""
    intrinsics = entry["Intrinsics"]
    if intrinsics["ModelType"] != _BROWN_CONRADY:
        raise ValueError(f"lens model {intrinsics['ModelType']!r} is not supported (only {_BROWN_CONRADY!r})")
    # ModelParameters follow k4a_calibration_intrinsic_parameters_t (include/k4a/k4atypes.h):
    # cx, cy, fx, fy, k1, k2, k3, k4, k5, k6, codx, cody, p2, p1 — note p2 before p1.
    cx, cy, fx, fy, k1, k2, k3, k4, k5, k6, _, _, p2, p1 = (
        float(v) for v in intrinsics["ModelParameters"][:14]
    )
    rt = entry["Rt"]
    return FactoryCamera(
        sensor_width=int(entry["SensorWidth"]),
        sensor_height=int(entry["SensorHeight"]),
        cx=cx, cy=cy, fx=fx, fy=fy,
        k1=k1, k2=k2, k3=k3, k4=k4, k5=k5, k6=k6, p1=p1, p2=p2,
        metric_radius=float(entry["MetricRadius"]),
        rotation=tuple(float(v) for v in rt["Rotation"]),
        translation=tuple(float(v) for v in rt["Translation"]),
    )  # fmt: skip


def parse_factory_calibration(text: str | bytes) -> dict[str, FactoryCamera]:
    """Read the cameras of an Azure Kinect factory calibration (``calibration.json``, as stored in
    a recording's Matroska attachment or returned by ``k4a_device_get_raw_calibration``).

    Returns:
        {"depth": …, "color": …} (a camera absent from the file is absent from the dict).
    Raises:
        ValueError: not such a calibration, or an unsupported lens model.
    """
    try:
        cameras = json.loads(text)["CalibrationInformation"]["Cameras"]
        by_location = {entry["Location"]: entry for entry in cameras}
        return {
            name: _factory_camera(by_location[loc]) for name, loc in _LOCATIONS.items() if loc in by_location
        }
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"not an Azure Kinect factory calibration ({type(error).__name__}: {error})"
        ) from None


def calibration_from_factory(
    depth: FactoryCamera,
    color: FactoryCamera | None,
    depth_mode: str = "nfov_unbinned",
    color_resolution: str | None = "720p",
    **metadata: str,
) -> Calibration:
    """A :class:`~capture.sequence.Calibration` for one recording mode from factory cameras.

    Args:
        depth, color: from :func:`parse_factory_calibration`; ``color`` None for depth only.
        depth_mode: a key of :data:`DEPTH_MODES`.
        color_resolution: a key of :data:`COLOR_RESOLUTIONS`, or None (colour off).
        metadata: ``device``, ``serial``, ``source`` strings.
    """
    with_color = color is not None and color_resolution is not None
    depth_to_color = (
        color.camera_from_depth @ np.linalg.inv(depth.camera_from_depth) if with_color else np.eye(4)
    )
    return Calibration(
        depth=mode_intrinsics(depth, depth_mode),
        color=mode_intrinsics(color, color_resolution) if with_color else None,
        depth_to_color=depth_to_color.astype(np.float32),
        **metadata,
    )


# The factory calibration of the Azure Kinect (serial 001514394512, calibrated 2019-11-09) that
# recorded pyk4a's MIT-licensed test asset tests/assets/recording.mkv (our copy:
# shared/data/azure_kinect/recording.mkv, Matroska attachment "calibration.json"), copied number
# for number (float32 values as printed by the SDK's JSON writer). tests/test_calibration.py checks
# these against the attachment.
RECORDING_DEPTH_CAMERA = FactoryCamera(
    sensor_width=1024,
    sensor_height=1024,
    cx=0.5129697918891907,
    cy=0.5169235467910767,
    fx=0.4927808940410614,
    fy=0.49290284514427185,
    k1=0.5479397773742676,
    k2=-0.020971370860934258,
    k3=-0.002652231603860855,
    k4=0.8896790742874146,
    k5=0.08613020926713943,
    k6=-0.013910384848713875,
    p1=2.0557534298859537e-05,
    p2=-7.210415787994862e-05,
    metric_radius=1.739999771118164,
)
RECORDING_COLOR_CAMERA = FactoryCamera(
    sensor_width=4096,
    sensor_height=3072,
    cx=0.4998471438884735,
    cy=0.5066176056861877,
    fx=0.4779651165008545,
    fy=0.6374239325523376,
    k1=0.33012130856513977,
    k2=-2.489396572113037,
    k3=1.453670859336853,
    k4=0.20891207456588745,
    k5=-2.302915096282959,
    k6=1.3751275539398193,
    p1=-0.00016178244550246745,
    p2=-0.00012944525224156678,
    metric_radius=0.0,
    rotation=(
        0.9999992251396179, 0.001181757659651339, -0.0004481404321268201,
        -0.0011387512786313891, 0.9962806105613708, 0.0861603245139122,
        0.0005482942215166986, -0.08615975081920624, 0.9962812066078186,
    ),
    translation=(-0.032083429396152496, -0.0022053730208426714, 0.003883692668750882),
)  # fmt: skip
RECORDING_SERIAL = "001514394512"


def azure_kinect_preset(
    depth_mode: str = "nfov_unbinned", color_resolution: str | None = "720p"
) -> Calibration:
    """A realistic Azure Kinect calibration: the real factory calibration of the device that
    recorded ``shared/data/azure_kinect/recording.mkv``, converted to the requested modes.

    For the defaults: depth 640 × 576, fx ≈ 504.6, fy ≈ 504.7, cx ≈ 332.8, cy ≈ 348.8; colour
    1280 × 720, fx ≈ 611.8, fy ≈ 611.9, cx ≈ 639.3, cy ≈ 365.9; the colour camera sits 32 mm
    along the depth camera's +x axis and looks 4.9° higher (the depth camera is pitched down
    relative to it); ``depth_to_color`` translation ≈ (−32.1, −2.2, 3.9) mm.
    """
    return calibration_from_factory(
        RECORDING_DEPTH_CAMERA,
        RECORDING_COLOR_CAMERA,
        depth_mode,
        color_resolution,
        device="Azure Kinect",
        serial=RECORDING_SERIAL,
        source="preset",
    )
