"""Body fitting on a synthetic capture: accuracy with each data term added in turn, and speed.

The capture (the ``capture`` motion, noisy depth, detector-like keypoints and IUV) is imported and
preprocessed once; the body is then fitted with keypoints only, keypoints + DensePose, and
keypoints + DensePose + ICP. Reported per configuration: MPJPE and median per-vertex distance to
the ground-truth body (cm), frames fitted per second on this machine.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rgbd2avatar.bench import body_fit_accuracy, prepare_subject
from rgbd2avatar.logs import Timer
from rgbd2avatar.synth.generate import SynthOptions, synthesize

DATA = Path("bench_out") / "body_fit"
FRAMES = 61
CONFIGS = {
    "keypoints": ("keypoints",),
    "keypoints+densepose": ("keypoints", "densepose"),
    "keypoints+densepose+icp": ("keypoints", "densepose", "icp"),
}


def run() -> dict:
    capture = DATA / "capture"
    if not (capture / "ground_truth" / "subject.json").exists():
        synthesize(capture, SynthOptions(frames=FRAMES, seed=2))
    results = {}
    for name, terms in CONFIGS.items():
        subject = DATA / f"subject_{name}"
        shutil.rmtree(subject, ignore_errors=True)
        with Timer() as timer:
            prepare_subject(capture, subject, terms)
        accuracy = body_fit_accuracy(subject, capture)
        results[name] = {**accuracy, "seconds_with_import_and_preprocess": timer.seconds}
    return {"capture_frames": FRAMES, "configs": results}
