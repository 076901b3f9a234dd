"""Texture baking on analytic scenes with known answers: planes seen by a camera whose image is
a linear colour ramp (bilinear sampling reproduces it exactly), an occluder, the atlas, the files."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from capture.calibration import backproject, pixel_rays, project, transform_points
from capture.sequence import CameraIntrinsics
from rgbd2avatar.texture import (
    BakeView,
    DepthMap,
    MeasuredDepth,
    TextureOptions,
    UVMesh,
    bake_texture,
    bilinear,
    dilate_gutters,
    load_textured_mesh,
    obj_text,
    sample_texture,
    texel_map,
    uv_atlas,
    view_samples,
    write_textured_mesh,
)

CAMERA = CameraIntrinsics(width=80, height=60, fx=70.0, fy=70.0, cx=39.5, cy=29.5, k1=0.05, p1=1e-3)
"""A small distorted camera."""
OPTIONS = TextureOptions(size=32, power=1.0, edge_margin=1e-6, depth_tolerance=0.01)


def ramp_image(intrinsics: CameraIntrinsics) -> np.ndarray:
    """(H, W, 3) uint8 colours linear in the pixel coordinates (exact under bilinear sampling)."""
    v, u = np.mgrid[0 : intrinsics.height, 0 : intrinsics.width].astype(np.float64)
    return np.stack([2 * u + 20, 3 * v + 30, np.full_like(u, 90.0)], -1).astype(np.uint8)


def ramp_colour(pixels: np.ndarray) -> np.ndarray:
    """(N, 3) the ramp's colours at continuous pixels (N, 2)."""
    return np.stack([2 * pixels[:, 0] + 20, 3 * pixels[:, 1] + 30, np.full(len(pixels), 90.0)], -1)


def grid_plane(center, half: float, cells: int, uv_low, uv_high) -> UVMesh:
    """A square of (cells × cells × 2) triangles at z = center[2] facing the camera (−z), with UVs
    spanning [uv_low, uv_high] linearly in x and y (v up while y goes down)."""
    t = np.linspace(0.0, 1.0, cells + 1)
    tx, ty = np.meshgrid(t, t)
    x = center[0] - half + 2 * half * tx
    y = center[1] - half + 2 * half * ty
    vertices = np.stack([x, y, np.full_like(x, center[2])], -1).reshape(-1, 3)
    uvs = np.stack(
        [uv_low[0] + (uv_high[0] - uv_low[0]) * tx, uv_high[1] - (uv_high[1] - uv_low[1]) * ty], -1
    ).reshape(-1, 2)
    index = np.arange((cells + 1) ** 2).reshape(cells + 1, cells + 1)
    a, b, c, d = index[:-1, :-1], index[:-1, 1:], index[1:, 1:], index[1:, :-1]
    faces = np.concatenate([np.stack([a, c, b], -1), np.stack([a, d, c], -1)]).reshape(-1, 3)
    return UVMesh(vertices.astype(np.float32), faces.astype(np.int64), uvs.astype(np.float32))


def merge(*meshes: UVMesh) -> UVMesh:
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    return UVMesh(
        np.concatenate([m.vertices for m in meshes]),
        np.concatenate([m.faces + o for m, o in zip(meshes, offsets, strict=True)]),
        np.concatenate([m.uvs for m in meshes]),
    )


def texel_points(mesh: UVMesh, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(S, S, 3) surface point under every texel (NaN outside the charts) and the covered mask."""
    texels = texel_map(mesh, size)
    points = texels.to_image(texels.interpolate(mesh.faces, mesh.vertices), fill=np.nan)
    return points, texels.covered()


def test_texel_map_round_trips_uv_coordinates():
    mesh = grid_plane((0, 0, 1), 0.5, 3, (0.0, 0.0), (1.0, 1.0))
    size = 16
    texels = texel_map(mesh, size)
    assert texels.covered().all()
    uvs = texels.interpolate(mesh.faces, mesh.uvs)
    np.testing.assert_allclose(uvs[:, 0], (texels.cols + 0.5) / size, atol=1e-5)
    np.testing.assert_allclose(uvs[:, 1], 1 - (texels.rows + 0.5) / size, atol=1e-5)
    texture = np.zeros((size, size, 3), np.uint8)
    texture[..., 0] = np.arange(size)[None, :] * 10
    np.testing.assert_allclose(sample_texture(texture, uvs)[:, 0], texels.cols * 10.0, atol=1e-3)


def test_projection_round_trip_through_the_colour_camera():
    rng = np.random.default_rng(0)
    depth_to_color = np.eye(4)
    depth_to_color[:3, :3] = trimesh.transformations.rotation_matrix(0.02, (0, 1, 0))[:3, :3]
    depth_to_color[:3, 3] = (-0.032, 0.002, 0.004)
    points = rng.uniform((-0.3, -0.2, 1.5), (0.3, 0.2, 2.5), (50, 3))
    in_colour = transform_points(depth_to_color, points)
    pixels, z = project(in_colour, CAMERA)
    rays = pixel_rays(CAMERA)
    u, v = np.rint(pixels).astype(int).T
    snapped = np.stack([u, v], -1).astype(np.float64)
    depth = np.zeros(CAMERA.shape, np.float32)
    depth[v, u] = z
    lifted = backproject(depth, CAMERA, rays)[v, u]
    np.testing.assert_allclose(project(lifted, CAMERA)[0], snapped, atol=1e-3)
    back = transform_points(np.linalg.inv(depth_to_color), lifted.astype(np.float64))
    assert np.allclose(np.linalg.norm(back - points, axis=1), 0, atol=0.02)


def test_bilinear_is_exact_on_a_linear_ramp():
    image = ramp_image(CAMERA)
    pixels = np.array([[0.0, 0.0], [10.25, 5.5], [78.9, 58.1]])
    np.testing.assert_allclose(bilinear(image, pixels), ramp_colour(pixels), atol=1e-3)


def test_baked_colours_equal_the_image_where_visible():
    mesh = grid_plane((0.0, 0.0, 1.0), 0.3, 4, (0.05, 0.05), (0.95, 0.95))
    baked = bake_texture(mesh, [BakeView(mesh.vertices, ramp_image(CAMERA), CAMERA)], OPTIONS)
    points, covered = texel_points(mesh, OPTIONS.size)
    assert baked.seen[covered].all() and (baked.weight[covered] > 0.9).all()
    pixels, _ = project(points[covered], CAMERA)
    error = np.abs(baked.image[covered].astype(float) - ramp_colour(pixels))
    assert error.max() <= 0.51
    gutter = ~covered
    assert gutter.any() and (baked.image[gutter] > 0).all()


def test_depth_test_excludes_occluded_texels_and_unseen_ones_are_filled():
    back = grid_plane((0.0, 0.0, 1.2), 0.3, 8, (0.02, 0.02), (0.48, 0.48))
    front = grid_plane((0.0, 0.0, 0.9), 0.06, 2, (0.55, 0.55), (0.95, 0.95))
    mesh = merge(back, front)
    baked = bake_texture(mesh, [BakeView(mesh.vertices, ramp_image(CAMERA), CAMERA)], OPTIONS)
    points, covered = texel_points(mesh, OPTIONS.size)
    on_back = covered & (points[..., 2] > 1.1)
    hidden = on_back & (np.abs(points[..., 0]) < 0.06 * 1.2 / 0.9 - 0.02) & (np.abs(points[..., 1]) < 0.05)
    assert hidden.sum() >= 4
    assert not baked.seen[hidden].any() and (baked.weight[hidden] == 0).all()
    clear = on_back & (np.abs(points[..., :2]).max(-1) > 0.13)  # 2 px beyond the occluder (±0.08)
    assert baked.seen[clear].all()
    seen = baked.seen & covered
    seen_points, seen_colours = points[seen], baked.image[seen]
    for point, colour in zip(points[hidden], baked.image[hidden], strict=True):
        nearest = np.argmin(np.linalg.norm(seen_points - point, axis=1))
        assert np.array_equal(colour, seen_colours[nearest])
        assert seen_points[nearest][2] > 1.1  # filled from the back plane, not the occluder


def test_the_recorded_depth_vetoes_texels_off_the_real_surface():
    """A plane at 1 m, seen by a colour camera 3 cm beside the depth camera. The depth sensor
    measured the plane on the left (x < 0), the background 1 m behind it on the right (the
    avatar reaches past the real surface there), and nothing on a band at the top (a dropout)."""
    mesh = grid_plane((0.0, 0.0, 1.0), 0.3, 8, (0.05, 0.05), (0.95, 0.95))
    color_from_depth = np.eye(4)
    color_from_depth[0, 3] = -0.03
    depth_camera = CameraIntrinsics(width=90, height=70, fx=60.0, fy=60.0, cx=44.5, cy=34.5, k2=0.02)
    rays = pixel_rays(depth_camera)
    depth = np.where(rays[..., 0] < 0, 1.0, 2.0).astype(np.float32)
    depth[rays[..., 1] < -0.2] = 0.0
    measured = MeasuredDepth(depth, depth_camera, np.linalg.inv(color_from_depth))
    in_colour = transform_points(color_from_depth, mesh.vertices).astype(np.float32)

    baked = bake_texture(mesh, [BakeView(in_colour, ramp_image(CAMERA), CAMERA, measured)], OPTIONS)
    points, covered = texel_points(mesh, OPTIONS.size)  # depth-camera frame
    x, y = points[..., 0] / points[..., 2], points[..., 1] / points[..., 2]
    clear = covered & (np.abs(x) > 0.02) & (np.abs(y + 0.2) > 0.02)
    assert baked.seen[clear & (x < 0)].all()
    assert not baked.seen[clear & (x > 0) & (y > -0.2)].any()
    assert baked.seen[clear & (x > 0) & (y < -0.2)].all()  # no measurement: no veto
    plain = bake_texture(mesh, [BakeView(in_colour, ramp_image(CAMERA), CAMERA)], OPTIONS)
    assert plain.seen[clear].all()


def test_back_faces_and_texels_outside_the_image_are_unseen():
    facing_away = grid_plane((0.0, 0.0, 1.0), 0.2, 2, (0.1, 0.1), (0.9, 0.9))
    facing_away.faces = facing_away.faces[:, ::-1].copy()
    baked = bake_texture(facing_away, [BakeView(facing_away.vertices, ramp_image(CAMERA), CAMERA)], OPTIONS)
    assert not baked.seen.any()
    assert (baked.image == np.rint(255 * 0.8)).all()  # nothing seen: uniform grey
    aside = grid_plane((5.0, 0.0, 1.0), 0.2, 2, (0.1, 0.1), (0.9, 0.9))
    depth_map = DepthMap.of_mesh(aside.vertices, aside.faces, CAMERA, 0.05)
    samples = view_samples(aside.vertices, np.tile([0, 0, -1.0], (9, 1)), CAMERA, depth_map, 0.01, 1.0)
    assert not samples.visible.any() and (samples.weights(4.0) == 0).all()


def test_weights_are_the_cosine_to_the_camera_to_a_power():
    mesh = grid_plane((0.0, 0.0, 1.0), 0.2, 2, (0.1, 0.1), (0.9, 0.9))
    tilt = trimesh.transformations.rotation_matrix(1.0, (0, 1, 0), point=(0, 0, 1))
    tilted = transform_points(tilt, mesh.vertices.astype(np.float64)).astype(np.float32)
    options = TextureOptions(size=32, power=3.0, edge_margin=1e-6)
    baked = bake_texture(mesh, [BakeView(tilted, ramp_image(CAMERA), CAMERA)], options)
    texels = texel_map(mesh, options.size)
    points = texels.interpolate(mesh.faces, tilted)
    normal = tilt[:3, :3] @ np.array([0.0, 0.0, -1.0])
    cosine = -(points @ normal) / np.linalg.norm(points, axis=1)
    seen = baked.seen[texels.rows, texels.cols]
    assert seen.sum() > 50 and cosine.min() < 0.5 < cosine.max()
    np.testing.assert_allclose(baked.weight[texels.rows, texels.cols][seen], cosine[seen] ** 3, rtol=1e-4)


def test_gutter_dilation_copies_the_nearest_chart_texel():
    image = np.zeros((5, 5, 3), np.uint8)
    covered = np.zeros((5, 5), bool)
    covered[1, 1], covered[3, 4] = True, True
    image[1, 1], image[3, 4] = (10, 20, 30), (200, 100, 0)
    dilated = dilate_gutters(image, covered)
    assert tuple(dilated[0, 0]) == (10, 20, 30) and tuple(dilated[4, 4]) == (200, 100, 0)


@pytest.fixture(scope="module")
def sphere_atlas() -> UVMesh:
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    return uv_atlas(sphere.vertices, sphere.faces, 64)


def test_uv_atlas_of_a_sphere(sphere_atlas):
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    assert len(sphere_atlas.faces) == len(sphere.faces)
    assert sphere_atlas.uvs.min() >= 0 and sphere_atlas.uvs.max() <= 1
    np.testing.assert_allclose(np.linalg.norm(sphere_atlas.vertices, axis=1), 0.3, atol=1e-5)
    assert texel_map(sphere_atlas, 64).covered().mean() > 0.3


def test_textured_files_load_back(sphere_atlas, tmp_path):
    camera = CameraIntrinsics(width=160, height=120, fx=140.0, fy=140.0, cx=79.5, cy=59.5)
    shifted = sphere_atlas.vertices + np.float32([0, 0, 1.0])
    options = TextureOptions(size=64, power=2.0, edge_margin=1.0)
    baked = bake_texture(sphere_atlas, [BakeView(shifted, ramp_image(camera), camera)], options)
    assert 0.2 < baked.seen[baked.covered].mean() < 0.35  # the cap the camera sees: (1 - 0.3 / 1) / 2
    write_textured_mesh(tmp_path, sphere_atlas, baked)
    loaded = trimesh.load(tmp_path / "avatar.obj", process=False)
    assert len(loaded.faces) == len(sphere_atlas.faces)
    assert loaded.visual.material.image.size == (64, 64)
    glb = trimesh.load(tmp_path / "avatar.glb", force="mesh", process=False)
    assert len(glb.faces) == len(sphere_atlas.faces) and glb.visual.material.baseColorTexture.size == (64, 64)
    np.testing.assert_allclose(np.sort(glb.visual.uv[:, 1]), np.sort(sphere_atlas.uvs[:, 1]), atol=1e-5)
    mesh, texture, seen = load_textured_mesh(tmp_path)
    assert np.array_equal(texture, baked.image) and np.array_equal(seen, baked.seen)
    assert obj_text(mesh, "avatar.mtl").count("\nf ") == len(mesh.faces)
