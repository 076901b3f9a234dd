"""Pictures of bodies and meshes: fixed front/side cameras framing a whole sequence, contact sheets."""

from __future__ import annotations

import math

import numpy as np

from rgbd2avatar.render import Camera, contact_sheet, look_at, pinhole_intrinsics, render_mesh

VIEW_DIRECTIONS: dict[str, tuple[float, float, float]] = {
    "front": (0.0, 0.0, 1.0),
    "side": (1.0, 0.0, 0.0),
    "back": (0.0, 0.0, -1.0),
    "top": (0.0, 1.0, 1e-3),
}
"""Direction from the subject towards the camera, in SMPL axes (y up, the body faces +z)."""

FOV_Y_DEG = 30.0


def part_colors(labels: np.ndarray, count: int = 24) -> np.ndarray:
    """A distinct, deterministic uint8 RGB colour per label (golden-ratio hues).

    Args:
        labels: (V,) integer labels in [0, count).
    Returns:
        (V, 3) uint8 colours.
    """
    hues = (np.arange(count) * 0.618033988749895) % 1.0
    rgb = 0.5 + 0.35 * np.cos(2 * np.pi * (hues[:, None] - np.array([0.0, 1 / 3, 2 / 3])))
    return np.round(255 * rgb[labels]).astype(np.uint8)


def framing_cameras(points: np.ndarray, views: tuple[str, ...], width: int, height: int) -> list[Camera]:
    """One camera per view that frames every given point with a small margin.

    The camera looks at the centre of the points' bounding box from the view's direction, far
    enough that the box's extent across and up the image fits the field of view.

    Args:
        points: (N, 3) all the points to keep in frame (e.g. every posed vertex of a sequence).
    """
    low, high = points.min(0), points.max(0)
    centre, half = (low + high) / 2, (high - low) / 2
    K = pinhole_intrinsics(width, height, FOV_Y_DEG)
    tan_y = math.tan(math.radians(FOV_Y_DEG) / 2)
    tan_x = tan_y * width / height
    cameras = []
    for view in views:
        back = np.asarray(VIEW_DIRECTIONS[view]) / np.linalg.norm(VIEW_DIRECTIONS[view])
        right = np.cross((0.0, 1.0, 0.0), back)
        right = right / np.linalg.norm(right)
        up = np.cross(back, right)
        across, upward, depth = (np.abs(axis) @ half for axis in (right, up, back))
        distance = depth + 1.08 * max(across / tan_x, upward / tan_y)
        cameras.append(look_at(centre + distance * back, centre, (0.0, 1.0, 0.0), K, width, height))
    return cameras


def sequence_sheet(
    vertices: np.ndarray,
    faces: np.ndarray,
    labels: list[str],
    views: tuple[str, ...] = ("front", "side"),
    vertex_colors: np.ndarray | None = None,
    size: tuple[int, int] = (240, 320),
) -> np.ndarray:
    """A contact sheet: one column per mesh of a sequence, one row per view, same framing.

    Args:
        vertices: (F, V, 3) meshes sharing ``faces`` (T, 3); labels: F column captions.
        vertex_colors: optional (V, 3) uint8 colours.
        size: (width, height) of each panel.
    Returns:
        (H, W, 3) uint8 image.
    """
    cameras = framing_cameras(vertices.reshape(-1, 3), views, *size)
    panels, captions = [], []
    for camera, view in zip(cameras, views, strict=True):
        for verts, label in zip(vertices, labels, strict=True):
            panels.append(render_mesh(verts, faces, camera, vertex_colors=vertex_colors))
            captions.append(f"{label} ({view})")
    return contact_sheet(panels, cols=len(vertices), labels=captions)
