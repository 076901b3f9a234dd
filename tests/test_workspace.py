"""The subject workspace: manifest records, up-to-date checks and the hash cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import rgbd2avatar.workspace as workspace_module
from rgbd2avatar.errors import UserError
from rgbd2avatar.workspace import MANIFEST, Workspace

PARAMS = {"iterations": 100, "model": "anny", "model_dir": Path("/models/smpl"), "frames": (0, 10)}


@pytest.fixture
def done(workspace: Workspace) -> Workspace:
    """A workspace whose preprocess stage ran on a 2-file recording and wrote one output."""
    recording = workspace.stage_dir("recording")
    (recording / "a.png").write_bytes(b"depth a")
    (recording / "b.png").write_bytes(b"depth b")
    (workspace.stage_dir("preprocess") / "points.npz").write_bytes(b"points")
    workspace.record("preprocess", ["recording"], PARAMS, ["preprocess/points.npz"], started=0.0)
    return workspace


def test_fresh_record_is_up_to_date(done):
    assert done.is_up_to_date("preprocess", ["recording"], PARAMS)
    assert done.stale_reason("preprocess") is None
    record = done.stage_record("preprocess")
    assert record.params["model_dir"] == "/models/smpl" and record.params["frames"] == [0, 10]
    assert record.started == "1970-01-01T00:00:00+00:00"
    assert (
        list(record.outputs) == ["preprocess/points.npz"] and record.software_version == done.software_version
    )


def test_never_run_is_stale(workspace):
    assert not workspace.is_up_to_date("pina", [], {})
    assert workspace.stale_reason("pina") == "never run"


def test_params_change_makes_stale(done):
    assert done.stale_reason("preprocess", ["recording"], PARAMS | {"iterations": 200}) == (
        "parameters changed: iterations"
    )


def test_input_change_makes_stale(done):
    (done.root / "recording" / "b.png").write_bytes(b"depth B")
    assert done.stale_reason("preprocess", ["recording"], PARAMS) == "input changed: recording"


def test_added_input_file_makes_stale(done):
    (done.root / "recording" / "c.png").write_bytes(b"depth c")
    assert not done.is_up_to_date("preprocess", ["recording"], PARAMS)


def test_different_inputs_make_stale(done):
    assert done.stale_reason("preprocess", ["recording/a.png"], PARAMS) == "a different set of inputs"


def test_output_deleted_or_modified_makes_stale(done):
    output = done.root / "preprocess" / "points.npz"
    output.write_bytes(b"other points")
    assert done.stale_reason("preprocess") == "output changed: preprocess/points.npz"
    output.unlink()
    assert done.stale_reason("preprocess", ["recording"], PARAMS) == "output missing: preprocess/points.npz"


def test_version_change_makes_stale(done):
    newer = Workspace(done.root, software_version="99.0")
    assert not newer.is_up_to_date("preprocess", ["recording"], PARAMS)
    assert "made by rgbd2avatar" in newer.stale_reason("preprocess")


def test_invalidate(done):
    done.invalidate("preprocess")
    assert done.stage_record("preprocess") is None
    assert (done.root / "preprocess" / "points.npz").exists()


def test_paths_relative_to_workspace_and_outside(done, tmp_path):
    motion = tmp_path / "walk.npz"
    motion.write_bytes(b"motion")
    (done.stage_dir("animation") / "walk.glb").write_bytes(b"glb")
    record = done.record("animation", [done.root / "preprocess" / "points.npz", motion], {}, ["animation"])
    assert set(record.inputs) == {"preprocess/points.npz", motion.as_posix()}
    assert set(record.outputs) == {"animation"}
    assert done.is_up_to_date("animation", [motion, "preprocess/points.npz"], {})


def test_hash_cache_avoids_rehashing(done, monkeypatch):
    calls = []
    real = workspace_module.sha256_file
    monkeypatch.setattr(
        workspace_module, "sha256_file", lambda path: calls.append(Path(path).name) or real(path)
    )
    assert done.is_up_to_date("preprocess", ["recording"], PARAMS)
    assert calls == []
    a = done.root / "recording" / "a.png"
    a.write_bytes(b"depth A")
    os.utime(a, ns=(0, 0))
    assert not done.is_up_to_date("preprocess", ["recording"], PARAMS)
    assert calls == ["a.png"]


def test_manifest_is_plain_json(done):
    manifest = json.loads((done.root / MANIFEST).read_text())
    assert set(manifest["stages"]) == {"preprocess"}
    assert set(manifest["hash_cache"]) == {"recording/a.png", "recording/b.png", "preprocess/points.npz"}


def test_record_refuses_missing_outputs_and_unknown_stages(workspace):
    with pytest.raises(ValueError, match="missing"):
        workspace.record("preprocess", [], {}, ["preprocess/nothing.npz"])
    with pytest.raises(ValueError, match="unknown stage"):
        workspace.stage_dir("shopping")


def test_not_a_workspace_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Workspace(tmp_path / "nobody")
    with pytest.raises(UserError, match="not a subject workspace"):
        Workspace(tmp_path)
    (tmp_path / MANIFEST).write_text("{oops")
    with pytest.raises(UserError, match="manifest .* is unreadable"):
        Workspace(tmp_path)
