"""Free-space samples: which points a depth image shows to be empty, in closed form on a wall."""

from __future__ import annotations

import numpy as np
import pytest

from capture.sequence import CameraIntrinsics
from fitting.pina.data import FREE_SPACE_MARGIN, FREE_SPACE_POOL, free_space_samples, in_free_space
from rgbd2avatar.geometry import MeshQuery

CAMERA = CameraIntrinsics(width=64, height=48, fx=50.0, fy=50.0, cx=31.5, cy=23.5)
WALL = 2.0


def wall(hole: tuple[int, int] | None = None) -> np.ndarray:
    """(48, 64) depth of a wall facing the camera at WALL metres, with one unmeasured pixel."""
    depth = np.full((CAMERA.height, CAMERA.width), WALL, np.float32)
    if hole is not None:
        depth[hole[1], hole[0]] = 0.0
    return depth


def on_ray(u: float, v: float, z: float) -> np.ndarray:
    """The point at depth z seen at pixel (u, v) (no lens distortion)."""
    return np.array([(u - CAMERA.cx) / CAMERA.fx * z, (v - CAMERA.cy) / CAMERA.fy * z, z], np.float32)


def test_only_points_in_front_of_the_measured_depth_by_the_margin_are_empty():
    depths = [0.5, WALL - 2 * FREE_SPACE_MARGIN, WALL - FREE_SPACE_MARGIN / 2, WALL + 0.1]
    points = np.stack([on_ray(20, 30, z) for z in depths])
    assert in_free_space(points, wall(), CAMERA).tolist() == [True, True, False, False]


def test_nothing_is_known_next_to_an_unmeasured_pixel_or_outside_the_image():
    points = np.stack([on_ray(20, 30, 1.0), on_ray(21, 31, 1.0), on_ray(23, 30, 1.0), on_ray(70, 30, 1.0)])
    assert in_free_space(points, wall(hole=(20, 30)), CAMERA).tolist() == [False, False, True, False]
    assert not in_free_space(np.array([[0.0, 0.0, -1.0]], np.float32), wall(), CAMERA).any()


@pytest.mark.parametrize("seed", [0, 1])
def test_samples_around_a_box_seen_against_the_wall_lie_outside_it(seed):
    box = MeshQuery(*_box(center=(0.0, 0.0, 1.5), half=0.2))
    depth = _depth_of_box_before_wall(center=(0.0, 0.0, 1.5), half=0.2)
    vertices = box.vertices
    samples = free_space_samples(vertices, depth, CAMERA, np.random.default_rng(seed))
    assert 0 < len(samples) <= FREE_SPACE_POOL
    assert (box.signed_distance(samples) > 0).all()
    assert in_free_space(samples, depth, CAMERA).all()


def _box(center: tuple[float, float, float], half: float) -> tuple[np.ndarray, np.ndarray]:
    """A closed axis-aligned cube, finely subdivided so that its vertices cover its faces."""
    import trimesh

    mesh = trimesh.creation.box(extents=(2 * half,) * 3).subdivide().subdivide().subdivide()
    return (mesh.vertices + np.array(center)).astype(np.float32), mesh.faces


def _depth_of_box_before_wall(center: tuple[float, float, float], half: float) -> np.ndarray:
    """Depth image of the cube's front face (z = center − half) in front of the wall."""
    v, u = np.mgrid[0 : CAMERA.height, 0 : CAMERA.width].astype(np.float32)
    front = center[2] - half
    x, y = (u - CAMERA.cx) / CAMERA.fx * front, (v - CAMERA.cy) / CAMERA.fy * front
    covered = (np.abs(x - center[0]) <= half) & (np.abs(y - center[1]) <= half)
    return np.where(covered, front, WALL).astype(np.float32)
