"""Pipeline stages on a subject workspace: each reads the previous stage's files, writes its own,
and records itself in the manifest, so that an up-to-date stage is skipped and a changed input,
parameter or output re-runs it (see :mod:`rgbd2avatar.workspace`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from rgbd2avatar.logs import progress, progress_callback
from rgbd2avatar.workspace import Workspace

log = logging.getLogger(__name__)


def run_stage(
    workspace: Workspace,
    stage: str,
    inputs: Iterable[Path | str],
    params: Mapping[str, Any],
    outputs: Iterable[Path | str],
    work: Callable[[], Any],
    force: bool = False,
) -> bool:
    """Run ``work`` unless ``stage`` is up to date for these inputs and parameters, then record it.

    Returns:
        True when the stage ran, False when it was up to date and skipped.
    """
    inputs = list(inputs)
    reason = "forced" if force else workspace.stale_reason(stage, inputs, params)
    if reason is None:
        log.info("%s is up to date; skipping it (use --force to run it again)", stage)
        return False
    log.info("%s: running (%s)", stage, reason)
    started = time.time()
    work()
    workspace.record(stage, inputs, params, list(outputs), started=started)
    return True


def import_stage(
    source: Path, subject: Path, max_frames: int | None = None, force: bool = False
) -> Workspace:
    """Import a recording (Azure Kinect MKV, image folder or sequence) into ``subject/recording``."""
    from capture.importer import import_recording

    workspace = Workspace.create(subject)
    destination = workspace.root / "recording"
    run_stage(
        workspace,
        "recording",
        [source.absolute()],
        {"max_frames": max_frames},
        [destination],
        lambda: import_recording(
            source, destination, max_frames=max_frames, progress=_bar("import"), overwrite=True
        ),
        force,
    )
    return workspace


def preprocess_stage(
    subject: Path, stride: int | None, max_frames: int | None, mask_dir: Path | None, force: bool = False
) -> Workspace:
    """Per-frame person points, normals and colours from ``subject/recording`` into ``subject/preprocess``.

    ``stride`` / ``max_frames`` None keep the preprocessing defaults (about 10 fps, at most 600 frames).
    """
    from capture.preprocess import DEFAULT_MAX_FRAMES, preprocess

    workspace = Workspace(subject)
    recording, out = workspace.root / "recording", workspace.root / "preprocess"
    max_frames = DEFAULT_MAX_FRAMES if max_frames is None else max_frames
    inputs = [recording] + ([mask_dir.absolute()] if mask_dir else [])
    params = {"stride": stride, "max_frames": max_frames, "masks": str(mask_dir) if mask_dir else None}

    def work() -> None:
        with progress_callback("preprocess") as report:
            preprocess(
                recording, out, stride=stride, max_frames=max_frames, mask_dir=mask_dir, progress=report
            )

    run_stage(workspace, "preprocess", inputs, params, [out], work, force)
    return workspace


DATA_TERMS = ("keypoints", "densepose", "icp")


def fit_body_stage(
    subject: Path,
    body_model: str = "anny",
    model_dir: Path | None = None,
    gender: str = "neutral",
    keypoints: Path | None = None,
    densepose: Path | None = None,
    densepose_uv: Path | None = None,
    terms: tuple[str, ...] = DATA_TERMS,
    device: str = "auto",
    force: bool = False,
) -> Workspace:
    """Per-frame body pose and one shape from ``subject/preprocess`` (+ keypoints, DensePose)."""
    from dataclasses import asdict, replace

    from fitting.body_fit import FitOptions, FitWeights
    from rgbd2avatar.body import load_body_model
    from rgbd2avatar.body_fit_stage import run_body_fit
    from rgbd2avatar.devices import resolve_device

    workspace = Workspace(subject)
    weights = replace(FitWeights(), **{term: 0.0 for term in DATA_TERMS if term not in terms})
    options = FitOptions(device=str(resolve_device(device)))
    extra = [p.absolute() for p in (keypoints, densepose, densepose_uv) if p is not None]
    inputs = [workspace.root / "preprocess", workspace.root / "recording", *extra]
    params = {
        "body_model": body_model, "gender": gender, "model_dir": str(model_dir) if model_dir else None,
        "weights": asdict(weights), "options": {**asdict(options), "device": None},
    }  # fmt: skip

    def work() -> None:
        body = load_body_model(body_model, model_dir, gender)
        with progress_callback("fit-body") as report:
            run_body_fit(workspace.root, body, keypoints, densepose, densepose_uv, weights, options, report)

    run_stage(workspace, "body_fit", inputs, params, [workspace.root / "body_fit"], work, force)
    return workspace


def _bar(description: str) -> Callable[[Iterable[Any], int | None], Iterable[Any]]:
    """A progress callable ``(iterable, total) → iterable`` for the capture package."""
    return lambda iterable, total=None: progress(iterable, total=total, description=description)
