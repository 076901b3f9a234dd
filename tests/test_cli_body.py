"""Body-model commands end to end: pose-body, export-motion, body-info, and their user errors."""

from __future__ import annotations

import numpy as np
import trimesh
from typer.testing import CliRunner

from rgbd2avatar.cli import USER_ERROR_EXIT_CODE, app
from rgbd2avatar.motion import builtin_motion, load_amass, save_amass
from tests.smpl_fixture import write_smpl_model

runner = CliRunner()


def one_error_line(result) -> str:
    assert result.exit_code == USER_ERROR_EXIT_CODE, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


def test_pose_body_writes_meshes_preview_and_motion(tmp_path):
    out = tmp_path / "posed"
    args = ["pose-body", str(out), "--motion", "squat", "--frames", "0:5", "--shape", "height=0.9"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    meshes = sorted((out / "meshes").glob("*.ply"))
    assert [m.name for m in meshes] == [f"{i:06d}.ply" for i in range(5)]
    mesh = trimesh.load(meshes[0], process=False)
    assert len(mesh.vertices) == 13348 and mesh.is_watertight
    assert (out / "preview.png").exists()
    assert load_amass(out / "motion.npz").num_frames == 5


def test_pose_body_drives_the_body_with_an_amass_file(tmp_path):
    motion = builtin_motion("raise_arms", num_frames=3)
    save_amass(motion, tmp_path / "clip.npz")
    result = runner.invoke(
        app, ["pose-body", str(tmp_path / "out"), "-m", str(tmp_path / "clip.npz"), "--format", "obj"]
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out" / "meshes").glob("*.obj"))) == 3


def test_pose_body_user_errors(tmp_path):
    assert "dance" in one_error_line(runner.invoke(app, ["pose-body", str(tmp_path), "-m", "dance"]))
    assert "foo=1" in one_error_line(runner.invoke(app, ["pose-body", str(tmp_path), "--shape", "foo=1"]))
    assert "--format" in one_error_line(runner.invoke(app, ["pose-body", str(tmp_path), "--format", "fbx"]))


def test_device_cuda_without_a_gpu_is_a_user_error(tmp_path):
    import torch

    result = runner.invoke(app, ["pose-body", str(tmp_path), "--frames", "0:1", "--device", "cuda"])
    if torch.cuda.is_available():
        assert result.exit_code == 0, result.output
    else:
        assert "--device cpu" in one_error_line(result)


def test_export_motion_resamples_and_round_trips(tmp_path):
    result = runner.invoke(app, ["export-motion", "walk", str(tmp_path / "walk.npz"), "--fps", "10"])
    assert result.exit_code == 0, result.output
    exported = load_amass(tmp_path / "walk.npz")
    original = builtin_motion("walk")
    assert exported.fps == 10.0
    assert np.allclose(exported.poses[0], original.poses[0], atol=1e-6)
    assert abs(exported.duration - original.duration) < 0.1


def test_body_info_for_smpl_needs_model_files(tmp_path):
    message = one_error_line(runner.invoke(app, ["body-info", "--body-model", "smpl"]))
    assert "--model-dir" in message
    message = one_error_line(runner.invoke(app, ["body-info", "-b", "smpl", "--model-dir", str(tmp_path)]))
    assert "SMPL_NEUTRAL.pkl" in message
    write_smpl_model(tmp_path / "SMPL_NEUTRAL.pkl")
    result = runner.invoke(app, ["body-info", "-b", "smpl", "--model-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "288 vertices" in result.stdout and "left_wrist" in result.stdout


def test_body_info_for_anny_lists_phenotypes():
    result = runner.invoke(app, ["body-info"])
    assert result.exit_code == 0, result.output
    assert "13348 vertices" in result.stdout and "height=0.50" in result.stdout
