"""Read what the per-frame body fit observes — person points, 2D keypoints, DensePose
correspondences — from a subject's files into one padded :class:`~fitting.observations.FitObservations`.

Inputs:

- ``preprocess_dir`` (``SUBJECT/preprocess/``, written and read by :mod:`capture.preprocess`):
  ``index.json`` lists the kept frames; ``frames/NNNNNN.npz`` holds each frame's person
  ``points`` (N, 3) float32 metres in the depth camera's frame and PCA ``normals`` (N, 3) facing
  the camera (with colours and depth-pixel indices, not used here). Each frame keeps at most
  ``max_points`` points, drawn uniformly without replacement by a generator seeded with
  (``seed``, frame index): the same frame gets the same points whichever other frames are loaded.
- ``keypoints``: an OpenPose ``--write_json`` folder (BODY_25) or a COCO-17 results ``.json``
  file, in colour-image pixels (:mod:`fitting.keypoints_io` documents both).
- ``densepose``: a folder of IUV images ``NNNNNN.png`` (6-digit frame index), each (H, W, 3)
  uint8 at the colour camera's resolution: I = chart label 1…24 (0 background), U, V × 255
  (:mod:`fitting.densepose`). With the body model's own UV atlas (anny, as the synthetic
  generator renders) I is the SMPL bone + 1; with detectron2's DensePose on an SMPL body, pass
  DensePose's ``UV_Processed.mat`` as ``densepose_uv``. detectron2's ``apply_net.py dump`` writes
  per image the detections' boxes (``pred_boxes_XYXY``), ``scores`` and ``pred_densepose``
  (``labels`` (h, w) and ``uv`` (2, h, w) in [0, 1] inside each box); paste the highest-scoring
  detection's labels and round(255 · uv) into a zero image at its box to get this IUV image.

Frames without a keypoint detection or an IUV image simply have none (confidence 0, no
correspondences); a missing folder or file given by the caller is a :class:`UserError`.

Shapes: F frames, N points per frame, K keypoints, M correspondences per frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from capture.files import read_image
from capture.preprocess import load_observation, read_index
from capture.sequence import Calibration
from fitting.densepose import BodyUVLookup, ChartLookup, SmplDensePoseLookup, densepose_correspondences
from fitting.keypoints_io import read_keypoints
from fitting.observations import FitObservations, pad_rows
from rgbd2avatar.body.model import BodyModel
from rgbd2avatar.errors import UserError

DEFAULT_MAX_POINTS = 4000
"""Person points kept per frame (PINA's fit samples a few thousand per frame too)."""
NO_CORRESPONDENCES = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.float32))
"""A frame without DensePose: point indices (0,), triangles (0,), barycentrics (0, 3)."""


def preprocessed_frames(preprocess_dir: Path) -> list[int]:
    """Frame indices kept by preprocessing (:func:`capture.preprocess.read_index`)."""
    if not preprocess_dir.is_dir():
        raise UserError(
            f"{preprocess_dir} does not exist; run `rgbd2avatar preprocess` on the subject first."
        )
    return [int(entry["index"]) for entry in read_index(preprocess_dir)["frames"]]


def frame_points(preprocess_dir: Path, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """Person points and normals of one preprocessed frame: (N, 3) float32 each."""
    observation = load_observation(preprocess_dir, frame)
    return observation.points.astype(np.float32), observation.normals.astype(np.float32)


def subsample(count: int, max_points: int, seed: int, frame: int) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``count`` points, drawn by (seed, frame)."""
    if count <= max_points:
        return np.arange(count)
    return np.sort(np.random.default_rng([seed, frame]).choice(count, max_points, replace=False))


def chart_lookup(body: BodyModel | None, densepose_uv: Path | str | None) -> ChartLookup:
    """The chart layout of the IUV images: DensePose's SMPL charts if given, else the body's UVs."""
    if body is None:
        raise ValueError("DensePose correspondences need the body model (body=...)")
    if densepose_uv is not None:
        return SmplDensePoseLookup.from_mat(densepose_uv, body.faces.cpu().numpy())
    return BodyUVLookup(body)


def frame_correspondences(
    iuv_dir: Path, frame: int, points: np.ndarray, calibration: Calibration, lookup: ChartLookup
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DensePose correspondences of one frame's points; empty without ``iuv_dir/NNNNNN.png``.

    Returns:
        point indices (M,) int64, triangles (M,) int64, barycentrics (M, 3) float32.
    """
    path = iuv_dir / f"{frame:06d}.png"
    if not path.is_file():
        return NO_CORRESPONDENCES
    iuv = read_image(path)
    expected = (*calibration.color.shape, 3)
    if iuv.shape != expected or iuv.dtype != np.uint8:
        raise UserError(
            f"{path} is {iuv.dtype} {iuv.shape}, not an IUV image of the colour camera "
            f"(uint8 {expected}); write DensePose's output at the colour image's full resolution."
        )
    return densepose_correspondences(iuv, points, calibration, lookup)


def _check_folder(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise UserError(f"{path} is not a folder; pass the {what}.")
    return path


def _selected_frames(available: list[int], frames: Sequence[int] | None, preprocess_dir: Path) -> list[int]:
    if frames is None:
        return available
    missing = sorted(set(frames) - set(available))
    if missing:
        raise UserError(
            f"{preprocess_dir} has no frame {missing[0]} ({len(missing)} requested frames missing); "
            "ask for preprocessed frames or re-run `rgbd2avatar preprocess` with a smaller stride."
        )
    return list(frames)


def load_observations(
    preprocess_dir: Path | str,
    calibration: Calibration,
    frames: Sequence[int] | None = None,
    keypoints: Path | str | None = None,
    densepose: Path | str | None = None,
    body: BodyModel | None = None,
    densepose_uv: Path | str | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
    seed: int = 0,
) -> FitObservations:
    """Read the fit's observations of F frames.

    Args:
        preprocess_dir: the subject's ``preprocess/`` folder.
        calibration: the recording's cameras.
        frames: frame indices to load (default: every preprocessed frame).
        keypoints: OpenPose output folder or COCO-17 results file, or None.
        densepose: folder of ``NNNNNN.png`` IUV images, or None (needs ``body``).
        body: the body model the correspondences refer to.
        densepose_uv: DensePose's ``UV_Processed.mat`` when the IUV images are detectron2
            DensePose charts of an SMPL body; None for the body's own UV layout.
        max_points: most points kept per frame; seed: seeds the subsampling.
    Returns:
        :class:`FitObservations` with points (F, N, 3), keypoints (F, K, 3) or None and
        DensePose rows (F, M) (M = 0 without ``densepose``).
    """
    preprocess_dir = Path(preprocess_dir)
    chosen = _selected_frames(preprocessed_frames(preprocess_dir), frames, preprocess_dir)
    if (keypoints is not None or densepose is not None) and calibration.color is None:
        raise UserError(
            "Keypoints and DensePose are colour-image observations; this recording has no colour."
        )
    detections = None if keypoints is None else read_keypoints(Path(keypoints), chosen)
    iuv_dir, lookup = None, None
    if densepose is not None:
        iuv_dir = _check_folder(Path(densepose), "folder of DensePose IUV images")
        lookup = chart_lookup(body, densepose_uv)
    points, normals, dp_rows = [], [], []
    for frame in chosen:
        frame_pts, frame_normals = frame_points(preprocess_dir, frame)
        keep = subsample(len(frame_pts), max_points, seed, frame)
        points.append(torch.from_numpy(frame_pts[keep]))
        normals.append(torch.from_numpy(frame_normals[keep]))
        dp_rows.append(
            NO_CORRESPONDENCES
            if lookup is None
            else frame_correspondences(iuv_dir, frame, frame_pts[keep], calibration, lookup)
        )
    return _assemble(chosen, points, normals, dp_rows, detections, calibration)


def _assemble(
    frames: list[int],
    points: list[torch.Tensor],
    normals: list[torch.Tensor],
    dp_rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    keypoints: tuple[np.ndarray, tuple[str, ...]] | None,
    calibration: Calibration,
) -> FitObservations:
    """Pad per-frame rows into :class:`FitObservations`."""
    padded_points, valid = pad_rows(points)
    dp_points, dp_valid = pad_rows([torch.from_numpy(r[0]) for r in dp_rows])
    return FitObservations(
        frames=torch.tensor(frames, dtype=torch.long),
        points=padded_points,
        normals=pad_rows(normals)[0],
        valid=valid,
        keypoints=None if keypoints is None else torch.from_numpy(keypoints[0]),
        keypoint_names=None if keypoints is None else keypoints[1],
        dp_points=dp_points.long(),
        dp_triangles=pad_rows([torch.from_numpy(r[1]) for r in dp_rows])[0].long(),
        dp_barycentrics=pad_rows([torch.from_numpy(r[2]) for r in dp_rows])[0].float(),
        dp_valid=dp_valid,
        calibration=calibration,
    )
