"""A virtual Azure Kinect: depth and colour images of triangle-mesh scenes, with realistic noise.

Both cameras are ray cast through their real lens model: every pixel's ray is the undistorted
direction of its pixel centre (:func:`capture.calibration.pixel_rays`, cached per camera), so the
images carry the same distortion as a real recording and :func:`capture.calibration.backproject`
/ :func:`~capture.calibration.project` invert them exactly. Rays have camera-z component 1, so
the hit distance is the depth the sensor measures (z, not range).

Depth (:func:`render_depth`, 640 × 576 NFOV unbinned by default) follows :class:`NoiseModel`;
invalid pixels are 0, as in the SDK's depth images. Colour (:func:`render_color`, 1280 × 720)
is Lambert + ambient shading of a per-pixel albedo callback plus mild Gaussian noise.

World and device conventions (:func:`kinect_pose`, :func:`scene`): the world has SMPL's axes,
y up, metres, the floor at y = 0; the subject stands at the origin facing +z, the camera looks
at them from +z. Camera axes are OpenCV's (x right, y down, z forward). The colour camera's pose
is ``world_from_depth ∘ depth_to_color⁻¹`` (:func:`capture.calibration.world_from_color`).

Scenes are lists of meshes ``(vertices (V_i, 3), faces (T_i, 3))``; per-pixel results name the
mesh (``mesh_ids``) and the triangle within it, so a person mask is ``mesh_ids == i``. Surface
properties come from callbacks ``fn(mesh_index, triangle_ids (N,), barycentrics (N, 3))``
called once per visible mesh with that mesh's hit pixels: albedo (N, 3) RGB in [0, 1] or
near-infrared reflectivity (N,) in [0, 1].

Shapes: H × W pixels, V vertices, T triangles, N hit pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from capture.calibration import pixel_rays
from capture.sequence import Calibration, CameraIntrinsics
from rgbd2avatar.render import merge_meshes, plane, raycast_rays

Mesh = tuple[np.ndarray, np.ndarray]
"""(vertices (V, 3), faces (T, 3)) of one mesh."""
SurfaceFn = Callable[[int, np.ndarray, np.ndarray], np.ndarray]
"""fn(mesh_index, triangle_ids (N,), barycentrics (N, 3)) → (N, C) or (N,) per-pixel values."""

NFOV_HEXAGON = (-0.086, 0.792, 0.45, 0.665)
"""The NFOV depth image's valid region in undistorted normalised coordinates (x, y) = (X/Z, Y/Z):
``|x| ≤ w − s_top (y₀ − y)`` above ``y₀`` and ``|x| ≤ w − s_bottom (y − y₀)`` below, as
(y₀, w, s_top, s_bottom) — a hexagon with its side corners at (±0.79, −0.086), cut off at the top
and bottom by the image. Fitted (robust line fits, median residual ≤ 1.3 px) to the border of the
valid pixels of the real NFOV-unbinned frame in ``shared/data/azure_kinect/recording.mkv`` (the
NFOV illumination covers a hexagon; every NFOV recording shows it)."""
DEFAULT_LIGHT = (0.3, 0.8, 0.5)
"""World direction *towards* the key light of :func:`render_color`: above, right and in front of
a subject at the origin facing +z."""


@dataclass(frozen=True)
class NoiseModel:
    """How the virtual depth camera departs from the clean ray-cast depth.

    Defaults resemble the Azure Kinect in NFOV unbinned mode. Sources: the Azure Kinect DK
    documentation (learn.microsoft.com/azure/kinect-dk, "Azure Kinect DK depth camera": random
    error σ ≤ 17 mm, systematic error < 11 mm + 0.1 % of distance, invalidation of low-signal,
    saturated, multi-path and mixed (edge) pixels; "hardware specification": NFOV unbinned operating
    range 0.5–3.86 m); Tölgyessy et al., "Evaluation of the Azure Kinect and its comparison to
    Kinect V1 and Kinect V2", Sensors 21(2):413, 2021 (confirms σ ≤ 17 mm and < 11 mm error up to
    3.5 m; studies precision, the reflectivity of 18 materials, multipath and flying pixels);
    Kurillo et al., "Evaluating the accuracy of the Azure Kinect and Kinect v2", Sensors
    22(7):2469, 2022 (random depth error across distances and the field of view). The σ(z) law is
    the usual time-of-flight model, a few mm at 1–2 m growing roughly with z², kept under the
    documented bound. The real frame in ``shared/data/azure_kinect/recording.mkv`` shows the
    other effects: a ring of invalid pixels around a near object, holes on the black print of a
    white mug, the hexagonal NFOV footprint.

    Attributes:
        sigma_a, sigma_b: axial Gaussian noise σ(z) = a + b z² in metres (z in metres): 1.5 mm
            at 1 m, 4.5 mm at 2 m, 15 mm at the 3.86 m range limit (under the 17 mm bound).
        min_range, max_range: depths outside are invalid (NFOV unbinned: 0.5–3.86 m).
        edge_jump: a pixel is an edge pixel when it touches a depth discontinuity of about this
            size (metres; :func:`depth_edges`; steep but continuous surfaces do not count).
        flying_probability: chance that an edge pixel reports a mix of its neighbourhood's
            nearest and farthest depth (a "flying pixel"), uniformly weighted.
        edge_dropout: chance that an edge pixel not made flying is invalidated (the depth
            engine's mixed-pixel invalidation: the ring of holes around silhouettes).
        grazing_cos: below this incidence cosine (≈ 75.5° from the normal), pixels drop out with
            probability rising linearly to 1 at 90°.
        dark_reflectivity: below this near-infrared reflectivity (dark or specular surfaces return
            little light), pixels drop out with probability rising linearly to 1 at 0.
        nfov_hexagon: invalidate pixels outside the NFOV footprint (:data:`NFOV_HEXAGON`); turn off
            for WFOV modes.
    """

    sigma_a: float = 0.0005
    sigma_b: float = 0.0010
    min_range: float = 0.5
    max_range: float = 3.86
    edge_jump: float = 0.04
    flying_probability: float = 0.25
    edge_dropout: float = 0.5
    grazing_cos: float = 0.25
    dark_reflectivity: float = 0.12
    nfov_hexagon: bool = True

    def sigma(self, depth: np.ndarray) -> np.ndarray:
        """Axial noise σ (metres) at depths (metres), any shape."""
        return self.sigma_a + self.sigma_b * np.square(depth)

    @classmethod
    def ideal(cls) -> NoiseModel:
        """No noise, flying pixels or dropouts: only the range limits and millimetre quantisation."""
        return cls(
            sigma_a=0.0,
            sigma_b=0.0,
            flying_probability=0.0,
            edge_dropout=0.0,
            grazing_cos=0.0,
            dark_reflectivity=0.0,
            nfov_hexagon=False,
        )


@dataclass
class SceneHits:
    """What each pixel of a virtual camera sees.

    Attributes:
        depth: (H, W) float32 clean camera-z depth in metres; 0 where nothing was hit.
        mesh_ids: (H, W) int64 index of the hit mesh in the scene list; −1 where nothing was hit.
        triangle_ids: (H, W) int64 triangle index *within that mesh*; −1 where nothing was hit.
        barycentrics: (H, W, 3) float32 weights of the triangle's vertices; 0 where nothing was hit.
        normals: (H, W, 3) float32 unit geometric normals in the *camera* frame (right-handed
            from the vertex order, either side); 0 where nothing was hit.
        incidence_cos: (H, W) float32 |cos| of the angle between the surface normal and the ray;
            0 where nothing was hit.
    """

    depth: np.ndarray
    mesh_ids: np.ndarray
    triangle_ids: np.ndarray
    barycentrics: np.ndarray
    normals: np.ndarray
    incidence_cos: np.ndarray

    @property
    def hit(self) -> np.ndarray:
        """(H, W) bool: the pixel's ray hit a surface."""
        return self.mesh_ids >= 0


@dataclass
class DepthInfo:
    """Ground truth behind a rendered depth image.

    Attributes:
        hits: what each depth pixel sees (clean depth, mesh and triangle ids, …).
        reflectivity: (H, W) float32 near-infrared reflectivity used for dropouts; 0 where nothing was hit.
        edges: (H, W) bool pixels touching a depth discontinuity (:func:`depth_edges`).
        flying: (H, W) bool pixels given a mixed foreground/background depth.
    """

    hits: SceneHits
    reflectivity: np.ndarray
    edges: np.ndarray
    flying: np.ndarray


# --------------------------------------------------------------------------------------------------
# Rays and ray casting


@lru_cache(maxsize=8)
def camera_rays(intrinsics: CameraIntrinsics) -> np.ndarray:
    """Cached, read-only :func:`~capture.calibration.pixel_rays`: (H, W, 3) float32 camera-frame
    directions with z = 1, NaN outside the lens's valid field of view."""
    rays = pixel_rays(intrinsics)
    rays.flags.writeable = False
    return rays


@lru_cache(maxsize=8)
def _unit_camera_rays(intrinsics: CameraIntrinsics) -> np.ndarray:
    """Cached, read-only (H, W, 3) float32 unit-length camera rays; 0 where the ray is invalid."""
    rays = camera_rays(intrinsics)
    unit = np.nan_to_num(rays / np.linalg.norm(rays, axis=-1, keepdims=True), nan=0.0)
    unit.flags.writeable = False
    return unit


@lru_cache(maxsize=8)
def _camera_ray_bundle(intrinsics: CameraIntrinsics) -> np.ndarray:
    """Cached, read-only (H, W, 6) float32 [origin 0, direction] rays in the camera frame."""
    rays = camera_rays(intrinsics)
    bundle = np.concatenate([np.zeros_like(rays), rays], -1)
    bundle.flags.writeable = False
    return bundle


def _as_mesh_list(meshes: Sequence[Mesh] | Mesh) -> list[Mesh]:
    """A scene as a list of meshes; a single (vertices, faces) pair becomes a one-mesh list."""
    if len(meshes) == 2 and all(isinstance(part, np.ndarray) and part.ndim == 2 for part in meshes):
        return [meshes]  # type: ignore[list-item]
    return list(meshes)  # type: ignore[arg-type]


def cast_scene(
    meshes: Sequence[Mesh] | Mesh, intrinsics: CameraIntrinsics, world_from_camera: np.ndarray
) -> SceneHits:
    """Ray cast a scene of several meshes through every pixel of a posed, distorted camera.

    The scene is moved into the camera frame (V vertices, cheaper than rotating H·W rays), where
    the cached pixel rays start at the origin.

    Args:
        meshes: list of (vertices (V_i, 3), faces (T_i, 3)) in world coordinates, or one mesh.
        intrinsics: the camera; world_from_camera: (4, 4) its pose.
    Returns:
        :class:`SceneHits` of shape (H, W), normals in the camera frame.
    """
    mesh_list = _as_mesh_list(meshes)
    vertices, faces = merge_meshes([m[0] for m in mesh_list], [m[1] for m in mesh_list])
    pose = np.asarray(world_from_camera, dtype=np.float64)
    local = (vertices - pose[:3, 3]) @ pose[:3, :3]  # (V, 3) camera-frame vertices
    found = raycast_rays(local, faces, _camera_ray_bundle(intrinsics))
    ends = np.cumsum([len(m[1]) for m in mesh_list])  # (M,) one past each mesh's last merged triangle
    hit = found.hit
    mesh_ids = np.where(hit, np.searchsorted(ends, found.triangle_ids, side="right"), -1)
    starts = np.concatenate([[0], ends])[np.maximum(mesh_ids, 0)]
    return SceneHits(
        depth=found.depth,
        mesh_ids=mesh_ids,
        triangle_ids=np.where(hit, found.triangle_ids - starts, -1),
        barycentrics=found.barycentrics,
        normals=found.normals,
        incidence_cos=incidence_cosine(found.normals, _unit_camera_rays(intrinsics)),
    )


def incidence_cosine(normals: np.ndarray, unit_rays: np.ndarray) -> np.ndarray:
    """(H, W) float32 |cos| of the angle between unit normals (H, W, 3) and unit rays (H, W, 3) in
    the same frame; 0 where either is 0."""
    return np.abs(np.einsum("hwk,hwk->hw", normals, unit_rays))


def surface_values(hits: SceneHits, fn: SurfaceFn, channels: int) -> np.ndarray:
    """Evaluate a surface callback at every hit pixel, one call per visible mesh.

    Returns:
        (H, W, channels) float32, 0 where nothing was hit.
    """
    mesh_ids = hits.mesh_ids.reshape(-1)
    triangle_ids, barycentrics = hits.triangle_ids.reshape(-1), hits.barycentrics.reshape(-1, 3)
    values = np.zeros((len(mesh_ids), channels), dtype=np.float32)
    for mesh_index in range(int(mesh_ids.max(initial=-1)) + 1):
        pixels = np.flatnonzero(mesh_ids == mesh_index)
        if len(pixels):
            result = fn(mesh_index, triangle_ids[pixels], barycentrics[pixels])
            values[pixels] = np.asarray(result, dtype=np.float32).reshape(-1, channels)
    return values.reshape(*hits.mesh_ids.shape, channels)


def vertex_attribute_fn(faces: Sequence[np.ndarray], values: Sequence[np.ndarray]) -> SurfaceFn:
    """A surface callback interpolating per-vertex values (colours, reflectivity) barycentrically.

    Args:
        faces: per mesh (T_i, 3) vertex indices.
        values: per mesh (V_i, C) or (V_i,) values.
    Returns:
        fn(mesh_index, triangle_ids (N,), barycentrics (N, 3)) → (N, C) or (N,).
    """
    tables = [
        (np.asarray(f, dtype=np.int64), np.asarray(v, dtype=np.float32))
        for f, v in zip(faces, values, strict=True)
    ]

    def interpolate(mesh_index: int, triangle_ids: np.ndarray, barycentrics: np.ndarray) -> np.ndarray:
        mesh_faces, mesh_values = tables[mesh_index]
        corners = mesh_values[mesh_faces[triangle_ids]]  # (N, 3) or (N, 3, C)
        return np.einsum("nk,nk...->n...", barycentrics, corners)

    return interpolate


# --------------------------------------------------------------------------------------------------
# Depth noise


def hexagon_mask(rays: np.ndarray, hexagon: tuple[float, float, float, float] = NFOV_HEXAGON) -> np.ndarray:
    """(H, W) bool: which camera-frame rays (H, W, 3), z = 1, lie inside the NFOV footprint
    (:data:`NFOV_HEXAGON`); NaN rays lie outside."""
    y0, half_width, slope_top, slope_bottom = hexagon
    x, y = rays[..., 0], rays[..., 1]
    slope = np.where(y < y0, slope_top, slope_bottom)
    with np.errstate(invalid="ignore"):
        return np.abs(x) <= half_width - slope * np.abs(y - y0)


def depth_edges(depth: np.ndarray, hit: np.ndarray, jump: float) -> np.ndarray:
    """Pixels next to a depth discontinuity (not merely on a steep surface).

    Inverse depth is affine in the image along any plane, so its second difference along the rows
    or the columns vanishes on planes, however tilted, and is large across an occlusion boundary.
    Scaled by z², it reads as metres: a step from z₁ to z₂ scores z₁|z₂ − z₁|/z₂ on its near side
    and z₂|z₂ − z₁|/z₁ on its far side, and only the two pixels touching the step score at all.

    Args:
        depth: (H, W) clean depth; hit: (H, W) bool where depth is defined (other pixels are skipped).
        jump: the score (metres) above which a pixel is an edge pixel.
    Returns:
        (H, W) bool edge pixels.
    """
    with np.errstate(divide="ignore"):
        inverse = np.pad(np.where(hit, 1.0 / depth, np.nan), 1, constant_values=np.nan)
    centre = inverse[1:-1, 1:-1]
    along_rows = np.abs(inverse[1:-1, :-2] - 2.0 * centre + inverse[1:-1, 2:])
    along_columns = np.abs(inverse[:-2, 1:-1] - 2.0 * centre + inverse[2:, 1:-1])
    with np.errstate(invalid="ignore"):
        return hit & (np.fmax(along_rows, along_columns) * np.square(depth) > jump)


def neighbourhood_range(
    depth: np.ndarray, hit: np.ndarray, pixels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest and farthest hit depth in the 3 × 3 neighbourhood of some pixels.

    Args:
        depth: (H, W); hit: (H, W) bool; pixels: (N,) flat indices of the pixels.
    Returns:
        near (N,), far (N,).
    """
    height, width = depth.shape
    rows, cols = np.divmod(pixels, width)
    offsets = np.arange(-1, 2)
    around_rows = np.clip(rows[:, None, None] + offsets[:, None], 0, height - 1)  # (N, 3, 1)
    around_cols = np.clip(cols[:, None, None] + offsets[None, :], 0, width - 1)  # (N, 1, 3)
    values = depth[around_rows, around_cols].reshape(len(pixels), 9)
    defined = hit[around_rows, around_cols].reshape(len(pixels), 9)
    return np.where(defined, values, np.inf).min(1), np.where(defined, values, -np.inf).max(1)


def dropout_probability(incidence_cos: np.ndarray, reflectivity: np.ndarray, noise: NoiseModel) -> np.ndarray:
    """(H, W) chance that a pixel returns too little light: grazing incidence or a dark surface.

    Each cause rises linearly from 0 at its threshold to 1 at cos = 0 / reflectivity = 0; the two
    are independent.
    """
    grazing = _linear_ramp(incidence_cos, noise.grazing_cos)
    dark = _linear_ramp(reflectivity, noise.dark_reflectivity)
    return 1.0 - (1.0 - grazing) * (1.0 - dark)


def _linear_ramp(values: np.ndarray, threshold: float) -> np.ndarray:
    """1 at 0, falling linearly to 0 at ``threshold`` and above (all 0 when the threshold is 0)."""
    if threshold <= 0:
        return np.zeros_like(values)
    return np.clip(1.0 - values / threshold, 0.0, 1.0)


def noisy_depth(
    hits: SceneHits, reflectivity: np.ndarray, rays: np.ndarray, noise: NoiseModel, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the noise model to a clean depth image.

    Args:
        hits: the clean scene hits; reflectivity: (H, W) in [0, 1].
        rays: (H, W, 3) camera-frame rays (for the NFOV footprint).
        noise: the model; rng: the only source of randomness.
    Returns:
        depth_mm (H, W) uint16 (0 = invalid), edges (H, W) bool, flying (H, W) bool.
    """
    shape, hit, clean = hits.depth.shape, hits.hit, hits.depth
    edges = depth_edges(clean, hit, noise.edge_jump)
    draw = rng.random((4, *shape), dtype=np.float32)  # flying, its mix weight, edge dropout, dropout
    flying = edges & (draw[0] < noise.flying_probability)
    edge_drop = edges & ~flying & (draw[2] < noise.edge_dropout)
    measured = clean.copy()
    flying_pixels = np.flatnonzero(flying)
    near, far = neighbourhood_range(clean, hit, flying_pixels)
    measured.flat[flying_pixels] = near + draw[1].flat[flying_pixels] * (far - near)
    measured += noise.sigma(measured) * rng.standard_normal(shape, dtype=np.float32)
    dropped = draw[3] < dropout_probability(hits.incidence_cos, reflectivity, noise)
    in_range = (clean >= noise.min_range) & (clean <= noise.max_range)
    valid = hit & in_range & ~dropped & ~edge_drop & (measured > 0)
    if noise.nfov_hexagon:
        valid &= hexagon_mask(rays)
    depth_mm = np.where(valid, np.clip(np.rint(measured * 1000.0), 1, 65535), 0).astype(np.uint16)
    return depth_mm, edges, flying


def render_depth(
    meshes: Sequence[Mesh] | Mesh,
    calibration: Calibration,
    world_from_depth: np.ndarray,
    rng: np.random.Generator,
    noise: NoiseModel | None = None,
    reflectivity_fn: SurfaceFn | None = None,
) -> tuple[np.ndarray, DepthInfo]:
    """A depth frame of the virtual Azure Kinect.

    Args:
        meshes: the scene: list of (vertices (V_i, 3), faces (T_i, 3)) in world metres, or one mesh.
        calibration: the device (its depth camera is used; :func:`capture.calibration.azure_kinect_preset`).
        world_from_depth: (4, 4) pose of the depth camera (:func:`kinect_pose`).
        rng: random generator (the same seed gives the same frame).
        noise: the noise model; None = :class:`NoiseModel` defaults.
        reflectivity_fn: near-infrared reflectivity callback (N,) in [0, 1]; None = 1 everywhere.
    Returns:
        depth_mm: (H, W) uint16 depth in millimetres, 0 = invalid, in the depth camera's pixels.
        info: :class:`DepthInfo` ground truth (clean depth, mesh/triangle ids, incidence, edges, …).
    """
    noise = NoiseModel() if noise is None else noise
    hits = cast_scene(meshes, calibration.depth, world_from_depth)
    if reflectivity_fn is None:
        reflectivity = hits.hit.astype(np.float32)
    else:
        reflectivity = surface_values(hits, reflectivity_fn, 1)[..., 0]
    depth_mm, edges, flying = noisy_depth(hits, reflectivity, camera_rays(calibration.depth), noise, rng)
    return depth_mm, DepthInfo(hits=hits, reflectivity=reflectivity, edges=edges, flying=flying)


# --------------------------------------------------------------------------------------------------
# Colour


def shade_lambert(albedo: np.ndarray, normals_cos: np.ndarray, ambient: float) -> np.ndarray:
    """Lambert + ambient: albedo (…, 3) · (ambient + (1 − ambient) · max(cos, 0)) for cos (…)."""
    return albedo * (ambient + (1.0 - ambient) * np.clip(normals_cos, 0.0, 1.0))[..., None]


def render_color(
    meshes: Sequence[Mesh] | Mesh,
    colours_fn: SurfaceFn,
    calibration: Calibration,
    world_from_color: np.ndarray,
    rng: np.random.Generator,
    light: Sequence[float] = DEFAULT_LIGHT,
    ambient: float = 0.4,
    noise_sigma: float = 0.01,
    background: Sequence[float] = (0.0, 0.0, 0.0),
) -> tuple[np.ndarray, SceneHits]:
    """A colour frame of the virtual Azure Kinect.

    Args:
        meshes: the scene, as for :func:`render_depth`.
        colours_fn: albedo callback → (N, 3) RGB in [0, 1].
        calibration: the device (its colour camera is used).
        world_from_color: (4, 4) colour-camera pose,
            ``capture.calibration.world_from_color(calibration, world_from_depth)``.
        rng: random generator for the sensor noise.
        light: world direction towards a distant light (normalised here).
        ambient: share of light reaching every surface, in [0, 1]; surfaces are lit two-sided.
        noise_sigma: Gaussian noise σ on [0, 1] intensities.
        background: RGB in [0, 1] where nothing was hit.
    Returns:
        image (H, W, 3) uint8 RGB in the colour camera's pixels, and the clean :class:`SceneHits`.
    """
    if calibration.color is None:
        raise ValueError("render_color needs a calibration with a colour camera")
    hits = cast_scene(meshes, calibration.color, world_from_color)
    rotation = np.asarray(world_from_color, dtype=np.float64)[:3, :3]
    to_light = rotation.T @ (np.asarray(light, dtype=np.float64) / np.linalg.norm(light))  # camera frame
    facing_away = np.einsum("hwk,hwk->hw", hits.normals, _unit_camera_rays(calibration.color)) > 0
    towards_camera = np.where(facing_away, -1.0, 1.0)  # two-sided lighting
    cosine = towards_camera * (hits.normals @ to_light.astype(np.float32))
    shaded = shade_lambert(surface_values(hits, colours_fn, 3), cosine, ambient)
    image = np.where(hits.hit[..., None], shaded, np.asarray(background, dtype=np.float32))
    image = image + noise_sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8), hits


# --------------------------------------------------------------------------------------------------
# Device pose and a room


def kinect_pose(distance: float = 2.2, height: float = 1.0, tilt: float = 0.0) -> np.ndarray:
    """World-from-depth-camera pose of a Kinect on a tripod in front of a subject at the origin.

    Args:
        distance: horizontal distance from the subject (the world origin) in metres; the camera
            stands at (0, height, distance) and looks towards −z.
        height: camera height above the floor (y = 0) in metres.
        tilt: downward pitch in radians (positive looks down).
    Returns:
        (4, 4) float64 ``world_from_depth``; camera x is world +x (the subject's left hand, SMPL's
        +x, appears on the image's right), camera y points down, camera z forward.
    """
    c, s = math.cos(tilt), math.sin(tilt)
    pose = np.eye(4)
    pose[:3, 0] = (1.0, 0.0, 0.0)
    pose[:3, 1] = (0.0, -c, s)
    pose[:3, 2] = (0.0, -s, -c)
    pose[:3, 3] = (0.0, height, distance)
    return pose


@dataclass
class SceneObject:
    """A static mesh of the room with its surface properties.

    Attributes:
        name: "floor", "wall", "box", …
        vertices: (V, 3) float32 world positions; faces: (T, 3) int64.
        colors: (V, 3) float32 albedo in [0, 1]; reflectivity: (V,) float32 near-infrared reflectivity.
    """

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    reflectivity: np.ndarray

    @property
    def mesh(self) -> Mesh:
        """(vertices, faces)."""
        return self.vertices, self.faces


def tiled_plane(
    corner: Sequence[float], edge_u: Sequence[float], edge_v: Sequence[float], tiles: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """A rectangle split into tiles with their own vertices (so each tile can have a flat colour).

    Args:
        corner: (3,) one corner; edge_u, edge_v: (3,) the two edge vectors from it; the front side
            faces edge_u × edge_v.
        tiles: (n_u, n_v) tiles along each edge.
    Returns:
        vertices (n_u·n_v·4, 3) float32, tile t owning vertices 4t … 4t+3, and faces (n_u·n_v·2, 3) int64.
    """
    n_u, n_v = tiles
    i, j = np.meshgrid(np.arange(n_u), np.arange(n_v), indexing="ij")
    steps = np.array([[0, 0], [1, 0], [1, 1], [0, 1]])  # tile corners in (u, v) steps
    uv = (np.stack([i, j], -1).reshape(-1, 1, 2) + steps) / np.array([n_u, n_v])  # (n, 4, 2)
    points = np.asarray(corner) + uv[..., :1] * np.asarray(edge_u) + uv[..., 1:] * np.asarray(edge_v)
    base = 4 * np.arange(n_u * n_v)[:, None]
    faces = np.concatenate([base + [0, 1, 2], base + [0, 2, 3]], 1).reshape(-1, 3)
    return points.reshape(-1, 3).astype(np.float32), faces.astype(np.int64)


def _box(center: Sequence[float], size: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """An axis-aligned box, outward-facing, 6 faces × 4 own vertices (flat colours per face)."""
    c, h = np.asarray(center, dtype=np.float64), np.asarray(size, dtype=np.float64) / 2
    sides = []
    for axis in range(3):
        u_axis, v_axis = (axis + 1) % 3, (axis + 2) % 3
        for sign in (1.0, -1.0):
            normal, u, v = np.zeros(3), np.zeros(3), np.zeros(3)
            normal[axis], u[u_axis], v[v_axis] = sign * h[axis], h[u_axis], sign * h[v_axis]
            sides.append(plane(c + normal, u, v))
    return merge_meshes([s[0] for s in sides], [s[1] for s in sides])


def _tile_colors(base: np.ndarray, tiles: int, rng: np.random.Generator, contrast: float) -> np.ndarray:
    """(tiles·4, 3) per-vertex colours: every tile a slightly different shade of ``base``."""
    shade = 1.0 + contrast * (rng.random((tiles, 1)) - 0.5)
    return np.repeat(np.clip(base * shade, 0.0, 1.0), 4, axis=0).astype(np.float32)


def scene(
    room_size: Sequence[float] = (5.0, 2.6, 6.0), seed: int = 0, with_box: bool = True
) -> list[SceneObject]:
    """A simple room for a subject standing at the origin, camera 1.5–3 m away along +z.

    The floor (y = 0, 0.25 m tiles in a checker of two shades, with per-tile variation) spans the
    room's width and depth; the back wall stands 0.8–1.4 m behind the subject (z < 0), with a
    mottled texture; an optional box (a crate or low cabinet, dark and hard for the depth camera)
    stands beside the subject, never between them and a camera on the z axis.

    Args:
        room_size: (width, height, depth) in metres; the floor runs from the wall to
            ``depth`` − wall distance in front of the subject (≥ 3.5 m is enough for the camera).
        seed: picks wall distance, colours and the box's place.
        with_box: add the box.
    Returns:
        [floor, wall(, box)] as :class:`SceneObject`.
    """
    rng = np.random.default_rng(seed)
    width, height, depth = room_size
    wall_z = -rng.uniform(0.8, 1.4)
    tile = 0.25
    floor_tiles = (max(1, round(depth / tile)), max(1, round(width / tile)))
    floor = tiled_plane((-width / 2, 0.0, wall_z), (0.0, 0.0, depth), (width, 0.0, 0.0), floor_tiles)
    checker = (np.add.outer(np.arange(floor_tiles[0]), np.arange(floor_tiles[1])) % 2).reshape(-1, 1)
    floor_base = np.where(checker == 0, rng.uniform(0.45, 0.6, 3), rng.uniform(0.25, 0.35, 3))
    floor_colors = np.repeat(floor_base, 4, axis=0) * (1.0 + 0.1 * (rng.random((len(checker) * 4, 1)) - 0.5))
    wall_tiles = (max(1, round(width / tile)), max(1, round(height / tile)))
    wall = tiled_plane((-width / 2, 0.0, wall_z), (width, 0.0, 0.0), (0.0, height, 0.0), wall_tiles)
    objects = [
        SceneObject(
            "floor",
            *floor,
            np.clip(floor_colors, 0, 1).astype(np.float32),
            np.full(len(floor[0]), 0.5, np.float32),
        ),
        SceneObject(
            "wall",
            *wall,
            _tile_colors(rng.uniform(0.6, 0.85, 3), wall_tiles[0] * wall_tiles[1], rng, 0.15),
            np.full(len(wall[0]), 0.8, np.float32),
        ),
    ]
    if with_box:
        side = rng.choice([-1.0, 1.0])
        size = rng.uniform([0.4, 0.4, 0.4], [0.6, 0.9, 0.6])
        center = (side * rng.uniform(0.9, 1.3), size[1] / 2, rng.uniform(wall_z + size[2] / 2 + 0.05, 0.2))
        box = _box(center, size)
        objects.append(
            SceneObject(
                "box",
                *box,
                _tile_colors(rng.uniform(0.05, 0.2, 3), 6, rng, 0.1),
                np.full(len(box[0]), 0.08, np.float32),
            )
        )
    return objects


def scene_surfaces(objects: Sequence[SceneObject]) -> tuple[list[Mesh], SurfaceFn, SurfaceFn]:
    """Meshes, albedo callback and reflectivity callback of a list of scene objects (same order)."""
    faces = [obj.faces for obj in objects]
    return (
        [obj.mesh for obj in objects],
        vertex_attribute_fn(faces, [obj.colors for obj in objects]),
        vertex_attribute_fn(faces, [obj.reflectivity for obj in objects]),
    )
