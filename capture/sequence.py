"""The on-disk RGB-D sequence format: every source writes it, every stage reads it.

A sequence is a directory::

    <root>/
      calibration.json    both cameras and the depth→colour extrinsic (:class:`Calibration`)
      frames.json         the index, one entry per frame (below)
      depth/000000.png    (H, W) uint16 depth in millimetres, 0 = no measurement; depth-camera pixels
      color/000000.jpg    (H', W', 3) uint8 RGB in colour-camera pixels (.jpg or .png); absent for
                          frames without colour

``frames.json`` holds ``{"format": "rgbd2avatar-rgbd-sequence", "version": 1, "num_frames": F,
"frames": [{"index": i, "depth": "depth/000000.png", "depth_time": t, "color": "color/000000.jpg"
or null, "color_time": t or null}, ...]}``; times are seconds (float64: minutes of microsecond
device timestamps do not fit float32) on the device clock, frame indices run 0 … F−1.

:class:`SequenceWriter` writes into ``<root>.partial/`` and renames it to ``<root>`` when closed,
so a directory called ``<root>`` is always complete; a failed or interrupted write leaves no
sequence behind (and never a half-replaced old one). :class:`SequenceReader` streams frames one
at a time, never holding a whole recording in memory.

Cameras follow OpenCV: x right, y down, z forward, metres; pixel (u, v) has its centre at
integer coordinates (u, v), as in the Azure Kinect SDK's calibration.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from capture.errors import CaptureError
from capture.files import PathLike, read_image, read_json, write_image, write_json

FORMAT = "rgbd2avatar-rgbd-sequence"
FORMAT_VERSION = 1
CALIBRATION_FILE = "calibration.json"
INDEX_FILE = "frames.json"
PARTIAL_SUFFIX = ".partial"
DEPTH_SCALE = 0.001
"""Metres per depth-PNG unit: depth is always stored in millimetres."""

_DISTORTION_MODEL = "brown_conrady"
_DISTORTION_NAMES = ("k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6")


@dataclass(frozen=True)
class CameraIntrinsics:
    """A pinhole camera with Brown–Conrady distortion (OpenCV's 8-coefficient rational model).

    ``fx, fy, cx, cy`` in pixels; ``k1 … k6`` radial, ``p1, p2`` tangential coefficients, as the
    Azure Kinect reports them (its ``codx, cody`` are always 0 and ``metric_radius`` is not kept).
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    k1: float = 0.0
    k2: float = 0.0
    k3: float = 0.0
    k4: float = 0.0
    k5: float = 0.0
    k6: float = 0.0
    p1: float = 0.0
    p2: float = 0.0

    @property
    def K(self) -> np.ndarray:
        """(3, 3) float32 camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], np.float32)

    @property
    def dist(self) -> np.ndarray:
        """(8,) float32 distortion in OpenCV order: k1, k2, p1, p2, k3, k4, k5, k6."""
        return np.array([getattr(self, name) for name in _DISTORTION_NAMES], np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape (H, W)."""
        return self.height, self.width

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict (see the README's sequence format)."""
        distortion = {"model": _DISTORTION_MODEL} | {name: getattr(self, name) for name in _DISTORTION_NAMES}
        return {
            "width": self.width,
            "height": self.height,
            "fx": self.fx,
            "fy": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "distortion": distortion,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CameraIntrinsics:
        """Inverse of :meth:`to_json`; KeyError/TypeError/ValueError on malformed data."""
        distortion = dict(data["distortion"])
        if distortion.pop("model") != _DISTORTION_MODEL:
            raise ValueError(f"distortion model must be {_DISTORTION_MODEL!r}")
        pinhole = {name: float(data[name]) for name in ("fx", "fy", "cx", "cy")}
        coefficients = {name: float(distortion[name]) for name in _DISTORTION_NAMES}
        return cls(width=int(data["width"]), height=int(data["height"]), **pinhole, **coefficients)


@dataclass(frozen=True, eq=False)
class Calibration:
    """The cameras of one recording.

    Attributes:
        depth: depth-camera intrinsics (depth images are in its pixels).
        color: colour-camera intrinsics, ``None`` for depth-only recordings.
        depth_to_color: (4, 4) float32 rigid transform taking a point in depth-camera coordinates
            (metres) to colour-camera coordinates: ``x_color = T @ x_depth``.
        device, serial, source: free text, e.g. "Azure Kinect", its serial number, and what
            wrote the sequence ("pyk4a", "mkv-import", "synthetic", …).
    """

    depth: CameraIntrinsics
    color: CameraIntrinsics | None
    depth_to_color: np.ndarray = field(default_factory=lambda: np.eye(4, dtype=np.float32))
    device: str = ""
    serial: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        transform = np.asarray(self.depth_to_color, dtype=np.float32)
        if transform.shape != (4, 4) or not np.allclose(transform[3], [0.0, 0.0, 0.0, 1.0]):
            raise ValueError("depth_to_color must be a (4, 4) rigid transform with last row 0 0 0 1")
        object.__setattr__(self, "depth_to_color", transform)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Calibration):
            return NotImplemented
        same_arrays = np.array_equal(self.depth_to_color, other.depth_to_color)
        same_rest = (self.depth, self.color, self.device, self.serial, self.source) == (
            other.depth,
            other.color,
            other.device,
            other.serial,
            other.source,
        )
        return same_arrays and same_rest

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict, the content of ``calibration.json``."""
        return {
            "depth": self.depth.to_json(),
            "color": None if self.color is None else self.color.to_json(),
            "depth_to_color": self.depth_to_color.astype(float).tolist(),
            "depth_scale": DEPTH_SCALE,
            "device": self.device,
            "serial": self.serial,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        """Inverse of :meth:`to_json`; KeyError/TypeError/ValueError on malformed data."""
        if data["depth_scale"] != DEPTH_SCALE:
            raise ValueError(f"depth_scale must be {DEPTH_SCALE} (depth PNGs hold millimetres)")
        color = data["color"]
        return cls(
            depth=CameraIntrinsics.from_json(data["depth"]),
            color=None if color is None else CameraIntrinsics.from_json(color),
            depth_to_color=np.array(data["depth_to_color"], dtype=np.float32),
            device=str(data.get("device", "")),
            serial=str(data.get("serial", "")),
            source=str(data.get("source", "")),
        )

    def save(self, path: PathLike) -> None:
        """Write ``calibration.json`` content to ``path`` atomically."""
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: PathLike) -> Calibration:
        """Read a calibration file; :class:`CaptureError` naming it if missing or malformed."""
        data = read_json(path)
        try:
            return cls.from_json(data)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CaptureError(
                f"{path} is not a valid calibration ({type(error).__name__}: {error}); "
                "re-record or re-import the sequence."
            ) from None


@dataclass
class RGBDFrame:
    """One frame of a sequence.

    Attributes:
        index: position in the sequence, 0 … F−1.
        depth_mm: (H, W) uint16 depth in millimetres, 0 = no measurement.
        color: (H', W', 3) uint8 RGB in colour-camera pixels, or ``None``.
        depth_time: depth capture time in seconds (device clock).
        color_time: colour capture time in seconds, ``None`` without colour.
    """

    index: int
    depth_mm: np.ndarray
    color: np.ndarray | None
    depth_time: float
    color_time: float | None = None

    @property
    def depth_m(self) -> np.ndarray:
        """(H, W) float32 depth in metres, 0 = no measurement."""
        return self.depth_mm.astype(np.float32) * np.float32(DEPTH_SCALE)


class SequenceWriter:
    """Write a sequence frame by frame; the directory appears, complete, when :meth:`close` runs.

    Use as a context manager: on normal exit the sequence is closed (renamed into place), on an
    exception it is aborted (the partial directory is removed) and the exception propagates.
    A source that stops on Ctrl-C should catch ``KeyboardInterrupt`` itself and close normally.

    Args:
        root: the sequence directory to create (e.g. a workspace's ``recording/``). An empty
            directory is replaced; a non-empty one only with ``overwrite=True``, and only at
            :meth:`close`, so a failed write keeps the old sequence.
        calibration: the cameras; frames must match their image sizes.
        color_format: "jpg" (default, ~10× smaller) or "png" (lossless).
        jpeg_quality: JPEG quality, 1–95.
    """

    def __init__(
        self,
        root: PathLike,
        calibration: Calibration,
        *,
        color_format: str = "jpg",
        jpeg_quality: int = 95,
        overwrite: bool = False,
    ) -> None:
        if color_format not in ("jpg", "png"):
            raise ValueError(f"color_format must be 'jpg' or 'png', not {color_format!r}")
        self.root = Path(root)
        self.calibration = calibration
        self.color_format = color_format
        self.jpeg_quality = jpeg_quality
        self._check_target(overwrite)
        self.partial = self.root.with_name(self.root.name + PARTIAL_SUFFIX)
        shutil.rmtree(self.partial, ignore_errors=True)
        (self.partial / "depth").mkdir(parents=True)
        self._entries: list[dict[str, Any]] = []
        self._open = True

    def __enter__(self) -> SequenceWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def num_written(self) -> int:
        """Number of frames written so far."""
        return len(self._entries)

    def write(self, frame: RGBDFrame) -> None:
        """Append one frame; its ``index`` must equal :attr:`num_written`."""
        if not self._open:
            raise RuntimeError("SequenceWriter.write after close/abort")
        if frame.index != self.num_written:
            raise ValueError(f"frame index {frame.index} written out of order (expected {self.num_written})")
        self._check_frame(frame)
        name = f"{frame.index:06d}"
        depth_path = f"depth/{name}.png"
        write_image(self.partial / depth_path, frame.depth_mm)
        color_path = None
        if frame.color is not None:
            color_path = f"color/{name}.{self.color_format}"
            write_image(self.partial / color_path, frame.color, jpeg_quality=self.jpeg_quality)
        self._entries.append(
            {
                "index": frame.index,
                "depth": depth_path,
                "depth_time": float(frame.depth_time),
                "color": color_path,
                "color_time": None if frame.color is None else float(frame.color_time),
            }
        )

    def close(self) -> Path:
        """Write calibration and index, move the sequence into place; returns its root."""
        if not self._open:
            raise RuntimeError("SequenceWriter.close after close/abort")
        if not self._entries:
            self.abort()
            raise CaptureError(
                f"No frames were written to {self.root}; check that the source delivers frames."
            )
        self.calibration.save(self.partial / CALIBRATION_FILE)
        index = {"format": FORMAT, "version": FORMAT_VERSION, "num_frames": self.num_written}
        write_json(self.partial / INDEX_FILE, index | {"frames": self._entries}, indent=None)
        self._move_into_place()
        self._open = False
        return self.root

    def abort(self) -> None:
        """Discard everything written; the target directory is left as it was."""
        shutil.rmtree(self.partial, ignore_errors=True)
        self._open = False

    def _check_target(self, overwrite: bool) -> None:
        """CaptureError if ``root`` holds something that may not be replaced."""
        if self.root.is_dir() and any(self.root.iterdir()) and not overwrite:
            raise CaptureError(f"{self.root} already holds files; remove it or choose another directory.")
        if self.root.exists() and not self.root.is_dir():
            raise CaptureError(
                f"{self.root} is a file, not a directory; choose another path for the sequence."
            )

    def _check_frame(self, frame: RGBDFrame) -> None:
        """CaptureError naming the frame if its images do not match the calibration."""
        depth = frame.depth_mm
        if depth.dtype != np.uint16 or depth.shape != self.calibration.depth.shape:
            raise CaptureError(
                f"Frame {frame.index}: depth is {depth.dtype} {depth.shape}, but the calibration expects "
                f"uint16 {self.calibration.depth.shape}; fix the source's depth format or calibration."
            )
        if frame.color is None:
            return
        color_camera = self.calibration.color
        if color_camera is None:
            raise CaptureError(f"Frame {frame.index} has colour but the calibration has no colour camera.")
        expected = (*color_camera.shape, 3)
        if frame.color.dtype != np.uint8 or frame.color.shape != expected:
            raise CaptureError(
                f"Frame {frame.index}: colour is {frame.color.dtype} {frame.color.shape}, but the "
                f"calibration expects uint8 {expected}; fix the source's colour format or calibration."
            )
        if frame.color_time is None:
            raise ValueError(f"frame {frame.index} has colour but no color_time")

    def _move_into_place(self) -> None:
        """Rename the partial directory to ``root``, replacing an old sequence only after success."""
        if not self.root.exists():
            os.rename(self.partial, self.root)
            return
        old = self.root.with_name(self.root.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(self.root, old)
        os.rename(self.partial, self.root)
        shutil.rmtree(old)


class SequenceReader:
    """Read a sequence written by :class:`SequenceWriter` (any source).

    Opening reads only ``calibration.json`` and ``frames.json``; images are decoded when a frame
    is asked for. Iterating streams every frame in order.

    Raises:
        CaptureError: the directory, calibration or index is missing or malformed (naming it).
    """

    def __init__(self, root: PathLike) -> None:
        self.root = Path(root)
        self._check_root()
        self.calibration = Calibration.load(self.root / CALIBRATION_FILE)
        entries = self._read_index()
        self._depth_paths = [self._member(entry["depth"]) for entry in entries]
        self._color_paths = [
            None if entry["color"] is None else self._member(entry["color"]) for entry in entries
        ]
        self._depth_times = np.array([entry["depth_time"] for entry in entries], dtype=np.float64)
        self._color_times = np.array(
            [np.nan if entry["color_time"] is None else entry["color_time"] for entry in entries],
            dtype=np.float64,
        )

    def __len__(self) -> int:
        return len(self._depth_paths)

    def __iter__(self) -> Iterator[RGBDFrame]:
        return self.frames()

    @property
    def timestamps(self) -> np.ndarray:
        """(F,) float64 depth capture times in seconds: the frames' times."""
        return self._depth_times.copy()

    @property
    def color_timestamps(self) -> np.ndarray:
        """(F,) float64 colour capture times in seconds, NaN for frames without colour."""
        return self._color_times.copy()

    def frame(self, index: int, *, color: bool = True) -> RGBDFrame:
        """Decode frame ``index`` (negative counts from the end); ``color=False`` skips the colour image."""
        index = range(len(self))[index]
        color_path = self._color_paths[index] if color else None
        return RGBDFrame(
            index=index,
            depth_mm=self._read_depth(self._depth_paths[index]),
            color=None if color_path is None else self._read_color(color_path),
            depth_time=float(self._depth_times[index]),
            color_time=None if color_path is None else float(self._color_times[index]),
        )

    def frames(self, indices: Iterable[int] | None = None, *, color: bool = True) -> Iterator[RGBDFrame]:
        """Stream the frames at ``indices`` (default: all, in order), decoding one at a time."""
        for index in range(len(self)) if indices is None else indices:
            yield self.frame(index, color=color)

    def _check_root(self) -> None:
        if self.root.is_dir():
            return
        partial = self.root.with_name(self.root.name + PARTIAL_SUFFIX)
        if partial.is_dir():
            raise CaptureError(
                f"The recording {self.root} was interrupted ({partial} is incomplete); record it again."
            )
        raise CaptureError(f"RGB-D sequence {self.root} does not exist; record or import one first.")

    def _read_index(self) -> list[dict[str, Any]]:
        """The validated frame entries of ``frames.json``."""
        path = self.root / INDEX_FILE
        if not path.is_file():
            raise CaptureError(
                f"{path} is missing, so the sequence is incomplete; re-record or re-import it."
            )
        try:
            return _validated_entries(read_json(path), has_color_camera=self.calibration.color is not None)
        except (KeyError, TypeError, ValueError) as error:
            raise CaptureError(
                f"{path} is malformed ({error}); re-record or re-import the sequence."
            ) from None

    def _member(self, relative: str) -> Path:
        """Path of a file named in the index; CaptureError if it would lie outside the sequence."""
        path = Path(relative)
        if path.is_absolute() or ".." in path.parts:
            raise CaptureError(
                f"{self.root / INDEX_FILE} names {relative!r} outside the sequence; re-import it."
            )
        return self.root / path

    def _read_depth(self, path: Path) -> np.ndarray:
        depth = read_image(path)
        if depth.dtype != np.uint16 or depth.shape != self.calibration.depth.shape:
            raise CaptureError(
                f"{path} is {depth.dtype} {depth.shape}, not a 16-bit depth image of shape "
                f"{self.calibration.depth.shape}; re-record or re-import the sequence."
            )
        return depth

    def _read_color(self, path: Path) -> np.ndarray:
        color = read_image(path)
        expected = (*self.calibration.color.shape, 3)
        if color.dtype != np.uint8 or color.shape != expected:
            raise CaptureError(
                f"{path} is {color.dtype} {color.shape}, not an RGB image of shape {expected}; "
                "re-record or re-import the sequence."
            )
        return color


def _validated_entries(index: dict[str, Any], *, has_color_camera: bool) -> list[dict[str, Any]]:
    """Frame entries of a parsed ``frames.json``; KeyError/TypeError/ValueError when malformed."""
    if index["format"] != FORMAT or index["version"] != FORMAT_VERSION:
        raise ValueError(f"expected format {FORMAT!r} version {FORMAT_VERSION}")
    entries = index["frames"]
    if len(entries) != index["num_frames"] or not entries:
        raise ValueError(f"num_frames is {index['num_frames']} but {len(entries)} frames are listed")
    for position, entry in enumerate(entries):
        _validate_entry(entry, position, has_color_camera)
    return entries


def _validate_entry(entry: dict[str, Any], position: int, has_color_camera: bool) -> None:
    """ValueError/TypeError/KeyError unless ``entry`` is a well-formed index entry at ``position``."""
    if entry["index"] != position or not isinstance(entry["depth"], str):
        raise ValueError(f"entry {position} has index {entry['index']} or no depth file")
    float(entry["depth_time"])
    if entry["color"] is None:
        return
    if not has_color_camera or not isinstance(entry["color"], str):
        raise ValueError(f"frame {position} lists colour but the calibration has no colour camera")
    float(entry["color_time"])
