"""The command line: help, error reporting, fast start-up, status and logging helpers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from unittest import mock

from fitting import priors
from rgbd2avatar import __version__
from rgbd2avatar.cli import USER_ERROR_EXIT_CODE, app
from rgbd2avatar.logs import Timer, format_duration, progress, stage_summary
from tests.cli_helpers import one_error_line, runner


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "demo" in result.stdout and "status" in result.stdout


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout


def test_unknown_workspace_is_one_line_exit_2(tmp_path):
    result = runner.invoke(app, ["status", str(tmp_path / "nobody")])
    assert result.exit_code == USER_ERROR_EXIT_CODE == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nobody" in lines[0]
    assert "Traceback" not in result.output


def test_status_table(workspace):
    (workspace.stage_dir("preprocess") / "points.npz").write_bytes(b"points")
    workspace.record("preprocess", [], {}, ["preprocess/points.npz"])
    result = runner.invoke(app, ["status", str(workspace.root)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "preprocess/points.npz" in result.stdout and "not run" in result.stdout


def test_demo_writes_its_outputs_and_names_them(tmp_path):
    result = runner.invoke(app, ["demo", str(tmp_path / "out"), "--frames", "12", "--steps", "2"])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "out" / "body_poses.png") in result.stdout
    assert (tmp_path / "out" / "body_poses.png").stat().st_size > 10_000
    assert len(list((tmp_path / "out" / "walk" / "meshes").glob("*.ply"))) == 49
    assert len(list((tmp_path / "out" / "capture" / "sequence" / "depth").glob("*.png"))) == 12
    assert (tmp_path / "out" / "capture" / "frame_000010.png").exists()
    assert (tmp_path / "out" / "subject" / "preprocess" / "index.json").exists()
    assert list((tmp_path / "out" / "subject" / "body_fit" / "overlays").glob("*.png"))
    assert str(tmp_path / "out" / "subject" / "pina" / "canonical.ply") in result.stdout
    assert (tmp_path / "out" / "subject" / "pina" / "avatar.pt").exists()
    animation = tmp_path / "out" / "subject" / "animation" / "walk"
    assert str(animation / "preview.mp4") in result.stdout
    assert len(list((animation / "meshes").glob("*.ply"))) == 17  # 1.6 s at 10 fps, both ends
    assert (animation / "avatar.glb").stat().st_size > 0
    assert (tmp_path / "out" / "subject" / "texture" / "avatar.glb").exists()
    renders = tmp_path / "out" / "subject" / "texture" / "renders" / "walk-orbit"
    assert str(renders / "render.mp4") in result.stdout
    assert len(list((renders / "frames").glob("*.png"))) == 17
    subject = str(tmp_path / "out" / "subject")
    fit = ["fit", subject, "--preset", "fast", "--steps", "2", "--pretrain-steps", "1"]
    result = runner.invoke(app, fit)  # earlier stages up to date; PINA re-runs with other settings
    assert result.exit_code == 0, result.output
    assert re.search(r"fit: avatar of \d+ frames", result.output)
    again = runner.invoke(app, fit)
    assert again.exit_code == 0 and "pina is up to date" in again.output
    weighted = runner.invoke(app, [*fit, "--weight", "normal=0.5", "--weight", "off=0"])
    assert weighted.exit_code == 0 and "pina: running (parameters changed" in weighted.output
    train = json.loads((tmp_path / "out" / "subject" / "pina" / "train.json").read_text())
    weights = train["config"]["weights"]
    assert (weights["normal"], weights["off"], weights["sdf"]) == (0.5, 0.0, 1.0)
    assert "--weight 'shape=1'" in one_error_line(runner.invoke(app, [*fit, "--weight", "shape=1"]))
    plain = runner.invoke(app, ["fit-body", subject, "--no-depth-correction"], env={"COLUMNS": "200"})
    assert plain.exit_code == 0 and "no clothing layer" in plain.output, plain.output
    assert (
        json.loads((tmp_path / "out" / "subject" / "body_fit" / "fit.json").read_text())["depth_offsets"]
        == []
    )
    kept = runner.invoke(app, fit, env={"COLUMNS": "200"})  # fit keeps fit-body's last settings
    assert kept.exit_code == 0 and "body_fit is up to date" in kept.output, kept.output
    with mock.patch.object(priors, "STIFF_SCALE", 1.0):  # as a version with another prior
        refit = runner.invoke(app, ["fit-body", subject, "--no-depth-correction"], env={"COLUMNS": "200"})
    assert refit.exit_code == 0 and "body_fit: running (parameters changed" in refit.output, refit.output


def test_import_does_not_load_torch():
    code = "import sys, rgbd2avatar.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stage_summary_line(capsys):
    with Timer() as timer:
        items = list(progress(range(3), total=3, description="count"))
    assert items == [0, 1, 2] and timer.seconds >= 0
    line = stage_summary("preprocess", "3 frames", 12.34, "29.8 fps", "peak 1.2 GB")
    assert line == "preprocess: 3 frames in 12.3 s (29.8 fps, peak 1.2 GB)"
    assert line in capsys.readouterr().err


def test_format_duration():
    assert [format_duration(s) for s in (0.04, 59.9, 245, 3725)] == [
        "0.0 s",
        "59.9 s",
        "4 min 05 s",
        "1 h 02 min",
    ]


def test_fit_errors_are_one_line(tmp_path, workspace):
    result = runner.invoke(app, ["fit", str(workspace.root), "--preset", "slow"])
    assert result.exit_code == 2 and "--preset 'slow'" in result.output
    result = runner.invoke(app, ["fit", str(workspace.root), "--preset", "fast"])
    assert result.exit_code == 2 and "has no recording" in result.output
    result = runner.invoke(app, ["fit", str(tmp_path / "nobody")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    result = runner.invoke(app, ["fit", str(workspace.root), "--max-points", "0"])
    assert result.exit_code == 2 and "--max-points must be one or more" in result.output
