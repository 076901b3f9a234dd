"""Person segmentation in the depth image of a fixed camera.

The rule (one person turning and moving in place in front of a fixed Azure Kinect, in a room with
a floor, walls and furniture), per frame:

1. **Valid points**: back-projected pixels with a depth in ``[min_depth, max_depth]``.
2. **Floor**: the best-supported plane found by RANSAC (:func:`fit_floor`) among planes whose
   normal lies within ``floor_max_tilt_deg`` of the camera's up direction (−y) and which pass
   below the camera (the camera must be roughly upright). It is estimated once from the first
   sampled frames and reused; every ``floor_recheck`` frames its support is re-measured and the
   plane is re-estimated when it dropped below half (the camera was moved).
   Points less than ``floor_clearance`` above it (or below it) are removed. Without a floor in
   view, nothing is removed and "up" is the camera's −y.
3. **Clusters**: connected components of the remaining pixels on the 4-neighbour image grid,
   where two neighbours are connected when their depths differ by at most ``jump`` · z — so the
   person, the wall behind them and a box beside them fall apart at their depth discontinuities
   once the floor that joins them is gone (:func:`depth_clusters`).
4. **Static background**: a per-pixel background depth (:class:`BackgroundModel`), either the
   median of designated empty-room frames, or learnt from frames sampled across the whole
   recording: a pixel is static when it is measured in at least half of the samples and at least
   ``static_agreement`` of its measurements lie within ``static_tolerance`` of their median. A
   cluster is background when more than ``max_static_fraction`` of its pixels match the
   background depth. The wall and the box never move; a person turning in place changes the
   depth of most of their pixels.
5. **Objects**: clusters that are not background and touch — pixels of both within
   ``merge_reach`` pixels of each other with depths at most ``merge_gap`` apart — form one
   object (:func:`group_clusters`): a forearm hanging in front of the hip cuts a side view at the
   waist, dark hair breaks into speckle, yet each body stays one object, while the wall seen
   between the legs (a metre behind them) stays apart. Fragments under ``min_cluster`` pixels
   join an object they touch but never link two.
6. **The person** is the object with the most pixels among those at least ``min_height`` and at
   most ``max_height`` tall and at most ``max_width`` across (bounding box in the floor's frame)
   (:func:`choose_person`): the wall is too wide, a box or a chair too low. Objects that touch
   the person within ``limb_gap`` of depth and lie at the depths it spans join it while its box
   stays that size (:func:`with_limbs`): an arm held towards the camera can stand further in
   front of the trunk than ``merge_gap`` and cut it in two in a side view, or cut off the head.

No object qualifying means no person in the frame. The automatic background assumes the person
moves during the recording (turning is enough); for a recording where they stand still, give
empty-room frames or external masks (:func:`external_mask`; :mod:`capture.preprocess` either
intersects them with this segmentation or uses them instead).

Shapes: N points, H × W depth pixels, K sampled frames, C clusters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from capture.calibration import project, transform_points
from capture.errors import CaptureError
from capture.files import read_image
from capture.sequence import Calibration

CAMERA_UP = np.array([0.0, -1.0, 0.0])
"""The camera's up direction in its own frame (OpenCV: y points down)."""
_TRIPLET_NEIGHBOURS = 16
"""RANSAC triplets are drawn from a point's this many nearest neighbours."""
_REFITS = 3
"""Least-squares refinements of the RANSAC floor (each re-selects the inliers)."""


@dataclass(frozen=True)
class SegmentOptions:
    """Parameters of the segmentation rule (see the module docstring); lengths in metres.

    Attributes:
        min_depth, max_depth: working range of the depth camera (NFOV unbinned: 0.5–3.86 m).
        floor_threshold: RANSAC inlier distance to the floor plane.
        floor_clearance: points lower than this above the floor are floor.
        floor_max_tilt_deg: largest angle between the floor normal and the camera's up direction.
        floor_min_fraction: fewest floor inliers, as a fraction of the valid points.
        floor_recheck: re-measure the floor every this many frames.
        ransac_hypotheses, ransac_points: plane hypotheses and points scored per RANSAC run.
        jump: neighbour pixels are connected when their depths differ by at most ``jump`` · z.
        min_cluster: smaller clusters are fragments: they join an object but never link two.
        static_tolerance, static_tolerance_z2: background depth tolerance a + b z² (about 3σ of
            the sensor's noise).
        static_agreement: fraction of a pixel's valid samples that must agree for it to be static.
        max_static_fraction: clusters with more pixels matching the background are background.
        min_height, max_height: the person's object is at least / at most this tall.
        max_width: … and at most this across (horizontal diagonal of its bounding box).
        merge_reach, merge_gap: clusters within ``merge_reach`` pixels and ``merge_gap`` metres of
            depth of each other belong to the same object.
        limb_gap: objects within ``merge_reach`` pixels and ``limb_gap`` metres of depth of the
            person join it while it stays person-sized (:func:`with_limbs`): about an arm's length.
        background_samples: frames sampled across the recording for the automatic background.
        min_background_samples: fewer sampled frames than this give no automatic background.
    """

    min_depth: float = 0.25
    max_depth: float = 5.0
    floor_threshold: float = 0.03
    floor_clearance: float = 0.02
    floor_max_tilt_deg: float = 40.0
    floor_min_fraction: float = 0.03
    floor_recheck: int = 50
    ransac_hypotheses: int = 256
    ransac_points: int = 4096
    jump: float = 0.03
    min_cluster: int = 50
    static_tolerance: float = 0.02
    static_tolerance_z2: float = 0.002
    static_agreement: float = 0.8
    max_static_fraction: float = 0.75
    min_height: float = 1.0
    max_width: float = 2.5
    max_height: float = 2.5
    merge_reach: int = 2
    merge_gap: float = 0.3
    limb_gap: float = 0.8
    background_samples: int = 32
    min_background_samples: int = 3


# --------------------------------------------------------------------------------------------------
# Floor


@dataclass(frozen=True)
class Plane:
    """The plane n · x + d = 0 with unit normal n pointing up (towards the camera's side).

    Attributes:
        normal: (3,) float64 unit normal; offset: d, the camera's height above the plane.
        support: fraction of the valid points of the fitting frame(s) within the inlier distance.
    """

    normal: np.ndarray
    offset: float
    support: float = 0.0

    def height(self, points: np.ndarray) -> np.ndarray:
        """(...,) signed heights above the plane of (..., 3) points."""
        return points @ self.normal.astype(points.dtype) + np.asarray(self.offset, points.dtype)

    def to_json(self) -> dict:
        """{"normal": [nx, ny, nz], "offset": d, "support": s} (depth-camera frame, metres)."""
        return {"normal": self.normal.tolist(), "offset": float(self.offset), "support": float(self.support)}


def _plane_hypotheses(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Planes through point triplets, normals turned to face up.

    Args:
        samples: (M, 3, 3) triplets of points.
    Returns:
        normals (M, 3) unit (0 for degenerate triplets), offsets (M,).
    """
    normals = np.cross(samples[:, 1] - samples[:, 0], samples[:, 2] - samples[:, 0])
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = normals / np.where(length > 0, length, 1.0)
    normals *= np.where(normals @ CAMERA_UP < 0, -1.0, 1.0)[:, None]
    return normals, -np.einsum("mk,mk->m", normals, samples[:, 0])


def _refit(points: np.ndarray, plane: Plane, threshold: float) -> Plane:
    """Least-squares plane through the inliers of ``plane`` among (N, 3) points (normal kept up)."""
    inliers = points[np.abs(plane.height(points)) <= threshold]
    centre = inliers.mean(0)
    _, _, vt = np.linalg.svd(inliers - centre, full_matrices=False)
    normal = vt[2] * (1.0 if vt[2] @ CAMERA_UP >= 0 else -1.0)
    refined = Plane(normal, float(-normal @ centre))
    support = float(np.mean(np.abs(refined.height(points)) <= threshold))
    return Plane(normal, refined.offset, support)


def _local_triplets(points: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 3, 3) point triplets, each a random point and two of its :data:`_TRIPLET_NEIGHBOURS`
    nearest neighbours: a triplet lies on one surface about as often as its first point does, so a
    floor that is a tenth of the view still yields many floor hypotheses."""
    anchors = rng.integers(0, len(points), count)
    k = min(_TRIPLET_NEIGHBOURS, len(points) - 1)
    _, near = cKDTree(points).query(points[anchors], k=k + 1)
    picks = np.sort(rng.random((count, k)).argsort(1)[:, :2] + 1, axis=1)  # two distinct neighbours
    return points[np.concatenate([anchors[:, None], np.take_along_axis(near, picks, 1)], 1)]


def fit_floor(points: np.ndarray, options: SegmentOptions, rng: np.random.Generator) -> Plane | None:
    """The floor plane among (N, 3) camera-frame points by RANSAC, or None if there is none.

    Hypotheses are planes through local triplets (:func:`_local_triplets`) of a random subset of
    ``ransac_points`` points; those facing up within ``floor_max_tilt_deg`` and passing at least
    0.2 m below the camera are scored all at once on the subset ((M, S) residuals). The best
    supported is refined by least squares on its inliers (:data:`_REFITS` times, re-selecting
    them each time) and accepted when it holds ``floor_min_fraction`` of the points.
    """
    points = np.asarray(points, dtype=np.float64)
    if len(points) < 3:
        return None
    scored = points[rng.choice(len(points), min(len(points), options.ransac_points), replace=False)]
    normals, offsets = _plane_hypotheses(_local_triplets(scored, options.ransac_hypotheses, rng))
    upright = normals @ CAMERA_UP >= math.cos(math.radians(options.floor_max_tilt_deg))
    plausible = upright & (offsets > 0.2)
    residuals = np.abs(normals @ scored.T + offsets[:, None])  # (M, S)
    counts = np.where(plausible, (residuals <= options.floor_threshold).sum(1), 0)
    if counts.max() < options.floor_min_fraction * len(scored):
        return None
    best = int(np.argmax(counts))
    plane = Plane(normals[best], float(offsets[best]))
    for _ in range(_REFITS):
        plane = _refit(points, plane, options.floor_threshold)
    return plane if plane.support >= options.floor_min_fraction else None


def floor_frame(floor: Plane | None) -> np.ndarray:
    """(3, 3) float64 rows: lateral, up and forward unit axes of the floor's frame in camera
    coordinates (lateral: the camera's x laid on the floor; forward: away from the camera along
    the floor). Without a floor: x, −y, z of the camera."""
    up = CAMERA_UP if floor is None else floor.normal
    lateral = np.array([1.0, 0.0, 0.0]) - up[0] * up
    lateral /= np.linalg.norm(lateral)
    return np.stack([lateral, up, np.cross(up, lateral)])


# --------------------------------------------------------------------------------------------------
# Static background


def _median_depth(depths_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel median of the measured depths of (K, H, W) uint16 images (millimetres, 0 = none).

    Returns:
        median (H, W) float32 metres (65.535 where never measured), count (H, W) measurements.
    """
    valid = depths_mm > 0
    count = valid.sum(0)
    ordered = np.where(valid, depths_mm, np.iinfo(np.uint16).max)  # unmeasured sort last
    ordered.sort(axis=0)
    middle = np.take_along_axis(ordered, np.maximum(count - 1, 0)[None] // 2, 0)[0]
    return middle / np.float32(1000.0), count


@dataclass(frozen=True)
class BackgroundModel:
    """The depth of the static scene per pixel.

    Attributes:
        depth: (H, W) float32 background depth in metres, NaN where the pixel is not static.
        tolerance, tolerance_z2: a depth z matches the background within a + b z² metres.
        frames: how many frames it was learnt from.
    """

    depth: np.ndarray
    tolerance: float
    tolerance_z2: float
    frames: int

    @classmethod
    def from_depths(cls, depths_mm: np.ndarray, options: SegmentOptions) -> BackgroundModel:
        """Learn the model from sampled frames (of the whole recording, or of the empty room).

        A pixel is static when it is measured in at least half of the frames and at least
        ``static_agreement`` of its measurements lie within the tolerance of their median.

        Args:
            depths_mm: (K, H, W) uint16 depth images in millimetres (0 = no measurement).
        """
        median, count = _median_depth(depths_mm)
        model = cls(median, options.static_tolerance, options.static_tolerance_z2, len(depths_mm))
        agree = np.zeros(median.shape, np.int32)
        for depth in depths_mm:  # frame by frame: (H, W) temporaries only
            agree += model.matches(depth / np.float32(1000.0)) & (depth > 0)
        static = (2 * count >= len(depths_mm)) & (agree >= options.static_agreement * np.maximum(count, 1))
        return replace(model, depth=np.where(static, median, np.nan).astype(np.float32))

    def matches(self, depth_m: np.ndarray) -> np.ndarray:
        """(..., H, W) bool: pixels of depth images (metres) at the background depth."""
        tolerance = self.tolerance + self.tolerance_z2 * np.square(depth_m)
        with np.errstate(invalid="ignore"):
            return np.abs(depth_m - self.depth) <= tolerance

    @property
    def static_fraction(self) -> float:
        """Fraction of the pixels that are static."""
        return float(np.isfinite(self.depth).mean())


# --------------------------------------------------------------------------------------------------
# Clusters


def depth_clusters(depth_m: np.ndarray, keep: np.ndarray, jump: float) -> tuple[np.ndarray, int]:
    """Connected components of kept pixels, cut where neighbouring depths jump.

    Args:
        depth_m: (H, W) depth in metres; keep: (H, W) bool pixels to cluster.
        jump: 4-neighbours are connected when |z₁ − z₂| ≤ jump · min(z₁, z₂).
    Returns:
        labels (H, W) int32, −1 for pixels not kept, 0 … C−1 otherwise; C.
    """
    height, width = depth_m.shape
    node = np.full(depth_m.shape, -1, np.int64)
    node[keep] = np.arange(np.count_nonzero(keep))
    sources, targets = [], []
    for near, far in ((np.s_[:, :-1], np.s_[:, 1:]), (np.s_[:-1, :], np.s_[1:, :])):
        z1, z2 = depth_m[near], depth_m[far]
        linked = keep[near] & keep[far] & (np.abs(z1 - z2) <= jump * np.minimum(z1, z2))
        sources.append(node[near][linked])
        targets.append(node[far][linked])
    count = int(np.count_nonzero(keep))
    rows, cols = np.concatenate(sources), np.concatenate(targets)
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(count, count))
    clusters, members = connected_components(graph, directed=False)
    labels = np.full((height, width), -1, np.int32)
    labels[keep] = members
    return labels, int(clusters)


def touching_clusters(
    labels: np.ndarray, depth_m: np.ndarray, reach: int, gap: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of clusters that come close in the image and in depth, with how close in depth.

    Two clusters touch when pixels of both lie within ``reach`` pixels of each other (Chebyshev
    distance; a reach over 1 bridges the ring of dropped pixels around silhouettes) with depths
    differing by at most ``gap``: a forearm in front of the hip touches the hip and the thigh,
    the wall seen between the legs does not touch the legs.

    Args:
        labels: (H, W) cluster labels, −1 for pixels to ignore; depth_m: (H, W) metres;
        reach: pixels; gap: metres.
    Returns:
        (E, 2) int64 distinct label pairs (a < b) and (E,) the smallest depth difference (m) of
        each pair's close pixels.
    """
    height, width = labels.shape
    keys, gaps = [], []
    for dv in range(reach + 1):
        for du in range(-reach, reach + 1):
            if dv == 0 and du <= 0:
                continue
            columns, shifted = (
                np.s_[max(0, -du) : width - max(0, du)],
                np.s_[max(0, du) : width - max(0, -du)],
            )
            first, second = labels[: height - dv, columns], labels[dv:, shifted]
            difference = np.abs(depth_m[: height - dv, columns] - depth_m[dv:, shifted])
            close = (first >= 0) & (second >= 0) & (first != second) & (difference <= gap)
            low, high = np.minimum(first[close], second[close]), np.maximum(first[close], second[close])
            keys.append(low.astype(np.int64) * (labels.max() + 1) + high)
            gaps.append(difference[close])
    keys, gaps = np.concatenate(keys), np.concatenate(gaps)
    order = np.lexsort((gaps, keys))  # by pair, the smallest gap first
    keys, gaps = keys[order], gaps[order]
    first = np.diff(keys, prepend=-1) != 0
    return np.stack(np.divmod(keys[first], labels.max() + 1), -1), gaps[first]


def _box_per_label(coords: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label bounding boxes.

    Args:
        coords: (N, 3) points; ids: (N,) their labels.
    Returns:
        labels (L,) present, sorted; low (L, 3) and high (L, 3) per-axis minima and maxima.
    """
    order = np.argsort(ids, kind="stable")
    ids, coords = ids[order], coords[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    return ids[starts], np.minimum.reduceat(coords, starts), np.maximum.reduceat(coords, starts)


@dataclass
class Groups:
    """Objects made of touching clusters.

    Attributes:
        of_cluster: (C,) group of each cluster, −1 for clusters left out.
        pixels: (G,) pixel counts; low, high: (G, 3) bounding boxes in the floor frame
            (lateral, up, forward).
        near: (E, 2) pairs of groups whose large clusters touch within ``limb_gap`` of depth.
    """

    of_cluster: np.ndarray
    pixels: np.ndarray
    low: np.ndarray
    high: np.ndarray
    near: np.ndarray

    @property
    def size(self) -> np.ndarray:
        """(G, 3) extents along lateral, up and forward."""
        return self.high - self.low


def group_clusters(
    labels: np.ndarray, included: np.ndarray, points: np.ndarray, axes: np.ndarray, options: SegmentOptions
) -> Groups:
    """Join touching clusters (:func:`touching_clusters`) into objects and measure them.

    Touching clusters of at least ``min_cluster`` pixels form objects; a smaller fragment (speckle,
    flying pixels, bits of dark hair) joins an object it touches but never links two, so a flying
    pixel halfway between the body and the wall cannot bridge them.

    Args:
        labels: (H, W) cluster labels, −1 outside clusters; included: (C,) bool clusters to group.
        points: (H, W, 3) camera-frame points; axes: (3, 3) the floor frame (:func:`floor_frame`).
    """
    count = len(included)
    member = (labels >= 0) & included[np.maximum(labels, 0)]
    rows, cols = np.flatnonzero(member.any(1)), np.flatnonzero(member.any(0))
    if not len(rows):
        empty = np.zeros((0, 3))
        return Groups(np.full(count, -1), np.zeros(0, np.int64), empty, empty, np.zeros((0, 2), np.int64))
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    cropped = np.where(member[box], labels[box], -1)
    pixels = np.bincount(labels[member], minlength=count)
    pairs, gaps = touching_clusters(
        cropped, points[box][..., 2], options.merge_reach, max(options.merge_gap, options.limb_gap)
    )
    a, b = pairs.T
    large = pixels >= options.min_cluster
    both = large[a] & large[b]
    linked = both & (gaps <= options.merge_gap)
    attached = (large[a] != large[b]) & (gaps <= options.merge_gap)
    graph = coo_matrix((np.ones(linked.sum(), np.int8), (a[linked], b[linked])), shape=(count, count))
    _, component = connected_components(graph, directed=False)
    fragment, host = np.where(large[a], b, a)[attached], np.where(large[a], a, b)[attached]
    component[fragment] = component[host]
    _, of_member = np.unique(component[included], return_inverse=True)
    of_cluster = np.full(count, -1)
    of_cluster[included] = of_member
    local = points[member].astype(np.float64) @ axes.T
    groups, low, high = _box_per_label(local, of_cluster[labels[member]])
    near = np.unique(np.sort(of_cluster[pairs[both & ~linked]], axis=1), axis=0)
    near = near[(near[:, 0] != near[:, 1]) & (near[:, 0] >= 0)]
    return Groups(of_cluster, np.bincount(of_cluster[labels[member]], minlength=len(groups)), low, high, near)


def person_sized(low: np.ndarray, high: np.ndarray, options: SegmentOptions) -> np.ndarray:
    """(...,) bool: boxes (..., 3) (floor frame) at most ``max_height`` tall and ``max_width``
    across."""
    size = high - low
    return (size[..., 1] <= options.max_height) & (np.hypot(size[..., 0], size[..., 2]) <= options.max_width)


def choose_person(groups: Groups, options: SegmentOptions) -> int | None:
    """The group that is the person: the one with the most pixels among those at least
    ``min_height`` tall and person-sized (:func:`person_sized`); None if none."""
    fits = (groups.size[:, 1] >= options.min_height) & person_sized(groups.low, groups.high, options)
    return int(np.argmax(np.where(fits, groups.pixels, -1))) if fits.any() else None


def with_limbs(groups: Groups, person: int, options: SegmentOptions) -> np.ndarray:
    """(G,) bool: the person's group and the groups it reaches through :attr:`Groups.near` that
    lie at the depths it spans, each taken (largest first) while the person's box stays
    person-sized.

    A limb held towards the camera stands further in front of the body than ``merge_gap`` where
    it crosses it: in a side view an arm raised in front of the chest cuts the trunk in two, and
    a hand before the face cuts off the head. Those pieces touch the person within ``limb_gap``,
    overlap the depths of the rest of the body and keep its box person-sized; a wall or a table
    would not (a patch of wall seen between a raised arm and the head lies behind the body).
    """
    chosen = np.zeros(len(groups.pixels), bool)
    chosen[person] = True
    low, high = groups.low[person], groups.high[person]
    while True:
        reached = chosen[groups.near[:, 0]] != chosen[groups.near[:, 1]]
        candidates = np.unique(groups.near[reached][~chosen[groups.near[reached]]])
        new_low, new_high = np.minimum(low, groups.low[candidates]), np.maximum(high, groups.high[candidates])
        overlap = (groups.low[candidates, 2] <= high[2]) & (groups.high[candidates, 2] >= low[2])
        fits = candidates[overlap & person_sized(new_low, new_high, options)]
        if not len(fits):
            return chosen
        pick = fits[np.argmax(groups.pixels[fits])]
        chosen[pick] = True
        low, high = np.minimum(low, groups.low[pick]), np.maximum(high, groups.high[pick])


def static_fractions(labels: np.ndarray, count: int, matches: np.ndarray) -> np.ndarray:
    """(C,) fraction of each cluster's pixels that match the background (``matches`` (H, W) bool)."""
    member = labels >= 0
    pixels = np.bincount(labels[member], minlength=count)
    return np.bincount(labels[member], weights=matches[member], minlength=count) / np.maximum(pixels, 1)


# --------------------------------------------------------------------------------------------------
# External masks


def external_mask(path: Path, calibration: Calibration, points: np.ndarray) -> np.ndarray:
    """A person mask image from elsewhere (e.g. a 2D segmenter), in depth-image pixels.

    The PNG is either depth-image sized (H × W) or colour-image sized; grey, RGB or RGBA, a pixel
    is person when its first channel is ≥ 128. A colour-sized mask is looked up at each valid depth
    point's projection into the colour camera (nearest pixel).

    Args:
        path: the mask file; calibration: the recording's cameras.
        points: (H, W, 3) back-projected depth points, NaN where invalid.
    Returns:
        (H, W) bool.
    Raises:
        CaptureError: the file is missing, unreadable or of neither size.
    """
    image = read_image(path)
    mask = (image if image.ndim == 2 else image[..., 0]) >= 128
    depth_shape, color = calibration.depth.shape, calibration.color
    if mask.shape == depth_shape:
        return mask
    if color is None or mask.shape != color.shape:
        sizes = f"{depth_shape[1]}×{depth_shape[0]}" + (
            "" if color is None else f" or {color.width}×{color.height}"
        )
        raise CaptureError(
            f"{path} is {mask.shape[1]}×{mask.shape[0]} pixels, but masks must be {sizes}; "
            "write masks in the depth or colour image's size."
        )
    return _lookup_in_color(mask, calibration, points)


def _lookup_in_color(mask: np.ndarray, calibration: Calibration, points: np.ndarray) -> np.ndarray:
    """(H, W) bool: a colour-image mask (H', W') sampled at the depth points' colour pixels."""
    valid = np.isfinite(points[..., 2])
    pixels, _ = project(transform_points(calibration.depth_to_color, points[valid]), calibration.color)
    column, row = np.rint(np.nan_to_num(pixels, nan=-1.0)).astype(np.int64).T
    inside = (column >= 0) & (column < mask.shape[1]) & (row >= 0) & (row < mask.shape[0])
    found = np.zeros(len(column), bool)
    found[inside] = mask[row[inside], column[inside]]
    result = np.zeros(valid.shape, bool)
    result[valid] = found
    return result


# --------------------------------------------------------------------------------------------------
# The segmenter


@dataclass
class Segmentation:
    """One frame's result: mask (H, W) bool person pixels; floor: the plane used (or None)."""

    mask: np.ndarray
    floor: Plane | None


@dataclass
class Segmenter:
    """Segments frame after frame with a shared floor and background (see the module docstring).

    Attributes:
        options: the rule's parameters; background: the static scene, or None (no static test).
        floor: the current floor plane (None until found, or when there is none).
        seed: for RANSAC.
    """

    options: SegmentOptions = field(default_factory=SegmentOptions)
    background: BackgroundModel | None = None
    floor: Plane | None = None
    seed: int = 0
    _frames: int = field(default=0, init=False, repr=False)
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def valid_points(self, points: np.ndarray) -> np.ndarray:
        """(H, W) bool pixels with a depth in the working range."""
        depth = points[..., 2]
        with np.errstate(invalid="ignore"):
            return (depth >= self.options.min_depth) & (depth <= self.options.max_depth)

    def estimate_floor(self, points: np.ndarray) -> Plane | None:
        """Fit the floor to (N, 3) points (e.g. pooled from the first frames) and keep it."""
        self.floor = fit_floor(points, self.options, self._rng)
        return self.floor

    def _recheck_floor(self, points: np.ndarray, valid: np.ndarray) -> None:
        """Every ``floor_recheck`` frames: re-estimate the floor if its support halved.

        Args:
            points: (H, W, 3) the frame's points; valid: (H, W) bool those in the working range.
        """
        self._frames += 1
        if self._frames % self.options.floor_recheck:
            return
        points = points[valid].astype(np.float64)
        if self.floor is not None:
            support = np.mean(np.abs(self.floor.height(points)) <= self.options.floor_threshold)
            if support >= 0.5 * self.floor.support:
                return
        found = fit_floor(points, self.options, self._rng)
        self.floor = found if found is not None else self.floor

    def __call__(self, points: np.ndarray) -> Segmentation:
        """Segment one frame.

        Args:
            points: (H, W, 3) back-projected depth (metres, NaN where invalid).
        Returns:
            The person mask and the floor used.
        """
        options = self.options
        valid = self.valid_points(points)
        self._recheck_floor(points, valid)
        keep = valid.copy()
        if self.floor is not None:
            with np.errstate(invalid="ignore"):
                keep &= self.floor.height(points) > options.floor_clearance
        depth = points[..., 2]
        labels, count = depth_clusters(depth, keep, options.jump)
        included = np.ones(count, bool)
        if self.background is not None:
            included = (
                static_fractions(labels, count, self.background.matches(depth)) <= options.max_static_fraction
            )
        groups = group_clusters(labels, included, points, floor_frame(self.floor), options)
        person = choose_person(groups, options)
        chosen = np.zeros(count, bool)
        if person is not None:
            chosen = with_limbs(groups, person, options)[groups.of_cluster] & (groups.of_cluster >= 0)
        return Segmentation(keep & chosen[np.maximum(labels, 0)], self.floor)
