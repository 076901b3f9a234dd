"""The SDF's pose condition at meshing time, on the ``small`` protocol's avatars: Chamfer-L2 (cm)
of fast posed meshes conditioned on each frame's own pose, on the training poses' mean
(``animate``'s default) and on the canonical pose (the rig's and the texture's mesh), on 6
training frames and on the held-out motions' distinct poses.

    rgbd2avatar bench [--preset default]      # once: the capture and the avatars
    python -m benchmarks.pose_condition       # prints and stores results/pose_condition.json

Meshes at 128³ and 20k metric samples (lighter than the benchmark's 256³ and 50k), about a minute
per avatar on a 2-core CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from capture.files import write_json
from rgbd2avatar.avatar.meshes import posed_mesh_fast
from rgbd2avatar.avatar.store import load_avatar
from rgbd2avatar.bench import PROTOCOLS, distinct_poses, evenly_spaced, true_mesh
from rgbd2avatar.metrics import mesh_metrics
from rgbd2avatar.motion import builtin_motion
from rgbd2avatar.synth.subject import make_subject

SMALL = Path("bench_out") / "small"
AVATARS = ("subject", "subject_no_pose_opt", "subject_gt_poses")
RESULTS = Path(__file__).resolve().parent / "results" / "pose_condition.json"
RESOLUTION, SAMPLES = 128, 20_000


def chamfer(avatar, pose, trans, condition, truth) -> float:
    """Chamfer-L2 (cm) of one fast posed mesh against a (vertices, faces) truth."""
    mesh = posed_mesh_fast(avatar, pose, trans, RESOLUTION, condition)
    return mesh_metrics((mesh.vertices, mesh.faces), truth, num_samples=SAMPLES)["chamfer_l2_cm"]


def evaluate(workspace: Path) -> dict[str, float]:
    """Mean Chamfer per (frames, condition) of one avatar."""
    stored = load_avatar(workspace / "pina" / "avatar.pt")
    avatar, rows = stored.avatar, {}
    conditions = {
        "mean": lambda pose: stored.mean_pose(),
        "canonical": lambda pose: avatar.canonical_condition()[0],
    }
    conditions["own"] = lambda pose: pose
    for row in evenly_spaced(6, len(stored.frames)):
        gt = true_mesh(SMALL / "capture", int(stored.frames[row]))
        for name, condition in conditions.items():
            value = chamfer(
                avatar,
                stored.poses[row],
                stored.trans[row],
                condition(stored.poses[row]),
                (gt.vertices, gt.faces),
            )
            rows.setdefault(f"training_{name}", []).append(value)
    protocol = PROTOCOLS["small"]
    subject = make_subject(protocol.subject, seed=protocol.seed)
    for motion_name in protocol.anim_motions:
        motion = builtin_motion(motion_name)
        frames = distinct_poses(motion.poses, protocol.anim_frames)
        poses, trans = (
            torch.from_numpy(motion.poses[frames]).float(),
            torch.from_numpy(motion.trans[frames]).float(),
        )
        with torch.no_grad():
            clothed = subject.posed(poses, trans).clothed
        for pose, translation, truth in zip(poses, trans, clothed, strict=True):
            for name, condition in conditions.items():
                value = chamfer(
                    avatar, pose, translation, condition(pose), (truth.numpy(), subject.faces.numpy())
                )
                rows.setdefault(f"held_out_{name}", []).append(value)
    return {key: float(np.mean(values)) for key, values in rows.items()}


def main() -> None:
    results = {
        name: evaluate(SMALL / name) for name in AVATARS if (SMALL / name / "pina" / "avatar.pt").is_file()
    }
    for name, row in results.items():
        print(name, " ".join(f"{key}={value:.3f}" for key, value in row.items()))
    write_json(RESULTS, results)


if __name__ == "__main__":
    main()
