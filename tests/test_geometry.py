"""Signed distances and closest points on analytic shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from rgbd2avatar.geometry import (
    MeshQuery,
    closest_points,
    signed_distance,
    signed_distance_batch,
    vertex_normals,
)

RNG = np.random.default_rng(0)
HALF = np.array([0.3, 0.5, 0.8])  # half extents of the test box


def icosphere(radius: float) -> tuple[np.ndarray, np.ndarray, float]:
    """A subdivided icosphere: vertices (V, 3), faces (T, 3), and its largest gap to the sphere."""
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    plane_distance = np.abs(np.einsum("tk,tk->t", mesh.face_normals, vertices[faces[:, 0]]))
    return vertices, faces, radius - plane_distance.min()


def box() -> tuple[np.ndarray, np.ndarray]:
    mesh = trimesh.creation.box(extents=2 * HALF)
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def box_sdf(points: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """Exact signed distance to the axis-aligned box of half extents HALF."""
    q = np.abs(points - (0 if center is None else center)) - HALF
    return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0)


def test_sphere_matches_radial_distance() -> None:
    radius = 0.7
    vertices, faces, gap = icosphere(radius)
    points = RNG.uniform(-2, 2, (5000, 3))
    expected = np.linalg.norm(points, axis=1) - radius
    result = signed_distance(vertices, faces, points)
    assert result.shape == (5000,) and isinstance(result, np.ndarray)
    assert np.abs(result - expected).max() <= gap + 1e-5
    assert gap < 0.01


def test_box_is_exact_inside_and_outside() -> None:
    vertices, faces = box()
    points = RNG.uniform(-1.5, 1.5, (5000, 3))
    np.testing.assert_allclose(signed_distance(vertices, faces, points), box_sdf(points), atol=2e-6)


def test_sign_deep_inside_and_on_a_grid() -> None:
    vertices, faces = box()
    axes = [np.linspace(-h + 0.01, h - 0.01, 9) for h in HALF]  # grid points line up with edges
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    deep = RNG.normal(0, 0.02, (500, 3))
    assert (signed_distance(vertices, faces, grid) < 0).all()
    np.testing.assert_allclose(signed_distance(vertices, faces, deep), box_sdf(deep), atol=2e-6)


def test_overlapping_parts_are_inside() -> None:
    """Two overlapping boxes in one mesh, as where a posed body intersects itself."""
    vertices, faces = box()
    shift = np.array([0.4, 0.1, 0.15])  # no shared planes: coplanar overlaps are ambiguous
    both_v, both_f = (
        np.concatenate([vertices, vertices + shift]),
        np.concatenate([faces, faces + len(vertices)]),
    )
    points = RNG.uniform(-1.0, 1.5, (3000, 3))
    expected = np.minimum(box_sdf(points), box_sdf(points, shift))
    result = signed_distance(both_v, both_f, points)
    np.testing.assert_array_equal(result < 0, expected < 0)
    overlap = np.array([[0.2, 0.0, 0.0]])  # inside both boxes: crossed twice, parity would say outside
    assert signed_distance(both_v, both_f, overlap)[0] < 0


def test_either_face_orientation() -> None:
    vertices, faces = box()
    points = RNG.uniform(-1.5, 1.5, (2000, 3))
    np.testing.assert_allclose(signed_distance(vertices, faces[:, ::-1], points), box_sdf(points), atol=2e-6)


def test_torch_in_torch_out() -> None:
    vertices, faces = box()
    points = torch.from_numpy(RNG.uniform(-1, 1, (100, 3)))
    result = signed_distance(torch.from_numpy(vertices), torch.from_numpy(faces), points)
    assert isinstance(result, torch.Tensor) and result.dtype == torch.float64 and result.shape == (100,)
    np.testing.assert_allclose(result.numpy(), box_sdf(points.numpy()), atol=2e-6)


def test_batch_equals_per_frame() -> None:
    vertices, faces, _ = icosphere(0.5)
    scales = np.array([0.8, 1.0, 1.3])[:, None, None]
    offsets = RNG.normal(0, 0.3, (3, 1, 3))
    frames = vertices[None] * scales + offsets  # (F, V, 3)
    points = RNG.uniform(-1.2, 1.2, (3, 400, 3))
    batch = signed_distance_batch(torch.from_numpy(frames), faces, torch.from_numpy(points).float())
    assert batch.shape == (3, 400) and batch.dtype == torch.float32
    for f in range(3):
        np.testing.assert_array_equal(
            batch[f].numpy(), signed_distance(frames[f], faces, points[f]).astype(np.float32)
        )


def test_closest_points_and_barycentrics() -> None:
    vertices, faces = box()
    points = np.array([[1.0, 0.1, 0.2], [0.0, -0.2, -2.0], [0.1, 0.1, 0.1]])
    found = closest_points(vertices, faces, points)
    np.testing.assert_allclose(found.points, [[0.3, 0.1, 0.2], [0.0, -0.2, -0.8], [0.3, 0.1, 0.1]], atol=1e-6)
    np.testing.assert_allclose(found.distances, [0.7, 1.2, 0.2], atol=1e-6)
    corners = vertices[faces[found.triangle_ids]]  # (N, 3, 3)
    np.testing.assert_allclose(np.einsum("nc,nck->nk", found.barycentrics, corners), found.points, atol=1e-6)


def test_empty_queries_and_meshes() -> None:
    vertices, faces = box()
    assert signed_distance(vertices, faces, np.zeros((0, 3))).shape == (0,)
    with pytest.raises(ValueError):
        MeshQuery(vertices, np.zeros((0, 3), dtype=np.int64))


def test_vertex_normals_of_a_sphere_point_outwards_and_a_vertex_without_area_gets_a_unit_default():
    vertices, faces, _ = icosphere(0.7)
    vertices = np.concatenate([vertices, [[5.0, 5.0, 5.0]]])  # a vertex no face uses
    normals = vertex_normals(vertices, faces)
    radial = vertices[:-1] / np.linalg.norm(vertices[:-1], axis=1, keepdims=True)
    assert normals.dtype == np.float32 and normals.shape == vertices.shape
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
    assert (normals[:-1] * radial).sum(1).min() > 0.995
    np.testing.assert_array_equal(normals[-1], [0.0, 1.0, 0.0])
    flipped = vertex_normals(vertices, faces[:, ::-1])  # reversed winding: normals point inwards
    np.testing.assert_allclose(flipped[:-1], -normals[:-1], atol=1e-6)
