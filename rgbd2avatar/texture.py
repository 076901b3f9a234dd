"""The avatar's texture: a UV atlas of its canonical mesh, coloured from the captured RGB frames.

``rgbd2avatar texture SUBJECT`` (:func:`texture_avatar`) writes into ``SUBJECT/texture/``::

    avatar.obj, avatar.mtl, texture.png   the textured canonical mesh (Wavefront OBJ)
    avatar.glb                            the same as one binary glTF
    atlas.npz                             vertices (V, 3), faces (T, 3), uvs (V, 2), seen (S, S)
    texture.json                          sizes, frames used, seen share, timings

Steps:

1. **Atlas**: the canonical mesh (MISE, canonical pose condition) simplified to at most
   ``max_faces`` triangles (quadric decimation), charts and packing by xatlas.
2. **Texels**: each texel centre → the atlas triangle under it and its barycentrics (a ray cast
   in the UV plane, :func:`texel_map`), hence its canonical surface point.
3. **Frames**: each training frame's mesh is the canonical mesh skinned with the learned weights
   and the frame's refined pose (depth-camera frame), moved into the colour camera by
   ``depth_to_color``; a texel's point is projected through the distorted lens and its colour
   sampled bilinearly. Its weight (:func:`view_weights`) is ``cos^power · edge`` where visible:
   visible when its depth agrees (within ``depth_tolerance``) with the posed mesh's depth image
   ray cast in the colour camera and the recording's own depth measurement does not contradict it
   (:class:`MeasuredDepth`: where the sensor measured a surface more than ``measured_tolerance``
   from the point, the avatar is off the real surface there — a blob hand, a misfitted limb — and
   its colour pixel shows the background or an occluder); ``cos`` between its normal and the
   direction to the camera
   (frontal views win); ``edge`` ramps from 0 at an occlusion edge of that depth image (the
   silhouette or a depth jump) to 1 at ``edge_margin`` pixels from it, since a slightly misfitted
   surface would paint the background or the occluder there.
4. **Colour**: the weighted mean over frames. Texels no frame sees take the colour of the nearest
   seen texel on the surface (canonical space); texels outside every chart (the gutters) that of
   the nearest chart texel in the image, so that bilinear filtering and mip-maps across seams never
   reach an unpainted colour.

UV convention (OBJ, trimesh): u right, v up, in [0, 1]; texture row 0 is the top, so texel
(row r, column c) has its centre at u = (c + 0.5) / S, v = 1 − (r + 0.5) / S.

Shapes: V vertices, T triangles, S texture size, N texels or points, F frames, H × W pixels.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from capture.calibration import invert_rigid, pixel_rays, project, transform_points
from capture.files import read_image, save_npz, write_bytes, write_image, write_json
from capture.sequence import Calibration, CameraIntrinsics, RGBDFrame, SequenceReader
from rgbd2avatar.avatar.avatar import Avatar
from rgbd2avatar.avatar.meshes import MESH_BATCH, canonical_mesh
from rgbd2avatar.avatar.store import StoredAvatar
from rgbd2avatar.body import lbs
from rgbd2avatar.errors import UserError
from rgbd2avatar.geometry import vertex_normals
from rgbd2avatar.logs import progress
from rgbd2avatar.render import DEFAULT_ALBEDO, raycast_rays

TEXTURE_FILES = ("avatar.obj", "avatar.mtl", "texture.png", "avatar.glb", "atlas.npz")
"""The files :func:`write_textured_mesh` writes into the texture folder."""
MATERIAL = "avatar"
MEASURED_TOLERANCE = 0.03
"""Metres between a surface point and the recorded depth beyond which the recording contradicts
it: the avatar's surface error (≈ 1 cm, more at hands and feet) plus the sensor's noise (≈ 5 mm
at 2 m) stay inside; a hand or foot that reaches past the real one onto the background does not."""


@dataclass(frozen=True)
class TextureOptions:
    """How the texture is made (see the module docstring).

    Attributes:
        size: texture width and height in texels.
        max_faces: triangles of the textured mesh at most (quadric decimation of the MISE mesh).
        resolution: MISE grid of the canonical mesh (32 · 2^k).
        power: exponent of the cosine weight; higher favours frontal views more.
        depth_tolerance: metres between a texel's depth and the ray-cast depth still counted visible.
        measured_tolerance: metres between a texel's depth and the recorded depth (depth camera)
            beyond which the recording contradicts it (:class:`MeasuredDepth`).
        edge_margin: colour-image pixels over which weights ramp up from an occlusion edge.
        edge_jump: metres of depth change that make an occlusion edge inside the silhouette.
        max_frames: training frames used at most, evenly spread (a 3-minute capture fits hundreds).
        padding: texels between charts in the atlas.
    """

    size: int = 1024
    max_faces: int = 20_000
    resolution: int = 256
    power: float = 4.0
    depth_tolerance: float = 0.02
    measured_tolerance: float = MEASURED_TOLERANCE
    edge_margin: float = 6.0
    edge_jump: float = 0.05
    max_frames: int = 120
    padding: int = 2

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class UVMesh:
    """A triangle mesh with one UV coordinate per vertex (seams split vertices).

    Attributes:
        vertices: (V, 3) float32 positions (canonical space for the avatar); faces: (T, 3) int64;
        uvs: (V, 2) float32 in [0, 1], u right, v up.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray

    def texel_coordinates(self, size: int) -> np.ndarray:
        """(V, 2) float64 (column, row) image coordinates of the UVs in a size-S texture, texel
        centres at integers."""
        uvs = self.uvs.astype(np.float64)
        return np.stack([uvs[:, 0] * size - 0.5, (1.0 - uvs[:, 1]) * size - 0.5], -1)


@dataclass
class TexelMap:
    """The texels covered by the atlas and the surface points under them.

    Attributes:
        size: S; rows, cols: (N,) int64 texel positions; triangles: (N,) int64 atlas triangle under
        each texel centre; barycentrics: (N, 3) float32 weights of its corners there.
    """

    size: int
    rows: np.ndarray
    cols: np.ndarray
    triangles: np.ndarray
    barycentrics: np.ndarray

    def interpolate(self, faces: np.ndarray, values: np.ndarray) -> np.ndarray:
        """(N, C) float32 per-texel barycentric interpolation of per-vertex values (V, C)."""
        corners = np.asarray(values, dtype=np.float32)[faces[self.triangles]]  # (N, 3, C)
        return np.einsum("nk,nkc->nc", self.barycentrics, corners)

    def covered(self) -> np.ndarray:
        """(S, S) bool: texels inside a chart."""
        mask = np.zeros((self.size, self.size), dtype=bool)
        mask[self.rows, self.cols] = True
        return mask

    def to_image(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Scatter per-texel values (N, ...) into an (S, S, ...) image, ``fill`` elsewhere."""
        image = np.full((self.size, self.size, *values.shape[1:]), fill, dtype=values.dtype)
        image[self.rows, self.cols] = values
        return image


@dataclass
class BakeView:
    """One colour image of the mesh.

    Attributes:
        vertices: (V, 3) the mesh's vertices in this camera's frame (OpenCV axes, metres),
            same order and faces as the atlas mesh.
        image: (H, W, 3) uint8 RGB; intrinsics: the camera, with its lens distortion.
        measured: the frame's recorded depth, or ``None`` to trust the mesh alone.
    """

    vertices: np.ndarray
    image: np.ndarray
    intrinsics: CameraIntrinsics
    measured: MeasuredDepth | None = None


@dataclass
class BakedTexture:
    """A baked texture.

    Attributes:
        image: (S, S, 3) uint8 RGB, filled everywhere; weight: (S, S) float32 summed view weights;
        seen: (S, S) bool texels some view saw; covered: (S, S) bool texels inside a chart.
    """

    image: np.ndarray
    weight: np.ndarray
    seen: np.ndarray
    covered: np.ndarray


# --------------------------------------------------------------------------------------------------
# Atlas and texels


def simplify_mesh(vertices: np.ndarray, faces: np.ndarray, max_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric decimation (open3d) to at most ``max_faces`` triangles; smaller meshes are kept.

    Returns:
        vertices (V', 3) float32 and faces (T', 3) int64.
    """
    import open3d as o3d

    if len(faces) <= max_faces:
        return np.asarray(vertices, dtype=np.float32), np.asarray(faces, dtype=np.int64)
    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(np.asarray(vertices, dtype=np.float64)),
        o3d.utility.Vector3iVector(np.asarray(faces, dtype=np.int32)),
    )
    simple = mesh.simplify_quadric_decimation(max_faces).remove_unreferenced_vertices()
    return np.asarray(simple.vertices, dtype=np.float32), np.asarray(simple.triangles, dtype=np.int64)


def uv_atlas(vertices: np.ndarray, faces: np.ndarray, size: int, padding: int = 2) -> UVMesh:
    """Charts and packing of a mesh into a size-S texture by xatlas (one chart-growing pass).

    Args:
        vertices: (V, 3); faces: (T, 3); padding: texels between charts.
    Returns:
        The mesh with split seam vertices and their UVs.
    """
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(np.asarray(vertices, dtype=np.float32), np.asarray(faces, dtype=np.uint32))
    charts = xatlas.ChartOptions()
    charts.max_iterations = 1
    packing = xatlas.PackOptions()
    packing.resolution, packing.padding, packing.bilinear = size, padding, True
    atlas.generate(charts, packing)
    mapping, indices, uvs = atlas[0]
    return UVMesh(
        vertices=np.asarray(vertices, dtype=np.float32)[mapping],
        faces=indices.astype(np.int64),
        uvs=uvs.astype(np.float32),
    )


def texel_map(mesh: UVMesh, size: int) -> TexelMap:
    """The atlas triangle and barycentrics under every texel centre: rays along z through the
    texel centres at the atlas laid flat in the image plane (z = 0)."""
    flat = np.concatenate([mesh.texel_coordinates(size), np.zeros((len(mesh.uvs), 1))], 1)
    cols, rows = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    origins = np.stack([cols, rows, np.full_like(cols, -1.0)], -1)
    directions = np.broadcast_to(np.array([0.0, 0.0, 1.0], dtype=np.float32), origins.shape)
    hits = raycast_rays(flat, mesh.faces, np.concatenate([origins, directions], -1))
    rows_hit, cols_hit = np.nonzero(hits.hit)
    return TexelMap(
        size=size,
        rows=rows_hit,
        cols=cols_hit,
        triangles=hits.triangle_ids[rows_hit, cols_hit],
        barycentrics=hits.barycentrics[rows_hit, cols_hit],
    )


# --------------------------------------------------------------------------------------------------
# Cameras, visibility, sampling


@lru_cache(maxsize=4)
def camera_ray_bundle(intrinsics: CameraIntrinsics) -> np.ndarray:
    """Cached (H, W, 6) float32 [origin 0, direction] camera-frame rays through the distorted
    lens's pixel centres (directions with z = 1, NaN outside the valid field of view)."""
    rays = pixel_rays(intrinsics)
    bundle = np.concatenate([np.zeros_like(rays), rays], -1)
    bundle.flags.writeable = False
    return bundle


def camera_depth(vertices: np.ndarray, faces: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """(H, W) float32 depth image (camera z, 0 = nothing) of a mesh given in the camera's frame."""
    return raycast_rays(vertices, faces, camera_ray_bundle(intrinsics)).depth


def edge_distance(depth: np.ndarray, jump: float) -> np.ndarray:
    """(H, W) float32 pixels from each pixel to the nearest occlusion edge of a depth image: a
    background pixel, or a pixel whose right or lower neighbour differs by more than ``jump``."""
    edges = depth <= 0
    step_x = np.abs(np.diff(depth, axis=1)) > jump
    step_y = np.abs(np.diff(depth, axis=0)) > jump
    edges[:, :-1] |= step_x
    edges[:, 1:] |= step_x
    edges[:-1] |= step_y
    edges[1:] |= step_y
    return ndimage.distance_transform_edt(~edges).astype(np.float32)


def bilinear(image: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Bilinear samples of an image at continuous pixel coordinates (centres at integers).

    Args:
        image: (H, W, C) or (H, W); pixels: (N, 2) (u, v), clamped to the image.
    Returns:
        (N, C) or (N,) float32.
    """
    height, width = image.shape[:2]
    u = np.clip(pixels[:, 0], 0.0, width - 1.0)
    v = np.clip(pixels[:, 1], 0.0, height - 1.0)
    u0 = np.minimum(np.floor(u).astype(np.int64), width - 2) if width > 1 else np.zeros(len(u), np.int64)
    v0 = np.minimum(np.floor(v).astype(np.int64), height - 2) if height > 1 else np.zeros(len(v), np.int64)
    fu, fv = (u - u0).astype(np.float32), (v - v0).astype(np.float32)
    u1, v1 = np.minimum(u0 + 1, width - 1), np.minimum(v0 + 1, height - 1)
    if image.ndim == 3:
        fu, fv = fu[:, None], fv[:, None]
    img = image.astype(np.float32, copy=False)
    top = img[v0, u0] * (1 - fu) + img[v0, u1] * fu
    bottom = img[v1, u0] * (1 - fu) + img[v1, u1] * fu
    return top * (1 - fv) + bottom * fv


def in_image(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N,) bool: finite pixel coordinates (N, 2) within the image's pixel centres."""
    u, v = pixels[:, 0], pixels[:, 1]
    with np.errstate(invalid="ignore"):
        return np.isfinite(u) & np.isfinite(v) & (u >= 0) & (u <= width - 1) & (v >= 0) & (v <= height - 1)


def nearest_pixels(pixels: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which pixels (N, 2) lie in an (H, W) image, and their nearest integer columns and rows
    (N,) int64 (0 for those outside, so that indexing stays valid)."""
    height, width = shape
    inside = in_image(pixels, width, height)
    u = np.rint(np.where(inside, pixels[:, 0], 0)).astype(np.int64)
    v = np.rint(np.where(inside, pixels[:, 1], 0)).astype(np.int64)
    return inside, u, v


@dataclass
class DepthMap:
    """A camera's ray-cast depth image of a surface and its occlusion edges.

    Attributes:
        depth: (H, W) float32 camera z, 0 = nothing; edge_distance: (H, W) float32 pixels to the
            nearest occlusion edge (:func:`edge_distance`).
    """

    depth: np.ndarray
    edge_distance: np.ndarray

    @classmethod
    def of_mesh(
        cls, vertices: np.ndarray, faces: np.ndarray, intrinsics: CameraIntrinsics, edge_jump: float
    ) -> DepthMap:
        """Ray cast a mesh given in the camera's frame (vertices (V, 3), faces (T, 3))."""
        depth = camera_depth(vertices, faces, intrinsics)
        return cls(depth, edge_distance(depth, edge_jump))


@dataclass
class MeasuredDepth:
    """What the depth sensor measured in one frame, to check surface points of a view against.

    Attributes:
        depth: (H, W) float32 metres in depth-camera pixels, 0 = no measurement.
        intrinsics: the depth camera; from_view: (4, 4) rigid transform from the view's camera
            frame to the depth camera's (the inverse of ``depth_to_color`` for a colour view).
    """

    depth: np.ndarray
    intrinsics: CameraIntrinsics
    from_view: np.ndarray

    def contradicts(self, points: np.ndarray, tolerance: float) -> np.ndarray:
        """(N,) bool: the sensor measured a surface more than ``tolerance`` (m) in front of or behind
        points (N, 3) given in the view's camera frame, at their nearest depth pixel. A pixel
        without a measurement (dropouts: dark hair, edges) contradicts nothing."""
        pixels, z = project(transform_points(self.from_view, points), self.intrinsics)
        inside, u, v = nearest_pixels(pixels, self.depth.shape)
        measured = np.where(inside, self.depth[v, u], 0.0)
        return (measured > 0) & (np.abs(z - measured) > tolerance)


@dataclass
class ViewSamples:
    """What one view says about some surface points.

    Attributes:
        pixels: (N, 2) float64 projections (u, v), NaN where not projectable.
        depth: (N,) float64 camera z of the points.
        visible: (N,) bool in the image, in front, not occluded.
        cosine: (N,) float32 cos of the angle between the normal and the direction to the camera.
        edge: (N,) float32 in [0, 1], distance to the nearest occlusion edge / margin, clipped.
    """

    pixels: np.ndarray
    depth: np.ndarray
    visible: np.ndarray
    cosine: np.ndarray
    edge: np.ndarray

    def weights(self, power: float) -> np.ndarray:
        """(N,) float32 blending weights: visible · max(cos, 0)^power · edge."""
        cosine = np.clip(self.cosine, 0.0, 1.0)
        return np.where(self.visible, cosine**power * self.edge, 0.0).astype(np.float32)


def view_samples(
    points: np.ndarray,
    normals: np.ndarray,
    intrinsics: CameraIntrinsics,
    depth_map: DepthMap,
    depth_tolerance: float,
    edge_margin: float,
    measured: MeasuredDepth | None = None,
    measured_tolerance: float = MEASURED_TOLERANCE,
) -> ViewSamples:
    """Project surface points into a view and test them against its ray-cast depth image and,
    when given, the frame's recorded depth.

    Args:
        points, normals: (N, 3) surface points and unit normals in the camera frame.
        depth_map: the camera's depth image of the same surface.
        measured: the frame's recorded depth; points it contradicts are not visible.
    """
    pixels, z = project(points, intrinsics)
    inside, u, v = nearest_pixels(pixels, depth_map.depth.shape)
    surface = depth_map.depth[v, u]
    visible = inside & (surface > 0) & (np.abs(z - surface) <= depth_tolerance)
    if measured is not None:
        visible &= ~measured.contradicts(points, measured_tolerance)
    distance = np.linalg.norm(points, axis=1)
    cosine = -(normals * points).sum(1) / np.maximum(distance, 1e-9)
    edge = np.clip(depth_map.edge_distance[v, u] / max(edge_margin, 1e-6), 0.0, 1.0)
    return ViewSamples(pixels, z, visible, cosine.astype(np.float32), edge.astype(np.float32))


# --------------------------------------------------------------------------------------------------
# Baking


def bake_texture(
    mesh: UVMesh, views: Iterable[BakeView], options: TextureOptions = TextureOptions()
) -> BakedTexture:
    """Colour a UV mesh from posed colour views (see the module docstring, steps 2–4).

    Args:
        mesh: the atlas mesh (its vertices give the "canonical" points for filling unseen texels).
        views: the mesh seen by calibrated cameras, one at a time.
    """
    texels = texel_map(mesh, options.size)
    colour_sum = np.zeros((len(texels.rows), 3), dtype=np.float64)
    weight_sum = np.zeros(len(texels.rows), dtype=np.float64)
    for view in views:
        colours, weights = view_colours(mesh, texels, view, options)
        colour_sum += weights[:, None] * colours
        weight_sum += weights
    seen = weight_sum > 0
    colours = colour_sum / np.maximum(weight_sum, 1e-12)[:, None]
    colours = fill_unseen(colours, seen, texels.interpolate(mesh.faces, mesh.vertices))
    covered = texels.covered()
    image = dilate_gutters(texels.to_image(np.rint(colours).clip(0, 255).astype(np.uint8)), covered)
    return BakedTexture(
        image=image,
        weight=texels.to_image(weight_sum.astype(np.float32)),
        seen=texels.to_image(seen),
        covered=covered,
    )


def view_colours(
    mesh: UVMesh, texels: TexelMap, view: BakeView, options: TextureOptions
) -> tuple[np.ndarray, np.ndarray]:
    """Colours (N, 3) float32 and weights (N,) float32 of every texel in one view."""
    points = texels.interpolate(mesh.faces, view.vertices)
    normals = texels.interpolate(mesh.faces, vertex_normals(view.vertices, mesh.faces))
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    depth_map = DepthMap.of_mesh(view.vertices, mesh.faces, view.intrinsics, options.edge_jump)
    samples = view_samples(
        points,
        normals,
        view.intrinsics,
        depth_map,
        options.depth_tolerance,
        options.edge_margin,
        view.measured,
        options.measured_tolerance,
    )
    weights = samples.weights(options.power)
    colours = np.zeros((len(points), 3), dtype=np.float32)
    used = weights > 0
    colours[used] = bilinear(view.image, samples.pixels[used])
    return colours, weights


def fill_unseen(colours: np.ndarray, seen: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Give each unseen texel the colour of the nearest seen texel on the surface.

    Args:
        colours: (N, 3); seen: (N,) bool; points: (N, 3) the texels' surface points.
    Returns:
        (N, 3) colours; all :data:`~rgbd2avatar.render.DEFAULT_ALBEDO` grey when nothing was seen.
    """
    filled = np.array(colours, dtype=np.float64)
    if not seen.any():
        filled[:] = 255.0 * np.asarray(DEFAULT_ALBEDO)
        return filled
    if seen.all():
        return filled
    _, nearest = cKDTree(points[seen]).query(points[~seen])
    filled[~seen] = filled[seen][nearest]
    return filled


def dilate_gutters(image: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """(S, S, C) the image with every texel outside the charts set to the nearest chart texel."""
    if not covered.any():
        return image
    _, (rows, cols) = ndimage.distance_transform_edt(~covered, return_indices=True)
    return image[rows, cols]


def sample_texture(texture: np.ndarray, uvs: np.ndarray) -> np.ndarray:
    """(N, 3) float32 bilinear texture colours (0–255) at UV coordinates (N, 2)."""
    size = texture.shape[0]
    pixels = np.stack([uvs[:, 0] * size - 0.5, (1.0 - uvs[:, 1]) * size - 0.5], -1)
    return bilinear(texture, pixels)


# --------------------------------------------------------------------------------------------------
# Files


def obj_text(mesh: UVMesh, material_file: str) -> str:
    """Wavefront OBJ text of a UV mesh using material :data:`MATERIAL` of ``material_file``."""
    text = io.StringIO()
    text.write(f"# rgbd2avatar textured avatar\nmtllib {material_file}\nusemtl {MATERIAL}\n")
    np.savetxt(text, mesh.vertices, fmt="v %.6f %.6f %.6f")
    np.savetxt(text, mesh.uvs, fmt="vt %.6f %.6f")
    corners = np.repeat(mesh.faces + 1, 2, axis=1)  # (T, 6) v/vt pairs, 1-based
    np.savetxt(text, corners, fmt="f %d/%d %d/%d %d/%d")
    return text.getvalue()


def mtl_text(texture_file: str) -> str:
    """Material file text: white diffuse modulated by ``texture_file``."""
    return f"newmtl {MATERIAL}\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\nmap_Kd {texture_file}\n"


def glb_bytes(mesh: UVMesh, texture: np.ndarray) -> bytes:
    """A binary glTF of the mesh with the texture as its base colour."""
    import trimesh
    from PIL import Image

    visual = trimesh.visual.TextureVisuals(uv=mesh.uvs, image=Image.fromarray(texture))
    scene_mesh = trimesh.Trimesh(mesh.vertices, mesh.faces, visual=visual, process=False)
    return scene_mesh.export(file_type="glb")


def write_textured_mesh(folder: Path, mesh: UVMesh, baked: BakedTexture) -> None:
    """Write :data:`TEXTURE_FILES` into ``folder``, each atomically."""
    write_image(folder / "texture.png", baked.image, png_compress_level=6)
    write_bytes(folder / "avatar.mtl", mtl_text("texture.png").encode())
    write_bytes(folder / "avatar.obj", obj_text(mesh, "avatar.mtl").encode())
    write_bytes(folder / "avatar.glb", glb_bytes(mesh, baked.image))
    save_npz(folder / "atlas.npz", vertices=mesh.vertices, faces=mesh.faces, uvs=mesh.uvs, seen=baked.seen)


def load_textured_mesh(folder: Path) -> tuple[UVMesh, np.ndarray, np.ndarray]:
    """The atlas mesh, the texture (S, S, 3) uint8 and the seen mask (S, S) of a texture folder.

    Raises:
        UserError: the folder lacks the texture stage's files.
    """
    atlas, image = folder / "atlas.npz", folder / "texture.png"
    if not atlas.is_file() or not image.is_file():
        raise UserError(f"{folder} has no texture; run `rgbd2avatar texture SUBJECT` first.")
    with np.load(atlas, allow_pickle=False) as data:
        mesh = UVMesh(data["vertices"], data["faces"], data["uvs"])
        seen = data["seen"]
    return mesh, read_image(image), seen


# --------------------------------------------------------------------------------------------------
# The avatar


class MeshPoser:
    """Poses a fixed canonical mesh with an avatar's learned skinning (weights evaluated once).

    Args:
        avatar: the fitted avatar; vertices: (V, 3) canonical vertices.
    """

    def __init__(self, avatar: Avatar, vertices: np.ndarray) -> None:
        self.avatar = avatar
        device = avatar.bounds.device
        self.vertices = torch.from_numpy(np.ascontiguousarray(vertices, dtype=np.float32)).to(device)
        with torch.no_grad():
            self.weights = torch.cat(
                [avatar.skinning(chunk[None])[0] for chunk in self.vertices.split(MESH_BATCH)]
            )

    def __call__(self, poses: torch.Tensor, trans: torch.Tensor) -> np.ndarray:
        """(B, V, 3) float32 posed vertices for poses (B, 72) and translations (B, 3)."""
        device = self.vertices.device
        with torch.no_grad():
            tfs = self.avatar.transforms(poses.to(device).float(), trans.to(device).float())
            return lbs.skin_points(self.vertices, self.weights, tfs).cpu().numpy()


def spread(count: int, limit: int) -> np.ndarray:
    """At most ``limit`` of ``count`` positions, evenly spread, first and last included."""
    if count <= limit:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(np.int64))


def frame_views(
    stored: StoredAvatar, reader: SequenceReader, poser: MeshPoser, rows: np.ndarray
) -> Iterator[BakeView]:
    """The posed mesh in each chosen training frame's colour camera, with that frame's image.

    Args:
        rows: positions in the avatar's training frames (``stored.frames``); frames without a
            colour image are skipped.
    """
    calibration = reader.calibration
    if calibration.color is None:
        raise UserError(f"{reader.root} has no colour camera; texturing needs colour frames.")
    for row in rows:
        frame = reader.frame(int(stored.frames[row]))
        if frame.color is None:
            continue
        posed = poser(stored.poses[row : row + 1], stored.trans[row : row + 1])[0]
        in_color = transform_points(calibration.depth_to_color, posed)
        yield BakeView(in_color, frame.color, calibration.color, measured_depth(frame, calibration))


def measured_depth(frame: RGBDFrame, calibration: Calibration) -> MeasuredDepth:
    """A frame's recorded depth, to check points given in its colour camera's frame against."""
    from_color = invert_rigid(np.asarray(calibration.depth_to_color, dtype=np.float64))
    return MeasuredDepth(frame.depth_m, calibration.depth, from_color)


def atlas_mesh(avatar: Avatar, options: TextureOptions) -> UVMesh:
    """The avatar's canonical mesh (canonical pose condition), simplified, with its UV atlas."""
    canonical = canonical_mesh(avatar, resolution=options.resolution)
    vertices, faces = simplify_mesh(canonical.vertices, canonical.faces, options.max_faces)
    return uv_atlas(vertices, faces, options.size, options.padding)


def texture_avatar(stored: StoredAvatar, recording: Path, out: Path, options: TextureOptions) -> dict:
    """Bake the avatar's texture from the recording's colour frames into ``out`` (module docstring).

    Returns:
        The summary written to ``out/texture.json``.
    """
    reader = SequenceReader(recording)
    started = time.perf_counter()
    mesh = atlas_mesh(stored.avatar, options)
    atlas_seconds = time.perf_counter() - started
    poser = MeshPoser(stored.avatar, mesh.vertices)
    rows = spread(len(stored.frames), options.max_frames)
    views = progress(frame_views(stored, reader, poser, rows), total=len(rows), description="texture")
    baked = bake_texture(mesh, views, options)
    write_textured_mesh(out, mesh, baked)
    summary = {
        "options": options.to_dict(),
        "vertices": len(mesh.vertices),
        "faces": len(mesh.faces),
        "frames": [int(stored.frames[row]) for row in rows],
        "covered_share": float(baked.covered.mean()),
        "seen_share": float(baked.seen.sum() / max(baked.covered.sum(), 1)),
        "atlas_seconds": atlas_seconds,
        "seconds": time.perf_counter() - started,
    }
    write_json(out / "texture.json", summary)
    return summary
