"""Read Azure Kinect recordings (Matroska ``.mkv``) with PyAV, without the Azure Kinect SDK.

What a recording holds, after Microsoft's "Azure Kinect recording file format" page
(learn.microsoft.com/azure/kinect-dk/record-file-format) and the SDK's reader,
``src/record/internal/matroska_read.cpp`` (``parse_recording_config``, ``find_track``,
``convert_block_to_image``, ``get_capture``), which this module follows:

- **Tracks** are identified by tags, not by position: the track carrying tag ``K4A_COLOR_TRACK``
  (``K4A_DEPTH_TRACK``, ``K4A_IR_TRACK``, ``K4A_IMU_TRACK``) is the colour (depth, IR, IMU) track;
  without the tag, the track named ``COLOR`` (``DEPTH``, ``IR`` or the legacy ``DEPTH_IR``, ``IMU``).
  FFmpeg hands a track's tags and name to PyAV as that stream's ``metadata`` (``title`` = name).
- **Codecs**: COLOR is MJPG, NV12, YUY2 or BGRA (``V_MS/VFW/FOURCC``, the FOURCC in a
  BITMAPINFOHEADER); DEPTH and IR are ``b16g``, 16-bit greyscale **big-endian** (PyAV: ``gray16be``;
  ``gray16le`` from re-muxed files is accepted too), depth in millimetres, 0 = no measurement. Colour
  is decoded by FFmpeg whatever the codec and pixel format PyAV reports, and converted to RGB.
- **Recording tags**: ``K4A_COLOR_MODE`` (``<FORMAT>_<RESOLUTION>``, e.g. ``MJPG_720P``),
  ``K4A_DEPTH_MODE`` (``NFOV_UNBINNED`` …, also the legacy spelling ``NFOV_2x2BINNED``),
  ``K4A_IR_MODE`` (``ACTIVE``/``PASSIVE``), ``K4A_DEPTH_DELAY_NS``, ``K4A_WIRED_SYNC_MODE``,
  ``K4A_SUBORDINATE_DELAY_NS``, ``K4A_START_OFFSET_NS``, ``K4A_DEVICE_SERIAL_NUMBER``,
  ``K4A_COLOR_FIRMWARE_VERSION``, ``K4A_DEPTH_FIRMWARE_VERSION`` → :class:`RecordingInfo`. Like the
  SDK, the depth mode comes from its tag; the colour resolution from the tag or else the track size.
- **Calibration**: the attachment tagged ``K4A_CALIBRATION_FILE``, else the one named
  ``calibration.json``: the device's factory calibration, turned into a
  :class:`~capture.sequence.Calibration` for the recorded modes by
  :func:`~capture.calibration.calibration_from_factory`.
- **Timestamps**: a block's Matroska timestamp is the image's device timestamp *minus*
  ``K4A_START_OFFSET_NS`` (``convert_block_to_image`` adds the offset back; in the project's
  ``shared/data/azure_kinect/recording.mkv`` the IMU sample at file time 0 holds exactly the offset
  as its device timestamp). Frames here carry
  **device-clock seconds**, ``pts × time_base + start offset`` — the clock a live capture reports and
  the sequence format stores; subtract :attr:`RecordingInfo.start_offset` for seconds since the
  recording started.
- **Captures** (``get_capture``): images of different tracks belong to one capture when their
  *synchronisation* times lie within half a frame period of the earliest pending one. The
  synchronisation time is the file time shifted by the depth delay (``K4A_DEPTH_DELAY_NS``: depth is
  exposed that long after colour), which the SDK adds to the colour track when positive and to
  depth/IR when negative; adding it to colour always is the same up to a common shift.

Truncated files: the SDK's recorder writes the Matroska segment's size when it closes the file, so
a file shorter than its declared segment (or one whose size was never written) was cut short.
Such a file is still read: every complete capture is delivered, the last captures that lost an
image at the cut are dropped, and :attr:`RecordingInfo.truncated` says so (a warning is logged).
A truncated file without a single complete capture is a :class:`~capture.errors.CaptureError`, as
are files that are not Matroska, lack a depth track, record an unknown depth mode or lack the
calibration attachment.

Everything streams: packets are read one at a time and at most :data:`REORDER_WINDOW_NS` of them
are buffered to pair tracks, so a recording of any length decodes in constant memory.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import av
import numpy as np

from capture.calibration import (
    COLOR_RESOLUTIONS,
    DEPTH_MODES,
    calibration_from_factory,
    parse_factory_calibration,
)
from capture.errors import CaptureError
from capture.files import PathLike
from capture.sequence import Calibration, RGBDFrame

log = logging.getLogger(__name__)

COLOR, DEPTH, IR, IMU = "COLOR", "DEPTH", "IR", "IMU"
"""Track roles, named as the recording-format doc names the tracks."""

_TRACK_TAGS = {COLOR: "K4A_COLOR_TRACK", DEPTH: "K4A_DEPTH_TRACK", IR: "K4A_IR_TRACK", IMU: "K4A_IMU_TRACK"}
_TRACK_NAMES = {COLOR: ("COLOR",), DEPTH: ("DEPTH",), IR: ("IR", "DEPTH_IR"), IMU: ("IMU",)}
_CALIBRATION_TAG = "K4A_CALIBRATION_FILE"
_CALIBRATION_NAME = "calibration.json"
_GRAY16 = ("gray16be", "gray16le")
_K4A_COLOR_FORMATS = {"mjpeg": "MJPG", "bgra": "BGRA", "nv12": "NV12", "yuyv422": "YUY2"}
"""The SDK's colour format names by FFmpeg codec (MJPG) or pixel format (raw video)."""

REORDER_WINDOW_NS = 1_000_000_000
"""How far (ns) the file may run ahead of a track's missing image before the capture is completed
without it. The SDK's recorder writes 32 ms clusters in time order (``matroska_common.h``,
``MAX_CLUSTER_LENGTH_NS``), so 1 s is ample; it bounds the packets buffered for pairing."""

_NS = 1_000_000_000
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_EBML_DOCTYPE = 0x4282
_SEGMENT_ID = 0x18538067
_HEADER_BYTES = 4096

T = TypeVar("T")


@dataclass(frozen=True)
class RecordingInfo:
    """What an Azure Kinect recording holds and how it was recorded.

    Attributes:
        path: the ``.mkv`` file.
        depth_mode: a key of :data:`~capture.calibration.DEPTH_MODES`, e.g. ``"nfov_unbinned"``.
        color_format: ``"MJPG"``, ``"NV12"``, ``"YUY2"`` or ``"BGRA"``; None without colour track.
        color_resolution: a key of :data:`~capture.calibration.COLOR_RESOLUTIONS` (``"720p"``);
            None without colour track.
        ir_mode: ``"ACTIVE"`` or ``"PASSIVE"``; None without IR track.
        fps: camera frame rate (5, 15 or 30 for a real device).
        depth_delay_ns: how long after the colour image the depth image is exposed.
        start_offset_ns: device time of the recording's file time 0.
        wired_sync_mode: ``"STANDALONE"``, ``"MASTER"`` or ``"SUBORDINATE"``.
        subordinate_delay_ns: a subordinate's delay off its master.
        serial, color_firmware, depth_firmware: device serial number and firmware versions.
        tracks: roles of the tracks present, e.g. ``("COLOR", "DEPTH", "IR", "IMU")``.
        duration: seconds from file time 0 to the end of the recording, as its header says.
        first_time: file time (s) of the first depth image, from the header.
        truncated: the file was cut short (see the module docstring).
    """

    path: Path
    depth_mode: str
    color_format: str | None
    color_resolution: str | None
    ir_mode: str | None
    fps: float
    depth_delay_ns: int = 0
    start_offset_ns: int = 0
    wired_sync_mode: str = "STANDALONE"
    subordinate_delay_ns: int = 0
    serial: str = ""
    color_firmware: str = ""
    depth_firmware: str = ""
    tracks: tuple[str, ...] = ()
    duration: float = 0.0
    first_time: float = 0.0
    truncated: bool = False

    @property
    def start_offset(self) -> float:
        """``K4A_START_OFFSET_NS`` in seconds: device time = file time + this."""
        return self.start_offset_ns / _NS

    @property
    def frame_period_ns(self) -> int:
        """One frame period in nanoseconds."""
        return round(_NS / self.fps)

    @property
    def estimated_captures(self) -> int:
        """Captures the header's duration suggests (for progress bars; dropped frames make it less)."""
        return max(1, int((self.duration - self.first_time) * self.fps) + 1)


@dataclass
class KinectFrame(RGBDFrame):
    """An :class:`~capture.sequence.RGBDFrame` from a recording, with the IR image when asked for.

    Attributes:
        ir: (H, W) uint16 infrared brightness in depth-camera pixels, or None.
        ir_time: IR capture time in seconds (device clock), None without ``ir``.
    """

    ir: np.ndarray | None = None
    ir_time: float | None = None


@dataclass
class ReadStats:
    """What a pass over a recording's captures delivered and dropped.

    Attributes:
        captures: frames delivered (captures with a depth image).
        without_depth: captures skipped because they had no depth image (e.g. colour-only).
        dropped_at_cut: incomplete captures at the end of a truncated file, skipped.
    """

    captures: int = 0
    without_depth: int = 0
    dropped_at_cut: int = 0


@dataclass
class _Tracks:
    """The streams of one recording, by role (None when absent)."""

    color: Any = None
    depth: Any = None
    ir: Any = None
    imu: Any = None
    roles: tuple[str, ...] = ()


class MKVRecording:
    """An Azure Kinect recording: its :attr:`info`, :attr:`calibration` and captures.

    Creating one reads only the header (tags, tracks, attachments); each :meth:`captures` pass
    opens the file again and streams its images, closing it when the pass ends.

    Raises:
        CaptureError: not a readable Matroska file, no depth track, an unknown depth mode, a
            missing or malformed calibration attachment (naming the file).
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        truncated = _check_matroska(self.path)
        with _open_container(self.path) as container:
            tracks = _find_tracks(container)
            self.info = _recording_info(self.path, container, tracks, truncated)
            self.calibration = _recording_calibration(self.path, container, self.info)
            self._indices = {
                role: stream.index
                for role, stream in ((COLOR, tracks.color), (DEPTH, tracks.depth), (IR, tracks.ir))
                if stream is not None
            }
            self._ir_is_gray16 = tracks.ir is not None and tracks.ir.codec_context.pix_fmt in _GRAY16
        self.stats = ReadStats()

    def captures(self, *, color: bool = True, ir: bool = False) -> Iterator[KinectFrame]:
        """Stream the recording's synchronised captures, decoding one capture at a time.

        Args:
            color: decode colour images (False: depth only, faster).
            ir: also decode the IR images into :attr:`KinectFrame.ir`.
        Yields:
            Frames indexed 0, 1, … in time order; ``color`` is (H', W', 3) uint8 RGB or None when
            the capture has no colour image. Captures without depth are skipped; :attr:`stats`
            (reset by each call) counts what was delivered and skipped.
        Raises:
            CaptureError: an image does not decode, or a truncated file has no complete capture.
        """
        self.stats = ReadStats()
        roles = self._roles(color, ir)
        with _open_container(self.path) as container:
            streams = {role: container.streams[self._indices[role]] for role in roles}
            timed = _timed_packets(self.path, container, streams)
            captures = synchronise(timed, roles, self.info.frame_period_ns, {COLOR: self.info.depth_delay_ns})
            if self.info.truncated:
                captures = self._without_cut_tail(captures, len(roles))
            for capture in captures:
                if DEPTH not in capture:
                    self.stats.without_depth += 1
                    continue
                yield self._frame(capture)
        if self.info.truncated and self.stats.captures == 0:
            raise CaptureError(
                f"{self.path} is truncated and holds no complete capture; copy the recording again "
                "from the computer it was recorded on."
            )
        if self.info.truncated:
            log.warning(
                "%s is truncated: read its %d complete captures, dropped %d cut at the end",
                self.path,
                self.stats.captures,
                self.stats.dropped_at_cut,
            )

    def _roles(self, color: bool, ir: bool) -> tuple[str, ...]:
        """The tracks to read; CaptureError if the IR track is asked for but is not 16-bit."""
        if ir and IR in self._indices and not self._ir_is_gray16:
            raise CaptureError(
                f"{self.path}: the IR track is not 16-bit greyscale; read the recording without IR."
            )
        wanted = {DEPTH: True, COLOR: color, IR: ir}
        return tuple(role for role in (DEPTH, COLOR, IR) if wanted[role] and role in self._indices)

    def _without_cut_tail(
        self, captures: Iterator[dict[str, tuple[int, Any]]], num_roles: int
    ) -> Iterator[dict[str, tuple[int, Any]]]:
        """Pass captures on, but drop the incomplete ones at the very end (they lost images at the
        cut). Incomplete captures are held back until a complete one follows, or until the file is
        :data:`REORDER_WINDOW_NS` past them, so that holding stays bounded."""
        held: deque[dict[str, tuple[int, Any]]] = deque()
        for capture in captures:
            if len(capture) == num_roles:
                yield from held
                held.clear()
                yield capture
                continue
            held.append(capture)
            while _capture_time(capture) - _capture_time(held[0]) > REORDER_WINDOW_NS:
                yield held.popleft()
        self.stats.dropped_at_cut = len(held)

    def _frame(self, capture: dict[str, tuple[int, Any]]) -> KinectFrame:
        """Decode one capture ({role: (file time ns, packet)}, with depth) into the next frame."""
        seconds = {
            role: (time_ns + self.info.start_offset_ns) / _NS for role, (time_ns, _) in capture.items()
        }
        images = {
            role: _decode_packet(self.path, role, packet, seconds[role])
            for role, (_, packet) in capture.items()
        }
        frame = KinectFrame(
            index=self.stats.captures,
            depth_mm=decode_gray16(images[DEPTH]),
            color=decode_color(images[COLOR]) if COLOR in images else None,
            depth_time=seconds[DEPTH],
            color_time=seconds.get(COLOR),
            ir=decode_gray16(images[IR]) if IR in images else None,
            ir_time=seconds.get(IR),
        )
        self.stats.captures += 1
        return frame


def read_recording_info(path: PathLike) -> RecordingInfo:
    """The :class:`RecordingInfo` of the recording at ``path`` (reads only its header)."""
    return MKVRecording(path).info


def read_recording_calibration(path: PathLike) -> Calibration:
    """The cameras of the recording at ``path`` in its recorded modes (``source="mkv-import"``)."""
    return MKVRecording(path).calibration


def iter_captures(path: PathLike, *, color: bool = True, ir: bool = False) -> Iterator[KinectFrame]:
    """Stream the synchronised captures of the recording at ``path`` (see :meth:`MKVRecording.captures`)."""
    yield from MKVRecording(path).captures(color=color, ir=ir)


def decode_color(frame: av.VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded colour frame in any pixel format FFmpeg converts
    (MJPG's full-range ``yuvj422p``, ``bgra``, ``nv12``, ``yuyv422`` …)."""
    return frame.to_ndarray(format="rgb24")


def decode_gray16(frame: av.VideoFrame) -> np.ndarray:
    """(H, W) uint16 in native byte order of a decoded ``gray16be`` or ``gray16le`` frame."""
    if frame.format.name not in _GRAY16:
        raise ValueError(f"expected a 16-bit greyscale frame, got {frame.format.name}")
    return np.ascontiguousarray(frame.to_ndarray(), dtype=np.uint16)


def synchronise(
    items: Iterable[tuple[str, int, T]],
    roles: tuple[str, ...],
    period_ns: int,
    delays_ns: dict[str, int] | None = None,
    window_ns: int = REORDER_WINDOW_NS,
) -> Iterator[dict[str, tuple[int, T]]]:
    """Group time-stamped images of several tracks into captures, as the SDK's ``get_capture`` does.

    Args:
        items: (role, time ns, payload) in file order; each role's times increasing.
        roles: the roles to group (items of other roles are not expected).
        period_ns: the frame period; images within half of it (after delays) form one capture.
        delays_ns: per-role shift added to the time before comparing (the depth delay on colour).
        window_ns: how far the file may run ahead before a role's missing image is given up.
    Yields:
        {role: (time ns, payload)} per capture, in time order; a role is absent when its image
        was dropped.
    """
    delays_ns = delays_ns or {}
    queues: dict[str, deque[tuple[int, int, T]]] = {role: deque() for role in roles}
    latest = None
    for role, time_ns, payload in items:
        sync_ns = time_ns + delays_ns.get(role, 0)
        queues[role].append((sync_ns, time_ns, payload))
        latest = sync_ns if latest is None else max(latest, sync_ns)
        while _capture_ready(queues, latest, period_ns, window_ns):
            yield _pop_capture(queues, period_ns)
    while any(queues.values()):
        yield _pop_capture(queues, period_ns)


def _capture_ready(queues: dict[str, deque], latest: int, period_ns: int, window_ns: int) -> bool:
    """Whether the next capture can be decided: every role has an image pending, or the file has
    moved so far past the earliest pending image that a missing role's image cannot follow."""
    heads = [queue[0][0] for queue in queues.values() if queue]
    if not heads:
        return False
    return len(heads) == len(queues) or latest >= min(heads) + period_ns // 2 + window_ns


def _pop_capture(queues: dict[str, deque], period_ns: int) -> dict[str, tuple[int, Any]]:
    """Remove and return the next capture: the pending heads within half a period of the earliest."""
    start = min(queue[0][0] for queue in queues.values() if queue)
    capture = {}
    for role, queue in queues.items():
        if queue and queue[0][0] - start < period_ns / 2:
            _, time_ns, payload = queue.popleft()
            capture[role] = (time_ns, payload)
    return capture


def _capture_time(capture: dict[str, tuple[int, Any]]) -> int:
    """Earliest file time (ns) among a capture's images."""
    return min(time_ns for time_ns, _ in capture.values())


# --------------------------------------------------------------------------------------------------
# Opening and the header


def _read_vint(data: bytes, pos: int, *, strip_marker: bool) -> tuple[int | None, int]:
    """An EBML variable-length integer at ``pos``: (value, next position).

    ``strip_marker`` for sizes (element IDs keep their length marker). The value is None for an
    invalid integer, one that runs past ``data``, or a size of all ones ("unknown size").
    """
    if pos >= len(data) or data[pos] == 0:
        return None, len(data)
    length = 9 - data[pos].bit_length()
    if pos + length > len(data):
        return None, len(data)
    raw = int.from_bytes(data[pos : pos + length], "big")
    if not strip_marker:
        return raw, pos + length
    all_ones = (1 << (7 * length)) - 1
    value = raw & all_ones
    return (None if value == all_ones else value), pos + length


def _ebml_doctype(header: bytes) -> bytes:
    """The DocType string among the EBML header's children (bytes, b"" if absent)."""
    pos = 0
    while pos < len(header):
        element, pos = _read_vint(header, pos, strip_marker=False)
        size, pos = _read_vint(header, pos, strip_marker=True)
        if element is None or size is None:
            return b""
        if element == _EBML_DOCTYPE:
            return header[pos : pos + size]
        pos += size
    return b""


def _check_matroska(path: Path) -> bool:
    """CaptureError unless ``path`` is a Matroska file; returns whether it was cut short.

    Reads the EBML header (magic, DocType) and the Segment's declared size: a file shorter than
    the end of its segment, or whose segment size was never written, is truncated.
    """
    try:
        with open(path, "rb") as file:
            head = file.read(_HEADER_BYTES)
        file_size = path.stat().st_size
    except FileNotFoundError:
        raise CaptureError(f"{path} does not exist; check the recording's path.") from None
    except OSError as error:
        raise CaptureError(f"{path} cannot be read ({error.strerror}); check the file.") from None
    if not head.startswith(_EBML_MAGIC):
        raise CaptureError(f"{path} is not a Matroska (.mkv) file; give an Azure Kinect recording.")
    header_size, pos = _read_vint(head, len(_EBML_MAGIC), strip_marker=True)
    doctype = b"" if header_size is None else _ebml_doctype(head[pos : pos + header_size])
    if doctype not in (b"matroska", b"webm"):
        raise CaptureError(
            f"{path} is an EBML file of type {doctype.decode(errors='replace')!r}, not Matroska; "
            "give an Azure Kinect recording."
        )
    segment, pos = _read_vint(head, pos + header_size, strip_marker=False)
    size, pos = _read_vint(head, pos, strip_marker=True)
    if segment != _SEGMENT_ID:
        raise CaptureError(f"{path} has no Matroska segment after its header; the file is damaged.")
    return size is None or pos + size > file_size


def _open_container(path: Path) -> Any:
    """The PyAV input container of ``path``; CaptureError if FFmpeg cannot read it as Matroska."""
    try:
        container = av.open(str(path), format="matroska", metadata_errors="replace")
    except (av.error.FFmpegError, UnicodeDecodeError) as error:
        raise CaptureError(
            f"{path} is not a readable Matroska file ({error}); give an Azure Kinect recording."
        ) from None
    return container


def _find_tracks(container: Any) -> _Tracks:
    """Streams by role: the one carrying the role's K4A_*_TRACK tag, else the one with its name."""
    found = {}
    for role in (COLOR, DEPTH, IR, IMU):
        tagged = [s for s in container.streams if _TRACK_TAGS[role] in s.metadata]
        named = [s for s in container.streams if s.metadata.get("title") in _TRACK_NAMES[role]]
        streams = tagged or named
        found[role] = streams[0] if streams else None
    roles = tuple(role for role in (COLOR, DEPTH, IR, IMU) if found[role] is not None)
    return _Tracks(color=found[COLOR], depth=found[DEPTH], ir=found[IR], imu=found[IMU], roles=roles)


def _tags(container: Any, tracks: _Tracks) -> dict[str, str]:
    """All K4A tags: the file's global tags and those FFmpeg attached to the Kinect's streams."""
    tags = dict(container.metadata)
    for stream in (tracks.color, tracks.depth, tracks.ir, tracks.imu):
        if stream is not None:
            tags |= dict(stream.metadata)
    return tags


def _int_tag(path: Path, tags: dict[str, str], name: str) -> int:
    """Integer value of tag ``name`` (0 if absent); CaptureError if it is not an integer."""
    try:
        return int(tags.get(name, "0"))
    except ValueError:
        raise CaptureError(
            f"{path} has an invalid {name} tag ({tags[name]!r}); the file is damaged."
        ) from None


def _depth_mode(path: Path, tags: dict[str, str], depth: Any) -> str:
    """The depth mode (a DEPTH_MODES key) from ``K4A_DEPTH_MODE``, checked against the track size."""
    if "K4A_DEPTH_MODE" not in tags:
        raise CaptureError(f"{path} has no K4A_DEPTH_MODE tag, so its depth mode is unknown; re-record it.")
    mode = tags["K4A_DEPTH_MODE"].lower()
    if mode not in DEPTH_MODES or mode == "passive_ir":
        raise CaptureError(
            f"{path} records depth mode {tags['K4A_DEPTH_MODE']!r}, which is not supported; "
            f"record in one of {', '.join(m.upper() for m in DEPTH_MODES if m != 'passive_ir')}."
        )
    expected = DEPTH_MODES[mode].output
    size = (depth.codec_context.width, depth.codec_context.height)
    if size != expected:
        raise CaptureError(
            f"{path}: the depth track is {size[0]}×{size[1]}, not the {expected[0]}×{expected[1]} of {mode}; "
            "give an unmodified Azure Kinect recording."
        )
    return mode


def _color_mode(path: Path, tags: dict[str, str], color: Any) -> tuple[str, str]:
    """(format, resolution) of the colour track: format from ``K4A_COLOR_MODE`` (else the codec),
    resolution (a COLOR_RESOLUTIONS key) from the track size, as the SDK does."""
    if color.type != "video":
        raise CaptureError(f"{path}: the COLOR track is not a video track; the file is damaged.")
    size = (color.codec_context.width, color.codec_context.height)
    resolutions = [name for name, mode in COLOR_RESOLUTIONS.items() if mode.output == size]
    if not resolutions:
        raise CaptureError(
            f"{path}: the colour track is {size[0]}×{size[1]}, not an Azure Kinect colour resolution; "
            "give an unmodified Azure Kinect recording."
        )
    tag = tags.get("K4A_COLOR_MODE", "")
    context = color.codec_context
    from_codec = _K4A_COLOR_FORMATS.get(context.name) or _K4A_COLOR_FORMATS.get(
        context.pix_fmt, context.pix_fmt
    )
    color_format = tag.split("_")[0] if "_" in tag else from_codec
    return color_format, resolutions[0]


def _frame_rate(path: Path, tracks: _Tracks) -> float:
    """Frames per second from the colour (else depth) track's default duration."""
    stream = tracks.color if tracks.color is not None else tracks.depth
    rate = stream.average_rate or stream.guessed_rate
    if not rate or rate <= 0:
        raise CaptureError(
            f"{path} does not state its frame rate (track DefaultDuration); the file is damaged."
        )
    return float(rate)


def _stream_seconds(stream: Any, value: int | None) -> float:
    """A stream timestamp in seconds (0 when unknown)."""
    return 0.0 if value is None else float(value * stream.time_base)


def _recording_info(path: Path, container: Any, tracks: _Tracks, truncated: bool) -> RecordingInfo:
    """Parse tags and tracks into :class:`RecordingInfo`; CaptureError for what cannot be read."""
    if tracks.depth is None or tracks.depth.type != "video":
        raise CaptureError(
            f"{path} has no DEPTH track; record with the depth camera on (not PASSIVE_IR or OFF)."
        )
    if tracks.depth.codec_context.pix_fmt not in _GRAY16:
        raise CaptureError(
            f"{path}: the depth track is {tracks.depth.codec_context.pix_fmt}, not 16-bit greyscale; "
            "give an unmodified Azure Kinect recording."
        )
    tags = _tags(container, tracks)
    color_format, color_resolution = (
        _color_mode(path, tags, tracks.color) if tracks.color is not None else (None, None)
    )
    return RecordingInfo(
        path=path,
        depth_mode=_depth_mode(path, tags, tracks.depth),
        color_format=color_format,
        color_resolution=color_resolution,
        ir_mode=tags.get("K4A_IR_MODE", "ACTIVE") if tracks.ir is not None else None,
        fps=_frame_rate(path, tracks),
        depth_delay_ns=_int_tag(path, tags, "K4A_DEPTH_DELAY_NS"),
        start_offset_ns=_int_tag(path, tags, "K4A_START_OFFSET_NS"),
        wired_sync_mode=tags.get("K4A_WIRED_SYNC_MODE", "STANDALONE"),
        subordinate_delay_ns=_int_tag(path, tags, "K4A_SUBORDINATE_DELAY_NS"),
        serial=tags.get("K4A_DEVICE_SERIAL_NUMBER", ""),
        color_firmware=tags.get("K4A_COLOR_FIRMWARE_VERSION", ""),
        depth_firmware=tags.get("K4A_DEPTH_FIRMWARE_VERSION", ""),
        tracks=tracks.roles,
        duration=(container.duration or 0) / av.time_base,
        first_time=_stream_seconds(tracks.depth, tracks.depth.start_time),
        truncated=truncated,
    )


def _calibration_attachment(container: Any) -> bytes | None:
    """Payload of the attachment tagged K4A_CALIBRATION_FILE, else of the one named calibration.json."""
    attachments = [s for s in container.streams if s.type == "attachment"]
    tagged = [s for s in attachments if _CALIBRATION_TAG in s.metadata]
    named = [
        s for s in attachments if s.metadata.get("filename", getattr(s, "name", None)) == _CALIBRATION_NAME
    ]
    chosen = tagged or named
    return bytes(chosen[0].data) if chosen else None


def _recording_calibration(path: Path, container: Any, info: RecordingInfo) -> Calibration:
    """The factory calibration attachment as a Calibration for the recorded modes."""
    text = _calibration_attachment(container)
    if text is None:
        raise CaptureError(
            f"{path} has no calibration.json attachment; record with the Azure Kinect recorder, "
            "which stores it."
        )
    try:
        cameras = parse_factory_calibration(text)
        return calibration_from_factory(
            cameras["depth"],
            cameras.get("color") if info.color_resolution is not None else None,
            info.depth_mode,
            info.color_resolution,
            device="Azure Kinect",
            serial=info.serial,
            source="mkv-import",
        )
    except (KeyError, ValueError) as error:
        raise CaptureError(
            f"{path} has an unusable calibration.json attachment ({error}); re-record it."
        ) from None


# --------------------------------------------------------------------------------------------------
# Packets and images


def _timed_packets(path: Path, container: Any, streams: dict[str, Any]) -> Iterator[tuple[str, int, Any]]:
    """(role, file time ns, packet) of the given streams in file order; CaptureError if demuxing
    fails mid-file."""
    roles = {stream.index: role for role, stream in streams.items()}
    try:
        for packet in container.demux(list(streams.values())):
            if packet.pts is None or packet.size == 0:
                continue
            time_ns = int(Fraction(packet.pts) * packet.time_base * _NS)
            yield roles[packet.stream.index], time_ns, packet
    except av.error.FFmpegError as error:
        raise CaptureError(f"{path} cannot be read to the end ({error}); the file is damaged.") from None


def _decode_packet(path: Path, role: str, packet: Any, seconds: float) -> av.VideoFrame:
    """The single video frame in ``packet``; CaptureError naming the image if it does not decode."""
    try:
        frames = packet.decode()
    except av.error.FFmpegError as error:
        raise CaptureError(
            f"{path}: the {role} image at {seconds:.6f} s does not decode ({error}); the file is damaged."
        ) from None
    if len(frames) != 1:
        raise CaptureError(
            f"{path}: the {role} image at {seconds:.6f} s does not decode; the file is damaged."
        )
    return frames[0]
