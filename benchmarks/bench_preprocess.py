"""Preprocessing: segmentation and normal accuracy, throughput and peak memory.

- **Accuracy** on a 60-frame synthetic capture (``capture`` motion, seed 1, one full turn; kept in
  ``bench_out/preprocess/`` between runs): pixel precision and recall of the written person masks
  against the ground-truth masks (restricted to pixels with a depth measurement), mean over
  frames; the angle between each point's PCA normal and the normal of the closest triangle of the
  ground-truth clothed mesh (median over all points, and the 90th percentile); the points'
  distance to that mesh.
- **Throughput**: frames per second of ``preprocess`` (decoding, segmentation, normals, outliers,
  colour, writing), single process on this machine, on 640 × 576 depth and 1280 × 720 colour:
  end to end on the 60 frames (set-up included), and steady state on the 1,000-frame run.
- **Peak memory** on a 1,000-frame sequence. Rendering 1,000 frames would take ~15 min, so the
  sequence is made by repeating the 60 synthesized frames (same images, new indices and
  timestamps, written with ``SequenceWriter``); every frame is preprocessed (stride 1, no cap)
  in a fresh subprocess whose peak RSS (``VmHWM`` of ``/proc/self/status``: unlike
  ``ru_maxrss``, it does not inherit the parent's peak across ``fork``/``exec``) is read after the
  imports, after 100 and 500 frames and at the end — equal values after the first frames show
  that memory does not grow with the recording (Linux only).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from capture.files import read_image, read_json
from capture.preprocess import load_observation, preprocess, read_index
from capture.sequence import RGBDFrame, SequenceReader, SequenceWriter
from rgbd2avatar.bench import true_mesh
from rgbd2avatar.geometry import closest_points, face_normals
from rgbd2avatar.synth.generate import SynthOptions, synthesize

DATA_DIR = Path("bench_out") / "preprocess"
CAPTURE_FRAMES = 60
SEED = 1
MEMORY_FRAMES = 1000
_MEMORY_SCRIPT = """
import json, sys, time
from pathlib import Path
from capture.preprocess import preprocess

def peak_mb():
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024

marks, times = {"after_imports": peak_mb()}, []

def progress(done, total):
    times.append(time.perf_counter())
    if done in (100, total // 2):
        marks[f"after_{done}_frames"] = peak_mb()

summary = preprocess(sys.argv[1], sys.argv[2], stride=1, max_frames=None, progress=progress)
marks["at_end"] = peak_mb()
steady = (len(times) - 1) / (times[-1] - times[0])
print(json.dumps({"peak_rss_mb": marks, "summary": summary, "steady_fps": steady}))
"""


def ensure_capture(data_dir: Path) -> Path:
    """The 60-frame synthetic capture in ``data_dir``, synthesised unless already there."""
    summary = data_dir / "ground_truth" / "subject.json"
    wanted = {"frames": CAPTURE_FRAMES, "seed": SEED}
    if not summary.exists() or {k: read_json(summary)["options"][k] for k in wanted} != wanted:
        synthesize(data_dir, SynthOptions(frames=CAPTURE_FRAMES, seed=SEED))
    return data_dir


def frame_accuracy(capture: Path, out: Path, entry: dict) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Precision, recall, per-point normal angles (degrees) and distances (m) of one frame."""
    index = entry["index"]
    mask = read_image(out / entry["mask"]) > 0
    depth = SequenceReader(capture / "sequence").frame(index, color=False).depth_mm
    truth = (read_image(capture / "ground_truth" / "masks" / f"{index:06d}.png") > 0) & (depth > 0)
    hits = np.count_nonzero(mask & truth)
    observation = load_observation(out, index)
    mesh = true_mesh(capture, index)
    vertices, faces = np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces)
    closest = closest_points(vertices, faces, observation.points)
    true_normals = face_normals(vertices, faces)[closest.triangle_ids]
    cosine = np.clip(np.einsum("nk,nk->n", observation.normals, true_normals), -1.0, 1.0)
    return (
        hits / np.count_nonzero(mask),
        hits / np.count_nonzero(truth),
        np.degrees(np.arccos(cosine)),
        closest.distances,
    )


def accuracy(capture: Path, out: Path) -> dict:
    """Segmentation and normal accuracy of a preprocessing result against the ground truth."""
    rows = [frame_accuracy(capture, out, entry) for entry in read_index(out)["frames"]]
    precision, recall = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    angles, distances = np.concatenate([r[2] for r in rows]), np.concatenate([r[3] for r in rows])
    return {
        "precision_mean": float(precision.mean()),
        "precision_min": float(precision.min()),
        "recall_mean": float(recall.mean()),
        "recall_min": float(recall.min()),
        "normal_angle_median_deg": float(np.median(angles)),
        "normal_angle_p90_deg": float(np.percentile(angles, 90)),
        "point_distance_median_mm": float(np.median(distances) * 1000),
        "point_distance_p99_mm": float(np.percentile(distances, 99) * 1000),
    }


def repeated_sequence(source: Path, root: Path, frames: int) -> None:
    """Write a ``frames``-frame sequence cycling through the frames of ``source`` (30 fps)."""
    reader = SequenceReader(source)
    with SequenceWriter(root, reader.calibration) as writer:
        for index in range(frames):
            frame = reader.frame(index % len(reader))
            time_s = index / 30.0
            writer.write(RGBDFrame(index, frame.depth_mm, frame.color, depth_time=time_s, color_time=time_s))


def memory_run(sequence: Path, out: Path) -> dict:
    """Preprocess every frame of ``sequence`` in a fresh process; its peak RSS and throughput."""
    completed = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(sequence), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run() -> dict:
    capture = ensure_capture(DATA_DIR / "capture")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        start = time.perf_counter()
        summary = preprocess(capture / "sequence", scratch / "preprocess", stride=1, max_frames=None)
        seconds = time.perf_counter() - start
        results = accuracy(capture, scratch / "preprocess")
        points_per_frame = summary["points_mean"]
        bytes_per_frame = np.mean([p.stat().st_size for p in (scratch / "preprocess" / "frames").iterdir()])
        repeated_sequence(capture / "sequence", scratch / "long", MEMORY_FRAMES)
        memory = memory_run(scratch / "long", scratch / "long_preprocess")
    return {
        **results,
        "frames": CAPTURE_FRAMES,
        "fps_end_to_end_60_frames": CAPTURE_FRAMES / seconds,
        "fps_steady_1000_frames": memory["steady_fps"],
        "points_per_frame": points_per_frame,
        "npz_kb_per_frame": bytes_per_frame / 1024,
        "memory_frames": MEMORY_FRAMES,
        "peak_rss_mb": memory["peak_rss_mb"]["at_end"],
        "peak_rss_mb_marks": memory["peak_rss_mb"],
        "memory_sequence": (
            f"{MEMORY_FRAMES} frames made by repeating the {CAPTURE_FRAMES} synthesized frames with new "
            "indices and timestamps (SequenceWriter); every frame preprocessed (stride 1, no cap) in a "
            "subprocess; peak RSS = VmHWM from /proc/self/status"
        ),
        "machine_note": "single process, CPU; 640x576 depth, 1280x720 colour",
    }
