"""The extract and animate stages and commands on a tiny saved avatar: the files they write, the
manifest, skipping when up to date, one-line errors, and no partial outputs after a failure."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch
import trimesh

from rgbd2avatar.avatar.avatar import Avatar
from rgbd2avatar.avatar.store import save_avatar
from rgbd2avatar.body import load_body_model
from rgbd2avatar.cli import app
from rgbd2avatar.motion import builtin_motion, save_amass
from rgbd2avatar.workspace import Workspace
from tests.cli_helpers import TINY, one_error_line, runner

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    """A workspace holding an untrained tiny avatar (its SDF is the initial sphere) of two frames."""
    root = tmp_path_factory.mktemp("animate") / "subject"
    Workspace.create(root)
    torch.manual_seed(0)
    body = load_body_model("anny")
    avatar = Avatar(body, body.default_shape, TINY)
    poses = torch.zeros(2, 72)
    poses[1, 18 * 3 + 1] = -0.5
    save_avatar(root / "pina" / "avatar.pt", avatar, torch.tensor([0, 3]), poses, torch.zeros(2, 3))
    return root


def no_temporaries(folder) -> bool:
    return not any(path.name.startswith(".tmp-") for path in folder.rglob("*"))


def test_extract_writes_canonical_and_training_frame_meshes(subject):
    result = runner.invoke(app, ["extract", str(subject), "--resolution", "32"])
    assert result.exit_code == 0, result.output
    meshes = subject / "meshes"
    assert sorted(p.name for p in (meshes / "frames").iterdir()) == ["000000.ply", "000003.ply"]
    canonical = trimesh.load(meshes / "canonical.ply")
    assert len(canonical.faces) > 100
    summary = json.loads((meshes / "extract.json").read_text())
    assert summary["frames"] == 2 and summary["mode"] == "fast" and summary["extractions"] == 2
    manifest = json.loads((subject / "manifest.json").read_text())
    assert manifest["stages"]["meshes"]["inputs"].keys() == {"pina/avatar.pt"}
    assert "extract:" in result.stderr and no_temporaries(meshes)
    again = runner.invoke(app, ["extract", str(subject), "--resolution", "32"])
    assert again.exit_code == 0 and "up to date" in again.stderr


def test_animate_writes_meshes_video_sheet_and_rig(subject):
    args = ["animate", str(subject), "--motion", "walk", "--fps", "10", "--frames", "0:3", "-r", "32"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    folder = subject / "animation" / "walk"
    assert sorted(p.name for p in (folder / "meshes").iterdir()) == [f"00000{i}.ply" for i in range(3)]
    with av.open(str(folder / "preview.mp4")) as video:
        frames = [frame.to_ndarray(format="rgb24") for frame in video.decode(video=0)]
    assert len(frames) == 3 and frames[0].shape == (512, 512, 3)
    assert frames[0].min() < 200  # the avatar is in view, not just the white background
    assert (folder / "preview.png").stat().st_size > 0
    rig = next(iter(trimesh.load(folder / "avatar.glb", force="scene").geometry.values()))
    assert len(rig.faces) > 100
    summary = json.loads((folder / "animation.json").read_text())
    assert summary["frames"] == 3 and summary["fps"] == 10 and summary["video_codec"] in ("libx264", "mpeg4")
    assert summary["pose_condition"] == "mean" and summary["extractions"] == 1  # one condition for all
    manifest = json.loads((subject / "manifest.json").read_text())
    assert manifest["stages"]["animation"]["outputs"].keys() == {"animation/walk"}
    assert no_temporaries(subject / "animation")
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "up to date" in again.stderr


def test_animate_a_motion_file_as_obj_into_another_folder(subject, tmp_path):
    motion = tmp_path / "lift.npz"
    save_amass(builtin_motion("raise_arms", num_frames=2, fps=5.0), motion)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["animate", str(subject), "-m", str(motion), "--format", "obj", "--out", str(out), "-r", "32",
         "--pose-condition", "own"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "meshes").iterdir()) == ["000000.obj", "000001.obj"]
    summary = json.loads((out / "animation.json").read_text())
    assert summary["pose_condition"] == "own" and summary["extractions"] == 2  # each frame's pose
    manifest = json.loads((subject / "manifest.json").read_text())
    assert str(motion) in manifest["stages"]["animation"]["inputs"]


def test_a_failed_animation_leaves_no_partial_folder(subject, monkeypatch):
    import rgbd2avatar.animation

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(rgbd2avatar.animation, "write_rig", broken)
    result = runner.invoke(app, ["animate", str(subject), "-m", "squat", "--frames", "0:2", "-r", "32"])
    assert isinstance(result.exception, RuntimeError)
    assert not (subject / "animation" / "squat").exists() and no_temporaries(subject / "animation")


def test_errors_are_one_line(subject, tmp_path):
    empty = tmp_path / "empty"
    Workspace.create(empty)
    assert "avatar.pt" in one_error_line(runner.invoke(app, ["animate", str(empty), "-m", "walk"]))
    assert "avatar.pt" in one_error_line(runner.invoke(app, ["extract", str(empty)]))
    bad = tmp_path / "bad.npz"
    bad.write_text("not a motion")
    assert "bad.npz" in one_error_line(runner.invoke(app, ["animate", str(subject), "-m", str(bad)]))
    truncated = tmp_path / "short.npz"
    np.savez(truncated, poses=np.zeros((3, 72)))
    assert "short.npz" in one_error_line(runner.invoke(app, ["animate", str(subject), "-m", str(truncated)]))
    assert "--resolution" in one_error_line(
        runner.invoke(app, ["animate", str(subject), "-m", "walk", "-r", "100"])
    )
    assert "--format" in one_error_line(
        runner.invoke(app, ["animate", str(subject), "-m", "walk", "--format", "stl"])
    )
    assert "--pose-condition" in one_error_line(
        runner.invoke(app, ["animate", str(subject), "-m", "walk", "--pose-condition", "median"])
    )
    assert not (subject / "animation" / "bad").exists()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep me")
    args = ["animate", str(subject), "-m", "walk", "--frames", "0:1", "-r", "32", "--out", str(precious)]
    assert "--out" in one_error_line(runner.invoke(app, args))
    assert (precious / "thesis.txt").read_text() == "keep me"
