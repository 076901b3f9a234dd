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


def matrix_to_axis_angle(rot: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`axis_angle_to_matrix` for angles in [0, π).

    Args:
        rot: (..., 3, 3) rotation matrices.
    Returns:
        (..., 3) axis-angle vectors.
    """
    cos = ((rot.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    theta = torch.acos(cos)
    vec = torch.stack(
        [rot[..., 2, 1] - rot[..., 1, 2], rot[..., 0, 2] - rot[..., 2, 0], rot[..., 1, 0] - rot[..., 0, 1]], -1
    )
    sin = torch.sin(theta)
    scale = torch.where(sin.abs() < 1e-6, 0.5 + theta**2 / 12.0, theta / (2.0 * sin.clamp_min(1e-12)))
    return vec * scale[..., None]


def rigid(rot: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """Stack rotations (..., 3, 3) and translations (..., 3) into (..., 4, 4) transforms."""
    top = torch.cat([rot, trans[..., None]], -1)
    bottom = top.new_zeros(*top.shape[:-2], 1, 4)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], -2)


def forward_kinematics(rots: torch.Tensor, joints: torch.Tensor, parents: list[int] | tuple[int, ...]) -> torch.Tensor:
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

    Args:
        points: (F, N, 3) or (N, 3) rest points.
        weights: (F, N, J) or (N, J) skinning weights (rows sum to 1).
        transforms: (F, J, 4, 4) per-bone transforms.
    Returns:
        (F, N, 3) skinned points.
    """
    spec = "nj,fjab->fnab" if weights.dim() == 2 else "fnj,fjab->fnab"
    blended = torch.einsum(spec, weights, transforms)  # (F, N, 4, 4)
    pts = points.expand(transforms.shape[0], *points.shape[-2:])
    return (blended[..., :3, :3] @ pts[..., None])[..., 0] + blended[..., :3, 3]


def pose_feature(rots: torch.Tensor) -> torch.Tensor:
    """SMPL's pose-corrective feature: flattened (R_j - I) of the non-root joints.

    Args:
        rots: (F, J, 3, 3) local rotations.
    Returns:
        (F, (J-1)·9) features.
    """
    eye = torch.eye(3, dtype=rots.dtype, device=rots.device)
    return (rots[:, 1:] - eye).reshape(rots.shape[0], -1)
