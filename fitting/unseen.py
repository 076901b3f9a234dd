"""Joints the camera does not see, and their rotations filled in from the frames that do.

A limb that the depth image does not show for a while (the far arm in a side view, behind the
trunk) has nothing to hold it in the body fit but keypoints a detector reports with low
confidence, temporal smoothness with the frames before it and the pose prior, which pulls towards
the rest pose (arms out in a T). On the ``small`` protocol the hidden right arm drifted up and
back while the subject turned, its wrist up to 11 cm off, and came back only frames after the
camera saw it again. A joint is *seen* in a frame when at least ``min_support`` of the frame's
ICP-matched points lie on the body part it moves (its own and every descendant's vertices); the
rotations of unseen joints are interpolated (geodesically, at constant angular velocity) between
the nearest frames before and after that see them, or held at the one on the only side there is.
A joint no frame sees keeps its fitted rotations; so does the root.

Shapes: F frames, J joints, P points, V vertices.
"""

from __future__ import annotations

import torch

from rgbd2avatar.body.lbs import axis_angle_to_matrix, matrix_to_axis_angle
from rgbd2avatar.body.skeleton import NUM_JOINTS, PARENTS


def subtree_matrix(parents: tuple[int, ...] = PARENTS) -> torch.Tensor:
    """(J, J) float: entry (j, k) is 1 when joint k is j or one of its descendants."""
    subtree = torch.eye(len(parents))
    for joint in range(len(parents) - 1, 0, -1):  # children come after their parents
        subtree[parents[joint]] += subtree[joint]
    return subtree


def joint_support(vertex: torch.Tensor, matched: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
    """(F, J) matched points on the body part each joint moves (its subtree's vertices).

    Args:
        vertex: (F, P) long, the body vertex each observed point is matched to; matched: (F, P)
            bool; part: (V,) long, the joint that moves each vertex most.
    """
    counts = vertex.new_zeros(vertex.shape[0], NUM_JOINTS, dtype=torch.float32)
    counts.scatter_add_(1, part[vertex], matched.float())
    return counts @ subtree_matrix().to(counts.device).T


def to_fill(seen: torch.Tensor) -> torch.Tensor:
    """(F, J) bool: the joint rotations :func:`fill_unseen` replaces: unseen, of a joint some frame
    sees, and not the root's; seen (F, J) bool."""
    fill = ~seen & seen.any(0, keepdim=True)
    fill[:, 0] = False
    return fill


def fill_unseen(poses: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """Poses with every unseen joint rotation interpolated from the frames that see the joint.

    Between the last frame before and the first after a run of unseen frames the rotation turns
    at constant angular velocity (spherical linear interpolation by frame index); a run at the
    start or the end of the sequence holds the nearest seen rotation. The root (joint 0) and
    joints seen in no frame keep theirs.

    Args:
        poses: (F, 72) axis-angles in frame order; seen: (F, J) bool.
    Returns:
        (F, 72), equal to ``poses`` wherever a joint is seen.
    """
    frames = poses.shape[0]
    order = torch.arange(frames, device=poses.device)[:, None].expand_as(seen)
    before = torch.cummax(torch.where(seen, order, -1), 0).values
    after = torch.cummin(torch.where(seen, order, frames).flip(0), 0).values.flip(0)
    low = torch.where(before >= 0, before, after).clamp(0, frames - 1)
    high = torch.where(after < frames, after, low).clamp(0, frames - 1)
    share = ((order - low) / (high - low).clamp_min(1)).clamp(0, 1).to(poses.dtype)
    angles = poses.reshape(frames, NUM_JOINTS, 3)
    joints = torch.arange(NUM_JOINTS, device=poses.device)[None].expand_as(seen)
    start, end = axis_angle_to_matrix(angles[low, joints]), axis_angle_to_matrix(angles[high, joints])
    turn = matrix_to_axis_angle(start.transpose(-1, -2) @ end)
    filled = matrix_to_axis_angle(start @ axis_angle_to_matrix(share[..., None] * turn))
    return torch.where(to_fill(seen)[..., None], filled, angles).reshape(frames, -1)
