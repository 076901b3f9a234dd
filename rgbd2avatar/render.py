"""A small CPU renderer of triangle meshes by ray casting (open3d's RaycastingScene, Embree).

Camera model: a pinhole with intrinsics K (3×3) and extrinsics ``world_from_camera`` (4×4),
OpenCV axes (x right, y down, z forward) and OpenCV's pixel convention, used across the whole
project: pixel (u, v) — column u, row v — has its centre, where its ray passes, at the integer
image coordinates (u, v), so the image spans [−0.5, W − 0.5) × [−0.5, H − 0.5) and an ideal
centred camera has cx = (W − 1) / 2.

Rays are scaled so their camera-z component is 1: a ray's hit distance is the depth (z in the
camera frame), which is what a depth camera measures. Background pixels have depth 0 (as in an
Azure Kinect depth image), triangle id −1, barycentrics and normals 0, and ``hit`` False.

Several meshes in one scene (a person on a floor): concatenate them with :func:`merge_meshes`
(triangle ids then index the merged faces; concatenate per-vertex colours in the same order).

Shapes: V vertices, T triangles, H × W pixels, N points, C channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import open3d as o3d
import torch
from PIL import Image, ImageDraw, ImageFont

from rgbd2avatar.geometry import to_numpy

DEFAULT_ALBEDO = (0.8, 0.8, 0.8)
"""Surface colour (RGB in [0, 1]) of meshes rendered without vertex colours."""
DEFAULT_BACKGROUND = (255, 255, 255)
"""Background colour (uint8 RGB) of rendered images and contact sheets."""


@dataclass
class Camera:
    """A pinhole camera (see the module docstring for the conventions).

    Attributes:
        K: (3, 3) intrinsics; pixel centres at integer (u, v).
        world_from_camera: (4, 4) pose: camera-frame points to world points.
        width, height: image size in pixels.
    """

    K: np.ndarray
    world_from_camera: np.ndarray
    width: int
    height: int

    @property
    def center(self) -> np.ndarray:
        """(3,) the camera's optical centre in the world."""
        return np.asarray(self.world_from_camera, dtype=np.float64)[:3, 3]

    def rays(self) -> np.ndarray:
        """World rays through every pixel centre.

        Returns:
            (H, W, 6) float32 [origin, direction]; directions have camera-z component 1, so the
            distance along a ray is the depth.
        """
        u, v = np.meshgrid(np.arange(self.width), np.arange(self.height))
        pixels = np.stack([u, v, np.ones_like(u)], -1)  # (H, W, 3) homogeneous pixel centres
        pose = np.asarray(self.world_from_camera, dtype=np.float64)
        directions = pixels @ np.linalg.inv(np.asarray(self.K, dtype=np.float64)).T @ pose[:3, :3].T
        origins = np.broadcast_to(pose[:3, 3], directions.shape)
        return np.concatenate([origins, directions], -1).astype(np.float32)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points.

        Args:
            points: (N, 3) world points.
        Returns:
            pixels (N, 2) continuous (x, y) image coordinates (pixel (u, v) spans [u, u+1)) and
            depths (N,) camera-frame z.
        """
        pose = np.asarray(self.world_from_camera, dtype=np.float64)
        local = (np.asarray(points, dtype=np.float64) - pose[:3, 3]) @ pose[:3, :3]  # (N, 3) camera frame
        image = local @ np.asarray(self.K, dtype=np.float64).T
        return image[:, :2] / image[:, 2:], local[:, 2]


def pinhole_intrinsics(width: int, height: int, fov_y_deg: float) -> np.ndarray:
    """(3, 3) K with square pixels, the given vertical field of view and the optical axis at
    the image centre ((W − 1) / 2, (H − 1) / 2)."""
    focal = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
    return np.array([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]])


def look_at(
    eye: Sequence[float], target: Sequence[float], up: Sequence[float], K: np.ndarray, width: int, height: int
) -> Camera:
    """A camera at ``eye`` looking at ``target``, with world ``up`` pointing up in the image.

    Camera axes: z = unit(target − eye), x = unit(z × up) (right), y = z × x (down).
    """
    eye = np.asarray(eye, dtype=np.float64)
    forward = _unit(np.asarray(target, dtype=np.float64) - eye)
    side = np.cross(forward, np.asarray(up, dtype=np.float64))
    if np.linalg.norm(side) < 1e-9:
        raise ValueError("look_at: the view direction is parallel to the up vector")
    right = _unit(side)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, np.cross(forward, right), forward], 1)
    pose[:3, 3] = eye
    return Camera(K=np.asarray(K, dtype=np.float64), world_from_camera=pose, width=width, height=height)


@dataclass
class RayHits:
    """What each pixel's ray hits first.

    Attributes:
        depth: (H, W) float32 camera-frame z of the hit; 0 for background.
        triangle_ids: (H, W) int64 index of the hit triangle; −1 for background.
        barycentrics: (H, W, 3) float32 weights of the triangle's vertices at the hit; 0 for background.
        normals: (H, W, 3) float32 unit geometric normals in the world frame, on the triangle's
            front side (right-handed from its vertex order); 0 for background.
    """

    depth: np.ndarray
    triangle_ids: np.ndarray
    barycentrics: np.ndarray
    normals: np.ndarray

    @property
    def hit(self) -> np.ndarray:
        """(H, W) bool: the ray hit a triangle."""
        return self.triangle_ids >= 0


def raycast(vertices: np.ndarray | torch.Tensor, faces: np.ndarray | torch.Tensor, camera: Camera) -> RayHits:
    """Cast one ray per pixel at a mesh.

    Args:
        vertices: (V, 3) world positions; faces: (T, 3) vertex indices.
        camera: the camera.
    Returns:
        :class:`RayHits` of the camera's image size.
    """
    return raycast_rays(vertices, faces, camera.rays())


def raycast_rays(
    vertices: np.ndarray | torch.Tensor, faces: np.ndarray | torch.Tensor, rays: np.ndarray
) -> RayHits:
    """Cast arbitrary rays at a mesh, e.g. one per pixel of a camera with lens distortion.

    Args:
        vertices: (V, 3) world positions; faces: (T, 3) vertex indices.
        rays: (H, W, 6) world [origin, direction]; ``depth`` is the hit distance in units of the
            direction's length (scale directions to camera-z 1 to get depths). Rays with a NaN
            component hit nothing.
    Returns:
        :class:`RayHits` of shape (H, W).
    """
    verts, tris = to_numpy(vertices, np.float32), to_numpy(faces, np.uint32)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(verts), o3d.core.Tensor(tris))
    found = scene.cast_rays(o3d.core.Tensor(np.ascontiguousarray(rays, dtype=np.float32)))
    distance = found["t_hit"].numpy()
    hit = np.isfinite(distance)
    uv = found["primitive_uvs"].numpy()  # weights of the 2nd and 3rd vertex, 0 on misses
    barycentrics = np.concatenate([(1.0 - uv[..., 0] - uv[..., 1])[..., None] * hit[..., None], uv], -1)
    return RayHits(
        depth=np.where(hit, distance, np.float32(0.0)),
        triangle_ids=np.where(hit, found["primitive_ids"].numpy().astype(np.int64), -1),
        barycentrics=barycentrics.astype(np.float32, copy=False),
        normals=found["primitive_normals"].numpy(),  # unit, right-handed (as face_normals), 0 on misses
    )


def interpolate(
    hits: RayHits, faces: np.ndarray | torch.Tensor, values: np.ndarray | torch.Tensor
) -> np.ndarray:
    """Per-pixel barycentric interpolation of per-vertex values (colours, UVs, positions, …).

    Args:
        hits: from :func:`raycast`; faces: (T, 3); values: (V, C).
    Returns:
        (H, W, C) float32, 0 on background.
    """
    tris, vals = to_numpy(faces, np.int64), to_numpy(values, np.float32)
    hit = hits.hit
    corners = vals[tris[hits.triangle_ids[hit]]]  # (P, 3, C) for the P hit pixels
    result = np.zeros((*hit.shape, vals.shape[1]), dtype=np.float32)
    result[hit] = np.einsum("pk,pkc->pc", hits.barycentrics[hit], corners)
    return result


def shade(
    hits: RayHits,
    camera: Camera,
    colors: np.ndarray | None = None,
    light: Sequence[float] | None = None,
    ambient: float = 0.3,
    background: Sequence[int] = DEFAULT_BACKGROUND,
) -> np.ndarray:
    """Two-sided Lambert + ambient shading.

    Args:
        hits: from :func:`raycast`.
        camera: the camera the hits came from.
        colors: (H, W, 3) per-pixel albedo, floats in [0, 1] or uint8 (e.g. from
            :func:`interpolate` of vertex colours); ``None`` = :data:`DEFAULT_ALBEDO`.
        light: world direction *towards* the light; ``None`` = a headlight at the camera.
        ambient: share of the light that reaches every surface, in [0, 1].
        background: uint8 RGB of pixels that hit nothing.
    Returns:
        (H, W, 3) uint8 RGB image.
    """
    view = camera.rays()[..., 3:].astype(np.float64)
    view /= np.linalg.norm(view, axis=-1, keepdims=True)  # (H, W, 3) unit, camera → surface
    normals = hits.normals * np.where((hits.normals * view).sum(-1, keepdims=True) > 0, -1.0, 1.0)
    to_light = -view if light is None else _unit(np.asarray(light, dtype=np.float64))
    diffuse = np.clip((normals * to_light).sum(-1, keepdims=True), 0.0, 1.0)
    albedo = np.asarray(DEFAULT_ALBEDO) if colors is None else _unit_range(colors)
    shaded = albedo * (ambient + (1.0 - ambient) * diffuse)
    image = np.where(hits.hit[..., None], np.round(255.0 * np.clip(shaded, 0.0, 1.0)), np.asarray(background))
    return image.astype(np.uint8)


def render_mesh(
    vertices: np.ndarray | torch.Tensor,
    faces: np.ndarray | torch.Tensor,
    camera: Camera,
    vertex_colors: np.ndarray | torch.Tensor | None = None,
    light: Sequence[float] | None = None,
    background: Sequence[int] = DEFAULT_BACKGROUND,
) -> np.ndarray:
    """Render a shaded mesh.

    Args:
        vertices: (V, 3); faces: (T, 3); camera: the camera.
        vertex_colors: (V, 3) RGB, floats in [0, 1] or uint8; ``None`` = uniform grey.
        light, background: as in :func:`shade`.
    Returns:
        (H, W, 3) uint8 RGB image.
    """
    hits = raycast(vertices, faces, camera)
    colors = None if vertex_colors is None else interpolate(hits, faces, _unit_range(to_numpy(vertex_colors)))
    return shade(hits, camera, colors, light=light, background=background)


def merge_meshes(
    vertices: Sequence[np.ndarray | torch.Tensor], faces: Sequence[np.ndarray | torch.Tensor]
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate meshes into one, offsetting each mesh's vertex indices.

    Args:
        vertices: per mesh (V_i, 3); faces: per mesh (T_i, 3).
    Returns:
        vertices (ΣV_i, 3) float32 and faces (ΣT_i, 3) int64; mesh i's triangles come after
        those of meshes 0..i−1.
    """
    verts = [to_numpy(v, np.float32) for v in vertices]
    offsets = np.cumsum([0] + [len(v) for v in verts[:-1]])
    tris = [to_numpy(f, np.int64) + offset for f, offset in zip(faces, offsets, strict=True)]
    return np.concatenate(verts), np.concatenate(tris)


def plane(
    center: Sequence[float], half_u: Sequence[float], half_v: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """A rectangle (two triangles) spanning center ± half_u ± half_v, facing half_u × half_v.

    Returns:
        vertices (4, 3) float32 and faces (2, 3) int64. E.g. a 4 m floor at y = 0 seen from
        above: ``plane((0, 0, 0), (0, 0, 2), (2, 0, 0))``.
    """
    c, u, v = (np.asarray(x, dtype=np.float64) for x in (center, half_u, half_v))
    vertices = np.stack([c - u - v, c + u - v, c + u + v, c - u + v]).astype(np.float32)
    return vertices, np.array([[0, 1, 2], [0, 2, 3]], dtype=np.int64)


def contact_sheet(
    images: Sequence[np.ndarray],
    cols: int,
    labels: Sequence[str] | None = None,
    gap: int = 4,
    background: Sequence[int] = DEFAULT_BACKGROUND,
) -> np.ndarray:
    """Tile images into a grid, row by row, each in a cell the size of the largest image.

    Args:
        images: (H_i, W_i, 3) or (H_i, W_i) uint8 images.
        cols: images per row.
        labels: one caption per image, drawn at its cell's top-left in PIL's default font.
        gap: pixels between and around cells.
        background: uint8 RGB of the gaps and of padding.
    Returns:
        (rows·(H + gap) + gap, cols·(W + gap) + gap, 3) uint8 image.
    """
    rgb = [np.repeat(im[..., None], 3, -1) if im.ndim == 2 else im[..., :3] for im in map(np.asarray, images)]
    cell_h, cell_w = max(im.shape[0] for im in rgb), max(im.shape[1] for im in rgb)
    rows = math.ceil(len(rgb) / cols)
    sheet = np.empty((rows * (cell_h + gap) + gap, cols * (cell_w + gap) + gap, 3), dtype=np.uint8)
    sheet[:] = np.asarray(background, dtype=np.uint8)
    corners = [
        (gap + (i // cols) * (cell_h + gap), gap + (i % cols) * (cell_w + gap)) for i in range(len(rgb))
    ]
    for (top, left), image in zip(corners, rgb, strict=True):
        sheet[top : top + image.shape[0], left : left + image.shape[1]] = image
    return sheet if labels is None else draw_labels(sheet, corners, labels)


def draw_labels(image: np.ndarray, corners: Sequence[tuple[int, int]], labels: Sequence[str]) -> np.ndarray:
    """Draw each label at its (top, left) corner: dark text on a light box, PIL's default font."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for (top, left), label in zip(corners, labels, strict=True):
        box = draw.textbbox((left + 3, top + 2), label, font=font)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(255, 255, 255))
        draw.text((left + 3, top + 2), label, fill=(0, 0, 0), font=font)
    return np.asarray(canvas).copy()


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _unit_range(colors: np.ndarray) -> np.ndarray:
    """Colours as floats in [0, 1]: uint8 divided by 255, floats unchanged."""
    colors = np.asarray(colors)
    return colors / 255.0 if colors.dtype == np.uint8 else colors.astype(np.float64)
