"""Live Azure Kinect recording (capture/kinect.py) against a fake of pyk4a's API.

The fake mirrors what pyk4a does (etiennedub/pyk4a ``pyk4a/pyk4a.py``, ``record.py``, ``config.py``):
``open()`` raises ``K4AException`` for a missing or busy device, ``start()`` opens if needed and
raises when the SDK refuses to start the cameras, ``get_capture`` returns captures whose ``color`` /
``depth`` may be None, ``calibration_raw`` is the factory calibration JSON (here the real one
attached to ``shared/data/azure_kinect/recording.mkv``), and ``PyK4ARecord`` records what is
written instead of encoding an MKV.
"""

from __future__ import annotations

import enum
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from capture.calibration import calibration_from_factory, parse_factory_calibration
from capture.errors import CaptureError
from capture.kinect import (
    INSTALL_HINT,
    METADATA_FILE,
    MKV_FILE,
    RecordingStatus,
    check_modes,
    record,
)
from capture.sequence import CALIBRATION_FILE, Calibration
from tests.shared_data import RECORDING

SERIAL = "001514394512"
PERIOD_USEC = 33_333
"""The Azure Kinect's 30 fps frame period in device microseconds."""


@pytest.fixture(scope="module")
def raw_calibration() -> str:
    """The factory calibration JSON of a real device, from the recording's Matroska attachment."""
    if not RECORDING.exists():
        pytest.skip(f"{RECORDING} is not available")
    with av.open(str(RECORDING)) as container:
        attachment = next(s for s in container.streams if s.type == "attachment")
        return bytes(attachment.data).decode("utf-8")


def _jpeg_bytes(width: int = 1280, height: int = 720) -> np.ndarray:
    """An MJPG colour image as pyk4a returns it: (N,) uint8 JPEG bytes."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buffer, format="JPEG")
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


COLOR_MJPG = _jpeg_bytes()
DEPTH = np.full((576, 640), 1500, dtype=np.uint16)


@dataclass(eq=False)
class FakeCapture:
    """The attributes of ``pyk4a.PyK4ACapture`` that a recorder reads."""

    color: np.ndarray | None
    depth: np.ndarray | None
    color_timestamp_usec: int
    depth_timestamp_usec: int


def captures(count: int, *, start_usec: int = 1_000_000, period_usec: int = PERIOD_USEC) -> list[FakeCapture]:
    """``count`` synchronised MJPG + depth captures, one frame period apart on the device clock."""
    times = [start_usec + i * period_usec for i in range(count)]
    return [FakeCapture(COLOR_MJPG, DEPTH, t, t) for t in times]


@dataclass
class Scenario:
    """What the fake device does and what it saw."""

    raw_calibration: str = ""
    script: list[Any] = field(default_factory=list)
    connected: int = 1
    busy: bool = False
    start_fails: bool = False
    write_fails_after: int | None = None
    calls: list[str] = field(default_factory=list)
    written: list[FakeCapture] = field(default_factory=list)
    configs: list[Any] = field(default_factory=list)
    record_paths: list[Path] = field(default_factory=list)


def fake_pyk4a(scenario: Scenario) -> ModuleType:
    """A module with pyk4a's names and behaviour, driven by ``scenario``."""
    module = ModuleType("pyk4a")

    class FPS(enum.IntEnum):
        FPS_5 = 0
        FPS_15 = 1
        FPS_30 = 2

    class ImageFormat(enum.IntEnum):
        COLOR_MJPG = 0
        COLOR_NV12 = 1
        COLOR_YUY2 = 2
        COLOR_BGRA32 = 3
        DEPTH16 = 4

    class DepthMode(enum.IntEnum):
        OFF = 0
        NFOV_2X2BINNED = 1
        NFOV_UNBINNED = 2
        WFOV_2X2BINNED = 3
        WFOV_UNBINNED = 4
        PASSIVE_IR = 5

    class ColorResolution(enum.IntEnum):
        OFF = 0
        RES_720P = 1
        RES_1080P = 2
        RES_1440P = 3
        RES_1536P = 4
        RES_2160P = 5
        RES_3072P = 6

    class K4AException(Exception):
        pass

    class K4ATimeoutException(K4AException):
        pass

    @dataclass
    class Config:
        color_resolution: ColorResolution = ColorResolution.RES_720P
        color_format: ImageFormat = ImageFormat.COLOR_BGRA32
        depth_mode: DepthMode = DepthMode.NFOV_UNBINNED
        camera_fps: FPS = FPS.FPS_30
        synchronized_images_only: bool = True
        depth_delay_off_color_usec: int = 0

    class PyK4A:
        def __init__(self, config: Config | None = None, device_id: int = 0, thread_safe: bool = True):
            scenario.calls.append("PyK4A")
            scenario.configs.append(config)
            self._device_id = device_id
            self._handle: object | None = None
            self.is_running = False

        @property
        def opened(self) -> bool:
            return self._handle is not None

        def open(self) -> None:
            scenario.calls.append("open")
            if self.opened:
                raise K4AException("Device already opened")
            if self._device_id >= scenario.connected or scenario.busy:
                raise K4AException()
            self._handle = object()

        def start(self) -> None:
            if not self.opened:
                self.open()
            scenario.calls.append("start")
            if scenario.start_fails:
                raise K4AException()
            self.is_running = True

        def stop(self) -> None:
            scenario.calls.append("stop")
            self.is_running = False
            self._handle = None

        def close(self) -> None:
            scenario.calls.append("close")
            self._handle = None

        @property
        def calibration_raw(self) -> str:
            if not self.opened:
                raise K4AException("Device is not opened")
            return scenario.raw_calibration

        def get_capture(self, timeout: int = -1) -> FakeCapture:
            assert self.is_running, "get_capture before start"
            if not scenario.script:
                raise K4ATimeoutException()
            item = scenario.script.pop(0)
            if isinstance(item, BaseException):
                raise item
            return item

    class PyK4ARecord:
        def __init__(
            self, path: str | Path, config: Config, device: PyK4A | None = None, thread_safe: bool = True
        ):
            self._path = Path(path)
            self._device = device
            self._handle: object | None = None

        def create(self) -> None:
            assert self._device is not None and self._device.is_running, "metadata needs a started device"
            scenario.calls.append("create")
            scenario.record_paths.append(self._path)
            self._path.write_bytes(b"\x1a\x45\xdf\xa3")
            self._handle = object()

        def write_capture(self, capture: FakeCapture) -> None:
            if self._handle is None:
                raise K4AException("Record not created.")
            if len(scenario.written) == scenario.write_fails_after:
                raise K4AException(f"Cannot write capture {self._path}")
            scenario.written.append(capture)

        def flush(self) -> None:
            scenario.calls.append("flush")

        def close(self) -> None:
            scenario.calls.append("close_record")
            self._handle = None

    def connected_device_count() -> int:
        return scenario.connected

    for name, value in dict(locals()).items():
        if name not in ("module", "scenario"):
            setattr(module, name, value)
    return module


class Recorder:
    """Runs :func:`record` against a scenario, keeping the statuses and sleeps it saw."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.statuses: list[RecordingStatus] = []
        self.sleeps: list[float] = []

    def __call__(self, out_dir: Path, duration: float | None = None, **options: Any) -> Any:
        return record(
            out_dir,
            duration,
            on_status=self.statuses.append,
            sleep=self.sleeps.append,
            pyk4a_module=fake_pyk4a(self.scenario),
            **options,
        )

    @property
    def countdown(self) -> list[float]:
        return [status.countdown_left for status in self.statuses if status.phase == "countdown"]


@pytest.fixture
def scenario(raw_calibration: str) -> Scenario:
    return Scenario(raw_calibration=raw_calibration)


def _files(directory: Path) -> Iterator[str]:
    return (path.name for path in sorted(directory.iterdir()))


def test_records_a_duration_of_synchronised_captures(tmp_path: Path, scenario: Scenario) -> None:
    scenario.script = captures(75)
    run = Recorder(scenario)
    summary = run(tmp_path / "rec", 2.0)

    assert summary.frames == 60
    assert [c.depth_timestamp_usec for c in scenario.written] == [
        c.depth_timestamp_usec for c in captures(60)
    ]
    assert summary.seconds == pytest.approx(2.0, abs=1e-3)
    assert (summary.dropped, summary.skipped, summary.interrupted) == (0, 0, False)
    assert run.countdown == [3.0, 2.0, 1.0] and run.sleeps == [1.0, 1.0, 1.0]
    recording = [s for s in run.statuses if s.phase == "recording"]
    assert recording[0].frames == 0 and recording[-1].frames == 60
    assert scenario.calls == ["PyK4A", "open", "start", "create", "flush", "close_record", "stop"]
    assert list(_files(tmp_path / "rec")) == sorted([CALIBRATION_FILE, MKV_FILE, METADATA_FILE])
    assert scenario.record_paths[0].parent == tmp_path / "rec" and not scenario.record_paths[0].exists()


def test_device_config_is_synchronised_mjpg_in_the_requested_modes(
    tmp_path: Path, scenario: Scenario
) -> None:
    scenario.script = captures(20)
    Recorder(scenario)(tmp_path, 0.5, fps=15, depth_mode="wfov_unbinned", color_resolution="1080p")
    config = scenario.configs[0]
    assert (config.camera_fps.name, config.depth_mode.name, config.color_resolution.name) == (
        "FPS_15",
        "WFOV_UNBINNED",
        "RES_1080P",
    )
    assert config.synchronized_images_only is True and config.color_format.name == "COLOR_MJPG"


def test_fractional_countdown_ticks_down_to_whole_seconds(tmp_path: Path, scenario: Scenario) -> None:
    scenario.script = captures(5)
    run = Recorder(scenario)
    run(tmp_path, 0.1, countdown=2.5)
    assert run.countdown == [2.5, 2.0, 1.0] and run.sleeps == [0.5, 1.0, 1.0]
    run = Recorder(Scenario(scenario.raw_calibration, captures(5)))
    run(tmp_path / "none", 0.1, countdown=0)
    assert run.countdown == [] and run.sleeps == []


def test_captures_missing_colour_or_depth_are_skipped(tmp_path: Path, scenario: Scenario) -> None:
    script = captures(12)
    script[3].color = None
    script[7].depth = None
    scenario.script = [*script, KeyboardInterrupt()]
    summary = Recorder(scenario)(tmp_path, None)
    assert summary.frames == 10 and all(c.color is not None and c.depth is not None for c in scenario.written)
    assert (summary.skipped, summary.dropped) == (2, 2)
    assert summary.seconds == pytest.approx(12 * PERIOD_USEC / 1e6)


def test_timestamp_gaps_count_as_dropped(tmp_path: Path, scenario: Scenario) -> None:
    script = captures(10)
    del script[4:7]
    scenario.script = [*script, KeyboardInterrupt()]
    summary = Recorder(scenario)(tmp_path, None)
    assert (summary.frames, summary.dropped, summary.skipped) == (7, 3, 0)


def test_ctrl_c_keeps_what_was_recorded(tmp_path: Path, scenario: Scenario) -> None:
    scenario.script = [*captures(10), KeyboardInterrupt(), *captures(5)]
    summary = Recorder(scenario)(tmp_path, 60.0)
    assert summary.interrupted and summary.frames == 10 and len(scenario.written) == 10
    assert scenario.calls[-3:] == ["flush", "close_record", "stop"]
    assert summary.mkv.exists()
    metadata = json.loads(summary.metadata.read_text())
    assert metadata["stopped_by"] == "ctrl-c" and metadata["num_frames"] == 10


def test_metadata_and_calibration_are_written(
    tmp_path: Path, scenario: Scenario, raw_calibration: str
) -> None:
    scenario.script = captures(40)
    summary = Recorder(scenario)(tmp_path, 1.0, depth_mode="nfov_2x2binned")
    cameras = parse_factory_calibration(raw_calibration)
    expected = calibration_from_factory(
        cameras["depth"],
        cameras["color"],
        "nfov_2x2binned",
        "720p",
        device="Azure Kinect",
        serial=SERIAL,
        source="pyk4a",
    )
    assert Calibration.load(tmp_path / CALIBRATION_FILE) == expected
    assert summary.serial == SERIAL
    metadata = json.loads((tmp_path / METADATA_FILE).read_text())
    assert {
        k: metadata[k] for k in ("depth_mode", "color_resolution", "color_format", "fps", "num_frames")
    } == {
        "depth_mode": "nfov_2x2binned",
        "color_resolution": "720p",
        "color_format": "mjpg",
        "fps": 30,
        "num_frames": 30,
    }
    assert (metadata["mkv"], metadata["serial"], metadata["stopped_by"]) == (MKV_FILE, SERIAL, "duration")
    assert (metadata["dropped"], metadata["skipped"], metadata["requested_duration"]) == (0, 0, 1.0)
    assert metadata["first_timestamp_usec"] == 1_000_000
    assert metadata["last_timestamp_usec"] == 1_000_000 + 29 * PERIOD_USEC
    assert metadata["started_at"].endswith("+00:00")


def test_pyk4a_missing_names_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyk4a", None)
    with pytest.raises(CaptureError, match="not installed") as error:
        record(tmp_path, 1.0)
    assert INSTALL_HINT in str(error.value) and "kinect extra" in str(error.value)


@pytest.mark.parametrize(
    "package_body",
    [
        "raise ImportError('Cannot import k4a_module. Make sure `libk4a.so` can be found.')",
        "import k4a_module_that_is_not_built",
    ],
    ids=["pyk4a-module-py", "extension-missing"],
)
def test_sdk_missing_names_libk4a(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, package_body: str) -> None:
    package = tmp_path / "site" / "pyk4a"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(package_body + "\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "pyk4a", raising=False)
    with pytest.raises(CaptureError, match="libk4a") as error:
        record(tmp_path / "rec", 1.0)
    assert "Azure Kinect Sensor SDK" in str(error.value)
    assert not (tmp_path / "rec").exists()


@pytest.mark.parametrize(
    ("connected", "device_id", "busy", "message"),
    [
        (0, 0, False, "No Azure Kinect is connected"),
        (1, 2, False, "device 2 does not exist"),
        (1, 0, True, "could not be opened; close other programs"),
    ],
)
def test_device_that_cannot_be_opened(
    tmp_path: Path, connected: int, device_id: int, busy: bool, message: str
) -> None:
    scenario = Scenario(connected=connected, busy=busy)
    with pytest.raises(CaptureError, match=message):
        Recorder(scenario)(tmp_path / "rec", 1.0, device_id=device_id)
    assert "start" not in scenario.calls and not (tmp_path / "rec").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fps": 30, "depth_mode": "wfov_unbinned"}, "wfov_unbinned at most at 15 fps"),
        ({"fps": 30, "color_resolution": "3072p"}, "3072p at most at 15 fps"),
        ({"fps": 25}, "cannot run at 25 fps"),
        ({"depth_mode": "passive_ir"}, "'passive_ir' cannot be recorded"),
        ({"color_resolution": "4k"}, "'4k' does not exist"),
        ({"duration": 0.0}, "holds no frame"),
    ],
)
def test_bad_modes_fail_before_the_device_is_opened(
    tmp_path: Path, scenario: Scenario, options: dict[str, Any], message: str
) -> None:
    options = {"duration": 1.0} | options
    with pytest.raises(CaptureError, match=message):
        Recorder(scenario)(tmp_path, **options)
    assert scenario.calls == []


def test_every_mode_the_sdk_accepts_passes_the_check() -> None:
    for fps, depth_mode, color in [
        (30, "nfov_unbinned", "2160p"),
        (15, "wfov_unbinned", "3072p"),
        (5, "wfov_2x2binned", "1536p"),
    ]:
        assert check_modes(fps, depth_mode, color).fps == fps


def test_cameras_that_do_not_start_release_the_device(tmp_path: Path, scenario: Scenario) -> None:
    scenario.start_fails = True
    with pytest.raises(CaptureError, match="depth engine"):
        Recorder(scenario)(tmp_path / "rec", 1.0)
    assert scenario.calls == ["PyK4A", "open", "start", "close"] and not (tmp_path / "rec").exists()


def test_ctrl_c_in_the_countdown_cancels_and_records_nothing(tmp_path: Path, scenario: Scenario) -> None:
    def interrupted_sleep(seconds: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(CaptureError, match="cancelled before it started"):
        record(tmp_path / "rec", 1.0, sleep=interrupted_sleep, pyk4a_module=fake_pyk4a(scenario))
    assert scenario.calls == ["PyK4A", "open", "close"] and not (tmp_path / "rec").exists()


def test_ctrl_c_before_the_first_frame_leaves_no_file(tmp_path: Path, scenario: Scenario) -> None:
    scenario.script = [FakeCapture(None, DEPTH, 0, 0), KeyboardInterrupt()]
    with pytest.raises(CaptureError, match="before its first complete capture"):
        Recorder(scenario)(tmp_path, None)
    assert list(_files(tmp_path)) == [] and scenario.calls[-3:] == ["flush", "close_record", "stop"]


def test_device_failure_keeps_the_frames_and_reports_them(tmp_path: Path, scenario: Scenario) -> None:
    scenario.script = captures(5)
    with pytest.raises(CaptureError, match=r"no capture for 5 s\) after 5 frames .* saved in"):
        Recorder(scenario)(tmp_path, 10.0)
    assert (tmp_path / MKV_FILE).exists() and len(scenario.written) == 5
    metadata = json.loads((tmp_path / METADATA_FILE).read_text())
    assert (metadata["stopped_by"], metadata["num_frames"]) == ("device-error", 5)


def test_device_failure_before_any_frame(tmp_path: Path, scenario: Scenario) -> None:
    with pytest.raises(CaptureError, match="delivered no complete capture"):
        Recorder(scenario)(tmp_path, 1.0)
    assert list(_files(tmp_path)) == []


def test_a_failing_write_names_the_file_and_leaves_none(tmp_path: Path, scenario: Scenario) -> None:
    scenario.script = captures(20)
    scenario.write_fails_after = 4
    with pytest.raises(CaptureError, match=rf"{MKV_FILE} could not be written .*free disk space"):
        Recorder(scenario)(tmp_path, 10.0)
    assert list(_files(tmp_path)) == [] and scenario.calls[-3:] == ["flush", "close_record", "stop"]


def test_an_unusable_factory_calibration_closes_the_device(tmp_path: Path) -> None:
    scenario = Scenario(raw_calibration="")
    with pytest.raises(CaptureError, match="unusable factory calibration"):
        Recorder(scenario)(tmp_path / "rec", 1.0)
    assert scenario.calls == ["PyK4A", "open", "close"] and not (tmp_path / "rec").exists()


def test_an_existing_recording_is_kept_unless_overwriting(tmp_path: Path, scenario: Scenario) -> None:
    (tmp_path / MKV_FILE).write_bytes(b"old")
    with pytest.raises(CaptureError, match="already exists"):
        Recorder(scenario)(tmp_path, 1.0)
    assert scenario.calls == [] and (tmp_path / MKV_FILE).read_bytes() == b"old"
    scenario.script = captures(40)
    assert Recorder(scenario)(tmp_path, 1.0, overwrite=True).frames == 30
    assert (tmp_path / MKV_FILE).read_bytes() != b"old"


def test_module_imports_neither_pyk4a_nor_rgbd2avatar() -> None:
    code = (
        "import sys, capture.kinect; "
        "print('pyk4a' in sys.modules, any(m.startswith('rgbd2avatar') for m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert result.stdout.split() == ["False", "False"]
