"""Import any RGB-D source into the project's sequence format (``rgbd2avatar import``).

Sources, told apart by what ``source`` is:

- a file: an Azure Kinect recording (``.mkv``), read without the SDK by :mod:`capture.mkv`;
- a folder with ``calibration.json`` and ``frames.json``: a sequence in our own format, read and
  checked frame by frame and written again (colour keeps its format: PNG stays lossless, JPEG is
  re-encoded at quality 95);
- any other folder: depth/colour images with intrinsics, read by :mod:`capture.folder`.

The destination is written by :class:`~capture.sequence.SequenceWriter`, so it appears complete or
not at all: any error (or Ctrl-C) while importing leaves nothing at ``destination``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from capture.errors import CaptureError
from capture.files import PathLike
from capture.folder import ImageFolder
from capture.mkv import MKVRecording
from capture.sequence import (
    CALIBRATION_FILE,
    INDEX_FILE,
    Calibration,
    RGBDFrame,
    SequenceReader,
    SequenceWriter,
)

Progress = Callable[[Iterable[RGBDFrame], int], Iterable[RGBDFrame]]
"""``progress(frames, total)`` → the same frames, e.g. wrapped in a progress bar."""


@dataclass
class _Source:
    """An opened source: its cameras, a frame stream, the expected count and facts for the summary."""

    kind: str
    calibration: Calibration
    frames: Iterator[RGBDFrame]
    total: int
    color_format: str = "jpg"
    details: dict[str, Any] = field(default_factory=dict)
    finish: Callable[[], dict[str, Any]] = dict


def import_recording(
    source: PathLike,
    destination: PathLike,
    *,
    max_frames: int | None = None,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Convert ``source`` (an Azure Kinect ``.mkv``, a sequence folder or an image folder) into a
    sequence at ``destination`` (e.g. a workspace's ``recording/``).

    Args:
        source: what to import (see the module docstring).
        destination: the sequence directory to create; nothing is left there if the import fails.
        max_frames: import only the first this many frames.
        progress: optional ``progress(frames, total)`` wrapping the frame stream (progress bars).
        overwrite: replace an existing sequence at ``destination`` (only once the new one is complete).
    Returns:
        A JSON-able summary: ``source``, ``kind`` ("mkv", "sequence" or "folder"), ``destination``,
        ``frames``, ``frames_with_color``, ``duration`` (s between the first and last depth image),
        ``seconds`` (wall time), ``frames_per_second`` (import speed), ``truncated`` and, for an
        MKV, ``recording`` (its modes), ``skipped_without_depth`` and ``dropped_at_cut``.
    Raises:
        CaptureError: the source is missing, unreadable or inconsistent (naming the file).
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, not {max_frames}")
    started = time.perf_counter()
    opened = _open_source(Path(source))
    total = opened.total if max_frames is None else min(opened.total, max_frames)
    with closing(opened.frames):
        frames: Iterable[RGBDFrame] = islice(opened.frames, max_frames)
        if progress is not None:
            frames = progress(frames, total)
        counts = _write_sequence(Path(destination), opened, frames, overwrite)
    seconds = time.perf_counter() - started
    summary = {
        "source": str(source),
        "kind": opened.kind,
        "destination": str(destination),
        **counts,
        "seconds": seconds,
        "frames_per_second": counts["frames"] / seconds if seconds > 0 else 0.0,
        "truncated": False,
        **opened.details,
        **opened.finish(),
    }
    return summary


def _write_sequence(
    destination: Path, opened: _Source, frames: Iterable[RGBDFrame], overwrite: bool
) -> dict[str, Any]:
    """Write ``frames`` (re-indexed from 0) as a sequence; counts and duration for the summary."""
    with_color, first, last = 0, None, None
    with SequenceWriter(
        destination, opened.calibration, color_format=opened.color_format, overwrite=overwrite
    ) as writer:
        for frame in frames:
            frame.index = writer.num_written
            writer.write(frame)
            with_color += frame.color is not None
            first = frame.depth_time if first is None else first
            last = frame.depth_time
    return {
        "frames": writer.num_written,
        "frames_with_color": with_color,
        "duration": 0.0 if first is None else last - first,
    }


def _open_source(source: Path) -> _Source:
    """Open ``source`` with the reader its kind needs; CaptureError if it does not exist."""
    if source.is_file():
        return _mkv_source(source)
    if source.is_dir() and (source / INDEX_FILE).is_file() and (source / CALIBRATION_FILE).is_file():
        return _sequence_source(source)
    if source.is_dir():
        return _folder_source(source)
    raise CaptureError(f"{source} does not exist; give an Azure Kinect .mkv file or a folder of images.")


def _mkv_source(path: Path) -> _Source:
    """An Azure Kinect recording as a source."""
    recording = MKVRecording(path)
    info = recording.info
    modes = {
        "depth_mode": info.depth_mode,
        "color_format": info.color_format,
        "color_resolution": info.color_resolution,
        "fps": info.fps,
        "serial": info.serial,
    }

    def finish() -> dict[str, Any]:
        stats = recording.stats
        return {
            "truncated": info.truncated,
            "skipped_without_depth": stats.without_depth,
            "dropped_at_cut": stats.dropped_at_cut,
        }

    return _Source(
        kind="mkv",
        calibration=recording.calibration,
        frames=recording.captures(),
        total=info.estimated_captures,
        details={"recording": modes},
        finish=finish,
    )


def _sequence_source(root: Path) -> _Source:
    """A sequence in our format as a source; PNG colour stays PNG."""
    reader = SequenceReader(root)
    png_color = any((root / "color").glob("*.png"))
    return _Source(
        kind="sequence",
        calibration=reader.calibration,
        frames=reader.frames(),
        total=len(reader),
        color_format="png" if png_color else "jpg",
    )


def _folder_source(root: Path) -> _Source:
    """A folder of depth/colour images as a source."""
    folder = ImageFolder(root)
    return _Source(kind="folder", calibration=folder.calibration, frames=folder.frames(), total=len(folder))
