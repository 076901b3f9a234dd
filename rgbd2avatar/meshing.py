"""Triangle meshes from signed-distance functions: MISE and the dense-grid reference.

MISE (Multiresolution IsoSurface Extraction, Occupancy Networks; PINA Sec 3.3 meshes its SDF with
it) evaluates the function densely only on a coarse grid, then refines only where the surface can
be, halving the cell size until the requested resolution, and runs marching cubes once on the
final grid. This is our own version for signed distances (negative inside, in metres).

Grid: ``resolution`` R cells per axis between ``bounds_min`` and ``bounds_max`` (the voxel may be
anisotropic), (R+1)³ vertices indexed ``ijk`` in 0..R; vertex ``ijk`` sits at
``bounds_min + ijk · voxel``. A level of stride s (in fine-vertex units) uses the vertices whose
indices are all multiples of s; its cells are s voxels wide.

Refinement rule, from stride s to stride s/2 (:func:`_active_cells`): a cell of stride s is
*active* when

- its corner values straddle the level (some corner inside, some outside), or
- the smallest |sdf − level| of its corners is below ``margin`` × the cell's diagonal.

The second test is the safety margin that keeps thin parts: an arm thinner than a coarse cell can
pass between the corners without any sign change, but a true SDF then reads less than one diagonal
at every corner of that cell (the surface is inside it), so the cell is refined. Conversely, with
an exact SDF (1-Lipschitz) a cell whose corners all read more than a diagonal holds no surface,
nor will any of its sub-cells. A learnt SDF is only roughly a distance (an eikonal loss pulls its
gradient towards unit length); ``margin`` > 1 widens the band for functions that overestimate
distances.

Values away from the surface (:func:`_upsample_in_place`): each level is first filled by
trilinear interpolation of the coarser level (at the midpoints of a grid that is exactly the
average of 2, 4 or 8 coarse values); then every vertex of an active cell's sub-cells that has not
been evaluated yet is evaluated, overwriting its interpolated value. Interpolated values therefore
survive only inside inactive cells, whose corners all lie on one side of the level, and a convex
combination of same-sign values keeps that sign: no clipping is needed, and marching cubes puts no
triangle there. Interpolated vertices are not marked as evaluated, so a later level that finds
them next to an active cell evaluates them.

With an exact SDF, MISE gives the same grid values near the surface as evaluating every vertex,
hence the same mesh as :func:`dense_grid_mesh`, for a fraction of the evaluations (they grow with
the surface area, R², instead of R³).

Memory: the final (R+1)³ float32 value volume plus an (R+1)³ bool "evaluated" mask, and marching
cubes on the volume: 257³ → 68 MB + 17 MB at R = 256; 513³ → 540 MB + 135 MB at R = 512
(marching cubes then needs about as much again).

Shapes: N points, V vertices, T triangles.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import torch
from skimage.measure import marching_cubes

SdfFn = Callable[[torch.Tensor], torch.Tensor]
"""(N, 3) float32 points in metres → (N,) signed distances, negative inside."""

Progress = Callable[[int, int], None]
"""``report(done, total)``: levels for MISE, batches for the dense grid."""

_CORNERS = [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)]


@dataclass
class MeshResult:
    """An extracted mesh and what it cost.

    Attributes:
        vertices: (V, 3) float32 positions in metres.
        faces: (T, 3) int64 vertex indices, counter-clockwise seen from outside (normals point out).
        evaluations: number of points the SDF was evaluated at.
        seconds: wall-clock time of the whole extraction.
        resolution: grid cells per axis of the final grid.
    """

    vertices: np.ndarray
    faces: np.ndarray
    evaluations: int
    seconds: float
    resolution: int


@dataclass
class _Grid:
    """The final (R+1)³ vertex grid and how its vertices are evaluated."""

    bounds_min: np.ndarray  # (3,) float64
    voxel: np.ndarray  # (3,) float64 cell size per axis
    resolution: int
    sdf_fn: SdfFn
    batch_points: int
    device: torch.device

    @classmethod
    def build(
        cls,
        sdf_fn: SdfFn,
        bounds_min: np.ndarray,
        bounds_max: np.ndarray,
        resolution: int,
        batch_points: int,
        device: torch.device | str,
    ) -> _Grid:
        """Check the arguments and make the grid."""
        low = np.asarray(bounds_min, dtype=np.float64).reshape(3)
        high = np.asarray(bounds_max, dtype=np.float64).reshape(3)
        if not np.all(high > low):
            raise ValueError(
                f"bounds_max {high.tolist()} must exceed bounds_min {low.tolist()} on every axis"
            )
        if resolution < 1 or batch_points < 1:
            raise ValueError(f"resolution ({resolution}) and batch_points ({batch_points}) must be positive")
        return cls(low, (high - low) / resolution, resolution, sdf_fn, batch_points, torch.device(device))

    @property
    def shape(self) -> tuple[int, int, int]:
        """(R+1, R+1, R+1)."""
        return (self.resolution + 1,) * 3

    def diagonal(self, stride: int) -> float:
        """Length of the diagonal of a cell ``stride`` voxels wide, in metres."""
        return float(stride * np.linalg.norm(self.voxel))

    def evaluate(self, ijk: np.ndarray) -> np.ndarray:
        """(N,) float32 SDF values at (N, 3) vertex indices, N ≤ batch_points.

        The function runs under ``torch.no_grad()``; one that needs gradients (a Broyden
        correspondence search) may enable them itself.
        """
        points = self.bounds_min + ijk * self.voxel
        query = torch.as_tensor(points, dtype=torch.float32).to(self.device)
        with torch.no_grad():
            values = self.sdf_fn(query)
        values = values.detach().to("cpu", torch.float32).reshape(-1).numpy()
        if values.shape != (len(ijk),):
            raise ValueError(f"sdf_fn returned {values.size} values for {len(ijk)} points")
        return values


def _check_levels(resolution: int, initial_resolution: int) -> int:
    """Number of halvings k with resolution = initial_resolution · 2^k; ValueError if there is none."""
    if initial_resolution >= 1 and resolution >= initial_resolution:
        ratio = resolution // initial_resolution
        if ratio * initial_resolution == resolution and ratio & (ratio - 1) == 0:
            return ratio.bit_length() - 1
    raise ValueError(
        f"resolution ({resolution}) must be initial_resolution ({initial_resolution}) times a power "
        "of two, e.g. 256 = 32 · 2³"
    )


def _cell_min_max(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest corner value of every cell of an (n+1)³ volume: two (n, n, n) arrays."""
    n = volume.shape[0] - 1
    corners = [volume[a : a + n, b : b + n, c : c + n] for a, b, c in _CORNERS]
    return functools.reduce(np.minimum, corners), functools.reduce(np.maximum, corners)


def _active_cells(volume: np.ndarray, level: float, band: float) -> np.ndarray:
    """(n, n, n) bool: cells of an (n+1)³ volume that straddle ``level`` or come within ``band`` of it.

    A cell that does not straddle has all its corners on one side, so its smallest
    |value − level| is at its smallest or its largest corner.
    """
    low, high = _cell_min_max(volume)
    straddles = (low < level) & (high > level)
    nearest = np.minimum(np.abs(low - level), np.abs(high - level))
    return straddles | (nearest < band)


def _sub_cell_vertices(active: np.ndarray) -> np.ndarray:
    """(2n+1)³ bool: vertices of the 8 half-size sub-cells of the active cells of an (n, n, n) mask."""
    n = active.shape[0]
    marked = np.zeros((2 * n + 1,) * 3, dtype=bool)
    for a in range(3):
        for b in range(3):
            for c in range(3):
                marked[a : a + 2 * n : 2, b : b + 2 * n : 2, c : c + 2 * n : 2] |= active
    return marked


def _upsample_in_place(fine: np.ndarray) -> None:
    """Fill the odd-index vertices of a (2n+1)³ view by trilinear interpolation of its even ones.

    Separable: midpoints along x on the even (y, z) lines, then along y, then along z, each the
    mean of its two neighbours, written into ``fine`` without temporaries.
    """
    for axis in range(3):
        done, even = (slice(None),) * axis, (slice(None, None, 2),) * (2 - axis)
        middle = fine[done + (slice(1, None, 2),) + even]
        before = fine[done + (slice(0, -1, 2),) + even]
        after = fine[done + (slice(2, None, 2),) + even]
        np.add(before, after, out=middle)
        middle *= 0.5


def _batches(ijk: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """Consecutive (≤ size, 3) slices of an (N, 3) index array."""
    for start in range(0, len(ijk), size):
        yield ijk[start : start + size]


def _dense_batches(grid: _Grid) -> Iterator[np.ndarray]:
    """All (R+1)³ vertex indices in batches of ≤ batch_points, made one batch at a time."""
    total = int(np.prod(grid.shape))
    for start in range(0, total, grid.batch_points):
        flat = np.arange(start, min(start + grid.batch_points, total))
        yield np.stack(np.unravel_index(flat, grid.shape), axis=1)


def _evaluate_marked(
    grid: _Grid, values: np.ndarray, evaluated: np.ndarray, stride: int, marked: np.ndarray
) -> int:
    """Evaluate the marked, not yet evaluated vertices of the stride-``stride`` level into ``values``.

    Args:
        values, evaluated: (R+1)³ float32 volume and bool mask, updated in place.
        marked: (R/stride + 1)³ bool, vertices of that level to know exactly.
    Returns:
        The number of new evaluations.
    """
    strided = (slice(None, None, stride),) * 3
    ijk = np.argwhere(marked & ~evaluated[strided]) * stride
    for batch in _batches(ijk, grid.batch_points):
        values[tuple(batch.T)] = grid.evaluate(batch)
    evaluated[tuple(ijk.T)] = True
    return len(ijk)


def _mise_volume(
    grid: _Grid, initial_resolution: int, level: float, margin: float, progress: Progress | None
) -> tuple[np.ndarray, int]:
    """The (R+1)³ value volume by coarse-to-fine refinement (module docstring), and its evaluations."""
    halvings = _check_levels(grid.resolution, initial_resolution)
    values = np.zeros(grid.shape, dtype=np.float32)
    evaluated = np.zeros(grid.shape, dtype=bool)
    stride = grid.resolution // initial_resolution
    coarse = np.ones((initial_resolution + 1,) * 3, dtype=bool)
    evaluations = _evaluate_marked(grid, values, evaluated, stride, coarse)
    for done in range(halvings):
        if progress is not None:
            progress(done, halvings)
        active = _active_cells(values[::stride, ::stride, ::stride], level, margin * grid.diagonal(stride))
        stride //= 2
        _upsample_in_place(values[::stride, ::stride, ::stride])
        evaluations += _evaluate_marked(grid, values, evaluated, stride, _sub_cell_vertices(active))
    if progress is not None:
        progress(halvings, halvings)
    return values, evaluations


def _dense_volume(grid: _Grid, progress: Progress | None) -> np.ndarray:
    """The (R+1)³ value volume with every vertex evaluated."""
    values = np.empty(grid.shape, dtype=np.float32)
    total = -(-values.size // grid.batch_points)
    for done, ijk in enumerate(_dense_batches(grid), start=1):
        values[tuple(ijk.T)] = grid.evaluate(ijk)
        if progress is not None:
            progress(done, total)
    return values


def _largest_component(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the connected part (faces sharing vertices) with the most faces; drop unused vertices."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    adjacency = scipy.sparse.coo_matrix(
        (np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(len(vertices),) * 2
    )
    _, labels = scipy.sparse.csgraph.connected_components(adjacency, directed=False)
    face_labels = labels[faces[:, 0]]
    kept_faces = faces[face_labels == np.bincount(face_labels).argmax()]
    used = np.unique(kept_faces)
    remap = np.full(len(vertices), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[kept_faces]


def _volume_to_mesh(
    grid: _Grid, values: np.ndarray, level: float, largest_component: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes on an (R+1)³ SDF volume: (V, 3) float32 vertices in metres, (T, 3) int64 faces.

    Faces are ordered so their normals point towards increasing values (outwards for an SDF that
    is negative inside). Raises ValueError when no value is on each side of ``level``.
    """
    if not (values.min() < level < values.max()):
        raise ValueError(
            f"the SDF has no surface at level {level} inside the bounds (values range from "
            f"{values.min():.4g} to {values.max():.4g}); check the bounds and the SDF's sign"
        )
    verts, faces, _, _ = marching_cubes(
        values, level=level, spacing=tuple(grid.voxel), gradient_direction="descent"
    )
    verts = (verts + grid.bounds_min).astype(np.float32)
    faces = faces.astype(np.int64)
    if largest_component:
        verts, faces = _largest_component(verts, faces)
    return verts, faces


def extract_mesh(
    sdf_fn: SdfFn,
    bounds_min: np.ndarray,
    bounds_max: np.ndarray,
    resolution: int = 256,
    initial_resolution: int = 32,
    level: float = 0.0,
    batch_points: int = 65536,
    largest_component: bool = True,
    device: torch.device | str = "cpu",
    margin: float = 1.0,
    progress: Progress | None = None,
) -> MeshResult:
    """Mesh the ``level`` set of a signed-distance function by MISE (see the module docstring).

    Args:
        sdf_fn: (N, 3) float32 points on ``device`` → (N,) signed distances (negative inside),
            called with N ≤ ``batch_points``.
        bounds_min, bounds_max: (3,) corners of the box meshed, in metres; the surface must lie
            strictly inside for a closed mesh.
        resolution: cells per axis of the final grid, ``initial_resolution`` · 2^k.
        initial_resolution: cells per axis of the coarse grid evaluated everywhere.
        level: the iso-value meshed.
        batch_points: most points per ``sdf_fn`` call.
        largest_component: keep only the connected part with the most triangles.
        device: where the query points are sent.
        margin: refinement band in cell diagonals (1 is safe for an exact SDF).
        progress: optional ``report(done, total)`` over the refinement levels.
    Returns:
        :class:`MeshResult`.
    Raises:
        ValueError: resolution not initial_resolution · 2^k, or no surface inside the bounds.
    """
    start = time.perf_counter()
    grid = _Grid.build(sdf_fn, bounds_min, bounds_max, resolution, batch_points, device)
    values, evaluations = _mise_volume(grid, initial_resolution, level, margin, progress)
    vertices, faces = _volume_to_mesh(grid, values, level, largest_component)
    return MeshResult(vertices, faces, evaluations, time.perf_counter() - start, resolution)


def dense_grid_mesh(
    sdf_fn: SdfFn,
    bounds_min: np.ndarray,
    bounds_max: np.ndarray,
    resolution: int = 256,
    level: float = 0.0,
    batch_points: int = 65536,
    largest_component: bool = True,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> MeshResult:
    """Mesh the ``level`` set by evaluating every one of the (R+1)³ grid vertices: MISE's reference.

    Arguments and result as :func:`extract_mesh`; ``progress`` reports batches.
    """
    start = time.perf_counter()
    grid = _Grid.build(sdf_fn, bounds_min, bounds_max, resolution, batch_points, device)
    values = _dense_volume(grid, progress)
    vertices, faces = _volume_to_mesh(grid, values, level, largest_component)
    return MeshResult(vertices, faces, values.size, time.perf_counter() - start, resolution)
