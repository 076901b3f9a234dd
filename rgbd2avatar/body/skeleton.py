"""SMPL's 24-joint kinematic tree, shared by every body model of the tool.

Coordinates follow SMPL: y up, the body faces +z, the subject's left is +x. A pose is 72
axis-angle numbers: the root's rotation (3) then one local rotation per joint 1..23 (23×3),
each expressed in its parent's frame, which in the rest pose is aligned with the world axes.
"""

from __future__ import annotations

import torch

JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)  # fmt: skip
PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21,
)  # fmt: skip
NUM_JOINTS = 24
POSE_DIM = 3 * NUM_JOINTS

JOINT_INDEX: dict[str, int] = {name: i for i, name in enumerate(JOINT_NAMES)}


def mirror_joint_permutation() -> list[int]:
    """Index of each joint's left/right counterpart (itself for joints on the midline)."""
    perm = []
    for name in JOINT_NAMES:
        if name.startswith("left_"):
            perm.append(JOINT_INDEX["right_" + name[5:]])
        elif name.startswith("right_"):
            perm.append(JOINT_INDEX["left_" + name[6:]])
        else:
            perm.append(JOINT_INDEX[name])
    return perm


def mirror_pose(pose: torch.Tensor) -> torch.Tensor:
    """Pose of the body reflected through the x = 0 plane (left ↔ right).

    Reflecting by M = diag(-1, 1, 1) maps a rotation R to M R M, i.e. axis-angle (x, y, z) to
    (x, -y, -z); joints swap with their counterparts.

    Args:
        pose: (..., 72) axis-angle pose.
    Returns:
        (..., 72) mirrored pose.
    """
    aa = pose.reshape(*pose.shape[:-1], NUM_JOINTS, 3)[..., mirror_joint_permutation(), :]
    sign = aa.new_tensor([1.0, -1.0, -1.0])
    return (aa * sign).reshape(pose.shape)
