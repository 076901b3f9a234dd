"""Posed meshes of a fitted avatar for sequences of poses: its training frames (``extract``) and
any motion (``animate``), with a preview video, a contact sheet and a rigged glTF.

``extract`` writes into ``SUBJECT/meshes/``::

    canonical.ply        the canonical surface for the canonical pose condition
    frames/000123.ply    the avatar in each training frame's refined pose (recording frame numbers)
    extract.json         mode, resolution, timings

``animate`` writes one folder per motion, ``SUBJECT/animation/<motion name>/``::

    meshes/000000.ply    the avatar in each motion frame (or .obj)
    preview.mp4          the meshes rendered from the front, 512 × 512, at the motion's frame rate
    preview.png          front and side views of six evenly spaced frames
    avatar.glb           the canonical mesh rigged on the body's skeleton with the learned skinning
                         weights, animated by the motion (:mod:`rgbd2avatar.gltf`)
    motion.npz           the motion as used (AMASS layout, after --fps and --frames)
    animation.json       mode, resolution, frame rate, timings

The SDF's pose condition (:mod:`rgbd2avatar.avatar.meshes`): ``extract`` conditions every
training frame on its own refined pose; ``animate`` conditions every motion frame on the mean of
the training poses (``mean``, the default: a pose the avatar never saw gives the network a code
it was never trained on) or on the frame's own pose (``own``, the pose-dependent shape). The glTF
cannot carry a pose-dependent shape (one mesh, linear blend skinning), so it shows the
canonical-condition shape in every pose.

Every folder is assembled under a temporary sibling name and renamed into place at the end, so
an interrupted or failed run leaves the previous result (or nothing), never half of one.

Shapes: V vertices, T triangles, F frames, J bones.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from capture.files import TEMP_PREFIX, atomic_path, write_image, write_json
from rgbd2avatar.avatar.avatar import BOUNDS_PADDING, Avatar
from rgbd2avatar.avatar.meshes import AvatarMesh, canonical_mesh, posed_meshes, skinning_weights
from rgbd2avatar.avatar.store import StoredAvatar
from rgbd2avatar.body.model import canonical_pose
from rgbd2avatar.body.skeleton import JOINT_NAMES
from rgbd2avatar.errors import UserError
from rgbd2avatar.gltf import MeshTexture, write_rigged_glb
from rgbd2avatar.logs import progress
from rgbd2avatar.meshing import MeshResult
from rgbd2avatar.meshio import write_mesh
from rgbd2avatar.motion import Motion, save_amass
from rgbd2avatar.posing import posed_batches
from rgbd2avatar.preview import framing_cameras
from rgbd2avatar.render import Camera, contact_sheet, render_mesh

INITIAL_RESOLUTION = 32
"""MISE's coarse grid; a final resolution must be this times a power of two."""
PREVIEW_SIZE = 512
"""Width and height of the preview video in pixels."""
SHEET_PANELS = 6
"""Frames shown on the contact sheet."""
SHEET_PANEL_SIZE = (240, 320)
"""(width, height) of each contact-sheet panel."""
VIDEO_CODECS = ("libx264", "mpeg4")
"""Encoders tried in order for the preview video (PyAV's bundled ffmpeg has both)."""
MESH_FORMATS = ("ply", "obj")
POSE_CONDITIONS = ("mean", "own")
"""How ``animate`` conditions the SDF: on the training poses' mean, or on each frame's pose."""


def check_resolution(resolution: int) -> None:
    """Raise a UserError unless ``resolution`` is 32 · 2^k (what MISE refines to)."""
    ratio = resolution // INITIAL_RESOLUTION
    if resolution < INITIAL_RESOLUTION or ratio * INITIAL_RESOLUTION != resolution or ratio & (ratio - 1):
        raise UserError(f"--resolution {resolution} is not 32 times a power of two; use 64, 128, 256 or 512.")


@contextmanager
def staging_directory(target: Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``target``; on success it replaces ``target``, on an
    error it is removed and ``target`` is left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-{target.name}")
    temp.mkdir()
    try:
        yield temp
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    replace_directory(temp, target)


def check_output_folder(out: Path) -> None:
    """Raise a UserError when ``out`` holds something other than an earlier animation, which
    replacing the folder would delete."""
    if out.exists() and not (out / "animation.json").is_file() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(
            f"{out} exists and is not an animation folder (no animation.json), so it is not replaced; "
            "pass a new or empty folder with --out."
        )


def replace_directory(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``, first moving an existing ``target`` aside and deleting it."""
    if not target.exists():
        os.replace(source, target)
        return
    old = target.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-old-{target.name}")
    os.replace(target, old)
    os.replace(source, target)
    shutil.rmtree(old)


class MeshTimer:
    """Counts the meshes of a sequence, the seconds spent making them, and the distinct MISE
    extractions behind them (fast mode re-uses a canonical extraction while the pose condition
    stays the same)."""

    def __init__(self) -> None:
        self.meshes = 0
        self.seconds = 0.0
        self.extractions = 0
        self.extraction_seconds = 0.0
        self.evaluations = 0
        self._last: MeshResult | None = None

    def timed(self, meshes: Iterator[AvatarMesh]) -> Iterator[AvatarMesh]:
        """Yield from ``meshes``, timing each one's making."""
        while True:
            start = time.perf_counter()
            mesh = next(meshes, None)
            self.seconds += time.perf_counter() - start
            if mesh is None:
                return
            self.meshes += 1
            if mesh.extraction is not self._last:
                self._last = mesh.extraction
                self.extractions += 1
                self.extraction_seconds += mesh.extraction.seconds
                self.evaluations += mesh.extraction.evaluations
            yield mesh

    def summary(self) -> dict:
        """Plain-JSON counts and timings."""
        return {
            "meshes": self.meshes,
            "mesh_seconds": self.seconds,
            "seconds_per_mesh": self.seconds / max(self.meshes, 1),
            "extractions": self.extractions,
            "extraction_seconds": self.extraction_seconds,
            "evaluations": self.evaluations,
        }


def extract_meshes(stored: StoredAvatar, out: Path, resolution: int, exact: bool) -> dict:
    """Write the canonical mesh and every training frame's posed mesh into ``out`` (``meshes/``).

    Returns:
        The summary written to ``out/extract.json``.
    """
    avatar = stored.avatar
    canonical = canonical_mesh(avatar, resolution=resolution)
    write_mesh(out / "canonical.ply", canonical.vertices, canonical.faces)
    timer = MeshTimer()
    meshes = timer.timed(posed_meshes(avatar, stored.poses, stored.trans, resolution, exact))
    frames = stored.frames.tolist()
    with staging_directory(out / "frames") as folder:
        for frame, mesh in progress(
            zip(frames, meshes, strict=True), total=len(frames), description="extract"
        ):
            write_mesh(folder / f"{frame:06d}.ply", mesh.vertices, mesh.faces)
    summary = {
        "mode": "exact" if exact else "fast",
        "resolution": resolution,
        "frames": len(frames),
        "canonical": _mesh_summary(canonical),
        **timer.summary(),
    }
    write_json(out / "extract.json", summary)
    return summary


def animate_avatar(
    stored: StoredAvatar,
    motion: Motion,
    out: Path,
    resolution: int,
    exact: bool,
    mesh_format: str = "ply",
    texture_dir: Path | None = None,
    pose_condition: str = "mean",
) -> dict:
    """Write the avatar driven by ``motion`` into the folder ``out`` (layout in the module docstring);
    the rigged glTF is textured when ``texture_dir`` holds the texture stage's output;
    ``pose_condition`` is one of :data:`POSE_CONDITIONS`.

    Returns:
        The summary written to ``out/animation.json``.
    """
    check_output_folder(out)
    avatar = stored.avatar
    poses, trans = motion.to_torch(avatar.bounds.device)
    corners = sequence_box(avatar, motion)
    front = framing_cameras(corners, ("front",), PREVIEW_SIZE, PREVIEW_SIZE)[0]
    shown = np.unique(np.linspace(0, motion.num_frames - 1, SHEET_PANELS).round().astype(int)).tolist()
    timer, kept = MeshTimer(), {}
    started = time.perf_counter()
    with staging_directory(out) as folder:
        condition = stored.mean_pose() if pose_condition == "mean" else None
        meshes = timer.timed(posed_meshes(avatar, poses, trans, resolution, exact, condition))
        codec = video_codec()
        with video_writer(
            folder / "preview.mp4", motion.fps, PREVIEW_SIZE, PREVIEW_SIZE, codec
        ) as write_frame:
            for frame, mesh in progress(enumerate(meshes), total=motion.num_frames, description="animate"):
                write_mesh(folder / "meshes" / f"{frame:06d}.{mesh_format}", mesh.vertices, mesh.faces)
                write_frame(render_mesh(mesh.vertices, mesh.faces, front))
                if frame in shown:
                    kept[frame] = mesh
        write_image(folder / "preview.png", motion_sheet(kept, corners))
        rig_seconds = write_rig(avatar, motion, folder / "avatar.glb", resolution, texture_dir)
        save_amass(motion, folder / "motion.npz")
        summary = {
            "motion": motion.name,
            "fps": motion.fps,
            "frames": motion.num_frames,
            "mode": "exact" if exact else "fast",
            "pose_condition": pose_condition,
            "resolution": resolution,
            "format": mesh_format,
            "video_codec": codec,
            "rig_seconds": rig_seconds,
            "seconds": time.perf_counter() - started,
            **timer.summary(),
        }
        write_json(folder / "animation.json", summary)
    return summary


def write_rig(
    avatar: Avatar, motion: Motion, path: Path, resolution: int, texture_dir: Path | None = None
) -> float:
    """Write the rigged, animated glTF: the canonical-condition mesh bound in the canonical pose,
    weighted by the learned skinning field. With a texture folder (``rgbd2avatar texture``'s
    output) the rig uses its UV-mapped canonical mesh and carries its texture. Returns seconds."""
    from rgbd2avatar.texture import load_textured_mesh

    start = time.perf_counter()
    texture = None
    if texture_dir is not None and (texture_dir / "atlas.npz").is_file():
        atlas, _, _ = load_textured_mesh(texture_dir)
        vertices, faces = atlas.vertices, atlas.faces
        texture = MeshTexture(atlas.uvs, (texture_dir / "texture.png").read_bytes())
    else:
        canonical = canonical_mesh(avatar, resolution=resolution)
        vertices, faces = canonical.vertices, canonical.faces
    with torch.no_grad():
        joints = avatar.body.rest(avatar.shape)[1][0].cpu().numpy()
    write_rigged_glb(
        path, vertices, faces, skinning_weights(avatar, vertices), joints, avatar.body.parents, JOINT_NAMES,
        motion.poses, motion.trans, motion.fps, bind_pose=canonical_pose(torch.float64).numpy(),
        texture=texture,
    )  # fmt: skip
    return time.perf_counter() - start


def sequence_box(avatar: Avatar, motion: Motion) -> np.ndarray:
    """(8, 3) corners of a box holding the avatar in every frame: the posed body model's box over
    the whole motion, grown by the canonical box's padding (room for clothing)."""
    low, high = np.full(3, np.inf), np.full(3, -np.inf)
    for _, vertices in posed_batches(avatar.body, motion, avatar.shape):
        low = np.minimum(low, vertices.reshape(-1, 3).min(0))
        high = np.maximum(high, vertices.reshape(-1, 3).max(0))
    return np.array(list(itertools.product(*zip(low - BOUNDS_PADDING, high + BOUNDS_PADDING, strict=True))))


def motion_sheet(meshes: dict[int, AvatarMesh], corners: np.ndarray) -> np.ndarray:
    """Front and side views of some frames' meshes, one column per frame, same framing for all.

    Args:
        meshes: frame index → its posed mesh; corners: (8, 3) a box holding all of them.
    Returns:
        (H, W, 3) uint8 image.
    """
    views = ("front", "side")
    cameras: list[Camera] = framing_cameras(corners, views, *SHEET_PANEL_SIZE)
    panels, labels = [], []
    for camera, view in zip(cameras, views, strict=True):
        for frame, mesh in sorted(meshes.items()):
            panels.append(render_mesh(mesh.vertices, mesh.faces, camera))
            labels.append(f"frame {frame} ({view})")
    return contact_sheet(panels, cols=len(meshes), labels=labels)


def video_codec() -> str:
    """The first encoder of :data:`VIDEO_CODECS` that PyAV's ffmpeg provides."""
    import av

    for name in VIDEO_CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:
            continue
    raise UserError(f"PyAV's ffmpeg has none of the video encoders {', '.join(VIDEO_CODECS)}; reinstall av.")


@contextmanager
def video_writer(
    path: Path, fps: float, width: int, height: int, codec: str
) -> Iterator[Callable[[np.ndarray], None]]:
    """Write an MP4 video frame by frame with PyAV, atomically: it appears under its name only when
    the block ends without an error.

    Args:
        path: the ``.mp4`` file; fps: frames per second; width, height: even frame size in pixels;
        codec: an encoder name (:func:`video_codec`).
    Yields:
        ``write(image)`` encoding one (H, W, 3) uint8 RGB frame.
    """
    import av

    with atomic_path(path) as temp, av.open(str(temp), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "20"}
        else:
            stream.bit_rate = 4_000_000

        def write(image: np.ndarray) -> None:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            container.mux(stream.encode(frame))

        yield write
        container.mux(stream.encode(None))


def _mesh_summary(mesh: AvatarMesh) -> dict:
    """Vertex and triangle counts and the extraction's cost, plain JSON."""
    return {
        "vertices": len(mesh.vertices),
        "triangles": len(mesh.faces),
        "seconds": mesh.extraction.seconds,
        "evaluations": mesh.extraction.evaluations,
    }
