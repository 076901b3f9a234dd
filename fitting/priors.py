"""Priors of the per-frame body fit: pose (L2 + anatomical joint limits), shape, temporal smoothness.

Joint frames are SMPL's (:mod:`rgbd2avatar.body.skeleton`): each joint's local rotation is expressed
in its parent's frame, which in the rest (T-)pose is aligned with the body's axes — x towards the
subject's left, y up, z forward (the way the body faces). The limits below bound each axis-angle
component of a joint's local rotation. An axis-angle component equals the rotation about that axis
when the rotation is mostly about one axis (a knee or elbow bending, a spine twisting); for
combined rotations it is an approximation, which is why the ranges are generous and the penalty is
a soft hinge.

Signs, worked out from the rest pose (left side; the right side is its mirror image, which maps
an axis-angle (x, y, z) to (x, −y, −z)):

- hip: −x swings the thigh forward (flexion), +x backward; +z lifts it sideways (abduction);
  y turns it about its own axis.
- knee: +x bends the shank backward (flexion); a negative x bends the knee backward
  (hyperextension), which the range allows only slightly. y and z (a sideways knee) are small.
- ankle: +x points the toes down (plantarflexion), −x lifts them (dorsiflexion).
- spine1/2/3, neck, head: +x bends forward, y twists about the vertical axis, z bends sideways.
  Each spine joint may twist ±0.5 rad (±29°), about a third of the whole trunk's range.
- collar (clavicle): small motions; +z raises the shoulder.
- shoulder: wide (the glenohumeral joint); −y brings the arm forward, +z raises it, −z lowers it
  (−π/2 is the arm hanging at the side); x twists the arm about its length.
- elbow: a hinge: −y bends the forearm forward (flexion) from the T-pose's palms-down arm;
  x is the forearm's twist (pronation/supination, which SMPL puts at the elbow); z is small.
- wrist: ±z flexes/extends the palm, y deviates it sideways, x twists.

Shapes: F frames, J = 24 joints, S shape parameters.
"""

from __future__ import annotations

import torch

from rgbd2avatar.body.model import BodyModel
from rgbd2avatar.body.skeleton import JOINT_INDEX, JOINT_NAMES, NUM_JOINTS

Range = tuple[float, float]

JOINT_LIMITS: dict[str, tuple[Range, Range, Range]] = {
    "hip": ((-2.4, 0.6), (-0.9, 0.9), (-0.6, 1.3)),
    "knee": ((-0.1, 2.7), (-0.5, 0.5), (-0.15, 0.15)),
    "ankle": ((-0.8, 1.0), (-0.6, 0.6), (-0.5, 0.5)),
    "foot": ((-0.8, 0.6), (-0.3, 0.3), (-0.3, 0.3)),
    "spine1": ((-0.5, 0.9), (-0.5, 0.5), (-0.5, 0.5)),
    "spine2": ((-0.5, 0.9), (-0.5, 0.5), (-0.5, 0.5)),
    "spine3": ((-0.5, 0.9), (-0.5, 0.5), (-0.5, 0.5)),
    "neck": ((-0.7, 0.8), (-0.9, 0.9), (-0.6, 0.6)),
    "head": ((-0.7, 0.8), (-0.9, 0.9), (-0.6, 0.6)),
    "collar": ((-0.4, 0.4), (-0.5, 0.5), (-0.4, 0.6)),
    "shoulder": ((-1.7, 1.7), (-2.2, 1.0), (-1.8, 2.0)),
    "elbow": ((-1.6, 1.6), (-2.7, 0.1), (-0.2, 0.2)),
    "wrist": ((-1.0, 1.0), (-0.7, 0.7), (-1.4, 1.3)),
    "hand": ((-0.5, 0.5), (-0.5, 0.5), (-0.8, 0.8)),
}
"""Per-joint (x, y, z) axis-angle ranges in radians, for the left side and the midline joints
(names without ``left_``/``right_``); the root is unbounded."""

TWISTING = ("spine1", "spine2", "spine3", "left_hip", "right_hip")
"""Joints whose twist about the vertical axis the pose prior makes :data:`TWIST_SCALE` times dearer."""
TWIST_SCALE = 25.0

STIFF = ("neck", "left_collar", "right_collar")
"""Joints whose every axis the pose prior makes :data:`STIFF_SCALE` times dearer."""
STIFF_SCALE = 10.0

PHENOTYPE_RANGE = (0.0, 1.0)
"""Anny's phenotype parameters are meaningful in [0, 1]."""


def joint_limits(
    dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds of every joint's axis-angle components.

    Returns:
        lower, upper: (J, 3); the root's are ∓inf. Right-side joints mirror the left side's
        ranges: (x, y, z) ↦ (x, −y, −z), so y and z ranges are negated and swapped.
    """
    lower = torch.full((NUM_JOINTS, 3), -torch.inf, dtype=dtype, device=device)
    upper = torch.full((NUM_JOINTS, 3), torch.inf, dtype=dtype, device=device)
    mirror = torch.tensor([1.0, -1.0, -1.0], dtype=dtype, device=device)
    for name in JOINT_NAMES[1:]:
        side, base = name.split("_", 1) if name.startswith(("left_", "right_")) else ("", name)
        bounds = torch.tensor(JOINT_LIMITS[base], dtype=dtype, device=device)  # (3, 2)
        if side == "right":
            bounds = torch.where(mirror[:, None] < 0, -bounds.flip(-1), bounds)
        lower[JOINT_INDEX[name]], upper[JOINT_INDEX[name]] = bounds[:, 0], bounds[:, 1]
    return lower, upper


def hinge_squared(
    values: torch.Tensor, lower: torch.Tensor | float, upper: torch.Tensor | float
) -> torch.Tensor:
    """Squared distance of values outside [lower, upper] (0 inside), elementwise, broadcasting."""
    return (lower - values).clamp_min(0.0) ** 2 + (values - upper).clamp_min(0.0) ** 2


def pose_prior_scales(
    dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """(69,) per-component scales of :func:`pose_l2` for joints 1..23: 1, except
    :data:`TWIST_SCALE` for the twists of the spine and the hips (about the vertical y axis) and
    :data:`STIFF_SCALE` for every axis of the neck and the collars.

    A turn of the whole body can be mimicked by twisting the three spine joints and the hips a
    little each, which a depth camera and 2D keypoints barely tell apart from turning the root;
    making those twists expensive leaves the turn to the root, where it belongs. Likewise a collar
    rotated one way and its shoulder the other, or a tilted neck under a counter-tilted head, move
    the joints and the clothed surface barely at all; the collars and the neck move little in
    most motions, so the prior leaves such pairs of rotations to the shoulder and the head.
    """
    scales = torch.ones(NUM_JOINTS, 3, dtype=dtype, device=device)
    for name in TWISTING:
        scales[JOINT_INDEX[name], 1] = TWIST_SCALE
    for name in STIFF:
        scales[JOINT_INDEX[name]] = STIFF_SCALE
    return scales[1:].reshape(-1)


def pose_l2(body_pose: torch.Tensor, scales: torch.Tensor | None = None) -> torch.Tensor:
    """L2 prior on the body joints' axis-angles (pulls towards the rest pose).

    Args:
        body_pose: (F, 69) axis-angles of joints 1..23 (the pose without its root);
        scales: (69,) per-component weights (:func:`pose_prior_scales`), or None for all 1.
    Returns:
        (F,) Σ s θ².
    """
    squared = body_pose * body_pose
    return (squared if scales is None else squared * scales).sum(-1)


def joint_limit_penalty(pose: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Soft joint limits: squared hinge on every axis-angle component outside its range.

    Args:
        pose: (F, 72) axis-angle poses; lower, upper: (J, 3) from :func:`joint_limits`.
    Returns:
        (F,) Σ over joints and axes of the squared excess (radians²); 0 within range.
    """
    angles = pose.reshape(pose.shape[0], NUM_JOINTS, 3)
    return hinge_squared(angles, lower, upper).sum((-1, -2))


def shape_prior(shape: torch.Tensor, default: torch.Tensor) -> torch.Tensor:
    """Squared distance of shape parameters (S,) to the model's default shape (S,): a scalar."""
    return ((shape - default) ** 2).sum()


def shape_bounds(body: BodyModel) -> tuple[float, float] | None:
    """The valid range of the model's shape parameters: anny's phenotypes lie in [0, 1]; SMPL's
    betas are unbounded (None)."""
    return PHENOTYPE_RANGE if body.name == "anny" else None


def shape_bounds_penalty(shape: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    """Squared hinge of shape parameters (S,) outside ``bounds``: a scalar (0 without bounds)."""
    if bounds is None:
        return shape.new_zeros(())
    return hinge_squared(shape, bounds[0], bounds[1]).sum()


def relative_rotation_vectors(rots: torch.Tensor) -> torch.Tensor:
    """Per-joint rotation from each frame to the next, as a rotation vector sin(θ)·axis.

    The rotation R_tᵀ R_{t+1} is the change of a joint's rotation in its own frame; its
    skew-symmetric part gives sin(θ)·axis, which is θ·axis for the small inter-frame rotations of
    a video (within 0.2 % below 6°) and, unlike an axis-angle of the absolute rotation, does not
    wrap at π (the root in a camera frame sits near π).

    Args:
        rots: (F, J, 3, 3) rotations of consecutive frames.
    Returns:
        (F − 1, J, 3).
    """
    relative = rots[:-1].transpose(-1, -2) @ rots[1:]
    skew = 0.5 * (relative - relative.transpose(-1, -2))
    return torch.stack([skew[..., 2, 1], skew[..., 0, 2], skew[..., 1, 0]], -1)


def pose_smoothness(rots: torch.Tensor) -> torch.Tensor:
    """Temporal smoothness of rotations: squared change of each joint's inter-frame rotation.

    Zero for every joint turning at a constant rate about a fixed axis (R_t = R_0 exp(t ω)), in
    particular for a pose held still.

    Args:
        rots: (F, J, 3, 3) rotations of consecutive frames (root first, then local joints).
    Returns:
        (F − 2,) Σ over joints of |v_{t+1} − v_t|² for the triple of frames (t, t+1, t+2), where
        v are :func:`relative_rotation_vectors` (radians²).
    """
    velocity = relative_rotation_vectors(rots)
    return ((velocity[1:] - velocity[:-1]) ** 2).sum((-1, -2))


def translation_smoothness(trans: torch.Tensor) -> torch.Tensor:
    """Second differences of translations (F, 3) → (F − 2,) |t_{i+2} − 2 t_{i+1} + t_i|² (metres²)."""
    accel = trans[2:] - 2.0 * trans[1:-1] + trans[:-2]
    return (accel * accel).sum(-1)
