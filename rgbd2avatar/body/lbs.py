"""Linear blend skinning on SMPL's kinematic tree, one small function per step.

Shapes: F frames, V vertices, J joints (24), S shape coefficients.
"""

from __future__ import annotations

import torch


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula, smooth at zero.

    Args:
        aa: (..., 3) axis-angle vectors (axis × angle in radians).
    Returns:
        (..., 3, 3) rotation matrices.
    """
    theta2 = (aa * aa).sum(-1, keepdim=True)[..., None]  # (..., 1, 1)
    theta = torch.sqrt(theta2.clamp_min(1e-24))
    small = theta2 < 1e-8
    # sin(t)/t and (1 - cos t)/t² with their Taylor series near zero.
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2.clamp_min(1e-24))
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(skew)
    return eye + a * skew + b * (skew @ skew)


def matrix_to_quaternion(rot: torch.Tensor) -> torch.Tensor:
    """Unit quaternions (w, x, y, z), w ≥ 0, of rotation matrices, stable for every angle.

    Each of the four candidate formulas divides by one of 4w², 4x², 4y², 4z²; the one with the
    largest denominator is taken (Shepperd's method).

    Args:
        rot: (..., 3, 3) rotation matrices.
    Returns:
        (..., 4) quaternions.
    """
    m = rot
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    four_sq = torch.stack(
        [
            1 + trace,
            1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
            1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
            1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2],
        ],
        -1,
    )
    sx, sy, sz = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    px, py, pz = m[..., 1, 0] + m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] + m[..., 1, 2]
    candidates = torch.stack(
        [
            torch.stack([four_sq[..., 0], sx, sy, sz], -1),
            torch.stack([sx, four_sq[..., 1], px, py], -1),
            torch.stack([sy, px, four_sq[..., 2], pz], -1),
            torch.stack([sz, py, pz, four_sq[..., 3]], -1),
        ],
        -2,
    )  # (..., 4, 4): row i is 4·q_i·q
    best = four_sq.argmax(-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4))[..., 0, :]
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def matrix_to_axis_angle(rot: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`axis_angle_to_matrix`, angles in [0, π], stable near 0 and π.

    Args:
        rot: (..., 3, 3) rotation matrices.
    Returns:
        (..., 3) axis-angle vectors.
    """
    q = matrix_to_quaternion(rot)
    sin_half = q[..., 1:].norm(dim=-1, keepdim=True)
    angle = 2.0 * torch.atan2(sin_half, q[..., :1])
    scale = torch.where(sin_half < 1e-6, 2.0 / q[..., :1].clamp_min(1e-12), angle / sin_half.clamp_min(1e-12))
    return q[..., 1:] * scale


def rigid(rot: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """Stack rotations (..., 3, 3) and translations (..., 3) into (..., 4, 4) transforms."""
    top = torch.cat([rot, trans[..., None]], -1)
    bottom = top.new_zeros(*top.shape[:-2], 1, 4)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], -2)


def forward_kinematics(
    rots: torch.Tensor, joints: torch.Tensor, parents: list[int] | tuple[int, ...]
) -> torch.Tensor:
    """World transforms of every joint frame.

    Args:
        rots: (F, J, 3, 3) local rotations (root first); parents precede children.
        joints: (F, J, 3) rest-pose joint positions.
        parents: J parent indices, -1 for the root.
    Returns:
        (F, J, 4, 4) transforms of the joint frames (rest frames are world-aligned).
    """
    offsets = joints.clone()
    offsets[:, 1:] = joints[:, 1:] - joints[:, list(parents[1:])]
    local = rigid(rots, offsets)
    chain = [local[:, 0]]
    for j in range(1, len(parents)):
        chain.append(chain[parents[j]] @ local[:, j])
    return torch.stack(chain, 1)


def relative_transforms(world: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
    """Transforms taking rest-pose points to posed points, per bone.

    Args:
        world: (F, J, 4, 4) joint-frame transforms from :func:`forward_kinematics`.
        joints: (F, J, 3) rest-pose joint positions.
    Returns:
        (F, J, 4, 4) G_j · T(-j_rest): maps a rest point rigidly attached to bone j to its pose.
    """
    rel = world.clone()
    rel[..., :3, 3] = world[..., :3, 3] - (world[..., :3, :3] @ joints[..., None])[..., 0]
    return rel


def skin_points(points: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Linear blend skinning: x' = (Σ_j w_j A_j) x.

    The blend is one matrix product of the weights with the transforms' top 3×4 rows.

    Args:
        points: (F, N, 3) or (N, 3) rest points.
        weights: (F, N, J) or (N, J) skinning weights (rows sum to 1).
        transforms: (F, J, 4, 4) per-bone transforms.
    Returns:
        (F, N, 3) skinned points.
    """
    frames, joints = transforms.shape[:2]
    rows = transforms[..., :3, :].reshape(frames, joints, 12)
    blended = torch.matmul(weights, rows).unflatten(-1, (3, 4))  # (F, N, 3, 4)
    pts = points.expand(frames, *points.shape[-2:])
    return torch.einsum("fnij,fnj->fni", blended[..., :3], pts) + blended[..., 3]


def pose_feature(rots: torch.Tensor) -> torch.Tensor:
    """SMPL's pose-corrective feature: flattened (R_j - I) of the non-root joints.

    Args:
        rots: (F, J, 3, 3) local rotations.
    Returns:
        (F, (J-1)·9) features.
    """
    eye = torch.eye(3, dtype=rots.dtype, device=rots.device)
    return (rots[:, 1:] - eye).reshape(rots.shape[0], -1)
