"""DensePose correspondences: each person point that an IUV image labels → a point on the body mesh.

An IUV image (what DensePose predicts, and what the synthetic generator renders) gives every
colour pixel that sees the body a chart label I (1…24, 0 = background) and chart coordinates U, V
in [0, 1], stored as (H, W, 3) uint8 with U and V scaled by 255. A chart is a set of mesh
triangles laid out in the UV square; a lookup turns (I, U, V) back into the triangle whose UV
image contains (U, V) and the barycentric coordinates of (U, V) in it.

Two chart layouts:

- :class:`BodyUVLookup` — the body model's own UV atlas (``BodyModel.face_uvs``; anny has one),
  split into 24 charts by body part: a triangle belongs to the part (SMPL bone) of its first
  vertex, ``part_labels[faces[:, 0]]``, and its label is that part + 1. This is the rule of the
  synthetic renderer (:func:`rgbd2avatar.synth.generate.naked_iuv`). Restricting the search to the
  requested part matters where the atlas packs several parts into neighbouring UV regions.
- :meth:`SmplDensePoseLookup.from_mat` — DensePose's own 24 charts of the SMPL mesh, read from the
  ``UV_Processed.mat`` file distributed with DensePose (the user supplies it; it is never
  downloaded). Its arrays: ``All_FaceIndices`` (13774, 1) chart 1…24 of each DensePose face,
  ``All_Faces`` (13774, 3) 1-based indices into the 7829 DensePose vertices (SMPL's 6890 split
  along the chart seams), ``All_U_norm`` / ``All_V_norm`` (7829, 1) their chart coordinates, and
  ``All_vertices`` (1, 7829) the 1-based SMPL vertex each DensePose vertex copies. DensePose's
  labels are its own 24 parts (1, 2 torso, 3 right hand, …), not SMPL bones. U and V are read as
  DensePose's predictor outputs them (``DensePoseChartResult.uv``) and its COCO annotations store
  them (``dp_U``, ``dp_V``), without flipping.

The search, per chart: a k-d tree over the UV centroids of the chart's triangles gives the
k nearest candidates of each query; the query's barycentrics in each candidate decide whether it
lies inside; the containing candidate wins, else the candidate closest in UV with clamped
barycentrics (the closest point of the triangle). Queries farther than ``max_uv_distance`` from
every candidate (DensePose predicting UVs in the gaps of a chart) are rejected by
:func:`densepose_correspondences`.

Shapes: N queries / points, C UV triangles of all charts, T body triangles, k candidates,
H × W colour pixels, M correspondences.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from scipy.spatial import cKDTree

from capture.calibration import project, transform_points
from capture.sequence import Calibration
from rgbd2avatar.body.model import BodyModel
from rgbd2avatar.errors import UserError

NUM_CHARTS = 24
"""Chart labels run 1…24 (0 = background), in both layouts."""
DEFAULT_CANDIDATES = 8
"""Nearest triangle centroids examined per query."""
DEFAULT_MAX_UV_DISTANCE = 0.01
"""Largest UV distance from a query to its matched triangle (2.5 steps of the 8-bit IUV image)."""
UV_SCALE = 255.0
"""IUV images store U and V as round(255 · value)."""
MAT_KEYS = ("All_FaceIndices", "All_Faces", "All_U_norm", "All_V_norm", "All_vertices")
"""The arrays of DensePose's ``UV_Processed.mat`` that :meth:`SmplDensePoseLookup.from_mat` reads."""
_EPS = 1e-12


@dataclass(frozen=True)
class ChartMatch:
    """Where chart queries land on the body mesh.

    Attributes:
        triangles: (N,) int64 body triangle, −1 where the label has no chart.
        barycentrics: (N, 3) float32 position in that triangle, in the order of its corners in
            ``BodyModel.faces``.
        distance: (N,) float64 UV distance from the query to the triangle (0 inside it), inf
            where the label has no chart.
    """

    triangles: np.ndarray
    barycentrics: np.ndarray
    distance: np.ndarray


def uv_barycentrics(points: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Barycentric coordinates of 2D points in 2D triangles (unclamped; NaN for degenerate ones).

    Args:
        points: (..., 2); corners: (..., 3, 2).
    Returns:
        (..., 3) float64 weights summing to 1.
    """
    a, b, c = (corners[..., i, :].astype(np.float64) for i in range(3))
    e1, e2, d = b - a, c - a, points.astype(np.float64) - a
    det = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
    safe = np.where(np.abs(det) > _EPS, det, np.nan)
    w1 = (d[..., 0] * e2[..., 1] - d[..., 1] * e2[..., 0]) / safe
    w2 = (e1[..., 0] * d[..., 1] - e1[..., 1] * d[..., 0]) / safe
    return np.stack([1.0 - w1 - w2, w1, w2], -1)


def closest_on_edges(points: np.ndarray, corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest point of each triangle's boundary to a 2D point, as barycentrics.

    Args:
        points: (..., 2); corners: (..., 3, 2).
    Returns:
        barycentrics (..., 3) float64 (non-negative, on an edge) and distance (...,).
    """
    start = corners.astype(np.float64)  # (..., 3, 2) edge i runs from corner i to corner i+1
    edge = np.roll(start, -1, axis=-2) - start
    offset = points.astype(np.float64)[..., None, :] - start
    length2 = np.maximum((edge**2).sum(-1), _EPS)
    t = np.clip((offset * edge).sum(-1) / length2, 0.0, 1.0)  # (..., 3)
    distance = np.linalg.norm(offset - t[..., None] * edge, axis=-1)
    best = distance.argmin(-1)[..., None]
    t_best = np.take_along_axis(t, best, -1)[..., 0]
    weights = np.zeros((*t.shape[:-1], 3))
    np.put_along_axis(weights, best, (1.0 - t_best)[..., None], -1)
    np.put_along_axis(weights, (best + 1) % 3, t_best[..., None], -1)
    return weights, np.take_along_axis(distance, best, -1)[..., 0]


def locate_in_triangles(points: np.ndarray, corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Barycentrics of the closest point of each 2D triangle to a 2D point, and its distance.

    Args:
        points: (..., 2); corners: (..., 3, 2).
    Returns:
        barycentrics (..., 3) float64 in [0, 1] and distance (...,): 0 for points inside.
    """
    inner = uv_barycentrics(points, corners)
    inside = np.all(inner >= 0.0, axis=-1)  # False for degenerate (NaN) triangles
    edge_weights, edge_distance = closest_on_edges(points, corners)
    return np.where(inside[..., None], inner, edge_weights), np.where(inside, 0.0, edge_distance)


class ChartLookup:
    """(chart label, U, V) → body triangle and barycentrics, by nearest triangle in the chart.

    Args:
        labels: (C,) chart label 1…24 of each UV triangle.
        corner_uvs: (C, 3, 2) UV coordinates of its corners.
        triangles: (C,) the body triangle it is.
        corner_order: (C, 3) which corner of the body triangle each UV corner is (identity if None).
        candidates: nearest centroids examined per query.
    """

    def __init__(
        self,
        labels: np.ndarray,
        corner_uvs: np.ndarray,
        triangles: np.ndarray,
        corner_order: np.ndarray | None = None,
        candidates: int = DEFAULT_CANDIDATES,
    ) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.corner_uvs = np.asarray(corner_uvs, dtype=np.float64)
        self.triangles = np.asarray(triangles, dtype=np.int64)
        identity = np.broadcast_to(np.arange(3), (len(self.labels), 3))
        self.corner_order = np.asarray(identity if corner_order is None else corner_order, dtype=np.int64)
        self.candidates = candidates
        self.charts = {int(label): self._chart(label) for label in np.unique(self.labels)}

    def _chart(self, label: int) -> tuple[cKDTree, np.ndarray]:
        """A k-d tree over the UV centroids of one chart's triangles, and their rows (C_l,)."""
        members = np.flatnonzero(self.labels == label)
        return cKDTree(self.corner_uvs[members].mean(1)), members

    def query(self, labels: np.ndarray, uv: np.ndarray) -> ChartMatch:
        """Find (label, U, V) queries on the body.

        Args:
            labels: (N,) chart labels (the I channel, 1…24); uv: (N, 2) chart coordinates in [0, 1].
        Returns:
            :class:`ChartMatch` of N rows.
        """
        labels = np.asarray(labels, dtype=np.int64)
        uv = np.asarray(uv, dtype=np.float64)
        chart_rows = np.full(len(labels), -1, dtype=np.int64)
        barycentrics = np.zeros((len(labels), 3))
        distance = np.full(len(labels), np.inf)
        for label, (tree, members) in self.charts.items():
            rows = np.flatnonzero(labels == label)
            if len(rows):
                chart_rows[rows], barycentrics[rows], distance[rows] = self._search(tree, members, uv[rows])
        return self._on_body(chart_rows, barycentrics, distance)

    def _search(
        self, tree: cKDTree, members: np.ndarray, uv: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Best of the k nearest triangles of one chart.

        Returns:
            UV triangle (n,), barycentrics (n, 3) and UV distance (n,) of each of the n queries.
        """
        k = min(self.candidates, len(members))
        nearest = tree.query(uv, k=k)[1].reshape(len(uv), k)
        candidates = members[nearest]  # (n, k)
        weights, distance = locate_in_triangles(uv[:, None], self.corner_uvs[candidates])
        best = distance.argmin(1)  # ties (several containing triangles) go to the nearest centroid
        rows = np.arange(len(uv))
        return candidates[rows, best], weights[rows, best], distance[rows, best]

    def _on_body(self, chart_rows: np.ndarray, barycentrics: np.ndarray, distance: np.ndarray) -> ChartMatch:
        """UV-triangle results → body triangles, barycentrics reordered to the body's corners."""
        found = chart_rows >= 0
        safe = np.maximum(chart_rows, 0)
        body_weights = np.zeros_like(barycentrics)
        np.put_along_axis(body_weights, self.corner_order[safe], barycentrics, axis=1)
        return ChartMatch(
            triangles=np.where(found, self.triangles[safe], -1),
            barycentrics=np.where(found[:, None], body_weights, 0.0).astype(np.float32),
            distance=distance,
        )


class BodyUVLookup(ChartLookup):
    """Charts of a body model's own UV atlas: label = part of the triangle's first vertex + 1.

    Raises:
        UserError: the body model has no UV layout (SMPL: use :class:`SmplDensePoseLookup`).
    """

    def __init__(self, body: BodyModel, candidates: int = DEFAULT_CANDIDATES) -> None:
        if body.face_uvs.numel() == 0:
            raise UserError(
                f"The {body.name} body model has no UV layout of its own: give DensePose's "
                "UV_Processed.mat (the densepose_uv option) to read SMPL DensePose charts."
            )
        faces = body.faces.cpu().numpy()
        parts = body.part_labels.cpu().numpy()[faces[:, 0]]
        super().__init__(parts + 1, body.face_uvs.cpu().numpy(), np.arange(len(faces)), None, candidates)


class SmplDensePoseLookup(ChartLookup):
    """DensePose's 24 charts of the SMPL mesh (from ``UV_Processed.mat``), on a body's SMPL faces."""

    @classmethod
    def from_mat(
        cls, path: Path | str, faces: np.ndarray, candidates: int = DEFAULT_CANDIDATES
    ) -> SmplDensePoseLookup:
        """Read DensePose's ``UV_Processed.mat`` and match its faces to the body's.

        Args:
            path: the user's copy of ``UV_Processed.mat``.
            faces: (T, 3) the body model's triangles (SMPL's topology).
        Raises:
            UserError: the file is missing, unreadable, lacks an array, or its faces are not
                the body's (not an SMPL body).
        """
        path = Path(path)
        arrays = read_uv_mat(path)
        dp_faces = arrays["All_Faces"].astype(np.int64) - 1  # (C, 3) DensePose vertices
        smpl_corners = arrays["All_vertices"].astype(np.int64)[dp_faces] - 1  # (C, 3) SMPL vertices
        triangles, corner_order = match_faces(smpl_corners, np.asarray(faces, dtype=np.int64))
        if np.any(triangles < 0):
            raise UserError(
                f"{path}: {int(np.sum(triangles < 0))} DensePose faces are not faces of the body model; "
                "DensePose's UV_Processed.mat needs the smpl body model."
            )
        uv = np.stack([arrays["All_U_norm"], arrays["All_V_norm"]], -1)[dp_faces]  # (C, 3, 2)
        return cls(arrays["All_FaceIndices"], uv, triangles, corner_order, candidates)


def read_uv_mat(path: Path) -> dict[str, np.ndarray]:
    """The arrays :data:`MAT_KEYS` of a ``UV_Processed.mat``, flattened where they are vectors.

    Returns:
        All_FaceIndices (C,), All_Faces (C, 3), All_U_norm (V',), All_V_norm (V',), All_vertices (V',).
    """
    if not path.is_file():
        raise UserError(f"{path} does not exist; pass your copy of DensePose's UV_Processed.mat.")
    try:
        content = scipy.io.loadmat(path)
    except (OSError, ValueError, TypeError, NotImplementedError, scipy.io.matlab.MatReadError) as error:
        raise UserError(
            f"{path} is not a readable .mat file ({error}); pass DensePose's UV_Processed.mat."
        ) from None
    missing = [key for key in MAT_KEYS if key not in content]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; pass DensePose's UV_Processed.mat.")
    arrays = {key: np.asarray(content[key]) for key in MAT_KEYS}
    vectors = {key: value.reshape(-1) for key, value in arrays.items() if key != "All_Faces"}
    faces = arrays["All_Faces"].reshape(-1, 3)
    if len(faces) != len(vectors["All_FaceIndices"]) or faces.max(initial=0) > len(vectors["All_vertices"]):
        raise UserError(f"{path} has inconsistent face and vertex arrays; pass DensePose's UV_Processed.mat.")
    return {**vectors, "All_Faces": faces}


def match_faces(corners: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Find triangles given by their vertices among a mesh's faces, whatever their corner order.

    Args:
        corners: (C, 3) vertex indices of each triangle sought; faces: (T, 3) the mesh.
    Returns:
        triangles (C,) index into ``faces`` (−1 where absent) and corner_order (C, 3): the
        position in its face of each sought corner (identity where absent).
    """
    size = int(max(corners.max(initial=0), faces.max(initial=0))) + 1
    key_sought, key_faces = _triangle_keys(corners, size), _triangle_keys(faces, size)
    order = np.argsort(key_faces)
    position = np.clip(np.searchsorted(key_faces[order], key_sought), 0, len(order) - 1)
    triangles = np.where(key_faces[order][position] == key_sought, order[position], -1)
    matched = faces[np.maximum(triangles, 0)]  # (C, 3)
    corner_order = (corners[:, :, None] == matched[:, None, :]).argmax(-1)
    identity = np.broadcast_to(np.arange(3), corners.shape)
    return triangles, np.where(triangles[:, None] >= 0, corner_order, identity)


def _triangle_keys(triangles: np.ndarray, size: int) -> np.ndarray:
    """(T,) int64 key of each triangle's vertex set (sorted indices in base ``size``)."""
    ordered = np.sort(triangles, axis=1)
    return (ordered[:, 0] * size + ordered[:, 1]) * size + ordered[:, 2]


def sample_iuv(iuv: np.ndarray, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read an IUV image at the nearest pixel of each position.

    Args:
        iuv: (H, W, 3) uint8; pixels: (N, 2) (u, v), pixel centres at integers, NaN = unprojectable.
    Returns:
        on_body (N,) bool (inside the image, label ≠ 0), labels (N,) int64 and uv (N, 2) float64.
    """
    height, width = iuv.shape[:2]
    column, row = (np.rint(np.nan_to_num(pixels[:, i], nan=-1.0)).astype(np.int64) for i in (0, 1))
    inside = (column >= 0) & (column < width) & (row >= 0) & (row < height)
    values = iuv[np.clip(row, 0, height - 1), np.clip(column, 0, width - 1)]  # (N, 3)
    labels = np.where(inside, values[:, 0], 0).astype(np.int64)
    return labels > 0, labels, values[:, 1:] / UV_SCALE


def densepose_correspondences(
    iuv: np.ndarray,
    points: np.ndarray,
    calibration: Calibration,
    lookup: ChartLookup,
    max_uv_distance: float = DEFAULT_MAX_UV_DISTANCE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Body-surface correspondences of depth points from an IUV image of the colour camera.

    Each point is moved to the colour camera, projected through its lens and given the IUV value
    of the nearest pixel; points on a body label whose (I, U, V) lands within
    ``max_uv_distance`` of a chart triangle are kept. (A point hidden from the colour camera by
    a nearer surface takes that surface's label: the two cameras are a few cm apart, so this
    only happens in thin bands along occluding contours.)

    Args:
        iuv: (H, W, 3) uint8 IUV image in colour-camera pixels.
        points: (N, 3) person points in the depth camera's frame (metres).
        calibration: the recording's cameras (needs the colour camera).
        lookup: the chart layout the IUV image uses.
    Returns:
        point_indices (M,) int64 into ``points``, triangles (M,) int64 body triangles and
        barycentrics (M, 3) float32.
    """
    if calibration.color is None:
        raise UserError("DensePose correspondences need the colour camera; this recording has none.")
    in_color = transform_points(calibration.depth_to_color, np.asarray(points, dtype=np.float64))
    pixels = project(in_color, calibration.color)[0]
    on_body, labels, uv = sample_iuv(iuv, pixels)
    candidates = np.flatnonzero(on_body)
    match = lookup.query(labels[candidates], uv[candidates])
    close = match.distance <= max_uv_distance
    return candidates[close], match.triangles[close], match.barycentrics[close]
