"""Read a folder of depth and colour images with their camera intrinsics, as RGB-D frames.

Expected layout::

    <folder>/
      intrinsics.json      the cameras (below); a ``calibration.json`` in the sequence format's
                           schema (README, "RGB-D sequence format") is read the same way
      depth/*.png          one 16-bit greyscale PNG per frame, depth-camera pixels, 0 = no
                           measurement, in millimetres (or in ``depth_scale`` metres per unit)
      color/*.jpg|.jpeg|.png   optional: 8-bit colour images (RGB, grey or RGBA), colour-camera pixels
      timestamps.txt       optional: one line per depth image, its time in seconds; an optional
                           second number is the colour image's time (blank and ``#`` lines skipped)

Frames are the depth images in natural order of their names (``frame2`` before ``frame10``).
Colour images are matched to depth images **by stem** when every colour stem is also a depth stem
(depth images without a colour image of the same stem get no colour), otherwise **by sorted
order**, which needs as many colour as depth images. Times come from ``timestamps.txt``, else are
``index / fps``.

``intrinsics.json`` — the sequence format's calibration, or a simple pinhole form::

    {"width": 640, "height": 576, "fx": 504.2, "fy": 504.3, "cx": 321.5, "cy": 330.1,
     "distortion": [k1, k2, p1, p2, k3, k4, k5, k6],   optional, OpenCV order: 4, 5 or 8 numbers,
                                                       or a dict of named coefficients
     "color": {"width": ..., "fx": ..., ...},          optional: a separate colour camera
     "depth_to_color": [[4 × 4]],                      optional, metres (default identity)
     "depth_scale": 0.001,                             optional: metres per depth-PNG unit
     "fps": 30}                                        optional: frame rate without timestamps.txt

Cameras may also be given as ``{"depth": {...}, "color": {...}}``. Without a colour camera, colour
images must be registered to the depth camera: same size, and they get the depth intrinsics.
Pixel centres are at integer coordinates (OpenCV), as everywhere in the project.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from capture.errors import CaptureError
from capture.files import PathLike, read_image, read_json
from capture.sequence import CALIBRATION_FILE, DEPTH_SCALE, Calibration, CameraIntrinsics, RGBDFrame

INTRINSICS_FILES = ("intrinsics.json", CALIBRATION_FILE)
"""Names the camera file may have, in order of preference."""
TIMESTAMPS_FILE = "timestamps.txt"
DEPTH_DIR, COLOR_DIR = "depth", "color"
DEFAULT_FPS = 30.0
COLOR_SUFFIXES = (".jpg", ".jpeg", ".png")

_OPENCV_ORDER = ("k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6")
_DISTORTION_MODELS = ("brown_conrady", "opencv")


class ImageFolder:
    """A folder of depth (+ colour) images laid out as the module docstring describes.

    Opening lists the images, reads the cameras and timestamps and checks the first frame;
    frames are decoded one at a time when iterated.

    Attributes:
        root: the folder.
        calibration: its cameras (``source="folder-import"``).
        fps: frame rate used for times without ``timestamps.txt``.
    Raises:
        CaptureError: a missing or malformed intrinsics file, no depth images, colour images that
            cannot be matched, a timestamps file of the wrong length, or a first frame that does
            not match the intrinsics (naming the file and the fix).
    """

    def __init__(self, root: PathLike) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise CaptureError(f"{self.root} is not a folder; give a folder of depth/ and color/ images.")
        camera_file = _camera_file(self.root)
        data = read_json(camera_file)
        self.calibration, self._depth_scale, self.fps = _parse_cameras(camera_file, data)
        self._depth_paths = _depth_images(self.root)
        self._color_paths = _matched_color_images(self.root, self._depth_paths)
        if self.calibration.color is None and any(path is not None for path in self._color_paths):
            self.calibration = replace(self.calibration, color=self.calibration.depth)
        self._times = _frame_times(self.root, len(self._depth_paths), self.fps)
        self.frame(0)

    def __len__(self) -> int:
        return len(self._depth_paths)

    def __iter__(self) -> Iterator[RGBDFrame]:
        return self.frames()

    def frames(self) -> Iterator[RGBDFrame]:
        """Stream every frame in order, decoding one at a time."""
        for index in range(len(self)):
            yield self.frame(index)

    def frame(self, index: int) -> RGBDFrame:
        """Decode frame ``index``; CaptureError naming an image that does not fit the cameras."""
        color_path = self._color_paths[index]
        depth_time, color_time = self._times[index]
        return RGBDFrame(
            index=index,
            depth_mm=self._read_depth(self._depth_paths[index]),
            color=None if color_path is None else self._read_color(color_path),
            depth_time=float(depth_time),
            color_time=None if color_path is None else float(color_time),
        )

    def _read_depth(self, path: Path) -> np.ndarray:
        """(H, W) uint16 millimetres of one depth PNG, checked against the depth camera."""
        depth = read_image(path)
        if depth.dtype != np.uint16 or depth.ndim != 2:
            raise CaptureError(
                f"{path} is an 8-bit or colour image; depth images must be 16-bit greyscale PNGs "
                "(millimetres, or set depth_scale in intrinsics.json)."
            )
        if depth.shape != self.calibration.depth.shape:
            raise CaptureError(
                f"{path} is {depth.shape[1]}×{depth.shape[0]}, but the intrinsics say "
                f"{self.calibration.depth.width}×{self.calibration.depth.height}; fix intrinsics.json."
            )
        return _to_millimetres(depth, self._depth_scale)

    def _read_color(self, path: Path) -> np.ndarray:
        """(H', W', 3) uint8 RGB of one colour image, checked against the colour camera."""
        image = read_image(path)
        if image.dtype != np.uint8:
            raise CaptureError(f"{path} is a 16-bit image; colour images must have 8 bits per channel.")
        rgb = _as_rgb(image)
        if rgb.shape[:2] != self.calibration.color.shape:
            raise CaptureError(
                f"{path} is {rgb.shape[1]}×{rgb.shape[0]}, but the colour camera is "
                f"{self.calibration.color.width}×{self.calibration.color.height}; fix intrinsics.json "
                '(give a "color" camera for colour images not registered to depth).'
            )
        return rgb


def read_folder_calibration(root: PathLike) -> Calibration:
    """The cameras of an image folder (see :class:`ImageFolder`)."""
    return ImageFolder(root).calibration


def _camera_file(root: Path) -> Path:
    """The folder's intrinsics file; CaptureError if there is none."""
    for name in INTRINSICS_FILES:
        if (root / name).is_file():
            return root / name
    raise CaptureError(
        f"{root} has no intrinsics.json; add one with the depth camera's fx, fy, cx, cy, width and height."
    )


def _natural_key(path: Path) -> list[Any]:
    """Sort key that orders embedded numbers by value: frame2 < frame10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _depth_images(root: Path) -> list[Path]:
    """The depth PNGs in natural order; CaptureError if there are none."""
    paths = sorted((root / DEPTH_DIR).glob("*.png"), key=_natural_key)
    if not paths:
        raise CaptureError(
            f"{root / DEPTH_DIR} holds no .png depth images; put one 16-bit PNG per frame there."
        )
    return paths


def _matched_color_images(root: Path, depth_paths: list[Path]) -> list[Path | None]:
    """For each depth image its colour image (or None): by stem, else by sorted order."""
    color_dir = root / COLOR_DIR
    colors = (
        [p for p in color_dir.glob("*") if p.suffix.lower() in COLOR_SUFFIXES] if color_dir.is_dir() else []
    )
    if not colors:
        return [None] * len(depth_paths)
    by_stem = {path.stem: path for path in colors}
    depth_stems = {path.stem for path in depth_paths}
    if len(by_stem) == len(colors) and set(by_stem) <= depth_stems:
        return [by_stem.get(path.stem) for path in depth_paths]
    if len(colors) != len(depth_paths):
        raise CaptureError(
            f"{color_dir} holds {len(colors)} images but {root / DEPTH_DIR} holds {len(depth_paths)}, and "
            "their names do not match; give one colour image per depth image, or name them alike."
        )
    return sorted(colors, key=_natural_key)


def _frame_times(root: Path, count: int, fps: float) -> np.ndarray:
    """(F, 2) float64 depth and colour times: from timestamps.txt, else index / fps."""
    path = root / TIMESTAMPS_FILE
    if not path.is_file():
        times = np.arange(count, dtype=np.float64) / fps
        return np.stack([times, times], axis=1)
    rows = _timestamp_rows(path)
    if len(rows) != count:
        raise CaptureError(
            f"{path} has {len(rows)} times but there are {count} depth images; give one line per image."
        )
    times = np.array([row if len(row) == 2 else row * 2 for row in rows], dtype=np.float64)
    if np.any(np.diff(times[:, 0]) <= 0):
        raise CaptureError(f"{path}: times must increase from line to line; fix the file.")
    return times


def _timestamp_rows(path: Path) -> list[list[float]]:
    """The numbers on each non-blank, non-comment line (1 or 2 per line)."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split("#")[0].replace(",", " ").split()
        if not fields:
            continue
        try:
            row = [float(value) for value in fields]
        except ValueError:
            row = []
        if len(row) not in (1, 2) or not np.all(np.isfinite(row)):
            raise CaptureError(f"{path}, line {number}: expected one or two times in seconds, got {line!r}.")
        rows.append(row)
    return rows


def _parse_cameras(path: Path, data: Any) -> tuple[Calibration, float, float]:
    """(calibration, depth scale in metres per unit, fps) from intrinsics JSON; CaptureError if malformed."""
    try:
        depth = _camera(data["depth"] if "depth" in data else data)
        color = _camera(data["color"]) if data.get("color") is not None else None
        transform = np.array(data.get("depth_to_color", np.eye(4)), dtype=np.float32)
        calibration = Calibration(
            depth=depth,
            color=color,
            depth_to_color=transform,
            device=str(data.get("device", "")),
            serial=str(data.get("serial", "")),
            source="folder-import",
        )
        depth_scale, fps = float(data.get("depth_scale", DEPTH_SCALE)), float(data.get("fps", DEFAULT_FPS))
        if not (depth_scale > 0 and fps > 0):
            raise ValueError("depth_scale and fps must be positive")
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CaptureError(
            f"{path} is not a valid intrinsics file ({type(error).__name__}: {error}); give width, height, "
            "fx, fy, cx, cy (see capture/folder.py for the format)."
        ) from None
    return calibration, depth_scale, fps


def _camera(data: dict[str, Any]) -> CameraIntrinsics:
    """One camera from pinhole fields plus optional distortion (list in OpenCV order or dict)."""
    pinhole = {name: float(data[name]) for name in ("fx", "fy", "cx", "cy")}
    width, height = int(data["width"]), int(data["height"])
    if width <= 0 or height <= 0 or pinhole["fx"] <= 0 or pinhole["fy"] <= 0:
        raise ValueError("width, height, fx and fy must be positive")
    return CameraIntrinsics(width=width, height=height, **pinhole, **_distortion(data.get("distortion")))


def _distortion(value: Any) -> dict[str, float]:
    """Named distortion coefficients from None, a list in OpenCV order (4, 5 or 8) or a dict."""
    if value is None:
        return {}
    if isinstance(value, dict):
        if value.get("model", _DISTORTION_MODELS[0]) not in _DISTORTION_MODELS:
            raise ValueError(f"distortion model {value['model']!r} is not Brown–Conrady/OpenCV")
        return {name: float(value[name]) for name in _OPENCV_ORDER if name in value}
    coefficients = [float(v) for v in value]
    if len(coefficients) not in (4, 5, 8):
        raise ValueError(f"distortion needs 4, 5 or 8 coefficients in OpenCV order, got {len(coefficients)}")
    return dict(zip(_OPENCV_ORDER, coefficients, strict=False))


def _to_millimetres(depth: np.ndarray, depth_scale: float) -> np.ndarray:
    """(H, W) uint16 depth in millimetres from PNG units of ``depth_scale`` metres (rounded, clipped)."""
    if depth_scale == DEPTH_SCALE:
        return depth
    millimetres = np.rint(depth.astype(np.float64) * (depth_scale / DEPTH_SCALE))
    return np.clip(millimetres, 0, np.iinfo(np.uint16).max).astype(np.uint16)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB from grey (H, W), RGB or RGBA (alpha dropped)."""
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])
