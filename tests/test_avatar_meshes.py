"""Posed meshes of an avatar, fast (canonical MISE + forward skinning) and exact (MISE of the posed
SDF by correspondence search), on an avatar whose SDF is the exact signed distance to the
canonical body and whose skinning field is pretrained to the body's weights: both agree with
each other and with the posed body for a mild pose."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rgbd2avatar.avatar.avatar import Avatar, AvatarSpec
from rgbd2avatar.avatar.meshes import (
    NOT_FOUND_SDF,
    posed_bounds,
    posed_mesh_exact,
    posed_mesh_fast,
    posed_meshes,
    posed_sdf_function,
    skinning_weights,
)
from rgbd2avatar.avatar.networks import pretrain_skinning
from rgbd2avatar.body import load_body_model
from rgbd2avatar.body.skeleton import JOINT_INDEX
from rgbd2avatar.geometry import MeshQuery

SPEC = AvatarSpec(sdf_hidden=24, sdf_layers=2, sdf_freqs=1, skin_hidden=16, skin_layers=2)


class MeshSdf(torch.nn.Module):
    """The signed distance to a fixed mesh, in the SDF network's interface (pose ignored):
    (B, N, 3) points, (B, P) pose features → (B, N)."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        super().__init__()
        self.query = MeshQuery(vertices, faces)

    def forward(self, points: torch.Tensor, pose_feat: torch.Tensor) -> torch.Tensor:
        flat = points.detach().reshape(-1, 3).cpu().numpy()
        return torch.from_numpy(self.query.signed_distance(flat)).to(points).view(points.shape[:-1])


class PoseShell(MeshSdf):
    """:class:`MeshSdf` grown by ``THICKNESS`` metres per unit of the pose features' L1 norm: a
    surface that depends on the pose condition in a known way."""

    THICKNESS = 0.01

    def forward(self, points: torch.Tensor, pose_feat: torch.Tensor) -> torch.Tensor:
        return super().forward(points, pose_feat) - self.THICKNESS * pose_feat.abs().sum(-1)[:, None]


@pytest.fixture(scope="module", autouse=True)
def one_thread_module():
    """One intra-op thread for the whole module (conftest's ``one_thread`` is per test and so does
    not cover the module fixtures): on a busy machine the thread hand-offs of the skinning
    pretraining's and the correspondence search's small operations would dominate the time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def body():
    return load_body_model("anny")


@pytest.fixture(scope="module")
def avatar(body) -> Avatar:
    shape = body.default_shape
    torch.manual_seed(0)
    avatar = Avatar(body, shape, SPEC)
    with torch.no_grad():
        canonical = body.canonical(shape).vertices[0]
    generator = torch.Generator().manual_seed(0)
    pretrain_skinning(
        avatar.skinning, canonical, body.weights, steps=200, lr=1e-2, batch=1024, generator=generator
    )
    avatar.sdf = MeshSdf(canonical.numpy(), body.faces.numpy())
    return avatar


@pytest.fixture(scope="module")
def mild_pose() -> tuple[torch.Tensor, torch.Tensor]:
    """A bent left elbow, a lowered left arm, a lifted left leg, moved 10 cm to the side."""
    pose = torch.zeros(24, 3)
    pose[JOINT_INDEX["left_elbow"]] = torch.tensor([0.0, -0.6, 0.0])
    pose[JOINT_INDEX["left_shoulder"]] = torch.tensor([0.0, 0.0, -0.5])
    pose[JOINT_INDEX["left_hip"]] = torch.tensor([-0.4, 0.0, 0.0])
    return pose.reshape(72), torch.tensor([0.1, 0.0, 0.0])


def surface_distances(a, b) -> np.ndarray:
    """Distances of mesh a's vertices to mesh b's surface and of b's to a's, concatenated."""
    to_b = MeshQuery(b.vertices, b.faces).closest_points(a.vertices).distances
    to_a = MeshQuery(a.vertices, a.faces).closest_points(b.vertices).distances
    return np.concatenate([to_b, to_a])


def test_fast_and_exact_posed_meshes_agree_for_a_mild_pose(avatar, body, mild_pose):
    pose, trans = mild_pose
    fast = posed_mesh_fast(avatar, pose, trans, resolution=64)
    exact = posed_mesh_exact(avatar, pose, trans, resolution=64, initial_resolution=16)
    between = surface_distances(fast, exact)
    assert between.mean() < 0.003 and np.percentile(between, 95) < 0.01
    with torch.no_grad():
        truth = body(pose[None], avatar.shape, trans[None]).vertices[0].numpy()

    class Posed:
        vertices, faces = truth, body.faces.numpy()

    for mesh in (fast, exact):
        assert surface_distances(mesh, Posed).mean() < 0.012
    low, high = posed_bounds(avatar, pose, trans)
    assert np.all(exact.vertices > low) and np.all(exact.vertices < high)


def test_posed_sdf_of_far_points_is_the_not_found_value(avatar, mild_pose):
    pose, trans = mild_pose
    sdf = posed_sdf_function(avatar, pose, trans)
    with torch.no_grad():
        pelvis = avatar.body(pose[None], avatar.shape, trans[None]).joints[0, 0]
    points = torch.stack([pelvis, pelvis + torch.tensor([0.0, 0.0, 0.5]), torch.tensor([9.0, 9.0, 9.0])])
    values = sdf(points)
    assert values[0] < 0  # inside the belly
    assert 0.3 < values[1] < 0.5  # half a metre in front of the pelvis
    assert values[2] == NOT_FOUND_SDF


def test_posed_bounds_hold_the_posed_body_with_padding(avatar, mild_pose):
    pose, trans = mild_pose
    low, high = posed_bounds(avatar, pose, trans)
    with torch.no_grad():
        vertices = avatar.body(pose[None], avatar.shape, trans[None]).vertices[0].numpy()
    np.testing.assert_allclose(low, vertices.min(0) - 0.15, atol=1e-5)
    np.testing.assert_allclose(high, vertices.max(0) + 0.15, atol=1e-5)


def test_fast_sequences_extract_again_only_when_the_pose_condition_changes(avatar):
    poses = torch.zeros(3, 72)
    poses[1, :3] = torch.tensor([0.0, 1.0, 0.0])  # turned: same condition, same canonical mesh
    poses[2, JOINT_INDEX["right_elbow"] * 3 + 1] = 0.5
    trans = torch.zeros(3, 3)
    trans[1, 2] = 1.0
    meshes = list(posed_meshes(avatar, poses, trans, resolution=32))
    assert meshes[1].extraction is meshes[0].extraction
    assert meshes[2].extraction is not meshes[0].extraction
    np.testing.assert_array_equal(meshes[1].faces, meshes[0].faces)
    assert abs((meshes[1].vertices - meshes[0].vertices)[:, 2].mean() - 1.0) < 0.05


def test_skinning_weights_follow_the_body(avatar, body):
    with torch.no_grad():
        vertices = body.canonical(avatar.shape).vertices[0].numpy()
    weights = skinning_weights(avatar, vertices)
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-5)
    assert (weights.argmax(1) == body.weights.argmax(1).numpy()).mean() > 0.8


def test_the_sdf_condition_is_separate_from_the_pose_skinned_to(avatar, body, mild_pose, monkeypatch):
    pose, trans = mild_pose
    with torch.no_grad():
        canonical = body.canonical(avatar.shape).vertices[0]
    monkeypatch.setattr(avatar, "sdf", PoseShell(canonical.numpy(), body.faces.numpy()))
    rest = torch.zeros(72)
    shell = PoseShell.THICKNESS * float(pose[3:].abs().sum() / np.pi)
    with torch.no_grad():
        pelvis = avatar.body(pose[None], avatar.shape, trans[None]).joints[0, 0]
    points = torch.stack([pelvis, pelvis + torch.tensor([0.0, 0.0, 0.3])])
    own = posed_sdf_function(avatar, pose, trans)(points)
    at_rest = posed_sdf_function(avatar, pose, trans, condition=rest)(points)
    np.testing.assert_allclose((at_rest - own).numpy(), shell, atol=1e-5)
    poses = torch.stack([pose, 0.5 * pose, rest])
    meshes = list(posed_meshes(avatar, poses, trans.expand(3, 3), resolution=32, condition=rest))
    assert all(mesh.extraction is meshes[0].extraction for mesh in meshes)  # one condition, one mesh
    thick = posed_mesh_fast(avatar, pose, trans, resolution=32)
    gap = MeshQuery(meshes[0].vertices, meshes[0].faces).signed_distance(thick.vertices)
    assert abs(np.median(gap) - shell) < 0.2 * shell  # the own condition's surface stands further out


def test_avatar_transforms_are_the_bodys_canonical_to_posed(avatar, body, mild_pose):
    pose, trans = mild_pose[0][None], mild_pose[1][None]
    expected = body.canonical_to_posed(pose, avatar.shape, trans)
    assert torch.allclose(avatar.transforms(pose, trans), expected, atol=1e-6)
