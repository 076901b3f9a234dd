"""Meshes of a fitted avatar: the canonical surface for a pose condition (MISE), and the fast
posed mesh (that canonical mesh moved by forward skinning with the learned weights).

Shapes: V vertices, T triangles, J bones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rgbd2avatar.avatar.avatar import Avatar
from rgbd2avatar.avatar.networks import pose_features
from rgbd2avatar.meshing import MeshResult, Progress, extract_mesh

MESH_BATCH = 65_536
"""Points per SDF evaluation while meshing."""


@dataclass
class AvatarMesh:
    """A mesh of the avatar: vertices (V, 3) float32 metres, faces (T, 3) int64, and the MISE
    statistics of the canonical extraction it came from."""

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


def posed_mesh_fast(
    avatar: Avatar, pose: torch.Tensor, trans: torch.Tensor, resolution: int = 256
) -> AvatarMesh:
    """The avatar in a pose, fast way: canonical MISE for the pose condition, then each vertex
    skinned forward, Σ_j w_j(x_c) B_j x_c (Eq. 5).

    Args:
        pose: (72,), trans: (3,).
    """
    canonical = canonical_mesh(avatar, pose, resolution)
    device = avatar.bounds.device
    with torch.no_grad():
        tfs = avatar.transforms(pose[None].to(device), trans[None].to(device))
        vertices = torch.from_numpy(canonical.vertices).to(device)[None]
        posed = torch.cat([avatar.deformer.skin(chunk, tfs) for chunk in vertices.split(MESH_BATCH, 1)], 1)
    return AvatarMesh(posed[0].cpu().numpy(), canonical.faces, canonical.extraction)
