"""Importing folders of depth/colour images and sequence folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from capture.errors import CaptureError
from capture.folder import ImageFolder
from capture.importer import import_recording
from capture.sequence import RGBDFrame, SequenceReader, SequenceWriter

DEPTH_SHAPE = (24, 32)
COLOR_SHAPE = (36, 48)
PINHOLE = {"width": 32, "height": 24, "fx": 25.0, "fy": 25.5, "cx": 15.5, "cy": 11.5}
COLOR_PINHOLE = {"width": 48, "height": 36, "fx": 40.0, "fy": 40.0, "cx": 23.5, "cy": 17.5}


def _depth(index: int) -> np.ndarray:
    """(24, 32) uint16 depth in millimetres with holes."""
    depth = np.random.default_rng(index).integers(300, 4000, DEPTH_SHAPE).astype(np.uint16)
    depth[::5, ::3] = 0
    return depth


def _color(index: int, shape: tuple[int, int] = COLOR_SHAPE) -> np.ndarray:
    """(H, W, 3) uint8 smooth RGB (JPEG keeps it within a few levels), different per frame."""
    v, u = np.mgrid[0 : shape[0], 0 : shape[1]]
    red, green = u * 200 // shape[1], v * 200 // shape[0]
    return np.stack([red, green, np.full(shape, 30 + 40 * index)], axis=-1).astype(np.uint8)


def make_folder(
    root: Path,
    count: int = 3,
    *,
    intrinsics: dict | None = None,
    depth_names: list[str] | None = None,
    color_names: list[str] | None = None,
    color_shape: tuple[int, int] = COLOR_SHAPE,
) -> Path:
    """A folder with depth/*.png, color/*.png (lossless, to compare exactly) and intrinsics.json."""
    depth_names = depth_names or [f"{i:04d}.png" for i in range(count)]
    color_names = [f"{i:04d}.png" for i in range(count)] if color_names is None else color_names
    (root / "depth").mkdir(parents=True)
    for i, name in enumerate(depth_names):
        Image.fromarray(_depth(i)).save(root / "depth" / name)
    if color_names:
        (root / "color").mkdir()
    for i, name in enumerate(color_names):
        Image.fromarray(_color(i, color_shape)).save(root / "color" / name)
    data = intrinsics if intrinsics is not None else PINHOLE | {"color": COLOR_PINHOLE, "fps": 10}
    (root / "intrinsics.json").write_text(json.dumps(data))
    return root


def _assert_nothing_at(destination: Path) -> None:
    assert not destination.exists()
    assert not destination.with_name(destination.name + ".partial").exists()


def test_folder_round_trip(tmp_path):
    source = make_folder(tmp_path / "images", 3)
    destination = tmp_path / "subject" / "recording"
    summary = import_recording(source, destination)
    assert summary["kind"] == "folder" and summary["frames"] == summary["frames_with_color"] == 3
    assert summary["duration"] == pytest.approx(0.2)
    reader = SequenceReader(destination)
    assert reader.calibration.depth.fx == 25.0 and reader.calibration.color.width == 48
    assert reader.calibration.source == "folder-import"
    assert np.allclose(reader.timestamps, [0.0, 0.1, 0.2])
    for i, frame in enumerate(reader):
        assert np.array_equal(frame.depth_mm, _depth(i))
        assert np.abs(frame.color.astype(int) - _color(i)).mean() < 3  # JPEG


def test_timestamps_file_and_distortion(tmp_path):
    intrinsics = PINHOLE | {"distortion": [0.1, -0.02, 0.001, 0.002], "color": COLOR_PINHOLE}
    source = make_folder(tmp_path / "images", 3, intrinsics=intrinsics)
    (source / "timestamps.txt").write_text("# depth colour\n1.0 1.01\n\n1.5, 1.52\n2.25\n")
    folder = ImageFolder(source)
    assert folder.calibration.depth.k1 == 0.1 and folder.calibration.depth.p2 == 0.002
    assert folder.calibration.depth.k3 == 0.0
    times = [(f.depth_time, f.color_time) for f in folder]
    assert times == [(1.0, 1.01), (1.5, 1.52), (2.25, 2.25)]


def test_match_by_stem_with_missing_colour(tmp_path):
    names = ["frame2.png", "frame10.png", "frame1.png"]
    source = make_folder(tmp_path / "images", 3, depth_names=names, color_names=["frame2.jpg", "frame10.jpg"])
    frames = list(ImageFolder(source))
    # Natural order: frame1 (depth written 3rd), frame2 (1st), frame10 (2nd).
    assert all(np.array_equal(f.depth_mm, _depth(i)) for f, i in zip(frames, (2, 0, 1), strict=True))
    assert [f.color is not None for f in frames] == [False, True, True]


def test_match_by_sorted_order(tmp_path):
    source = make_folder(
        tmp_path / "images", 2, depth_names=["d_0.png", "d_1.png"], color_names=["c_0.png", "c_1.png"]
    )
    frames = list(ImageFolder(source))
    assert all(np.array_equal(f.color, _color(i)) for i, f in enumerate(frames))


def test_registered_colour_and_our_calibration_schema(tmp_path):
    source = make_folder(tmp_path / "images", 2, intrinsics=PINHOLE, color_shape=DEPTH_SHAPE)
    folder = ImageFolder(source)
    assert folder.calibration.color == folder.calibration.depth
    assert np.array_equal(folder.calibration.depth_to_color, np.eye(4))
    (source / "intrinsics.json").unlink()
    folder.calibration.save(source / "calibration.json")
    assert ImageFolder(source).calibration == folder.calibration


def test_depth_scale(tmp_path):
    source = make_folder(tmp_path / "images", 1, intrinsics=PINHOLE | {"depth_scale": 0.0002}, color_names=[])
    frame = ImageFolder(source).frame(0)
    expected = np.rint(_depth(0) * 0.2).astype(np.uint16)
    assert np.array_equal(frame.depth_mm, expected) and frame.color is None


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            lambda root: Image.fromarray(np.zeros(DEPTH_SHAPE, np.uint8)).save(root / "depth" / "0000.png"),
            "8-bit",
        ),
        (
            lambda root: Image.fromarray(np.zeros((10, 10), np.uint16)).save(root / "depth" / "0000.png"),
            "10×10",
        ),
        (
            lambda root: Image.fromarray(_color(0, (5, 5))).save(root / "color" / "0000.png"),
            "colour camera is 48×36",
        ),
        (lambda root: (root / "intrinsics.json").unlink(), "no intrinsics.json"),
        (lambda root: (root / "intrinsics.json").write_text('{"fx": 1}'), "not a valid intrinsics file"),
        (lambda root: (root / "intrinsics.json").write_text("{"), "not valid JSON"),
        (lambda root: (root / "timestamps.txt").write_text("0.0\n0.1\n"), "2 times but there are 3"),
        (lambda root: (root / "timestamps.txt").write_text("0.0\n0.2\n0.1\n"), "must increase"),
        (lambda root: (root / "timestamps.txt").write_text("0.0\nsoon\n0.1\n"), "line 2"),
    ],
)
def test_folder_errors(tmp_path, setup, message):
    source = make_folder(tmp_path / "images", 3)
    setup(source)
    destination = tmp_path / "recording"
    with pytest.raises(CaptureError, match=message):
        import_recording(source, destination)
    _assert_nothing_at(destination)


def test_unmatched_colour_images(tmp_path):
    source = make_folder(tmp_path / "images", 3)
    (source / "color" / "0001.png").rename(source / "color" / "extra.png")
    (source / "color" / "0002.png").unlink()
    with pytest.raises(CaptureError, match="holds 2 images but .* holds 3, and their names do not match"):
        import_recording(source, tmp_path / "recording")
    _assert_nothing_at(tmp_path / "recording")


def test_bad_image_midway_leaves_nothing_behind(tmp_path):
    source = make_folder(tmp_path / "images", 3)
    Image.fromarray(np.zeros((10, 10), np.uint16)).save(source / "depth" / "0002.png")
    destination = tmp_path / "recording"
    with pytest.raises(CaptureError, match="0002.png is 10×10"):
        import_recording(source, destination)
    _assert_nothing_at(destination)


def test_missing_sources(tmp_path):
    with pytest.raises(CaptureError, match="does not exist"):
        import_recording(tmp_path / "nowhere", tmp_path / "recording")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "intrinsics.json").write_text(json.dumps(PINHOLE))
    with pytest.raises(CaptureError, match="no .png depth images"):
        import_recording(tmp_path / "empty", tmp_path / "recording")
    _assert_nothing_at(tmp_path / "recording")


@pytest.mark.parametrize("color_format", ["png", "jpg"])
def test_sequence_folder_is_copied(tmp_path, calibration, color_format):
    source = tmp_path / "source"
    with SequenceWriter(source, calibration, color_format=color_format) as writer:
        for i in range(3):
            color = _color(i, calibration.color.shape) if i != 1 else None
            depth = np.random.default_rng(i).integers(0, 3000, calibration.depth.shape).astype(np.uint16)
            writer.write(RGBDFrame(i, depth, color, depth_time=0.5 * i, color_time=0.5 * i + 0.01))
    summary = import_recording(source, tmp_path / "copy", max_frames=2)
    assert summary["kind"] == "sequence" and summary["frames"] == 2 and summary["frames_with_color"] == 1
    original, copy = SequenceReader(source), SequenceReader(tmp_path / "copy")
    assert copy.calibration == original.calibration and len(copy) == 2
    assert sorted(p.suffix for p in (tmp_path / "copy" / "color").iterdir()) == [f".{color_format}"]
    for a, b in zip(original.frames(range(2)), copy, strict=True):
        assert np.array_equal(a.depth_mm, b.depth_mm) and a.depth_time == b.depth_time
        assert (a.color is None) == (b.color is None)
    if color_format == "png":
        assert np.array_equal(original.frame(0).color, copy.frame(0).color)


def test_broken_sequence_folder(tmp_path, calibration):
    source = tmp_path / "source"
    with SequenceWriter(source, calibration) as writer:
        writer.write(RGBDFrame(0, np.zeros(calibration.depth.shape, np.uint16), None, depth_time=0.0))
    (source / "depth" / "000000.png").unlink()
    with pytest.raises(CaptureError, match="000000.png is missing"):
        import_recording(source, tmp_path / "copy")
    _assert_nothing_at(tmp_path / "copy")
