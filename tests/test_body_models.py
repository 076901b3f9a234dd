"""Behaviour every body model shares: SMPL poses drive `anny` and SMPL the same way."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from rgbd2avatar.body import canonical_pose, load_body_model
from rgbd2avatar.body.lbs import axis_angle_to_matrix
from rgbd2avatar.body.skeleton import JOINT_INDEX, mirror_pose
from tests.smpl_fixture import smpl_arrays, write_smpl_model

J = JOINT_INDEX


@pytest.fixture(scope="module", params=["anny", "smpl"])
def body(request, tmp_path_factory):
    if request.param == "anny":
        return load_body_model("anny")
    # A left/right symmetric SMPL-format file: rigid blobs, no shape or pose correctives.
    arrays = smpl_arrays()
    owner = arrays["weights"].argmax(1)
    model_dir = tmp_path_factory.mktemp("smpl")
    write_smpl_model(
        model_dir / "SMPL_NEUTRAL.pkl",
        weights=np.eye(24)[owner],
        shapedirs=np.zeros_like(arrays["shapedirs"]),
        posedirs=np.zeros_like(arrays["posedirs"]),
    )
    return load_body_model("smpl", model_dir=model_dir)


def pose_with(**rotations: tuple[float, float, float]) -> torch.Tensor:
    """(1, 72) pose with the named joints' axis-angle rotations, others zero."""
    pose = torch.zeros(1, 24, 3)
    for name, aa in rotations.items():
        pose[0, J[name]] = torch.tensor(aa)
    return pose.reshape(1, 72)


def rotate_about(point: torch.Tensor, centre: torch.Tensor, aa: tuple[float, float, float]) -> torch.Tensor:
    return axis_angle_to_matrix(torch.tensor(aa)) @ (point - centre) + centre


def test_zero_pose_reproduces_the_template(body):
    out = body(torch.zeros(1, 72))
    verts, joints = body.rest()
    assert torch.allclose(out.vertices, verts, atol=1e-6)
    assert torch.allclose(out.joints, joints, atol=1e-6)


def test_lowering_the_left_arm_moves_the_left_wrist_down_and_nothing_on_the_right(body):
    aa = (0.0, 0.0, -math.pi / 2)
    out = body(pose_with(left_shoulder=aa))
    rest_verts, rest_joints = body.rest()
    shoulder, wrist = rest_joints[0, J["left_shoulder"]], rest_joints[0, J["left_wrist"]]
    assert torch.allclose(out.joints[0, J["left_wrist"]], rotate_about(wrist, shoulder, aa), atol=1e-5)
    assert out.joints[0, J["left_wrist"], 1] < shoulder[1] - 0.3  # below the shoulder
    hand = body.part_labels == J["left_hand"]
    assert (out.vertices[0, hand, 1] < rest_verts[0, hand, 1] - 0.3).all()
    right = torch.isin(
        body.part_labels, torch.tensor([J["right_shoulder"], J["right_elbow"], J["right_wrist"]])
    )
    assert torch.allclose(out.vertices[0, right], rest_verts[0, right], atol=1e-6)


def test_bending_the_right_knee_moves_the_right_ankle_backwards(body):
    aa = (math.pi / 2, 0.0, 0.0)
    out = body(pose_with(right_knee=aa))
    _, rest_joints = body.rest()
    knee, ankle = rest_joints[0, J["right_knee"]], rest_joints[0, J["right_ankle"]]
    moved = out.joints[0, J["right_ankle"]]
    assert torch.allclose(moved, rotate_about(ankle, knee, aa), atol=1e-5)
    assert moved[2] < knee[2] - 0.25  # behind the knee (the body faces +z)
    assert torch.allclose(out.joints[0, J["left_ankle"]], rest_joints[0, J["left_ankle"]], atol=1e-6)


def test_turning_the_root_turns_the_whole_body(body):
    aa = (0.0, math.pi / 2, 0.0)  # quarter turn about the vertical: facing +z → facing +x
    out = body(pose_with(pelvis=aa))
    rest_verts, rest_joints = body.rest()
    expected = (
        axis_angle_to_matrix(torch.tensor(aa)) @ (rest_verts[0] - rest_joints[0, 0]).T
    ).T + rest_joints[0, 0]
    assert torch.allclose(out.vertices[0], expected, atol=1e-5)


def test_a_mirrored_pose_gives_the_mirrored_body(body):
    pose = 0.3 * torch.randn(3, 72, generator=torch.Generator().manual_seed(1))
    posed = body(pose).vertices
    mirrored = body(mirror_pose(pose)).vertices
    reflect = torch.tensor([-1.0, 1.0, 1.0])
    for f in range(3):
        distance, _ = cKDTree(mirrored[f].numpy()).query((posed[f] * reflect).numpy())
        assert distance.max() < 1e-3


def test_batch_results_equal_per_frame_results(body):
    gen = torch.Generator().manual_seed(2)
    pose, trans = 0.4 * torch.randn(4, 72, generator=gen), torch.randn(4, 3, generator=gen)
    batch = body(pose, None, trans)
    for f in range(4):
        single = body(pose[f : f + 1], None, trans[f : f + 1])
        assert torch.allclose(single.vertices[0], batch.vertices[f], atol=1e-5)
        assert torch.allclose(single.joints[0], batch.joints[f], atol=1e-5)
        assert torch.allclose(single.transforms[0], batch.transforms[f], atol=1e-5)


def test_translation_moves_everything_rigidly(body):
    pose = 0.3 * torch.randn(1, 72, generator=torch.Generator().manual_seed(3))
    trans = torch.tensor([[0.1, -0.2, 2.0]])
    assert torch.allclose(body(pose, None, trans).vertices, body(pose).vertices + trans, atol=1e-5)


def test_canonical_pose_spreads_the_legs_and_maps_to_itself(body):
    canon = body.canonical()
    _, rest_joints = body.rest()
    left, right = J["left_ankle"], J["right_ankle"]
    assert canon.joints[0, left, 0] > rest_joints[0, left, 0] + 0.1
    assert canon.joints[0, right, 0] < rest_joints[0, right, 0] - 0.1
    identity = body.canonical_to_posed(canonical_pose()[None])
    assert torch.allclose(identity, torch.eye(4).expand_as(identity), atol=1e-5)


def test_canonical_to_posed_transforms_move_canonical_joints_to_posed_joints(body):
    pose = 0.4 * torch.randn(2, 72, generator=torch.Generator().manual_seed(4))
    transforms = body.canonical_to_posed(pose)
    canon_joints = body.canonical().joints[0]
    mapped = (transforms[..., :3, :3] @ canon_joints[:, :, None])[..., 0] + transforms[..., :3, 3]
    assert torch.allclose(mapped, body(pose).joints, atol=1e-5)


def test_skinning_weights_are_a_partition_of_unity(body):
    assert (body.weights >= 0).all()
    assert torch.allclose(body.weights.sum(1), torch.ones(body.num_vertices), atol=1e-5)
    assert body.faces.min() >= 0 and body.faces.max() < body.num_vertices


def test_moving_params_moves_the_body_rigidly(body):
    gen = torch.Generator().manual_seed(5)
    pose, trans = 0.4 * torch.randn(3, 72, generator=gen), torch.randn(3, 3, generator=gen)
    rotation = axis_angle_to_matrix(torch.tensor([0.3, -1.2, 2.0]))
    offset = torch.tensor([0.5, -1.0, 2.0])
    moved_pose, moved_trans = body.move_params(pose, trans, rotation, offset)
    expected = body(pose, None, trans).vertices @ rotation.T + offset
    assert torch.allclose(body(moved_pose, None, moved_trans).vertices, expected, atol=1e-4)


def test_joints_and_transforms_alone_match_the_posed_body(body):
    shape = body.default_shape + 0.1
    pose = 0.4 * torch.randn(3, 72, generator=torch.Generator().manual_seed(5))
    trans = torch.randn(3, 3, generator=torch.Generator().manual_seed(6))
    joints = body.rest_joints(shape)
    assert torch.allclose(joints, body.rest(shape)[1])
    assert torch.allclose(
        body.joint_transforms(pose, joints, trans), body(pose, shape, trans).transforms, atol=1e-6
    )
    canonical_transforms = body.canonical(shape).transforms
    assert torch.allclose(
        body.canonical_inverse(joints) @ canonical_transforms, torch.eye(4).expand(1, 24, 4, 4), atol=1e-5
    )


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_the_body_poses_on_every_device(body, device):
    """Everything a forward pass makes lives on the body's device (CUDA when a GPU is present)."""
    pose = 0.4 * torch.randn(2, 72, generator=torch.Generator().manual_seed(7))
    shape, trans = body.default_shape + 0.1, torch.randn(2, 3, generator=torch.Generator().manual_seed(8))
    moved = body.to(device)
    try:
        out = moved(pose.to(device), shape.to(device), trans.to(device))
        transforms = moved.canonical_to_posed(pose.to(device), shape.to(device), trans.to(device))
    finally:
        body.to("cpu")
    expected = body(pose, shape, trans)
    assert torch.allclose(out.vertices.cpu(), expected.vertices, atol=1e-5)
    assert torch.allclose(transforms.cpu(), body.canonical_to_posed(pose, shape, trans), atol=1e-5)
