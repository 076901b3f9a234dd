"""A synthetic subject: the body model dressed in procedural clothes, with exact ground truth.

No real capture of a person can be downloaded, so the tool makes its own subject. The clothed
surface is the body mesh pushed out by a clothing displacement field defined in the rest (T)
pose, so it shares the body's faces and skinning weights and poses like the body:

    x(pose) = LBS(v_rest + P(pose) + o ⊙ n + f + Σ_k c_k(pose) B_k,  W,  A(pose))

- ``o`` (V,): the garments' rest offsets along the smoothed rest normals ``n`` (V, 3): a loose
  top (torso and upper arms, looser at the hem), shorts or a flared skirt-like bottom, hair
  volume and thin shoes. Each garment is a *coverage* (linear ramps of body-relative
  coordinates: torso height, position along the arm and the leg, elevation on the head) times a
  thickness profile. The offsets are capped by the free space in front of each vertex (rays
  cast in cones around the raw and the smoothed normal), spread as a Lipschitz envelope so a
  tight crease also limits its neighbours (armpits, crotch and buttocks do not interpenetrate),
  then smoothed by implicit heat diffusion over the mesh (cotangent Laplacian) with the bare
  skin held at exactly zero. ``f`` (V, 3) fairs the feet inside the shoes, fusing the toes.
- ``B_k`` (K, V, 3): pose-dependent cloth correctives, like SMPL's pose blend shapes: folds on
  the top whose amplitude and phase follow the spine bend and the arm raise, ripples on the
  sleeves, the top's hem lifting with the arms, bulges with wrinkles at covered elbows and
  knees, folds at the front of the hips with hip flexion, and the top pressed thinner between
  a lowered arm and the torso. Their coefficients ``c_k(pose)`` are smooth functions of the
  joint rotation matrices (:func:`cloth_coefficients`).
- ``P(pose)``: the body's own pose correctives (SMPL has them, anny has none).

Appearance is a procedural function of the rest-pose clothed surface position, crisp at any
resolution: stripes, gingham checks or colour blocks on the top; denim, polka dots or side
stripes on the bottom; hair with strands; skin with eyes, brows and lips; dark shoes with light
soles. A renderer maps a ray hit (triangle, barycentrics) to a rest point and a garment label,
then to an albedo (:meth:`Subject.albedo_at`) and a near-infrared reflectivity
(:meth:`Subject.reflectivity_at`).

Garment labels: 0 skin, 1 top, 2 bottom, 3 hair, 4 shoes (:data:`GARMENTS`).
Shapes: V vertices, T triangles, F frames, N points, K pose-dependent fields (:data:`FIELDS`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import open3d as o3d
import torch
from scipy import sparse
from scipy.sparse.csgraph import dijkstra
from scipy.sparse.linalg import splu

from rgbd2avatar.body import BodyModel, lbs, load_body_model
from rgbd2avatar.body.keypoints import landmark_vertices
from rgbd2avatar.body.skeleton import JOINT_INDEX, NUM_JOINTS
from rgbd2avatar.errors import UserError

GARMENTS = ("skin", "top", "bottom", "hair", "shoes")
SKIN, TOP, BOTTOM, HAIR, SHOES = range(len(GARMENTS))

Color = tuple[float, float, float]

# Layout of the garments on the rest body (metres unless stated).
EDGE = 0.025  # width of the coverage ramps at garment borders (neckline, waistband)
HEM_EDGE = 0.012  # ... and at hems (top, sleeves, bottom), which end in a step
HEAD_START = 0.99  # torso height above which nothing is covered by the top (the head)
NECK_FORWARD = 0.012  # the neck opening's centre lies this far in front of the neck joint
HEAD_CENTRE_OFFSET = (0.0, 0.065, -0.01)  # skull centre relative to the head joint
HAIRLINE_FRONT, HAIRLINE_SIDE = math.radians(22.0), math.radians(6.0)  # hairline elevations
HAIR_RAMP = math.radians(25.0)  # hair reaches full volume this far above the hairline
HAIR_EDGE = math.radians(12.0)
BUN_ELEVATION = math.radians(25.0)  # the bun sits at the back of the head, this high above its centre
BUN_SPREAD = math.radians(22.0)
LIMBS = {"arm": ("shoulder", "wrist", (0.0, 1.0, 0.0)), "leg": ("hip", "knee", (1.0, 0.0, 0.0))}
"""Limbs: first and last joint (without side) and the left limb's reference direction (angle +π/2)."""
ARM_BLEND = (-0.05, 0.15)  # arm positions where the top blends from torso to sleeve
ARM_RADIUS = (0.09, 0.13)  # ... and distances from the arm's axis where the arm ends
TOP_OVER_BOTTOM = 0.006  # the top lies at least this far outside the bottom where both cover
CHEST_HEIGHT = 0.75  # torso height where the top is at its chest looseness
CLEARANCE_SHARE = 0.4  # offsets take at most this share of the free space in front of a vertex
CAP_SLOPE = 0.8  # the cap on the offsets rises at most this much per metre away from a tight spot
CONE_ANGLE = math.radians(40.0)  # clearance rays: the normal and 6 rays tilted by this angle
SMOOTHING = 0.008  # diffusion length of the offsets
NORMAL_SMOOTHING = 0.02  # diffusion length of the normals the offsets follow
SHOE_FAIRING = 0.02  # smoothing length that fuses the toes inside the shoes

# Pose-dependent cloth fields (amplitudes in metres, wavelengths in metres).
FIELDS = (
    "fold_sin", "fold_cos", "sleeve_left", "sleeve_right", "hem_lift",
    "elbow_left", "elbow_right", "knee_left", "knee_right", "hip_left", "hip_right",
    "squeeze_left", "squeeze_right",
)  # fmt: skip
FOLD_REST, FOLD_BEND, FOLD_RAISE = 0.003, 0.012, 0.005  # fold amplitude: rest, spine bend, arm raise
FOLD_PHASE_BEND, FOLD_PHASE_SIDE, FOLD_PHASE_RAISE = 4.0, 3.0, 1.5  # fold phase (rad) per unit of feature
FOLD_WAVELENGTH, FOLD_TWIST = 0.07, 1.2
FOLD_REFERENCE = 0.025  # fold amplitudes scale down where the top is closer than this to the body
SLEEVE_FOLD, SLEEVE_WAVELENGTH = 0.007, 0.045
HEM_LIFT, HEM_LIFT_SPAN = 0.035, 0.4  # hem lift (m) with both arms up; torso height it fades over
HEM_LIFT_LOOSENESS = 0.045  # ... for a top this loose at the hem (the lift scales with looseness)
JOINT_BULGE, JOINT_WRINKLE, JOINT_SPREAD, JOINT_WAVELENGTH = 0.012, 0.5, 0.05, 0.035
HIP_FOLD, HIP_FOLD_WAVELENGTH, HIP_FOLD_SPREAD = 0.02, 0.03, 0.06
SQUEEZE = 0.6  # share of the top's offset pressed out between a lowered arm and the torso side

# Appearance.
TORSO_RADIUS, ARM_RADIUS_MEAN, LEG_RADIUS = 0.15, 0.05, 0.08  # angles around the body / limbs → metres
SOLE_HEIGHT = 0.018
HAIR_STRANDS = 90
NIR_REFLECTANCE = (0.6, 0.55, 0.5, 0.3, 0.4)  # per garment, scaled by the albedo's luminance


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Top:
    """A top over the torso and the upper arms.

    Attributes:
        hem: torso height of the hem: 0 at the hip joints, 1 at the neck joint.
        sleeve: arm position of the sleeve ends: 0 at the shoulder joint, 1 at the wrist.
        neckline: radius (m) of the neck opening.
        looseness: offset (m) from the body at the chest and at the hem.
        pattern: ``"stripes"``, ``"checks"`` or ``"colorblock"``.
        colors: main and second colour, RGB in [0, 1].
        period: pattern period (m); phase: pattern phase in periods.
    """

    hem: float = 0.03
    sleeve: float = 0.22
    neckline: float = 0.1
    looseness: tuple[float, float] = (0.027, 0.045)
    pattern: str = "stripes"
    colors: tuple[Color, Color] = ((0.93, 0.92, 0.88), (0.1, 0.16, 0.42))
    period: float = 0.05
    phase: float = 0.0


@dataclass(frozen=True)
class Bottom:
    """Shorts; with a strong flare, a skirt-like garment (each leg is wrapped on its own).

    Attributes:
        waist: torso height of the waistband.
        length: leg position of the hem: 0 at the hip joint, 1 at the knee joint.
        looseness: offset (m) from the body at the waist and at the hem.
        pattern: ``"denim"``, ``"dots"`` or ``"side_stripes"``.
        colors: main and second colour; period: pattern period (m); phase: in periods.
    """

    waist: float = 0.22
    length: float = 0.5
    looseness: tuple[float, float] = (0.03, 0.045)
    pattern: str = "denim"
    colors: tuple[Color, Color] = ((0.22, 0.34, 0.56), (0.85, 0.78, 0.55))
    period: float = 0.06
    phase: float = 0.0


@dataclass(frozen=True)
class Hair:
    """Hair as a volume on the skull.

    Attributes:
        volume: thickness (m) on the crown and the back of the head.
        nape: elevation (degrees) of the hairline at the back, seen from the skull's centre;
            lower is longer hair.
        bun: height (m) of a bun at the back of the head (0: none).
        color: RGB.
    """

    volume: float = 0.03
    nape: float = -45.0
    bun: float = 0.0
    color: Color = (0.25, 0.16, 0.09)


@dataclass(frozen=True)
class Shoes:
    """Shoes: a thin layer over the feet up to ``height`` (m) above the floor."""

    height: float = 0.06
    thickness: float = 0.008
    color: Color = (0.16, 0.16, 0.18)
    sole_color: Color = (0.88, 0.87, 0.84)


@dataclass(frozen=True)
class SubjectPreset:
    """A subject's body shape and clothing style.

    Attributes:
        name: preset name.
        phenotypes: body shape parameters by name (e.g. anny's ``weight``); parameters the body
            model has but this does not name keep the model's default.
        skin_color: RGB; top, bottom, hair, shoes: the garments worn (None: not worn).
    """

    name: str
    phenotypes: dict[str, float] = field(default_factory=dict)
    skin_color: Color = (0.87, 0.67, 0.54)
    top: Top | None = field(default_factory=Top)
    bottom: Bottom | None = field(default_factory=Bottom)
    hair: Hair | None = field(default_factory=Hair)
    shoes: Shoes | None = field(default_factory=Shoes)


PRESETS: dict[str, SubjectPreset] = {
    "casual": SubjectPreset(
        name="casual",
        phenotypes={"gender": 0.65},
        top=Top(),
        bottom=Bottom(),
        hair=Hair(nape=-55.0),
        shoes=Shoes(),
    ),
    "loose": SubjectPreset(
        name="loose",
        phenotypes={"gender": 0.15, "weight": 0.55, "age": 0.45},
        skin_color=(0.62, 0.43, 0.31),
        top=Top(
            hem=-0.04,
            sleeve=0.9,
            neckline=0.105,
            looseness=(0.03, 0.05),
            pattern="checks",
            colors=((0.93, 0.9, 0.8), (0.72, 0.12, 0.14)),
            period=0.04,
        ),
        bottom=Bottom(
            waist=0.25,
            length=0.85,
            looseness=(0.03, 0.06),
            pattern="dots",
            colors=((0.1, 0.3, 0.32), (0.95, 0.92, 0.82)),
            period=0.05,
        ),
        hair=Hair(volume=0.035, nape=-70.0, bun=0.035, color=(0.07, 0.05, 0.04)),
        shoes=Shoes(height=0.05, color=(0.36, 0.2, 0.1), sole_color=(0.3, 0.22, 0.16)),
    ),
    "athletic": SubjectPreset(
        name="athletic",
        phenotypes={"gender": 0.95, "age": 0.35, "muscle": 0.85, "weight": 0.35, "height": 0.7},
        skin_color=(0.95, 0.78, 0.66),
        top=Top(
            hem=0.12,
            sleeve=0.14,
            neckline=0.09,
            looseness=(0.022, 0.028),
            pattern="colorblock",
            colors=((0.85, 0.3, 0.08), (0.1, 0.1, 0.12)),
        ),
        bottom=Bottom(
            waist=0.2,
            length=1.15,
            looseness=(0.03, 0.04),
            pattern="side_stripes",
            colors=((0.08, 0.08, 0.1), (0.95, 0.95, 0.95)),
        ),
        hair=Hair(volume=0.018, nape=-35.0, color=(0.78, 0.62, 0.35)),
        shoes=Shoes(height=0.07, color=(0.12, 0.2, 0.55), sole_color=(0.95, 0.95, 0.95)),
    ),
}
"""Built-in presets: ``casual`` (striped t-shirt, denim shorts), ``loose`` (long checked tunic,
flared dotted skirt-like bottom, long dark hair), ``athletic`` (tight colour-block top, long
shorts with side stripes, short fair hair, tall and muscular)."""


def vary(preset: SubjectPreset, seed: int) -> SubjectPreset:
    """The preset with its colours, pattern phases and periods varied deterministically by ``seed``.

    Each colour is scaled per channel by a factor in [0.9, 1.1]; pattern phases are uniform in
    [0, 1) periods and periods scaled by a factor in [0.85, 1.15]. Geometry is unchanged.
    """
    rng = np.random.default_rng(seed)

    def tint(color: Color) -> Color:
        return tuple(float(c) for c in np.clip(np.asarray(color) * rng.uniform(0.9, 1.1, 3), 0.0, 1.0))

    def restyle(garment):
        if garment is None:
            return None
        return replace(
            garment,
            colors=(tint(garment.colors[0]), tint(garment.colors[1])),
            phase=float(rng.uniform()),
            period=garment.period * float(rng.uniform(0.85, 1.15)),
        )

    return replace(
        preset,
        skin_color=tint(preset.skin_color),
        top=restyle(preset.top),
        bottom=restyle(preset.bottom),
        hair=None if preset.hair is None else replace(preset.hair, color=tint(preset.hair.color)),
        shoes=None if preset.shoes is None else replace(preset.shoes, color=tint(preset.shoes.color)),
    )


def preset_shape(body: BodyModel, preset: SubjectPreset) -> torch.Tensor:
    """(S,) shape parameters: the preset's phenotypes where the body model has them, else its default."""
    shape = body.default_shape.clone()
    for i, name in enumerate(body.shape_names):
        if name in preset.phenotypes:
            shape[i] = preset.phenotypes[name]
    return shape


# --------------------------------------------------------------------------------------------
# Mesh operators
# --------------------------------------------------------------------------------------------


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit area-weighted vertex normals of (V, 3) vertices and (T, 3) faces."""
    corners = verts[faces]
    face_n = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])  # (T, 3), 2·area
    normals = np.zeros_like(verts)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    return normals / np.linalg.norm(normals, axis=1, keepdims=True).clip(1e-12)


def cotangent_laplacian(verts: np.ndarray, faces: np.ndarray) -> tuple[sparse.csr_matrix, np.ndarray]:
    """The cotangent Laplacian (positive semi-definite) and lumped vertex areas.

    Args:
        verts: (V, 3); faces: (T, 3).
    Returns:
        L (V, V) sparse with L·f = Σ_j w_ij (f_i − f_j), w_ij = (cot α_ij + cot β_ij) / 2, and
        mass (V,) a third of the incident triangles' areas.
    """
    n = len(verts)
    corners = verts[faces]  # (T, 3, 3)
    rows, cols, vals = [], [], []
    for a in range(3):
        b, c = (a + 1) % 3, (a + 2) % 3
        u, v = corners[:, b] - corners[:, a], corners[:, c] - corners[:, a]
        cot = (u * v).sum(1) / np.linalg.norm(np.cross(u, v), axis=1).clip(1e-12)
        rows += [faces[:, b], faces[:, c]]
        cols += [faces[:, c], faces[:, b]]
        vals += [cot / 2, cot / 2]
    weights = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), (n, n))
    laplacian = sparse.diags(np.asarray(weights.sum(1)).ravel()) - weights
    area = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1) / 2
    mass = np.bincount(faces.ravel(), np.repeat(area, 3), minlength=n) / 3
    return laplacian.tocsr(), mass


def heat_solve(
    rhs: np.ndarray,
    laplacian: sparse.csr_matrix,
    mass: np.ndarray,
    length: float,
    fixed: np.ndarray | None = None,
) -> np.ndarray:
    """Solve (M + t L) f = rhs, t = length², on the free vertices, with f = 0 on the fixed ones.

    Args:
        rhs: (V,) or (V, C) right-hand side.
        laplacian, mass: from :func:`cotangent_laplacian`; length: diffusion length (m).
        fixed: optional (V,) bool: vertices held at zero (Dirichlet boundary).
    Returns:
        f, the shape of ``rhs``.
    """
    system = (sparse.diags(mass) + length**2 * laplacian).tocsc()
    if fixed is None:
        return splu(system).solve(rhs)
    free = ~fixed
    result = np.zeros_like(rhs)
    if free.any():
        result[free] = splu(system[free][:, free].tocsc()).solve(rhs[free])
    return result


def diffuse(
    values: np.ndarray,
    laplacian: sparse.csr_matrix,
    mass: np.ndarray,
    length: float,
    fixed: np.ndarray | None = None,
) -> np.ndarray:
    """One implicit heat-diffusion step of (V,) or (V, C) values: (M + t L) f = M f₀ (:func:`heat_solve`)."""
    return heat_solve(mass.reshape(-1, *[1] * (values.ndim - 1)) * values, laplacian, mass, length, fixed)


def fairing(
    verts: np.ndarray, laplacian: sparse.csr_matrix, mass: np.ndarray, length: float, weight: np.ndarray
) -> np.ndarray:
    """Displacement (V, 3) towards the implicitly smoothed surface where ``weight`` (V,) > 0.

    The smoothed positions p' solve (M + t L) p' = M p on the weighted vertices with the others
    fixed, i.e. δ = p' − p solves (M + t L) δ = −t L p there; the result is weight · δ. Inside
    shoes this fuses the toes into one smooth shell.
    """
    delta = heat_solve(-(length**2) * (laplacian @ verts), laplacian, mass, length, fixed=weight <= 0)
    return weight[:, None] * delta


def cone_directions(normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seven unit directions around each normal: the normal and six tilted by :data:`CONE_ANGLE`.

    Args:
        normals: (V, 3) unit vectors.
    Returns:
        directions (7, V, 3) and reach (7,): the cosine of each direction's tilt.
    """
    helper = np.where(np.abs(normals[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    side = np.cross(normals, helper)
    side /= np.linalg.norm(side, axis=1, keepdims=True)
    other = np.cross(normals, side)
    angles = 2 * np.pi * np.arange(6) / 6
    tilt = np.cos(angles)[:, None, None] * side + np.sin(angles)[:, None, None] * other  # (6, V, 3)
    tilted = math.cos(CONE_ANGLE) * normals + math.sin(CONE_ANGLE) * tilt
    return np.concatenate([normals[None], tilted]), np.array([1.0] + [math.cos(CONE_ANGLE)] * 6)


def clearance(verts: np.ndarray, faces: np.ndarray, normal_fields: list[np.ndarray]) -> np.ndarray:
    """Free space in front of each vertex: the distance to the mesh along its normals.

    Rays leave each vertex in a cone around each given normal field (:func:`cone_directions`); a
    ray's hit distance counts times the cosine of its tilt (its reach along the normal). Giving
    both the raw and the smoothed normals catches narrow clefts whose smoothed normals point out
    of the cleft while the walls face each other.

    Args:
        verts: (V, 3); faces: (T, 3); normal_fields: (V, 3) unit outward normals, one or more.
    Returns:
        (V,) the smallest reach over all rays (m); ``inf`` where every ray escapes.
    """
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(verts.astype(np.float32)), o3d.core.Tensor(faces.astype(np.uint32)))
    start = 1e-3  # rays start this far out so they do not hit the vertex's own triangles
    free = np.full(len(verts), np.inf)
    for normals in normal_fields:
        directions, reach = cone_directions(normals)
        origins = np.broadcast_to(verts + start * normals, directions.shape)
        rays = np.concatenate([origins, directions], -1).reshape(-1, 6).astype(np.float32)
        hits = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy().reshape(len(reach), -1)
        free = np.minimum(free, ((hits + start) * reach[:, None]).min(0))
    return free


def lipschitz_envelope(values: np.ndarray, verts: np.ndarray, faces: np.ndarray, slope: float) -> np.ndarray:
    """The largest field ≤ ``values`` that rises at most ``slope`` per metre along mesh edges.

    f_i = min_j (values_j + slope · d_ij) with d the shortest path along edges: one Dijkstra
    search from a virtual source joined to every vertex j by an edge of length values_j / slope.
    A tight spot (a crease with little free space) so limits its whole neighbourhood.

    Args:
        values: (V,) non-negative finite values; verts: (V, 3); faces: (T, 3).
    Returns:
        (V,) envelope.
    """
    n = len(verts)
    edges = np.unique(
        np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1), axis=0
    )
    lengths = np.linalg.norm(verts[edges[:, 0]] - verts[edges[:, 1]], axis=1)
    tiny = 1e-12  # csgraph drops zero-length edges
    rows = np.concatenate([edges[:, 0], edges[:, 1], np.full(n, n)])
    cols = np.concatenate([edges[:, 1], edges[:, 0], np.arange(n)])
    weights = np.concatenate([lengths, lengths, values / slope]) + tiny
    graph = sparse.csr_matrix((weights, (rows, cols)), shape=(n + 1, n + 1))
    return np.minimum(slope * dijkstra(graph, indices=n)[:n], values)


# --------------------------------------------------------------------------------------------
# Body-relative coordinates
# --------------------------------------------------------------------------------------------


def ramp(x: np.ndarray, edge: float | np.ndarray, width: float) -> np.ndarray:
    """Linear 0 → 1 ramp centred on ``edge``, ``width`` wide."""
    return np.clip((x - edge) / width + 0.5, 0.0, 1.0)


def smoothstep(x: np.ndarray, start: float | np.ndarray, stop: float | np.ndarray) -> np.ndarray:
    """Cubic 0 → 1 step from ``start`` to ``stop``."""
    t = np.clip((x - start) / (stop - start), 0.0, 1.0)
    return t * t * (3 - 2 * t)


@dataclass
class BodyFrame:
    """Where the parts of one rest body are: the reference that garments and patterns follow.

    Attributes:
        joints: (24, 3) rest joints; floor: lowest rest height; head_centre: (3,) the skull's
        centre; nose: (3,); eyes: (2, 3) left, right.
    """

    joints: np.ndarray
    floor: float
    head_centre: np.ndarray
    nose: np.ndarray
    eyes: np.ndarray

    @property
    def hip_height(self) -> float:
        return float(self.joints[[JOINT_INDEX["left_hip"], JOINT_INDEX["right_hip"]], 1].mean())

    @property
    def torso_length(self) -> float:
        return float(self.joints[JOINT_INDEX["neck"], 1]) - self.hip_height

    def torso(self, points: np.ndarray) -> np.ndarray:
        """(N,) torso height of (N, 3) points: 0 at the hip joints, 1 at the neck joint."""
        return (points[:, 1] - self.hip_height) / self.torso_length

    def left_share(self, points: np.ndarray) -> np.ndarray:
        """(N,) how much a point belongs to the subject's left (+x) side: 0 → 1 across ±2 cm."""
        return smoothstep(points[:, 0], -0.02, 0.02)

    def limb(self, points: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position along a limb (:data:`LIMBS`), angle around it and distance from its axis.

        Positions blend the left and right limb by :meth:`left_share`; angles and distances are
        the nearer side's.

        Args:
            points: (N, 3); name: ``"arm"`` or ``"leg"``.
        Returns:
            position (N,): 0 at the limb's first joint, 1 at its last; angle (N,) in (−π, π]:
            0 towards the front (+z), +π/2 towards the limb's reference direction; radius (N,) (m).
        """
        start, stop, reference = LIMBS[name]
        per_side = []
        for side, mirror in (("left", 1.0), ("right", -1.0)):
            a, b = self.joints[JOINT_INDEX[f"{side}_{start}"]], self.joints[JOINT_INDEX[f"{side}_{stop}"]]
            length = np.linalg.norm(b - a)
            axis = (b - a) / length
            rel = points - a
            along = rel @ axis
            radial = rel - along[:, None] * axis
            towards = _perpendicular(np.asarray(reference) * [mirror, 1.0, 1.0], axis)
            front = _perpendicular(np.array([0.0, 0.0, 1.0]), axis)
            angle = np.arctan2(radial @ towards, radial @ front)
            per_side.append((along / length, angle, np.linalg.norm(radial, axis=1)))
        left = self.left_share(points)
        (pos_l, angle_l, radius_l), (pos_r, angle_r, radius_r) = per_side
        nearer = left > 0.5
        return (
            left * pos_l + (1 - left) * pos_r,
            np.where(nearer, angle_l, angle_r),
            np.where(nearer, radius_l, radius_r),
        )

    def limb_length(self, name: str) -> float:
        """Rest length (m) of the left limb ``name`` (:data:`LIMBS`), first to last joint."""
        start, stop, _ = LIMBS[name]
        return float(
            np.linalg.norm(
                self.joints[JOINT_INDEX[f"left_{stop}"]] - self.joints[JOINT_INDEX[f"left_{start}"]]
            )
        )

    def arm(self, points: np.ndarray) -> np.ndarray:
        """(N,) position along the arm: 0 at the shoulder joint, 1 at the wrist; < 0 on the torso."""
        return self.limb(points, "arm")[0]

    def leg(self, points: np.ndarray) -> np.ndarray:
        """(N,) position along the leg: 0 at the hip joint, 1 at the knee; < 0 above the hips."""
        return self.limb(points, "leg")[0]

    def armness(self, points: np.ndarray) -> np.ndarray:
        """(N,) 0 on the torso → 1 on the arms: past the shoulder joint and near the arm's axis."""
        position, _, radius = self.limb(points, "arm")
        return smoothstep(position, *ARM_BLEND) * (1 - smoothstep(radius, *ARM_RADIUS))

    def azimuth(self, points: np.ndarray) -> np.ndarray:
        """(N,) angle around the vertical body axis, 0 at the front, +π/2 at the subject's left."""
        pelvis = self.joints[JOINT_INDEX["pelvis"]]
        return np.arctan2(points[:, 0] - pelvis[0], points[:, 2] - pelvis[2])

    def head_angles(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,) elevation and (N,) azimuth (0 at the face) of points seen from the skull's centre."""
        rel = points - self.head_centre
        elevation = np.arctan2(rel[:, 1], np.hypot(rel[:, 0], rel[:, 2]))
        return elevation, np.arctan2(rel[:, 0], rel[:, 2])

    def neck_distance(self, points: np.ndarray) -> np.ndarray:
        """(N,) distance from the centre of the neck opening (just in front of the neck joint)."""
        centre = self.joints[JOINT_INDEX["neck"]] + np.array([0.0, 0.0, NECK_FORWARD])
        return np.linalg.norm(points - centre, axis=1)


def _perpendicular(direction: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """(3,) the unit part of ``direction`` perpendicular to the unit ``axis``."""
    part = direction - (direction @ axis) * axis
    return part / np.linalg.norm(part)


def body_frame(body: BodyModel, verts: np.ndarray, joints: np.ndarray) -> BodyFrame:
    """The :class:`BodyFrame` of rest vertices (V, 3) and joints (24, 3) of ``body``'s mesh."""
    marks = landmark_vertices(body)
    return BodyFrame(
        joints=joints,
        floor=float(verts[:, 1].min()),
        head_centre=joints[JOINT_INDEX["head"]] + np.asarray(HEAD_CENTRE_OFFSET),
        nose=verts[marks["nose"]],
        eyes=verts[[marks["left_eye"], marks["right_eye"]]],
    )


# --------------------------------------------------------------------------------------------
# Garment coverage and thickness
# --------------------------------------------------------------------------------------------


def top_coverage(frame: BodyFrame, points: np.ndarray, top: Top) -> np.ndarray:
    """(N,) how much the top covers each point: 1 inside, 0 outside, linear across its borders."""
    s, per_metre = frame.torso(points), 1 / frame.torso_length
    arm_width = HEM_EDGE / frame.limb_length("arm")
    return np.minimum.reduce(
        [
            ramp(s, top.hem, HEM_EDGE * per_metre),
            1 - ramp(s, HEAD_START, EDGE * per_metre),
            1 - ramp(frame.arm(points), top.sleeve, arm_width),
            ramp(frame.neck_distance(points), top.neckline, EDGE),
        ]
    )


def bottom_coverage(frame: BodyFrame, points: np.ndarray, bottom: Bottom) -> np.ndarray:
    """(N,) how much the bottom covers each point."""
    return np.minimum(
        1 - ramp(frame.torso(points), bottom.waist, EDGE / frame.torso_length),
        1 - ramp(frame.leg(points), bottom.length, HEM_EDGE / frame.limb_length("leg")),
    )


def hairline(azimuth: np.ndarray, hair: Hair) -> np.ndarray:
    """(N,) hairline elevation at head azimuths: forehead at the front, nape at the back.

    e(α) = a + b cos α + c cos 2α through the front, side and back hairlines.
    """
    nape = math.radians(hair.nape)
    b = (HAIRLINE_FRONT - nape) / 2
    a_plus_c = (HAIRLINE_FRONT + nape) / 2
    a = (a_plus_c + HAIRLINE_SIDE) / 2
    c = (a_plus_c - HAIRLINE_SIDE) / 2
    return a + b * np.cos(azimuth) + c * np.cos(2 * azimuth)


def hair_coverage(frame: BodyFrame, points: np.ndarray, hair: Hair) -> np.ndarray:
    """(N,) how much hair covers each point (the skull above the hairline)."""
    elevation, azimuth = frame.head_angles(points)
    above_neck = ramp(points[:, 1], frame.joints[JOINT_INDEX["neck"], 1] + 0.05, EDGE)
    return np.minimum(ramp(elevation, hairline(azimuth, hair), HAIR_EDGE), above_neck)


def shoe_coverage(frame: BodyFrame, points: np.ndarray, shoes: Shoes) -> np.ndarray:
    """(N,) how much the shoes cover each point (the feet below the shoes' top edge)."""
    return 1 - ramp(points[:, 1] - frame.floor, shoes.height, 0.01)


def garment_coverage(frame: BodyFrame, points: np.ndarray, preset: SubjectPreset) -> np.ndarray:
    """(N, 5) coverage of each garment (column 0, skin, is 1 − the others' maximum).

    Where the top and the bottom overlap the top is outside, so the bottom's coverage there is
    reduced to what the top leaves.
    """
    cover = np.zeros((len(points), len(GARMENTS)))
    if preset.top is not None:
        cover[:, TOP] = top_coverage(frame, points, preset.top)
    if preset.bottom is not None:
        cover[:, BOTTOM] = np.minimum(bottom_coverage(frame, points, preset.bottom), 1 - cover[:, TOP])
    if preset.hair is not None:
        cover[:, HAIR] = hair_coverage(frame, points, preset.hair)
    if preset.shoes is not None:
        cover[:, SHOES] = shoe_coverage(frame, points, preset.shoes)
    cover[:, SKIN] = 1 - cover[:, 1:].max(1)
    return cover


def top_thickness(frame: BodyFrame, points: np.ndarray, top: Top) -> np.ndarray:
    """(N,) the top's offset: chest looseness at the chest growing to hem looseness at the hem;
    on the sleeves from chest looseness halfway to hem looseness at the sleeve ends."""
    chest, hem = top.looseness
    torso = chest + (hem - chest) * smoothstep(frame.torso(points), CHEST_HEIGHT, top.hem)
    sleeve = chest + 0.5 * (hem - chest) * np.clip(frame.arm(points) / max(top.sleeve, 1e-3), 0.0, 1.0)
    armness = frame.armness(points)
    return (1 - armness) * torso + armness * sleeve


def bottom_thickness(frame: BodyFrame, points: np.ndarray, bottom: Bottom) -> np.ndarray:
    """(N,) the bottom's offset: waist looseness above the hips, flaring to hem looseness."""
    waist, hem = bottom.looseness
    return waist + (hem - waist) * np.clip(frame.leg(points) / bottom.length, 0.0, 1.0) ** 1.5


def hair_thickness(frame: BodyFrame, points: np.ndarray, hair: Hair) -> np.ndarray:
    """(N,) hair volume: zero at the hairline, full above it, 20 % fuller at the back, plus the bun."""
    elevation, azimuth = frame.head_angles(points)
    rise = smoothstep(elevation, hairline(azimuth, hair), hairline(azimuth, hair) + HAIR_RAMP)
    rel = points - frame.head_centre
    bun_direction = np.array([0.0, math.sin(BUN_ELEVATION), -math.cos(BUN_ELEVATION)])
    from_bun = np.arccos(np.clip(rel @ bun_direction / np.linalg.norm(rel, axis=1), -1.0, 1.0))
    bun = hair.bun * np.exp(-0.5 * (from_bun / BUN_SPREAD) ** 2)
    return rise * (hair.volume * (0.9 - 0.1 * np.cos(azimuth)) + bun)


def raw_offsets(frame: BodyFrame, points: np.ndarray, cover: np.ndarray, preset: SubjectPreset) -> np.ndarray:
    """(N,) garment offsets before capping and smoothing: coverage × thickness, top outermost."""
    offset = np.zeros(len(points))
    bottom = np.zeros(len(points))
    if preset.bottom is not None:
        bottom = bottom_thickness(frame, points, preset.bottom)
        offset += cover[:, BOTTOM] * bottom
    if preset.top is not None:
        under = 0.0 if preset.bottom is None else bottom_coverage(frame, points, preset.bottom)
        floor = under * (bottom + TOP_OVER_BOTTOM)
        offset += cover[:, TOP] * np.maximum(top_thickness(frame, points, preset.top), floor)
    if preset.hair is not None:
        offset += cover[:, HAIR] * hair_thickness(frame, points, preset.hair)
    if preset.shoes is not None:
        offset += cover[:, SHOES] * preset.shoes.thickness
    return offset


# --------------------------------------------------------------------------------------------
# Pose-dependent cloth fields
# --------------------------------------------------------------------------------------------


def _flexion(rot: torch.Tensor) -> torch.Tensor:
    """(F,) sin²(θ/2) = (3 − tr R) / 4 of (F, 3, 3) rotations: 0 unbent, 1 at θ = π; smooth."""
    return (3.0 - rot.diagonal(dim1=-2, dim2=-1).sum(-1)) / 4.0


def cloth_coefficients(pose: torch.Tensor) -> torch.Tensor:
    """Coefficients of the pose-dependent cloth fields, smooth functions of the pose.

    Features of the rotation matrices: the spine's bend (where spine1·spine2·spine3 sends the up
    axis: forward z, sideways x), each arm's raise r ∈ [−1, 1] (the height of the arm's direction
    after collar and shoulder; up = ((1 + r) / 2)², down = ((1 − r) / 2)⁴), and joint flexions
    sin²(θ/2). Folds, ripples, hem lift and bulges are in metres (their fields are unit-free
    weights); the squeezes are shares of the local offset (their fields are in metres).

    Args:
        pose: (F, 72) axis-angle poses.
    Returns:
        (F, K) coefficients in the order of :data:`FIELDS`.
    """
    rots = lbs.axis_angle_to_matrix(pose.reshape(-1, NUM_JOINTS, 3))
    joint = {name: rots[:, index] for name, index in JOINT_INDEX.items()}
    spine = joint["spine1"] @ joint["spine2"] @ joint["spine3"]
    bend_forward, bend_side = spine[:, 2, 1], spine[:, 0, 1]
    raise_left = (joint["left_collar"] @ joint["left_shoulder"])[:, 1, 0]
    raise_right = -(joint["right_collar"] @ joint["right_shoulder"])[:, 1, 0]
    up_left, up_right = ((1 + raise_left) / 2) ** 2, ((1 + raise_right) / 2) ** 2
    amplitude = (
        FOLD_REST + FOLD_BEND * (bend_forward**2 + bend_side**2) + FOLD_RAISE * (up_left + up_right) / 2
    )
    phase = (
        FOLD_PHASE_BEND * bend_forward
        + FOLD_PHASE_SIDE * bend_side
        + FOLD_PHASE_RAISE * (raise_left + raise_right)
    )
    return torch.stack(
        [
            amplitude * torch.cos(phase),
            amplitude * torch.sin(phase),
            SLEEVE_FOLD * up_left,
            SLEEVE_FOLD * up_right,
            HEM_LIFT * (up_left + up_right) / 2,
            JOINT_BULGE * _flexion(joint["left_elbow"]),
            JOINT_BULGE * _flexion(joint["right_elbow"]),
            JOINT_BULGE * _flexion(joint["left_knee"]),
            JOINT_BULGE * _flexion(joint["right_knee"]),
            HIP_FOLD * _flexion(joint["left_hip"]),
            HIP_FOLD * _flexion(joint["right_hip"]),
            SQUEEZE * ((1 - raise_left) / 2) ** 4,
            SQUEEZE * ((1 - raise_right) / 2) ** 4,
        ],
        1,
    )


@dataclass
class ClothSite:
    """What the pose-dependent fields of one rest body are laid out on.

    Attributes:
        frame: the body's frame; verts: (V, 3) rest vertices; normals: (V, 3) the offsets'
        directions; offsets: (V,) rest offsets; cover: (V, 5) garment coverage, the top's and the
        bottom's smoothed; preset: the clothing.
    """

    frame: BodyFrame
    verts: np.ndarray
    normals: np.ndarray
    offsets: np.ndarray
    cover: np.ndarray
    preset: SubjectPreset

    @property
    def depth(self) -> np.ndarray:
        """(V,) 0 → 1 as the offset reaches :data:`FOLD_REFERENCE`, so folds never push cloth inside."""
        return np.clip(self.offsets / FOLD_REFERENCE, 0.0, 1.0)

    @property
    def torso_top(self) -> np.ndarray:
        """(V,) the top's coverage on the torso (not the sleeves)."""
        return self.cover[:, TOP] * (1 - self.frame.armness(self.verts))

    @property
    def sleeves(self) -> np.ndarray:
        """(V,) the top's coverage on the sleeves."""
        return self.cover[:, TOP] * self.frame.armness(self.verts)

    @property
    def left(self) -> np.ndarray:
        """(V,) share of the subject's left side (:meth:`BodyFrame.left_share`)."""
        return self.frame.left_share(self.verts)


def fold_weights(site: ClothSite) -> dict[str, np.ndarray]:
    """(V,) weights of the folds on the torso (a sine and a cosine field, so any phase can be
    mixed) and of the ripples along each sleeve."""
    frame, verts = site.frame, site.verts
    wave = 2 * np.pi * verts[:, 1] / FOLD_WAVELENGTH + FOLD_TWIST * np.sin(2 * frame.azimuth(verts))
    torso = site.torso_top * site.depth
    along_arm = frame.arm(verts) * frame.limb_length("arm")
    sleeve = site.sleeves * site.depth * np.sin(2 * np.pi * along_arm / SLEEVE_WAVELENGTH)
    return {
        "fold_sin": torso * np.sin(wave),
        "fold_cos": torso * np.cos(wave),
        "sleeve_left": sleeve * site.left,
        "sleeve_right": sleeve * (1 - site.left),
    }


def joint_bulge(cover: np.ndarray, position: np.ndarray, centre: float, length: float) -> np.ndarray:
    """(V,) a bulge with wrinkles around a limb at ``centre`` (a limb position; the limb is ``length`` m)."""
    metres = (position - centre) * length
    wrinkles = 1 + JOINT_WRINKLE * np.sin(2 * np.pi * metres / JOINT_WAVELENGTH)
    return cover * np.exp(-0.5 * (metres / JOINT_SPREAD) ** 2) * wrinkles


def elbow_position(frame: BodyFrame) -> float:
    """Arm position (0 shoulder, 1 wrist) of the left elbow joint."""
    shoulder, elbow = (frame.joints[JOINT_INDEX[f"left_{name}"]] for name in ("shoulder", "elbow"))
    return float(np.linalg.norm(elbow - shoulder)) / frame.limb_length("arm")


def joint_weights(site: ClothSite) -> dict[str, np.ndarray]:
    """(V,) weights of the bulges at covered elbows and knees and of the folds at the front of
    the hips, per side."""
    frame, verts = site.frame, site.verts
    arm, leg, thigh = frame.arm(verts), frame.leg(verts), frame.limb_length("leg")
    elbow = joint_bulge(site.cover[:, TOP], arm, elbow_position(frame), frame.limb_length("arm"))
    knee = joint_bulge(site.cover[:, BOTTOM], leg, 1.0, thigh)
    crease = np.exp(-0.5 * (leg * thigh / HIP_FOLD_SPREAD) ** 2) * np.clip(site.normals[:, 2], 0.0, 1.0)
    ripple = np.sin(2 * np.pi * leg * thigh / HIP_FOLD_WAVELENGTH)
    hip = site.cover[:, BOTTOM] * site.depth * crease * ripple
    return {
        "elbow_left": elbow * site.left,
        "elbow_right": elbow * (1 - site.left),
        "knee_left": knee * site.left,
        "knee_right": knee * (1 - site.left),
        "hip_left": hip * site.left,
        "hip_right": hip * (1 - site.left),
    }


def squeeze_weights(site: ClothSite) -> dict[str, np.ndarray]:
    """(V,) weights (metres: minus the local offset) of the top where a lowered arm presses on
    the torso: the torso's side facing the arm and the underside of the upper arm."""
    frame, verts, normals = site.frame, site.verts, site.normals
    side = site.torso_top * smoothstep(frame.torso(verts), 0.3, 0.6)
    upper_arm = 1 - smoothstep(frame.arm(verts), 0.3, 0.55)
    underside = site.sleeves * np.clip(-normals[:, 1], 0.0, 1.0) * upper_arm
    facing_left, facing_right = np.clip(normals[:, 0], 0.0, 1.0), np.clip(-normals[:, 0], 0.0, 1.0)
    return {
        "squeeze_left": -site.offsets * site.left * (side * facing_left + underside),
        "squeeze_right": -site.offsets * (1 - site.left) * (side * facing_right + underside),
    }


def hem_lift(site: ClothSite) -> np.ndarray:
    """(V, 3) the upward field that lifts the top's hem: 1 at the hem fading to 0 at
    :data:`HEM_LIFT_SPAN` above it, scaled by the hem's looseness (a tight top lifts less)."""
    lift = np.zeros_like(site.verts)
    top = site.preset.top
    if top is not None:
        above = smoothstep(site.frame.torso(site.verts), top.hem, top.hem + HEM_LIFT_SPAN)
        lift[:, 1] = site.torso_top * (1 - above) * top.looseness[1] / HEM_LIFT_LOOSENESS
    return lift


def cloth_bases(site: ClothSite) -> np.ndarray:
    """The pose-dependent fields B_k of :data:`FIELDS`, (K, V, 3).

    All but the hem lift move along the normals; each is weighted by the smoothed coverage of
    its garment, so bare skin never moves.
    """
    along_normal = {**fold_weights(site), **joint_weights(site), **squeeze_weights(site)}
    fields = [
        hem_lift(site) if name == "hem_lift" else along_normal[name][:, None] * site.normals
        for name in FIELDS
    ]
    return np.stack(fields)


# --------------------------------------------------------------------------------------------
# Dressing a rest body
# --------------------------------------------------------------------------------------------


@dataclass
class Dressing:
    """The clothing of one rest body, in rest space.

    Attributes:
        normals: (V, 3) smoothed unit rest normals that the offsets follow.
        offsets: (V,) rest garment offsets (m) along the normals.
        static: (V, 3) rest displacement: offsets along the normals plus the shoes' fairing.
        coverage: (V, 5) garment coverage (linear ramps; the garment label is its argmax).
        bases: (K, V, 3) pose-dependent fields (:func:`cloth_bases`).
    """

    normals: np.ndarray
    offsets: np.ndarray
    static: np.ndarray
    coverage: np.ndarray
    bases: np.ndarray


def dress(frame: BodyFrame, verts: np.ndarray, faces: np.ndarray, preset: SubjectPreset) -> Dressing:
    """Lay the preset's garments on a rest body.

    Steps: smoothed normals; coverage and thickness of each garment; cap the offsets at
    :data:`CLEARANCE_SHARE` of the free space in front of each vertex, spread as a Lipschitz
    envelope so a tight spot also limits its neighbours; diffuse the offsets over the mesh with
    bare skin held at zero; fair the feet inside the shoes; smooth the top's and the bottom's
    coverage the same way for the pose fields.

    Args:
        frame: the body's frame; verts: (V, 3) rest vertices; faces: (T, 3).
    """
    laplacian, mass = cotangent_laplacian(verts, faces)
    raw_normals = vertex_normals(verts, faces)
    normals = diffuse(raw_normals, laplacian, mass, NORMAL_SMOOTHING)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    cover = garment_coverage(frame, verts, preset)
    raw = raw_offsets(frame, verts, cover, preset)
    free = clearance(verts, faces, [raw_normals, normals])
    cap = lipschitz_envelope(np.minimum(CLEARANCE_SHARE * free, raw.max()), verts, faces, CAP_SLOPE)
    offsets = np.minimum(diffuse(np.minimum(raw, cap), laplacian, mass, SMOOTHING, fixed=raw <= 0), cap)
    shoes = fairing(verts, laplacian, mass, SHOE_FAIRING, cover[:, SHOES])
    smooth_cover = cover.copy()
    for garment in (TOP, BOTTOM):
        smooth_cover[:, garment] = diffuse(
            cover[:, garment], laplacian, mass, SMOOTHING, fixed=cover[:, garment] <= 0
        )
    return Dressing(
        normals=normals,
        offsets=offsets,
        static=offsets[:, None] * normals + shoes,
        coverage=cover,
        bases=cloth_bases(ClothSite(frame, verts, normals, offsets, smooth_cover, preset)),
    )


# --------------------------------------------------------------------------------------------
# Appearance
# --------------------------------------------------------------------------------------------


def bands(u: np.ndarray, period: float, phase: float = 0.0, duty: float = 0.5) -> np.ndarray:
    """(N,) bool: u falls in the first ``duty`` share of its period (crisp stripes)."""
    return np.mod(u / period + phase, 1.0) < duty


def _mix(a: Color | np.ndarray, b: Color | np.ndarray, t: np.ndarray) -> np.ndarray:
    """(N, 3) colours a + (b − a)·t for (N,) weights t."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a + (b - a) * np.asarray(t, dtype=np.float64)[:, None]


def _ellipse(points: np.ndarray, centre: np.ndarray, radii: tuple[float, float]) -> np.ndarray:
    """(N,) bool: inside the ellipse of (x, y) ``radii`` around ``centre``, on the front of the face."""
    rel = points - centre
    inside = (rel[:, 0] / radii[0]) ** 2 + (rel[:, 1] / radii[1]) ** 2 < 1
    return inside & (rel[:, 2] > -0.03)


@dataclass
class Appearance:
    """Procedural colours of a dressed body, functions of rest-pose points (crisp at any scale)."""

    frame: BodyFrame
    preset: SubjectPreset

    def color(self, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(N, 3) RGB in [0, 1] of (N, 3) rest points with (N,) garment labels."""
        painters = (self.skin, self.top, self.bottom, self.hair, self.shoes)
        colors = np.zeros((len(points), 3))
        for label, paint in enumerate(painters):
            chosen = labels == label
            if chosen.any():
                colors[chosen] = paint(points[chosen])
        return np.clip(colors, 0.0, 1.0)

    def skin(self, points: np.ndarray) -> np.ndarray:
        """Skin tone with lips, eyes (white, dark iris) and brows."""
        frame, tone = self.frame, np.asarray(self.preset.skin_color)
        colors = np.broadcast_to(tone, points.shape).copy()
        colors[_ellipse(points, frame.nose + [0.0, -0.037, 0.0], (0.021, 0.008))] = tone * [0.8, 0.5, 0.5]
        brow = np.asarray(self.preset.hair.color if self.preset.hair else (0.2, 0.14, 0.1)) * 0.8
        for eye in frame.eyes:
            colors[_ellipse(points, eye + [0.0, 0.018, 0.0], (0.019, 0.0045))] = brow
            colors[_ellipse(points, eye, (0.013, 0.007))] = (0.93, 0.92, 0.9)
            colors[_ellipse(points, eye, (0.0055, 0.0055))] = (0.22, 0.15, 0.1)
        return colors

    def top(self, points: np.ndarray) -> np.ndarray:
        """The top's pattern: sleeves follow the arm, the body follows the torso."""
        top = self.preset.top
        frame = self.frame
        on_arm = frame.armness(points) > 0.5
        arm_pos, arm_angle, _ = frame.limb(points, "arm")
        along = np.where(on_arm, arm_pos * frame.limb_length("arm"), points[:, 1])
        around = np.where(on_arm, arm_angle * ARM_RADIUS_MEAN, frame.azimuth(points) * TORSO_RADIUS)
        c0, c1 = top.colors
        if top.pattern == "stripes":
            return _mix(c0, c1, bands(along, top.period, top.phase, duty=0.4))
        if top.pattern == "checks":
            weave = bands(along, top.period, top.phase).astype(float) + bands(around, top.period, top.phase)
            return _mix(c0, c1, weave / 2)
        if top.pattern == "colorblock":
            s = frame.torso(points)
            chest = np.abs(s - (0.5 + 0.1 * top.phase)) < 0.03
            sides = np.abs(np.sin(frame.azimuth(points))) > 0.93
            return _mix(c0, c1, on_arm | (s > 0.82) | chest | sides)
        raise ValueError(f"unknown top pattern {top.pattern!r}")

    def bottom(self, points: np.ndarray) -> np.ndarray:
        """The bottom's pattern, laid out around each leg's axis (continued up over the hips)."""
        bottom, frame = self.preset.bottom, self.frame
        _, angle, _ = frame.limb(points, "leg")
        around, along = angle * LEG_RADIUS, points[:, 1]
        c0, c1 = bottom.colors
        if bottom.pattern == "denim":
            twill = bands(along + 0.5 * around, 0.004, bottom.phase)
            fade = 0.18 * np.clip(np.cos(angle), 0.0, 1.0) * np.clip(frame.leg(points) * 2, 0.0, 1.0)
            colors = _mix(c0, (1.0, 1.0, 1.0), fade) * (0.95 + 0.1 * twill)[:, None]
            seam = np.abs(angle - np.pi / 2) * LEG_RADIUS < 0.002
            waistband = np.abs(frame.torso(points) - (bottom.waist - 0.06)) < 0.004
            return np.where((seam | waistband)[:, None], np.asarray(c1), colors)
        if bottom.pattern == "dots":
            row = np.floor(along / bottom.period + bottom.phase)
            u = np.mod(around / bottom.period + 0.5 * row, 1.0) - 0.5
            v = np.mod(along / bottom.period + bottom.phase, 1.0) - 0.5
            return _mix(c0, c1, np.hypot(u, v) < 0.28)
        if bottom.pattern == "side_stripes":
            stripes = np.abs(np.abs(angle - np.pi / 2) * LEG_RADIUS - 0.012) < 0.005
            waistband = frame.torso(points) > bottom.waist - 0.06
            return _mix(c0, c1, stripes | waistband)
        raise ValueError(f"unknown bottom pattern {bottom.pattern!r}")

    def hair(self, points: np.ndarray) -> np.ndarray:
        """Hair colour with wavy strands running down from the crown."""
        elevation, azimuth = self.frame.head_angles(points)
        strands = 0.5 + 0.5 * np.sin(HAIR_STRANDS * azimuth + 4 * np.sin(3 * elevation))
        return np.asarray(self.preset.hair.color) * (0.8 + 0.4 * strands)[:, None]

    def shoes(self, points: np.ndarray) -> np.ndarray:
        """Shoe colour with a light sole."""
        shoes = self.preset.shoes
        return _mix(shoes.color, shoes.sole_color, points[:, 1] - self.frame.floor < SOLE_HEIGHT)


def reflectivity(colors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) near-infrared reflectivity in [0, 1] of (N, 3) albedos with (N,) garment labels.

    A rough model for the depth sensor's dropout: the garment's :data:`NIR_REFLECTANCE` times
    (0.2 + 0.8 · luminance), so dark hair and dark fabric return little light.
    """
    luminance = np.asarray(colors) @ np.array([0.2126, 0.7152, 0.0722])
    return np.clip(np.asarray(NIR_REFLECTANCE)[labels] * (0.2 + 0.8 * luminance), 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# The subject
# --------------------------------------------------------------------------------------------


@dataclass
class PosedSubject:
    """Posed frames of a subject.

    Attributes:
        clothed: (F, V, 3) clothed vertices; body: (F, V, 3) the naked body's vertices (ground
        truth); joints: (F, 24, 3) joint positions; transforms: (F, 24, 4, 4) rest → posed bones.
    """

    clothed: torch.Tensor
    body: torch.Tensor
    joints: torch.Tensor
    transforms: torch.Tensor


@dataclass(frozen=True)
class RestSurface:
    """The rest clothed surface that appearance is defined on (numpy, float64).

    Attributes:
        faces: (T, 3); points: (V, 3) rest clothed vertices; coverage: (V, 5) garment coverage.
    """

    faces: np.ndarray
    points: np.ndarray
    coverage: np.ndarray

    def sample(self, triangle_ids: np.ndarray, barycentrics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rest points and garment labels of surface points given as triangle + barycentrics.

        The point is the barycentric combination of the triangle's rest corners; the label is
        the argmax of the interpolated garment coverage, so garment borders are crisp lines
        across triangles.

        Args:
            triangle_ids: (N,) triangle indices; barycentrics: (N, 3) weights of their corners.
        Returns:
            points (N, 3) float64 and labels (N,) int64.
        """
        corners = self.faces[np.asarray(triangle_ids)]  # (N, 3)
        weights = np.asarray(barycentrics, dtype=np.float64)[..., None]
        points = (self.points[corners] * weights).sum(1)
        return points, (self.coverage[corners] * weights).sum(1).argmax(1)


class Subject(torch.nn.Module):
    """A clothed, textured, animatable synthetic person on a body model.

    Args:
        body: the naked body model (ground truth); preset: shape and clothing; seed: varies
            colours and pattern phases (:func:`vary`).

    Attributes:
        body, preset (as varied by the seed), seed, frame (:class:`BodyFrame`), appearance
        (:class:`Appearance`), rest_surface (:class:`RestSurface`).
    Buffers:
        shape (S,), rest_vertices (V, 3) naked rest body, rest_normals (V, 3), offsets (V,),
        static_displacement (V, 3), cloth_bases (K, V, 3), garment_coverage (V, 5), garment_labels (V,) long.
    """

    def __init__(self, body: BodyModel, preset: SubjectPreset, seed: int = 0) -> None:
        super().__init__()
        self.body = body
        self.seed = seed
        self.preset = vary(preset, seed)
        shape = preset_shape(body, preset)
        verts, joints = body.rest(shape)
        rest = verts[0].detach().cpu().double().numpy()
        self.frame = body_frame(body, rest, joints[0].detach().cpu().double().numpy())
        dressing = dress(self.frame, rest, body.faces.cpu().numpy(), self.preset)
        self.appearance = Appearance(self.frame, self.preset)

        def buffer(array: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(array, dtype=torch.float32, device=body.faces.device)

        self.register_buffer("shape", shape)
        self.register_buffer("rest_vertices", verts[0].detach())
        self.register_buffer("rest_normals", buffer(dressing.normals))
        self.register_buffer("offsets", buffer(dressing.offsets))
        self.register_buffer("static_displacement", buffer(dressing.static))
        self.register_buffer("cloth_bases", buffer(dressing.bases))
        self.register_buffer("garment_coverage", buffer(dressing.coverage))
        self.register_buffer("garment_labels", self.garment_coverage.argmax(1))
        self.rest_surface = RestSurface(
            faces=body.faces.cpu().numpy(),
            points=self.rest_clothed().detach().cpu().double().numpy(),
            coverage=dressing.coverage,
        )

    @property
    def faces(self) -> torch.Tensor:
        """(T, 3) triangles, shared by the naked and the clothed mesh."""
        return self.body.faces

    def displacement(self, pose: torch.Tensor) -> torch.Tensor:
        """Clothing displacement in rest space: static offsets plus pose-dependent fields.

        Args:
            pose: (F, 72) axis-angle poses.
        Returns:
            (F, V, 3) displacements of the rest body's vertices.
        """
        coefficients = cloth_coefficients(pose.to(self.offsets))
        return self.static_displacement + torch.einsum("fk,kvc->fvc", coefficients, self.cloth_bases)

    def rest_clothed(self) -> torch.Tensor:
        """(V, 3) the clothed body in the rest pose (zero pose: pose fields included)."""
        zero = self.offsets.new_zeros(1, NUM_JOINTS * 3)
        return self.rest_vertices + self.displacement(zero)[0]

    def posed(self, pose: torch.Tensor, trans: torch.Tensor | None = None) -> PosedSubject:
        """Pose the subject: clothed and naked vertices, joints and bone transforms.

        Args:
            pose: (F, 72) axis-angle poses; trans: (F, 3) translations or None.
        """
        pose = pose.to(self.offsets)
        naked = self.body(pose, self.shape, trans)
        rest = self.rest_vertices + self.displacement(pose)
        if self.body.posedirs.numel():
            rots = lbs.axis_angle_to_matrix(pose.reshape(-1, NUM_JOINTS, 3))
            rest = rest + (lbs.pose_feature(rots) @ self.body.posedirs).reshape(len(pose), -1, 3)
        clothed = lbs.skin_points(rest, self.body.weights, naked.transforms)
        return PosedSubject(
            clothed=clothed, body=naked.vertices, joints=naked.joints, transforms=naked.transforms
        )

    def clothed(self, pose: torch.Tensor, trans: torch.Tensor | None = None) -> torch.Tensor:
        """(F, V, 3) clothed vertices for (F, 72) poses and optional (F, 3) translations."""
        return self.posed(pose, trans).clothed

    def surface_at(self, triangle_ids: np.ndarray, barycentrics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rest-pose points and garment labels of surface points (:meth:`RestSurface.sample`)."""
        return self.rest_surface.sample(triangle_ids, barycentrics)

    def surface_color(self, points_rest: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(N, 3) RGB albedo in [0, 1] of (N, 3) rest-pose clothed points with (N,) garment labels."""
        return self.appearance.color(np.asarray(points_rest, dtype=np.float64), np.asarray(labels))

    def albedo_at(self, triangle_ids: np.ndarray, barycentrics: np.ndarray) -> np.ndarray:
        """(N, 3) RGB albedo at surface points given as (N,) triangles and (N, 3) barycentrics."""
        return self.surface_color(*self.surface_at(triangle_ids, barycentrics))

    def reflectivity_at(self, triangle_ids: np.ndarray, barycentrics: np.ndarray) -> np.ndarray:
        """(N,) near-infrared reflectivity in [0, 1] at surface points (see :func:`reflectivity`)."""
        points, labels = self.surface_at(triangle_ids, barycentrics)
        return reflectivity(self.surface_color(points, labels), labels)

    def vertex_colors(self) -> np.ndarray:
        """(V, 3) RGB in [0, 1] at the vertices, for quick previews."""
        return self.surface_color(self.rest_surface.points, self.garment_labels.cpu().numpy())


def make_subject(
    name: str | SubjectPreset = "casual", seed: int = 0, body: BodyModel | None = None
) -> Subject:
    """A synthetic subject from a preset name (:data:`PRESETS`) or a :class:`SubjectPreset`.

    Args:
        name: preset name or preset; seed: varies colours and patterns; body: the body model
            (default: anny).
    """
    if isinstance(name, str):
        if name not in PRESETS:
            raise UserError(f"Unknown subject preset {name!r}: choose one of {', '.join(PRESETS)}.")
        name = PRESETS[name]
    return Subject(load_body_model("anny") if body is None else body, name, seed)
