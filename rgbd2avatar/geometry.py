"""Signed distances and closest points from query points to triangle meshes, on the CPU.

Built on open3d's ``o3d.t.geometry.RaycastingScene`` (an Embree BVH): the unsigned distance
and the closest point come from its exact closest-point query; the sign comes from our own
ray test, because open3d's ``compute_signed_distance`` decides inside/outside by the *parity*
of ray crossings, which is wrong wherever a posed body intersects itself (a hand pushed into the
hip: a point inside both is crossed twice and called outside).

Sign rule (winding number along rays): from each query point, cast :data:`SIGN_RAYS` rays in
fixed, generic directions and list every crossing; a crossing where the ray leaves through a
triangle's front side (its normal, right-handed from the vertex order, points along the ray)
counts +1, one where it enters counts −1. The sum is the winding number of the mesh around the
point along that ray: 0 outside, 1 inside, 2 inside two overlapping parts, … A point is inside
when the winding number is non-zero on the majority of the rays, so a ray that grazes an edge
or slips through a small hole is outvoted. This needs closed meshes (a body mesh such as SMPL
is) with consistent triangle orientation (either way round); self-intersections are fine, but
coincident overlapping triangles (two parts sharing a plane) make crossings ambiguous.

Distances are exact to float32 precision (open3d works in float32). Nothing here carries
gradients: the results are pseudo ground truth (PINA's off-surface SDF of the body mesh).

Shapes: V vertices, T triangles, N query points, F frames, R sign rays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _unit_rows(rows: list[list[float]]) -> np.ndarray:
    array = np.array(rows)
    return (array / np.linalg.norm(array, axis=1, keepdims=True)).astype(np.float32)


SIGN_RAYS = _unit_rows([[0.5377, 1.8339, -2.2588], [0.8622, 0.3188, -1.3077], [-0.4336, 0.3426, 3.5784]])
"""(R, 3) unit directions of the sign rays: generic, so they do not run along a mesh's axes."""


@dataclass
class ClosestPoints:
    """Closest surface points of N query points (numpy or torch, as the query was).

    Attributes:
        points: (N, 3) closest points on the mesh.
        triangle_ids: (N,) index of the triangle the closest point lies on.
        barycentrics: (N, 3) weights of the triangle's three vertices at the closest point.
        distances: (N,) unsigned distances to the mesh.
    """

    points: np.ndarray | torch.Tensor
    triangle_ids: np.ndarray | torch.Tensor
    barycentrics: np.ndarray | torch.Tensor
    distances: np.ndarray | torch.Tensor


def _open3d():
    """open3d, imported on first use: it takes a second to load, and code that only imports this
    module (e.g. a GPU machine running the optimisation on prepared data) need not have it."""
    import open3d

    return open3d


class MeshQuery:
    """Distance queries against one triangle mesh; build it once, query it many times.

    Args:
        vertices: (V, 3) vertex positions.
        faces: (T, 3) vertex indices of the triangles.
    """

    def __init__(self, vertices: np.ndarray | torch.Tensor, faces: np.ndarray | torch.Tensor) -> None:
        self.vertices = to_numpy(vertices, np.float32)
        self.faces = to_numpy(faces, np.uint32)
        if len(self.faces) == 0:
            raise ValueError("a distance query needs a mesh with at least one triangle")
        o3d = _open3d()
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3d.core.Tensor(self.vertices), o3d.core.Tensor(self.faces))
        self.face_normals = face_normals(self.vertices, self.faces)

    def closest_points(self, points: np.ndarray) -> ClosestPoints:
        """Closest surface points of (N, 3) points, as numpy arrays."""
        points = to_numpy(points, np.float32)
        found = self.scene.compute_closest_points(_open3d().core.Tensor(points))
        closest = found["points"].numpy()
        uv = found["primitive_uvs"].numpy()  # weights of the 2nd and 3rd vertex
        return ClosestPoints(
            points=closest,
            triangle_ids=found["primitive_ids"].numpy().astype(np.int64),
            barycentrics=np.concatenate([1.0 - uv.sum(1, keepdims=True), uv], 1),
            distances=np.linalg.norm(points - closest, axis=1),
        )

    def winding_numbers(self, points: np.ndarray) -> np.ndarray:
        """Winding number of the mesh around (N, 3) points along each sign ray: (N, R) ints."""
        points = to_numpy(points, np.float32)
        n, r = len(points), len(SIGN_RAYS)
        if n == 0:  # open3d's list_intersections crashes on zero rays
            return np.zeros((0, r), dtype=np.int64)
        origins = np.repeat(points, r, axis=0)  # (N·R, 3), ray i = point i // R, direction i % R
        directions = np.tile(SIGN_RAYS, (n, 1))
        rays = np.concatenate([origins, directions], 1)
        hits = self.scene.list_intersections(_open3d().core.Tensor(rays))
        ray_ids = hits["ray_ids"].numpy().astype(np.int64)
        normals = self.face_normals[hits["primitive_ids"].numpy().astype(np.int64)]
        crossing = np.sign(np.einsum("hk,hk->h", directions[ray_ids], normals))  # +1 leaving, −1 entering
        return np.bincount(ray_ids, weights=crossing, minlength=n * r).reshape(n, r).round().astype(np.int64)

    def inside(self, points: np.ndarray) -> np.ndarray:
        """(N,) bool: the majority of the sign rays see a non-zero winding number."""
        votes = (self.winding_numbers(points) != 0).sum(1)
        return votes * 2 > len(SIGN_RAYS)

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """(N,) float32 signed distances of (N, 3) points, negative inside."""
        distance = self.closest_points(points).distances
        return np.where(self.inside(points), -distance, distance)


def signed_distance(
    vertices: np.ndarray | torch.Tensor, faces: np.ndarray | torch.Tensor, points: ArrayT
) -> ArrayT:
    """Signed distance from points to one closed mesh, negative inside (see the module's sign rule).

    Args:
        vertices: (V, 3); faces: (T, 3); points: (N, 3).
    Returns:
        (N,) distances, numpy or torch like ``points`` (same device, float dtype kept).
    """
    query = MeshQuery(vertices, faces)
    return like(query.signed_distance(to_numpy(points, np.float32)), points)


def signed_distance_batch(
    vertices: np.ndarray | torch.Tensor, faces: np.ndarray | torch.Tensor, points: ArrayT
) -> ArrayT:
    """Signed distances for F posed frames of one mesh topology (one scene per frame).

    Args:
        vertices: (F, V, 3) posed vertices; faces: (T, 3) shared; points: (F, N, 3).
    Returns:
        (F, N) distances, negative inside, numpy or torch like ``points``.
    """
    verts = to_numpy(vertices, np.float32)
    queries = to_numpy(points, np.float32)
    tris = to_numpy(faces, np.uint32)
    result = np.stack([MeshQuery(v, tris).signed_distance(p) for v, p in zip(verts, queries, strict=True)])
    return like(result, points)


def closest_points(
    vertices: np.ndarray | torch.Tensor, faces: np.ndarray | torch.Tensor, points: ArrayT
) -> ClosestPoints:
    """Closest points on a mesh, with the triangles they lie on and their barycentrics.

    Args:
        vertices: (V, 3); faces: (T, 3); points: (N, 3).
    Returns:
        :class:`ClosestPoints` whose fields are numpy or torch like ``points``.
    """
    found = MeshQuery(vertices, faces).closest_points(to_numpy(points, np.float32))
    return ClosestPoints(
        points=like(found.points, points),
        triangle_ids=like(found.triangle_ids, points),
        barycentrics=like(found.barycentrics, points),
        distances=like(found.distances, points),
    )


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(T, 3) unit triangle normals, right-handed from the vertex order; 0 for degenerate triangles.

    Args:
        vertices: (V, 3); faces: (T, 3) integer indices.
    """
    corners = vertices[faces.astype(np.int64)]  # (T, 3, 3)
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return normals / np.where(length > 0, length, 1.0)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) float32 unit area-weighted vertex normals (right-handed faces point outwards);
    (0, 1, 0) for vertices without area.

    Args:
        vertices: (V, 3); faces: (T, 3) integer indices.
    """
    corners = np.asarray(vertices, dtype=np.float64)[faces]  # (T, 3, 3)
    face_areas = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])  # 2·area
    normals = np.zeros((len(vertices), 3))
    for corner in range(3):
        np.add.at(normals, faces[:, corner], face_areas)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    unit = normals / np.where(length > 0, length, 1.0)
    return np.where(length > 0, unit, (0.0, 1.0, 0.0)).astype(np.float32)


def batched_vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(F, V, 3) unit area-weighted vertex normals of F meshes (F, V, 3) sharing faces (T, 3) long;
    zero for vertices without area. The torch, batched counterpart of :func:`vertex_normals`."""
    corners = vertices[:, faces]  # (F, T, 3, 3)
    face_areas = torch.cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0], -1)
    spread = face_areas[:, :, None].expand(-1, -1, 3, -1).reshape(len(vertices), -1, 3)
    summed = torch.zeros_like(vertices).index_add_(1, faces.reshape(-1), spread)
    return torch.nn.functional.normalize(summed, dim=-1)


def to_numpy(array: np.ndarray | torch.Tensor, dtype: type | None = None) -> np.ndarray:
    """A contiguous numpy copy (or view) of a numpy array or torch tensor, in ``dtype`` (None: kept)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return np.ascontiguousarray(array, dtype=dtype)


def like(result: np.ndarray, reference: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """``result`` as the type of ``reference``: a torch tensor on its device (floats in its dtype)."""
    if not isinstance(reference, torch.Tensor):
        return result
    tensor = torch.from_numpy(result)
    dtype = reference.dtype if tensor.is_floating_point() and reference.is_floating_point() else tensor.dtype
    return tensor.to(device=reference.device, dtype=dtype)
