"""MISE mesh extraction on analytic SDFs: surface accuracy, equality with the dense grid, topology."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from rgbd2avatar.meshing import MeshResult, dense_grid_mesh, extract_mesh

UNIT_BOX = (np.full(3, -0.5), np.full(3, 0.5))


def sphere(center: tuple[float, float, float], radius: float):
    """SDF of a sphere: (N, 3) → (N,)."""
    c = torch.tensor(center)
    return lambda p: (p - c.to(p.device)).norm(dim=1) - radius


def union(*sdfs):
    """SDF of the union of shapes (exact outside, a lower bound on the depth inside)."""
    return lambda p: torch.stack([sdf(p) for sdf in sdfs]).amin(0)


def torus(major: float, minor: float):
    """SDF of a torus around the z axis, centred slightly off the grid's symmetry planes."""
    offset = torch.tensor([0.013, -0.007, 0.004])

    def sdf(p: torch.Tensor) -> torch.Tensor:
        q = p - offset.to(p.device)
        ring = torch.stack([q[:, :2].norm(dim=1) - major, q[:, 2]], 1)
        return ring.norm(dim=1) - minor

    return sdf


def capsule(a: tuple[float, float, float], b: tuple[float, float, float], radius: float):
    """SDF of the points within ``radius`` of the segment a–b."""
    start, end = torch.tensor(a), torch.tensor(b)

    def sdf(p: torch.Tensor) -> torch.Tensor:
        ab = (end - start).to(p.device)
        ap = p - start.to(p.device)
        t = ((ap @ ab) / (ab @ ab)).clamp(0.0, 1.0)
        return (ap - t[:, None] * ab).norm(dim=1) - radius

    return sdf


def stick_figure():
    """A 1.8 m person of capsules in an A-pose (legs and arms apart), feet at y = 0."""
    parts = [
        capsule((0.0, 1.00, 0.0), (0.0, 1.45, 0.0), 0.13),  # torso
        capsule((0.0, 1.62, 0.0), (0.0, 1.68, 0.0), 0.10),  # head
        capsule((-0.09, 0.95, 0.0), (-0.18, 0.08, 0.0), 0.06),  # legs
        capsule((0.09, 0.95, 0.0), (0.18, 0.08, 0.0), 0.06),
        capsule((-0.18, 1.42, 0.0), (-0.65, 1.05, 0.0), 0.04),  # arms
        capsule((0.18, 1.42, 0.0), (0.65, 1.05, 0.0), 0.04),
    ]
    return union(*parts), (np.array([-0.8, -0.05, -0.3]), np.array([0.8, 1.85, 0.3]))


def as_trimesh(result: MeshResult) -> trimesh.Trimesh:
    return trimesh.Trimesh(result.vertices, result.faces, process=False)


def sdf_at(sdf, vertices: np.ndarray) -> np.ndarray:
    return sdf(torch.from_numpy(vertices)).numpy()


def cell_size(bounds: tuple[np.ndarray, np.ndarray], resolution: int) -> float:
    return float(np.max((bounds[1] - bounds[0]) / resolution))


def assert_same_mesh(a: MeshResult, b: MeshResult) -> None:
    """Equal up to float noise: same vertices and faces (both come from marching cubes on equal values)."""
    assert a.vertices.shape == b.vertices.shape and np.array_equal(a.faces, b.faces)
    np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-6)


def test_sphere_on_surface_watertight_outward_with_analytic_volume():
    radius, resolution = 0.3, 128
    result = extract_mesh(sphere((0.0, 0.0, 0.0), radius), *UNIT_BOX, resolution, 16)
    mesh = as_trimesh(result)

    assert result.vertices.dtype == np.float32 and result.faces.dtype == np.int64
    assert result.resolution == resolution and result.seconds > 0
    assert np.abs(np.linalg.norm(result.vertices, axis=1) - radius).max() < 0.5 * cell_size(
        UNIT_BOX, resolution
    )
    assert mesh.is_watertight
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * radius**3, rel=0.02)
    outward = np.einsum("tk,tk->t", mesh.face_normals, mesh.triangles_center)
    assert (outward > 0).all()


def test_mise_equals_dense_grid_with_a_quarter_of_the_evaluations():
    sdf = sphere((0.02, -0.01, 0.03), 0.3)
    mise = extract_mesh(sdf, *UNIT_BOX, resolution=128, initial_resolution=16)
    dense = dense_grid_mesh(sdf, *UNIT_BOX, resolution=128)

    assert dense.evaluations == 129**3
    assert mise.evaluations < 0.25 * dense.evaluations
    assert_same_mesh(mise, dense)


def test_largest_component_keeps_the_bigger_sphere():
    big, small = sphere((-0.2, 0.0, 0.0), 0.2), sphere((0.3, 0.1, 0.0), 0.1)
    sdf = union(big, small)

    kept = extract_mesh(sdf, *UNIT_BOX, resolution=64, initial_resolution=16)
    both = extract_mesh(sdf, *UNIT_BOX, resolution=64, initial_resolution=16, largest_component=False)

    assert np.abs(sdf_at(big, kept.vertices)).max() < 0.5 * cell_size(UNIT_BOX, 64)
    assert as_trimesh(kept).is_watertight and kept.faces.max() == len(kept.vertices) - 1
    assert len(as_trimesh(both).split(only_watertight=False)) == 2
    assert len(both.faces) > len(kept.faces)


def test_safety_margin_finds_a_torus_thinner_than_a_coarse_cell():
    sdf = torus(0.3, 0.012)  # tube 2.4 cm across, coarse cells 6.25 cm
    mise = extract_mesh(sdf, *UNIT_BOX, resolution=128, initial_resolution=16)
    dense = dense_grid_mesh(sdf, *UNIT_BOX, resolution=128)

    assert_same_mesh(mise, dense)
    assert as_trimesh(mise).is_watertight
    assert np.abs(sdf_at(sdf, mise.vertices)).max() < 0.5 * cell_size(UNIT_BOX, 128)
    try:
        sign_changes_only = len(extract_mesh(sdf, *UNIT_BOX, 128, 16, margin=0.0).faces)
    except ValueError:
        sign_changes_only = 0
    assert sign_changes_only < 0.9 * len(mise.faces)


def test_stick_figure_in_a_non_cubic_box_equals_dense():
    sdf, bounds = stick_figure()  # 3 cm cells: the 8 cm arms are under 3 cells across
    mise = extract_mesh(sdf, *bounds, resolution=64, initial_resolution=8)
    dense = dense_grid_mesh(sdf, *bounds, resolution=64)

    assert_same_mesh(mise, dense)
    mesh = as_trimesh(mise)
    assert mesh.is_watertight and mesh.volume > 0
    assert len(mesh.split(only_watertight=False)) == 1
    assert np.abs(sdf_at(sdf, mise.vertices)).max() < 0.5 * cell_size(bounds, 64)
    assert mise.evaluations < 0.35 * dense.evaluations


def test_level_set_other_than_zero():
    result = extract_mesh(
        sphere((0.0, 0.0, 0.0), 0.25), *UNIT_BOX, resolution=64, initial_resolution=16, level=0.05
    )
    assert np.abs(np.linalg.norm(result.vertices, axis=1) - 0.3).max() < 0.5 * cell_size(UNIT_BOX, 64)


@pytest.mark.parametrize(("resolution", "initial"), [(100, 32), (96, 32), (16, 32), (64, 0)])
def test_resolution_must_be_initial_times_a_power_of_two(resolution: int, initial: int):
    with pytest.raises(ValueError, match="power of two"):
        extract_mesh(sphere((0.0, 0.0, 0.0), 0.3), *UNIT_BOX, resolution, initial)


def test_equal_resolutions_evaluate_the_coarse_grid_only():
    result = extract_mesh(sphere((0.0, 0.0, 0.0), 0.3), *UNIT_BOX, resolution=16, initial_resolution=16)
    assert result.evaluations == 17**3


@pytest.mark.parametrize("offset", [1.0, -1.0], ids=["all outside", "all inside"])
def test_no_surface_raises(offset: float):
    def sdf(p):
        return torch.full((len(p),), offset)

    with pytest.raises(ValueError, match="no surface"):
        extract_mesh(sdf, *UNIT_BOX, resolution=32, initial_resolution=8)
    with pytest.raises(ValueError, match="no surface"):
        dense_grid_mesh(sdf, *UNIT_BOX, resolution=8)


def test_batches_never_exceed_batch_points_and_evaluations_are_counted():
    inner = sphere((0.0, 0.0, 0.0), 0.3)
    sizes: list[int] = []

    def counting(points: torch.Tensor) -> torch.Tensor:
        assert points.dtype == torch.float32 and points.shape[1:] == (3,) and points.device.type == "cpu"
        assert not torch.is_grad_enabled()
        sizes.append(len(points))
        return inner(points)

    mise = extract_mesh(counting, *UNIT_BOX, resolution=64, initial_resolution=8, batch_points=1000)
    assert max(sizes) <= 1000 and sum(sizes) == mise.evaluations
    sizes.clear()
    dense = dense_grid_mesh(counting, *UNIT_BOX, resolution=32, batch_points=1000)
    assert max(sizes) <= 1000 and sum(sizes) == dense.evaluations == 33**3


def test_progress_reports_every_level():
    reports: list[tuple[int, int]] = []
    extract_mesh(sphere((0.0, 0.0, 0.0), 0.3), *UNIT_BOX, 64, 8, progress=lambda *r: reports.append(r))
    assert reports == [(0, 3), (1, 3), (2, 3), (3, 3)]


def test_wrong_number_of_values_is_an_error():
    with pytest.raises(ValueError, match="returned"):
        extract_mesh(lambda p: p.norm(dim=1)[:-1], *UNIT_BOX, resolution=16, initial_resolution=16)
