"""Meshes of a fitted avatar: the canonical surface for a pose condition (MISE), and posed meshes
two ways.

- **Fast** (:func:`posed_mesh_fast`): the canonical surface f_sdf(·, p) = 0 for the frame's pose
  condition p, meshed by MISE in the canonical box, then every vertex moved by forward skinning
  with the learned weights, Σ_j w_j(x_c) B_j x_c (Eq. 5). One correspondence-free skinning pass
  per vertex; the mesh keeps the canonical mesh's connectivity (a self-intersecting pose stays
  self-intersecting).
- **Exact** (:func:`posed_mesh_exact`, the paper's way, Sec. 3.3): MISE directly in a posed-space
  box, each grid point's SDF found by the correspondence search (Eq. 5, 7–8, min over the valid
  canonical candidates). The surface is the true zero set of the posed SDF (touching parts merge,
  as in the observed data), at the cost of a Broyden search at every evaluated point.

Where both agree: away from contact the two surfaces are the same up to the meshing error, since
x_c ↦ x_d is a bijection there; they differ where skinning folds (two canonical points map to
one posed point: the fast mesh self-intersects, the exact one takes the union) and where the
search misses a correspondence. ``benchmarks/bench_avatar_meshes.py`` measures both and the
Chamfer distance between them.

Points without any valid correspondence (:data:`NOT_FOUND_SDF`): they lie outside the image of
the canonical domain, far from the body, so they get a positive value (outside) that is still a
lower bound of their distance to the surface. That keeps MISE correct: a cell is refined when it
straddles the surface or a corner reads less than a cell diagonal, and interpolated values of
skipped cells keep their corners' sign. A value larger than the true distance could hide a thin
part between coarse corners; a value near zero would refine every cell around the unfound points
to the finest level, for nothing.

Fast mode pays for a canonical extraction per frame, since the SDF is pose-conditioned;
:func:`posed_meshes` re-uses the last canonical mesh while the pose condition (the 23 non-root
joints) does not change, e.g. for a turn in place.

The pose condition of unseen poses: every function takes the pose the SDF is conditioned on
separately from the pose it is skinned to. A network conditioned on each training frame's pose
also uses the condition as a per-frame code that absorbs that frame's pose error; for a pose it
never saw, the condition then adds shape that belongs to no frame. On the synthetic ``small``
protocol's held-out motions, conditioning every frame on the training poses' mean
(:meth:`~rgbd2avatar.avatar.store.StoredAvatar.mean_pose`) lowers the Chamfer distance of the
``default`` avatar from 0.82 to 0.60 cm (``rgbd2avatar bench --preset default``), while on the
training frames the two conditions give the same surface (``fast`` avatar: 0.744 and 0.747 cm,
``python -m benchmarks.pose_condition``); so ``animate`` uses the mean by default and
``extract`` (training frames) each frame's own pose.

Shapes: V vertices, T triangles, J bones, F frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from rgbd2avatar.avatar.avatar import BOUNDS_PADDING, Avatar
from rgbd2avatar.avatar.networks import pose_features
from rgbd2avatar.meshing import MeshResult, Progress, SdfFn, extract_mesh

MESH_BATCH = 65_536
"""Points per SDF evaluation while meshing."""
SEARCH_BATCH = 8_192
"""Posed points per correspondence search while meshing exactly (each has K candidates)."""
NOT_FOUND_SDF = BOUNDS_PADDING
"""Metres: the SDF given to posed points without a valid canonical correspondence (see the module
docstring). The canonical domain reaches beyond the padded canonical box, so such points are at
least about this far from the surface; it also exceeds the coarse MISE cell diagonal (about 9 cm
for a body at 32 cells), so cells of unfound points only are never refined."""


@dataclass
class AvatarMesh:
    """A mesh of the avatar: vertices (V, 3) float32 metres, faces (T, 3) int64, and the MISE
    statistics of the extraction it came from (canonical for fast meshes, posed for exact ones)."""

    vertices: np.ndarray
    faces: np.ndarray
    extraction: MeshResult


def canonical_mesh(
    avatar: Avatar, pose: torch.Tensor | None = None, resolution: int = 256, progress: Progress | None = None
) -> AvatarMesh:
    """The canonical surface f_sdf(·, p) = 0 by MISE in the avatar's canonical box.

    Args:
        pose: (72,) the pose condition p; None = the canonical pose.
        resolution: cells per axis of the final grid (32 · 2^k).
    """
    pose = avatar.canonical_condition()[0] if pose is None else pose
    condition = pose_features(pose[None].to(avatar.bounds))

    def sdf(points: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return avatar.sdf(points[None], condition)[0]

    low, high = avatar.bounds.cpu().numpy()
    result = extract_mesh(
        sdf, low, high, resolution=resolution, batch_points=MESH_BATCH, device=avatar.bounds.device,
        progress=progress,
    )  # fmt: skip
    return AvatarMesh(result.vertices, result.faces, result)


def skin_mesh(avatar: Avatar, canonical: AvatarMesh, pose: torch.Tensor, trans: torch.Tensor) -> AvatarMesh:
    """Move a canonical mesh's vertices by forward skinning (Eq. 5) into a pose.

    Args:
        canonical: a mesh in canonical space; pose: (72,), trans: (3,).
    """
    device = avatar.bounds.device
    with torch.no_grad():
        tfs = avatar.transforms(pose[None].to(device), trans[None].to(device))
        vertices = torch.from_numpy(canonical.vertices).to(device)[None]
        posed = torch.cat([avatar.deformer.skin(chunk, tfs) for chunk in vertices.split(MESH_BATCH, 1)], 1)
    return AvatarMesh(posed[0].cpu().numpy(), canonical.faces, canonical.extraction)


def posed_mesh_fast(
    avatar: Avatar,
    pose: torch.Tensor,
    trans: torch.Tensor,
    resolution: int = 256,
    condition: torch.Tensor | None = None,
) -> AvatarMesh:
    """The avatar in a pose, fast way: canonical MISE for the pose condition, then each vertex
    skinned forward, Σ_j w_j(x_c) B_j x_c (Eq. 5).

    Args:
        pose: (72,), trans: (3,).
        condition: (72,) the pose the SDF is conditioned on; None = ``pose``.
    """
    canonical = canonical_mesh(avatar, pose if condition is None else condition, resolution)
    return skin_mesh(avatar, canonical, pose, trans)


def posed_bounds(avatar: Avatar, pose: torch.Tensor, trans: torch.Tensor) -> np.ndarray:
    """(2, 3) float64 [min, max] of the posed-space box meshed exactly: the body model posed with
    the avatar's shape, grown by the canonical box's padding (room for clothing) on every side.

    Args:
        pose: (72,), trans: (3,).
    """
    device = avatar.bounds.device
    with torch.no_grad():
        body = avatar.body(pose[None].to(device), avatar.shape, trans[None].to(device)).vertices[0]
    low, high = body.min(0).values.cpu().double().numpy(), body.max(0).values.cpu().double().numpy()
    return np.stack([low - BOUNDS_PADDING, high + BOUNDS_PADDING])


def posed_sdf_function(
    avatar: Avatar, pose: torch.Tensor, trans: torch.Tensor, condition: torch.Tensor | None = None
) -> SdfFn:
    """The posed SDF as a meshing function: (N, 3) posed points → (N,) signed distances.

    Each call searches the points' correspondences (:meth:`Avatar.posed_sdf`) in batches of
    :data:`SEARCH_BATCH`, without gradients; points without any are :data:`NOT_FOUND_SDF`.

    Args:
        pose: (72,), trans: (3,).
        condition: (72,) the pose the SDF is conditioned on; None = ``pose``.
    """
    device = avatar.bounds.device
    pose, trans = pose[None].to(device), trans[None].to(device)
    condition = pose if condition is None else condition[None].to(device)

    def sdf(points: torch.Tensor) -> torch.Tensor:
        values = []
        with torch.no_grad():
            for chunk in points.split(SEARCH_BATCH):
                query = avatar.posed_sdf(chunk[None], pose, trans, condition=condition)
                values.append(torch.where(query.found, query.sdf, NOT_FOUND_SDF)[0])
        return torch.cat(values)

    return sdf


def posed_mesh_exact(
    avatar: Avatar,
    pose: torch.Tensor,
    trans: torch.Tensor,
    resolution: int = 256,
    initial_resolution: int = 32,
    progress: Progress | None = None,
    condition: torch.Tensor | None = None,
) -> AvatarMesh:
    """The avatar in a pose, exact way (PINA Sec. 3.3): MISE over :func:`posed_bounds` of the
    posed SDF found by correspondence search (:func:`posed_sdf_function`).

    Args:
        pose: (72,), trans: (3,).
        resolution: cells per axis of the final grid, ``initial_resolution`` · 2^k.
        initial_resolution: cells per axis of the coarse grid, evaluated everywhere.
        condition: (72,) the pose the SDF is conditioned on; None = ``pose``.
    """
    low, high = posed_bounds(avatar, pose, trans)
    result = extract_mesh(
        posed_sdf_function(avatar, pose, trans, condition), low, high, resolution=resolution,
        initial_resolution=initial_resolution, batch_points=MESH_BATCH, device=avatar.bounds.device,
        progress=progress,
    )  # fmt: skip
    return AvatarMesh(result.vertices, result.faces, result)


def posed_meshes(
    avatar: Avatar,
    poses: torch.Tensor,
    trans: torch.Tensor,
    resolution: int = 256,
    exact: bool = False,
    condition: torch.Tensor | None = None,
) -> Iterator[AvatarMesh]:
    """Posed meshes of a pose sequence, one frame at a time.

    Fast mode extracts a canonical mesh per frame (the SDF is pose-conditioned) but re-uses the
    previous frame's while the pose condition is unchanged: with a fixed ``condition``, one
    extraction serves the whole sequence.

    Args:
        poses: (F, 72), trans: (F, 3).
        condition: (72,) the pose the SDF is conditioned on in every frame (e.g.
            :meth:`StoredAvatar.mean_pose`); None = each frame's own pose.
    Yields:
        F :class:`AvatarMesh` in frame order.
    """
    canonical, last = None, None
    for pose, translation in zip(poses, trans, strict=True):
        conditioned = pose if condition is None else condition
        if exact:
            yield posed_mesh_exact(avatar, pose, translation, resolution, condition=conditioned)
            continue
        features = pose_features(conditioned)
        if canonical is None or not torch.equal(features, last):
            canonical, last = canonical_mesh(avatar, conditioned, resolution), features
        yield skin_mesh(avatar, canonical, pose, translation)


def skinning_weights(avatar: Avatar, vertices: np.ndarray) -> np.ndarray:
    """The learned skinning weights f_w at canonical points: (V, 3) → (V, J) float32, rows summing to 1."""
    points = torch.from_numpy(np.ascontiguousarray(vertices, dtype=np.float32)).to(avatar.bounds.device)
    with torch.no_grad():
        weights = [avatar.skinning(chunk[None])[0] for chunk in points.split(MESH_BATCH)]
    return torch.cat(weights).cpu().numpy()
