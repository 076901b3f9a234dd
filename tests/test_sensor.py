"""The virtual Azure Kinect: noise statistics, dropouts, flying pixels, range, determinism, and
geometric consistency with the calibration maths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trimesh
from scipy import ndimage

from capture.calibration import (
    azure_kinect_preset,
    backproject,
    invert_rigid,
    project,
    transform_points,
    world_from_color,
)
from rgbd2avatar.render import plane
from rgbd2avatar.synth.sensor import (
    NoiseModel,
    camera_rays,
    hexagon_mask,
    kinect_pose,
    render_color,
    render_depth,
    scene,
    scene_surfaces,
    vertex_attribute_fn,
)

CALIBRATION = azure_kinect_preset()
IDENTITY = np.eye(4)
NOISE = NoiseModel()


def wall(depth: float, size: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """A large camera-facing plane at camera depth ``depth`` (for the identity pose)."""
    return plane((0.0, 0.0, depth), (size, 0.0, 0.0), (0.0, size, 0.0))


def tilted_wall(angle: float, depth: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """A large plane through (0, 0, depth) turned by ``angle`` (radians) about the camera's y axis."""
    c, s = math.cos(angle), math.sin(angle)
    return plane((0.0, 0.0, depth), (8.0 * c, 0.0, 8.0 * s), (0.0, 8.0, 0.0))


def footprint() -> np.ndarray:
    """(H, W) bool: depth pixels inside the NFOV hexagon."""
    return hexagon_mask(camera_rays(CALIBRATION.depth))


def constant_fn(value: float):
    """A surface callback returning ``value`` everywhere."""
    return lambda mesh_index, triangle_ids, barycentrics: np.full(len(triangle_ids), value)


# --------------------------------------------------------------------------------------------------
# Noise model


@pytest.mark.parametrize("distance", [1.5, 3.0])
def test_plane_depth_mean_and_noise(distance: float) -> None:
    depth_mm, info = render_depth(wall(distance), CALIBRATION, IDENTITY, np.random.default_rng(0))
    assert depth_mm.dtype == np.uint16 and depth_mm.shape == (576, 640)
    inside = footprint()
    valid = depth_mm > 0
    assert valid[inside].mean() > 0.999 and not valid[~inside].any()
    np.testing.assert_allclose(info.hits.depth[info.hits.hit], distance, rtol=1e-5)
    measured = depth_mm[valid] / 1000.0
    assert abs(measured.mean() - distance) < 0.001
    assert measured.std() == pytest.approx(float(NOISE.sigma(distance)), rel=0.2)


def test_depth_is_quantised_to_whole_millimetres() -> None:
    vertices, faces = tilted_wall(0.5)
    depth_mm, info = render_depth(
        (vertices, faces), CALIBRATION, IDENTITY, np.random.default_rng(0), NoiseModel.ideal()
    )
    valid = depth_mm > 0
    assert valid.mean() > 0.9
    np.testing.assert_array_equal(depth_mm[valid], np.rint(info.hits.depth[valid] * 1000.0))


def test_out_of_range_depths_are_invalid() -> None:
    for distance, any_valid in ((0.3, False), (0.55, True), (3.8, True), (4.5, False)):
        depth_mm, _ = render_depth(wall(distance), CALIBRATION, IDENTITY, np.random.default_rng(1))
        assert (depth_mm > 0).any() == any_valid
    depth_mm, _ = render_depth(wall(3.8), CALIBRATION, IDENTITY, np.random.default_rng(1))
    assert depth_mm.max() <= 3860 + 60  # noise may push a valid 3.8 m reading a little further


def test_dropouts_rise_at_grazing_angles() -> None:
    inside = footprint()
    rates = []
    for degrees in (0, 50, 65, 75, 82, 87):
        depth_mm, info = render_depth(
            tilted_wall(math.radians(degrees)), CALIBRATION, IDENTITY, np.random.default_rng(2)
        )
        clean = info.hits.depth
        usable = inside & info.hits.hit & (clean >= NOISE.min_range) & (clean <= NOISE.max_range)
        rate = (depth_mm[usable] == 0).mean()
        expected = np.clip(1.0 - info.hits.incidence_cos[usable] / NOISE.grazing_cos, 0.0, 1.0).mean()
        assert rate == pytest.approx(expected, abs=0.01)
        rates.append(rate)
    assert rates[0] == 0.0 and rates[1] < 1e-4  # 50°: only a far corner grazes past 75.5°
    assert np.all(np.diff(rates[1:]) > 0) and rates[-1] > 0.5


def test_dark_surfaces_drop_out() -> None:
    rates = {}
    for reflectivity in (0.03, 0.09, 0.5):
        depth_mm, info = render_depth(
            wall(2.0),
            CALIBRATION,
            IDENTITY,
            np.random.default_rng(3),
            reflectivity_fn=constant_fn(reflectivity),
        )
        np.testing.assert_allclose(info.reflectivity[info.hits.hit], reflectivity, rtol=1e-6)
        rates[reflectivity] = (depth_mm[footprint()] == 0).mean()
    assert rates[0.03] == pytest.approx(1.0 - 0.03 / NOISE.dark_reflectivity, abs=0.01)
    assert rates[0.09] == pytest.approx(1.0 - 0.09 / NOISE.dark_reflectivity, abs=0.01)
    assert rates[0.5] == 0.0


def test_flying_pixels_appear_only_near_depth_edges() -> None:
    board = plane((0.0, 0.0, 1.2), (0.3, 0.0, 0.0), (0.0, 0.3, 0.0))
    depth_mm, info = render_depth([board, wall(2.5)], CALIBRATION, IDENTITY, np.random.default_rng(4))
    clean = info.hits.depth.astype(np.float64)
    valid = depth_mm > 0
    error = np.abs(depth_mm / 1000.0 - clean)
    outliers = valid & (error > 6.0 * NOISE.sigma(clean) + 0.0005)
    jumps = np.abs(np.diff(clean, axis=0, prepend=clean[:1])) + np.abs(
        np.diff(clean, axis=1, prepend=clean[:, :1])
    )
    near_a_jump = ndimage.binary_dilation(jumps > 1.0, iterations=2)
    assert outliers.sum() > 50  # the board's outline gives flying pixels …
    assert not (outliers & ~near_a_jump).any()  # … and nothing else does
    assert not (outliers & ~info.flying).any() and not (info.flying & ~info.edges).any()
    mixed = depth_mm[info.flying & valid] / 1000.0
    assert ((mixed > 1.2 - 0.02) & (mixed < 2.5 + 0.05)).all()
    ring = info.edges & ~info.flying
    assert (depth_mm[ring] == 0).mean() == pytest.approx(NOISE.edge_dropout, abs=0.1)  # the hole ring


def test_same_seed_same_frame() -> None:
    meshes, colours, reflectivity = scene_surfaces(scene(seed=5))
    pose = kinect_pose(2.5, 1.0, 0.1)
    first = render_depth(meshes, CALIBRATION, pose, np.random.default_rng(7), reflectivity_fn=reflectivity)[0]
    again = render_depth(meshes, CALIBRATION, pose, np.random.default_rng(7), reflectivity_fn=reflectivity)[0]
    other = render_depth(meshes, CALIBRATION, pose, np.random.default_rng(8), reflectivity_fn=reflectivity)[0]
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()


# --------------------------------------------------------------------------------------------------
# Geometry


def test_backprojected_depth_lies_on_the_true_plane() -> None:
    pose = kinect_pose(distance=2.2, height=1.1, tilt=0.15)
    normal = np.array([0.0, math.sin(0.4), math.cos(0.4)])  # leaning back by 0.4 rad, facing the camera
    point = np.array([0.0, 1.0, -0.3])
    u = np.cross(normal, [1.0, 0.0, 0.0])
    slab = plane(point, 6.0 * np.array([1.0, 0.0, 0.0]), 6.0 * u / np.linalg.norm(u))
    depth_mm, _ = render_depth(slab, CALIBRATION, pose, np.random.default_rng(6))
    camera_points = backproject(depth_mm / 1000.0, CALIBRATION.depth)
    valid = np.isfinite(camera_points[..., 2])
    assert valid.mean() > 0.6
    world = transform_points(pose, camera_points[valid].astype(np.float64))
    distance = (world - point) @ normal
    sigma = NOISE.sigma(camera_points[valid][:, 2])
    assert abs(distance.mean()) < 0.001
    assert (np.abs(distance) < 5.5 * sigma + 0.0005).all()


def test_colour_camera_sees_a_point_where_projection_says() -> None:
    pose = kinect_pose(distance=2.0, height=1.0)
    marker_centre = np.array([0.25, 1.2, 0.6])  # 1.4 m from the camera, in front of the back wall
    marker = plane(marker_centre, (0.03, 0.0, 0.0), (0.0, 0.03, 0.0))
    back = plane((0.0, 1.0, -0.5), (5.0, 0.0, 0.0), (0.0, 5.0, 0.0))
    colours = vertex_attribute_fn(
        [marker[1], back[1]], [np.tile([1.0, 0.0, 0.0], (4, 1)), np.tile([0.0, 0.8, 0.8], (4, 1))]
    )
    image, hits = render_color(
        [marker, back], colours, CALIBRATION, world_from_color(CALIBRATION, pose), np.random.default_rng(0)
    )
    assert image.shape == (720, 1280, 3) and image.dtype == np.uint8
    in_depth = transform_points(invert_rigid(pose), marker_centre[None])
    expected, _ = project(transform_points(CALIBRATION.depth_to_color, in_depth), CALIBRATION.color)
    rows, cols = np.nonzero(hits.mesh_ids == 0)
    np.testing.assert_allclose([cols.mean(), rows.mean()], expected[0], atol=0.5)
    red = (image[..., 0] > 120) & (image[..., 1] < 60)
    np.testing.assert_array_equal(red, hits.mesh_ids == 0)
    depth_mm, info = render_depth(
        [marker, back], CALIBRATION, pose, np.random.default_rng(0), NoiseModel.ideal()
    )
    in_depth_pixels, _ = project(in_depth, CALIBRATION.depth)
    rows, cols = np.nonzero(info.hits.mesh_ids == 0)
    np.testing.assert_allclose([cols.mean(), rows.mean()], in_depth_pixels[0], atol=0.5)


def test_person_mask_and_per_mesh_triangle_ids() -> None:
    objects = scene(seed=2)
    person = trimesh.creation.icosphere(subdivisions=3, radius=0.35)
    person_mesh = (np.asarray(person.vertices) + [0.0, 1.0, 0.0], np.asarray(person.faces))
    meshes, _, reflectivity = scene_surfaces(objects)
    pose = kinect_pose(2.5, 1.0)
    depth_mm, info = render_depth([person_mesh, *meshes], CALIBRATION, pose, np.random.default_rng(0))
    mask = info.hits.mesh_ids == 0
    centre, _ = project(transform_points(invert_rigid(pose), np.array([[0.0, 1.0, 0.0]])), CALIBRATION.depth)
    assert mask[int(round(centre[0, 1])), int(round(centre[0, 0]))]
    radius_px = math.sqrt(mask.sum() / math.pi)
    assert radius_px == pytest.approx(CALIBRATION.depth.fx * 0.35 / 2.5, rel=0.1)  # ≈ 70 px
    ids = info.hits.triangle_ids
    assert (ids[mask] < len(person_mesh[1])).all() and (ids[info.hits.hit] >= 0).all()
    names = [obj.name for obj in objects]
    seen = {names[i - 1] for i in np.unique(info.hits.mesh_ids) if i >= 1}
    assert {"floor", "wall"} <= seen
    np.testing.assert_allclose(info.hits.depth[mask].min(), 2.5 - 0.35, atol=0.01)


def test_kinect_pose_looks_at_the_subject() -> None:
    pose = kinect_pose(distance=2.5, height=1.0, tilt=0.0)
    rotation = pose[:3, :3]
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    world = np.array([[0.0, 1.0, 0.0], [0.0, 1.5, 0.0], [0.3, 1.0, 0.0]])
    pixels, depth = project(transform_points(invert_rigid(pose), world), CALIBRATION.depth)
    np.testing.assert_allclose(pixels[0], [CALIBRATION.depth.cx, CALIBRATION.depth.cy], atol=1e-6)
    np.testing.assert_allclose(depth, 2.5)
    assert pixels[1, 1] < pixels[0, 1]  # world up is image up
    assert pixels[2, 0] > pixels[0, 0]  # the subject's left (+x) is the image's right
    tilted = kinect_pose(distance=2.5, height=1.0, tilt=0.2)
    pixels_tilted, _ = project(transform_points(invert_rigid(tilted), world[:1]), CALIBRATION.depth)
    assert pixels_tilted[0, 1] < pixels[0, 1]  # looking down puts the subject higher in the image


def test_scene_layout() -> None:
    objects = scene(room_size=(5.0, 2.6, 6.0), seed=3)
    by_name = {obj.name: obj for obj in objects}
    assert set(by_name) == {"floor", "wall", "box"}
    floor, back = by_name["floor"], by_name["wall"]
    np.testing.assert_allclose(floor.vertices[:, 1], 0.0)
    assert (back.vertices[:, 2] < -0.7).all() and (back.vertices[:, 2] > -1.5).all()
    assert floor.vertices[:, 2].max() > 3.5  # the floor reaches under a camera 3 m away
    box = by_name["box"].vertices
    assert np.abs(box[:, 0]).min() > 0.4 and box[:, 1].min() == pytest.approx(0.0, abs=1e-6)
    for obj in objects:
        assert obj.colors.shape == (len(obj.vertices), 3) and obj.reflectivity.shape == (len(obj.vertices),)
        assert ((obj.colors >= 0) & (obj.colors <= 1)).all()
    assert len(scene(seed=3, with_box=False)) == 2
    assert not np.allclose(scene(seed=4)[1].vertices, back.vertices)  # the seed moves the wall


def test_colour_render_is_shaded_noisy_and_deterministic() -> None:
    meshes, colours, _ = scene_surfaces(scene(seed=1, with_box=False))
    pose = world_from_color(CALIBRATION, kinect_pose(2.5, 1.0, 0.1))
    image, hits = render_color(meshes, colours, CALIBRATION, pose, np.random.default_rng(3))
    again, _ = render_color(meshes, colours, CALIBRATION, pose, np.random.default_rng(3))
    np.testing.assert_array_equal(image, again)
    assert image[~hits.hit].mean() < 2 and image[~hits.hit].max() < 25  # black background, up to the noise
    floor = hits.mesh_ids == 0
    assert floor.any() and (hits.mesh_ids == 1).any()
    flat, _ = render_color(meshes, colours, CALIBRATION, pose, np.random.default_rng(3), noise_sigma=0.0)
    noise = image.astype(float) - flat
    assert 1.5 < noise[hits.hit].std() < 3.5  # σ = 0.01 of full scale ≈ 2.55 levels
