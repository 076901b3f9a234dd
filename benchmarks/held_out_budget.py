"""What each part of the pipeline costs an avatar on the held-out motions: an error budget.

    rgbd2avatar bench                                   # once: bench_out/small/subject_gt_poses
    python -m benchmarks.held_out_budget [WORKSPACE ...]

For an avatar fitted from the true poses and shape (the ``pina_gt_poses`` reference of
``rgbd2avatar bench``, or the ``true_poses*`` trials of :mod:`benchmarks.pina_trials`), the
``small`` protocol's held-out frames (:func:`rgbd2avatar.bench.held_out_poses`) are scored as
:func:`rgbd2avatar.bench.animation_table` scores them (uniform IoU, Chamfer-L2, normal
consistency against the true clothed subject) for a chain of surfaces, each one step closer to
the avatar:

- ``truth_cloth_held``: the true subject with its pose-dependent cloth (folds, bulges) held at
  its mean over the training frames, skinned from the rest pose with the true weights: the most a
  shape that does not change with the pose can reach;
- ``truth_from_canonical``: that surface moved to the avatar's canonical pose and skinned from
  there, as the avatar skins (blending the bone transforms twice is not exact);
- ``truth_learned_weights``: the same with the avatar's learned skinning weights;
- ``truth_meshed``: the true canonical surface's signed distance meshed by MISE in the avatar's
  box at the protocol's resolution, true weights (the meshing's share);
- ``avatar_shape``: the avatar's canonical mesh (its SDF conditioned on the training poses' mean,
  as ``animate`` conditions it) with the true weights;
- ``avatar``: the avatar as ``animate`` poses it (its own weights; equals the ``pina_gt_poses``
  row of the benchmark's held-out table).

"True weights" of a canonical point other than a body vertex are its nearest true canonical
vertex's. Also: the avatar's canonical shape against the true canonical surface by body part
(area-weighted over the true surface's vertices, each part by the bone that weighs most): mean
|distance| and mean signed distance (cm; negative: the avatar is larger there), and each part's
share of the total error. Stores every number in ``results/held_out_budget.json``. About half
a minute per workspace on a 2-core CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from benchmarks.workspaces import measure_workspaces
from rgbd2avatar.avatar.meshes import canonical_mesh, skinning_weights
from rgbd2avatar.avatar.store import StoredAvatar, load_avatar
from rgbd2avatar.bench import PROTOCOLS, average, held_out_poses
from rgbd2avatar.body import canonical_pose, lbs
from rgbd2avatar.body.skeleton import JOINT_INDEX
from rgbd2avatar.geometry import MeshQuery
from rgbd2avatar.meshing import extract_mesh
from rgbd2avatar.metrics import mesh_metrics
from rgbd2avatar.synth.subject import Subject, cloth_coefficients, make_subject

RESULTS = Path(__file__).resolve().parent / "results" / "held_out_budget.json"
PARTS = {
    "head_neck": ("head", "neck"),
    "torso": ("pelvis", "spine1", "spine2", "spine3", "left_collar", "right_collar"),
    "upper_arms": ("left_shoulder", "right_shoulder"),
    "forearms": ("left_elbow", "right_elbow"),
    "hands": ("left_wrist", "right_wrist", "left_hand", "right_hand"),
    "thighs": ("left_hip", "right_hip"),
    "shins": ("left_knee", "right_knee"),
    "feet": ("left_ankle", "right_ankle", "left_foot", "right_foot"),
}
"""Body parts by the joints whose bones they move with."""

Surface = tuple[np.ndarray, np.ndarray, np.ndarray]
"""A canonical surface: vertices (V, 3), faces (T, 3) and skinning weights (V, J)."""


def cloth_held_rest(subject: Subject, train_poses: torch.Tensor) -> torch.Tensor:
    """(V, 3) the clothed subject in the rest pose with its pose-dependent cloth fields held at
    their mean coefficients over (F, 72) training poses."""
    if subject.body.posedirs.numel():
        raise SystemExit("the budget assumes a body model without pose correctives (anny)")
    mean = cloth_coefficients(train_poses).mean(0).to(subject.cloth_bases)
    return (
        subject.rest_vertices
        + subject.static_displacement
        + torch.einsum("k,kvc->vc", mean, subject.cloth_bases)
    )


def true_canonical(subject: Subject, rest: torch.Tensor) -> np.ndarray:
    """(V, 3) rest-pose vertices moved to the canonical pose by the true skinning."""
    tfs = subject.body(canonical_pose(rest.dtype)[None], subject.shape, torch.zeros(1, 3)).transforms
    return lbs.skin_points(rest[None], subject.body.weights, tfs)[0].numpy()


def meshed_truth(vertices: np.ndarray, faces: np.ndarray, stored: StoredAvatar, resolution: int) -> tuple:
    """The true canonical surface's signed distance meshed by MISE in the avatar's box."""
    query = MeshQuery(vertices, faces)
    low, high = stored.avatar.bounds.cpu().numpy()
    mesh = extract_mesh(
        lambda points: torch.from_numpy(query.signed_distance(points.cpu().numpy())), low, high, resolution
    )
    return mesh.vertices, mesh.faces


def canonical_surfaces(subject: Subject, stored: StoredAvatar, rest: torch.Tensor, resolution: int) -> dict:
    """The budget's canonical surfaces by row name (:data:`Surface` each)."""
    faces = subject.faces.numpy()
    truth = true_canonical(subject, rest)
    true_weights = subject.body.weights.float().numpy()
    nearest = cKDTree(truth)

    def weights_at(vertices: np.ndarray) -> np.ndarray:
        return true_weights[nearest.query(vertices)[1]]

    meshed = meshed_truth(truth, faces, stored, resolution)
    avatar = canonical_mesh(stored.avatar, stored.mean_pose(), resolution)
    return {
        "truth_from_canonical": (truth, faces, true_weights),
        "truth_learned_weights": (truth, faces, skinning_weights(stored.avatar, truth)),
        "truth_meshed": (*meshed, weights_at(meshed[0])),
        "avatar_shape": (avatar.vertices, avatar.faces, weights_at(avatar.vertices)),
        "avatar": (avatar.vertices, avatar.faces, skinning_weights(stored.avatar, avatar.vertices)),
    }


def skinned(surface: Surface, tfs: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
    """A canonical surface posed by (F, J, 4, 4) canonical→posed transforms: F meshes."""
    vertices, faces, weights = surface
    points = torch.from_numpy(np.asarray(vertices, np.float32))[None].expand(len(tfs), -1, -1)
    posed = lbs.skin_points(points, torch.from_numpy(np.asarray(weights, np.float32)), tfs.float())
    return [(frame.numpy(), faces) for frame in posed]


def errors_by_part(truth: Surface, avatar: Surface) -> dict[str, dict[str, float]]:
    """Per body part: area share, mean |signed distance| and mean signed distance (cm) of the
    true canonical vertices to the avatar's canonical mesh, and the part's share of the error."""
    vertices, faces, weights = truth
    areas = np.linalg.norm(
        np.cross(*(vertices[faces[:, 1:]] - vertices[faces[:, :1]]).transpose(1, 0, 2)), axis=1
    )
    vertex_area = np.bincount(faces.ravel(), np.repeat(areas / 6.0, 3), minlength=len(vertices))
    signed = MeshQuery(avatar[0], avatar[1]).signed_distance(vertices) * 100.0
    part = weights.argmax(1)
    total = float((vertex_area * np.abs(signed)).sum())
    rows = {}
    for name, joints in PARTS.items():
        mask = np.isin(part, [JOINT_INDEX[joint] for joint in joints])
        area = vertex_area[mask]
        rows[name] = {
            "area_share": float(area.sum() / vertex_area.sum()),
            "mean_distance_cm": float((area * np.abs(signed[mask])).sum() / area.sum()),
            "mean_signed_cm": float((area * signed[mask]).sum() / area.sum()),
            "error_share": float((area * np.abs(signed[mask])).sum() / total),
        }
    return rows


def held_out_budget(workspace: Path) -> dict:
    """Each budget row's held-out metrics and the canonical shape's errors by part."""
    protocol = PROTOCOLS["small"]
    stored = load_avatar(workspace / "pina" / "avatar.pt")
    subject = make_subject(protocol.subject, seed=protocol.seed)
    if not torch.allclose(stored.avatar.shape, subject.shape.to(stored.avatar.shape)):
        raise SystemExit(f"{workspace}: the budget needs an avatar fitted with the true shape and poses")
    with torch.no_grad():
        rest = cloth_held_rest(subject, stored.poses.cpu())  # the true poses: not optimised
        surfaces = canonical_surfaces(subject, stored, rest, protocol.mesh_resolution)
        faces = subject.faces.numpy()
        scores: dict[str, list[dict]] = {}
        for poses, trans in held_out_poses(protocol):
            posed = subject.posed(poses, trans)
            tfs = stored.avatar.transforms(poses.float(), trans.float())
            meshes = {
                "truth_cloth_held": skinned(
                    (rest.numpy(), faces, subject.body.weights.numpy()), posed.transforms
                )
            }
            meshes |= {name: skinned(surface, tfs) for name, surface in surfaces.items()}
            for name, frames in meshes.items():
                for mesh, truth in zip(frames, posed.clothed.numpy(), strict=True):
                    scores.setdefault(name, []).append(
                        mesh_metrics(mesh, (truth, faces), num_samples=protocol.samples)
                    )
    return {
        "rows": {name: average(values) for name, values in scores.items()},
        "canonical_shape_by_part": errors_by_part(surfaces["truth_from_canonical"], surfaces["avatar"]),
    }


def summary(row: dict) -> str:
    """One line: each row's uniform IoU / Chamfer-L2."""
    return ", ".join(
        f"{name} {values['iou_uniform']:.3f} / {values['chamfer_l2_cm']:.3f} cm"
        for name, values in row["rows"].items()
    )


def main(argv: list[str] | None = None) -> None:
    measure_workspaces(argv, "held_out_budget", __doc__, RESULTS, held_out_budget, summary)


if __name__ == "__main__":
    main()
