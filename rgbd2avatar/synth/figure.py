"""Pictures of the synthetic data: one captured frame (depth, colour with detector keypoints, IUV, mask)
and the subject presets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from capture.files import read_image, read_json
from capture.sequence import SequenceReader
from rgbd2avatar.body import load_body_model
from rgbd2avatar.motion import builtin_motion
from rgbd2avatar.preview import framing_cameras, part_colors
from rgbd2avatar.render import contact_sheet, raycast, shade
from rgbd2avatar.synth.subject import PRESETS, make_subject

PANEL_HEIGHT = 360


def depth_to_rgb(depth_mm: np.ndarray, near_m: float = 0.5, far_m: float = 4.0) -> np.ndarray:
    """(H, W) uint16 millimetres → (H, W, 3) uint8: near bright, far dark, invalid black-red."""
    metres = depth_mm.astype(np.float32) / 1000.0
    level = np.clip((far_m - metres) / (far_m - near_m), 0.0, 1.0)
    rgb = np.stack([level, level**0.7, level**0.5], -1)
    rgb[depth_mm == 0] = (0.25, 0.0, 0.0)
    return np.round(255 * rgb).astype(np.uint8)


def iuv_to_rgb(iuv: np.ndarray) -> np.ndarray:
    """(H, W, 3) IUV → colours: hue by part, brightness modulated by U and V stripes."""
    part = iuv[..., 0].astype(int)
    colors = part_colors(np.maximum(part - 1, 0)).astype(np.float32)
    stripes = 0.75 + 0.25 * np.sin(iuv[..., 1] / 255.0 * 40.0) * np.sin(iuv[..., 2] / 255.0 * 40.0)
    out = colors * stripes[..., None]
    out[part == 0] = 255
    return np.clip(out, 0, 255).astype(np.uint8)


def draw_keypoints(image: np.ndarray, keypoints: np.ndarray, radius: int = 5) -> np.ndarray:
    """Draw (K, 3) keypoints (x, y, confidence) as discs, bigger for higher confidence."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for x, y, c in keypoints[keypoints[:, 2] > 0]:
        r = max(2, round(radius * c))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 40, 40), outline=(255, 255, 255))
    return np.asarray(canvas)


def _fit(image: np.ndarray) -> np.ndarray:
    width = round(image.shape[1] * PANEL_HEIGHT / image.shape[0])
    return np.asarray(Image.fromarray(image).resize((width, PANEL_HEIGHT), Image.BILINEAR))


def frame_figure(capture_dir: Path, index: int) -> np.ndarray:
    """One frame of a synthetic capture as a 2×2 sheet (depth | colour + BODY_25 keypoints, IUV | mask)."""
    frame = SequenceReader(capture_dir / "sequence").frame(index)
    truth = capture_dir / "ground_truth"
    keypoints = np.asarray(
        read_json(truth / "keypoints" / "openpose" / f"{index:06d}_keypoints.json")["people"][0][
            "pose_keypoints_2d"
        ]
    ).reshape(-1, 3)
    mask = read_image(truth / "masks" / f"{index:06d}.png")
    panels = [
        _fit(depth_to_rgb(frame.depth_mm)),
        _fit(draw_keypoints(frame.color, keypoints)),
        _fit(iuv_to_rgb(read_image(truth / "iuv" / f"{index:06d}.png"))),
        _fit(np.repeat(mask[..., None], 3, -1)),
    ]
    labels = [
        "depth (mm, NFOV 640x576)",
        "colour 1280x720 + BODY_25",
        "IUV (parts, U/V)",
        "person mask (depth)",
    ]
    return contact_sheet(panels, cols=2, labels=labels)


def textured_render(subject, vertices: np.ndarray, camera) -> np.ndarray:
    """A shaded image of posed clothed vertices (V, 3), coloured per pixel by the subject's albedo."""
    hits = raycast(vertices, subject.faces, camera)
    colors = np.zeros((*hits.hit.shape, 3))
    colors[hits.hit] = subject.albedo_at(hits.triangle_ids[hits.hit], hits.barycentrics[hits.hit])
    return shade(hits, camera, colors)


def subjects_figure(seed: int = 0, panel: tuple[int, int] = (230, 330)) -> np.ndarray:
    """Every subject preset at rest, with arms up and mid-stride, front and side, one row each."""
    body = load_body_model("anny")
    poses = torch.cat([
        torch.zeros(1, 72),
        builtin_motion("raise_arms", fps=4.0).to_torch()[0][8:9],
        builtin_motion("walk", fps=10.0).to_torch()[0][4:5],
    ])  # fmt: skip
    subjects = {name: make_subject(name, seed=seed, body=body) for name in PRESETS}
    with torch.no_grad():
        verts = {name: subject.clothed(poses).numpy() for name, subject in subjects.items()}
    cameras = framing_cameras(
        np.concatenate([v.reshape(-1, 3) for v in verts.values()]), ("front", "side"), *panel
    )
    panels, labels = [], []
    for name, subject in subjects.items():
        for frame, pose_name in zip(verts[name], ("rest", "arms up", "walk"), strict=True):
            for camera, view in zip(cameras, ("front", "side"), strict=True):
                panels.append(textured_render(subject, frame, camera))
                labels.append(f"{name}: {pose_name} ({view})")
    return contact_sheet(panels, cols=6, labels=labels)
