"""Per-frame observations for fitting: the person's points, PCA normals and colours.

``preprocess(sequence_dir, out_dir)`` reads an RGB-D sequence (:mod:`capture.sequence`) frame by
frame and writes::

    out_dir/
      index.json            written last: what was kept and how (below)
      frames/000123.npz     one observation per kept frame (the number is the frame index):
          points     (N, 3) float32  metres, depth-camera frame (OpenCV axes)
          normals    (N, 3) float16  unit PCA normals facing the camera (n · p < 0)
          colors     (N, 3) uint8    RGB sampled bilinearly in the colour image (0 where unseen)
          color_valid (N,)  bool     the point projects into the colour image (False: no colour)
          pixels     (N,)   int32    flat depth-image index v · W + u of each point, row-major
      masks/000123.png      (H, W) uint8 0/255: exactly the pixels of the frame's points

``index.json``: ``{"format": "rgbd2avatar-preprocess", "version": 1, "sequence": path,
"depth_size": [W, H], "frames": [{"index", "file", "mask", "depth_time", "color_time",
"points"}, ...], "dropped": [{"index", "reason"}, ...], "floor": {"normal", "offset", "support"}
or null, "background": {...}, "parameters": {...}, "counts": {...}}``. Frame entries are in
increasing frame order; times are the sequence's (seconds, device clock).

Per selected frame: back-project the undistorted depth (:func:`capture.calibration.backproject`);
segment the person (:mod:`capture.segment`; optionally with external masks); PCA normals on the
depth grid restricted to the person (:func:`capture.normals.grid_normals`); drop statistical
outliers (:func:`statistical_inliers`); colour each point through the calibration
(:func:`sample_colors`). A frame with fewer than ``min_points`` points left is dropped.

**Frame subsampling rule** (:func:`select_frames`): every ``stride``-th frame starting at frame 0
(default: the stride closest to 10 fps, 3 for a 30 fps recording), skipping designated empty-room
frames; if more than ``max_frames`` remain, ``max_frames`` of them spread evenly over the
recording (first and last included); then frames whose person has fewer than ``min_points``
points are dropped. 10 fps keeps consecutive observations distinct while a person turns (≈ 3° a
frame for a 12 s turn) and 600 frames bound the fitting cost.

Memory: frames are decoded and processed one at a time; the automatic background model holds
``background_samples`` depth images (32 × 0.7 MB) once. Everything is written under
``<out_dir>.partial`` and renamed to ``out_dir`` at the end, so ``out_dir`` is either the old
result or the complete new one; an error removes the partial directory.

Shapes: N points, H × W depth pixels, F frames.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from capture.calibration import backproject, pixel_rays, project, transform_points
from capture.errors import CaptureError
from capture.files import PathLike, load_npz, read_json, save_npz, write_image, write_json
from capture.normals import DEFAULT_MAX_JUMP, DEFAULT_WINDOW, NORMAL_METHODS, grid_normals, window_offsets
from capture.segment import BackgroundModel, Segmenter, SegmentOptions, external_mask
from capture.sequence import Calibration, RGBDFrame, SequenceReader

FORMAT = "rgbd2avatar-preprocess"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
TARGET_FPS = 10.0
"""Frame rate the default stride aims at."""
DEFAULT_MAX_FRAMES = 600
FLOOR_FRAMES = 3
"""Frames pooled for the first floor estimate."""
_FLOOR_POINTS = 100_000
"""Points kept (at random) from the pooled frames for the floor estimate."""

MASK_MODES = ("intersect", "override")
"""How external masks combine with the segmentation: keep pixels both call person, or use them alone."""
Progress = Callable[[int, int], None]
"""``progress(done, total)``: called after each selected frame."""


@dataclass(frozen=True)
class PreprocessOptions:
    """How observations are made (the sequence-level choices are arguments of :func:`preprocess`).

    Attributes:
        min_points: frames with fewer person points are dropped.
        normal_window, normal_max_jump, normal_method: :func:`capture.normals.grid_normals`
            window, depth-discontinuity threshold and estimator.
        outlier_neighbours, outlier_window, outlier_std: :func:`statistical_inliers` parameters.
        segment: the segmentation rule's parameters.
        seed: for RANSAC.
    """

    min_points: int = 2000
    normal_window: int = DEFAULT_WINDOW
    normal_max_jump: float = DEFAULT_MAX_JUMP
    normal_method: str = NORMAL_METHODS[0]
    outlier_neighbours: int = 8
    outlier_window: int = 5
    outlier_std: float = 4.0
    segment: SegmentOptions = field(default_factory=SegmentOptions)
    seed: int = 0


@dataclass
class Observation:
    """One frame's observation (the arrays of ``frames/000123.npz``, see the module docstring)."""

    index: int
    points: np.ndarray
    normals: np.ndarray
    colors: np.ndarray
    color_valid: np.ndarray
    pixels: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays as stored: points float32, normals float16, colors uint8, pixels int32."""
        return {
            "points": self.points.astype(np.float32),
            "normals": self.normals.astype(np.float16),
            "colors": self.colors.astype(np.uint8),
            "color_valid": self.color_valid.astype(bool),
            "pixels": self.pixels.astype(np.int32),
        }

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """(H, W) uint8 image, 255 at the observation's pixels."""
        image = np.zeros(shape, np.uint8)
        image.flat[self.pixels] = 255
        return image


# --------------------------------------------------------------------------------------------------
# Frame selection


def default_stride(timestamps: np.ndarray, target_fps: float = TARGET_FPS) -> int:
    """The stride that brings the recording's frame rate (from the median interval of (F,)
    ``timestamps``) closest to ``target_fps``; 1 for a single frame."""
    intervals = np.diff(np.asarray(timestamps, dtype=np.float64))
    intervals = intervals[intervals > 0]
    if not len(intervals):
        return 1
    return max(1, round(1.0 / (float(np.median(intervals)) * target_fps)))


def select_frames(count: int, stride: int, max_frames: int | None, exclude: Sequence[int] = ()) -> np.ndarray:
    """The frames to preprocess (the module's subsampling rule, before dropping empty frames).

    Args:
        count: F frames in the recording; stride: keep frames 0, stride, 2·stride, …
        max_frames: at most this many, spread evenly (None: no cap).
        exclude: frames never selected (empty-room frames).
    Returns:
        (K,) int64 increasing frame indices.
    """
    if stride < 1:
        raise ValueError(f"stride must be ≥ 1, not {stride}")
    chosen = np.setdiff1d(np.arange(0, count, stride), np.asarray(exclude, dtype=np.int64))
    if max_frames is not None and len(chosen) > max_frames:
        chosen = chosen[np.unique(np.round(np.linspace(0, len(chosen) - 1, max_frames)).astype(np.int64))]
    return chosen


# --------------------------------------------------------------------------------------------------
# Per-frame steps


def statistical_inliers(
    person: np.ndarray, pixels: np.ndarray, neighbours: int, window: int, std: float
) -> np.ndarray:
    """Statistical outlier removal with the neighbours searched in the image.

    Each point's spread — the mean distance to its k nearest person points within a
    ``window`` × ``window`` pixel window, divided by its depth (the pixel spacing grows with
    depth) — is compared with the mean and standard deviation of the spread over the frame; points
    more than ``std`` standard deviations above the mean are outliers (flying pixels, speckle).
    On a depth image the 3D nearest neighbours of a surface point lie in its pixel neighbourhood,
    so this matches a k-d tree search at a third of its cost.

    Args:
        person: (H, W, 3) points, NaN outside the person; pixels: (N,) flat indices of the points
            to test; neighbours: k; window: odd pixel window; std: threshold in standard deviations.
    Returns:
        (N,) bool inliers.
    """
    radius = window // 2
    width = person.shape[1]
    padded = np.pad(person, ((radius, radius), (radius, radius), (0, 0)), constant_values=np.nan)
    planes = np.ascontiguousarray(padded.reshape(-1, 3).T)  # (3, P)
    rows, cols = np.divmod(pixels, width)
    centres = (rows + radius) * (width + 2 * radius) + cols + radius
    offsets, _ = window_offsets(window, width + 2 * radius)
    around = centres[:, None] + offsets[offsets != 0]  # (N, k² − 1)
    squared = sum(np.square(plane[around] - plane[centres, None]) for plane in planes)
    nearest = np.partition(np.where(np.isnan(squared), np.inf, squared), neighbours - 1, axis=1)
    spread = np.sqrt(nearest[:, :neighbours]).mean(1) / planes[2, centres]
    finite = np.isfinite(spread)
    if finite.sum() < 2:
        return finite
    return finite & (spread <= spread[finite].mean() + std * spread[finite].std())


def sample_colors(
    points: np.ndarray, color: np.ndarray | None, calibration: Calibration
) -> tuple[np.ndarray, np.ndarray]:
    """Colours of depth-camera points seen by the colour camera (no occlusion test).

    Points are moved into the colour camera (``depth_to_color``), projected through its lens
    distortion and sampled bilinearly; a point whose projection is undefined or falls outside the
    image (pixel centres at integers, so [−0.5, W − 0.5) × [−0.5, H − 0.5)) gets colour 0.

    Args:
        points: (N, 3) depth-camera points; color: (H', W', 3) uint8 RGB image or None.
    Returns:
        colors (N, 3) uint8, valid (N,) bool.
    """
    if color is None or calibration.color is None:
        return np.zeros((len(points), 3), np.uint8), np.zeros(len(points), bool)
    pixels, _ = project(transform_points(calibration.depth_to_color, points), calibration.color)
    height, width = color.shape[:2]
    u, v = np.nan_to_num(pixels, nan=-1.0).T
    valid = np.isfinite(pixels).all(1) & (u >= -0.5) & (u < width - 0.5) & (v >= -0.5) & (v < height - 0.5)
    u, v = np.clip(u, 0, width - 1), np.clip(v, 0, height - 1)
    u0, v0 = np.minimum(u.astype(np.int64), width - 2), np.minimum(v.astype(np.int64), height - 2)
    fu, fv = (u - u0)[:, None], (v - v0)[:, None]
    image = color.astype(np.float32)
    top = image[v0, u0] * (1 - fu) + image[v0, u0 + 1] * fu
    bottom = image[v0 + 1, u0] * (1 - fu) + image[v0 + 1, u0 + 1] * fu
    colors = np.rint(top * (1 - fv) + bottom * fv).astype(np.uint8)
    return np.where(valid[:, None], colors, 0).astype(np.uint8), valid


@dataclass
class FrameProcessor:
    """Turns frames into observations with a shared segmenter (floor, background).

    Attributes:
        calibration: the recording's cameras; rays: (H, W, 3) depth-camera pixel rays
            (:func:`capture.calibration.pixel_rays`); segmenter: see :class:`capture.segment.Segmenter`.
        options: see :class:`PreprocessOptions`.
        mask_dir, mask_mode: external masks (``mask_dir/000123.png``) and how they combine.
    """

    calibration: Calibration
    rays: np.ndarray
    segmenter: Segmenter
    options: PreprocessOptions
    mask_dir: Path | None = None
    mask_mode: str = "intersect"

    def person_mask(self, frame: RGBDFrame, points: np.ndarray) -> np.ndarray:
        """(H, W) bool person pixels: the segmentation, or with an external mask, their
        intersection (``intersect``) or the external mask's pixels with a depth (``override``)."""
        if self.mask_dir is None:
            return self.segmenter(points).mask
        external = self._external(frame, points)
        if self.mask_mode == "override":
            return external & np.isfinite(points[..., 2])
        return external & self.segmenter(points).mask

    def _external(self, frame: RGBDFrame, points: np.ndarray) -> np.ndarray:
        """(H, W) bool external mask of a frame; CaptureError naming the file if it is missing."""
        path = self.mask_dir / f"{frame.index:06d}.png"
        if not path.is_file():
            raise CaptureError(
                f"{path} is missing: with a mask folder every selected frame needs a mask "
                f"(frame {frame.index}); add it or preprocess without masks."
            )
        return external_mask(path, self.calibration, points)

    def __call__(self, frame: RGBDFrame) -> Observation:
        """The observation of one frame (possibly with few or no points)."""
        points = backproject(frame.depth_m, self.calibration.depth, self.rays)
        mask = self.person_mask(frame, points)
        person = np.where(mask[..., None], points, np.float32(np.nan))
        options = self.options
        normals = grid_normals(
            person, options.normal_window, options.normal_max_jump, method=options.normal_method
        )
        pixels = np.flatnonzero(mask)
        pixels = pixels[np.isfinite(normals.reshape(-1, 3)[pixels, 0])]  # normals are NaN as a whole
        flat_points, flat_normals = person.reshape(-1, 3)[pixels], normals.reshape(-1, 3)[pixels]
        inliers = statistical_inliers(
            person,
            pixels,
            self.options.outlier_neighbours,
            self.options.outlier_window,
            self.options.outlier_std,
        )
        flat_points, flat_normals, pixels = flat_points[inliers], flat_normals[inliers], pixels[inliers]
        colors, color_valid = sample_colors(flat_points, frame.color, self.calibration)
        return Observation(frame.index, flat_points, flat_normals, colors, color_valid, pixels)


# --------------------------------------------------------------------------------------------------
# Set-up: floor and background


def learn_scene(
    reader: SequenceReader,
    rays: np.ndarray,
    frames: Sequence[int],
    options: PreprocessOptions,
    *,
    empty_room: bool,
) -> Segmenter:
    """A segmenter with the floor and (from enough frames) the static background of a recording.

    Args:
        reader: the recording; rays: (H, W, 3) its depth camera's pixel rays.
        frames: the frames to learn from — designated empty-room frames, or frames sampled across
            the recording.
        empty_room: ``frames`` show the room without the person (any number will do); otherwise
            fewer than ``min_background_samples`` frames give no background model.
    """
    seg = options.segment
    depths = np.stack([reader.frame(int(index), color=False).depth_mm for index in frames])
    enough = empty_room or len(frames) >= seg.min_background_samples
    background = BackgroundModel.from_depths(depths, seg) if enough and len(frames) else None
    segmenter = Segmenter(seg, background, seed=options.seed)
    pooled = [
        backproject(depth / np.float32(1000.0), reader.calibration.depth, rays)
        for depth in depths[:FLOOR_FRAMES]
    ]
    floor_points = np.concatenate([p[segmenter.valid_points(p)] for p in pooled])
    rng = np.random.default_rng(options.seed)
    subset = rng.choice(len(floor_points), min(len(floor_points), _FLOOR_POINTS), replace=False)
    segmenter.estimate_floor(floor_points[subset])
    return segmenter


def background_sample(count: int, samples: int) -> np.ndarray:
    """(K,) up to ``samples`` frame indices spread evenly over ``count`` frames, first and last included."""
    return np.unique(np.round(np.linspace(0, count - 1, min(count, samples))).astype(np.int64))


# --------------------------------------------------------------------------------------------------
# The stage


def preprocess(
    sequence_dir: PathLike,
    out_dir: PathLike,
    *,
    stride: int | None = None,
    max_frames: int | None = DEFAULT_MAX_FRAMES,
    mask_dir: PathLike | None = None,
    progress: Progress | None = None,
    mask_mode: str = "intersect",
    background_frames: Sequence[int] | None = None,
    options: PreprocessOptions = PreprocessOptions(),
) -> dict[str, Any]:
    """Write per-frame person observations of a recording (see the module docstring).

    Args:
        sequence_dir: an RGB-D sequence (e.g. a workspace's ``recording/``).
        out_dir: where to write (e.g. a workspace's ``preprocess/``); replaced when complete.
        stride: keep every stride-th frame; None: the stride closest to 10 fps.
        max_frames: at most this many frames, spread evenly; None: no cap.
        mask_dir: optional folder of person masks ``000123.png`` per frame, depth- or colour-image
            sized (:func:`capture.segment.external_mask`); every selected frame needs one.
        progress: ``progress(done, total)`` after each selected frame.
        mask_mode: ``"intersect"`` (external ∧ own segmentation) or ``"override"`` (external only).
        background_frames: frames that show the empty room; they teach the background model and
            are not preprocessed. None: learn the background from the recording itself.
        options: per-frame parameters.
    Returns:
        The summary also stored in ``index.json`` under ``counts``, plus ``seconds`` and ``fps``.
    Raises:
        CaptureError: the sequence or a mask is missing or unreadable, or no selected frame shows
            a person.
    """
    if mask_mode not in MASK_MODES:
        raise ValueError(f"mask_mode must be one of {MASK_MODES}, not {mask_mode!r}")
    start = time.perf_counter()
    reader = SequenceReader(sequence_dir)
    empty_room = _checked_frames(background_frames or (), len(reader), reader.root)
    stride = default_stride(reader.timestamps) if stride is None else stride
    selected = select_frames(len(reader), stride, max_frames, empty_room)
    learn_from = empty_room or background_sample(len(reader), options.segment.background_samples)
    rays = pixel_rays(reader.calibration.depth)
    segmenter = learn_scene(reader, rays, learn_from, options, empty_room=bool(empty_room))
    masks = None if mask_dir is None else Path(mask_dir)
    processor = FrameProcessor(reader.calibration, rays, segmenter, options, masks, mask_mode)
    out_dir = Path(out_dir)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        kept, dropped = _process_frames(reader, selected, processor, partial, progress)
        if not kept:
            raise CaptureError(
                f"No person found in {reader.root}: none of the {len(selected)} selected frames has "
                f"{options.min_points} person points; film the person 1–3.5 m in front of the camera, "
                "or pass person masks."
            )
        seconds = time.perf_counter() - start
        counts = _counts(reader, selected, kept, dropped, seconds)
        index = _index_document(
            reader, processor, kept, dropped, counts, stride, max_frames, mask_dir, empty_room
        )
        write_json(partial / INDEX_FILE, index)
        _move_into_place(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return counts


def _checked_frames(frames: Sequence[int], count: int, root: Path) -> list[int]:
    """Sorted distinct frame indices; CaptureError if one lies outside 0 … count − 1."""
    outside = [int(index) for index in frames if not 0 <= int(index) < count]
    if outside:
        raise CaptureError(
            f"Empty-room frame {outside[0]} is not in {root}, which has frames 0–{count - 1}; "
            "pass frames from that range."
        )
    return sorted({int(index) for index in frames})


def _process_frames(
    reader: SequenceReader,
    selected: np.ndarray,
    processor: FrameProcessor,
    partial: Path,
    progress: Progress | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Process and write the selected frames one at a time; (kept entries, dropped entries)."""
    kept, dropped = [], []
    min_points = processor.options.min_points
    for done, frame in enumerate(reader.frames(selected.tolist()), start=1):
        observation = processor(frame)
        count = len(observation.points)
        if count < min_points:
            dropped.append({"index": frame.index, "reason": f"{count} person points < {min_points}"})
        else:
            kept.append(_write_observation(partial, frame, observation, reader.calibration.depth.shape))
        if progress is not None:
            progress(done, len(selected))
    return kept, dropped


def _write_observation(
    partial: Path, frame: RGBDFrame, observation: Observation, shape: tuple[int, int]
) -> dict[str, Any]:
    """Write one frame's files; its ``index.json`` entry."""
    name = f"{frame.index:06d}"
    save_npz(partial / "frames" / f"{name}.npz", **observation.arrays())
    write_image(partial / "masks" / f"{name}.png", observation.mask(shape))
    return {
        "index": frame.index,
        "file": f"frames/{name}.npz",
        "mask": f"masks/{name}.png",
        "depth_time": frame.depth_time,
        "color_time": frame.color_time,
        "points": len(observation.points),
    }


def _counts(
    reader: SequenceReader, selected: np.ndarray, kept: list, dropped: list, seconds: float
) -> dict[str, Any]:
    """The stage summary."""
    points = [entry["points"] for entry in kept]
    return {
        "frames_in_sequence": len(reader),
        "frames_selected": len(selected),
        "frames_kept": len(kept),
        "frames_dropped": len(dropped),
        "points_mean": float(np.mean(points)),
        "points_min": int(np.min(points)),
        "seconds": seconds,
        "fps": len(selected) / seconds,
    }


def _index_document(
    reader: SequenceReader,
    processor: FrameProcessor,
    kept: list,
    dropped: list,
    counts: dict,
    stride: int,
    max_frames: int | None,
    mask_dir: PathLike | None,
    empty_room: list[int],
) -> dict[str, Any]:
    """The content of ``index.json``."""
    segmenter = processor.segmenter
    background = segmenter.background
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "sequence": str(reader.root),
        "depth_size": [reader.calibration.depth.width, reader.calibration.depth.height],
        "frames": kept,
        "dropped": dropped,
        "floor": None if segmenter.floor is None else segmenter.floor.to_json(),
        "background": None
        if background is None
        else {
            "frames": background.frames,
            "empty_room_frames": empty_room,
            "static_fraction": background.static_fraction,
        },
        "parameters": {
            "stride": stride,
            "max_frames": max_frames,
            "mask_dir": None if mask_dir is None else str(mask_dir),
            "mask_mode": processor.mask_mode if mask_dir is not None else None,
            **asdict(processor.options),
        },
        "counts": counts,
    }


def _move_into_place(partial: Path, out_dir: Path) -> None:
    """Rename ``partial`` to ``out_dir``, replacing an old result only once the new one is complete."""
    if out_dir.exists():
        old = out_dir.with_name(out_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        out_dir.rename(old)
        partial.rename(out_dir)
        shutil.rmtree(old)
    else:
        partial.rename(out_dir)


# --------------------------------------------------------------------------------------------------
# Reading the results


def read_index(out_dir: PathLike) -> dict[str, Any]:
    """The parsed ``index.json`` of a preprocessing result; CaptureError if missing or foreign."""
    path = Path(out_dir) / INDEX_FILE
    index = read_json(path)
    if not isinstance(index, dict) or index.get("format") != FORMAT or index.get("version") != FORMAT_VERSION:
        raise CaptureError(f"{path} is not a {FORMAT} v{FORMAT_VERSION} index; re-run preprocess.")
    return index


def load_observation(out_dir: PathLike, index: int) -> Observation:
    """The observation of frame ``index`` (normals as float32); CaptureError if missing/corrupt."""
    arrays = load_npz(Path(out_dir) / "frames" / f"{index:06d}.npz")
    try:
        return Observation(
            index,
            arrays["points"],
            arrays["normals"].astype(np.float32),
            arrays["colors"],
            arrays["color_valid"],
            arrays["pixels"],
        )
    except KeyError as error:
        raise CaptureError(
            f"{Path(out_dir) / 'frames' / f'{index:06d}.npz'} lacks {error}; re-run preprocess."
        ) from None
