"""Where on the body an avatar loses volumetric IoU, and whether it lies inside its observations.

    rgbd2avatar bench                                     # once: the capture and the avatar
    python -m benchmarks.iou_by_region [WORKSPACE ...]    # default: bench_out/small/subject

For each workspace's avatar, on the ``small`` protocol's evaluation frames posed as the benchmark
poses them (:func:`rgbd2avatar.bench.avatar_meshes`, fast meshes at the protocol's resolution):

- points uniform in the padded union box of avatar and ground truth (as ``iou_uniform`` draws
  them) that only one of the two holds, each given to the bone that moves the nearest vertex of
  the true naked body most, counted as *inside* (the avatar's only) or *missed* (the truth's only),
  in percent of the frames' pooled union (their sum over bones is 100 · (1 − IoU) of the pooled
  points);
- the median signed distance (mm) of each frame's observed points to the avatar's surface
  (positive: the points lie outside, the avatar is too thin where the camera saw it).

Prints the bones that lose most and stores every number in ``results/iou_by_region.json``.
About a minute per workspace on a 2-core CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from benchmarks.workspaces import measure_workspaces
from capture.files import load_npz
from fitting.load import frame_points
from rgbd2avatar.bench import PROTOCOLS, avatar_meshes, evaluation_frames, true_meshes, true_subject
from rgbd2avatar.body.skeleton import JOINT_NAMES
from rgbd2avatar.geometry import MeshQuery
from rgbd2avatar.metrics import uniform_box_points

CAPTURE = Path("bench_out") / "small" / "capture"
RESULTS = Path(__file__).resolve().parent / "results" / "iou_by_region.json"
SAMPLES = 200_000
"""Uniform points per frame."""
SHOWN = 8
"""Bones printed per workspace."""


def region_losses(workspace: Path, seed: int = 0) -> dict:
    """Per-bone shares (% of the union, summed over frames) of points inside the avatar only and
    inside the truth only, and per-frame medians of the observed points' signed distances (mm)."""
    protocol = PROTOCOLS["small"]
    frames = evaluation_frames(protocol, load_npz(workspace / "body_fit" / "fits.npz")["frames"])
    subject, posed = true_subject(protocol, CAPTURE, frames)
    main_bone = subject.body.weights.argmax(1).numpy()
    rng = np.random.default_rng(seed)
    inside, missed, union, observed = np.zeros(len(JOINT_NAMES)), np.zeros(len(JOINT_NAMES)), 0, []
    avatars = avatar_meshes(workspace, frames, protocol.mesh_resolution)
    meshes = zip(avatars, true_meshes(CAPTURE, frames), strict=True)
    for row, (frame, ((vertices, faces), gt_mesh)) in enumerate(zip(frames, meshes, strict=True)):
        avatar, gt = MeshQuery(vertices, faces), MeshQuery(gt_mesh.vertices, gt_mesh.faces)
        points = uniform_box_points(avatar, gt, SAMPLES, rng)
        in_avatar, in_gt = avatar.inside(points), gt.inside(points)
        differ = in_avatar != in_gt
        bones = main_bone[cKDTree(posed.body[row].numpy()).query(points[differ])[1]]
        inside += np.bincount(bones[in_avatar[differ]], minlength=len(JOINT_NAMES))
        missed += np.bincount(bones[in_gt[differ]], minlength=len(JOINT_NAMES))
        union += int((in_avatar | in_gt).sum())
        seen, _ = frame_points(workspace / "preprocess", int(frame))
        observed.append(float(np.median(avatar.signed_distance(seen))) * 1e3)
    return {
        "frames": frames.tolist(),
        "inside_percent": dict(zip(JOINT_NAMES, (100 * inside / union).tolist(), strict=True)),
        "missed_percent": dict(zip(JOINT_NAMES, (100 * missed / union).tolist(), strict=True)),
        "observed_median_signed_mm": observed,
    }


def summary(row: dict) -> str:
    """One line: the shares lost, the bones that lose most, the observed points' medians."""
    inside, missed = row["inside_percent"], row["missed_percent"]
    worst = sorted(JOINT_NAMES, key=lambda name: -(inside[name] + missed[name]))[:SHOWN]
    return " ".join(
        [
            f"lost {sum(inside.values()):.2f}% inside + {sum(missed.values()):.2f}% missed;",
            ", ".join(f"{name} {inside[name]:.2f}/{missed[name]:.2f}" for name in worst) + ";",
            "observed points' median signed distance (mm):",
            " ".join(f"{value:.2f}" for value in row["observed_median_signed_mm"]),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    measure_workspaces(argv, "iou_by_region", __doc__, RESULTS, region_losses, summary)


if __name__ == "__main__":
    main()
