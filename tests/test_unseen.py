"""Joints the camera does not see: their support and their rotations filled in from other frames."""

import math

import torch

from fitting.unseen import fill_unseen, joint_support, subtree_matrix
from rgbd2avatar.body.lbs import axis_angle_to_matrix, matrix_to_axis_angle
from rgbd2avatar.body.skeleton import JOINT_INDEX, NUM_JOINTS, PARENTS


def rotation_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angles between axis-angle rotations (..., 3): 2 asin(‖R_a − R_b‖_F / 2√2), no arccos
    near 1 to lose float32's precision."""
    difference = (axis_angle_to_matrix(a) - axis_angle_to_matrix(b)).flatten(-2).norm(dim=-1)
    return 2 * torch.asin((difference / (2 * math.sqrt(2))).clamp(max=1))


def turning_poses(frames: int, seed: int = 0) -> torch.Tensor:
    """(F, 72) poses whose every joint turns at a constant angular velocity about a fixed axis."""
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(NUM_JOINTS, 3, generator=generator) * 0.5
    rate = torch.randn(NUM_JOINTS, 3, generator=generator) * 0.1
    steps = torch.arange(frames, dtype=torch.float32)[:, None, None] * rate
    rotations = axis_angle_to_matrix(start) @ axis_angle_to_matrix(steps)
    return matrix_to_axis_angle(rotations).reshape(frames, -1)


def test_subtrees_follow_the_kinematic_tree():
    subtree = subtree_matrix()
    assert torch.equal(subtree.diagonal(), torch.ones(NUM_JOINTS))
    assert subtree[0].sum() == NUM_JOINTS  # the pelvis moves everything
    for joint, parent in enumerate(PARENTS[1:], start=1):
        assert torch.all(subtree[parent] >= subtree[joint])  # a parent moves what its child moves
    hand = JOINT_INDEX["right_hand"]
    assert subtree[:, hand].nonzero()[:, 0].tolist() == sorted(
        [0, 3, 6, 9]
        + [
            JOINT_INDEX[n]
            for n in ("right_collar", "right_shoulder", "right_elbow", "right_wrist", "right_hand")
        ]
    )


def test_support_counts_matched_points_on_every_joint_that_moves_them():
    part = torch.tensor([JOINT_INDEX["right_hand"], JOINT_INDEX["left_knee"], 0])
    vertex = torch.tensor([[0, 0, 1, 2], [2, 2, 2, 2]])
    matched = torch.tensor([[True, True, True, False], [True, True, False, False]])
    support = joint_support(vertex, matched, part)
    assert support.shape == (2, NUM_JOINTS)
    assert support[0, JOINT_INDEX["right_shoulder"]] == 2 and support[0, JOINT_INDEX["left_hip"]] == 1
    assert support[0, 0] == 3 and support[1, 0] == 2 and support[1, JOINT_INDEX["spine1"]] == 0


def test_unseen_rotations_follow_a_constant_angular_velocity_exactly():
    truth = turning_poses(12)
    seen = torch.ones(12, NUM_JOINTS, dtype=torch.bool)
    elbow, knee = JOINT_INDEX["right_elbow"], JOINT_INDEX["left_knee"]
    seen[3:8, elbow] = False  # a gap between seen frames
    seen[:2, knee] = seen[9:, knee] = False  # runs at both ends
    noisy = truth.clone().view(12, NUM_JOINTS, 3)
    noisy[~seen] += 0.7  # what the fit made of them
    filled = fill_unseen(noisy.reshape(12, -1), seen).view(12, NUM_JOINTS, 3)
    assert torch.equal(filled[seen], noisy[seen])  # seen rotations are left alone
    assert rotation_distance(filled[3:8, elbow], truth.view(12, -1, 3)[3:8, elbow]).max() < 1e-5
    assert rotation_distance(filled[:2, knee], truth.view(12, -1, 3)[2, knee]).max() < 1e-5
    assert rotation_distance(filled[9:, knee], truth.view(12, -1, 3)[8, knee]).max() < 1e-5


def test_the_root_and_joints_never_seen_keep_their_rotations():
    poses = turning_poses(5, seed=1)
    seen = torch.ones(5, NUM_JOINTS, dtype=torch.bool)
    seen[:, JOINT_INDEX["head"]] = False
    seen[2, 0] = False
    assert torch.equal(fill_unseen(poses, seen), poses)


def test_filling_takes_the_short_way_round():
    poses = torch.zeros(3, 72)
    wrist = JOINT_INDEX["left_wrist"]
    poses[0, 3 * wrist + 2] = math.pi - 0.1
    poses[2, 3 * wrist + 2] = -(math.pi - 0.1)  # 0.2 rad apart through π
    seen = torch.ones(3, NUM_JOINTS, dtype=torch.bool)
    seen[1, wrist] = False
    middle = fill_unseen(poses, seen).view(3, NUM_JOINTS, 3)[1, wrist]
    assert rotation_distance(middle, torch.tensor([0.0, 0.0, math.pi])) < 1e-4
