"""Ray-cast renderer: analytic silhouettes and depths, normals, shading, contact sheets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from rgbd2avatar.render import (
    DEFAULT_BACKGROUND,
    Camera,
    contact_sheet,
    interpolate,
    look_at,
    merge_meshes,
    pinhole_intrinsics,
    plane,
    raycast,
    render_mesh,
    shade,
)

FOCAL, SIZE = 300.0, 161
K = np.array([[FOCAL, 0.0, (SIZE - 1) / 2], [0.0, FOCAL, (SIZE - 1) / 2], [0.0, 0.0, 1.0]])
CAMERA = Camera(K=K, world_from_camera=np.eye(4), width=SIZE, height=SIZE)
RADIUS, DISTANCE = 0.5, 2.0


def sphere(center: tuple[float, float, float] = (0.0, 0.0, DISTANCE)) -> tuple[np.ndarray, np.ndarray]:
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=RADIUS)
    return np.asarray(mesh.vertices) + center, np.asarray(mesh.faces)


def test_sphere_disc_radius_and_centre_depth() -> None:
    hits = raycast(*sphere(), CAMERA)
    expected_radius = FOCAL * RADIUS / math.sqrt(DISTANCE**2 - RADIUS**2)
    assert math.sqrt(hits.hit.sum() / math.pi) == pytest.approx(expected_radius, abs=0.3)
    centre = SIZE // 2  # pixel 80's centre is at 80 = cx: its ray is the optical axis
    assert hits.depth[centre, centre] == pytest.approx(DISTANCE - RADIUS, abs=1e-4)
    columns = np.flatnonzero(hits.hit[centre])
    assert (columns[0] + columns[-1]) / 2 == pytest.approx((SIZE - 1) / 2)  # disc centred on the axis


def test_background_is_flagged() -> None:
    hits = raycast(*sphere(), CAMERA)
    background = ~hits.hit
    assert background[0, 0] and background.sum() > 0
    assert (hits.triangle_ids[background] == -1).all() and (hits.triangle_ids[hits.hit] >= 0).all()
    assert (hits.depth[background] == 0).all() and (hits.depth[hits.hit] > 0).all()
    assert (hits.barycentrics[background] == 0).all() and (hits.normals[background] == 0).all()


def test_plane_gives_constant_depth() -> None:
    depth = 3.0
    hits = raycast(*plane((0.0, 0.0, depth), (10.0, 0.0, 0.0), (0.0, 10.0, 0.0)), CAMERA)
    assert hits.hit.all()
    np.testing.assert_allclose(hits.depth, depth, rtol=1e-6)


def test_normals_face_the_camera() -> None:
    hits = raycast(*sphere(), CAMERA)
    rays = CAMERA.rays()[..., 3:]
    assert ((hits.normals * rays).sum(-1)[hits.hit] < 0).all()
    np.testing.assert_allclose(np.linalg.norm(hits.normals[hits.hit], axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(hits.normals[SIZE // 2, SIZE // 2], [0, 0, -1], atol=0.02)


def test_barycentrics_interpolate_hit_points() -> None:
    vertices, faces = sphere()
    hits = raycast(vertices, faces, CAMERA)
    points = interpolate(hits, faces, vertices)
    expected = CAMERA.rays()[..., 3:] * hits.depth[..., None]  # camera at the origin
    np.testing.assert_allclose(points[hits.hit], expected[hits.hit], atol=1e-5)


def test_rays_pass_through_pixel_centres() -> None:
    camera = look_at((1.0, 2.0, 3.0), (0.0, 0.5, 0.0), (0.0, 1.0, 0.0), K, SIZE, SIZE - 20)
    rays = camera.rays()
    assert rays.shape == (SIZE - 20, SIZE, 6)
    pixels, depth = camera.project((rays[..., :3] + 2.0 * rays[..., 3:]).reshape(-1, 3))
    u, v = np.meshgrid(np.arange(SIZE), np.arange(SIZE - 20))
    np.testing.assert_allclose(pixels, np.stack([u, v], -1).reshape(-1, 2), atol=1e-3)
    np.testing.assert_allclose(depth, 2.0, atol=1e-5)


def test_look_at_orientation() -> None:
    camera = look_at((0.0, 1.0, 4.0), (0.0, 1.0, 0.0), (0.0, 1.0, 0.0), K, SIZE, SIZE)
    rotation = camera.world_from_camera[:3, :3]
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    pixels, depth = camera.project(np.array([[0.0, 1.0, 0.0], [0.0, 1.5, 0.0], [0.5, 1.0, 0.0]]))
    np.testing.assert_allclose(pixels[0], [(SIZE - 1) / 2, (SIZE - 1) / 2])
    assert pixels[1, 1] < SIZE / 2  # world up is image up
    assert pixels[2, 0] > SIZE / 2  # looking along −z with y up, world +x is on the right
    np.testing.assert_allclose(depth, 4.0)
    with pytest.raises(ValueError):
        look_at((0.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 1.0, 0.0), K, SIZE, SIZE)


def test_shading_and_vertex_colours() -> None:
    vertices, faces = sphere()
    image = render_mesh(torch.from_numpy(vertices), torch.from_numpy(faces), CAMERA)
    hit = raycast(vertices, faces, CAMERA).hit
    assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE, 3)
    assert (image[~hit] == DEFAULT_BACKGROUND).all()
    assert image[SIZE // 2, SIZE // 2, 0] == pytest.approx(0.8 * 255, abs=1)  # headlight hits head-on
    assert image[hit][:, 0].min() < image[SIZE // 2, SIZE // 2, 0]  # darker towards the silhouette
    red = np.tile(np.array([[255, 0, 0]], dtype=np.uint8), (len(vertices), 1))
    coloured = render_mesh(vertices, faces, CAMERA, vertex_colors=red)
    assert (coloured[hit][:, 1:] == 0).all() and (coloured[hit][:, 0] > 0).all()


def test_directional_light_leaves_far_side_at_ambient() -> None:
    vertices, faces = sphere()
    hits = raycast(vertices, faces, CAMERA)
    image = shade(hits, CAMERA, light=(1.0, 0.0, 0.0), ambient=0.25)
    row = image[SIZE // 2, :, 0][hits.hit[SIZE // 2]]
    assert row[-1] > row[0]  # the light comes from +x, the image's right
    assert row[0] == pytest.approx(0.25 * 0.8 * 255, abs=1)


def test_merged_meshes_person_on_floor() -> None:
    person = sphere((0.0, 0.0, 0.0))
    floor = plane((0.0, -RADIUS, 0.0), (0.0, 0.0, 2.0), (2.0, 0.0, 0.0))
    vertices, faces = merge_meshes([person[0], floor[0]], [person[1], floor[1]])
    camera = look_at(
        (0.0, 1.0, 3.0), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0), pinhole_intrinsics(120, 90, 50.0), 120, 90
    )
    hits = raycast(vertices, faces, camera)
    on_floor = hits.triangle_ids >= len(person[1])
    assert on_floor.any() and (hits.hit & ~on_floor).any()
    assert (hits.normals[on_floor] @ np.array([0.0, 1.0, 0.0]) > 0.99).all()


def test_contact_sheet_layout_and_labels() -> None:
    red = np.zeros((60, 80, 3), dtype=np.uint8)
    red[..., 0] = 255
    grey = np.full((30, 30), 128, dtype=np.uint8)
    sheet = contact_sheet([red, grey, red], cols=2, gap=2)
    assert sheet.shape == (2 * 62 + 2, 2 * 82 + 2, 3) and sheet.dtype == np.uint8
    assert (sheet[2:62, 2:82] == [255, 0, 0]).all() and (sheet[2:32, 84:114] == 128).all()
    assert (sheet[0] == 255).all() and (sheet[64:124, 84:164] == 255).all()  # gaps and the empty cell
    labelled = contact_sheet([red, grey, red], cols=2, labels=["a", "b", "c"], gap=2)
    assert (labelled[2:20, 2:20] != sheet[2:20, 2:20]).any()  # "a" at the first cell's corner
    assert (labelled[64:84, 2:20] != sheet[64:84, 2:20]).any()  # "c" at the third cell's corner
    assert (labelled[30:62, 30:82] == sheet[30:62, 30:82]).all()  # nothing drawn elsewhere
