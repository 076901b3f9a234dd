"""Does ``fit-body``'s dearer collar and neck prior help when the person does move those joints?

    python -m benchmarks.shrug_prior

The ``small`` protocol's ``capture`` motion keeps the collars and the neck at rest, so a pose
prior that pulls them towards rest (:data:`fitting.priors.STIFF`, against the
``lighter_collars_neck`` trial of :mod:`benchmarks.pina_trials`) is bound to help on it. This
benchmark films the same subject (``casual``, seed 0, 181 frames) doing the ``capture`` motion
with shrugs added (each collar ±0.15 rad about z, opposite sides mirrored, period 3 s) and the
neck nodding and turning (±0.2 rad about x and y, periods 4 and 5 s), kept in
``bench_out/shrug/``, and fits the body twice: with the collars and the neck as dear as the
other joints, and with ``fit-body``'s pose prior as it is (those joints
:data:`fitting.priors.STIFF_SCALE` times dearer).
Stores the MPJPE and the rotation errors of the neck, collars, shoulders and elbows (radians) in
``results/shrug_prior.json``. About 5 minutes on a 2-core CPU.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.pina_trials import scaled_prior
from capture.files import write_json
from fitting.priors import STIFF_SCALE
from rgbd2avatar.bench import body_fit_accuracy, prepare_subject
from rgbd2avatar.body.skeleton import JOINT_INDEX
from rgbd2avatar.motion import builtin_motion
from rgbd2avatar.synth.generate import SynthOptions, synthesize

ROOT = Path("bench_out") / "shrug"
RESULTS = Path(__file__).parent / "results" / "shrug_prior.json"
FRAMES = 181
FPS = 30.0
REPORTED = (
    "neck",
    "left_collar",
    "right_collar",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
)


def shrugging_motion(path: Path) -> None:
    """Write the ``capture`` motion with shrugs and a nodding, turning neck as an AMASS file."""
    motion = builtin_motion("capture", num_frames=FRAMES, fps=FPS)
    poses = motion.poses.astype(np.float64).reshape(FRAMES, -1, 3).copy()
    seconds = np.arange(FRAMES) / FPS
    shrug = 0.15 * np.sin(2 * np.pi * seconds / 3.0)
    poses[:, JOINT_INDEX["left_collar"], 2] += shrug
    poses[:, JOINT_INDEX["right_collar"], 2] -= shrug
    poses[:, JOINT_INDEX["neck"], 0] += 0.2 * np.sin(2 * np.pi * seconds / 4.0)
    poses[:, JOINT_INDEX["neck"], 1] += 0.2 * np.sin(2 * np.pi * seconds / 5.0)
    np.savez(
        path, poses=poses.reshape(FRAMES, -1).astype(np.float32), trans=motion.trans.astype(np.float32),
        mocap_framerate=FPS,
    )  # fmt: skip


def run() -> dict:
    """Film the shrugging capture (unless kept), fit the body both ways and compare."""
    ROOT.mkdir(parents=True, exist_ok=True)
    capture = ROOT / "capture"
    if not (capture / "ground_truth").exists():
        shrugging_motion(ROOT / "motion.npz")
        synthesize(capture, SynthOptions(motion=str(ROOT / "motion.npz"), frames=FRAMES, seed=0))
    priors = {"collars_and_neck_x1": scaled_prior(("collar", "neck"), 1 / STIFF_SCALE), "as_it_is": None}
    rows = {}
    for name, context in priors.items():
        start = time.perf_counter()
        if context is None:
            prepare_subject(capture, ROOT / name)
        else:
            with context():
                prepare_subject(capture, ROOT / name)
        accuracy = body_fit_accuracy(ROOT / name, capture)
        angles = accuracy["joint_angle_error_rad_by_joint"]
        rows[name] = {
            "mpjpe_cm": accuracy["mpjpe_cm"],
            "joint_angle_error_rad": {joint: angles[joint] for joint in REPORTED},
            "seconds": time.perf_counter() - start,
        }
        print(name, f"MPJPE {accuracy['mpjpe_cm']:.3f} cm", flush=True)
    return rows


def main() -> None:
    write_json(RESULTS, run())


if __name__ == "__main__":
    main()
