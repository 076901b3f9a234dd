"""Azure Kinect MKV reading and import: the real recording, and small recordings written here with PyAV.

The synthetic recordings mimic what the SDK's recorder writes (track names and K4A tags, depth as
``b16g`` big-endian 16-bit grey in a ``V_MS/VFW/FOURCC`` track, the real factory calibration as
attachment). FFmpeg's Matroska muxer writes MJPG as ``V_MJPEG`` and raw NV12/YUY2 with their
FOURCCs; for raw 16-bit grey and BGRA it writes no FOURCC, so the BITMAPINFOHEADER is patched
afterwards to ``b16g``/``BGRA``, as the SDK writes them. ``gray16le`` cannot be stored in a
Matroska video track that FFmpeg reads back, so its decoding is tested on frames directly.
"""

from __future__ import annotations

import dataclasses
import io
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from capture.calibration import azure_kinect_preset
from capture.errors import CaptureError
from capture.importer import import_recording
from capture.mkv import (
    MKVRecording,
    decode_color,
    decode_gray16,
    iter_captures,
    read_recording_calibration,
    read_recording_info,
    synchronise,
)
from capture.sequence import SequenceReader
from tests.shared_data import RECORDING, needs_recording

REAL_START_OFFSET_NS = 336_277_000
REAL_FIRST_PTS_US = 463_945
MS = Fraction(1, 1000)
COLOR_SHAPE = (720, 1280)
DEPTH_SHAPE = (576, 640)
START_OFFSET_NS = 250_000_000
_RAW_COLOR = {"BGRA": "bgra", "NV12": "nv12", "YUY2": "yuyv422"}
_RAW_TAGS = {"NV12": "NV12", "YUY2": "YUY2"}


# --------------------------------------------------------------------------------------------------
# Writing small Kinect-like recordings


def _calibration_json() -> bytes:
    """The factory calibration attachment of the real recording."""
    with av.open(str(RECORDING)) as container:
        return bytes(next(s for s in container.streams if s.type == "attachment").data)


def _color_image(index: int) -> np.ndarray:
    """(720, 1280, 3) uint8 smooth test colours, different per frame."""
    v, u = np.mgrid[0 : COLOR_SHAPE[0], 0 : COLOR_SHAPE[1]]
    red = (u * 200 // COLOR_SHAPE[1]).astype(np.uint8)
    green = (v * 200 // COLOR_SHAPE[0]).astype(np.uint8)
    blue = np.full(COLOR_SHAPE, 40 + 50 * index, np.uint8)
    return np.stack([red, green, blue], axis=-1)


def _depth_image(index: int) -> np.ndarray:
    """(576, 640) uint16 random depths in millimetres with holes, different per frame."""
    depth = np.random.default_rng(index).integers(200, 6000, DEPTH_SHAPE).astype(np.uint16)
    depth[::7, ::5] = 0
    return depth


def _video_stream(out, codec: str, pix_fmt: str, shape: tuple[int, int], fps: int, title: str, tags: dict):
    stream = out.add_stream(codec, rate=fps)
    stream.pix_fmt, stream.height, stream.width = pix_fmt, *shape
    stream.time_base = stream.codec_context.time_base = MS
    stream.metadata["title"] = title
    for name, value in tags.items():
        stream.metadata[name] = value
    return stream


def _mux_frame(out, stream, image: np.ndarray, in_format: str, time_ms: int) -> None:
    frame = av.VideoFrame.from_ndarray(image, format=in_format).reformat(format=stream.pix_fmt)
    frame.pts, frame.time_base = time_ms, MS
    out.mux(stream.encode(frame))


def _patch_fourccs(path: Path) -> None:
    """Give FFmpeg's raw 16-bit grey and BGRA tracks the FOURCCs the SDK writes (b16g, BGRA)."""
    data = path.read_bytes()
    for (height, width), bits, fourcc in ((DEPTH_SHAPE, 16, b"b16g"), (COLOR_SHAPE, 32, b"BGRA")):
        ffmpeg_header = struct.pack("<IiiHHI", 40, width, -height, 1, bits, 0)
        data = data.replace(ffmpeg_header, struct.pack("<IiiHH", 40, width, height, 1, bits) + fourcc)
    path.write_bytes(data)


def write_kinect_mkv(
    path: Path,
    color_format: str | None = "MJPG",
    *,
    frames: int = 3,
    fps: int = 5,
    depth_delay_ms: int = 0,
    drop_color: tuple[int, ...] = (),
    drop_depth: tuple[int, ...] = (),
    depth: bool = True,
    depth_mode: str = "NFOV_UNBINNED",
    calibration: bool = True,
) -> Path:
    """Write a small Azure-Kinect-like recording; frame i's colour is exposed at 100 ms + i periods
    (file time), its depth ``depth_delay_ms`` later."""
    period_ms = 1000 // fps
    with av.open(str(path), "w", format="matroska", options={"allow_raw_vfw": "1"}) as out:
        out.metadata.update(
            {
                "K4A_DEPTH_DELAY_NS": str(depth_delay_ms * 1_000_000),
                "K4A_START_OFFSET_NS": str(START_OFFSET_NS),
                "K4A_DEVICE_SERIAL_NUMBER": "000123456789",
                "K4A_WIRED_SYNC_MODE": "STANDALONE",
            }
        )
        streams = {}
        if color_format == "MJPG":
            tags = {"K4A_COLOR_TRACK": "1", "K4A_COLOR_MODE": "MJPG_720P"}
            streams["color"] = _video_stream(out, "mjpeg", "yuvj422p", COLOR_SHAPE, fps, "COLOR", tags)
        elif color_format is not None:
            tags = {"K4A_COLOR_TRACK": "1", "K4A_COLOR_MODE": f"{color_format}_720P"}
            streams["color"] = _video_stream(
                out, "rawvideo", _RAW_COLOR[color_format], COLOR_SHAPE, fps, "COLOR", tags
            )
            if color_format in _RAW_TAGS:
                streams["color"].codec_context.codec_tag = _RAW_TAGS[color_format]
        if depth:
            tags = {"K4A_DEPTH_TRACK": "2", "K4A_DEPTH_MODE": depth_mode}
            streams["depth"] = _video_stream(out, "rawvideo", "gray16be", DEPTH_SHAPE, fps, "DEPTH", tags)
        if calibration:
            out.add_attachment("calibration.json", "application/octet-stream", _calibration_json())
        for index in range(frames):
            time_ms = 100 + index * period_ms
            if "color" in streams and index not in drop_color:
                _mux_frame(out, streams["color"], _color_image(index), "rgb24", time_ms)
            if "depth" in streams and index not in drop_depth:
                _mux_frame(out, streams["depth"], _depth_image(index), "gray16be", time_ms + depth_delay_ms)
        for stream in streams.values():
            out.mux(stream.encode())
    _patch_fourccs(path)
    return path


def _cut(path: Path, size: int, name: str) -> Path:
    """A copy of the first ``size`` bytes of ``path``."""
    cut = path.with_name(name)
    cut.write_bytes(path.read_bytes()[:size])
    return cut


def _packets(path: Path, stream_index: int) -> list[tuple[int, bytes]]:
    """(file position, payload) of one stream's packets."""
    with av.open(str(path)) as container:
        stream = container.streams[stream_index]
        return [(packet.pos, bytes(packet)) for packet in container.demux(stream) if packet.size]


def _assert_nothing_at(destination: Path) -> None:
    assert not destination.exists()
    assert not destination.with_name(destination.name + ".partial").exists()


# --------------------------------------------------------------------------------------------------
# The real recording


@needs_recording
def test_real_recording_info():
    info = read_recording_info(RECORDING)
    assert (info.depth_mode, info.color_format, info.color_resolution, info.ir_mode) == (
        "nfov_unbinned",
        "MJPG",
        "720p",
        "ACTIVE",
    )
    assert info.fps == 5.0 and info.frame_period_ns == 200_000_000
    assert info.depth_delay_ns == 0 and info.start_offset_ns == REAL_START_OFFSET_NS
    assert info.serial == "001514394512" and info.wired_sync_mode == "STANDALONE"
    assert (info.color_firmware, info.depth_firmware) == ("1.6.110", "1.6.79")
    assert info.tracks == ("COLOR", "DEPTH", "IR", "IMU")
    assert not info.truncated and info.estimated_captures == 1


@needs_recording
def test_real_calibration_is_the_preset():
    calibration = read_recording_calibration(RECORDING)
    assert calibration == dataclasses.replace(azure_kinect_preset(), source="mkv-import")


@needs_recording
def test_real_depth_track_is_big_endian():
    with av.open(str(RECORDING)) as container:
        depth = next(s for s in container.streams if s.metadata.get("title") == "DEPTH")
        assert depth.codec_context.pix_fmt == "gray16be"
        packet = next(p for p in container.demux(depth) if p.size)
        decoded = decode_gray16(packet.decode()[0])
    raw = bytes(packet)
    assert np.array_equal(decoded, np.frombuffer(raw, ">u2").reshape(DEPTH_SHAPE))
    assert not np.array_equal(decoded, np.frombuffer(raw, "<u2").reshape(DEPTH_SHAPE))


@needs_recording
def test_real_captures():
    frames = list(iter_captures(RECORDING, ir=True))
    assert len(frames) == 1  # the file holds one capture (one colour, depth, IR and IMU block each)
    frame = frames[0]
    device_time = (REAL_FIRST_PTS_US * 1000 + REAL_START_OFFSET_NS) / 1e9
    assert frame.depth_time == frame.color_time == frame.ir_time == pytest.approx(device_time, abs=1e-9)
    depth = frame.depth_mm
    assert depth.dtype == np.uint16 and depth.shape == DEPTH_SHAPE
    valid = depth[depth > 0]
    assert valid.size > 0.7 * depth.size
    p1, median, p99 = np.percentile(valid, [1, 50, 99])
    assert 150 < p1 and 200 < median < 1500 and p99 < 2500  # a desk 0.2–1.5 m away, a wall behind
    assert frame.ir.dtype == np.uint16 and frame.ir.shape == DEPTH_SHAPE
    assert frame.color.dtype == np.uint8 and frame.color.shape == (*COLOR_SHAPE, 3)
    jpeg = _packets(RECORDING, 0)[0][1]
    reference = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    assert np.abs(frame.color.astype(int) - reference).mean() < 2.0


@needs_recording
def test_real_import_round_trip(tmp_path):
    destination = tmp_path / "subject" / "recording"
    summary = import_recording(RECORDING, destination)
    assert summary["kind"] == "mkv" and summary["frames"] == summary["frames_with_color"] == 1
    assert summary["recording"]["depth_mode"] == "nfov_unbinned" and not summary["truncated"]
    reader = SequenceReader(destination)
    expected = next(iter_captures(RECORDING))
    assert reader.calibration == read_recording_calibration(RECORDING)
    frame = reader.frame(0)
    assert np.array_equal(frame.depth_mm, expected.depth_mm)
    assert np.abs(frame.color.astype(int) - expected.color).mean() < 2.0
    assert reader.timestamps[0] == expected.depth_time and reader.color_timestamps[0] == expected.color_time


@needs_recording
def test_real_recording_cut_in_half_has_no_complete_capture(tmp_path):
    cut = _cut(RECORDING, RECORDING.stat().st_size // 2, "half.mkv")
    recording = MKVRecording(cut)
    assert recording.info.truncated and recording.calibration == read_recording_calibration(RECORDING)
    destination = tmp_path / "recording"
    with pytest.raises(CaptureError, match="truncated and holds no complete capture"):
        import_recording(cut, destination)
    _assert_nothing_at(destination)


# --------------------------------------------------------------------------------------------------
# Synthetic recordings: colour formats, depth, timing, pairing


@needs_recording
@pytest.mark.parametrize(
    ("color_format", "tolerance"), [("MJPG", 2.0), ("BGRA", 0.0), ("NV12", 2.5), ("YUY2", 3.0)]
)
def test_color_formats(tmp_path, color_format, tolerance):
    path = write_kinect_mkv(tmp_path / f"{color_format}.mkv", color_format)
    recording = MKVRecording(path)
    assert recording.info.color_format == color_format and recording.info.color_resolution == "720p"
    frames = list(recording.captures())
    assert [f.index for f in frames] == [0, 1, 2]
    for i, frame in enumerate(frames):
        assert frame.color.dtype == np.uint8 and frame.color.shape == (*COLOR_SHAPE, 3)
        assert np.abs(frame.color.astype(int) - _color_image(i)).mean() <= tolerance
        assert np.array_equal(frame.depth_mm, _depth_image(i))
    times = np.array([f.depth_time for f in frames])
    assert np.allclose(np.diff(times), 0.2) and times[0] == pytest.approx(0.1 + START_OFFSET_NS / 1e9)


def test_decode_gray16_both_byte_orders():
    depth = _depth_image(0)
    for pix_fmt in ("gray16be", "gray16le"):
        decoded = decode_gray16(av.VideoFrame.from_ndarray(depth, format=pix_fmt))
        assert decoded.dtype == np.uint16 and np.array_equal(decoded, depth)
    with pytest.raises(ValueError, match="16-bit greyscale"):
        decode_gray16(av.VideoFrame.from_ndarray(_color_image(0), format="rgb24"))


@pytest.mark.parametrize("pix_fmt", ["yuvj422p", "bgra", "nv12", "yuyv422"])
def test_decode_color_from_any_pixel_format(pix_fmt):
    # Two 8-bit conversions (RGB → YUV here, YUV → RGB in decode_color) with FFmpeg's fast rounding.
    frame = av.VideoFrame.from_ndarray(_color_image(1), format="rgb24").reformat(format=pix_fmt)
    assert np.abs(decode_color(frame).astype(int) - _color_image(1)).mean() < 3.0


def test_raw_yuv_colour_is_bt601_limited_range():
    # Pure red in BT.601 limited range (the SDK's libyuv NV12ToARGB/YUY2ToARGB): Y 81, Cb 90, Cr 240.
    # BT.709 would turn it into (255, 24, 0).
    height, width = 8, 16
    yuy2 = av.VideoFrame(width, height, "yuyv422")
    yuy2.planes[0].update(np.tile(np.array([81, 90, 81, 240], np.uint8), width // 2 * height).tobytes())
    nv12 = av.VideoFrame(width, height, "nv12")
    nv12.planes[0].update(np.full(width * height, 81, np.uint8).tobytes())
    nv12.planes[1].update(np.tile(np.array([90, 240], np.uint8), width * height // 4).tobytes())
    for frame in (yuy2, nv12):
        assert np.abs(decode_color(frame).astype(int) - [255, 0, 0]).max() <= 4


@needs_recording
def test_depth_delay_pairs_the_right_images(tmp_path):
    # Depth 150 ms after colour at 5 fps: without the delay, depth i would pair with colour i + 1.
    path = write_kinect_mkv(tmp_path / "delay.mkv", "MJPG", frames=3, depth_delay_ms=150)
    frames = list(iter_captures(path))
    assert len(frames) == 3
    for i, frame in enumerate(frames):
        assert frame.depth_time - frame.color_time == pytest.approx(0.150)
        assert np.abs(frame.color.astype(int) - _color_image(i)).mean() < 2.0


@needs_recording
def test_dropped_images(tmp_path):
    path = write_kinect_mkv(tmp_path / "drops.mkv", "NV12", frames=4, drop_color=(1,), drop_depth=(2,))
    recording = MKVRecording(path)
    frames = list(recording.captures())
    assert [f.color is not None for f in frames] == [True, False, True]
    assert all(np.array_equal(f.depth_mm, _depth_image(i)) for f, i in zip(frames, (0, 1, 3), strict=True))
    assert recording.stats.without_depth == 1 and recording.stats.captures == 3
    assert list(recording.captures(color=False))[1].color is None


def test_synchronise_follows_the_sdk_rule():
    # Images within half a period (strictly) of the earliest pending one form a capture.
    items = [
        ("c", 0, "c0"),
        ("d", 10, "d0"),
        ("c", 200, "c1"),
        ("d", 299, "d1"),
        ("d", 400, "d2"),
        ("c", 600, "c3"),
    ]
    captures = list(synchronise(items, ("c", "d"), period_ns=200))
    assert [sorted(payload for _, payload in capture.values()) for capture in captures] == [
        ["c0", "d0"],
        ["c1", "d1"],
        ["d2"],
        ["c3"],
    ]
    assert captures[1] == {"c": (200, "c1"), "d": (299, "d1")}
    delayed = list(synchronise([("c", 0, "c0"), ("d", 150, "d0")], ("c", "d"), 200, {"c": 150}))
    assert delayed == [{"c": (0, "c0"), "d": (150, "d0")}]


def test_synchronise_gives_up_on_a_track_after_the_window():
    items = [("d", t, f"d{t}") for t in range(0, 10_000, 100)]  # colour never arrives
    generator = synchronise(items, ("c", "d"), period_ns=100, window_ns=1_000)
    first = next(generator)
    assert first == {"d": (0, "d0")}
    assert len(list(generator)) == 99


# --------------------------------------------------------------------------------------------------
# Truncated, damaged and unsupported files


@needs_recording
def test_truncated_recording_imports_its_complete_captures(tmp_path):
    path = write_kinect_mkv(tmp_path / "full.mkv", "MJPG", frames=4)
    last_depth_pos, last_depth = _packets(path, 1)[-1]
    cut = _cut(path, last_depth_pos + len(last_depth) // 2, "cut.mkv")
    recording = MKVRecording(cut)
    assert recording.info.truncated and not MKVRecording(path).info.truncated
    frames = list(recording.captures())
    assert len(frames) == 3 and recording.stats.dropped_at_cut == 1
    summary = import_recording(cut, tmp_path / "recording")
    assert summary["truncated"] and summary["frames"] == 3 and summary["dropped_at_cut"] == 1
    assert len(SequenceReader(tmp_path / "recording")) == 3


@needs_recording
def test_undecodable_image_leaves_nothing_behind(tmp_path):
    path = write_kinect_mkv(tmp_path / "damaged.mkv", "MJPG", frames=3)
    data = bytearray(path.read_bytes())
    _, jpeg = _packets(path, 0)[1]
    start = data.find(jpeg)
    data[start : start + len(jpeg)] = bytes(len(jpeg))
    path.write_bytes(bytes(data))
    destination = tmp_path / "recording"
    with pytest.raises(CaptureError, match="COLOR image at 0.55.* does not decode"):
        import_recording(path, destination)
    _assert_nothing_at(destination)


def test_not_a_matroska_file(tmp_path):
    for name, content in (("notes.mkv", b"hello, not a video\n"), ("ebml.mkv", b"\x1a\x45\xdf\xa3\x80")):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CaptureError, match=f"{name}.*not"):
            read_recording_info(path)
        _assert_nothing_at(tmp_path / "recording")
        with pytest.raises(CaptureError):
            import_recording(path, tmp_path / "recording")
    with pytest.raises(CaptureError, match="does not exist"):
        read_recording_info(tmp_path / "missing.mkv")


@needs_recording
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"depth": False}, "no DEPTH track"),
        ({"depth_mode": "NFOV_4x4BINNED"}, "depth mode 'NFOV_4x4BINNED'"),
        ({"depth_mode": "WFOV_UNBINNED"}, "depth track is 640×576, not the 1024×1024"),
        ({"calibration": False}, "no calibration.json attachment"),
    ],
)
def test_unsupported_recordings(tmp_path, options, message):
    path = write_kinect_mkv(tmp_path / "bad.mkv", "MJPG", frames=1, **options)
    with pytest.raises(CaptureError, match=message):
        MKVRecording(path)
    with pytest.raises(CaptureError, match=message):
        import_recording(path, tmp_path / "recording")
    _assert_nothing_at(tmp_path / "recording")


# --------------------------------------------------------------------------------------------------
# Import options


@needs_recording
def test_import_max_frames_and_progress(tmp_path):
    path = write_kinect_mkv(tmp_path / "rec.mkv", "BGRA", frames=4)
    seen = {}

    def progress(frames, total):
        seen["total"] = total
        for frame in frames:
            seen.setdefault("frames", []).append(frame.index)
            yield frame

    summary = import_recording(path, tmp_path / "recording", max_frames=2, progress=progress)
    assert summary["frames"] == 2 and seen == {"total": 2, "frames": [0, 1]}
    assert len(SequenceReader(tmp_path / "recording")) == 2
    with pytest.raises(CaptureError, match="already holds files"):
        import_recording(path, tmp_path / "recording")
    assert import_recording(path, tmp_path / "recording", overwrite=True)["frames"] == 4


@needs_recording
def test_interrupted_import_leaves_nothing_behind(tmp_path):
    path = write_kinect_mkv(tmp_path / "rec.mkv", "MJPG", frames=3)

    def interrupt_after_one(frames, total):
        for frame in frames:
            yield frame
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_recording(path, tmp_path / "recording", progress=interrupt_after_one)
    _assert_nothing_at(tmp_path / "recording")
