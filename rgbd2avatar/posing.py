"""Posing a body model with a motion: mesh sequences and pictures (the naked-body animation)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from capture.files import write_image
from rgbd2avatar.body import BodyModel
from rgbd2avatar.logs import progress
from rgbd2avatar.meshio import write_mesh
from rgbd2avatar.motion import Motion, builtin_motion
from rgbd2avatar.options import parse_assignments
from rgbd2avatar.preview import part_colors, sequence_sheet

FIGURE_POSES: tuple[tuple[str, float], ...] = (("raise_arms", 2.0), ("squat", 2.0), ("walk", 0.4))
"""Built-in motion and the time (s) of the frame shown in the body-pose figure."""


def parse_shape(body: BodyModel, specs: list[str]) -> torch.Tensor:
    """Shape parameters from ``name=value`` strings, the model's defaults elsewhere.

    Returns:
        (S,) shape parameters.
    """
    shape = body.default_shape.clone()
    for name, value in parse_assignments("--shape", specs, body.shape_names).items():
        shape[body.shape_names.index(name)] = value
    return shape


def posed_batches(
    body: BodyModel, motion: Motion, shape: torch.Tensor | None = None, batch: int = 64
) -> Iterator[tuple[int, np.ndarray]]:
    """Posed vertices of a motion, a batch of frames at a time on the body's device.

    Yields:
        (first frame index, (B, V, 3) float32 vertices).
    """
    device = body.v_template.device
    poses, trans = motion.to_torch(device)
    shape = None if shape is None else shape.to(device)
    with torch.no_grad():
        for start in range(0, motion.num_frames, batch):
            out = body(poses[start : start + batch], shape, trans[start : start + batch])
            yield start, out.vertices.cpu().numpy()


def write_posed_meshes(
    body: BodyModel, motion: Motion, out_dir: Path, shape: torch.Tensor | None = None, suffix: str = ".ply"
) -> list[Path]:
    """Write one mesh file per motion frame, ``out_dir/000000.ply`` and on."""
    faces = body.faces.cpu().numpy()
    paths = []
    batches = posed_batches(body, motion, shape)
    for start, verts in progress(batches, total=-(-motion.num_frames // 64), description="posing"):
        for offset, frame_verts in enumerate(verts):
            path = out_dir / f"{start + offset:06d}{suffix}"
            write_mesh(path, frame_verts, faces)
            paths.append(path)
    return paths


def motion_sheet(
    body: BodyModel, motion: Motion, path: Path, shape: torch.Tensor | None = None, panels: int = 6
) -> None:
    """Save a front/side contact sheet of evenly spaced frames of a posed motion."""
    frames = np.unique(np.linspace(0, motion.num_frames - 1, panels).round().astype(int))
    picked = Motion(motion.poses[frames], motion.trans[frames], motion.fps, name=motion.name)
    verts = np.concatenate([v for _, v in posed_batches(body, picked, shape)])
    labels = [f"frame {f}" for f in frames]
    colors = part_colors(body.part_labels.cpu().numpy())
    write_image(path, sequence_sheet(verts, body.faces.cpu().numpy(), labels, vertex_colors=colors))


def body_pose_figure(body: BodyModel, path: Path, shape: torch.Tensor | None = None) -> None:
    """Save the rest pose and three built-in poses, front and side, coloured by body part."""
    motions = [builtin_motion("rest", num_frames=1)]
    labels = ["rest"]
    for name, seconds in FIGURE_POSES:
        clip = builtin_motion(name)
        frame = round(seconds * clip.fps)
        motions.append(clip.slice(frame, frame + 1))
        labels.append(f"{name} t={frame / clip.fps:.1f}s")
    picked = Motion(
        np.concatenate([m.poses for m in motions]),
        np.concatenate([m.trans for m in motions]),
        30.0,
        name="figure",
    )
    verts = np.concatenate([v for _, v in posed_batches(body, picked, shape)])
    colors = part_colors(body.part_labels.cpu().numpy())
    write_image(path, sequence_sheet(verts, body.faces.cpu().numpy(), labels, vertex_colors=colors))
