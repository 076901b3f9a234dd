"""The neural avatar: a pose-conditioned canonical SDF, a canonical skinning field and the
correspondence search that connects them to posed space (PINA Sec. 3.1).

Canonical space is the body model's canonical pose (T-pose arms, legs apart; see
:func:`rgbd2avatar.body.model.canonical_pose`) for the subject's fitted shape. A posed point x_d
of frame i is explained by a canonical point x_c with Σ_j w_j(x_c) B_j(p_i) x_c = x_d (Eq. 5),
where B_j are the body model's canonical→posed bone transforms for the frame's pose p_i and
translation. Its signed distance is the smallest f_sdf over the valid candidates (Eq. 7–8) and
its normal the canonical SDF gradient turned by the blended bone rotations (Eq. 3, 6).

Pose features (the SDF's condition, Eq. 1): the 23 non-root joints' axis-angles / π, so the
global orientation and position of the person never change the canonical shape.

Shapes: B frames, N points, K candidates, J bones, P pose features, S shape parameters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from rgbd2avatar.avatar.deformer import ForwardDeformer, take
from rgbd2avatar.avatar.networks import SDFNetwork, SkinningNetwork, pose_features
from rgbd2avatar.body.model import BodyModel, canonical_pose
from rgbd2avatar.body.skeleton import NUM_JOINTS

BOUNDS_PADDING = 0.15
"""Metres added on every side of the canonical body's box: room for loose clothing."""


@dataclass(frozen=True)
class AvatarSpec:
    """Sizes of the avatar's networks (plain data, stored with every checkpoint)."""

    sdf_hidden: int = 128
    sdf_layers: int = 6
    sdf_freqs: int = 6
    skin_hidden: int = 64
    skin_layers: int = 4
    search_steps: int = 20
    """Broyden iterations per candidate; roots of a trained field converge in far fewer, and the
    candidates that have not converged by then rarely do (measured: same found fraction at 15
    and 50 on a fitted subject), while each extra iteration costs a skinning-network pass."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PosedQuery:
    """Posed points explained by the avatar.

    Attributes:
        sdf: (B, N) signed distance (Eq. 7); 0 where ``found`` is False.
        found: (B, N) bool, some candidate converged.
        canonical: (B, N, 3) the chosen canonical correspondence x_c* (Eq. 8), differentiable
            with respect to the networks, the pose and x_d by implicit differentiation.
        normals: (B, N, 3) unit posed-space normals (Eq. 6), or None when not asked for.
    """

    sdf: torch.Tensor
    found: torch.Tensor
    canonical: torch.Tensor
    normals: torch.Tensor | None


class Avatar(torch.nn.Module):
    """Canonical SDF + skinning field of one subject, driven by its body model's skeleton.

    Args:
        body: the body model the poses refer to (not part of the state dict).
        shape: (S,) the subject's fitted shape parameters.
        spec: network sizes.
    """

    def __init__(self, body: BodyModel, shape: torch.Tensor, spec: AvatarSpec = AvatarSpec()) -> None:
        super().__init__()
        self.__dict__["body"] = body  # not a submodule: the body's buffers stay out of the state dict
        self.spec = spec
        self.register_buffer("shape", shape.detach().clone().float())
        with torch.no_grad():
            canonical = body.canonical(self.shape).vertices[0]
            joints = body.rest_joints(self.shape)
        # The shape is fixed: its rest joints and canonical transforms are computed once (not
        # stored, they follow from the body and the shape).
        self.register_buffer("rest_joints", joints, persistent=False)
        self.register_buffer("canonical_inverse", body.canonical_inverse(joints), persistent=False)
        low = canonical.min(0).values - BOUNDS_PADDING
        high = canonical.max(0).values + BOUNDS_PADDING
        self.register_buffer("bounds", torch.stack([low, high]))
        center, scale = (low + high) / 2, float((high - low).max()) / 2
        self.sdf = SDFNetwork(
            hidden=spec.sdf_hidden, layers=spec.sdf_layers, num_freqs=spec.sdf_freqs,
            skip=(spec.sdf_layers // 2,), init_radius=0.5 * scale, init_center=tuple(center.tolist()),
            center=tuple(center.tolist()), scale=scale,
        )  # fmt: skip
        skinning = SkinningNetwork(
            num_bones=NUM_JOINTS, hidden=spec.skin_hidden, layers=spec.skin_layers,
            center=tuple(center.tolist()), scale=scale,
        )  # fmt: skip
        self.deformer = ForwardDeformer(skinning, max_steps=spec.search_steps)

    @property
    def skinning(self) -> SkinningNetwork:
        """The canonical skinning field f_w (held by the deformer, stored once in the state dict)."""
        return self.deformer.skinning

    def transforms(self, pose: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
        """Canonical→posed bone transforms B_j: (B, 72), (B, 3) → (B, J, 4, 4), differentiable."""
        return self.body.joint_transforms(pose, self.rest_joints, trans) @ self.canonical_inverse

    def canonical_sdf(self, points: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """f_sdf(x_c, p): (B, N, 3) canonical points, (B, 72) poses → (B, N)."""
        return self.sdf(points, pose_features(pose))

    def canonical_condition(self) -> torch.Tensor:
        """(1, 72) the canonical pose, the default condition of canonical meshes."""
        return canonical_pose(self.bounds.dtype, self.bounds.device)[None]

    def posed_sdf(
        self,
        points: torch.Tensor,
        pose: torch.Tensor,
        trans: torch.Tensor,
        normals: bool = False,
        condition: torch.Tensor | None = None,
    ) -> PosedQuery:
        """SDF (and normals) of posed points by correspondence search (Eq. 5–8, 3, 6).

        The search and the choice among candidates carry no gradients; the chosen root is then
        made differentiable by the implicit function theorem, so the result is differentiable
        with respect to the SDF and skinning networks, ``pose``, ``trans`` and ``points``
        (:meth:`ForwardDeformer.attach_gradients`).

        Args:
            points: (B, N, 3) posed points; pose: (B, 72); trans: (B, 3).
            normals: also return posed-space normals (builds a graph for second derivatives).
            condition: (B, 72) the poses the SDF is conditioned on; None = ``pose``.
        """
        tfs = self.transforms(pose, trans)
        condition = pose_features(pose if condition is None else condition)
        with torch.no_grad():
            candidates, valid = self.deformer.search(points, tfs)
            values = self.sdf(candidates.flatten(1, 2), condition).view_as(valid)
            choice, found = self.deformer.select(values, valid)
        canonical = self.deformer.attach_gradients(take(candidates, choice), points, tfs)
        if not normals:
            return PosedQuery(self.sdf(canonical, condition) * found, found, canonical, None)
        sdf, gradient = self.sdf.gradient(canonical, condition, create_graph=True)
        posed_normals = self.deformer.skin_normals(canonical, gradient, tfs)
        return PosedQuery(sdf * found, found, canonical, posed_normals)
