"""Does the fused avatar pull the poses towards the truth? With the ``small`` protocol's trained
avatar frozen, every frame's pose and translation are registered to its own observations (PINA's
on-surface and normal terms and the pose prior, all frames at once, Adam) and the refined poses'
accuracy is measured as the optimisation goes (:func:`rgbd2avatar.bench.pose_accuracy`).

    rgbd2avatar bench                              # once: the capture and the avatar
    python -m benchmarks.pose_registration         # prints and stores results/pose_registration.json

If the avatar fused from all frames were consistent with the true poses and not with the fitted
ones, registering to it would lower the pose error (model-to-frame tracking); if its surfaces fit
the fitted poses as well as the true ones, the error stays where it is. Conditions: each frame's
own pose (as in training) and the mean training pose (one shape for all frames).

60 iterations of 128 points per frame, 61 frames: about 2 minutes per condition on a 2-core CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch

from capture.files import load_npz, write_json
from fitting.pina import losses
from fitting.pina.config import LossWeights, PinaConfig
from fitting.pina.data import gather_rows, load_pina_data, sample_rows
from rgbd2avatar.avatar.store import StoredAvatar, load_avatar
from rgbd2avatar.bench import pose_accuracy

SMALL = Path("bench_out") / "small"
RESULTS = Path(__file__).resolve().parent / "results" / "pose_registration.json"
ITERATIONS, POINTS, LEARNING_RATE, REPORT_EVERY = 60, 128, 2e-3, 20
KEYS = ("mpjpe_cm", "root_offset_cm", "joint_angle_error_rad")


def accuracy(fits: dict, poses: torch.Tensor, trans: torch.Tensor) -> dict:
    """Pose accuracy of (F, 72) poses and (F, 3) translations against the ground truth."""
    row = pose_accuracy(fits | {"poses": poses.numpy(), "trans": trans.numpy()}, SMALL / "capture")
    return {key: row[key] for key in KEYS}


def register(stored: StoredAvatar, subject: Path, condition: str) -> list[dict]:
    """Accuracy every REPORT_EVERY iterations of registering all frames to the frozen avatar."""
    avatar = stored.avatar.requires_grad_(False)
    data = load_pina_data(subject, avatar.body, PinaConfig())
    fits = load_npz(subject / "body_fit" / "fits.npz")
    weights = LossWeights()
    delta_pose = torch.zeros_like(stored.poses, requires_grad=True)
    delta_trans = torch.zeros_like(stored.trans, requires_grad=True)
    optimiser = torch.optim.Adam([delta_pose, delta_trans], lr=LEARNING_RATE)
    generator, frames = torch.Generator().manual_seed(0), torch.arange(data.num_frames)
    history = [{"iteration": 0} | accuracy(fits, stored.poses, stored.trans)]
    for iteration in range(1, ITERATIONS + 1):
        rows = sample_rows(generator, data.counts, POINTS)
        pose, trans = stored.poses + delta_pose, stored.trans + delta_trans
        shared = stored.mean_pose().expand_as(pose) if condition == "mean" else pose
        points, normals = gather_rows(data.points, frames, rows), gather_rows(data.normals, frames, rows)
        on = avatar.posed_sdf(points, pose, trans, normals=True, condition=shared)
        loss = (
            weights.sdf * losses.on_surface_sdf(on.sdf, on.found)
            + weights.normal * losses.normal_agreement(on.normals, normals, on.found)
            + weights.pose * losses.pose_change(pose, data.poses)
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if iteration % REPORT_EVERY == 0:
            refined = (stored.poses + delta_pose).detach(), (stored.trans + delta_trans).detach()
            history.append({"iteration": iteration, "loss": float(loss.detach())} | accuracy(fits, *refined))
    return history


def main() -> None:
    subject = SMALL / "subject"
    fits = load_npz(subject / "body_fit" / "fits.npz")
    stored = load_avatar(subject / "pina" / "avatar.pt")
    results = {"body_fit": accuracy(fits, torch.from_numpy(fits["poses"]), torch.from_numpy(fits["trans"]))}
    for condition in ("own", "mean"):
        results[condition] = register(stored, subject, condition)
        for row in results[condition]:
            print(condition, row, flush=True)
    write_json(RESULTS, results)


if __name__ == "__main__":
    main()
