"""The body-model interface shared by every model (SMPL through smplx, the free `anny` model).

Every model is a linear shape space skinned on SMPL's 24-joint tree:

    v_rest(s)   = v_template + shapedirs · c(s)            (V, 3)   rest (T-pose) vertices
    j_rest(s)   = j_template + joint_shapedirs · c(s)      (J, 3)   rest joints
    v_posed     = LBS(v_rest + posedirs · pose_feature, weights, A(pose, j_rest)) + trans

where ``c(s)`` maps the model's shape parameters to blend-shape coefficients (identity for SMPL's
betas, anny's phenotype interpolation for anny). Rest joint frames are aligned with the world
axes, so an SMPL/AMASS axis-angle pose means the same motion on every model.

Shapes: F frames, V vertices, J = 24 joints, S shape parameters, C blend-shape coefficients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rgbd2avatar.body import lbs
from rgbd2avatar.body.skeleton import JOINT_INDEX, NUM_JOINTS, PARENTS, POSE_DIM

CANONICAL_HIP_ANGLE = torch.pi / 6
"""Each hip is rotated outward by this angle about z in the canonical pose (SNARF's choice)."""


def canonical_pose(
    dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """The canonical pose: T-pose arms, legs apart by ±30° at the hips (as SNARF).

    Returns:
        (72,) axis-angle pose.
    """
    pose = torch.zeros(NUM_JOINTS, 3, dtype=dtype, device=device)
    pose[JOINT_INDEX["left_hip"], 2] = CANONICAL_HIP_ANGLE
    pose[JOINT_INDEX["right_hip"], 2] = -CANONICAL_HIP_ANGLE
    return pose.reshape(POSE_DIM)


@dataclass
class BodyOutput:
    """Posed bodies.

    Attributes:
        vertices: (F, V, 3) posed vertices.
        joints: (F, J, 3) posed joint positions.
        transforms: (F, J, 4, 4) per-bone transforms from the (shaped) rest pose to the posed
            body, translation included: a rest point x attached to bone j goes to A_j x.
    """

    vertices: torch.Tensor
    joints: torch.Tensor
    transforms: torch.Tensor


class BodyModel(torch.nn.Module):
    """A linear body model on SMPL's 24-joint tree.

    Buffers (move with ``.to(device)``):
        v_template (V, 3), shapedirs (V, 3, C), j_template (J, 3), joint_shapedirs (J, 3, C),
        weights (V, J), faces (T, 3) long, posedirs (P, V·3) or empty when the model has no
        pose correctives, face_uvs (T, 3, 2) or empty, part_labels (V,) long: the bone with the
        largest skinning weight.
    """

    def __init__(
        self,
        name: str,
        v_template: torch.Tensor,
        shapedirs: torch.Tensor,
        j_template: torch.Tensor,
        joint_shapedirs: torch.Tensor,
        weights: torch.Tensor,
        faces: torch.Tensor,
        shape_names: list[str],
        default_shape: torch.Tensor,
        shape_to_coeffs: Callable[[torch.Tensor], torch.Tensor] | None = None,
        posedirs: torch.Tensor | None = None,
        face_uvs: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.shape_names = list(shape_names)
        self.parents = PARENTS
        self._shape_to_coeffs = shape_to_coeffs
        f32 = torch.float32
        self.register_buffer("v_template", v_template.to(f32))
        self.register_buffer("shapedirs", shapedirs.to(f32))
        self.register_buffer("j_template", j_template.to(f32))
        self.register_buffer("joint_shapedirs", joint_shapedirs.to(f32))
        self.register_buffer("weights", weights.to(f32))
        self.register_buffer("faces", faces.long())
        self.register_buffer("default_shape", default_shape.to(f32))
        empty = torch.zeros(0, dtype=f32)
        self.register_buffer("posedirs", empty if posedirs is None else posedirs.to(f32))
        self.register_buffer("face_uvs", empty if face_uvs is None else face_uvs.to(f32))
        self.register_buffer("part_labels", weights.argmax(1))

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_shape(self) -> int:
        return len(self.shape_names)

    def coefficients(self, shape: torch.Tensor) -> torch.Tensor:
        """Blend-shape coefficients of shape parameters: (..., S) → (..., C)."""
        return shape if self._shape_to_coeffs is None else self._shape_to_coeffs(shape)

    def rest(self, shape: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Rest-pose (T-pose) body of the given shapes.

        Args:
            shape: (S,) or (F, S) shape parameters; ``None`` for the default shape.
        Returns:
            vertices (F, V, 3) and joints (F, J, 3); F = 1 for a single shape.
        """
        coeffs = self.coefficients(self._batched_shape(shape))
        verts = self.v_template + torch.einsum("vkc,fc->fvk", self.shapedirs, coeffs)
        return verts, self._rest_joints(coeffs)

    def rest_joints(self, shape: torch.Tensor | None = None) -> torch.Tensor:
        """Rest-pose joints of the given shapes, without the vertices: (S,) or (F, S) → (F, J, 3)."""
        return self._rest_joints(self.coefficients(self._batched_shape(shape)))

    def _rest_joints(self, coeffs: torch.Tensor) -> torch.Tensor:
        return self.j_template + torch.einsum("jkc,fc->fjk", self.joint_shapedirs, coeffs)

    def forward(
        self, pose: torch.Tensor, shape: torch.Tensor | None = None, trans: torch.Tensor | None = None
    ) -> BodyOutput:
        """Pose the body.

        Args:
            pose: (F, 72) axis-angle poses in SMPL layout.
            shape: (S,) shared or (F, S) per-frame shape parameters; ``None`` = default.
            trans: (F, 3) translations; ``None`` = zero.
        Returns:
            :class:`BodyOutput` with F frames.
        """
        n = pose.shape[0]
        verts, joints = self.rest(shape)
        verts, joints = verts.expand(n, -1, -1), joints.expand(n, -1, -1)
        rots = lbs.axis_angle_to_matrix(pose.reshape(n, NUM_JOINTS, 3))
        if self.posedirs.numel():
            verts = verts + (lbs.pose_feature(rots) @ self.posedirs).reshape(n, -1, 3)
        transforms, world = self._bone_transforms(rots, joints, trans)
        posed = lbs.skin_points(verts, self.weights, transforms)
        return BodyOutput(vertices=posed, joints=transforms_joints(world, trans), transforms=transforms)

    def canonical(self, shape: torch.Tensor | None = None) -> BodyOutput:
        """The shaped body in the canonical pose (:func:`canonical_pose`), one frame."""
        return self.forward(canonical_pose(self.v_template.dtype, self.v_template.device)[None], shape)

    def canonical_to_posed(
        self, pose: torch.Tensor, shape: torch.Tensor | None = None, trans: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-bone transforms from canonical space to each posed frame: A(pose) · A(canonical)⁻¹.

        Args:
            pose: (F, 72), shape: (S,) or None, trans: (F, 3) or None.
        Returns:
            (F, J, 4, 4) transforms B_j, SNARF's definition of the deformation that a canonical
            skinning field drives: x_posed = Σ_j w_j(x_c) B_j x_c. On the canonical body this
            reproduces the posed body exactly where the canonical transforms of the bones that
            share a vertex agree (everywhere but near the hips, whose canonical rotation is
            ±30°), and up to a small blending difference there.
        """
        joints = self.rest_joints(shape)
        return self.joint_transforms(pose, joints, trans) @ self.canonical_inverse(joints)

    def joint_transforms(
        self, pose: torch.Tensor, joints: torch.Tensor, trans: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Rest→posed bone transforms A(pose) of bodies with the given rest joints, without
        posing any vertex (the transforms of :meth:`forward`).

        Args:
            pose: (F, 72); joints: (1 or F, J, 3) rest joints (:meth:`rest_joints`); trans: (F, 3) or None.
        Returns:
            (F, J, 4, 4).
        """
        n = pose.shape[0]
        rots = lbs.axis_angle_to_matrix(pose.reshape(n, NUM_JOINTS, 3))
        return self._bone_transforms(rots, joints.expand(n, -1, -1), trans)[0]

    def canonical_inverse(self, joints: torch.Tensor) -> torch.Tensor:
        """A(canonical)⁻¹ of bodies with rest joints (1 or F, J, 3): (1 or F, J, 4, 4)."""
        canonical = canonical_pose(joints.dtype, joints.device)[None].expand(joints.shape[0], -1)
        return torch.linalg.inv(self.joint_transforms(canonical, joints))

    def _bone_transforms(
        self, rots: torch.Tensor, joints: torch.Tensor, trans: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Relative bone transforms (F, J, 4, 4), the translation added, and the joint frames
        (F, J, 4, 4) of (F, J, 3, 3) joint rotations about (F, J, 3) rest joints."""
        world = lbs.forward_kinematics(rots, joints, self.parents)
        transforms = lbs.relative_transforms(world, joints)
        if trans is not None:
            transforms = transforms.clone()
            transforms[..., :3, 3] = transforms[..., :3, 3] + trans[:, None]
        return transforms, world

    def move_params(
        self,
        pose: torch.Tensor,
        trans: torch.Tensor,
        rotation: torch.Tensor,
        offset: torch.Tensor,
        shape: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pose and translation of the same bodies moved rigidly by x ↦ R x + o.

        The root rotates about the rest pelvis joint j0, so R (R_root (v − j0) + j0 + t) + o is
        the body with root R·R_root and translation R (j0 + t) + o − j0.

        Args:
            pose: (F, 72), trans: (F, 3), rotation: (3, 3), offset: (3,), shape: as in forward.
        Returns:
            pose (F, 72) and trans (F, 3) of the moved bodies.
        """
        pelvis = self.rest_joints(shape)[:, 0]  # (1 or F, 3)
        root = rotation @ lbs.axis_angle_to_matrix(pose[:, :3])
        moved = pose.clone()
        moved[:, :3] = lbs.matrix_to_axis_angle(root)
        return moved, (pelvis + trans) @ rotation.T + offset - pelvis

    def _batched_shape(self, shape: torch.Tensor | None) -> torch.Tensor:
        if shape is None:
            return self.default_shape[None]
        if shape.shape[-1] != self.num_shape:
            raise ValueError(f"{self.name} takes {self.num_shape} shape parameters, got {shape.shape[-1]}")
        return shape[None] if shape.dim() == 1 else shape


def transforms_joints(world: torch.Tensor, trans: torch.Tensor | None) -> torch.Tensor:
    """Posed joint positions: the origin of each joint frame, plus the translation.

    Args:
        world: (F, J, 4, 4) joint-frame transforms; trans: (F, 3) or None.
    Returns:
        (F, J, 3).
    """
    joints = world[..., :3, 3]
    return joints if trans is None else joints + trans[:, None]
