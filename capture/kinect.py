"""Live recording from an Azure Kinect through pyk4a (the optional ``kinect`` extra).

:func:`record` opens the device, counts down, then writes every synchronised colour + depth capture
to an Azure Kinect MKV (``PyK4ARecord``, the SDK's own ``k4arecord`` format, colour as MJPG) and,
next to it, our metadata::

    <out_dir>/
      recording.mkv       the captures, as the SDK's k4arecorder would write them
      calibration.json    the device's factory calibration for the recorded modes (our format)
      recording.json      modes, fps, start time, frame count, dropped and skipped captures, how it ended

Ctrl-C (``KeyboardInterrupt``) ends a recording cleanly: the MKV is flushed and closed, the metadata
written, and the summary says ``interrupted=True``. The MKV is written under a temporary name and
renamed when complete, so ``recording.mkv`` is never a half-written file.

What pyk4a does, from its source (etiennedub/pyk4a, ``pyk4a/``) and the SDK's
(microsoft/Azure-Kinect-Sensor-SDK):

- ``import pyk4a`` loads the compiled ``k4a_module``, which links ``libk4a``. Without the SDK
  library, ``module.py`` raises a plain ``ImportError`` ("Cannot import k4a_module. Make sure
  `libk4a.so` can be found…", or on older releases the loader's own message); pyk4a itself missing
  is a ``ModuleNotFoundError`` whose ``name`` is "pyk4a".
- ``PyK4A.open()`` raises ``K4AException`` (no message) when ``k4a_device_open`` fails: no such
  device, or the device is busy or not accessible; ``connected_device_count()`` tells them apart.
- ``PyK4A.start()`` starts cameras then IMU and raises ``K4AException`` when
  ``k4a_device_start_cameras`` fails: an unsupported mode combination (``validate_configuration``
  in ``src/sdk/k4a.c``: WFOV unbinned depth and 3072p colour run at most at 15 fps), or the depth
  engine (``libdepthengine``, loaded at start) missing.
- ``get_capture(timeout)`` raises ``K4ATimeoutException`` (a ``K4AException``) on timeout and
  ``K4AException`` on failure; a capture's ``.color`` / ``.depth`` are None when absent (MJPG
  colour is the (N,) uint8 JPEG bytes, depth (H, W) uint16 mm), ``.depth_timestamp_usec`` is the
  device clock in µs.
- ``calibration_raw`` is the device's factory ``calibration.json`` text ("" on failure); its
  ``Metadata.SerialId`` is the serial number.
- ``PyK4ARecord(path=, config=, device=)`` embeds the device's calibration when given a started
  device; ``create()``, ``write_capture()`` (writes the header first), ``flush()``, ``close()``.

Nothing here needs pyk4a at import time: it is imported inside :func:`record`, which also takes any
object with pyk4a's API (``pyk4a_module``), the seam the tests use.
"""

from __future__ import annotations

import importlib
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from capture.calibration import (
    COLOR_RESOLUTIONS,
    DEPTH_MODES,
    calibration_from_factory,
    parse_factory_calibration,
)
from capture.errors import CaptureError
from capture.files import PathLike, atomic_path, write_json
from capture.sequence import CALIBRATION_FILE, Calibration

MKV_FILE = "recording.mkv"
METADATA_FILE = "recording.json"
METADATA_FORMAT = "rgbd2avatar-kinect-recording"
METADATA_VERSION = 1
DEVICE_NAME = "Azure Kinect"
INSTALL_HINT = "pip install 'rgbd2avatar[kinect]'"

FPS_CHOICES = (5, 15, 30)
"""Frame rates of the Azure Kinect (``k4a_fps_t``)."""
RECORDABLE_DEPTH_MODES = tuple(mode for mode in DEPTH_MODES if mode != "passive_ir")
"""Depth modes that deliver depth images (passive IR delivers only infrared)."""
MAX_FPS = {"wfov_unbinned": 15, "3072p": 15}
"""Modes slower than 30 fps (the SDK's ``validate_configuration``); every other mode reaches 30."""
CAPTURE_TIMEOUT_S = 5.0
"""How long to wait for one capture before the device counts as stopped (the first capture after
the cameras start takes about a second)."""

STOPPED_BY_DURATION = "duration"
STOPPED_BY_CTRL_C = "ctrl-c"
STOPPED_BY_DEVICE_ERROR = "device-error"


@dataclass(frozen=True)
class RecordingStatus:
    """What :func:`record` reports to its ``on_status`` callback.

    Attributes:
        phase: "countdown" (``countdown_left`` seconds before recording) or "recording".
        countdown_left: seconds left in the countdown (whole seconds but the first tick).
        frames: captures written so far.
        seconds: device time spanned by the written frames.
        dropped: frame slots missing between written frames (device timestamps), whatever the cause.
        skipped: captures the device delivered without colour or without depth (not written).
    """

    phase: str
    countdown_left: float = 0.0
    frames: int = 0
    seconds: float = 0.0
    dropped: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class RecordingSummary:
    """The result of :func:`record`.

    Attributes:
        out_dir: the directory holding the three files below.
        mkv, calibration, metadata: paths of ``recording.mkv``, ``calibration.json``, ``recording.json``.
        frames, seconds, dropped, skipped: as in :class:`RecordingStatus`, at the end.
        interrupted: the recording was ended by Ctrl-C.
        serial: the device's serial number.
    """

    out_dir: Path
    mkv: Path
    calibration: Path
    metadata: Path
    frames: int
    seconds: float
    dropped: int
    skipped: int
    interrupted: bool
    serial: str


@dataclass(frozen=True)
class KinectModes:
    """Recording modes checked by :func:`check_modes` (names as in :data:`~capture.calibration.DEPTH_MODES`
    and :data:`~capture.calibration.COLOR_RESOLUTIONS`)."""

    fps: int
    depth_mode: str
    color_resolution: str

    @property
    def period_usec(self) -> float:
        """Frame period in microseconds."""
        return 1e6 / self.fps


@dataclass
class _Tally:
    """Counts of a recording in progress: written frames, their device-time span, drops, skips."""

    period_usec: float
    frames: int = 0
    skipped: int = 0
    dropped: int = 0
    first_usec: int | None = None
    last_usec: int | None = None
    started_at: str = ""
    stopped_by: str = STOPPED_BY_DURATION
    error: str = ""

    def offset_usec(self, timestamp_usec: int) -> float:
        """Device time of ``timestamp_usec`` after the first written frame (0 before any)."""
        return 0.0 if self.first_usec is None else float(timestamp_usec - self.first_usec)

    def add(self, timestamp_usec: int) -> None:
        """Count one written frame; a gap since the previous one counts its missing frames as dropped."""
        if self.first_usec is None:
            self.first_usec = timestamp_usec
            self.started_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        else:
            slots = round((timestamp_usec - self.last_usec) / self.period_usec)
            self.dropped += max(slots - 1, 0)
        self.last_usec = timestamp_usec
        self.frames += 1

    @property
    def seconds(self) -> float:
        """Device time spanned by the written frames, each lasting one frame period."""
        if self.first_usec is None:
            return 0.0
        return (self.last_usec - self.first_usec + self.period_usec) / 1e6

    def status(self) -> RecordingStatus:
        """The "recording" status of this tally."""
        return RecordingStatus("recording", 0.0, self.frames, self.seconds, self.dropped, self.skipped)


def record(
    out_dir: PathLike,
    duration: float | None = None,
    *,
    fps: int = 30,
    depth_mode: str = "nfov_unbinned",
    color_resolution: str = "720p",
    countdown: float = 3.0,
    device_id: int = 0,
    overwrite: bool = False,
    on_status: Callable[[RecordingStatus], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    pyk4a_module: ModuleType | None = None,
) -> RecordingSummary:
    """Record synchronised colour + depth from an Azure Kinect into ``out_dir``.

    The modes are checked, the device opened and its calibration read before the countdown, so a
    missing device or a bad mode fails at once. Captures lacking colour or depth are skipped.

    Args:
        out_dir: directory for ``recording.mkv``, ``calibration.json`` and ``recording.json``
            (created if needed).
        duration: seconds of device time to record; None records until Ctrl-C.
        fps: 5, 15 or 30.
        depth_mode: a key of :data:`RECORDABLE_DEPTH_MODES`, e.g. "nfov_unbinned".
        color_resolution: a key of :data:`COLOR_RESOLUTIONS`, e.g. "720p" (colour is stored as MJPG).
        countdown: seconds to count down, reported through ``on_status``, before recording.
        device_id: which connected Azure Kinect (0 for the first).
        overwrite: replace an existing recording in ``out_dir``.
        on_status: called with a :class:`RecordingStatus` at each countdown tick, when recording
            starts and after every capture.
        sleep: the countdown's sleep (tests pass a fake).
        pyk4a_module: an object with pyk4a's API; None imports pyk4a.
    Returns:
        The :class:`RecordingSummary`; ``interrupted`` when Ctrl-C ended the recording.
    Raises:
        CaptureError: pyk4a or the SDK missing, no device, device busy, unsupported modes, an
            existing recording, Ctrl-C before the first frame, or the device failing (frames
            recorded before a failure are kept and their metadata written first).
    """
    modes = check_modes(fps, depth_mode, color_resolution, duration)
    out_dir = Path(out_dir)
    _check_target(out_dir, overwrite)
    k4a = pyk4a_module if pyk4a_module is not None else import_pyk4a()
    session = _open_session(k4a, modes, device_id, on_status or _ignore_status)
    try:
        calibration = _read_calibration(session)
        _count_down_and_start(session, countdown, sleep, out_dir)
        tally = _record_mkv(session, out_dir / MKV_FILE, duration)
    finally:
        _release(session.device)
    return _finish(session, out_dir, calibration, duration, tally)


def check_modes(
    fps: int, depth_mode: str, color_resolution: str, duration: float | None = None
) -> KinectModes:
    """The validated modes; :class:`CaptureError` for a combination the Azure Kinect cannot record."""
    if fps not in FPS_CHOICES:
        raise CaptureError(f"The {DEVICE_NAME} cannot run at {fps} fps; choose one of {FPS_CHOICES}.")
    if depth_mode not in RECORDABLE_DEPTH_MODES:
        raise CaptureError(
            f"{DEVICE_NAME} depth mode {depth_mode!r} cannot be recorded; "
            f"choose one of {RECORDABLE_DEPTH_MODES}."
        )
    if color_resolution not in COLOR_RESOLUTIONS:
        raise CaptureError(
            f"{DEVICE_NAME} colour resolution {color_resolution!r} does not exist; "
            f"choose one of {tuple(COLOR_RESOLUTIONS)}."
        )
    for mode in (depth_mode, color_resolution):
        if fps > MAX_FPS.get(mode, 30):
            raise CaptureError(
                f"The {DEVICE_NAME} runs {mode} at most at {MAX_FPS[mode]} fps, not {fps}; "
                f"choose fps {MAX_FPS[mode]} or 5, or another mode for {fps} fps."
            )
    if duration is not None and not duration >= 1.0 / fps:
        raise CaptureError(
            f"A recording of {duration} s holds no frame at {fps} fps; "
            f"choose a duration of at least {1.0 / fps:.3g} s, or none to record until Ctrl-C."
        )
    return KinectModes(fps, depth_mode, color_resolution)


def import_pyk4a() -> ModuleType:
    """Import pyk4a; :class:`CaptureError` with the fix when it or the Azure Kinect SDK is missing."""
    try:
        return importlib.import_module("pyk4a")
    except ModuleNotFoundError as error:
        if error.name != "pyk4a":
            raise _sdk_missing(error) from None
        raise CaptureError(
            f"Recording from an {DEVICE_NAME} needs pyk4a, which is not installed; "
            f"install the kinect extra: {INSTALL_HINT}."
        ) from None
    except ImportError as error:
        raise _sdk_missing(error) from None


def _sdk_missing(error: ImportError) -> CaptureError:
    """The error for pyk4a installed but unable to load the SDK's ``libk4a``."""
    return CaptureError(
        f"pyk4a is installed but cannot load libk4a, Microsoft's {DEVICE_NAME} Sensor SDK library ({error}); "
        "install the Azure Kinect Sensor SDK (libk4a1.4) and make libk4a.so findable (LD_LIBRARY_PATH), "
        f"then reinstall pyk4a with {INSTALL_HINT}."
    )


def _ignore_status(status: RecordingStatus) -> None:
    """The default ``on_status``: report nothing."""


def _check_target(out_dir: Path, overwrite: bool) -> None:
    """CaptureError if ``out_dir`` is a file or already holds a recording that may not be replaced."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CaptureError(
            f"{out_dir} is a file, not a directory; choose another directory for the recording."
        )
    existing = [out_dir / name for name in (MKV_FILE, METADATA_FILE) if (out_dir / name).exists()]
    if existing and not overwrite:
        raise CaptureError(
            f"{existing[0]} already exists; remove it, choose another directory or allow overwriting."
        )


@dataclass(frozen=True)
class _Session:
    """An opened device and what recording from it needs.

    Attributes:
        k4a: the pyk4a module (or an object with its API).
        device: the opened ``PyK4A``.
        device_id, modes: as passed to :func:`record`.
        config: the ``pyk4a.Config`` the device was created with (the recorder needs it too).
        report: the ``on_status`` callback.
    """

    k4a: Any
    device: Any
    device_id: int
    modes: KinectModes
    config: Any
    report: Callable[[RecordingStatus], None]


def _open_session(
    k4a: Any, modes: KinectModes, device_id: int, report: Callable[[RecordingStatus], None]
) -> _Session:
    """Open device ``device_id`` for ``modes``; CaptureError saying whether it is absent or busy."""
    config = _device_config(k4a, modes)
    device = k4a.PyK4A(config=config, device_id=device_id)
    try:
        device.open()
    except k4a.K4AException:
        raise _open_error(k4a.connected_device_count(), device_id) from None
    return _Session(k4a, device, device_id, modes, config, report)


def _device_config(k4a: Any, modes: KinectModes) -> Any:
    """pyk4a's ``Config`` for ``modes``: MJPG colour, synchronised captures only."""
    return k4a.Config(
        color_resolution=k4a.ColorResolution[f"RES_{modes.color_resolution.upper()}"],
        depth_mode=k4a.DepthMode[modes.depth_mode.upper()],
        camera_fps=k4a.FPS[f"FPS_{modes.fps}"],
        synchronized_images_only=True,
        color_format=k4a.ImageFormat.COLOR_MJPG,
    )


def _open_error(connected: int, device_id: int) -> CaptureError:
    """Why device ``device_id`` could not be opened, with ``connected`` devices present."""
    if connected == 0:
        return CaptureError(
            f"No {DEVICE_NAME} is connected (device {device_id} not found); plug it into a USB 3 port "
            "and its power supply, then try again."
        )
    if device_id >= connected:
        return CaptureError(
            f"{DEVICE_NAME} device {device_id} does not exist ({connected} connected); "
            f"choose a device id from 0 to {connected - 1}."
        )
    return CaptureError(
        f"{DEVICE_NAME} device {device_id} is connected but could not be opened; close other programs "
        "using it (k4aviewer, k4arecorder, another recording) and check the SDK's udev rules, then try again."
    )


def _read_calibration(session: _Session) -> Calibration:
    """Our :class:`Calibration` for the session's modes from the device's factory calibration JSON."""
    raw = session.device.calibration_raw
    modes = session.modes
    try:
        cameras = parse_factory_calibration(raw)
        return calibration_from_factory(
            cameras["depth"],
            cameras.get("color"),
            modes.depth_mode,
            modes.color_resolution,
            device=DEVICE_NAME,
            serial=_serial(raw),
            source="pyk4a",
        )
    except (KeyError, ValueError) as error:
        raise CaptureError(
            f"{DEVICE_NAME} device {session.device_id} returned an unusable factory calibration ({error}); "
            "unplug and reconnect it, then try again."
        ) from None


def _serial(raw_calibration: str) -> str:
    """The serial number in a factory calibration JSON (``Metadata.SerialId``), "" if absent."""
    metadata = json.loads(raw_calibration)["CalibrationInformation"].get("Metadata", {})
    return str(metadata.get("SerialId", ""))


def _count_down_and_start(
    session: _Session, countdown: float, sleep: Callable[[float], None], out_dir: Path
) -> None:
    """Count down, then start the cameras; Ctrl-C meanwhile cancels with a CaptureError."""
    try:
        _count_down(countdown, session.report, sleep)
        _start_cameras(session)
    except KeyboardInterrupt:
        raise CaptureError(
            f"Recording into {out_dir} was cancelled before it started and nothing was recorded; "
            "run it again to record."
        ) from None
    session.report(RecordingStatus("recording"))


def _count_down(
    seconds: float, report: Callable[[RecordingStatus], None], sleep: Callable[[float], None]
) -> None:
    """Report ``seconds`` left, then each whole second left, sleeping in between."""
    left = seconds
    while left > 0:
        report(RecordingStatus("countdown", countdown_left=left))
        next_left = math.ceil(left) - 1
        sleep(left - next_left)
        left = next_left


def _start_cameras(session: _Session) -> None:
    """Start the cameras; CaptureError naming the likely causes if the SDK refuses."""
    modes = session.modes
    try:
        session.device.start()
    except session.k4a.K4AException:
        raise CaptureError(
            f"{DEVICE_NAME} device {session.device_id} opened but its cameras did not start "
            f"({modes.depth_mode} depth, {modes.color_resolution} colour, {modes.fps} fps); check that the "
            "SDK's depth engine (libdepthengine) is installed and the device has USB 3 and its power supply."
        ) from None


def _record_mkv(session: _Session, mkv: Path, duration: float | None) -> _Tally:
    """Write captures into ``mkv`` (renamed into place once flushed and closed) until the duration,
    Ctrl-C or a device failure; CaptureError, and no file, if not a single frame was written."""
    with atomic_path(mkv) as temporary:
        recorder = session.k4a.PyK4ARecord(path=temporary, config=session.config, device=session.device)
        with _writing(session, mkv):
            recorder.create()
        try:
            tally = _write_captures(session, recorder, mkv, duration)
        finally:
            with _writing(session, mkv):
                _close_recorder(recorder)
        if tally.frames == 0:
            raise _nothing_recorded(session, tally, mkv)
    return tally


@contextmanager
def _writing(session: _Session, mkv: Path) -> Iterator[None]:
    """Turn pyk4a's errors while creating, writing or flushing ``mkv`` into a CaptureError naming it."""
    try:
        yield
    except session.k4a.K4AException as error:
        raise CaptureError(
            f"{mkv} could not be written ({error}); check the free disk space and write permission there, "
            "then record again."
        ) from None


def _write_captures(session: _Session, recorder: Any, mkv: Path, duration: float | None) -> _Tally:
    """The capture loop: write each complete capture until the duration, Ctrl-C or a device error."""
    tally = _Tally(session.modes.period_usec)
    end_usec = math.inf if duration is None else duration * 1e6 - session.modes.period_usec / 2
    timeout_ms = int(CAPTURE_TIMEOUT_S * 1000)
    try:
        while True:
            capture = session.device.get_capture(timeout=timeout_ms)
            if capture.color is None or capture.depth is None:
                tally.skipped += 1
            elif tally.offset_usec(capture.depth_timestamp_usec) >= end_usec:
                return tally
            else:
                with _writing(session, mkv):
                    recorder.write_capture(capture)
                tally.add(capture.depth_timestamp_usec)
            session.report(tally.status())
    except KeyboardInterrupt:
        tally.stopped_by = STOPPED_BY_CTRL_C
    except session.k4a.K4ATimeoutException:
        tally.stopped_by = STOPPED_BY_DEVICE_ERROR
        tally.error = f"no capture for {CAPTURE_TIMEOUT_S:g} s"
    except session.k4a.K4AException as error:
        tally.stopped_by = STOPPED_BY_DEVICE_ERROR
        tally.error = f"capture failed: {error}" if str(error) else "capture failed"
    return tally


def _close_recorder(recorder: Any) -> None:
    """Flush the recorder's queued captures to disk, then close it (closing even if flushing fails)."""
    try:
        recorder.flush()
    finally:
        recorder.close()


def _nothing_recorded(session: _Session, tally: _Tally, mkv: Path) -> CaptureError:
    """The error for a recording that ended before its first frame."""
    if tally.stopped_by == STOPPED_BY_DEVICE_ERROR:
        return CaptureError(
            f"{DEVICE_NAME} device {session.device_id} delivered no complete capture ({tally.error}); "
            "check its USB 3 cable and power supply, then try again."
        )
    return CaptureError(
        f"The recording stopped before its first complete capture, so {mkv} was not written; "
        "run it again and let it record."
    )


def _release(device: Any) -> None:
    """Stop the device's cameras and close it (or only close it if the cameras never started)."""
    if device.is_running:
        device.stop()
    elif device.opened:
        device.close()


def _finish(
    session: _Session, out_dir: Path, calibration: Calibration, duration: float | None, tally: _Tally
) -> RecordingSummary:
    """Write ``calibration.json`` and ``recording.json``; the summary, or CaptureError after a device
    failure (whose frames are kept)."""
    summary = RecordingSummary(
        out_dir=out_dir,
        mkv=out_dir / MKV_FILE,
        calibration=out_dir / CALIBRATION_FILE,
        metadata=out_dir / METADATA_FILE,
        frames=tally.frames,
        seconds=tally.seconds,
        dropped=tally.dropped,
        skipped=tally.skipped,
        interrupted=tally.stopped_by == STOPPED_BY_CTRL_C,
        serial=calibration.serial,
    )
    calibration.save(summary.calibration)
    write_json(summary.metadata, _metadata(session, duration, tally, calibration.serial))
    if tally.stopped_by == STOPPED_BY_DEVICE_ERROR:
        raise CaptureError(
            f"{DEVICE_NAME} device {session.device_id} stopped delivering captures ({tally.error}) after "
            f"{tally.frames} frames ({tally.seconds:.1f} s), which are saved in {summary.mkv}; "
            "check its USB 3 cable and power supply before recording again."
        )
    return summary


def _metadata(session: _Session, duration: float | None, tally: _Tally, serial: str) -> dict[str, Any]:
    """The content of ``recording.json``."""
    modes = session.modes
    return {
        "format": METADATA_FORMAT,
        "version": METADATA_VERSION,
        "mkv": MKV_FILE,
        "calibration": CALIBRATION_FILE,
        "device": DEVICE_NAME,
        "device_id": session.device_id,
        "serial": serial,
        "depth_mode": modes.depth_mode,
        "color_resolution": modes.color_resolution,
        "color_format": "mjpg",
        "fps": modes.fps,
        "requested_duration": duration,
        "started_at": tally.started_at,
        "num_frames": tally.frames,
        "seconds": tally.seconds,
        "dropped": tally.dropped,
        "skipped": tally.skipped,
        "first_timestamp_usec": tally.first_usec,
        "last_timestamp_usec": tally.last_usec,
        "stopped_by": tally.stopped_by,
    }
