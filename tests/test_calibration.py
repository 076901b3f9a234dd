"""Camera maths: Brown–Conrady distortion, projection, back-projection, the SDK's mode conversion and
the factory calibration of the real recording."""

from __future__ import annotations

from dataclasses import replace

import av
import numpy as np
import pytest
from scipy import ndimage

from capture.calibration import (
    COLOR_RESOLUTIONS,
    DEPTH_MODES,
    RECORDING_COLOR_CAMERA,
    RECORDING_DEPTH_CAMERA,
    azure_kinect_preset,
    backproject,
    calibration_from_factory,
    distort,
    invert_rigid,
    mode_intrinsics,
    parse_factory_calibration,
    pixel_grid,
    pixel_rays,
    pixels_to_normalised,
    project,
    transform_points,
    undistort,
    world_from_color,
)
from capture.sequence import CameraIntrinsics
from tests.shared_data import RECORDING, needs_recording

PRESET = azure_kinect_preset()
CAMERAS = {"depth": PRESET.depth, "color": PRESET.color}


def every_nth_pixel(intrinsics: CameraIntrinsics, step: int = 7) -> np.ndarray:
    """(N, 2) pixel centres on a sparse grid covering the whole image, borders included."""
    u = np.unique(np.r_[np.arange(0, intrinsics.width, step), intrinsics.width - 1])
    v = np.unique(np.r_[np.arange(0, intrinsics.height, step), intrinsics.height - 1])
    return np.stack(np.meshgrid(u, v), -1).reshape(-1, 2).astype(np.float64)


def pinhole(intrinsics: CameraIntrinsics) -> CameraIntrinsics:
    """The same camera without lens distortion."""
    return replace(intrinsics, k1=0.0, k2=0.0, k3=0.0, k4=0.0, k5=0.0, k6=0.0, p1=0.0, p2=0.0)


def decode_first_frames() -> tuple[np.ndarray, np.ndarray]:
    """The recording's first depth frame (576, 640) in metres and colour frame (720, 1280, 3) uint8."""
    with av.open(str(RECORDING)) as container:
        depth_stream = next(s for s in container.streams.video if s.metadata.get("title") == "DEPTH")
        depth = next(container.decode(depth_stream)).to_ndarray()
    with av.open(str(RECORDING)) as container:
        color_stream = next(s for s in container.streams.video if s.metadata.get("title") == "COLOR")
        color = next(container.decode(color_stream)).to_ndarray(format="rgb24")
    return depth.astype(np.float32) / 1000.0, color


# --------------------------------------------------------------------------------------------------
# Lens model


@pytest.mark.parametrize("name", ["depth", "color"])
def test_distort_undistort_round_trip_over_the_field_of_view(name: str) -> None:
    camera = CAMERAS[name]
    distorted = pixels_to_normalised(every_nth_pixel(camera, 3), camera)
    ideal = undistort(distorted, camera)
    assert np.isfinite(ideal).all()  # every pixel of the image is inside the valid field of view
    np.testing.assert_allclose(distort(ideal, camera), distorted, atol=1e-9)
    again = undistort(distort(ideal, camera), camera)
    assert np.abs(again - ideal).max() < 1e-6


def test_tangential_terms_follow_opencv() -> None:
    camera = CameraIntrinsics(10, 10, 1.0, 1.0, 0.0, 0.0, k1=0.1, p1=0.01, p2=0.02)
    x, y = 0.5, 0.2
    r2 = x * x + y * y
    radial = 1.0 + 0.1 * r2
    expected = [
        x * radial + 2 * 0.01 * x * y + 0.02 * (r2 + 2 * x * x),
        y * radial + 0.01 * (r2 + 2 * y * y) + 2 * 0.02 * x * y,
    ]
    np.testing.assert_allclose(distort(np.array([[x, y]]), camera)[0], expected, rtol=1e-12)


def test_rational_radial_factor() -> None:
    camera = CameraIntrinsics(10, 10, 1.0, 1.0, 0.0, 0.0, k1=0.5, k2=0.1, k3=0.01, k4=0.8, k5=0.05, k6=0.02)
    point = np.array([[0.3, -0.4]])  # r² = 0.25
    r2 = 0.25
    radial = (1 + 0.5 * r2 + 0.1 * r2**2 + 0.01 * r2**3) / (1 + 0.8 * r2 + 0.05 * r2**2 + 0.02 * r2**3)
    np.testing.assert_allclose(distort(point, camera), point * radial, rtol=1e-12)


def test_undistort_marks_points_beyond_the_metric_radius() -> None:
    camera = PRESET.depth
    ideal = np.array([[0.3, 0.2], [1.5, 1.0]])  # radius 0.36 and 1.8
    result = undistort(distort(ideal, camera), camera, metric_radius=1.74)
    np.testing.assert_allclose(result[0], ideal[0], atol=1e-12)
    assert np.isnan(result[1]).all()


# --------------------------------------------------------------------------------------------------
# Projection and back-projection


def test_zero_distortion_is_the_pinhole_model() -> None:
    camera = pinhole(PRESET.depth)
    rng = np.random.default_rng(0)
    points = rng.uniform([-1.0, -1.0, 1.0], [1.0, 1.0, 3.0], (200, 3))
    pixels, depth = project(points, camera)
    expected = points @ camera.K.astype(np.float64).T
    np.testing.assert_allclose(pixels, expected[:, :2] / expected[:, 2:], atol=1e-9)
    np.testing.assert_allclose(depth, points[:, 2])
    grid = pixel_grid(camera)
    rays = pixel_rays(camera)
    homogeneous = np.concatenate([grid, np.ones((*grid.shape[:2], 1))], -1)
    np.testing.assert_allclose(rays, homogeneous @ np.linalg.inv(camera.K.astype(np.float64)).T, atol=1e-6)


@pytest.mark.parametrize("name", ["depth", "color"])
def test_pixel_rays_project_back_to_their_pixels(name: str) -> None:
    camera = CAMERAS[name]
    rays = pixel_rays(camera)
    assert rays.shape == (camera.height, camera.width, 3) and rays.dtype == np.float32
    np.testing.assert_array_equal(rays[..., 2], 1.0)
    pixels, depth = project(rays.reshape(-1, 3) * 2.0, camera)
    np.testing.assert_allclose(pixels, pixel_grid(camera).reshape(-1, 2), atol=1e-3)
    np.testing.assert_allclose(depth, 2.0)


def test_project_backproject_round_trip_with_distortion() -> None:
    camera = PRESET.depth
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 4.0, camera.shape).astype(np.float32)
    depth[::17, ::13] = 0.0  # no measurement
    points = backproject(depth, camera)
    assert points.shape == (*camera.shape, 3) and points.dtype == np.float32
    missing = depth == 0
    assert np.isnan(points[missing]).all() and np.isfinite(points[~missing]).all()
    np.testing.assert_allclose(points[..., 2][~missing], depth[~missing])
    pixels, _ = project(points[~missing], camera)
    np.testing.assert_allclose(pixels, pixel_grid(camera)[~missing], atol=1e-3)
    reused = backproject(depth, camera, rays=pixel_rays(camera))
    np.testing.assert_array_equal(np.isnan(reused), np.isnan(points))


def test_project_rejects_points_behind_or_outside_the_field_of_view() -> None:
    pixels, depth = project(
        np.array([[0.0, 0.0, -1.0], [0.0, 0.0, 0.0], [3.0, 0.0, 1.0], [0.1, 0.1, 1.0]]), PRESET.depth
    )
    assert np.isnan(pixels[:3]).all() and np.isfinite(pixels[3]).all()
    np.testing.assert_allclose(depth, [-1.0, 0.0, 1.0, 1.0])


def test_transform_points_and_inverse() -> None:
    transform = PRESET.depth_to_color
    points = np.random.default_rng(2).normal(size=(5, 4, 3)).astype(np.float32)
    moved = transform_points(transform, points)
    assert moved.shape == points.shape and moved.dtype == np.float32
    np.testing.assert_allclose(transform_points(invert_rigid(transform), moved), points, atol=1e-6)
    np.testing.assert_allclose(
        invert_rigid(transform), np.linalg.inv(transform.astype(np.float64)), atol=1e-7
    )


# --------------------------------------------------------------------------------------------------
# Factory calibration, sensor modes, preset


def test_preset_values_are_those_of_a_real_device() -> None:
    depth, color = PRESET.depth, PRESET.color
    assert (depth.width, depth.height, color.width, color.height) == (640, 576, 1280, 720)
    np.testing.assert_allclose(
        [depth.fx, depth.fy, depth.cx, depth.cy], [504.61, 504.73, 332.78, 348.83], atol=0.01
    )
    np.testing.assert_allclose(
        [color.fx, color.fy, color.cx, color.cy], [611.80, 611.93, 639.30, 365.85], atol=0.01
    )
    np.testing.assert_allclose(
        [depth.k1, depth.k4, color.k2, color.k5], [0.5479, 0.8897, -2.4894, -2.3029], atol=1e-4
    )
    rotation = PRESET.depth_to_color[:3, :3].astype(np.float64)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
    np.testing.assert_allclose(
        PRESET.depth_to_color[:3, 3], [-0.03208, -0.00221, 0.00388], atol=1e-5
    )  # metres
    assert PRESET.serial == "001514394512"


def test_extrinsic_direction() -> None:
    """x_color = T x_depth: the colour camera sits 32 mm along the depth camera's +x axis."""
    color_centre_in_depth = transform_points(invert_rigid(PRESET.depth_to_color), np.zeros(3))
    np.testing.assert_allclose(color_centre_in_depth, [0.0321, 0.0026, -0.0037], atol=1e-4)
    world_from_depth = np.eye(4)
    world_from_depth[:3, 3] = [0.0, 1.0, 2.0]
    pose = world_from_color(PRESET, world_from_depth)
    np.testing.assert_allclose(pose[:3, 3], [0.0321, 1.0026, 1.9963], atol=1e-4)
    world_point = np.array([[0.2, 1.1, 0.0]])
    via_depth = transform_points(
        PRESET.depth_to_color, transform_points(invert_rigid(world_from_depth), world_point)
    )
    np.testing.assert_allclose(transform_points(invert_rigid(pose), world_point), via_depth, atol=1e-6)


@needs_recording
def test_factory_calibration_matches_the_recording_attachment() -> None:
    with av.open(str(RECORDING)) as container:
        attachment = next(s for s in container.streams if s.type == "attachment")
        assert attachment.name == "calibration.json"
        cameras = parse_factory_calibration(bytes(attachment.data))
        depth_stream = next(s for s in container.streams.video if s.metadata.get("title") == "DEPTH")
        color_stream = next(s for s in container.streams.video if s.metadata.get("title") == "COLOR")
        assert depth_stream.metadata["K4A_DEPTH_MODE"] == "NFOV_UNBINNED"
        assert color_stream.metadata["K4A_COLOR_MODE"] == "MJPG_720P"
        sizes = [(s.codec_context.width, s.codec_context.height) for s in (depth_stream, color_stream)]
    assert cameras["depth"] == RECORDING_DEPTH_CAMERA and cameras["color"] == RECORDING_COLOR_CAMERA
    assert sizes == [DEPTH_MODES["nfov_unbinned"].output, COLOR_RESOLUTIONS["720p"].output]
    assert calibration_from_factory(cameras["depth"], cameras["color"]).depth_to_color.tolist() == (
        PRESET.depth_to_color.tolist()
    )


def test_mode_intrinsics_follow_the_sdk_arithmetic() -> None:
    raw = RECORDING_DEPTH_CAMERA
    nfov = mode_intrinsics(raw, "nfov_unbinned")
    assert nfov.cx == pytest.approx(raw.cx * 1024 - 192 - 0.5) and nfov.fy == pytest.approx(raw.fy * 1024)
    color = mode_intrinsics(RECORDING_COLOR_CAMERA, "720p")
    assert color.cy == pytest.approx(RECORDING_COLOR_CAMERA.cy * 960 - 120 - 0.5)
    assert color.fx == pytest.approx(RECORDING_COLOR_CAMERA.fx * 1280)


@pytest.mark.parametrize(
    ("fine", "coarse", "scale", "offset"),
    [
        ("wfov_unbinned", "nfov_unbinned", 1, (192, 180)),  # same pixels, NFOV cropped out of WFOV
        ("nfov_unbinned", "nfov_2x2binned", 2, (0, 0)),  # 2 × 2 binning
        ("1440p", "720p", 2, (0, 0)),
        ("3072p", "1536p", 2, (0, 0)),
    ],
)
def test_modes_see_each_ray_at_consistent_pixels(
    fine: str, coarse: str, scale: int, offset: tuple[int, int]
) -> None:
    """A ray hits pixel p in the fine mode and (p − offset + 0.5)/scale − 0.5 in the coarse one:
    crops shift, binning scales about pixel *corners* (centres at integers)."""
    raw = RECORDING_DEPTH_CAMERA if fine in DEPTH_MODES else RECORDING_COLOR_CAMERA
    fine_camera, coarse_camera = mode_intrinsics(raw, fine), mode_intrinsics(raw, coarse)
    points = np.random.default_rng(3).uniform([-0.4, -0.3, 1.0], [0.4, 0.3, 1.0], (50, 3))
    fine_pixels, _ = project(points, fine_camera)
    coarse_pixels, _ = project(points, coarse_camera)
    np.testing.assert_allclose(coarse_pixels, (fine_pixels - offset + 0.5) / scale - 0.5, atol=1e-3)


def test_legacy_16_9_colour_calibration_converts_like_4_3() -> None:
    raw = RECORDING_COLOR_CAMERA
    legacy = replace(raw, sensor_height=2304, cy=(raw.cy * 3072 - 384) / 2304, fy=raw.fy * 3072 / 2304)
    for mode in ("720p", "3072p"):
        expected, converted = mode_intrinsics(raw, mode), mode_intrinsics(legacy, mode)
        np.testing.assert_allclose(
            [converted.cx, converted.cy, converted.fx, converted.fy],
            [expected.cx, expected.cy, expected.fx, expected.fy],
            rtol=1e-9,
        )


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        mode_intrinsics(RECORDING_DEPTH_CAMERA, "4k")
    with pytest.raises(ValueError, match="1024"):
        mode_intrinsics(RECORDING_COLOR_CAMERA, "nfov_unbinned")
    with pytest.raises(ValueError, match="factory calibration"):
        parse_factory_calibration('{"CalibrationInformation": {}}')
    depth_only = calibration_from_factory(RECORDING_DEPTH_CAMERA, None, "wfov_2x2binned", None)
    assert depth_only.color is None and depth_only.depth.shape == (512, 512)


@needs_recording
def test_real_depth_edges_land_on_colour_edges() -> None:
    """The recording's near mug, back-projected with the preset depth camera, moved by depth_to_color and
    projected with the colour camera, outlines the mug in the colour image: edge agreement peaks
    within a few pixels of no shift. The inverted extrinsic gives no such peak."""
    depth, color = decode_first_frames()
    grey = ndimage.gaussian_filter(color.mean(-1, dtype=np.float32), 1.0)
    gradient = np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1))
    mug = (depth > 0) & (depth < 0.4)  # the mug stands ~0.26 m from the camera, the wall > 1 m
    outline = mug & ~ndimage.binary_erosion(mug)

    def agreement(
        depth_camera: CameraIntrinsics, depth_to_color: np.ndarray
    ) -> tuple[tuple[int, int], float]:
        points = backproject(depth, depth_camera)[outline]
        pixels, _ = project(transform_points(depth_to_color, points), PRESET.color)
        pixels = pixels[np.isfinite(pixels).all(1)]
        shifts = np.stack(np.meshgrid(np.arange(-20, 21), np.arange(-20, 21)), -1).reshape(-1, 1, 2)
        where = np.rint(pixels + shifts).astype(int)  # (S, N, 2)
        where = np.clip(where, 0, [color.shape[1] - 1, color.shape[0] - 1])
        scores = gradient[where[..., 1], where[..., 0]].mean(1)
        best = int(scores.argmax())
        return tuple(shifts[best, 0]), float(scores[best] / np.median(scores))

    (du, dv), peak = agreement(PRESET.depth, PRESET.depth_to_color)
    assert abs(du) <= 6 and abs(dv) <= 6 and peak > 1.8
    assert agreement(PRESET.depth, invert_rigid(PRESET.depth_to_color))[1] < 1.6
    centred_crop = replace(PRESET.depth, cy=PRESET.depth.cy + 44)  # crop offset 224 instead of the SDK's 180
    assert agreement(centred_crop, PRESET.depth_to_color)[1] < 1.6
