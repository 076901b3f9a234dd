"""The ``fit-body`` stage: per-frame body fits of a subject, their file and overlay pictures.

``SUBJECT/body_fit/``::

    fits.npz              body_model, shape_names, frames (F,), shape (S,), poses (F, 72),
                          trans (F, 3) in the depth camera's frame, residuals (F,),
                          terms_<name> (F,) per data term, reinitialised (F,),
                          clothing (R,) metres of the clothing layer the fit used in each
                          region named by clothing_regions (R,) (empty without a layer)
    fit.json              the options, weights and a summary (frames, seconds, frames/s, the
                          clothing layer and every pass's depth-offset estimates, by region)
    overlays/000123.png   the fitted body drawn over the colour frame, for a few frames

Shapes: F frames, V vertices, S shape parameters.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from capture.calibration import world_from_color
from capture.files import load_npz, save_npz, write_image, write_json
from capture.sequence import SequenceReader
from fitting.body_fit import BodyFit, FitOptions, FitWeights, fit_body
from fitting.depth_offset import DepthOffset
from fitting.load import load_observations
from rgbd2avatar.body import BodyModel
from rgbd2avatar.logs import Timer
from rgbd2avatar.preview import part_colors
from rgbd2avatar.synth.sensor import cast_scene

OVERLAY_FRAMES = 8
OVERLAY_ALPHA = 0.55


def save_fits(path: Path, body: BodyModel, fit: BodyFit) -> None:
    """Write a :class:`BodyFit` as ``fits.npz`` (atomically)."""
    save_npz(
        path,
        body_model=np.array(body.name),
        shape_names=np.array(body.shape_names),
        frames=fit.frames.numpy(),
        shape=fit.shape.numpy(),
        poses=fit.poses.numpy(),
        trans=fit.trans.numpy(),
        residuals=fit.residuals.numpy(),
        reinitialised=fit.reinitialised.numpy(),
        clothing=np.array(list(fit.clothing.values()), np.float64),
        clothing_regions=np.array(list(fit.clothing), dtype=str),
        **{f"terms_{name}": values.numpy() for name, values in fit.terms.items()},
    )


def load_fits(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a ``fits.npz``."""
    return load_npz(path)


def overlay(image: np.ndarray, vertices: np.ndarray, body: BodyModel, calibration) -> np.ndarray:
    """The body (depth-camera vertices (V, 3)) drawn over a colour image, coloured by body part.

    Returns:
        (H, W, 3) uint8.
    """
    faces = body.faces.cpu().numpy()
    hits = cast_scene([(vertices, faces)], calibration.color, world_from_color(calibration, np.eye(4)))
    colors = part_colors(body.part_labels.cpu().numpy()).astype(np.float32)
    corner_colors = colors[faces[np.maximum(hits.triangle_ids, 0)]]  # (H, W, 3, 3)
    albedo = (corner_colors * hits.barycentrics[..., None]).sum(-2)
    shaded = albedo * (0.4 + 0.6 * np.abs(hits.normals[..., 2:3]))
    blended = (1 - OVERLAY_ALPHA) * image + OVERLAY_ALPHA * shaded
    return np.where(hits.hit[..., None], blended, image).clip(0, 255).astype(np.uint8)


def write_overlays(out_dir: Path, recording: Path, body: BodyModel, fit: BodyFit) -> list[Path]:
    """Overlay pictures of up to :data:`OVERLAY_FRAMES` fitted frames spread over the sequence."""
    reader = SequenceReader(recording)
    picks = np.unique(np.linspace(0, len(fit.frames) - 1, OVERLAY_FRAMES).round().astype(int))
    with torch.no_grad():
        verts = body(fit.poses[picks], fit.shape, fit.trans[picks]).vertices.numpy()
    paths = []
    for row, pick in enumerate(picks):
        frame = reader.frame(int(fit.frames[pick]))
        if frame.color is None:
            continue
        path = out_dir / f"{int(fit.frames[pick]):06d}.png"
        write_image(path, overlay(frame.color, verts[row], body, reader.calibration))
        paths.append(path)
    return paths


def depth_offset_summary(found: DepthOffset) -> dict:
    """A depth-offset estimate for ``fit.json`` (metres)."""
    return {
        "metres": found.offset,
        "view_pairs": found.pairs,
        "candidates": found.candidates.tolist(),
        "disagreement": found.scores.tolist(),
    }


def run_body_fit(
    workspace_root: Path,
    body: BodyModel,
    keypoints: Path | None,
    densepose: Path | None,
    densepose_uv: Path | None,
    weights: FitWeights,
    options: FitOptions,
    progress=None,
) -> BodyFit:
    """Fit ``body`` to a subject's preprocessed frames and write ``body_fit/``."""
    recording, out = workspace_root / "recording", workspace_root / "body_fit"
    calibration = SequenceReader(recording).calibration
    obs = load_observations(
        workspace_root / "preprocess", calibration, keypoints=keypoints, densepose=densepose,
        body=body, densepose_uv=densepose_uv,
    )  # fmt: skip
    with Timer() as timer:
        fit = fit_body(body, obs, weights, options, progress=progress)
    save_fits(out / "fits.npz", body, fit)
    write_overlays(out / "overlays", recording, body, fit)
    write_json(
        out / "fit.json",
        {
            "body_model": body.name,
            "frames": len(fit.frames),
            "reinitialised": int(fit.reinitialised.sum()),
            "fit_seconds": timer.seconds,
            "frames_per_second": len(fit.frames) / timer.seconds,
            "device": str(options.device),
            "clothing_layer_m": fit.clothing,
            "depth_offsets": [
                {region: depth_offset_summary(found) for region, found in estimates.items()}
                for estimates in fit.depth_offsets
            ],
            "weights": asdict(weights),
            "options": asdict(options),
        },
    )
    return fit
