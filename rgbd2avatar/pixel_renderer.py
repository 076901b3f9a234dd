"""Pixel-aligned rendering of the avatar in new poses and views from the captured colour frames
(after AniPixel and KeypointNeRF; the baked texture is the fallback).

For a target camera and pose (:meth:`PixelRenderer.render`):

1. **Surface**: the textured canonical mesh (:mod:`rgbd2avatar.texture`, one topology for all
   poses) is skinned into the target pose with the learned weights; every pixel's ray is cast at
   it, giving a triangle and barycentrics — the pixel's canonical surface point.
2. **Sources**: the same triangle and barycentrics on the mesh skinned with a source frame's
   refined pose give the point in that frame; it is moved into that frame's colour camera,
   projected through the distorted lens, tested against the ray-cast depth image of that frame's
   posed mesh and against the depth the sensor recorded in that frame (a point the recording
   puts more than 3 cm off the real surface is not used: :func:`rgbd2avatar.texture.view_samples`)
   and its colour sampled bilinearly. The
   :data:`SOURCES_PER_VIEW` sources used for a target are those whose camera saw the body from
   the most similar direction (camera direction in the body's root frame).
3. **Blending** (:class:`Blender`): a small MLP gives each visible source a logit from features of
   the point in that source and in the target — the cosines between the normal and each camera,
   both view directions in the triangle's own frame (pose-independent) and their agreement, the
   distance to the source's occlusion edges, and, KeypointNeRF's relative encoding, the point's
   depth relative to each body joint in the source camera (is the point in front of or behind
   the body there?); weights are the softmax over the visible sources and sum to 1.
4. **Shading** (AniPixel's albedo × shading split): the capture's light is fixed in the room, so
   the same skin looks brighter where it faces the light. A learned shading s(n) = a + d ·
   max(0, n · l) per colour channel (ambient a, one distant light l in the capture's depth-camera
   frame, learned with the MLP) is divided out of each source colour and multiplied back for the
   target normal: c = Σ_k w_k c_k s(n_target) / s(n_k); it changes with the pose and the view
   through the normals. The Lambert form extrapolates to normals no capture frame showed lit
   (a view from behind), where a free-form fit would guess.
5. **Texture**: the baked texture is one more candidate, always visible, whose colour counts as
   seen facing the capture camera (frontal views dominate it); pixels no source sees take it
   alone.

The blender is trained per subject on the capture itself (:func:`train_blender`): each training
frame in turn is the target, seen by its own colour camera, predicted from the other frames;
the loss is the L1 colour error at pixels sampled inside the person, away from its occlusion
edges. For half of the targets the sources within 40° of its view are withheld as well, so that
the blender also learns views no source is near. About 10 s for 21 frames on a 2-core CPU.

Targets are expressed in the avatar's posed frame, the capture's depth-camera frame, like the
refined poses; :func:`capture_world` estimates a floor-standing, y-up frame in it, where motions
are placed and orbit and file cameras are given (:func:`render_motion`, ``rgbd2avatar render``).

Shapes: V vertices, T triangles, P pixels, K sources per pixel, D features, J joints.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from capture.calibration import invert_rigid, transform_points
from capture.files import atomic_path, write_image, write_json
from capture.sequence import CameraIntrinsics, SequenceReader
from rgbd2avatar.avatar.store import StoredAvatar, read_versioned
from rgbd2avatar.body import lbs
from rgbd2avatar.errors import UserError
from rgbd2avatar.geometry import vertex_normals
from rgbd2avatar.logs import progress
from rgbd2avatar.motion import Motion
from rgbd2avatar.render import raycast_rays
from rgbd2avatar.texture import (
    MEASURED_TOLERANCE,
    DepthMap,
    MeasuredDepth,
    MeshPoser,
    UVMesh,
    bilinear,
    camera_ray_bundle,
    load_textured_mesh,
    measured_depth,
    sample_texture,
    spread,
    view_samples,
)

SOURCE_FRAMES = 24
"""Training frames kept as sources at most, evenly spread over the capture."""
SOURCES_PER_VIEW = 4
"""Sources blended per target view: those that saw the body from the most similar directions."""
JOINT_DEPTH_SCALE = 0.3
"""Metres: relative joint depths enter the blender as tanh(Δz / this)."""
NUM_FEATURES = 2 + 24 + 1 + 1 + 3 + 3 + 1
"""Per source: cosine, edge, 24 joint depths; target cosine; view agreement; two local view
directions; 1 for the baked texture's entry (see :func:`source_features`, :func:`texture_entry`)."""
TARGET_COSINE, TARGET_VIEW, TEXTURE_FLAG = 26, slice(31, 34), 34
"""Positions of the target's features and of the texture flag in a feature vector."""
TEXTURE_NORMAL = (0.0, 0.0, -1.0)
"""The normal (depth-camera frame) whose shading the baked texture is taken to hold: facing the
capture camera."""
INITIAL_AMBIENT = 0.4
"""The learned shading starts as 0.4 ambient + 0.6 Lambert from the camera's direction."""


@dataclass(frozen=True)
class RenderOptions:
    """Settings of the pixel-aligned renderer and its training.

    Attributes:
        sources: training frames kept as sources at most; per_view: sources blended per target.
        depth_tolerance, measured_tolerance, edge_margin, edge_jump: visibility tests, as in
            :class:`~rgbd2avatar.texture.TextureOptions`.
        hidden: width of the blender's two hidden layers.
        steps, batch, lr: Adam steps, pixels per step, learning rate of the training.
        pixels_per_frame: training pixels sampled per target frame; seed: their random seed.
        novel_share, novel_angle_deg: share of training targets predicted without the sources
            within this angle of their view (:func:`held_out`).
    """

    sources: int = SOURCE_FRAMES
    per_view: int = SOURCES_PER_VIEW
    depth_tolerance: float = 0.02
    measured_tolerance: float = MEASURED_TOLERANCE
    edge_margin: float = 6.0
    edge_jump: float = 0.05
    hidden: int = 32
    steps: int = 600
    batch: int = 2048
    lr: float = 3e-3
    pixels_per_frame: int = 1500
    novel_share: float = 0.5
    novel_angle_deg: float = 40.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# Cameras


@dataclass
class ViewCamera:
    """A camera in the avatar's frame.

    Attributes:
        intrinsics: size, pinhole and lens distortion (all zero for an ideal pinhole).
        pose: (4, 4) frame-from-camera (OpenCV axes).
    """

    intrinsics: CameraIntrinsics
    pose: np.ndarray

    @property
    def centre(self) -> np.ndarray:
        """(3,) the optical centre."""
        return np.asarray(self.pose, dtype=np.float64)[:3, 3]

    def rays(self) -> np.ndarray:
        """(H, W, 6) float32 [origin, direction] per pixel, directions with camera-z 1."""
        bundle = camera_ray_bundle(self.intrinsics)
        pose = np.asarray(self.pose, dtype=np.float64)
        directions = bundle[..., 3:] @ pose[:3, :3].T.astype(np.float32)
        origins = np.broadcast_to(pose[:3, 3].astype(np.float32), directions.shape)
        return np.concatenate([origins, directions], -1)


def pinhole(width: int, height: int, fov_y_deg: float) -> CameraIntrinsics:
    """An ideal centred pinhole of the given size and vertical field of view."""
    focal = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
    return CameraIntrinsics(width, height, focal, focal, (width - 1) / 2, (height - 1) / 2)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(4, 4) frame-from-camera of a camera at ``eye`` looking at ``target``, ``up`` up in the image."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, np.cross(forward, right), forward], 1)
    pose[:3, 3] = eye
    return pose


@dataclass
class CaptureWorld:
    """A y-up world in the capture's depth-camera frame: the floor under where the subject stood,
    the capture camera on the world's +z side (motions face +z, towards it).

    Attributes:
        depth_from_world: (4, 4) rigid; lift: metres that put the avatar's feet on the floor (y = 0)
        at zero translation; height: the avatar's body height in metres; distance: horizontal
        distance from the origin to the capture camera.
    """

    depth_from_world: np.ndarray
    lift: float
    height: float
    distance: float

    def camera(self, intrinsics: CameraIntrinsics, world_from_camera: np.ndarray) -> ViewCamera:
        """A camera given in the world, in the avatar's frame."""
        return ViewCamera(intrinsics, self.depth_from_world @ np.asarray(world_from_camera, dtype=np.float64))


def capture_world(stored: StoredAvatar) -> CaptureWorld:
    """Estimate the capture's floor frame from the refined poses: up is the mean of the bodies'
    up axes (the subject stands), the origin the floor point under their mean pelvis, +z the
    horizontal direction from there towards the camera (the depth camera's origin)."""
    body, shape = stored.avatar.body, stored.avatar.shape
    with torch.no_grad():
        posed = body(stored.poses, shape, stored.trans)
        rest_vertices = body.rest(shape)[0]
    roots = lbs.axis_angle_to_matrix(stored.poses[:, :3]).cpu().double().numpy()  # (F, 3, 3)
    up = roots[:, :, 1].mean(0)
    up /= np.linalg.norm(up)
    pelvis = posed.joints[:, 0].cpu().double().numpy().mean(0)
    lowest = float((posed.vertices.cpu().double().numpy() @ up).min())
    origin = pelvis - (pelvis @ up - lowest) * up
    towards = -origin - (-origin @ up) * up
    z = towards / np.linalg.norm(towards)
    world = np.eye(4)
    world[:3, :3] = np.stack([np.cross(up, z), up, z], 1)
    world[:3, 3] = origin
    heights = rest_vertices[0, :, 1]
    distance = float(np.linalg.norm(towards))
    return CaptureWorld(world, -float(heights.min()), float(heights.max() - heights.min()), distance)


def motion_in_capture(
    stored: StoredAvatar, world: CaptureWorld, poses: np.ndarray, trans: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """A world motion (y up, standing at the origin) as poses in the capture's depth-camera frame.

    Args:
        poses: (F, 72), trans: (F, 3) in the world, as motion files hold them.
    Returns:
        (F, 72), (F, 3) float32 tensors on the avatar's device.
    """
    device = stored.avatar.bounds.device
    pose = torch.as_tensor(poses, dtype=torch.float32, device=device)
    lifted = torch.as_tensor(trans, dtype=torch.float32, device=device) + torch.tensor(
        [0.0, world.lift, 0.0], device=device
    )
    move = torch.as_tensor(world.depth_from_world, dtype=torch.float32, device=device)
    with torch.no_grad():
        return stored.avatar.body.move_params(pose, lifted, move[:3, :3], move[:3, 3], stored.avatar.shape)


# --------------------------------------------------------------------------------------------------
# Sources


@dataclass
class SourceView:
    """One captured colour frame, ready to be sampled.

    Attributes:
        frame: recording frame number; row: its position in the avatar's training frames;
        vertices: (V, 3) the posed atlas mesh in its colour camera; normals: (V, 3) its vertex
        normals in the depth-camera frame (for shading); image: (H, W, 3) uint8; camera: the
        colour camera in the depth-camera frame; depth_map: the mesh seen by it;
        joints: (J, 3) the body's joints in the colour camera; direction: (3,) unit direction
        from the pelvis to the camera in the body's root frame; measured: the frame's recorded
        depth (``None``: trust the mesh alone).
    """

    frame: int
    row: int
    vertices: np.ndarray
    normals: np.ndarray
    image: np.ndarray
    camera: ViewCamera
    depth_map: DepthMap
    joints: np.ndarray
    direction: np.ndarray
    measured: MeasuredDepth | None = None


def body_direction(pose: torch.Tensor, joints: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(3,) unit direction from the pelvis (``joints[0]``) to a camera centre, in the root's frame.

    Args:
        pose: (72,); joints: (J, 3) posed joints; centre: (3,) the camera, same frame as the joints.
    """
    root = lbs.axis_angle_to_matrix(pose[:3].cpu().double()[None])[0].numpy()
    offset = np.asarray(centre, dtype=np.float64) - joints[0]
    return root.T @ offset / np.linalg.norm(offset)


def posed_joints(stored: StoredAvatar, poses: torch.Tensor, trans: torch.Tensor) -> np.ndarray:
    """(F, J, 3) float64 body joints of the avatar's shape in poses (F, 72), (F, 3)."""
    with torch.no_grad():
        return stored.avatar.body(poses, stored.avatar.shape, trans).joints.cpu().double().numpy()


def load_sources(
    stored: StoredAvatar, reader: SequenceReader, mesh: UVMesh, poser: MeshPoser, options: RenderOptions
) -> list[SourceView]:
    """The training frames kept as sources (:data:`SOURCE_FRAMES` at most, evenly spread)."""
    calibration = reader.calibration
    if calibration.color is None:
        raise UserError(f"{reader.root} has no colour camera; rendering needs colour frames.")
    to_color = np.asarray(calibration.depth_to_color, dtype=np.float64)
    camera = ViewCamera(calibration.color, invert_rigid(to_color))
    sources = []
    for row in spread(len(stored.frames), options.sources):
        frame = reader.frame(int(stored.frames[row]))
        if frame.color is None:
            continue
        pose, trans = stored.poses[row : row + 1], stored.trans[row : row + 1]
        posed = poser(pose, trans)[0]
        in_color = transform_points(to_color, posed)
        joints = posed_joints(stored, pose, trans)[0]
        sources.append(
            SourceView(
                frame=int(stored.frames[row]),
                row=int(row),
                vertices=in_color,
                normals=vertex_normals(posed, mesh.faces),
                image=frame.color,
                camera=camera,
                depth_map=DepthMap.of_mesh(in_color, mesh.faces, calibration.color, options.edge_jump),
                measured=measured_depth(frame, calibration),
                joints=transform_points(to_color, joints),
                direction=body_direction(pose[0], joints, camera.centre),
            )
        )
    if not sources:
        raise UserError(f"{reader.root} has no colour image of any training frame; re-import the recording.")
    return sources


def choose_sources(
    sources: list[SourceView], direction: np.ndarray, count: int, exclude: frozenset[int] = frozenset()
) -> list[int]:
    """Indices of the ``count`` sources whose body-frame camera directions are nearest
    ``direction`` (3,), leaving out the sources in ``exclude``."""
    similarity = np.array([source.direction @ direction for source in sources])
    order = [int(i) for i in np.argsort(-similarity, kind="stable") if int(i) not in exclude]
    return order[:count]


# --------------------------------------------------------------------------------------------------
# Samples and features


@dataclass
class SurfacePixels:
    """Pixels of a target view that see the avatar.

    Attributes:
        rows, cols: (P,) pixel positions; triangles: (P,) int64; barycentrics: (P, 3) float32;
        points: (P, 3) target-frame surface points; normals: (P, 3) unit normals there;
        view: (P, 3) unit directions from the points to the camera.
    """

    rows: np.ndarray
    cols: np.ndarray
    triangles: np.ndarray
    barycentrics: np.ndarray
    points: np.ndarray
    normals: np.ndarray
    view: np.ndarray


def interpolate(
    faces: np.ndarray, values: np.ndarray, triangles: np.ndarray, barycentrics: np.ndarray
) -> np.ndarray:
    """(P, C) float32 barycentric interpolation of per-vertex values (V, C) at surface points."""
    corners = np.asarray(values, dtype=np.float32)[faces[triangles]]
    return np.einsum("pk,pkc->pc", barycentrics, corners)


def unit(vectors: np.ndarray) -> np.ndarray:
    """(N, 3) rows scaled to unit length (0 rows stay 0)."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def surface_pixels(
    mesh: UVMesh, vertices: np.ndarray, rays: np.ndarray, camera_centre: np.ndarray
) -> SurfacePixels:
    """Cast rays (H, W, 6) at the posed mesh (vertices (V, 3), same frame) and describe the hits."""
    hits = raycast_rays(vertices, mesh.faces, rays)
    rows, cols = np.nonzero(hits.hit)
    triangles, barycentrics = hits.triangle_ids[rows, cols], hits.barycentrics[rows, cols]
    points = interpolate(mesh.faces, vertices, triangles, barycentrics)
    normals = unit(interpolate(mesh.faces, vertex_normals(vertices, mesh.faces), triangles, barycentrics))
    view = unit(np.asarray(camera_centre, dtype=np.float32) - points)
    return SurfacePixels(rows, cols, triangles, barycentrics, points, normals, view)


def triangle_frames(vertices: np.ndarray, faces: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(P, 3, 3) rows e1, e2, n: each triangle's own orthonormal frame (first edge, in-plane
    perpendicular, normal), which moves with the surface, so directions expressed in it do not
    depend on the pose."""
    corners = np.asarray(vertices, dtype=np.float32)[faces[triangles]]
    first = unit(corners[:, 1] - corners[:, 0])
    normal = unit(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]))
    return np.stack([first, np.cross(normal, first), normal], 1)


@dataclass
class BlendInputs:
    """Everything the blender needs for P pixels and their K sources (float32 unless noted).

    Attributes:
        colours: (P, K, 3) in [0, 1]; visible: (P, K) bool; features: (P, K, D);
        source_normals: (P, K, 3) and target_normals: (P, 3), depth-camera frame (shading);
        fallback: (P, 3) the baked texture's colours in [0, 1].
    """

    colours: np.ndarray
    visible: np.ndarray
    features: np.ndarray
    source_normals: np.ndarray
    target_normals: np.ndarray
    fallback: np.ndarray

    def tensors(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The fields as torch tensors."""
        return {name: torch.as_tensor(value, device=device) for name, value in asdict(self).items()}


def source_features(
    source: SourceView,
    mesh: UVMesh,
    pixels: SurfacePixels,
    target_frames: np.ndarray,
    options: RenderOptions,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One source's colours (P, 3), visibility (P,), features (P, D) and normals (P, 3).

    Features: source cosine, edge factor, tanh(relative joint depths / 0.3 m) (J), target cosine,
    agreement of the two view directions, the source and target view directions in the
    triangle's frame (3 + 3).
    """
    faces = mesh.faces
    points = interpolate(faces, source.vertices, pixels.triangles, pixels.barycentrics)
    normals = unit(
        interpolate(faces, vertex_normals(source.vertices, faces), pixels.triangles, pixels.barycentrics)
    )
    samples = view_samples(
        points,
        normals,
        source.camera.intrinsics,
        source.depth_map,
        options.depth_tolerance,
        options.edge_margin,
        source.measured,
        options.measured_tolerance,
    )
    colours = np.zeros((len(points), 3), dtype=np.float32)
    colours[samples.visible] = bilinear(source.image, samples.pixels[samples.visible]) / 255.0
    joint_depths = np.tanh((points[:, 2:3] - source.joints[None, :, 2]) / JOINT_DEPTH_SCALE)
    source_local = np.einsum(
        "pij,pj->pi", triangle_frames(source.vertices, faces, pixels.triangles), unit(-points)
    )
    target_local = np.einsum("pij,pj->pi", target_frames, pixels.view)
    agreement = (source_local * target_local).sum(1, keepdims=True)
    target_cosine = (pixels.normals * pixels.view).sum(1, keepdims=True)
    features = np.concatenate(
        [
            samples.cosine[:, None],
            samples.edge[:, None],
            joint_depths,
            target_cosine,
            agreement,
            source_local,
            target_local,
            np.zeros_like(target_cosine),
        ],
        1,
    ).astype(np.float32)
    shading_normals = unit(interpolate(faces, source.normals, pixels.triangles, pixels.barycentrics))
    return colours, samples.visible, features, shading_normals


def texture_entry(
    pixels: SurfacePixels, target_frames: np.ndarray, fallback: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The baked texture as one more, always visible, candidate: its colours (P, 3), visibility
    (P,), features (P, D: the target's cosine and local view direction, the texture flag, zeros
    for the source terms) and normals (:data:`TEXTURE_NORMAL`: it holds frontal views)."""
    features = np.zeros((len(fallback), NUM_FEATURES), dtype=np.float32)
    features[:, TARGET_COSINE] = (pixels.normals * pixels.view).sum(1)
    features[:, TARGET_VIEW] = np.einsum("pij,pj->pi", target_frames, pixels.view)
    features[:, TEXTURE_FLAG] = 1.0
    normals = np.broadcast_to(np.float32(TEXTURE_NORMAL), (len(fallback), 3))
    return fallback, np.ones(len(fallback), dtype=bool), features, normals


def missing_entry(count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An invisible candidate for ``count`` pixels, standing in for a source there are too few of."""
    zeros = np.zeros((count, 3), dtype=np.float32)
    return zeros, np.zeros(count, dtype=bool), np.zeros((count, NUM_FEATURES), dtype=np.float32), zeros


def blend_inputs(
    sources: list[SourceView],
    chosen: list[int],
    mesh: UVMesh,
    texture: np.ndarray,
    pixels: SurfacePixels,
    target_vertices: np.ndarray,
    options: RenderOptions,
) -> BlendInputs:
    """Gather the chosen sources' samples of the target pixels (invisible stand-ins up to
    ``options.per_view``), then the baked texture's (last): K = per_view + 1 candidates.

    Args:
        target_vertices: (V, 3) the posed mesh the pixels hit (target frame = depth-camera frame).
    """
    frames = triangle_frames(target_vertices, mesh.faces, pixels.triangles)
    uvs = interpolate(mesh.faces, mesh.uvs, pixels.triangles, pixels.barycentrics)
    fallback = sample_texture(texture, uvs) / 255.0
    gathered = [source_features(sources[i], mesh, pixels, frames, options) for i in chosen]
    gathered += [missing_entry(len(fallback))] * (options.per_view - len(chosen))
    gathered.append(texture_entry(pixels, frames, fallback))
    colours, visible, features, normals = (np.stack(parts, 1) for parts in zip(*gathered, strict=True))
    return BlendInputs(
        colours=colours,
        visible=visible,
        features=features,
        source_normals=normals,
        target_normals=pixels.normals.astype(np.float32),
        fallback=fallback,
    )


# --------------------------------------------------------------------------------------------------
# The blender


class Blender(nn.Module):
    """Blending weights and shading of :func:`blend_inputs` (module docstring, steps 3–5).

    Args:
        hidden: width of the MLP's two hidden layers.
    """

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(NUM_FEATURES, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )
        self.light = nn.Parameter(torch.tensor([0.0, 0.0, -1.0]))
        self.ambient = nn.Parameter(torch.full((3,), INITIAL_AMBIENT))
        self.diffuse = nn.Parameter(torch.full((3,), 1.0 - INITIAL_AMBIENT))

    def weights(self, features: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """(P, K) softmax weights over the visible sources (rows sum to 1), 0 where none is visible.

        Args:
            features: (P, K, D); visible: (P, K) bool.
        """
        logits = self.mlp(features).squeeze(-1).masked_fill(~visible, -torch.inf)
        weights = torch.softmax(logits, -1)
        return torch.where(visible.any(-1, keepdim=True), weights, torch.zeros_like(weights))

    def shading(self, normals: torch.Tensor) -> torch.Tensor:
        """(..., 3) learned shading per colour channel of unit normals (..., 3): ambient + diffuse ·
        max(0, n · l) for one distant light l (depth-camera frame)."""
        light = self.light / self.light.norm().clamp_min(1e-6)
        lambert = (normals @ light).clamp_min(0.0)[..., None]
        return self.ambient.abs() + 1e-3 + self.diffuse.abs() * lambert

    def forward(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Colours (P, 3) in [0, 1] and weights (P, K) of :func:`blend_inputs` (whose last entry,
        the baked texture, is always visible)."""
        weights = self.weights(inputs["features"], inputs["visible"])
        relight = self.shading(inputs["target_normals"])[:, None] / self.shading(inputs["source_normals"])
        return (weights[..., None] * inputs["colours"] * relight).sum(1).clamp(0.0, 1.0), weights


# --------------------------------------------------------------------------------------------------
# Rendering and training


@dataclass
class Rendered:
    """A rendered view: image (H, W, 3) uint8 (background black), mask (H, W) bool, and
    fallback (H, W) bool: pixels coloured by the baked texture (no source saw them)."""

    image: np.ndarray
    mask: np.ndarray
    fallback: np.ndarray


@dataclass
class PixelRenderer:
    """The avatar's textured mesh, its sources and a trained blender.

    Attributes:
        stored: the avatar and refined poses; mesh, texture: the texture stage's atlas mesh and
        (S, S, 3) uint8 texture; poser: skins the atlas mesh; sources: the captured views;
        blender: the trained blender; options: settings.
    """

    stored: StoredAvatar
    mesh: UVMesh
    texture: np.ndarray
    poser: MeshPoser
    sources: list[SourceView]
    blender: Blender
    options: RenderOptions = field(default_factory=RenderOptions)

    def posed(self, pose: torch.Tensor, trans: torch.Tensor) -> np.ndarray:
        """(V, 3) the atlas mesh in a pose (72,), (3,)."""
        return self.poser(pose[None], trans[None])[0]

    def pose_of(self, source: SourceView) -> tuple[torch.Tensor, torch.Tensor]:
        """A source frame's refined pose (72,) and translation (3,)."""
        return self.stored.poses[source.row], self.stored.trans[source.row]

    def target_direction(self, pose: torch.Tensor, trans: torch.Tensor, centre: np.ndarray) -> np.ndarray:
        """(3,) the camera's direction in the target body's root frame."""
        joints = posed_joints(self.stored, pose[None], trans[None])[0]
        return body_direction(pose, joints, centre)

    def render(self, pose: torch.Tensor, trans: torch.Tensor, camera: ViewCamera) -> Rendered:
        """The avatar in a pose (72,), (3,) (depth-camera frame) seen by ``camera``."""
        vertices = self.posed(pose, trans)
        pixels = surface_pixels(self.mesh, vertices, camera.rays(), camera.centre)
        chosen = choose_sources(
            self.sources, self.target_direction(pose, trans, camera.centre), self.options.per_view
        )
        inputs = blend_inputs(self.sources, chosen, self.mesh, self.texture, pixels, vertices, self.options)
        with torch.no_grad():
            colours, _ = self.blender(inputs.tensors())
        return to_image(pixels, colours.numpy(), camera.intrinsics.shape, ~inputs.visible[:, :-1].any(1))


def to_image(
    pixels: SurfacePixels, colours: np.ndarray, shape: tuple[int, int], fallback: np.ndarray
) -> Rendered:
    """Scatter per-pixel colours (P, 3) in [0, 1] and fallback flags (P,) into a :class:`Rendered`."""
    image = np.zeros((*shape, 3), dtype=np.uint8)
    image[pixels.rows, pixels.cols] = np.rint(np.clip(colours, 0.0, 1.0) * 255.0).astype(np.uint8)
    mask = np.zeros(shape, dtype=bool)
    mask[pixels.rows, pixels.cols] = True
    fallback_image = np.zeros(shape, dtype=bool)
    fallback_image[pixels.rows, pixels.cols] = fallback
    return Rendered(image, mask, fallback_image)


def render_texture(mesh: UVMesh, texture: np.ndarray, vertices: np.ndarray, camera: ViewCamera) -> Rendered:
    """The posed textured mesh (vertices (V, 3) in the camera's frame of reference) as the
    camera sees it, unlit (the texture holds the capture's shading); every pixel is "fallback"."""
    pixels = surface_pixels(mesh, vertices, camera.rays(), camera.centre)
    uvs = interpolate(mesh.faces, mesh.uvs, pixels.triangles, pixels.barycentrics)
    colours = sample_texture(texture, uvs) / 255.0
    return to_image(pixels, colours, camera.intrinsics.shape, np.ones(len(colours), dtype=bool))


def training_pixels(
    source: SourceView, count: int, margin: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random pixels (rows, cols) (≤ count each) of a source image on the avatar and at least
    ``margin`` pixels from its occlusion edges."""
    rows, cols = np.nonzero(source.depth_map.edge_distance >= margin)
    pick = rng.choice(len(rows), size=min(count, len(rows)), replace=False)
    return rows[pick], cols[pick]


def held_out(renderer: PixelRenderer, index: int, rng: np.random.Generator) -> frozenset[int]:
    """Sources a training target may not use: itself, and for a share ``novel_share`` of the
    targets every source within ``novel_angle_deg`` of its view, so that the blender also learns
    views no source is near (novel views)."""
    options = renderer.options
    if rng.random() >= options.novel_share:
        return frozenset({index})
    direction = renderer.sources[index].direction
    limit = math.cos(math.radians(options.novel_angle_deg))
    return frozenset(i for i, source in enumerate(renderer.sources) if source.direction @ direction > limit)


def training_inputs(
    renderer: PixelRenderer, index: int, rng: np.random.Generator
) -> tuple[BlendInputs, np.ndarray]:
    """Blend inputs and true colours (P, 3) in [0, 1] at pixels of source ``index``'s image,
    predicted from the other sources."""
    source, options = renderer.sources[index], renderer.options
    rows, cols = training_pixels(source, options.pixels_per_frame, options.edge_margin, rng)
    vertices = renderer.posed(*renderer.pose_of(source))
    rays = source.camera.rays()[rows, cols][:, None]  # (P, 1, 6)
    pixels = surface_pixels(renderer.mesh, vertices, rays, source.camera.centre)
    pixels.rows, pixels.cols = rows[pixels.rows], cols[pixels.rows]
    chosen = choose_sources(
        renderer.sources, source.direction, options.per_view, held_out(renderer, index, rng)
    )
    inputs = blend_inputs(
        renderer.sources, chosen, renderer.mesh, renderer.texture, pixels, vertices, options
    )
    truth = source.image[pixels.rows, pixels.cols].astype(np.float32) / 255.0
    return inputs, truth


def concatenate(parts: list[BlendInputs]) -> BlendInputs:
    """Stack the pixels of several :class:`BlendInputs`."""
    return BlendInputs(
        **{name: np.concatenate([asdict(part)[name] for part in parts]) for name in asdict(parts[0])}
    )


def train_blender(renderer: PixelRenderer) -> dict:
    """Fit ``renderer.blender`` to predict each source frame's colours from the other sources
    (Adam on the L1 colour error). Returns a summary: steps, loss before and after, pixels."""
    options = renderer.options
    rng = np.random.default_rng(options.seed)
    torch.manual_seed(options.seed)
    samples = [training_inputs(renderer, index, rng) for index in range(len(renderer.sources))]
    if sum(len(colours) for _, colours in samples) == 0:
        raise UserError(
            "No training frame's colour image shows the avatar away from its edges; check the recording's "
            "calibration (depth_to_color) and the fit."
        )
    inputs = concatenate([inputs for inputs, _ in samples])
    truth = torch.from_numpy(np.concatenate([colours for _, colours in samples]))
    data = inputs.tensors()
    blender = renderer.blender
    optimiser = torch.optim.Adam(blender.parameters(), lr=options.lr)
    history = []
    for _ in range(options.steps):
        batch = torch.randint(len(truth), (min(options.batch, len(truth)),))
        predicted, _ = blender({name: value[batch] for name, value in data.items()})
        loss = (predicted - truth[batch]).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(float(loss.detach()))
    with torch.no_grad():
        final = float((blender(data)[0] - truth).abs().mean())
    return {
        "pixels": len(truth),
        "pixels_texture_only": int((~inputs.visible[:, :-1].any(1)).sum()),
        "steps": options.steps,
        "first_loss": history[0] if history else None,
        "final_l1": final,
    }


BLENDER_FORMAT = "rgbd2avatar-blender"
BLENDER_VERSION = 1


def make_renderer(
    stored: StoredAvatar,
    recording: Path,
    mesh: UVMesh,
    texture: np.ndarray,
    options: RenderOptions,
    blender: Blender | None = None,
) -> PixelRenderer:
    """A renderer: the atlas mesh posed by the avatar, its sources read from the recording, and
    ``blender`` (a new, untrained one if None)."""
    poser = MeshPoser(stored.avatar, mesh.vertices)
    sources = load_sources(stored, SequenceReader(recording), mesh, poser, options)
    blender = Blender(options.hidden) if blender is None else blender
    return PixelRenderer(stored, mesh, texture, poser, sources, blender, options)


def fit_blender(stored: StoredAvatar, recording: Path, folder: Path, options: RenderOptions) -> dict:
    """Train the blender on the capture with the texture in ``folder``; write ``blender.pt`` and
    ``blender.json`` (the training summary, also returned) there."""
    mesh, texture, _ = load_textured_mesh(folder)
    started = time.perf_counter()
    renderer = make_renderer(stored, recording, mesh, texture, options)
    summary = train_blender(renderer)
    summary |= {"options": options.to_dict(), "sources": [source.frame for source in renderer.sources]}
    summary["seconds"] = time.perf_counter() - started
    save_blender(folder / "blender.pt", renderer.blender, options)
    write_json(folder / "blender.json", summary)
    return summary


def save_blender(path: Path, blender: Blender, options: RenderOptions) -> None:
    """Write the blender and its options atomically (a ``torch.save`` dict of plain data)."""
    state = {
        "format": BLENDER_FORMAT,
        "version": BLENDER_VERSION,
        "options": options.to_dict(),
        "state": {key: value.detach().cpu() for key, value in blender.state_dict().items()},
    }
    with atomic_path(path) as temp:
        torch.save(state, temp)


def load_blender(path: Path) -> tuple[Blender, RenderOptions]:
    """Read a blender file written by :func:`save_blender`.

    Raises:
        UserError: missing, unreadable or of another format.
    """
    state = read_versioned(path, BLENDER_FORMAT, BLENDER_VERSION, "rgbd2avatar texture")
    options = RenderOptions(**state["options"])
    blender = Blender(options.hidden)
    blender.load_state_dict(state["state"])
    return blender, options


# --------------------------------------------------------------------------------------------------
# Rendering a motion

ORBIT_SIZE = (640, 576)
"""(width, height) of the orbit camera's images."""
ORBIT_FOV_DEG = 45.0
ORBIT_MIN_DISTANCE = 2.6
"""Metres: the orbit camera never comes closer, so that a standing person fits its field of view."""
CAMERAS = ("orbit", "capture")


def orbit_cameras(world: CaptureWorld, count: int) -> list[ViewCamera]:
    """``count`` pinhole cameras (:data:`ORBIT_SIZE`) turning once around the capture spot at the
    capture camera's distance (at least :data:`ORBIT_MIN_DISTANCE`), at mid-body height, starting
    where the capture camera stood."""
    intrinsics = pinhole(*ORBIT_SIZE, ORBIT_FOV_DEG)
    radius = max(world.distance, ORBIT_MIN_DISTANCE)
    target = np.array([0.0, world.height / 2, 0.0])
    cameras = []
    for angle in 2 * np.pi * np.arange(count) / max(count, 1):
        eye = np.array([radius * np.sin(angle), world.height / 2, radius * np.cos(angle)])
        cameras.append(world.camera(intrinsics, look_at(eye, target, np.array([0.0, 1.0, 0.0]))))
    return cameras


def capture_camera(reader: SequenceReader) -> ViewCamera:
    """The capture's colour camera (its lens and pose), in the depth-camera frame."""
    calibration = reader.calibration
    if calibration.color is None:
        raise UserError(f"{reader.root} has no colour camera; use --camera orbit or a camera file.")
    return ViewCamera(calibration.color, invert_rigid(calibration.depth_to_color))


def file_cameras(path: Path, world: CaptureWorld, count: int) -> list[ViewCamera]:
    """Cameras from a JSON file: ``{"intrinsics": {"width", "height", "fx", "fy", "cx", "cy"},
    "world_from_camera": one 4×4 or one per frame}`` in the capture's floor frame (metres, y up,
    the subject's spot at the origin, the capture camera towards +z; OpenCV camera axes).

    Raises:
        UserError: unreadable, malformed, or a different number of poses than frames.
    """
    from capture.errors import CaptureError
    from capture.files import read_json

    try:
        data = read_json(path)
        size = data["intrinsics"]
        intrinsics = CameraIntrinsics(
            int(size["width"]), int(size["height"]), *(float(size[key]) for key in ("fx", "fy", "cx", "cy"))
        )
        poses = np.asarray(data["world_from_camera"], dtype=np.float64)
    except (CaptureError, KeyError, TypeError, ValueError) as error:
        raise UserError(
            f"{path} is not a camera file ({type(error).__name__}: {error}); see `rgbd2avatar render --help`."
        ) from None
    poses = poses[None] if poses.shape == (4, 4) else poses
    if poses.ndim != 3 or poses.shape[1:] != (4, 4) or len(poses) not in (1, count):
        raise UserError(
            f"{path} must hold one 4×4 world_from_camera or one per frame ({count}); fix its poses."
        )
    return [world.camera(intrinsics, poses[min(k, len(poses) - 1)]) for k in range(count)]


def target_cameras(spec: str, stored: StoredAvatar, reader: SequenceReader, count: int) -> list[ViewCamera]:
    """One camera per frame for ``--camera``: ``orbit``, ``capture`` or a JSON file.

    Raises:
        UserError: an unknown name that is not a file either.
    """
    world = capture_world(stored)
    if spec == "orbit":
        return orbit_cameras(world, count)
    if spec == "capture":
        return [capture_camera(reader)] * count
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"--camera {spec!r} is neither {' nor '.join(CAMERAS)} nor an existing camera file.")
    return file_cameras(path, world, count)


METHODS = ("pixel", "texture")
"""Renderers of ``rgbd2avatar render``: pixel-aligned blending of the captured frames, or the baked
texture alone."""


def even_size(image: np.ndarray) -> np.ndarray:
    """The image padded with black by a row and/or column to even sides (what the video encoder needs)."""
    height, width = image.shape[:2]
    return np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)))


def render_motion(
    stored: StoredAvatar,
    texture_dir: Path,
    recording: Path,
    motion: Motion,
    camera: str,
    out: Path,
    method: str,
) -> dict:
    """Render the avatar driven by a motion into ``out``: ``frames/000000.png`` …, ``render.mp4``
    (the motion's frame rate) and ``render.json``; the folder appears complete or not at all.

    Args:
        texture_dir: the texture stage's folder; recording: the subject's colour frames;
        camera: ``orbit``, ``capture`` or a camera file (:func:`target_cameras`);
        method: one of :data:`METHODS`.
    Returns:
        The summary written to ``render.json``.
    """
    from rgbd2avatar.animation import staging_directory, video_codec, video_writer

    if method not in METHODS:
        raise UserError(f"--method {method!r} is not one of {', '.join(METHODS)}; pick one of those.")
    mesh, texture, _ = load_textured_mesh(texture_dir)
    blender, options = load_blender(texture_dir / "blender.pt")
    renderer = make_renderer(stored, recording, mesh, texture, options, blender)
    cameras = target_cameras(camera, stored, SequenceReader(recording), motion.num_frames)
    poses, trans = motion_in_capture(stored, capture_world(stored), motion.poses, motion.trans)
    height, width = even_size(np.zeros((*cameras[0].intrinsics.shape, 3))).shape[:2]
    started, fallback = time.perf_counter(), []
    codec = video_codec()
    with staging_directory(out) as folder:
        with video_writer(folder / "render.mp4", motion.fps, width, height, codec) as write_frame:
            for k in progress(range(motion.num_frames), total=motion.num_frames, description="render"):
                if method == "pixel":
                    rendered = renderer.render(poses[k], trans[k], cameras[k])
                else:
                    rendered = render_texture(mesh, texture, renderer.posed(poses[k], trans[k]), cameras[k])
                fallback.append(
                    float(rendered.fallback[rendered.mask].mean()) if rendered.mask.any() else 0.0
                )
                write_image(folder / "frames" / f"{k:06d}.png", rendered.image)
                write_frame(even_size(rendered.image))
        seconds = time.perf_counter() - started
        summary = {
            "motion": motion.name, "frames": motion.num_frames, "fps": motion.fps, "camera": camera,
            "method": method, "size": [width, height], "video_codec": codec,
            "fallback_share": float(np.mean(fallback)), "seconds": seconds,
            "frames_per_second": motion.num_frames / seconds,
        }  # fmt: skip
        write_json(folder / "render.json", summary)
    return summary
