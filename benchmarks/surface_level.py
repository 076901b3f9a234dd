"""Whether an avatar's surface sits inside or outside what it was fitted to, and what that costs.

    rgbd2avatar bench                                     # once: the capture and the avatar
    python -m benchmarks.surface_level [WORKSPACE ...]    # default: bench_out/small/subject

For each workspace's avatar, on the ``small`` protocol's evaluation frames posed as the benchmark
poses them (:func:`rgbd2avatar.bench.avatar_meshes`, fast meshes at the protocol's resolution):

- the median signed distance (mm) of each frame's observed points to the avatar's mesh and to the
  ground-truth mesh (positive: the points lie outside; the second shows the data's own bias);
- the *observed level*: the median SDF of the observed points of every training frame (up to
  :data:`LEVEL_POINTS` each) under the refined poses, found by the correspondence search as the
  on-surface term finds it; subtracting it from the SDF would put half of the points outside
  (the minimiser of the |SDF| term over a constant), which moves the surface out by about as
  much: the data's own choice of the level;
- uniform IoU, Chamfer-L2 (cm) and normal consistency with every mesh moved along its vertex
  normals by each of :data:`OFFSETS` and by the observed level (positive: outwards), as
  :func:`rgbd2avatar.bench.reconstruction_table` scores them. A diagnostic: the offset that
  scores best is chosen with the ground truth.

Prints one line per workspace and stores every number in ``results/surface_level.json``. About a
minute and a half per workspace on a 2-core CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import trimesh

from benchmarks.workspaces import measure_workspaces
from capture.files import load_npz
from fitting.load import frame_points
from rgbd2avatar.avatar.store import load_avatar
from rgbd2avatar.bench import PROTOCOLS, avatar_meshes, average, evaluation_frames, true_meshes
from rgbd2avatar.geometry import MeshQuery
from rgbd2avatar.metrics import mesh_metrics

CAPTURE = Path("bench_out") / "small" / "capture"
RESULTS = Path(__file__).resolve().parent / "results" / "surface_level.json"
OFFSETS = (0.0, 0.0005, 0.001, 0.0015, 0.002)
"""Metres the meshes are moved along their vertex normals."""
LEVEL_POINTS = 1024
"""Observed points per training frame (evenly spaced in its list) for the observed level."""
LEVEL_FRAMES = 8
"""Frames per correspondence search of the observed level (bounds memory)."""


def observed_level(workspace: Path) -> float:
    """The median SDF (m) of the training frames' observed points under the refined poses."""
    stored = load_avatar(workspace / "pina" / "avatar.pt")
    points = []
    for frame in stored.frames.tolist():
        seen, _ = frame_points(workspace / "preprocess", frame)
        points.append(seen[np.linspace(0, len(seen) - 1, LEVEL_POINTS).astype(int)])
    points = torch.from_numpy(np.stack(points)).float()  # (F, LEVEL_POINTS, 3)
    values = []
    with torch.no_grad():
        for rows in torch.arange(len(points)).split(LEVEL_FRAMES):
            query = stored.avatar.posed_sdf(points[rows], stored.poses[rows], stored.trans[rows])
            values.append(query.sdf[query.found])
    return float(torch.cat(values).median())


def surface_level(workspace: Path) -> dict:
    """The observed points' median signed distances (mm, per frame) to the avatar and to the
    truth, and the training-frame metrics of the avatar's meshes moved by each offset."""
    protocol = PROTOCOLS["small"]
    frames = evaluation_frames(protocol, load_npz(workspace / "body_fit" / "fits.npz")["frames"])
    meshes = avatar_meshes(workspace, frames, protocol.mesh_resolution)
    truths = true_meshes(CAPTURE, frames)
    to_avatar, to_truth = [], []
    for frame, (vertices, faces), truth in zip(frames, meshes, truths, strict=True):
        seen, _ = frame_points(workspace / "preprocess", int(frame))
        to_avatar.append(float(np.median(MeshQuery(vertices, faces).signed_distance(seen))) * 1e3)
        to_truth.append(float(np.median(MeshQuery(truth.vertices, truth.faces).signed_distance(seen))) * 1e3)
    level = observed_level(workspace)
    moved = {}
    normals = [trimesh.Trimesh(vertices, faces, process=False).vertex_normals for vertices, faces in meshes]
    for offset in (*OFFSETS, level):
        rows = [
            mesh_metrics((vertices + offset * normal, faces), (truth.vertices, truth.faces), protocol.samples)
            for (vertices, faces), normal, truth in zip(meshes, normals, truths, strict=True)
        ]
        moved[f"{offset * 1e3:g}"] = average(rows)
    return {
        "frames": frames.tolist(),
        "observed_median_signed_mm": to_avatar,
        "observed_median_signed_to_truth_mm": to_truth,
        "observed_level_mm": level * 1e3,
        "moved_out_mm": moved,
    }


def summary(row: dict) -> str:
    """One line: the observed points' medians, the observed level, the moved meshes' scores."""
    return " ".join(
        [
            "observed points' median signed distance (mm) to the avatar",
            " ".join(f"{value:.2f}" for value in row["observed_median_signed_mm"]),
            "and to the truth",
            " ".join(f"{value:.2f}" for value in row["observed_median_signed_to_truth_mm"]) + ";",
            f"observed level {row['observed_level_mm']:+.2f} mm;",
            "moved out by (mm) → uniform IoU / Chamfer cm:",
            ", ".join(
                f"{offset} → {scores['iou_uniform']:.4f} / {scores['chamfer_l2_cm']:.3f}"
                for offset, scores in row["moved_out_mm"].items()
            ),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    measure_workspaces(argv, "surface_level", __doc__, RESULTS, surface_level, summary)


if __name__ == "__main__":
    main()
