"""The synthetic capture: a clothed subject filmed by a virtual Azure Kinect, with ground truth.

``synthesize(out, options)`` writes

    out/sequence/        the RGB-D sequence, exactly as real sources write it (capture.sequence)
    out/ground_truth/    what the pipeline never reads:
        subject.json                 preset, seed, body model, shape, motion, camera pose, options
        body.npz                     shape (S,); poses (F, 72) and trans (F, 3) in the depth
                                     camera's frame and in the world (y up, floor at y = 0);
                                     world_from_depth (4, 4); faces (T, 3); frame times (F,)
        meshes/000000.ply            clothed mesh, depth-camera coordinates (metres)
        masks/000000.png             person mask in the depth image (0/255, from the clean render)
        color_masks/000000.png       person mask in the colour image
        iuv/000000.png               DensePose-style IUV of the naked body in the colour image
                                     (I = SMPL bone part + 1, U, V = the body's UVs × 255)
        keypoints/openpose/000000_keypoints.json   BODY_25, detector-like noise and misses
        keypoints/coco17.json        COCO-17 results list (image_id = frame index)
        keypoints_exact.npz          exact 2D projections (F, K, 2) and visibility of both sets

The world is SMPL's axes (y up); the subject stands on the floor (y = 0) facing +z towards the
camera. Frames are generated, rendered and written one batch at a time, so memory does not grow
with the sequence length, and each frame's randomness comes from (seed, frame index), so any
frame can be regenerated alone. Everything is written under temporary names and renamed when
complete.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from capture.calibration import azure_kinect_preset, project, transform_points, world_from_color
from capture.files import save_npz, write_image, write_json
from capture.sequence import RGBDFrame, SequenceWriter
from rgbd2avatar.body import keypoints as kp
from rgbd2avatar.errors import UserError
from rgbd2avatar.logs import progress
from rgbd2avatar.meshio import write_mesh
from rgbd2avatar.motion import Motion, builtin_motion, load_motion
from rgbd2avatar.synth import annotations as ann
from rgbd2avatar.synth.sensor import (
    NoiseModel,
    SurfaceFn,
    cast_scene,
    kinect_pose,
    render_color,
    render_depth,
    scene,
    scene_surfaces,
)
from rgbd2avatar.synth.subject import Subject, make_subject

BATCH = 16


@dataclass(frozen=True)
class SynthOptions:
    """What to film and how.

    Attributes:
        subject: subject preset name; seed: varies the subject's colours, the room and the noise.
        motion: built-in motion name or AMASS file; frames: number of frames (None: the whole
            motion; a built-in motion is generated with this many frames).
        fps: camera frame rate; distance: camera to subject (m), 1.5–3 m;
        camera_height: above the floor (m); tilt_deg: downward pitch of the camera.
        noise: the depth sensor's noise model.
    """

    subject: str = "casual"
    motion: str = "capture"
    frames: int | None = None
    seed: int = 0
    fps: float = 30.0
    distance: float = 2.2
    camera_height: float = 1.0
    tilt_deg: float = 8.0
    noise: NoiseModel = field(default_factory=NoiseModel)


def resolve_motion(spec: str, frames: int | None, fps: float) -> Motion:
    """The motion to film: a built-in one generated with ``frames`` frames, or a file's first frames."""
    try:
        return builtin_motion(spec, num_frames=frames, fps=fps)
    except UserError:
        motion = load_motion(spec, fps=fps)
    if frames is not None:
        if frames > motion.num_frames:
            raise UserError(
                f"{spec} has {motion.num_frames} frames at {fps:g} fps; ask for at most that many."
            )
        motion = motion.slice(0, frames)
    return motion


def person_surface_fn(subject: Subject, person_index: int, scene_fn: SurfaceFn, attribute: str) -> SurfaceFn:
    """A surface callback that asks the subject about the person mesh and the scene about the rest.

    Args:
        person_index: position of the person in the scene list (the scene meshes follow it).
        attribute: ``"albedo"`` (N, 3) or ``"reflectivity"`` (N, 1).
    """

    def values(mesh_index: int, triangle_ids: np.ndarray, barycentrics: np.ndarray) -> np.ndarray:
        if mesh_index != person_index:
            return scene_fn(mesh_index - 1, triangle_ids, barycentrics)
        if attribute == "albedo":
            return subject.albedo_at(triangle_ids, barycentrics)
        return subject.reflectivity_at(triangle_ids, barycentrics)[:, None]

    return values


@dataclass
class Stage:
    """The fixed parts of a synthetic capture: subject, room, device and where it stands."""

    subject: Subject
    motion: Motion
    calibration: object
    world_from_depth: np.ndarray
    world_from_color: np.ndarray
    scene_meshes: list
    albedo: SurfaceFn
    reflectivity: SurfaceFn
    landmarks: dict[str, int]
    floor_lift: float


def build_stage(options: SynthOptions) -> Stage:
    """Subject, motion, room and the virtual Kinect of a capture (no frames yet)."""
    subject = make_subject(options.subject, seed=options.seed)
    motion = resolve_motion(options.motion, options.frames, options.fps)
    objects = scene(seed=options.seed)
    scene_meshes, scene_albedo, scene_reflectivity = scene_surfaces(objects)
    calibration = azure_kinect_preset()
    world_from_depth = kinect_pose(options.distance, options.camera_height, math.radians(options.tilt_deg))
    lift = -float(subject.rest_clothed()[:, 1].min())
    return Stage(
        subject=subject,
        motion=motion,
        calibration=calibration,
        world_from_depth=world_from_depth,
        world_from_color=world_from_color(calibration, world_from_depth),
        scene_meshes=scene_meshes,
        albedo=person_surface_fn(subject, 0, scene_albedo, "albedo"),
        reflectivity=person_surface_fn(subject, 0, scene_reflectivity, "reflectivity"),
        landmarks=kp.landmark_vertices(subject.body),
        floor_lift=lift,
    )


def world_trans(stage: Stage) -> np.ndarray:
    """(F, 3) translations that stand the subject on the floor (y = 0)."""
    return stage.motion.trans + np.array([0.0, stage.floor_lift, 0.0], dtype=np.float32)


@dataclass
class FrameTruth:
    """One frame's geometry in the world: clothed and naked vertices, joints."""

    clothed: np.ndarray
    naked: np.ndarray
    joints: np.ndarray


def posed_frames(stage: Stage) -> Iterator[tuple[int, FrameTruth]]:
    """Posed subject, frame by frame (posed in batches of :data:`BATCH`)."""
    poses = torch.from_numpy(stage.motion.poses)
    trans = torch.from_numpy(world_trans(stage))
    with torch.no_grad():
        for start in range(0, len(poses), BATCH):
            posed = stage.subject.posed(poses[start : start + BATCH], trans[start : start + BATCH])
            for i in range(len(posed.clothed)):
                yield (
                    start + i,
                    FrameTruth(posed.clothed[i].numpy(), posed.body[i].numpy(), posed.joints[i].numpy()),
                )


def visible_keypoints(points: np.ndarray, depth: np.ndarray, intrinsics, tolerance: float) -> tuple:
    """Project camera-frame 3D keypoints; visible where in the image and not behind the surface.

    Args:
        points: (K, 3) in the camera frame; depth: (H, W) clean rendered depth (0 = nothing).
    Returns:
        pixels (K, 2) (NaN where the point cannot be projected) and visible (K,) bool.
    """
    pixels, z = project(points, intrinsics)
    height, width = depth.shape
    finite = np.isfinite(pixels).all(1)
    u, v = (np.rint(np.nan_to_num(pixels[:, i], nan=-1.0)).astype(int) for i in (0, 1))
    inside = finite & (u >= 0) & (u < width) & (v >= 0) & (v < height) & (z > 0)
    surface = depth[np.clip(v, 0, height - 1), np.clip(u, 0, width - 1)]
    visible = inside & ((surface == 0) | (z <= surface + tolerance))
    return pixels, visible


def naked_iuv(stage: Stage, naked: np.ndarray) -> np.ndarray:
    """DensePose-style IUV image of the naked body seen by the colour camera."""
    body = stage.subject.body
    faces = body.faces.cpu().numpy()
    hits = cast_scene([(naked, faces)], stage.calibration.color, stage.world_from_color)
    hit = hits.hit
    face_part = body.part_labels.cpu().numpy()[faces[:, 0]]
    part = np.where(hit, face_part[np.maximum(hits.triangle_ids, 0)], 0)
    uv_corners = body.face_uvs.cpu().numpy()[np.maximum(hits.triangle_ids, 0)]  # (H, W, 3, 2)
    uv = (uv_corners * hits.barycentrics[..., None]).sum(-2)
    return ann.iuv_image(part, uv, hit)


class GroundTruthWriter:
    """Writes ``ground_truth/`` into a temporary folder, renamed into place on :meth:`close`."""

    def __init__(self, root: Path, stage: Stage, options: SynthOptions) -> None:
        self.root, self.partial = root, root.with_name(root.name + ".partial")
        shutil.rmtree(self.partial, ignore_errors=True)
        self.stage, self.options = stage, options
        self.depth_from_world = np.linalg.inv(stage.world_from_depth)
        self.color_from_world = np.linalg.inv(stage.world_from_color)
        self.coco: list[dict] = []
        self.exact: dict[str, list] = {"coco17": [], "body25": [], "coco17_visible": [], "body25_visible": []}
        self.layouts = {
            "coco17": kp.keypoint_layout(kp.COCO17, stage.landmarks),
            "body25": kp.keypoint_layout(kp.BODY25, stage.landmarks),
        }
        self.faces = stage.subject.faces.cpu().numpy()

    def write(self, index: int, truth: FrameTruth, depth_info, color_hits, rng: np.random.Generator) -> None:
        """Write one frame's ground truth."""
        base = self.partial
        clothed_cam = transform_points(self.depth_from_world, truth.clothed)
        write_mesh(base / "meshes" / f"{index:06d}.ply", clothed_cam, self.faces)
        write_image(base / "masks" / f"{index:06d}.png", _mask(depth_info.hits.mesh_ids == 0))
        write_image(base / "color_masks" / f"{index:06d}.png", _mask(color_hits.mesh_ids == 0))
        write_image(base / "iuv" / f"{index:06d}.png", naked_iuv(self.stage, truth.naked))
        detections = {}
        for name, layout in self.layouts.items():
            points = layout.points(truth.joints[None], truth.naked[None])[0]
            points_cam = transform_points(self.color_from_world, points)
            pixels, visible = visible_keypoints(
                points_cam,
                color_hits.depth,
                self.stage.calibration.color,
                ann.DetectorNoise().occlusion_tolerance_m,
            )
            self.exact[name].append(pixels)
            self.exact[f"{name}_visible"].append(visible)
            detections[name] = ann.detect(pixels, visible, rng)
        write_json(
            base / "keypoints" / "openpose" / f"{index:06d}_keypoints.json",
            ann.openpose_json(detections["body25"]),
        )
        self.coco.append(ann.coco_result(index, detections["coco17"]))

    def close(self, summary: dict) -> None:
        """Write the per-sequence files and move the folder into place."""
        stage = self.stage
        body = stage.subject.body
        poses = stage.motion.poses
        trans = world_trans(stage)
        move = torch.from_numpy(self.depth_from_world).float()
        cam_pose, cam_trans = body.move_params(
            torch.from_numpy(poses), torch.from_numpy(trans), move[:3, :3], move[:3, 3], stage.subject.shape
        )
        save_npz(
            self.partial / "body.npz",
            shape=stage.subject.shape.cpu().numpy(),
            poses=cam_pose.numpy(),
            trans=cam_trans.numpy(),
            poses_world=poses,
            trans_world=trans,
            world_from_depth=stage.world_from_depth,
            faces=self.faces,
            times=np.arange(len(poses)) / stage.motion.fps,
        )
        write_json(self.partial / "keypoints" / "coco17.json", self.coco)
        save_npz(self.partial / "keypoints_exact.npz", **{k: np.stack(v) for k, v in self.exact.items()})
        write_json(self.partial / "subject.json", summary)
        shutil.rmtree(self.root, ignore_errors=True)
        self.partial.rename(self.root)

    def abort(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)


def _mask(mask: np.ndarray) -> np.ndarray:
    return (mask * 255).astype(np.uint8)


def render_frame(stage: Stage, truth: FrameTruth, options: SynthOptions, index: int):
    """Depth and colour images of one frame, with the clean hits behind them."""
    rng = np.random.default_rng([options.seed, index])
    meshes = [(truth.clothed, stage.subject.faces.cpu().numpy()), *stage.scene_meshes]
    depth_mm, depth_info = render_depth(
        meshes, stage.calibration, stage.world_from_depth, rng, options.noise, stage.reflectivity
    )
    color, color_hits = render_color(meshes, stage.albedo, stage.calibration, stage.world_from_color, rng)
    return depth_mm, depth_info, color, color_hits, rng


def synthesize(out: Path, options: SynthOptions = SynthOptions()) -> dict:
    """Write a synthetic capture (sequence + ground truth) to ``out``; returns its summary."""
    stage = build_stage(options)
    count = stage.motion.num_frames
    summary = {
        "subject": options.subject,
        "preset": asdict(stage.subject.preset),
        "body_model": stage.subject.body.name,
        "shape": dict(zip(stage.subject.body.shape_names, stage.subject.shape.tolist(), strict=True)),
        "motion": stage.motion.name,
        "frames": count,
        "options": {**asdict(options), "noise": asdict(options.noise)},
        "world_from_depth": stage.world_from_depth.tolist(),
    }
    truth_writer = GroundTruthWriter(out / "ground_truth", stage, options)
    try:
        with SequenceWriter(out / "sequence", stage.calibration, overwrite=True) as writer:
            for index, truth in progress(posed_frames(stage), total=count, description="synth"):
                depth_mm, depth_info, color, color_hits, rng = render_frame(stage, truth, options, index)
                time = index / stage.motion.fps
                writer.write(RGBDFrame(index, depth_mm, color, depth_time=time, color_time=time))
                truth_writer.write(index, truth, depth_info, color_hits, rng)
        truth_writer.close(summary)
    except BaseException:
        truth_writer.abort()
        raise
    return summary
