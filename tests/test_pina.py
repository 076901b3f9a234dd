"""PINA's optimisation: resume continues the same run, the stages reduce their losses, poses and
both networks receive gradients, checkpoints of other inputs are not resumed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import trimesh

from fitting.pina.config import PRESETS, LossWeights, PinaConfig, preset
from fitting.pina.data import PinaData, canonical_samples, off_surface_samples
from fitting.pina.trainer import PinaTrainer
from rgbd2avatar.body import load_body_model
from rgbd2avatar.body.skeleton import JOINT_INDEX

TINY = PinaConfig(
    sdf_hidden=24, sdf_layers=3, sdf_freqs=2, skin_hidden=16, skin_layers=3, pretrain_steps=3, joint_steps=3,
    frames_per_step=2, points_per_frame=48, off_points_per_frame=16, eikonal_points=64, pretrain_points=128,
    checkpoint_every=2, mesh_resolution=32,
)  # fmt: skip


@pytest.fixture(scope="module")
def body():
    return load_body_model("anny")


@pytest.fixture(scope="module")
def data(body) -> PinaData:
    """Three frames of the naked body (elbows bent a little differently) seen from all around."""
    rng = np.random.default_rng(0)
    poses = torch.zeros(3, 72)
    for frame, angle in enumerate((0.2, 0.5, 0.8)):
        poses[frame, JOINT_INDEX["left_elbow"] * 3 + 1] = -angle
        poses[frame, JOINT_INDEX["right_elbow"] * 3 + 1] = angle
    trans = torch.tensor([[0.0, 0.0, 2.5]]).repeat(3, 1)
    shape = body.default_shape.clone()
    faces = body.faces.numpy()
    with torch.no_grad():
        posed = body(poses, shape, trans).vertices.numpy()
        canonical = body.canonical(shape).vertices[0].numpy()
    points, normals = [], []
    for vertices in posed:
        mesh = trimesh.Trimesh(vertices, faces, process=False)
        samples, triangles = trimesh.sample.sample_surface(mesh, 300, seed=1)
        points.append(samples.astype(np.float32))
        normals.append(mesh.face_normals[triangles].astype(np.float32))
    off = [off_surface_samples(vertices, faces, 0.05, rng) for vertices in posed]
    canon = canonical_samples(canonical, faces, body.weights.numpy(), rng)
    return PinaData(
        frames=torch.arange(3) * 3, points=torch.from_numpy(np.stack(points)),
        normals=torch.from_numpy(np.stack(normals)), counts=torch.full((3,), 300), poses=poses, trans=trans,
        shape=shape, off_points=torch.from_numpy(np.stack([o[0] for o in off])),
        off_sdf=torch.from_numpy(np.stack([o[1] for o in off])), canonical_points=torch.from_numpy(canon[0]),
        canonical_sdf=torch.from_numpy(canon[1]), canonical_weights=torch.from_numpy(canon[2]),
    )  # fmt: skip


def parameters(trainer: PinaTrainer) -> dict[str, torch.Tensor]:
    return trainer.avatar.state_dict() | {
        "pose": trainer.pose_delta.detach(),
        "trans": trainer.trans_delta.detach(),
    }


def test_resuming_from_a_checkpoint_continues_the_same_optimisation(body, data, tmp_path):
    straight = PinaTrainer(body, data, TINY, "inputs")
    straight.run()
    interrupted = PinaTrainer(body, data, TINY, "inputs")
    interrupted.run(tmp_path / "checkpoint.pt", until=4)  # through pretraining into the joint stage
    resumed = PinaTrainer(body, data, TINY, "inputs")
    assert resumed.resume(tmp_path / "checkpoint.pt") and resumed.step == 4
    resumed.run(tmp_path / "checkpoint.pt")
    expected, got = parameters(straight), parameters(resumed)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)
    assert resumed.history == straight.history


def test_a_checkpoint_of_other_inputs_or_settings_is_not_resumed(body, data, tmp_path):
    PinaTrainer(body, data, TINY, "inputs").run(tmp_path / "checkpoint.pt", until=2)
    assert not PinaTrainer(body, data, TINY, "other inputs").resume(tmp_path / "checkpoint.pt")
    assert not PinaTrainer(body, data, replace(TINY, lr=0.5), "inputs").resume(tmp_path / "checkpoint.pt")
    fresh = PinaTrainer(body, data, TINY, "inputs")
    assert fresh.resume(tmp_path / "checkpoint.pt") and fresh.step == 2
    assert not fresh.resume(tmp_path / "missing.pt")


def test_an_interrupted_run_leaves_a_checkpoint_at_the_step_it_reached(body, data, tmp_path):
    trainer = PinaTrainer(body, data, TINY, "inputs")

    def interrupt(step, total, losses):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.run(tmp_path / "checkpoint.pt", report=interrupt)
    resumed = PinaTrainer(body, data, TINY, "inputs")
    assert resumed.resume(tmp_path / "checkpoint.pt") and resumed.step == 3


def test_pretraining_learns_the_canonical_body(body, data):
    config = replace(TINY, pretrain_steps=60, joint_steps=0, pretrain_points=512, lr=3e-3)
    trainer = PinaTrainer(body, data, config)
    first = trainer.train_step()
    for _ in range(config.pretrain_steps - 1):
        last = trainer.train_step()
    assert last["canonical_sdf"] < 0.5 * first["canonical_sdf"]
    assert last["skinning"] < first["skinning"]


def test_a_joint_step_moves_poses_and_both_networks(body, data):
    trainer = PinaTrainer(body, data, replace(TINY, pretrain_steps=0, joint_steps=1))
    before = {name: value.clone() for name, value in trainer.avatar.state_dict().items()}
    losses = trainer.train_step()
    assert {"sdf", "normal", "off", "eikonal", "skinning", "pose", "found"} <= losses.keys()
    assert losses["found"] > 0.9
    assert trainer.pose_delta.grad is not None and trainer.pose_delta.grad.abs().sum() > 0
    assert trainer.trans_delta.grad.abs().sum() > 0
    after = trainer.avatar.state_dict()
    assert not torch.equal(before["sdf.linears.0.weight"], after["sdf.linears.0.weight"])
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("deformer.skinning."))


def test_without_pose_optimisation_poses_stay_fixed(body, data):
    trainer = PinaTrainer(body, data, replace(TINY, pretrain_steps=0, joint_steps=2, optimise_poses=False))
    trainer.run()
    assert "pose" not in trainer.history[-1] if trainer.history else True
    assert torch.equal(trainer.poses()[0], data.poses)


def test_presets_and_config_round_trip():
    assert set(PRESETS) == {"fast", "default", "quality"}
    for config in PRESETS.values():
        assert PinaConfig.from_dict(config.to_dict()) == config
    assert preset("fast", joint_steps=7, lr=None).joint_steps == 7
    assert preset("fast", joint_steps=7).lr == PRESETS["fast"].lr
    assert isinstance(preset("quality").weights, LossWeights)
    with pytest.raises(KeyError, match="unknown preset"):
        preset("slow")


def test_joint_steps_move_only_the_frames_they_draw(body, data):
    trainer = PinaTrainer(body, data, replace(TINY, pretrain_steps=0, joint_steps=4, frames_per_step=1))
    moved = []
    for _ in range(4):
        before = trainer.poses()[0].detach().clone()
        trainer.train_step()
        moved.append(int((trainer.poses()[0].detach() != before).any(1).sum()))
    # Adam's momentum would move every frame drawn once so far; only the drawn frame may move
    assert moved == [1, 1, 1, 1]
