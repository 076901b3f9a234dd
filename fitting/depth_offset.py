"""The clothing's depth offset: how far loose clothes pulled every fitted body towards the camera.

The body fit matches the naked body model to the surface the camera sees; under loose clothes
that surface stands a few centimetres off the body, and from one view a body pushed towards the
camera explains it as well as a thicker one, so every frame's body ends up too close along its
viewing ray by about the same distance s. As the subject turns, that camera-frame offset becomes
a body-frame offset that turns with the view: the torso seen from the front is pushed out of its
front, the torso seen from the side out of its side. Carried into canonical space by the fitted
bodies' skinning, the observations of the same piece of clothing from two views then disagree,
and they agree again once every body is moved back by s along its ray.

The estimate: for candidate offsets c (:data:`CANDIDATES`), move each frame's body by c along the
ray from the camera centre to its pelvis, carry each frame's observed clothed points and normals
to canonical space (inverse skinning with the weights of the nearest posed body vertex), and
score the mean over view pairs of the median point-to-plane distance between one frame's
canonical points and the other's. View pairs are frames whose viewing directions in the body's
root frame differ by :data:`PAIR_ANGLES`: views too close see the same offset, views too far
apart see different sides. A parabola through the best candidate and its neighbours gives s.
Only what clothes cover almost always takes part: the torso, upper arms and thighs
(:data:`CLOTHED_BONES`); hands, feet and head are bare, and forearms and shins carry larger pose
errors than the offset. Each region of :data:`CLOTHED_REGIONS` gets its own estimate: garments
stand off the body by different amounts, and the fitted shape takes up more of one than of
another. A subject that never turns gives no pairs, and then no correction (s = 0).

Shapes: F frames, N points per frame, V vertices, J bones, P view pairs, C candidates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch

from rgbd2avatar.body.lbs import axis_angle_to_matrix
from rgbd2avatar.body.model import BodyModel
from rgbd2avatar.body.skeleton import JOINT_INDEX

CANDIDATES = tuple(c / 100 for c in range(-2, 9))
"""Offsets tried (m along each viewing ray, positive: away from the camera)."""
PAIR_ANGLES = (math.radians(40), math.radians(80))
"""Angles between two frames' viewing directions (body frame) that make a view pair."""
PARTNERS = 4
"""Most view pairs per frame (evenly spread over the eligible frames): the cost grows with F,
not F²."""
CLOTHED_REGIONS = {
    "lower": ("pelvis", "left_hip", "right_hip"),
    "upper": ("spine1", "spine2", "spine3", "left_collar", "right_collar", "left_shoulder", "right_shoulder"),
}
"""The clothed bones by region, each region with a clothing layer of its own thickness
(:func:`fitting.body_fit.clothing_layer`) and a depth offset estimated from its own points: the
hips and thighs (trousers, shorts or a skirt) and the trunk above them with the upper arms (a top).
SMPL's shoulder and hip joints move the upper arms and the thighs."""
CLOTHED_BONES = tuple(bone for bones in CLOTHED_REGIONS.values() for bone in bones)
"""Bones of the torso, upper arms and thighs: every region's."""
LIMB_ENDS = {
    "left_hip": "left_knee", "right_hip": "right_knee",
    "left_shoulder": "left_elbow", "right_shoulder": "right_elbow",
}  # fmt: skip
"""The limb bones of :data:`CLOTHED_BONES` (thighs, upper arms) and the joints at their far ends,
where :func:`fitting.body_fit.clothing_layer` has thinned to nothing."""
ATTACH_RADIUS = 0.08
"""Observed points farther than this (m) from every posed body vertex are left out."""
MATCH_RADIUS = 0.05
"""Canonical neighbours farther apart than this (m) are not the same piece of clothing."""
MAX_POINTS = 1024
"""Observed points per frame used (an even subsample)."""
MIN_POINTS = 50
"""Frames with fewer clothed points than this take no part."""
CHUNK_ELEMENTS = 1 << 24


@dataclass
class DepthOffset:
    """The estimate and its evidence.

    Attributes:
        offset: s, metres along each frame's viewing ray (positive: the bodies move away from the
            camera); 0 when there were no view pairs.
        candidates: (C,) offsets tried; scores: (C,) their disagreement (m), empty without pairs.
        pairs: number of view pairs scored.
    """

    offset: float
    candidates: torch.Tensor
    scores: torch.Tensor
    pairs: int


def viewing_rays(
    body: BodyModel, poses: torch.Tensor, shape: torch.Tensor, trans: torch.Tensor
) -> torch.Tensor:
    """(F, 3) unit rays from the camera centre (the origin) to the pelvis of each posed body.

    Args:
        poses: (F, 72); shape: (S,); trans: (F, 3).
    """
    with torch.no_grad():
        return torch.nn.functional.normalize(body(poses, shape, trans).joints[:, 0], dim=-1)


def view_pairs(root_pose: torch.Tensor, rays: torch.Tensor) -> torch.Tensor:
    """Frame pairs (i, j) whose viewing directions in the root's frame are :data:`PAIR_ANGLES`
    apart, at most :data:`PARTNERS` js per i, evenly spread over the eligible ones.

    Args:
        root_pose: (F, 3) axis-angle root rotations; rays: (F, 3) unit viewing rays.
    Returns:
        (P, 2) long, sorted.
    """
    views = torch.einsum("fji,fj->fi", axis_angle_to_matrix(root_pose), rays)  # Rᵀ u
    angles = torch.arccos((views @ views.T).clamp(-1, 1))
    low, high = PAIR_ANGLES
    eligible = (angles >= low) & (angles <= high)  # (F, F)
    rank = eligible.long().cumsum(1) - 1
    spread = (torch.arange(PARTNERS, device=rank.device) + 0.5) / PARTNERS
    wanted = (spread[None] * eligible.sum(1, keepdim=True)).long()  # (F, PARTNERS)
    chosen = eligible[..., None] & (rank[..., None] == wanted[:, None])
    return torch.nonzero(chosen.any(-1))


def nearest(points: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance and index of the nearest candidate, batched and chunked over points.

    Args:
        points: (B, N, 3); candidates: (B, M, 3).
    Returns:
        (B, N) distances and (B, N) long indices into M.
    """
    step = max(1, CHUNK_ELEMENTS // max(1, points.shape[0] * candidates.shape[1]))
    found = [
        torch.cdist(points[:, s : s + step], candidates).min(-1) for s in range(0, points.shape[1], step)
    ]
    return torch.cat([f.values for f in found], 1), torch.cat([f.indices for f in found], 1)


@dataclass
class Canonical:
    """Observed clothed points carried to canonical (rest) space by the fitted bodies.

    A point's canonical position for bodies moved by c along the viewing rays is
    ``points + c · motion``; its normal does not change with c.

    Attributes:
        points: (F, N, 3) canonical points of the fitted bodies (c = 0); motion: (F, N, 3)
        −R⁻¹ u, how they move per metre of c; normals: (F, N, 3); mask: (F, N) bool;
        parts: (F, N) long, the bone of each point's nearest posed vertex.
    """

    points: torch.Tensor
    motion: torch.Tensor
    normals: torch.Tensor
    mask: torch.Tensor
    parts: torch.Tensor

    def shifted(self, offset: float) -> torch.Tensor:
        """(F, N, 3) canonical points when every body moves ``offset`` metres along its ray."""
        return self.points + offset * self.motion

    def on(self, bones: tuple[str, ...]) -> Canonical:
        """The points on some of the clothed bones only."""
        ids = torch.tensor([JOINT_INDEX[bone] for bone in bones], device=self.parts.device)
        return replace(self, mask=self.mask & torch.isin(self.parts, ids))


def canonical_clothed(
    body: BodyModel,
    poses: torch.Tensor,
    shape: torch.Tensor,
    trans: torch.Tensor,
    rays: torch.Tensor,
    points: torch.Tensor,
    normals: torch.Tensor,
    valid: torch.Tensor,
) -> Canonical:
    """Observed points and normals on the clothed bones in the body's rest pose, by inverse skinning.

    Each point takes the blended transform of its nearest posed vertex (the attachment stays
    with every offset tried, so all candidates score the same points); points whose nearest
    vertex belongs to no :data:`CLOTHED_BONES`, or is farther than :data:`ATTACH_RADIUS`, are
    masked out.

    Args:
        poses: (F, 72); shape: (S,); trans: (F, 3); rays: (F, 3) unit viewing rays;
        points, normals: (F, N, 3); valid: (F, N).
    """
    clothed = torch.tensor([JOINT_INDEX[b] for b in CLOTHED_BONES], device=poses.device)
    with torch.no_grad():
        posed = body(poses, shape, trans)
        distance, index = nearest(points, posed.vertices)
        transforms = torch.einsum("fnj,fjab->fnab", body.weights[index], posed.transforms)
        inverse = torch.linalg.inv(transforms)
        rotation = inverse[..., :3, :3]
        rest = torch.einsum("fnab,fnb->fna", rotation, points) + inverse[..., :3, 3]
        motion = -torch.einsum("fnab,fb->fna", rotation, rays)
        rest_normals = torch.nn.functional.normalize(torch.einsum("fnab,fnb->fna", rotation, normals), dim=-1)
    parts = body.part_labels[index]
    mask = valid & (distance < ATTACH_RADIUS) & torch.isin(parts, clothed)
    return Canonical(rest, motion, rest_normals, mask, parts)


def disagreement(canonical: Canonical, offset: float, pairs: torch.Tensor) -> torch.Tensor:
    """Mean over view pairs (i, j) of the median point-to-plane distance from frame i's canonical
    points to their nearest neighbours among frame j's (within :data:`MATCH_RADIUS`), in metres,
    with every body moved ``offset`` along its ray."""
    points = canonical.shifted(offset)
    far = torch.where(canonical.mask[..., None], points, 1e4)
    medians = []
    step = max(1, CHUNK_ELEMENTS // far.shape[1] ** 2)
    for start in range(0, len(pairs), step):
        i, j = pairs[start : start + step].T
        distance, index = nearest(points[i], far[j])
        plane = torch.gather(canonical.normals[j], 1, index[..., None].expand(-1, -1, 3))
        neighbour = torch.gather(points[j], 1, index[..., None].expand(-1, -1, 3))
        offsets = ((points[i] - neighbour) * plane).sum(-1).abs()
        kept = canonical.mask[i] & (distance < MATCH_RADIUS)
        medians.append(torch.where(kept, offsets, torch.nan).nanmedian(1).values)
    return torch.cat(medians).nanmean()


def even_rows(valid: torch.Tensor, count: int) -> torch.Tensor:
    """(F, min(count, N)) long indices of up to ``count`` evenly spread valid rows of each frame
    (valid: (F, N) bool); frames with fewer valid rows repeat their last one, or take row 0."""
    total = valid.sum(1, keepdim=True)
    take = min(count, valid.shape[1])
    rank = (torch.arange(take, device=valid.device)[None] * total / take).long()
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
    return torch.gather(order, 1, rank.clamp_max(valid.shape[1] - 1))


def parabola_minimum(x: torch.Tensor, y: torch.Tensor) -> float:
    """Where the parabola through three evenly spaced samples (3,) is lowest, kept within them."""
    step = float(x[1] - x[0])
    curvature = float(y[0] - 2 * y[1] + y[2])
    if curvature <= 0:
        return float(x[int(y.argmin())])
    shift = 0.5 * float(y[0] - y[2]) / curvature
    return float(x[1]) + step * max(-1.0, min(1.0, shift))


def estimate_depth_offsets(
    body: BodyModel,
    poses: torch.Tensor,
    shape: torch.Tensor,
    trans: torch.Tensor,
    points: torch.Tensor,
    normals: torch.Tensor,
    valid: torch.Tensor,
    regions: Mapping[str, tuple[str, ...]] = CLOTHED_REGIONS,
) -> dict[str, DepthOffset]:
    """The clothing's depth offset of a fitted sequence in each region, from that region's points
    alone (see the module docstring).

    Args:
        body: the body model the fits are of, on the device to work on.
        poses: (F, 72); shape: (S,); trans: (F, 3): the fits, depth camera frame, on that device.
        points, normals: (F, N, 3) observed points and normals; valid: (F, N) bool, on any
            device (a subsample of :data:`MAX_POINTS` per frame moves to the body's).
        regions: name → clothed bones (of :data:`CLOTHED_BONES`).
    """
    device = body.v_template.device
    rows = even_rows(valid, MAX_POINTS)
    gathered = [
        torch.gather(values, 1, rows[..., None].expand(-1, -1, 3)).to(device) for values in (points, normals)
    ]
    keep = torch.gather(valid, 1, rows).to(device)
    rays = viewing_rays(body, poses, shape, trans)
    canonical = canonical_clothed(body, poses, shape, trans, rays, *gathered, keep)
    pairs = view_pairs(poses[:, :3], rays)
    candidates = torch.tensor(CANDIDATES, dtype=trans.dtype)
    return {region: best_offset(canonical.on(bones), pairs, candidates) for region, bones in regions.items()}


def best_offset(canonical: Canonical, pairs: torch.Tensor, candidates: torch.Tensor) -> DepthOffset:
    """The candidate offset (C,) at which the view pairs (P, 2) of frames with enough points agree
    best, refined by a parabola; 0 without such pairs."""
    pairs = pairs[(canonical.mask.sum(1) >= MIN_POINTS)[pairs].all(1)]
    if len(pairs) == 0:
        return DepthOffset(0.0, candidates, candidates.new_zeros(0), 0)
    scores = torch.stack([disagreement(canonical, float(c), pairs) for c in candidates]).cpu()
    best = int(scores.argmin().clamp(1, len(candidates) - 2))
    offset = parabola_minimum(candidates[best - 1 : best + 2], scores[best - 1 : best + 2])
    return DepthOffset(offset, candidates, scores, len(pairs))
