"""Atomic file writers and checked readers shared by every stage.

Every writer writes to a temporary file next to its target and renames it over the target
(``os.replace``, atomic on POSIX), so an interrupted run never leaves a half-written output:
the target is either the old file, the new file, or absent. Temporary files are named
``.tmp-<random>-<target name>``; they keep the target's extension, so format-sniffing writers
(PIL) pick the right format.

Readers raise :class:`~capture.errors.CaptureError` naming the file when it is missing or corrupt.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from capture.errors import CaptureError

TEMP_PREFIX = ".tmp-"
"""Name prefix of the temporary files that atomic writers rename over their targets."""

PathLike = str | os.PathLike

_HASH_CHUNK = 1 << 20
_PNG_16BIT_MODES = ("I;16", "I;16B", "I;16L")


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` when the block succeeds.

    The parent directory is created. If the block raises, the temporary file is removed and
    ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-{target.name}")
    try:
        yield temp
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as temp:
        temp.write_bytes(data)


def write_json(path: PathLike, data: Any, *, indent: int | None = 2) -> None:
    """Write JSON-able ``data`` to ``path`` atomically (strict JSON: NaN and infinities refused)."""
    text = json.dumps(data, indent=indent, allow_nan=False) + "\n"
    with atomic_path(path) as temp:
        temp.write_text(text, encoding="utf-8")


def read_json(path: PathLike) -> Any:
    """Parsed JSON content of ``path``; :class:`CaptureError` if missing or not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CaptureError(f"{path} is missing; re-create it (re-record or re-import the data).") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CaptureError(
            f"{path} is not valid JSON ({error}); re-create it (re-record or re-import the data)."
        ) from None


def save_npz(path: PathLike, **arrays: np.ndarray) -> None:
    """Save named arrays to a compressed ``.npz`` at ``path`` atomically; object arrays are refused."""
    arrays = {name: np.asarray(value) for name, value in arrays.items()}
    for name, value in arrays.items():
        if value.dtype == object:
            raise TypeError(f"save_npz: array {name!r} has dtype object, which would need pickling")
    with atomic_path(path) as temp, open(temp, "wb") as file:
        np.savez_compressed(file, allow_pickle=False, **arrays)


def load_npz(path: PathLike) -> dict[str, np.ndarray]:
    """All arrays of the ``.npz`` at ``path`` (no pickles); :class:`CaptureError` if missing/corrupt."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise CaptureError(f"{path} is missing; re-run the stage that writes it.") from None
    except (OSError, ValueError, EOFError) as error:
        raise CaptureError(
            f"{path} is not a readable .npz file ({error}); re-run the stage that writes it."
        ) from None


def write_image(
    path: PathLike, image: np.ndarray, *, jpeg_quality: int = 95, png_compress_level: int = 1
) -> None:
    """Write an image atomically; the format follows the extension (``.png``, ``.jpg``/``.jpeg``).

    Args:
        image: (H, W) uint8 grey, (H, W, 3) uint8 RGB, (H, W, 4) uint8 RGBA, or (H, W) uint16
            (16-bit PNG only, e.g. depth in millimetres; written and read back bit-exactly).
        jpeg_quality: JPEG quality, 1–95.
        png_compress_level: zlib level 0–9; 1 (fast) suits depth written during capture.
    """
    image = np.ascontiguousarray(image)
    suffix = Path(path).suffix.lower()
    _check_image(image, suffix)
    options = (
        {"quality": jpeg_quality} if suffix in (".jpg", ".jpeg") else {"compress_level": png_compress_level}
    )
    with atomic_path(path) as temp:
        Image.fromarray(image).save(temp, **options)


def _check_image(image: np.ndarray, suffix: str) -> None:
    """Raise ValueError unless ``image`` has a dtype and shape that ``suffix``'s format stores exactly."""
    if suffix not in (".png", ".jpg", ".jpeg"):
        raise ValueError(f"write_image: unsupported extension {suffix!r} (use .png, .jpg or .jpeg)")
    if image.dtype == np.uint16:
        if image.ndim != 2 or suffix != ".png":
            raise ValueError("write_image: uint16 images must be (H, W) and written as .png")
    elif image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise ValueError(
            f"write_image: expected uint8 (H, W[, 3|4]) or uint16 (H, W), got {image.dtype} {image.shape}"
        )
    elif image.ndim == 3 and image.shape[2] == 4 and suffix != ".png":
        raise ValueError("write_image: RGBA images must be written as .png")


def read_image(path: PathLike) -> np.ndarray:
    """Decode the image at ``path``.

    Returns:
        (H, W) uint16 for 16-bit greyscale PNGs, else uint8 (H, W) grey, (H, W, 3) RGB or
        (H, W, 4) RGBA. Other modes (palette, CMYK, …) are converted to RGB.
    Raises:
        CaptureError: the file is missing, truncated or not an image.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            return _image_array(image)
    except FileNotFoundError:
        raise CaptureError(f"{path} is missing; re-create it (re-record or re-import the data).") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise CaptureError(
            f"{path} is not a readable image ({error}); re-create it (re-record or re-import the data)."
        ) from None


def _image_array(image: Image.Image) -> np.ndarray:
    """Array of a loaded PIL image, keeping 16-bit greyscale as uint16."""
    if image.mode in _PNG_16BIT_MODES:
        return np.asarray(image).astype(np.uint16)
    if image.mode == "I":
        values = np.asarray(image)
        if values.min(initial=0) < 0 or values.max(initial=0) > np.iinfo(np.uint16).max:
            raise ValueError("32-bit integer image outside the 16-bit range")
        return values.astype(np.uint16)
    if image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGB")
    return np.asarray(image).copy()


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of the file at ``path``, read in 1 MiB chunks (constant memory for any size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
