"""How well each normal estimator recovers the true surface's normals at the observed points.

    python -m benchmarks.normal_accuracy [WORKSPACE ...]

For a preprocessed workspace of a synthetic capture (default: ``bench_out/small/subject`` of
``rgbd2avatar bench``; the capture is found through the workspace's recording), every
:data:`capture.normals.NORMAL_METHODS` estimator is run with windows of :data:`WINDOWS` pixels on
the kept person points of :data:`FRAMES` frames, rebuilt as the organised point image
:func:`capture.normals.grid_normals` reads. Each normal is compared with the normal of the
closest triangle of that frame's ground-truth clothed mesh, at the points within
:data:`NEAR` of it (flying pixels left out): the mean, median and 90th percentile of the angle in
degrees, and the milliseconds per frame. Stores the rows in ``results/normal_accuracy.json``.
About 5 seconds per workspace on a 2-core CPU.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.workspaces import measure_workspaces
from capture.normals import NORMAL_METHODS, grid_normals
from capture.preprocess import load_observation, read_index
from capture.sequence import Calibration
from rgbd2avatar.bench import true_surface_at

WINDOWS = (3, 5, 7, 9, 11)
FRAMES = 5
"""Frames measured, evenly spread over the preprocessed ones."""
NEAR = 0.01
"""Points farther than this from the true mesh (metres) are not scored."""
RESULTS = Path(__file__).parent / "results" / "normal_accuracy.json"


def capture_of(workspace: Path) -> Path:
    """The synthetic capture behind a workspace: the folder holding its ``sequence`` and
    ``ground_truth`` (the recording's source, as ``rgbd2avatar import`` recorded it)."""
    from rgbd2avatar.workspace import Workspace

    source = Path(next(iter(Workspace(workspace).stage_record("recording").inputs)))
    return source.parent


def frame_angles(
    workspace: Path, capture: Path, frame: int, shape: tuple[int, int]
) -> dict[str, tuple[np.ndarray, float]]:
    """Per-point angles (degrees) and seconds of every estimator and window on one frame."""
    observation = load_observation(workspace / "preprocess", frame)
    image = np.full((shape[0] * shape[1], 3), np.nan, np.float32)
    image[observation.pixels] = observation.points
    image = image.reshape(*shape, 3)
    closest, true_normals = true_surface_at(capture, frame, observation.points)
    near = closest.distances < NEAR
    rows = {}
    for method in NORMAL_METHODS:
        for window in WINDOWS:
            start = time.perf_counter()
            normals = grid_normals(image, window, method=method).reshape(-1, 3)[observation.pixels]
            seconds = time.perf_counter() - start
            found = np.isfinite(normals).all(-1) & near
            cosine = np.clip(np.einsum("nk,nk->n", normals[found], true_normals[found]), -1.0, 1.0)
            rows[f"{method}_{window}"] = (np.degrees(np.arccos(cosine)), seconds)
    return rows


def measure(workspace: Path) -> dict:
    """Angle statistics and timings of every estimator and window on a workspace's frames."""
    capture = capture_of(workspace)
    calibration = Calibration.load(capture / "sequence" / "calibration.json")
    shape = (calibration.depth.height, calibration.depth.width)
    indices = [entry["index"] for entry in read_index(workspace / "preprocess")["frames"]]
    chosen = [indices[i] for i in np.linspace(0, len(indices) - 1, FRAMES).round().astype(int)]
    per_frame = [frame_angles(workspace, capture, frame, shape) for frame in chosen]
    rows = {}
    for key in per_frame[0]:
        angles = np.concatenate([frame[key][0] for frame in per_frame])
        rows[key] = {
            "mean_deg": float(angles.mean()),
            "median_deg": float(np.median(angles)),
            "p90_deg": float(np.percentile(angles, 90)),
            "ms_per_frame": 1000 * float(np.mean([frame[key][1] for frame in per_frame])),
        }
    return {"frames": chosen, "estimators": rows}


def summary(row: dict) -> str:
    """One line: the mean angle of every estimator and window."""
    return ", ".join(f"{key} {value['mean_deg']:.1f}°" for key, value in row["estimators"].items())


def main(argv: list[str] | None = None) -> None:
    measure_workspaces(argv, "normal_accuracy", __doc__, RESULTS, measure, summary)


if __name__ == "__main__":
    main()
