"""Surface normals by principal component analysis of local neighbourhoods.

The normal at a point is the direction of least variance of its neighbours: the eigenvector of the
smallest eigenvalue of their 3 × 3 covariance (PINA's observed normals n_d^obs). Two ways to pick
the neighbours:

- :func:`grid_normals` — an organised depth image: the k × k window of back-projected pixels
  around each pixel, gathered for all valid pixels at once as (M, k²) arrays (a masked box
  filter evaluated only where it is needed). A neighbour whose depth differs from the centre's by
  more than ``max_jump`` · z per pixel of offset is left out, so a normal never mixes two surfaces
  across a depth discontinuity (an arm in front of the chest, the body in front of the wall).
- :func:`point_normals` — an unorganised point set: the k nearest neighbours (a k-d tree).

Every normal is oriented towards the camera (or a given viewpoint): n · (p − viewpoint) < 0.
Covariances are summed from coordinates relative to the centre point (exact for points metres
from the origin) and solved in closed form (:func:`smallest_eigenvectors`).

Shapes: N points, H × W pixels, k window side / neighbour count.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

DEFAULT_WINDOW = 7
"""Side of the square window of :func:`grid_normals` in pixels (odd)."""
DEFAULT_MAX_JUMP = 0.01
"""Largest depth difference between a pixel and a neighbour, per pixel of offset and per metre of
depth, for the neighbour to count: 1 cm per pixel at 1 m, 2 cm at 2 m. A pixel of the Azure
Kinect's NFOV mode spans about z / 505 sideways, so surfaces inclined up to about 79° from facing
the camera keep their neighbours; steeper steps count as discontinuities."""
DEFAULT_MIN_NEIGHBOURS = 6
"""Fewest valid neighbours (the centre included) for a normal to be computed."""
DEFAULT_NEIGHBOURS = 16
"""Neighbour count of :func:`point_normals`."""
_CHUNK = 16384
"""Points per batch (bounds the (chunk, k², 3) and (chunk, k, 3) neighbour arrays to a few MB)."""
_UPPER = (np.array([0, 0, 0, 1, 1, 2]), np.array([0, 1, 2, 1, 2, 2]))
"""Row and column indices of the upper-triangle entries a00, a01, a02, a11, a12, a22."""


def smallest_eigenvectors(upper: np.ndarray) -> np.ndarray:
    """Unit eigenvectors of the smallest eigenvalues of symmetric 3 × 3 matrices, in closed form.

    The eigenvalues come from the trigonometric solution of the characteristic cubic; the
    eigenvector of the smallest one is the longest cross product of two rows of A − λ I (the
    rows span the plane orthogonal to it). Exact for distinct smallest eigenvalues, which a
    surface patch has; an isotropic matrix gives an arbitrary unit vector.

    Args:
        upper: (N, 6) entries a00, a01, a02, a11, a12, a22 of the matrices.
    Returns:
        (N, 3) float64 unit vectors (sign arbitrary).
    """
    a00, a01, a02, a11, a12, a22 = np.asarray(upper, dtype=np.float64).T
    q = (a00 + a11 + a22) / 3.0
    b00, b11, b22 = a00 - q, a11 - q, a22 - q
    p = np.sqrt((b00**2 + b11**2 + b22**2 + 2.0 * (a01**2 + a02**2 + a12**2)) / 6.0)
    det = b00 * (b11 * b22 - a12**2) - a01 * (a01 * b22 - a12 * a02) + a02 * (a01 * a12 - b11 * a02)
    with np.errstate(divide="ignore", invalid="ignore"):
        half_det = np.clip(np.where(p > 0, det / (2.0 * p**3), 0.0), -1.0, 1.0)
    smallest = q + 2.0 * p * np.cos(np.arccos(half_det) / 3.0 + 2.0 * np.pi / 3.0)
    rows = np.stack(
        [
            np.stack([a00 - smallest, a01, a02], -1),
            np.stack([a01, a11 - smallest, a12], -1),
            np.stack([a02, a12, a22 - smallest], -1),
        ]
    )  # (3, N, 3)
    crosses = np.stack([np.cross(rows[0], rows[1]), np.cross(rows[0], rows[2]), np.cross(rows[1], rows[2])])
    lengths = np.linalg.norm(crosses, axis=-1)  # (3, N)
    best = lengths.argmax(0)
    vectors = np.take_along_axis(crosses, best[None, :, None], 0)[0]
    length = np.take_along_axis(lengths, best[None], 0)[0]
    fallback = np.array([0.0, 0.0, 1.0])
    return np.where(length[:, None] > 0, vectors / np.where(length > 0, length, 1.0)[:, None], fallback)


def orient_towards(
    normals: np.ndarray, points: np.ndarray, viewpoint: np.ndarray | None = None
) -> np.ndarray:
    """Flip normals so that they face a viewpoint: n · (p − viewpoint) ≤ 0.

    Args:
        normals: (N, 3); points: (N, 3); viewpoint: (3,), default the origin (the camera).
    Returns:
        (N, 3) normals in the dtype of ``normals``.
    """
    view = points if viewpoint is None else points - np.asarray(viewpoint, dtype=points.dtype)
    away = np.einsum("nk,nk->n", normals, view) > 0
    return np.where(away[:, None], -normals, normals)


def window_offsets(window: int, row_stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat index offsets of a k × k window in an image with ``row_stride`` columns, and each
    offset's ring (Chebyshev distance from the centre, 1 for the centre itself).

    Returns:
        offsets (k²,) int64, rings (k²,) float32.
    """
    radius = window // 2
    dv, du = np.mgrid[-radius : radius + 1, -radius : radius + 1].reshape(2, -1)
    rings = np.maximum(np.maximum(np.abs(du), np.abs(dv)), 1).astype(np.float32)
    return dv * row_stride + du, rings


def _window_covariances(
    planes: np.ndarray, centres: np.ndarray, offsets: np.ndarray, rings: np.ndarray, max_jump: float
) -> tuple[np.ndarray, np.ndarray]:
    """Covariances of the kept window neighbours of some pixels.

    Args:
        planes: (3, P) float32 x, y, z of a NaN-padded image, each flattened row-major.
        centres: (M,) flat indices of the centre pixels in it.
        offsets, rings: (k²,) from :func:`window_offsets`.
        max_jump: see :data:`DEFAULT_MAX_JUMP`.
    Returns:
        covariances (M, 6) upper-triangle entries (a00, a01, a02, a11, a12, a22), float64;
        counts (M,) neighbours kept (the centre included).
    """
    around = centres[:, None] + offsets  # (M, k²)
    x, y, z = (plane[around] - plane[centres, None] for plane in planes)  # (M, k²) each, centred
    with np.errstate(invalid="ignore"):
        keep = np.abs(z) <= max_jump * planes[2, centres, None] * rings
    x, y, z = (np.where(keep, c, np.float32(0.0)) for c in (x, y, z))
    count = keep.sum(1)
    mean = [c.sum(1, dtype=np.float64) / count for c in (x, y, z)]
    pairs = ((x, x, 0, 0), (x, y, 0, 1), (x, z, 0, 2), (y, y, 1, 1), (y, z, 1, 2), (z, z, 2, 2))
    entries = [
        np.einsum("mk,mk->m", a, b, dtype=np.float64) / count - mean[i] * mean[j] for a, b, i, j in pairs
    ]
    return np.stack(entries, -1), count


def check_window(window: int) -> None:
    """ValueError unless ``window`` is a valid :func:`grid_normals` window: odd and at least 3."""
    if window < 3 or window % 2 == 0:
        raise ValueError(f"the normals' window must be an odd number of pixels ≥ 3, not {window}")


def grid_normals(
    points: np.ndarray,
    window: int = DEFAULT_WINDOW,
    max_jump: float = DEFAULT_MAX_JUMP,
    min_neighbours: int = DEFAULT_MIN_NEIGHBOURS,
) -> np.ndarray:
    """PCA normals of an organised point image (a back-projected depth image).

    Only pixels with finite points take part, so setting the points outside a mask to NaN first
    restricts every neighbourhood to the mask (the person, say). The work is done on the bounding
    box of the valid pixels, gathering neighbours for them only, :data:`_CHUNK` pixels at a time.

    Args:
        points: (H, W, 3) camera-frame points in metres, NaN where invalid
            (:func:`capture.calibration.backproject`).
        window: odd side k of the square pixel window.
        max_jump: depth-discontinuity rejection, see :data:`DEFAULT_MAX_JUMP`.
        min_neighbours: fewest kept neighbours (centre included) for a normal.
    Returns:
        (H, W, 3) float32 unit normals facing the camera (n · p < 0); NaN where the point is
        invalid or has fewer than ``min_neighbours`` neighbours.
    """
    check_window(window)
    normals = np.full(points.shape, np.nan, np.float32)
    valid = np.isfinite(points).all(-1)
    rows, cols = np.flatnonzero(valid.any(1)), np.flatnonzero(valid.any(0))
    if not len(rows):
        return normals
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    normals[box] = _crop_normals(points[box], valid[box], window, max_jump, min_neighbours)
    return normals


def _crop_normals(
    points: np.ndarray, valid: np.ndarray, window: int, max_jump: float, min_neighbours: int
) -> np.ndarray:
    """:func:`grid_normals` of (h, w, 3) points with (h, w) ``valid`` pixels: (h, w, 3) float32."""
    radius = window // 2
    height, width = valid.shape
    pad = ((radius, radius), (radius, radius))
    padded = np.pad(np.asarray(points, np.float32), (*pad, (0, 0)), constant_values=np.nan)
    flat = padded.reshape(-1, 3)
    planes = np.ascontiguousarray(flat.T)
    centres = np.flatnonzero(np.pad(valid, pad))
    offsets, rings = window_offsets(window, width + 2 * radius)
    normals = np.full_like(flat, np.nan)
    for start in range(0, len(centres), _CHUNK):
        batch = centres[start : start + _CHUNK]
        covariance, count = _window_covariances(planes, batch, offsets, rings, max_jump)
        enough = count >= min_neighbours
        vectors = smallest_eigenvectors(covariance[enough])
        normals[batch[enough]] = orient_towards(vectors, flat[batch[enough]].astype(np.float64))
    return normals.reshape(padded.shape)[radius : radius + height, radius : radius + width]


def point_normals(
    points: np.ndarray, neighbours: int = DEFAULT_NEIGHBOURS, viewpoint: np.ndarray | None = None
) -> np.ndarray:
    """PCA normals of an unorganised point set from its k nearest neighbours.

    Args:
        points: (N, 3) points, N ≥ 3 (with N < k every point's neighbourhood is the whole set).
        neighbours: k, the neighbourhood size (the point itself included).
        viewpoint: (3,) where the normals should face, default the origin (the camera).
    Returns:
        (N, 3) float32 unit normals with n · (p − viewpoint) ≤ 0.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    k = min(neighbours, len(points))
    if k < 3:
        raise ValueError(f"point_normals needs at least 3 points, got {len(points)}")
    tree = cKDTree(points)
    normals = np.empty_like(points)
    for start in range(0, len(points), _CHUNK):
        chunk = points[start : start + _CHUNK]
        _, index = tree.query(chunk, k=k)
        around = points[index] - points[index].mean(1, keepdims=True)  # (n, k, 3)
        covariance = np.einsum("nki,nkj->nij", around, around) / k
        normals[start : start + _CHUNK] = smallest_eigenvectors(covariance[:, _UPPER[0], _UPPER[1]])
    return orient_towards(normals, points, viewpoint).astype(np.float32)
