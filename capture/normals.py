"""Surface normals of depth images and point sets.

Two estimators for an organised depth image (:func:`grid_normals`), both over the k × k window of
back-projected pixels around each pixel, gathered for all valid pixels at once as (M, k²) arrays
(a masked filter evaluated only where it is needed):

- ``"pca"`` (the default) — principal component analysis: the eigenvector of the smallest
  eigenvalue of the neighbours' 3 × 3 covariance (PINA's observed normals n_d^obs).
- ``"rays"`` — a weighted least-squares plane fitted to the inverse depth. A plane n · p = d seen
  along the ray r = (x/z, y/z, 1) of a pixel has 1/z = (n/d) · r: inverse depth is an affine
  function of the ray, and its coefficients w = n/d give the normal. A time-of-flight camera errs
  along its rays, which moves z but leaves r exact, so the fit has error in its dependent variable
  only and is unbiased, while that noise adds variance along the viewing direction to a PCA
  covariance and tilts its normals away from it. Neighbours are weighted by a Gaussian of their
  pixel distance (σ = k/4 pixels). On the synthetic Azure Kinect capture (σ ≈ 4.5 mm at 2 m, a
  pixel 4 mm wide) these normals err by 9.7° (7 × 7) and 9.4° (9 × 9) on average against the true
  surface, PCA's by 11.3° and 10.5° (``python -m benchmarks.normal_accuracy``); they give PINA
  better reconstructions of the captured frames but not better avatars in unseen poses
  (``docs/pina_experiments.md``).

A neighbour whose depth differs from the centre's by more than ``max_jump`` · z per pixel of
offset is left out, so a normal never mixes two surfaces across a depth discontinuity (an arm in
front of the chest, the body in front of the wall). :func:`point_normals` estimates PCA normals of
an unorganised point set from its k nearest neighbours (a k-d tree).

Every normal is oriented towards the camera (or a given viewpoint): n · (p − viewpoint) < 0.
Sums are taken over coordinates relative to the centre point (exact for points metres from the
origin) and solved in closed form (:func:`smallest_eigenvectors`, a 2 × 2 solve for ``"rays"``).

Shapes: N points, H × W pixels, k window side / neighbour count.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from scipy.spatial import cKDTree

DEFAULT_WINDOW = 7
"""Side of the square window of :func:`grid_normals` in pixels (odd)."""
NORMAL_METHODS = ("pca", "rays")
"""The estimators of :func:`grid_normals`; the first is the default."""
_DEGENERATE = 1e-3
"""A ``"rays"`` fit needs det(S) > this · (tr S / 2)² for the weighted 2 × 2 covariance S of its
neighbours' rays (1 for neighbours spread evenly around the centre, 0 for a line of them)."""
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


def _window(
    planes: np.ndarray, centres: np.ndarray, offsets: np.ndarray, rings: np.ndarray, max_jump: float
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """The window neighbours of some pixels, relative to each centre, and which of them count.

    Args:
        planes: (3, P) float32 x, y, z of a NaN-padded image, each flattened row-major.
        centres: (M,) flat indices of the centre pixels in it.
        offsets, rings: (k²,) from :func:`window_offsets`.
        max_jump: see :data:`DEFAULT_MAX_JUMP`.
    Returns:
        (x, y, z) (M, k²) float32 neighbour coordinates minus the centre's (NaN where invalid);
        keep (M, k²) bool, the valid neighbours on the centre's side of any depth discontinuity.
    """
    around = centres[:, None] + offsets  # (M, k²)
    x, y, z = (plane[around] - plane[centres, None] for plane in planes)
    with np.errstate(invalid="ignore"):
        keep = np.abs(z) <= max_jump * planes[2, centres, None] * rings
    return (x, y, z), keep


def _pca_normals(
    planes: np.ndarray, centres: np.ndarray, offsets: np.ndarray, rings: np.ndarray, max_jump: float
) -> tuple[np.ndarray, np.ndarray]:
    """``"pca"`` normals of some pixels (arguments as :func:`_window`): (M, 3) float64 unit
    vectors (sign arbitrary) and (M,) neighbours kept (the centre included)."""
    coordinates, keep = _window(planes, centres, offsets, rings, max_jump)
    x, y, z = (np.where(keep, c, np.float32(0.0)) for c in coordinates)
    count = keep.sum(1)
    mean = [c.sum(1, dtype=np.float64) / count for c in (x, y, z)]
    pairs = ((x, x, 0, 0), (x, y, 0, 1), (x, z, 0, 2), (y, y, 1, 1), (y, z, 1, 2), (z, z, 2, 2))
    entries = [
        np.einsum("mk,mk->m", a, b, dtype=np.float64) / count - mean[i] * mean[j] for a, b, i, j in pairs
    ]
    return smallest_eigenvectors(np.stack(entries, -1)), count


def _window_gaussian(window: int) -> np.ndarray:
    """(k²,) weights of a k × k window, in :func:`window_offsets`' order: a Gaussian of the pixel
    distance from the centre with σ = k/4 pixels (``"rays"`` normals)."""
    radius = window // 2
    rows, columns = np.mgrid[-radius : radius + 1, -radius : radius + 1].reshape(2, -1)
    return np.exp(-(rows**2 + columns**2) / (2.0 * (window / 4.0) ** 2))


def _ray_normals(
    planes: np.ndarray,
    centres: np.ndarray,
    offsets: np.ndarray,
    rings: np.ndarray,
    max_jump: float,
    gaussian: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``"rays"`` normals of some pixels (arguments and returns as :func:`_pca_normals`, with
    ``gaussian`` from :func:`_window_gaussian`; NaN vectors where the neighbours' rays are
    degenerate, :data:`_DEGENERATE`).

    Fits 1/z_i − 1/z_c = a + g · (r_i − r_c) by weighted least squares over the kept neighbours i
    of centre c (r the first two ray components x/z, y/z), so that w = (g, 1/z_c + a − g · r_c)
    and n = w / |w|.
    """
    (dx, dy, dz), keep = _window(planes, centres, offsets, rings, max_jump)
    weights = np.where(keep, gaussian, 0.0)  # (M, k²) float64
    weights /= weights.sum(1, keepdims=True)
    x, y, z = (planes[i, centres, None].astype(np.float64) for i in range(3))  # (M, 1) the centres
    # (x + dx)/(z + dz) − x/z = (z dx − x dz) · scale, and 1/(z + dz) − 1/z = −dz · scale
    with np.errstate(invalid="ignore"):
        scale = np.where(keep, 1.0 / (z * (z + dz)), 0.0)  # (M, k²)
    du, dv, dw = (z * dx - x * dz) * scale, (z * dy - y * dz) * scale, -dz * scale
    du, dv, dw = (np.nan_to_num(c, copy=False) for c in (du, dv, dw))
    weighted_u, weighted_v = weights * du, weights * dv
    mean_u, mean_v = weighted_u.sum(1), weighted_v.sum(1)
    mean_w = np.einsum("mk,mk->m", weights, dw)
    suu = np.einsum("mk,mk->m", weighted_u, du) - mean_u**2
    suv = np.einsum("mk,mk->m", weighted_u, dv) - mean_u * mean_v
    svv = np.einsum("mk,mk->m", weighted_v, dv) - mean_v**2
    suw = np.einsum("mk,mk->m", weighted_u, dw) - mean_u * mean_w
    svw = np.einsum("mk,mk->m", weighted_v, dw) - mean_v * mean_w
    determinant = suu * svv - suv**2
    with np.errstate(invalid="ignore", divide="ignore"):
        determinant = np.where(determinant > _DEGENERATE * ((suu + svv) / 2.0) ** 2, determinant, np.nan)
        gu = (svv * suw - suv * svw) / determinant
        gv = (suu * svw - suv * suw) / determinant
    x, y, z = x[:, 0], y[:, 0], z[:, 0]
    w = np.stack([gu, gv, (1.0 + z * (mean_w - gu * mean_u - gv * mean_v) - gu * x - gv * y) / z], -1)
    return w / np.linalg.norm(w, axis=-1, keepdims=True), keep.sum(1)


def check_window(window: int) -> None:
    """ValueError unless ``window`` is a valid :func:`grid_normals` window: odd and at least 3."""
    if window < 3 or window % 2 == 0:
        raise ValueError(f"the normals' window must be an odd number of pixels ≥ 3, not {window}")


def check_method(method: str) -> None:
    """ValueError unless ``method`` is one of :data:`NORMAL_METHODS`."""
    if method not in NORMAL_METHODS:
        raise ValueError(f"the normals' method must be one of {', '.join(NORMAL_METHODS)}, not {method!r}")


def grid_normals(
    points: np.ndarray,
    window: int = DEFAULT_WINDOW,
    max_jump: float = DEFAULT_MAX_JUMP,
    min_neighbours: int = DEFAULT_MIN_NEIGHBOURS,
    method: str = NORMAL_METHODS[0],
) -> np.ndarray:
    """Normals of an organised point image (a back-projected depth image).

    Only pixels with finite points take part, so setting the points outside a mask to NaN first
    restricts every neighbourhood to the mask (the person, say). The work is done on the bounding
    box of the valid pixels, gathering neighbours for them only, :data:`_CHUNK` pixels at a time.

    Args:
        points: (H, W, 3) camera-frame points in metres, NaN where invalid
            (:func:`capture.calibration.backproject`).
        window: odd side k of the square pixel window.
        max_jump: depth-discontinuity rejection, see :data:`DEFAULT_MAX_JUMP`.
        min_neighbours: fewest kept neighbours (centre included) for a normal.
        method: ``"rays"`` or ``"pca"`` (module docstring).
    Returns:
        (H, W, 3) float32 unit normals facing the camera (n · p < 0); NaN where the point is
        invalid or has fewer than ``min_neighbours`` neighbours (for ``"rays"`` also where they
        lie along a line).
    """
    check_window(window)
    check_method(method)
    normals = np.full(points.shape, np.nan, np.float32)
    valid = np.isfinite(points).all(-1)
    rows, cols = np.flatnonzero(valid.any(1)), np.flatnonzero(valid.any(0))
    if not len(rows):
        return normals
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    normals[box] = _crop_normals(points[box], valid[box], window, max_jump, min_neighbours, method)
    return normals


def _crop_normals(
    points: np.ndarray, valid: np.ndarray, window: int, max_jump: float, min_neighbours: int, method: str
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
    estimate = partial(_ray_normals, gaussian=_window_gaussian(window)) if method == "rays" else _pca_normals
    normals = np.full_like(flat, np.nan)
    for start in range(0, len(centres), _CHUNK):
        batch = centres[start : start + _CHUNK]
        vectors, count = estimate(planes, batch, offsets, rings, max_jump)
        found = (count >= min_neighbours) & np.isfinite(vectors).all(-1)
        normals[batch[found]] = orient_towards(vectors[found], flat[batch[found]].astype(np.float64))
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
