"""The RGB-D sequence format and the atomic file helpers it is written with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from capture.errors import CaptureError
from capture.files import (
    atomic_path,
    load_npz,
    read_image,
    read_json,
    save_npz,
    sha256_file,
    write_bytes,
    write_image,
    write_json,
)
from capture.sequence import Calibration, CameraIntrinsics, RGBDFrame, SequenceReader, SequenceWriter


def write_sequence(root: Path, calibration: Calibration, frames: list, **options) -> Path:
    with SequenceWriter(root, calibration, **options) as writer:
        for frame in frames:
            writer.write(frame)
    return root


# --- atomic writers -------------------------------------------------------------------------------


def test_atomic_path_leaves_nothing_on_exception(tmp_path):
    target = tmp_path / "out" / "result.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as temp:
        temp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert list(target.parent.iterdir()) == []


def test_atomic_path_keeps_old_file_on_exception(tmp_path):
    target = tmp_path / "result.json"
    write_json(target, {"run": 1})
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as temp:
        temp.write_text("{broken")
        raise KeyboardInterrupt
    assert read_json(target) == {"run": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_writers_round_trip(tmp_path):
    write_bytes(tmp_path / "a.bin", b"\x00\x01")
    write_json(tmp_path / "a.json", {"x": [1.5, None]})
    save_npz(tmp_path / "a.npz", points=np.arange(6, dtype=np.float32).reshape(2, 3))
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert read_json(tmp_path / "a.json") == {"x": [1.5, None]}
    assert np.array_equal(load_npz(tmp_path / "a.npz")["points"], np.arange(6).reshape(2, 3))
    assert (
        sha256_file(tmp_path / "a.bin") == "b413f47d13ee2fe6c845b2ee141af81de858df4ec549a58b7970bb96645bc8d2"
    )


def test_save_npz_refuses_object_arrays(tmp_path):
    with pytest.raises(TypeError, match="pickling"):
        save_npz(tmp_path / "a.npz", names=np.array([{"a": 1}], dtype=object))
    assert not list(tmp_path.iterdir())


def test_write_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "a.json", {"loss": float("nan")})
    assert not list(tmp_path.iterdir())


def test_16bit_png_is_bit_exact(tmp_path):
    depth = np.random.default_rng(1).integers(0, 65536, (7, 9), dtype=np.uint16)
    depth.flat[:3] = [0, 1, 65535]
    write_image(tmp_path / "d.png", depth)
    back = read_image(tmp_path / "d.png")
    assert back.dtype == np.uint16 and np.array_equal(back, depth)


def test_read_image_errors_name_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(CaptureError, match="bad.png"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(CaptureError, match="gone.png is missing"):
        read_image(tmp_path / "gone.png")


# --- sequences ------------------------------------------------------------------------------------


def test_calibration_json_round_trip(calibration, tmp_path):
    calibration.save(tmp_path / "calibration.json")
    assert Calibration.load(tmp_path / "calibration.json") == calibration
    assert calibration.depth.K.shape == (3, 3) and calibration.depth.K[0, 2] == np.float32(15.7)
    assert calibration.depth.dist.tolist() == pytest.approx(
        [0.51, -0.02, 1.2e-5, -7.3e-5, -0.003, 0.85, 0.12, -0.011]
    )


def test_round_trip_is_exact(calibration, make_frame, tmp_path):
    frames = [make_frame(i) for i in range(3)] + [make_frame(3, color=False)]
    root = write_sequence(tmp_path / "seq", calibration, frames, color_format="png")
    reader = SequenceReader(root)
    assert len(reader) == 4 and reader.calibration == calibration
    for written, read in zip(frames, reader, strict=True):
        assert read.index == written.index and read.depth_mm.dtype == np.uint16
        assert np.array_equal(read.depth_mm, written.depth_mm)
        assert read.depth_time == written.depth_time and read.color_time == written.color_time
        assert (read.color is None) == (written.color is None)
        if written.color is not None:
            assert np.array_equal(read.color, written.color)
    assert reader.timestamps.tolist() == [f.depth_time for f in frames]
    assert np.isnan(reader.color_timestamps[3]) and reader.color_timestamps[0] == frames[0].color_time


def test_reader_random_access_and_depth_only(calibration, make_frame, tmp_path):
    frames = [make_frame(i) for i in range(3)]
    reader = SequenceReader(write_sequence(tmp_path / "seq", calibration, frames))
    assert reader.frame(-1).index == 2
    assert [f.index for f in reader.frames([2, 0], color=False)] == [2, 0]
    assert reader.frame(1, color=False).color is None
    jpeg = reader.frame(0).color
    assert jpeg.shape == frames[0].color.shape and jpeg.dtype == np.uint8
    assert reader.frame(0).depth_m[0, 1] == pytest.approx(65.535)
    with pytest.raises(IndexError):
        reader.frame(3)


def test_failed_write_leaves_no_sequence(calibration, make_frame, tmp_path):
    root = tmp_path / "seq"
    with pytest.raises(RuntimeError), SequenceWriter(root, calibration) as writer:
        writer.write(make_frame(0))
        raise RuntimeError("camera unplugged")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_only_when_complete(calibration, make_frame, tmp_path):
    root = write_sequence(tmp_path / "seq", calibration, [make_frame(0)])
    with pytest.raises(CaptureError, match="already holds files"):
        SequenceWriter(root, calibration)
    with pytest.raises(RuntimeError), SequenceWriter(root, calibration, overwrite=True) as writer:
        writer.write(make_frame(0))
        raise RuntimeError
    assert len(SequenceReader(root)) == 1
    write_sequence(root, calibration, [make_frame(0), make_frame(1)], overwrite=True)
    assert len(SequenceReader(root)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]


def test_writer_checks_frames(calibration, make_frame, tmp_path):
    with SequenceWriter(tmp_path / "seq", calibration) as writer:
        with pytest.raises(CaptureError, match="expects uint16"):
            writer.write(RGBDFrame(0, np.zeros((5, 5), np.uint16), None, 0.0))
        with pytest.raises(ValueError, match="out of order"):
            writer.write(make_frame(1))
        writer.write(make_frame(0))


def test_empty_sequence_is_an_error(calibration, tmp_path):
    with pytest.raises(CaptureError, match="No frames"), SequenceWriter(tmp_path / "seq", calibration):
        pass
    assert list(tmp_path.iterdir()) == []


def test_reader_errors_on_missing_calibration(calibration, make_frame, tmp_path):
    root = write_sequence(tmp_path / "seq", calibration, [make_frame(0)])
    (root / "calibration.json").unlink()
    with pytest.raises(CaptureError, match="calibration.json is missing"):
        SequenceReader(root)


def test_reader_errors_on_bad_calibration(calibration, make_frame, tmp_path):
    root = write_sequence(tmp_path / "seq", calibration, [make_frame(0)])
    data = json.loads((root / "calibration.json").read_text())
    data["depth"]["distortion"]["model"] = "kannala_brandt"
    (root / "calibration.json").write_text(json.dumps(data))
    with pytest.raises(CaptureError, match="calibration.json is not a valid calibration"):
        SequenceReader(root)


def test_reader_errors_on_corrupt_png(calibration, make_frame, tmp_path):
    root = write_sequence(tmp_path / "seq", calibration, [make_frame(0), make_frame(1)])
    (root / "depth" / "000001.png").write_bytes(b"not a png")
    reader = SequenceReader(root)
    reader.frame(0)
    with pytest.raises(CaptureError, match="000001.png"):
        reader.frame(1)


def test_reader_errors_on_wrong_depth_size(calibration, make_frame, tmp_path):
    root = write_sequence(tmp_path / "seq", calibration, [make_frame(0)])
    write_image(root / "depth" / "000000.png", np.zeros((4, 4), np.uint16))
    with pytest.raises(CaptureError, match="not a 16-bit depth image"):
        SequenceReader(root).frame(0)


def test_reader_errors_on_missing_or_bad_index(calibration, make_frame, tmp_path):
    root = write_sequence(tmp_path / "seq", calibration, [make_frame(0)])
    index = json.loads((root / "frames.json").read_text())
    index["frames"][0]["depth"] = "../../etc/passwd"
    (root / "frames.json").write_text(json.dumps(index))
    with pytest.raises(CaptureError, match="outside the sequence"):
        SequenceReader(root)
    index["num_frames"] = 5
    (root / "frames.json").write_text(json.dumps(index))
    with pytest.raises(CaptureError, match="frames.json is malformed"):
        SequenceReader(root)
    (root / "frames.json").unlink()
    with pytest.raises(CaptureError, match="frames.json is missing"):
        SequenceReader(root)


def test_reader_reports_interrupted_and_absent_recordings(calibration, make_frame, tmp_path):
    with pytest.raises(CaptureError, match="does not exist"):
        SequenceReader(tmp_path / "seq")
    writer = SequenceWriter(tmp_path / "seq", calibration)
    writer.write(make_frame(0))
    with pytest.raises(CaptureError, match="interrupted"):
        SequenceReader(tmp_path / "seq")
    writer.abort()


def test_depth_only_calibration(make_frame, tmp_path):
    depth = CameraIntrinsics(width=32, height=24, fx=25.0, fy=25.0, cx=16.0, cy=12.0)
    calibration = Calibration(depth, None)
    root = write_sequence(tmp_path / "seq", calibration, [make_frame(0, color=False)])
    reader = SequenceReader(root)
    assert reader.calibration.color is None and reader.frame(0).color is None
    with (
        pytest.raises(CaptureError, match="no colour camera"),
        SequenceWriter(tmp_path / "other", calibration) as w,
    ):
        w.write(make_frame(0))
