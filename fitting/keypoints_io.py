"""2D body keypoints as common detectors write them, read into (F, K, 3) arrays for the fit.

Two layouts, both in pixels of the **colour** image at full resolution (pixel centres at integer
coordinates, as OpenCV, OpenPose and COCO results have them), one person per recording:

- **OpenPose** (BODY_25): a folder of one JSON file per frame, as ``--write_json`` writes it::

      openpose.bin --image_dir SUBJECT/recording/color --write_json keypoints/ \\
                   --model_pose BODY_25 --display 0 --render_pose 0

  On a folder of images each file is ``<image name>_keypoints.json`` (``000123_keypoints.json``
  for ``000123.jpg``); on a video (``--video``) it is ``<video name>_000000000123_keypoints.json``.
  The frame index is the last number before ``_keypoints.json``. Each file holds
  ``{"version": 1.3, "people": [{"pose_keypoints_2d": [x0, y0, c0, …, x24, y24, c24], …}, …]}``,
  75 numbers per person in :data:`~rgbd2avatar.body.keypoints.BODY25` order; keep the default
  ``--keypoint_scale 0`` (source-image pixels). A keypoint OpenPose did not find is (0, 0, 0).
- **COCO-17 results**: one JSON file, a list of detections as the COCO keypoint evaluation reads
  them: ``[{"image_id": 123, "category_id": 1, "keypoints": [x0, y0, s0, …, x16, y16, s16],
  "score": 0.93}, …]``, 51 numbers per detection in :data:`~rgbd2avatar.body.keypoints.COCO17`
  order. ``image_id`` is the frame index (an integer, or a name whose last number is the index,
  such as ``"000123.jpg"``). Detectron2 writes this list as ``coco_instances_results.json``
  (``COCOEvaluator`` on a dataset registered over the colour frames with ``image_id`` = frame
  index, a Keypoint R-CNN config); mmpose's ``CocoMetric`` with an ``outfile_prefix`` writes
  the same layout to ``<prefix>.keypoints.json``.

Several people in one frame: the recording shows one person, so the most confident detection is
taken — for OpenPose the person with the largest sum of keypoint confidences, for COCO the
detection with the highest ``score`` (ties: the first). Frames without a file or detection get
zeros (confidence 0: nothing observed). Confidences are clipped to [0, 1] (Keypoint R-CNN writes
unbounded heatmap scores: negative ones count as 0, those above 1 as 1).

Shapes: F frames, K keypoints (25 BODY_25, 17 COCO-17).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rgbd2avatar.body.keypoints import BODY25, COCO17
from rgbd2avatar.errors import UserError

OPENPOSE_SUFFIX = "_keypoints.json"
_LAST_NUMBER = re.compile(r"(\d+)\D*$")


def frame_number(name: str) -> int | None:
    """The last number in a file or image name (``"video_000000000123"`` → 123), None without one."""
    found = _LAST_NUMBER.search(name)
    return int(found.group(1)) if found else None


def _load_json(path: Path) -> Any:
    """Parsed JSON of a detector output file; :class:`UserError` naming it if unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; pass the detector's output file or folder.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({error}); re-run the keypoint detector.") from None


def _keypoint_rows(values: Any, count: int, path: Path, what: str) -> np.ndarray:
    """A flat x, y, c list as (count, 3) float32, confidences clipped to [0, 1]."""
    try:
        rows = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        rows = np.zeros(0, dtype=np.float32)
    if rows.shape != (3 * count,) or not np.all(np.isfinite(rows)):
        size = len(values) if isinstance(values, list) else type(values).__name__
        raise UserError(
            f"{path}: {what} holds {size} values, expected {3 * count} finite numbers "
            f"({count} keypoints × x, y, confidence); use the detector's {count}-keypoint model."
        )
    rows = rows.reshape(count, 3)
    rows[:, 2] = np.clip(rows[:, 2], 0.0, 1.0)
    return rows


def openpose_files(folder: Path) -> dict[int, Path]:
    """Frame index → ``*_keypoints.json`` file of an OpenPose output folder.

    Raises:
        UserError: the folder is missing, holds no such file, or two files claim one frame.
    """
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; pass the folder OpenPose's --write_json wrote.")
    files: dict[int, Path] = {}
    for path in sorted(folder.glob(f"*{OPENPOSE_SUFFIX}")):
        frame = frame_number(path.name[: -len(OPENPOSE_SUFFIX)])
        if frame is None:
            continue
        if frame in files:
            raise UserError(
                f"{folder}: {files[frame].name} and {path.name} are both frame {frame}; "
                "keep the output of one OpenPose run per folder."
            )
        files[frame] = path
    if not files:
        raise UserError(f"{folder} holds no NNNNNN{OPENPOSE_SUFFIX} files; run OpenPose with --write_json.")
    return files


def openpose_person(path: Path) -> np.ndarray:
    """The most confident person of one OpenPose JSON file.

    Returns:
        (25, 3) float32 BODY_25 x, y, confidence; zeros when nobody was detected.
    """
    content = _load_json(path)
    people = content.get("people") if isinstance(content, dict) else None
    if not isinstance(people, list) or not all(
        isinstance(p, dict) and "pose_keypoints_2d" in p for p in people
    ):
        raise UserError(
            f"{path} is not OpenPose output: expected {{'people': [{{'pose_keypoints_2d': [...]}}]}}; "
            "re-run OpenPose with --write_json."
        )
    if not people:
        return np.zeros((len(BODY25), 3), dtype=np.float32)
    poses = np.stack(
        [_keypoint_rows(p["pose_keypoints_2d"], len(BODY25), path, "pose_keypoints_2d") for p in people]
    )
    return poses[np.argmax(poses[:, :, 2].sum(1))]


def read_openpose(folder: Path | str, frames: Sequence[int]) -> tuple[np.ndarray, tuple[str, ...]]:
    """BODY_25 keypoints of the given frames from an OpenPose ``--write_json`` folder.

    Args:
        folder: the output folder; frames: F frame indices.
    Returns:
        keypoints (F, 25, 3) float32 (zeros for frames without a file or a person) and the
        names (:data:`~rgbd2avatar.body.keypoints.BODY25`).
    """
    files = openpose_files(Path(folder))
    out = np.zeros((len(frames), len(BODY25), 3), dtype=np.float32)
    for row, frame in enumerate(frames):
        if frame in files:
            out[row] = openpose_person(files[frame])
    return out, BODY25


def _coco_detection(entry: Any, path: Path) -> tuple[int, float, np.ndarray]:
    """(frame, score, (17, 3) keypoints) of one COCO result entry."""
    if not isinstance(entry, dict) or not {"image_id", "keypoints"} <= entry.keys():
        raise UserError(
            f"{path}: every entry needs image_id and keypoints (a COCO keypoint results list); "
            "re-export the detector's results."
        )
    image = entry["image_id"]
    frame = image if isinstance(image, int) else frame_number(str(image))
    if frame is None:
        raise UserError(f"{path}: image_id {image!r} names no frame; use the frame index as image_id.")
    keypoints = _keypoint_rows(entry["keypoints"], len(COCO17), path, f"the keypoints of image {image!r}")
    score = entry.get("score", float(keypoints[:, 2].mean()))
    if not isinstance(score, (int, float)):
        raise UserError(f"{path}: the score of image {image!r} is not a number; re-export the results.")
    return int(frame), float(score), keypoints


def read_coco(path: Path | str, frames: Sequence[int]) -> tuple[np.ndarray, tuple[str, ...]]:
    """COCO-17 keypoints of the given frames from a COCO keypoint results JSON file.

    Entries of other categories than person (``category_id`` ≠ 1) are ignored.

    Args:
        path: the results file; frames: F frame indices.
    Returns:
        keypoints (F, 17, 3) float32 (zeros for frames without a detection) and the names
        (:data:`~rgbd2avatar.body.keypoints.COCO17`).
    """
    path = Path(path)
    content = _load_json(path)
    if not isinstance(content, list):
        raise UserError(
            f"{path} is not a COCO keypoint results list ([{{image_id, keypoints, score}}, ...]); "
            "re-export the detector's results."
        )
    best: dict[int, tuple[float, np.ndarray]] = {}
    for entry in content:
        if isinstance(entry, dict) and entry.get("category_id", 1) != 1:
            continue
        frame, score, keypoints = _coco_detection(entry, path)
        if frame not in best or score > best[frame][0]:
            best[frame] = (score, keypoints)
    out = np.zeros((len(frames), len(COCO17), 3), dtype=np.float32)
    for row, frame in enumerate(frames):
        if frame in best:
            out[row] = best[frame][1]
    return out, COCO17


def read_keypoints(path: Path | str, frames: Sequence[int]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Keypoints of the given frames: an OpenPose folder or a COCO-17 results ``.json`` file.

    Returns:
        keypoints (F, K, 3) float32 and the K names.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(
            f"{path} does not exist; pass an OpenPose output folder or a COCO results .json file."
        )
    if path.is_dir():
        return read_openpose(path, frames)
    if path.suffix.lower() == ".json":
        return read_coco(path, frames)
    raise UserError(
        f"{path} is neither an OpenPose --write_json folder nor a COCO keypoint results .json file."
    )
