"""Texture and pixel-aligned rendering against the truth, on poses and views not used for training.

The capture: the synthetic ``casual`` subject (seed 2) doing the built-in ``capture`` motion for
61 frames at 30 fps (the body-fit benchmark's capture, re-used from ``bench_out/body_fit`` when it
is there). The subject workspace is imported, preprocessed (every third frame: frames 0, 3, …,
60), body-fitted and fitted by PINA (the ``fast`` preset the demo uses), then
``texture`` bakes the texture and trains the blender, all on those 21 frames.

Held-out evaluation: the frames in :data:`EVAL_FRAMES` lie between training frames (never fitted
nor used as colour sources), seen from the capture's colour camera and from cameras orbited
about the vertical axis through the subject's pelvis by :data:`AZIMUTHS_DEG` (same intrinsics
and lens, 1280 × 720). The avatar's pose there is the slerp of the refined poses of the two
neighbouring training frames (what a user of the avatar has for an unseen frame). The truth is
the synthetic subject in its true pose rendered like the capture's colour camera renders it (same
light, same Lambert + ambient shading, no noise), background black.

Metrics (:mod:`rgbd2avatar.metrics`): PSNR (dB) and SSIM inside the union of the true and the
rendered person masks (a missed or spilled pixel counts against both), averaged over the
evaluation images, per method (``texture``: the baked texture, unlit; ``pixel``: the
pixel-aligned renderer) and per azimuth. Speed: frames per second of each method at 640 × 576
(pinhole, orbit camera), on this CPU with torch's default threads, the avatar's mesh skinning
included. Pictures: ``docs/texture_vs_truth.png`` (one held-out frame, every azimuth: truth,
texture, pixel-aligned). The workspace is kept in ``bench_out/texture/`` (``run(data=...)``
elsewhere), so a second run skips the fits. About 3.5 minutes on a 2-core CPU from the capture.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from capture.calibration import world_from_color
from capture.files import load_npz, read_json, write_image
from rgbd2avatar.motion import Motion
from rgbd2avatar.render import contact_sheet

DATA = Path("bench_out") / "texture"
BODY_FIT_CAPTURE = Path("bench_out") / "body_fit" / "capture"
CAPTURE_FRAMES = 61
SEED = 2
EVAL_FRAMES = (4, 14, 25, 35, 46, 56)
AZIMUTHS_DEG = (0.0, 60.0, 180.0)
SPEED_SIZE = (640, 576)
SPEED_FRAMES = 4
PICTURE = Path("docs") / "texture_vs_truth.png"
PICTURE_FRAME = 25
PANEL_HEIGHT = 300


def capture_dir(data: Path) -> Path:
    """The benchmark's synthetic capture: the body-fit benchmark's when it matches, else made here."""
    from rgbd2avatar.synth.generate import SynthOptions, synthesize

    summary = BODY_FIT_CAPTURE / "ground_truth" / "subject.json"
    if summary.exists():
        options = read_json(summary)["options"]
        if options["frames"] == CAPTURE_FRAMES and options["seed"] == SEED and options["subject"] == "casual":
            return BODY_FIT_CAPTURE.absolute()
    capture = data / "capture"
    if not (capture / "ground_truth" / "subject.json").exists():
        synthesize(capture, SynthOptions(frames=CAPTURE_FRAMES, seed=SEED))
    return capture.absolute()


def fitted_subject(capture: Path, subject: Path) -> dict:
    """Import, preprocess, fit the body and the avatar, texture; returns the stage timings (s)."""
    from fitting.pina.config import preset
    from rgbd2avatar.bench import prepare_subject
    from rgbd2avatar.logs import Timer
    from rgbd2avatar.stages import pina_stage, texture_stage

    timings = {}
    with Timer() as timer:
        prepare_subject(capture, subject)
        pina_stage(subject, preset("fast"))
    timings["fit"] = timer.seconds
    with Timer() as timer:
        texture_stage(subject)
    timings["texture_stage"] = timer.seconds
    return timings


def held_out_poses(frames: np.ndarray, poses: torch.Tensor, trans: torch.Tensor, targets) -> tuple:
    """Slerped poses (N, 72) and translations (N, 3) at target frame numbers between evenly spaced
    training ``frames`` (F,) with refined ``poses`` (F, 72), ``trans`` (F, 3)."""
    step = int(frames[1] - frames[0])
    assert np.all(np.diff(frames) == step), "training frames must be evenly spaced"
    clip = Motion(poses.cpu().numpy(), trans.cpu().numpy(), fps=30.0 / step).resample(30.0)
    rows = np.asarray(targets) - int(frames[0])
    return torch.from_numpy(clip.poses[rows]).float(), torch.from_numpy(clip.trans[rows]).float()


def orbit(world_from_camera: np.ndarray, centre: np.ndarray, azimuth_deg: float) -> np.ndarray:
    """(4, 4) a camera pose turned by an azimuth about the world's vertical (y) axis through ``centre``."""
    angle = np.radians(azimuth_deg)
    turn = np.eye(4)
    turn[[0, 0, 2, 2], [0, 2, 0, 2]] = np.cos(angle), np.sin(angle), -np.sin(angle), np.cos(angle)
    shift, back = np.eye(4), np.eye(4)
    shift[:3, 3], back[:3, 3] = centre, -centre
    return shift @ turn @ back @ world_from_camera


def truth_image(subject, calibration, pose: np.ndarray, trans: np.ndarray, world_from_camera: np.ndarray):
    """The true clothed subject as the colour camera at ``world_from_camera`` sees it, noiseless.

    Returns:
        image (H, W, 3) uint8, black background, and the person mask (H, W) bool.
    """
    from rgbd2avatar.synth.sensor import render_color

    with torch.no_grad():
        clothed = subject.clothed(torch.from_numpy(pose[None]), torch.from_numpy(trans[None]))[0].numpy()

    def albedo(_: int, triangles: np.ndarray, barycentrics: np.ndarray) -> np.ndarray:
        return subject.albedo_at(triangles, barycentrics)

    image, hits = render_color(
        [(clothed, subject.faces.numpy())], albedo, calibration, world_from_camera,
        np.random.default_rng(0), noise_sigma=0.0,
    )  # fmt: skip
    return image, hits.hit


def scores(image: np.ndarray, mask: np.ndarray, truth: np.ndarray, truth_mask: np.ndarray) -> dict:
    """PSNR and SSIM inside the union of both masks (silhouette and appearance errors) and inside
    their intersection (appearance only), on the masks' box (for speed)."""
    from rgbd2avatar.metrics import psnr, ssim

    union, both = mask | truth_mask, mask & truth_mask
    rows, cols = np.nonzero(union)
    box = slice(max(rows.min() - 8, 0), rows.max() + 9), slice(max(cols.min() - 8, 0), cols.max() + 9)
    image, truth = image[box], truth[box]
    return {
        "psnr": psnr(image, truth, union[box]),
        "ssim": ssim(image, truth, union[box]),
        "psnr_overlap": psnr(image, truth, both[box]),
        "ssim_overlap": ssim(image, truth, both[box]),
        "mask_iou": float(both.sum() / union.sum()),
    }


def crop_panels(images: list[np.ndarray], masks: list[np.ndarray]) -> list[np.ndarray]:
    """The images cropped to the box around all masks, scaled to :data:`PANEL_HEIGHT` rows."""
    from PIL import Image

    rows, cols = np.nonzero(np.any(masks, axis=0))
    top, bottom = max(rows.min() - 10, 0), rows.max() + 11
    left, right = max(cols.min() - 10, 0), cols.max() + 11
    width = round((right - left) * PANEL_HEIGHT / (bottom - top))
    return [
        np.asarray(
            Image.fromarray(image[top:bottom, left:right]).resize((width, PANEL_HEIGHT), Image.LANCZOS)
        )
        for image in images
    ]


def evaluate(subject_dir: Path, capture: Path, picture: Path | None = PICTURE) -> dict:
    """Both methods against the truth on the held-out frames and views (module docstring)."""
    from rgbd2avatar.avatar.store import load_avatar
    from rgbd2avatar.pixel_renderer import ViewCamera, load_blender, make_renderer, render_texture
    from rgbd2avatar.synth.subject import make_subject
    from rgbd2avatar.texture import load_textured_mesh

    stored = load_avatar(subject_dir / "pina" / "avatar.pt")
    mesh, texture, _ = load_textured_mesh(subject_dir / "texture")
    blender, options = load_blender(subject_dir / "texture" / "blender.pt")
    renderer = make_renderer(stored, subject_dir / "recording", mesh, texture, options)
    renderer.blender = blender
    calibration = renderer_calibration(subject_dir)
    body = load_npz(capture / "ground_truth" / "body.npz")
    truth_subject = make_subject("casual", seed=SEED)
    world_from_depth = body["world_from_depth"]
    depth_from_world = np.linalg.inv(world_from_depth)
    poses, trans = held_out_poses(stored.frames.numpy(), stored.poses, stored.trans, EVAL_FRAMES)
    rows = {"texture": [], "pixel": []}
    panels, masks, labels = [], [], []
    for frame, pose, translation in zip(EVAL_FRAMES, poses, trans, strict=True):
        true_pose, true_trans = body["poses_world"][frame], body["trans_world"][frame]
        with torch.no_grad():
            pelvis = truth_subject.body(torch.from_numpy(true_pose[None]), truth_subject.shape,
                                        torch.from_numpy(true_trans[None])).joints[0, 0].numpy()  # fmt: skip
        vertices = renderer.posed(pose, translation)
        for azimuth in AZIMUTHS_DEG:
            world_camera = orbit(world_from_color(calibration, world_from_depth), pelvis, azimuth)
            truth, truth_mask = truth_image(truth_subject, calibration, true_pose, true_trans, world_camera)
            camera = ViewCamera(calibration.color, depth_from_world @ world_camera)
            results = {
                "texture": render_texture(mesh, texture, vertices, camera),
                "pixel": renderer.render(pose, translation, camera),
            }
            for name, rendered in results.items():
                row = scores(rendered.image, rendered.mask, truth, truth_mask)
                rows[name].append(
                    {
                        "frame": frame,
                        "azimuth": azimuth,
                        **row,
                        "fallback": float(rendered.fallback[rendered.mask].mean()),
                    }
                )
            if frame == PICTURE_FRAME:
                panels += [truth, results["texture"].image, results["pixel"].image]
                masks += [truth_mask, results["texture"].mask, results["pixel"].mask]
                labels += [f"truth {azimuth:.0f} deg", "baked texture", "pixel-aligned"]
    if picture is not None and panels:
        write_image(
            picture, contact_sheet(crop_panels(panels, masks), cols=3, labels=labels), png_compress_level=9
        )
    return {name: summarise(entries) for name, entries in rows.items()}


def renderer_calibration(subject_dir: Path):
    """The recording's calibration."""
    from capture.sequence import SequenceReader

    return SequenceReader(subject_dir / "recording").calibration


METRICS = ("psnr", "ssim", "psnr_overlap", "ssim_overlap", "mask_iou")


def summarise(entries: list[dict]) -> dict:
    """Mean metrics overall and per azimuth, and the mean share of pixels no source saw."""
    summary = {key: float(np.mean([e[key] for e in entries])) for key in METRICS}
    summary |= {"fallback_share": float(np.mean([e["fallback"] for e in entries])), "images": len(entries)}
    for azimuth in AZIMUTHS_DEG:
        chosen = [e for e in entries if e["azimuth"] == azimuth]
        summary[f"azimuth_{azimuth:.0f}"] = {key: float(np.mean([e[key] for e in chosen])) for key in METRICS}
    return summary


def speed(subject_dir: Path) -> dict:
    """Frames per second of both methods at :data:`SPEED_SIZE` from an orbiting pinhole camera."""
    from rgbd2avatar.avatar.store import load_avatar
    from rgbd2avatar.pixel_renderer import (
        capture_world,
        load_blender,
        look_at,
        make_renderer,
        pinhole,
        render_texture,
    )
    from rgbd2avatar.texture import load_textured_mesh

    stored = load_avatar(subject_dir / "pina" / "avatar.pt")
    mesh, texture, _ = load_textured_mesh(subject_dir / "texture")
    blender, options = load_blender(subject_dir / "texture" / "blender.pt")
    renderer = make_renderer(stored, subject_dir / "recording", mesh, texture, options)
    renderer.blender = blender
    world = capture_world(stored)
    intrinsics = pinhole(*SPEED_SIZE, 40.0)
    seconds = {"texture": 0.0, "pixel": 0.0}
    for k in range(SPEED_FRAMES):
        angle = 2 * np.pi * k / SPEED_FRAMES
        eye = np.array([2.5 * np.sin(angle), 1.0, 2.5 * np.cos(angle)])
        camera = world.camera(intrinsics, look_at(eye, np.array([0.0, 0.9, 0.0]), np.array([0.0, 1.0, 0.0])))
        row = k % len(stored.frames)
        pose, trans = stored.poses[row], stored.trans[row]
        start = time.perf_counter()
        render_texture(mesh, texture, renderer.posed(pose, trans), camera)
        seconds["texture"] += time.perf_counter() - start
        start = time.perf_counter()
        renderer.render(pose, trans, camera)
        seconds["pixel"] += time.perf_counter() - start
    return {f"{name}_fps": SPEED_FRAMES / value for name, value in seconds.items()} | {
        "size": list(SPEED_SIZE),
        "threads": torch.get_num_threads(),
    }


def run(data: Path = DATA) -> dict:
    """Fit and texture the subject in ``data`` (unless up to date), then measure both methods."""
    capture = capture_dir(data)
    subject = data / "subject"
    timings = fitted_subject(capture, subject)
    summary = read_json(subject / "texture" / "texture.json")
    return {
        "capture": str(capture),
        "eval_frames": list(EVAL_FRAMES),
        "azimuths_deg": list(AZIMUTHS_DEG),
        "mask": "union of the true and rendered person masks",
        "timings_s": timings,
        "texture": {
            key: summary[key] for key in ("vertices", "faces", "covered_share", "seen_share", "seconds")
        },
        "blender": summary.get("blender"),
        "methods": evaluate(subject, capture),
        "speed": speed(subject),
    }
