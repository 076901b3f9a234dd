"""Pipeline commands on a subject workspace: capture, import, preprocess, and the manifest."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from capture.sequence import SequenceReader
from rgbd2avatar.cli import USER_ERROR_EXIT_CODE, app
from tests.shared_data import RECORDING, needs_recording

runner = CliRunner()


def one_error_line(result) -> str:
    assert result.exit_code == USER_ERROR_EXIT_CODE, result.output
    errors = [line for line in result.stderr.strip().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.strip().endswith(errors[0]) and "Traceback" not in result.output
    return errors[0]


@needs_recording
def test_import_an_azure_kinect_mkv_then_skip_it_when_up_to_date(tmp_path):
    subject = tmp_path / "subject"
    result = runner.invoke(app, ["import", str(RECORDING), str(subject)])
    assert result.exit_code == 0, result.output
    reader = SequenceReader(subject / "recording")
    assert len(reader) == 1 and reader.calibration.depth.shape == (576, 640)
    manifest = json.loads((subject / "manifest.json").read_text())
    assert manifest["stages"]["recording"]["outputs"].keys() == {"recording"}
    again = runner.invoke(app, ["import", str(RECORDING), str(subject)])
    assert again.exit_code == 0 and "up to date" in again.stderr


def test_import_errors_name_the_file(tmp_path):
    assert "nothing.mkv" in one_error_line(
        runner.invoke(app, ["import", str(tmp_path / "nothing.mkv"), str(tmp_path / "s")])
    )
    broken = tmp_path / "broken.mkv"
    broken.write_bytes(b"not a matroska file at all")
    assert "broken.mkv" in one_error_line(runner.invoke(app, ["import", str(broken), str(tmp_path / "s")]))
    assert not (tmp_path / "s" / "recording" / "frames.json").exists()


def test_capture_without_pyk4a_or_with_bad_modes_is_one_clear_line(tmp_path):
    message = one_error_line(runner.invoke(app, ["capture", str(tmp_path / "s"), "--duration", "1"]))
    assert "pip install 'rgbd2avatar[kinect]'" in message
    message = one_error_line(
        runner.invoke(app, ["capture", str(tmp_path / "s"), "--depth-mode", "wfov_unbinned"])
    )
    assert "15 fps" in message
    assert not (tmp_path / "s").exists()


def test_import_and_preprocess_a_synthetic_capture(tmp_path):
    from rgbd2avatar.synth.generate import SynthOptions, synthesize

    synthesize(tmp_path / "capture", SynthOptions(frames=4, seed=1))
    subject = tmp_path / "subject"
    assert runner.invoke(app, ["import", str(tmp_path / "capture" / "sequence"), str(subject)]).exit_code == 0
    result = runner.invoke(app, ["preprocess", str(subject), "--stride", "1"])
    assert result.exit_code == 0, result.output
    index = json.loads((subject / "preprocess" / "index.json").read_text())
    assert [f["index"] for f in index["frames"]] == [0, 1, 2, 3]
    assert len(list((subject / "preprocess" / "frames").glob("*.npz"))) == 4
    again = runner.invoke(app, ["preprocess", str(subject), "--stride", "1"])
    assert "up to date" in again.stderr
    changed = runner.invoke(app, ["preprocess", str(subject), "--stride", "2"])
    assert "parameters changed: stride" in changed.stderr
    assert len(json.loads((subject / "preprocess" / "index.json").read_text())["frames"]) == 2
    window = runner.invoke(app, ["preprocess", str(subject), "--stride", "2", "--normal-window", "3"])
    assert "parameters changed: normal_window" in window.stderr
    assert json.loads((subject / "preprocess" / "index.json").read_text())["parameters"]["normal_window"] == 3
    even = runner.invoke(app, ["preprocess", str(subject), "--normal-window", "4"])
    assert even.exit_code != 0 and "odd number" in one_error_line(even)
    rays = runner.invoke(
        app, ["preprocess", str(subject), "--stride", "2", "--normal-window", "3", "--normal-method", "rays"]
    )
    assert "parameters changed: normal_method" in rays.stderr
    parameters = json.loads((subject / "preprocess" / "index.json").read_text())["parameters"]
    assert parameters["normal_method"] == "rays"
    unknown = runner.invoke(app, ["preprocess", str(subject), "--normal-method", "sobel"])
    assert unknown.exit_code != 0 and "pca, rays" in one_error_line(unknown)
