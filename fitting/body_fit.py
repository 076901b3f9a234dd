"""Per-frame body fitting: body pose, translation and one shape for a whole RGB-D sequence.

PINA starts from per-frame body fits and can only refine them locally, so this stage decides how
good the avatar can get. For every frame it minimises

    E = w_kp  · Σ_k c_k ρ(|π(X_k) − x_k|; σ_px) / K           2D keypoints, colour camera
      + w_dp  · mean_m ρ(|B_m − P_m|; σ_m)                        DensePose correspondences
      + w_icp · mean_n ρ(((P_n − V_c(n)) · N_c(n)); σ_m)          ICP, point-to-plane
      + priors (pose L2, joint limits, shape, temporal smoothness: :mod:`fitting.priors`)

with ρ(r; σ) = σ² r² / (σ² + r²) the Geman–McClure kernel: r² for small residuals, saturating at
σ² for outliers (a wrong detection, a background point), so each data weight is an inverse
variance (1 / expected noise²). The terms:

- Keypoints: the body's 3D keypoints (SMPL joints, surface landmarks, midpoints:
  :mod:`rgbd2avatar.body.keypoints`) moved into the colour camera and projected through its
  distorted lens (:mod:`fitting.camera`), against the detections, weighted by confidence.
- DensePose: the observed point against the body surface point DensePose assigns to it
  (barycentric combination of the posed triangle's corners), in 3D.
- ICP: each observed point against its nearest *front-facing* body vertex (vertex normal · view
  direction < 0: the camera cannot see the back of the body), point-to-plane along the body
  vertex normal. The body normal is used rather than the observed PCA normal: it is exact and
  noise-free, while PCA normals of a noisy depth image are not; the observed normal still vets
  each correspondence (the two must agree within :attr:`FitOptions.normal_agreement`), which drops
  matches between, say, an arm and the torso behind it. Correspondences are re-found every
  :attr:`FitOptions.refresh_every` iterations by a chunked ``torch.cdist`` on the device, against
  a voxel-uniform subset of the body's vertices (:attr:`FitOptions.icp_voxel`).

Pose parameterisation: the articulated body (joints 1..23) comes from the body model with an
identity root; the root rotation R and the pelvis position p are applied on top, as
x = R (x_local − j0) + p with j0 the rest pelvis. That is :meth:`BodyModel.forward` with
translation t = p − j0, but p, unlike t, does not move when the shape changes (anny's bodies
stand on their feet, so its pelvis rises with the height phenotype), which decouples shape from
translation. R is optimised as exp(δ) R_ref with a small axis-angle δ, which stays well-behaved
where an axis-angle of R would not: a body upright in a camera frame (y down) is rotated by
about π.

Schedule (per window of :attr:`FitOptions.batch_size` frames, all optimised at once with Adam):

1. global orientation and translation only (body pose and shape fixed; the articulated body is
   posed once for the whole stage);
2. + body pose (23 joints), with pose priors and temporal smoothness;
3. + shape, one vector shared by all frames (anny's six phenotypes or SMPL's betas).

Within each stage the learning rates decay on a cosine to a tenth. Most of the work happens in
stage 3, where pose and shape settle together (with the shape still wrong, stage 2 can only get
the pose roughly right), so it gets the most iterations.

Initialisation and tracking: the first frame starts from its keypoints — shoulders and hips are
lifted to 3D by the observed point whose colour-camera projection lies nearest to each detection,
pushed :data:`JOINT_DEPTH` behind the surface; the torso's left (shoulder and hip lines) and up
(hips to shoulders) directions give its orientation and the lifted joints its translation; whether
the person faces the camera is decided by the face keypoints' confidence (a detector labels left
and right as if it saw a face, so a back view with swapped labels is turned around). Without
usable keypoints it starts from the point cloud: upright in the camera (camera up = body up), at
the centroid pushed back by :data:`JOINT_DEPTH`, trying :attr:`FitOptions.init_yaws` yaw angles,
each refined by a short stage 1, keeping the one with the lowest residual; the articulation starts
standing with the arms :data:`ARM_DROP` below the T-pose. Every later window starts from the last
good frame, moved on at the constant velocity of the last two good frames (every joint keeps
turning at its rate, the pelvis keeps moving); temporal smoothness links each window to the last
two frames of the previous one, and shape carries over with a continuity prior that
stiffens as frames accumulate (a running mean of the per-window estimates). The returned poses
were each fitted with their window's shape estimate; the returned shape is the final one, and the
translations keep each frame's fitted pelvis position with it.

Failure handling: after a window is fitted, each frame's data residual is compared with the
median over the window and the recent good frames; a frame more than
:attr:`FitOptions.outlier_mads` robust standard deviations (1.4826 · MAD, at least
:attr:`FitOptions.outlier_floor` of the median) above it — with the defaults, at least 4× the
median — is re-initialised from its own keypoints or point cloud, its smoothness links are cut,
and the window is fitted again, so the bad frame neither drags its neighbours nor the next
window. The frame then keeps whichever of its two fits explains its observations better (a
re-initialisation can fail too, e.g. in a profile view); such frames are reported in
:attr:`BodyFit.reinitialised`, and the next window continues from the last frame not flagged.

Loose clothing: every term above pulls the naked body onto the clothed surface, which from a
single view puts the torso a few centimetres too close to the camera in every frame (the
articulation bends to keep the bare hands, feet and head where they are seen). Once all frames
are fitted, :mod:`fitting.depth_offset` estimates that offset s from the disagreement between
views of the turning subject, one for each clothed region (hips and thighs; trunk and upper
arms), and the sequence is fitted again (shape fixed) against a clothing layer: the vertices of
the torso, and of the upper arms and thighs thinning to nothing at the elbows and knees, fading
out towards the bare parts by their skinning weights, are moved their region's s towards the
camera along the viewing ray in every data term (:func:`clothing_layer`), so the body settles
behind the surface it is matched to. (One s for both regions, the mean, left the pelvis 0.7 cm
too close and the chest 0.6 cm too far on the ``small`` protocol: the fitted shape, which grows
into the clothes, takes up more of the top than of the shorts. A layer of the full s on the
whole upper arms and thighs pushed the bare elbows and knees back: they sat 1.3 and 1.5 cm too
far from the camera, and the MPJPE was 1.22 cm against 1.06 cm with the thinning layer. An
inflated body, the layer along the vertex normals, tried too, fitted 40 % slower and was no
better on the synthetic benchmarks: MPJPE 1.26 against 1.28 cm on the ``small`` protocol, 1.20
against 1.10 cm on ``benchmarks/bench_body_fit.py``, held-out Chamfer of the ``fast`` avatar 0.71
against 0.66 cm.) The offset
of the refitted bodies is added to the layer and the sequence fitted again, up to
:attr:`FitOptions.depth_refits` times, until the views agree (:attr:`FitOptions.correct_depth`;
the estimates are kept in :attr:`BodyFit.depth_offsets`).

Shapes: F frames, N observed points, P points used by ICP, M DensePose correspondences, K
keypoints, V vertices, J = 24 joints, S shape parameters, Y yaw candidates.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace

import torch

from capture.sequence import Calibration
from fitting import camera, priors
from fitting.depth_offset import CLOTHED_REGIONS, LIMB_ENDS, DepthOffset, estimate_depth_offsets
from fitting.observations import FitObservations
from rgbd2avatar.body import keypoints as kp
from rgbd2avatar.body import lbs
from rgbd2avatar.body.model import BodyModel, BodyOutput
from rgbd2avatar.body.skeleton import JOINT_INDEX, NUM_JOINTS
from rgbd2avatar.geometry import batched_vertex_normals

logger = logging.getLogger(__name__)

JOINT_DEPTH = 0.08
"""How far (m) the torso joints lie behind the body surface the camera sees, for initialisation."""
TORSO_KEYPOINTS = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
FACE_KEYPOINTS = ("nose", "left_eye", "right_eye")
CAMERA_UP = (0.0, -1.0, 0.0)
"""The world's up direction in an upright camera's frame (OpenCV: y down)."""
ARM_DROP = 1.0
"""Radians the starting articulation lowers each arm from the T-pose."""
HISTORY = 32
"""Good frames whose residuals join the window's in the failure test's median."""
ADAM_BETAS = (0.8, 0.95)
"""Adam's moment decays: shorter memories than the usual (0.9, 0.999) follow the narrow valleys
of articulated fitting (a hip and a knee trading off) faster."""
FAR = 1e4
"""Metres: where the correspondence search puts the body vertices it must not match."""
MIN_CLOTHING = 0.003
"""Metres: smaller depth offsets are left alone (no refit)."""
SCALP_FACING = 0.5
"""Head vertices whose rest-pose normal points forward (+z) less than this (the crown, the back
and the sides of the head: where hair grows) are the scalp (:func:`scalp`)."""


@dataclass(frozen=True)
class FitWeights:
    """Weights of the energy's terms; a weight of 0 disables its term.

    Data terms are per frame means of Geman–McClure costs that behave like squared residuals
    near zero, so each weight is 1 / (expected noise)²; priors are sums per frame.

    Attributes:
        keypoints: 2D keypoints, 1/px²: (10 px)⁻² — detections err by a few pixels and a
            detector's joint is not exactly the model's.
        densepose: DensePose correspondences, 1/m²: (3 cm)⁻² — DensePose's surface coordinates
            are coarse and clothing lies over the body it labels.
        icp: point-to-plane ICP, 1/m²: (1 cm)⁻² — the depth noise at 2–3 m, plus clothing.
        pose_prior: on Σ s θ² of the 23 body joints' axis-angles (rad⁻²), s = 1 but for the
            twists of the spine and hips and for the neck and collars
            (:func:`fitting.priors.pose_prior_scales`): light next to the data, but it stops
            slow drifts that the data barely sees (the pelvis tilting while hips and spine bend
            to compensate; a collar and its shoulder rotating against each other) and keeps
            unseen joints near rest.
        joint_limits: on the squared excess beyond the joint ranges (rad⁻²): stiff.
        shape_prior: on the squared distance to the model's default shape.
        shape_bounds: on the squared excess of anny's phenotypes beyond [0, 1].
        shape_continuity: on the squared change of shape from the previous windows' estimate,
            times (frames already fitted / frames in the window).
        pose_smoothness: on the squared change of each joint's inter-frame rotation (rad⁻²).
        translation_smoothness: on squared second differences of the translation (m⁻²).
    """

    keypoints: float = 1e-2
    densepose: float = 1.1e3
    icp: float = 1e4
    pose_prior: float = 0.1
    joint_limits: float = 10.0
    shape_prior: float = 1e-2
    shape_bounds: float = 100.0
    shape_continuity: float = 1.0
    pose_smoothness: float = 5.0
    translation_smoothness: float = 1e3


@dataclass(frozen=True)
class FitOptions:
    """How the fit runs.

    Attributes:
        iterations: Adam iterations of the three stages (global; + body pose; + shape), per
            window; 0 skips a stage (e.g. a fixed shape).
        first_window_factor: the first window, which starts from scratch (shape unknown, pose
            from keypoints or the point cloud), runs this many times as many iterations.
        lr_rotation, lr_translation, lr_pose, lr_shape: Adam learning rates (rad, m, rad,
            shape units), decayed on a cosine to a tenth within each stage.
        refresh_every: iterations between ICP correspondence searches.
        robust_scale_px: Geman–McClure scale of the keypoint residuals, pixels.
        robust_scale_m: Geman–McClure scale of the 3D residuals (DensePose, ICP), metres.
        batch_size: frames optimised together (a window). All of a window's frames start from
            one prediction, so short windows track fast motion best: on the synthetic capture
            (10 fps after the preprocess stride) windows of 4 frames halve the joint error of
            windows of 16; longer windows keep a GPU busier.
        max_points: observed points per frame used by ICP (an even subsample of the valid ones).
        max_densepose: DensePose correspondences per frame used (an even subsample).
        icp_voxel: voxel size (m) of the uniform subset of body vertices ICP matches against.
        normal_agreement: least cosine between observed and body normals of an ICP match.
        keypoint_min_confidence: detections below this confidence are ignored.
        keypoint_max_gap_px: initialisation lifts a keypoint only if an observed point projects
            within this distance of it.
        face_confidence: mean confidence of nose and eyes above which the person faces the camera.
        init_yaws: yaw angles tried when starting from the point cloud alone.
        init_iterations: stage-1 iterations refining each yaw candidate.
        outlier_mads: a frame whose residual is this many robust standard deviations above the
            median is re-initialised.
        outlier_floor: the robust standard deviation is at least this fraction of the median.
        chunk_elements: largest distance matrix of one correspondence-search chunk.
        correct_depth: after fitting, estimate the clothing's depth offset from multi-view
            consistency (:mod:`fitting.depth_offset`) and fit again with a clothing layer that
            thick (:func:`refit_with_clothing`); only when ICP or DensePose matches the body to
            the surface (:func:`matches_surface`): keypoints alone see no depth.
        depth_refits: most refits of :attr:`correct_depth`, each adding the remaining offset to
            the layer.
        match_scalp: let ICP and DensePose match the scalp (:func:`scalp`). Off by default: hair
            stands centimetres off the bald skull of the body model, and matched to it would
            pull the head towards the camera in every view from behind (on the ``small``
            protocol the head joint sat 1.26 cm off in those frames when matched, 0.71 cm when
            not); the face, the keypoints and the neck place the head without it.
        device: where to fit; None = where the observations are.
    """

    iterations: tuple[int, int, int] = (15, 25, 40)
    first_window_factor: int = 3
    lr_rotation: float = 0.02
    lr_translation: float = 0.01
    lr_pose: float = 0.02
    lr_shape: float = 0.01
    refresh_every: int = 5
    robust_scale_px: float = 50.0
    robust_scale_m: float = 0.05
    batch_size: int = 4
    max_points: int = 1024
    max_densepose: int = 512
    icp_voxel: float = 0.02
    normal_agreement: float = 0.3
    keypoint_min_confidence: float = 0.1
    keypoint_max_gap_px: float = 25.0
    face_confidence: float = 0.3
    init_yaws: int = 8
    init_iterations: int = 30
    outlier_mads: float = 4.0
    outlier_floor: float = 0.75
    chunk_elements: int = 1 << 24
    correct_depth: bool = True
    depth_refits: int = 2
    match_scalp: bool = False
    device: str | None = None


@dataclass
class BodyStart:
    """A known starting point for the first frame (instead of its keypoints or point cloud).

    Attributes:
        pose: (72,) axis-angle pose and trans: (3,) translation, in the depth camera's frame;
        shape: (S,) or None for the model's default (stage 3 refines it; to keep a known shape
            fixed, give it here and set the third of :attr:`FitOptions.iterations` to 0).
    """

    pose: torch.Tensor
    trans: torch.Tensor
    shape: torch.Tensor | None = None


@dataclass
class BodyFit:
    """The fitted bodies of F frames (CPU tensors), in the depth camera's frame.

    Attributes:
        frames: (F,) frame indices in the recording.
        shape: (S,) one shape for the whole sequence.
        poses: (F, 72) axis-angle poses; trans: (F, 3) translations (``BodyModel.forward``'s).
        residuals: (F,) data energy of each fitted frame (the sum of ``terms``).
        terms: per data term ("keypoints", "densepose", "icp"), (F,) weighted energy.
        reinitialised: (F,) bool, frames whose first fit was far worse than the rest and were
            re-initialised from their own observations.
        clothing: metres of the clothing layer the fit used, by region of
            :data:`fitting.depth_offset.CLOTHED_REGIONS` (:func:`clothing_layer`); empty for none.
        depth_offsets: the depth-offset estimates by region after each pass (the last: what
            remains), with their evidence; empty when :attr:`FitOptions.correct_depth` is off.
    """

    frames: torch.Tensor
    shape: torch.Tensor
    poses: torch.Tensor
    trans: torch.Tensor
    residuals: torch.Tensor
    terms: dict[str, torch.Tensor]
    reinitialised: torch.Tensor
    clothing: dict[str, float] = field(default_factory=dict)
    depth_offsets: list[dict[str, DepthOffset]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Keypoints and geometry


@dataclass(frozen=True)
class KeypointGather:
    """Differentiable 3D keypoints: a torch version of :class:`~rgbd2avatar.body.keypoints.KeypointLayout`.

    Keypoint k is row ``index[k]`` of the pool [24 joints, landmark vertices, joint-pair midpoints].

    Attributes:
        index: (K,) long; vertices: (L,) long landmark vertex ids; pairs: (Q, 2) long joint ids.
    """

    index: torch.Tensor
    vertices: torch.Tensor
    pairs: torch.Tensor

    def points(self, joints: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
        """(F, K, 3) keypoints from posed joints (F, J, 3) and vertices (F, V, 3)."""
        midpoints = joints[:, self.pairs].mean(2)
        pool = torch.cat([joints, vertices[:, self.vertices], midpoints], 1)
        return pool[:, self.index]


def keypoint_gather(body: BodyModel, names: tuple[str, ...], device: torch.device) -> KeypointGather:
    """The :class:`KeypointGather` of a keypoint set on ``body``."""
    layout = kp.keypoint_layout(names, kp.landmark_vertices(body))
    joints, vertices, pairs = (
        torch.as_tensor(a, device=device) for a in (layout.joints, layout.vertices, layout.pairs)
    )
    is_vertex, is_pair = vertices >= 0, pairs[:, 0] >= 0
    index = joints.clone()
    index[is_vertex] = NUM_JOINTS + torch.arange(int(is_vertex.sum()), device=device)
    index[is_pair] = NUM_JOINTS + int(is_vertex.sum()) + torch.arange(int(is_pair.sum()), device=device)
    return KeypointGather(index, vertices[is_vertex], pairs[is_pair])


def voxel_subset(points: torch.Tensor, voxel: float) -> torch.Tensor:
    """Indices of one point per occupied voxel (the lowest index in it): a spatially even subset.

    Args:
        points: (V, 3); voxel: edge length.
    Returns:
        (V',) long, sorted.
    """
    keys = torch.floor(points / voxel).long()
    _, cell = torch.unique(keys, dim=0, return_inverse=True)
    ids = torch.arange(len(points), device=points.device)
    first = torch.full((int(cell.max()) + 1,), len(points), device=points.device)
    return first.scatter_reduce(0, cell, ids, "amin").sort().values


@dataclass(frozen=True)
class SurfaceSubset:
    """The body vertices ICP matches against, with the faces their normals are made of.

    Attributes:
        vertices: (V',) long vertex ids; faces: (T', 3) long, the faces touching them;
        around: (V', D) long, each vertex's faces as rows of ``faces``, padded with T'.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    around: torch.Tensor

    def normals(self, vertices: torch.Tensor) -> torch.Tensor:
        """(F, V', 3) area-weighted unit normals of the subset from all vertices (F, V, 3)."""
        corners = vertices[:, self.faces]  # (F, T', 3, 3)
        face_normals = torch.cross(
            corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0], -1
        )
        padded = torch.cat([face_normals, face_normals.new_zeros(len(vertices), 1, 3)], 1)
        return torch.nn.functional.normalize(padded[:, self.around].sum(2), dim=-1)


def surface_subset(body: BodyModel, voxel: float) -> SurfaceSubset:
    """A voxel-even subset of the body's rest vertices (:func:`voxel_subset`) and its face stencil."""
    faces = body.faces
    chosen = voxel_subset(body.rest()[0][0], voxel)
    position = torch.full((body.num_vertices,), -1, dtype=torch.long, device=faces.device)
    position[chosen] = torch.arange(len(chosen), device=faces.device)
    corner_vertex = position[faces.reshape(-1)]  # (3T,) subset position of each face corner, or -1
    corner_face = torch.arange(len(faces), device=faces.device).repeat_interleave(3)
    kept = corner_vertex >= 0
    owner, face = corner_vertex[kept], corner_face[kept]
    used, local = torch.unique(face, return_inverse=True)
    order = torch.argsort(owner, stable=True)
    owner, local = owner[order], local[order]
    counts = torch.bincount(owner, minlength=len(chosen))
    rank = torch.arange(len(owner), device=faces.device) - (torch.cumsum(counts, 0) - counts)[owner]
    around = torch.full((len(chosen), int(counts.max())), len(used), dtype=torch.long, device=faces.device)
    around[owner, rank] = local
    return SurfaceSubset(chosen, faces[used], around)


def gather_rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per-frame rows: values (F, V, C), index (F, ...) long → (F, ..., C)."""
    flat = index.reshape(index.shape[0], -1)
    picked = torch.gather(values, 1, flat[..., None].expand(-1, -1, values.shape[-1]))
    return picked.reshape(*index.shape, values.shape[-1])


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values (F, N) over mask (F, N) along N → (F,); 0 for frames with nothing."""
    return (values * mask).sum(-1) / mask.sum(-1).clamp_min(1)


def geman_mcclure(squared: torch.Tensor, scale: float) -> torch.Tensor:
    """Geman–McClure ρ = σ² r² / (σ² + r²) of squared residuals r² (any shape)."""
    s2 = scale * scale
    return s2 * squared / (s2 + squared)


def yaw_rotations(count: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(Y, 3, 3) body-to-camera rotations of an upright body turned by 2π i / Y about the vertical.

    At yaw 0 the body faces the camera: body up (+y) ↦ camera −y, body forward (+z) ↦ camera −z.
    """
    angles = torch.arange(count, dtype=dtype, device=device) * (2.0 * math.pi / count)
    about_up = torch.tensor(CAMERA_UP, dtype=dtype, device=device) * angles[:, None]
    upright = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=dtype, device=device))
    return lbs.axis_angle_to_matrix(about_up) @ upright


# --------------------------------------------------------------------------------------------------
# What a window of frames fits to


@dataclass
class Targets:
    """The observations of a batch of frames, prepared for the energy (all on one device).

    Attributes:
        points, normals: (F, P, 3) the points ICP uses and their observed normals; valid: (F, P).
        dp_points: (F, M, 3) observed points with a DensePose label; dp_corners: (F, M, 3) long,
        the vertex ids of their triangles; dp_barycentrics: (F, M, 3); dp_valid: (F, M).
        kp_xy: (F, K, 2) detections in colour pixels; kp_conf: (F, K) confidence, 0 below the
        minimum (K = 0 without keypoints).
    """

    points: torch.Tensor
    normals: torch.Tensor
    valid: torch.Tensor
    dp_points: torch.Tensor
    dp_corners: torch.Tensor
    dp_barycentrics: torch.Tensor
    dp_valid: torch.Tensor
    kp_xy: torch.Tensor
    kp_conf: torch.Tensor

    @property
    def num_frames(self) -> int:
        return self.points.shape[0]

    def select(self, index: torch.Tensor) -> Targets:
        """The targets of some frames: index (F',) long."""
        return Targets(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def repeat(self, count: int) -> Targets:
        """Each frame ``count`` times in a row (F·count frames), for trying candidates."""
        return Targets(**{f.name: getattr(self, f.name).repeat_interleave(count, 0) for f in fields(self)})


def even_subsample(valid: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``count`` valid rows per frame, evenly spread over the valid ones in row order.

    Observed points come in image order, so an even stride over them is an even spread over the
    silhouette.

    Args:
        valid: (F, N) bool.
    Returns:
        index (F, P) long into N and kept (F, P) bool, P = min(count, N).
    """
    size = min(count, valid.shape[1])
    order = torch.argsort((~valid).to(torch.uint8), dim=1, stable=True)  # valid rows first
    total = valid.sum(1)
    step = (total / size).clamp_min(1.0)
    ranks = (torch.arange(size, device=valid.device) * step[:, None]).long()
    kept = ranks < total[:, None]
    return torch.gather(order, 1, ranks.clamp_max(valid.shape[1] - 1)), kept


def prepare_targets(obs: FitObservations, ctx: Context) -> Targets:
    """:class:`Targets` of a batch of observations already on the fitting device; DensePose
    correspondences on vertices ICP may not match (:attr:`Context.matchable`) are left out."""
    options = ctx.options
    index, kept = even_subsample(obs.valid, options.max_points)
    dp_rows, dp_kept = even_subsample(obs.dp_valid, options.max_densepose)
    dp_points = gather_rows(obs.points, torch.gather(obs.dp_points, 1, dp_rows))
    frames = obs.num_frames
    dp_corners = ctx.body.faces[torch.gather(obs.dp_triangles, 1, dp_rows)]
    if ctx.keypoints is not None:
        conf = obs.keypoints[..., 2]
        kp_xy, kp_conf = (
            obs.keypoints[..., :2],
            torch.where(conf >= options.keypoint_min_confidence, conf, 0.0),
        )
    else:
        kp_xy, kp_conf = obs.points.new_zeros(frames, 0, 2), obs.points.new_zeros(frames, 0)
    return Targets(
        points=gather_rows(obs.points, index),
        normals=gather_rows(obs.normals, index),
        valid=kept & torch.gather(obs.valid, 1, index),
        dp_points=dp_points,
        dp_corners=dp_corners,
        dp_barycentrics=gather_rows(obs.dp_barycentrics, dp_rows),
        dp_valid=dp_kept & torch.gather(obs.dp_valid, 1, dp_rows) & ctx.matchable[dp_corners].all(-1),
        kp_xy=kp_xy,
        kp_conf=kp_conf,
    )


@dataclass
class Context:
    """What stays fixed for a whole fit: the body, weights, options, cameras and lookup tables.

    Attributes:
        keypoints: the keypoint set's gather, None without keypoints; keypoint_names: its names.
        color_from_depth: (4, 4) ``calibration.depth_to_color`` on the device.
        surface: the body vertices ICP matches against.
        limits: (J, 3) lower and upper joint limits; bounds: shape bounds or None;
        prior_scales: (69,) per-component scales of the pose prior;
        matchable: (V,) bool, the body vertices ICP and DensePose may match (all but the
            scalp unless :attr:`FitOptions.match_scalp`).
        clothing: (V,) metres the observed surface stands in front of each body vertex along
            the viewing ray (:func:`clothing_layer`), or None.
    """

    body: BodyModel
    weights: FitWeights
    options: FitOptions
    calibration: Calibration
    keypoints: KeypointGather | None
    keypoint_names: tuple[str, ...]
    color_from_depth: torch.Tensor
    surface: SurfaceSubset
    limits: tuple[torch.Tensor, torch.Tensor]
    bounds: tuple[float, float] | None
    prior_scales: torch.Tensor
    matchable: torch.Tensor
    clothing: torch.Tensor | None = None


def clothing_layer(body: BodyModel, thickness: Mapping[str, float]) -> torch.Tensor:
    """(V,) metres of clothing on each vertex: each region of
    :data:`fitting.depth_offset.CLOTHED_REGIONS` (hips and thighs; trunk and upper arms) as thick
    as ``thickness`` gives it (regions not named: none), thinning linearly along the thighs and
    upper arms to nothing at the knees and elbows (:data:`fitting.depth_offset.LIMB_ENDS`; short
    sleeves and shorts leave elbows and knees bare), and blending between regions and fading out
    towards the bare hands, feet and head as the vertices' skinning weights move between bones.

    Positions along a limb are measured in the rest pose of the model's default shape: the
    vertex's projection onto the bone from its joint (0) to the joint at its far end (1).
    """
    vertices, joints = (value[0] for value in body.rest())
    layer = vertices.new_zeros(len(vertices))
    for region, metres in thickness.items():
        for name in CLOTHED_REGIONS[region]:
            bone = JOINT_INDEX[name]
            cover = body.weights[:, bone]
            if name in LIMB_ENDS:
                start, axis = joints[bone], joints[JOINT_INDEX[LIMB_ENDS[name]]] - joints[bone]
                cover = cover * (1.0 - (vertices - start) @ axis / (axis @ axis)).clamp(0.0, 1.0)
            layer = layer + metres * cover
    return layer


def scalp(body: BodyModel) -> torch.Tensor:
    """(V,) bool: the vertices skinned mostly (≥ 0.5) to the head whose rest-pose normal faces
    forward less than :data:`SCALP_FACING`: the crown, the back and the sides of the head."""
    vertices = body.rest()[0]
    forward = batched_vertex_normals(vertices, body.faces)[0, :, 2]
    return (body.weights[:, JOINT_INDEX["head"]] >= 0.5) & (forward < SCALP_FACING)


def make_context(
    body: BodyModel,
    obs: FitObservations,
    weights: FitWeights,
    options: FitOptions,
    device: torch.device,
    clothing: Mapping[str, float] | None = None,
) -> Context:
    """The :class:`Context` of fitting ``obs`` with ``body`` (already on ``device``), with a
    clothing layer of ``clothing`` metres by region (:func:`clothing_layer`; None: none)."""
    use_keypoints = (
        obs.keypoints is not None
        and obs.keypoint_names is not None
        and obs.calibration.color is not None
        and weights.keypoints > 0
    )
    return Context(
        body=body,
        weights=weights,
        options=options,
        calibration=obs.calibration,
        keypoints=keypoint_gather(body, obs.keypoint_names, device) if use_keypoints else None,
        keypoint_names=tuple(obs.keypoint_names or ()) if use_keypoints else (),
        color_from_depth=torch.as_tensor(obs.calibration.depth_to_color, device=device),
        surface=surface_subset(body, options.icp_voxel),
        limits=priors.joint_limits(device=device),
        bounds=priors.shape_bounds(body),
        prior_scales=priors.pose_prior_scales(device=device),
        matchable=torch.ones(body.num_vertices, dtype=torch.bool, device=device)
        if options.match_scalp
        else ~scalp(body),
        clothing=clothing_layer(body, clothing) if clothing else None,
    )


# --------------------------------------------------------------------------------------------------
# The bodies being fitted


@dataclass
class BodyState:
    """Bodies of F frames: rot (F, 3, 3) root rotation, position (F, 3) of the pelvis joint,
    body_pose (F, 69) for joints 1..23, shape (S,) shared."""

    rot: torch.Tensor
    position: torch.Tensor
    body_pose: torch.Tensor
    shape: torch.Tensor

    def select(self, index: torch.Tensor) -> BodyState:
        return BodyState(self.rot[index], self.position[index], self.body_pose[index], self.shape)

    def replaced(self, take: torch.Tensor, other: BodyState) -> BodyState:
        """These bodies with the frames where take (F,) is True taken from ``other`` (same F)."""
        return BodyState(
            torch.where(take[:, None, None], other.rot, self.rot),
            torch.where(take[:, None], other.position, self.position),
            torch.where(take[:, None], other.body_pose, self.body_pose),
            self.shape,
        )

    def pose(self) -> torch.Tensor:
        """(F, 72) axis-angle poses."""
        return torch.cat([lbs.matrix_to_axis_angle(self.rot), self.body_pose], -1)

    def rotations(self) -> torch.Tensor:
        """(F, J, 3, 3): the root rotation, then joints 1..23's local rotations."""
        return joint_rotations(self.rot, self.body_pose)


def joint_rotations(rot: torch.Tensor, body_pose: torch.Tensor) -> torch.Tensor:
    """(F, J, 3, 3) rotations from a root rotation (F, 3, 3) and body pose (F, 69)."""
    local = lbs.axis_angle_to_matrix(body_pose.reshape(-1, NUM_JOINTS - 1, 3))
    return torch.cat([rot[:, None], local], 1)


@dataclass
class Posed:
    """Posed bodies: vertices (F, V, 3), joints (F, J, 3), keypoints (F, K, 3) or None."""

    vertices: torch.Tensor
    joints: torch.Tensor
    keypoints: torch.Tensor | None


def local_bodies(body: BodyModel, body_pose: torch.Tensor, shape: torch.Tensor) -> BodyOutput:
    """The articulated bodies with an identity root and no translation (F frames)."""
    root = body_pose.new_zeros(body_pose.shape[0], 3)
    return body(torch.cat([root, body_pose], -1), shape)


def place(
    local: torch.Tensor, pelvis: torch.Tensor, rot: torch.Tensor, position: torch.Tensor
) -> torch.Tensor:
    """Rigidly place local points: R (x − j0) + p.

    Args:
        local: (F, N, 3); pelvis: (F, 1, 3) rest pelvis j0; rot: (F, 3, 3); position: (F, 3) p.
    """
    return (local - pelvis) @ rot.transpose(-1, -2) + position[:, None]


def pose_bodies(ctx: Context, rot: torch.Tensor, state: BodyState, local: BodyOutput | None = None) -> Posed:
    """Pose the bodies of ``state`` with root rotation ``rot`` (F, 3, 3); the vertices are those of
    the observed surface: with :attr:`Context.clothing`, moved that far towards the camera.

    ``local`` (the :func:`local_bodies` of the state) is reused when given (stage 1)."""
    if local is None:
        local = local_bodies(ctx.body, state.body_pose, state.shape)
    pelvis = local.joints[:, :1]
    vertices = place(local.vertices, pelvis, rot, state.position)
    joints = place(local.joints, pelvis, rot, state.position)
    keypoints = ctx.keypoints.points(joints, vertices) if ctx.keypoints is not None else None
    if ctx.clothing is not None:
        rays = torch.nn.functional.normalize(state.position, dim=-1)
        vertices = vertices - ctx.clothing[:, None] * rays[:, None]
    return Posed(vertices, joints, keypoints)


# --------------------------------------------------------------------------------------------------
# Correspondences and data terms


@dataclass
class Correspondences:
    """ICP matches: index (F, P) long, the body vertex of each point; normal (F, P, 3), that
    vertex's normal when matched (the plane's orientation until the next search); ok (F, P) bool."""

    index: torch.Tensor
    normal: torch.Tensor
    ok: torch.Tensor


def nearest_allowed(
    points: torch.Tensor, candidates: torch.Tensor, allowed: torch.Tensor, chunk_elements: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest allowed candidate of every point, by chunks of points.

    Candidates that are not allowed are moved :data:`FAR` away rather than masked, which keeps
    the search to ``torch.cdist`` and ``min``.

    Args:
        points: (F, P, 3); candidates: (F, C, 3); allowed: (F, C) bool.
    Returns:
        index (F, P) long into C and found (F, P) bool (False where nothing is allowed).
    """
    frames, count = candidates.shape[:2]
    step = max(1, chunk_elements // max(1, frames * count))
    candidates = torch.where(allowed[..., None], candidates, FAR)
    distances, indices = [], []
    for start in range(0, points.shape[1], step):
        best = torch.cdist(points[:, start : start + step], candidates).min(-1)
        distances.append(best.values)
        indices.append(best.indices)
    return torch.cat(indices, 1), torch.cat(distances, 1) < 0.5 * FAR


def find_correspondences(ctx: Context, targets: Targets, posed: Posed) -> Correspondences:
    """Nearest front-facing body vertex of every observed point, vetted by normal agreement;
    points nearest to a vertex that may not be matched (:attr:`Context.matchable`) are left out."""
    with torch.no_grad():
        surface = posed.vertices[:, ctx.surface.vertices]
        normals = ctx.surface.normals(posed.vertices)
        front = (normals * surface).sum(-1) < 0  # the camera sits at the origin
        nearest, found = nearest_allowed(targets.points, surface, front, ctx.options.chunk_elements)
        normal = gather_rows(normals, nearest)
        agree = (normal * targets.normals).sum(-1) > ctx.options.normal_agreement
        index = ctx.surface.vertices[nearest]
        return Correspondences(index, normal, found & agree & targets.valid & ctx.matchable[index])


def to_color_pixels(ctx: Context, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour-image pixels (..., 2) and validity (...,) of depth-camera points (..., 3)."""
    return camera.project(camera.transform_points(ctx.color_from_depth, points), ctx.calibration.color)


def keypoint_cost(ctx: Context, targets: Targets, posed: Posed, scale: float) -> torch.Tensor:
    """(F,) Σ_k c_k ρ(reprojection error of keypoint k) / K, pixels²."""
    if posed.keypoints is None or targets.kp_conf.shape[1] == 0:
        return targets.points.new_zeros(targets.num_frames)
    pixels, valid = to_color_pixels(ctx, posed.keypoints)
    squared = ((pixels - targets.kp_xy) ** 2).sum(-1)
    return (targets.kp_conf * valid * geman_mcclure(squared, scale)).sum(-1) / targets.kp_conf.shape[1]


def densepose_corners(targets: Targets, posed: Posed) -> tuple[torch.Tensor, torch.Tensor]:
    """The posed body's surface point (F, M, 3) that DensePose assigns to each labelled point, and
    the corners (F, M, 3, 3) of its triangle."""
    corners = gather_rows(posed.vertices, targets.dp_corners)
    return (corners * targets.dp_barycentrics[..., None]).sum(-2), corners


def densepose_cost(targets: Targets, posed: Posed, scale: float) -> torch.Tensor:
    """(F,) mean ρ(3D distance of each DensePose point to its body surface point), metres²."""
    surface, _ = densepose_corners(targets, posed)
    squared = ((surface - targets.dp_points) ** 2).sum(-1)
    return masked_mean(geman_mcclure(squared, scale), targets.dp_valid)


def icp_cost(targets: Targets, posed: Posed, matches: Correspondences, scale: float) -> torch.Tensor:
    """(F,) mean ρ(point-to-plane distance to the matched vertex's tangent plane), metres²."""
    vertices = gather_rows(posed.vertices, matches.index)
    distance = ((targets.points - vertices) * matches.normal).sum(-1)
    return masked_mean(geman_mcclure(distance * distance, scale), matches.ok)


def data_terms(
    ctx: Context, targets: Targets, posed: Posed, matches: Correspondences
) -> dict[str, torch.Tensor]:
    """Weighted data energies of every frame: name → (F,)."""
    w, o = ctx.weights, ctx.options
    terms = {}
    if w.keypoints > 0:
        terms["keypoints"] = w.keypoints * keypoint_cost(ctx, targets, posed, o.robust_scale_px)
    if w.densepose > 0:
        terms["densepose"] = w.densepose * densepose_cost(targets, posed, o.robust_scale_m)
    if w.icp > 0:
        terms["icp"] = w.icp * icp_cost(targets, posed, matches, o.robust_scale_m)
    return terms


# --------------------------------------------------------------------------------------------------
# Priors and temporal links


@dataclass
class Links:
    """Temporal context of a window: the previous window's last frames and which frames may be
    smoothed.

    Attributes:
        rots: (L, J, 3, 3) and positions: (L, 3) of the previous window's last L ≤ 2 frames (fixed);
        ok: (L + F,) bool, frames that take part in smoothness (re-initialised ones do not).
    """

    rots: torch.Tensor
    positions: torch.Tensor
    ok: torch.Tensor


def smoothness(ctx: Context, rots: torch.Tensor, positions: torch.Tensor, links: Links) -> torch.Tensor:
    """Temporal smoothness of a window continued from the previous one: a scalar.

    Args:
        rots: (F, J, 3, 3) the window's rotations (root first); positions: (F, 3) of the pelvis.
    """
    w = ctx.weights
    all_rots, all_positions = torch.cat([links.rots, rots]), torch.cat([links.positions, positions])
    if len(all_positions) < 3:
        return positions.new_zeros(())
    triples = links.ok[:-2] & links.ok[1:-1] & links.ok[2:]
    cost = w.pose_smoothness * priors.pose_smoothness(all_rots) + w.translation_smoothness * (
        priors.translation_smoothness(all_positions)
    )
    return (cost * triples).sum()


@dataclass
class ShapeAnchor:
    """Shape continuity: the previous estimate shape (S,) and the weight pulling towards it."""

    shape: torch.Tensor
    weight: float


def prior_energy(
    ctx: Context, state: BodyState, rots: torch.Tensor, links: Links | None, anchor: ShapeAnchor | None
) -> torch.Tensor:
    """Pose, shape and smoothness priors of a window: a scalar.

    Args:
        state: the window's bodies; rots: (F, J, 3, 3) their :meth:`BodyState.rotations`.
        links: temporal context, None for independent frames; anchor: shape continuity or None.
    """
    w = ctx.weights
    pose = torch.cat([state.body_pose.new_zeros(len(state.body_pose), 3), state.body_pose], -1)
    energy = w.pose_prior * priors.pose_l2(state.body_pose, ctx.prior_scales).sum()
    energy = energy + w.joint_limits * priors.joint_limit_penalty(pose, *ctx.limits).sum()
    energy = energy + w.shape_prior * priors.shape_prior(state.shape, ctx.body.default_shape)
    energy = energy + w.shape_bounds * priors.shape_bounds_penalty(state.shape, ctx.bounds)
    if anchor is not None:
        energy = energy + anchor.weight * ((state.shape - anchor.shape) ** 2).sum()
    if links is not None:
        energy = energy + smoothness(ctx, rots, state.position, links)
    return energy


# --------------------------------------------------------------------------------------------------
# Optimisation


def cosine_decay(iterations: int) -> Callable[[int], float]:
    """Learning-rate factor: a cosine from 1 to 0.1 over a stage."""
    return lambda step: 0.1 + 0.45 * (1.0 + math.cos(math.pi * min(step, iterations) / max(1, iterations)))


def run_stage(
    ctx: Context,
    targets: Targets,
    state: BodyState,
    stage: int,
    iterations: int,
    links: Links | None = None,
    anchor: ShapeAnchor | None = None,
) -> BodyState:
    """Optimise one stage of the schedule (1: root + translation; 2: + body pose; 3: + shape).

    Returns:
        The optimised bodies (detached).
    """
    o = ctx.options
    delta = state.position.new_zeros(state.position.shape, requires_grad=True)
    current = BodyState(
        state.rot,
        state.position.clone().requires_grad_(),
        state.body_pose.clone().requires_grad_(stage >= 2),
        state.shape.clone().requires_grad_(stage >= 3),
    )
    groups = [
        {"params": [delta], "lr": o.lr_rotation},
        {"params": [current.position], "lr": o.lr_translation},
    ]
    if stage >= 2:
        groups.append({"params": [current.body_pose], "lr": o.lr_pose})
    if stage >= 3:
        groups.append({"params": [current.shape], "lr": o.lr_shape})
    optimiser = torch.optim.Adam(groups, betas=ADAM_BETAS)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, cosine_decay(iterations))
    local = None
    if stage == 1:
        with torch.no_grad():
            local = local_bodies(ctx.body, current.body_pose, current.shape)
    matches = None
    for iteration in range(iterations):
        rot = lbs.axis_angle_to_matrix(delta) @ state.rot
        posed = pose_bodies(ctx, rot, current, local)
        if iteration % o.refresh_every == 0:
            matches = find_correspondences(ctx, targets, posed)
        terms = data_terms(ctx, targets, posed, matches)
        rots = joint_rotations(rot, current.body_pose)
        energy = total_residual(terms, len(rot), rot).sum() + prior_energy(ctx, current, rots, links, anchor)
        optimiser.zero_grad(set_to_none=True)
        energy.backward()
        optimiser.step()
        schedule.step()
    with torch.no_grad():
        rot = lbs.axis_angle_to_matrix(delta) @ state.rot
    return BodyState(rot, current.position.detach(), current.body_pose.detach(), current.shape.detach())


def evaluate(ctx: Context, targets: Targets, state: BodyState) -> dict[str, torch.Tensor]:
    """Weighted data energies of fitted bodies at the nominal robust scales: name → (F,)."""
    with torch.no_grad():
        posed = pose_bodies(ctx, state.rot, state)
        return data_terms(ctx, targets, posed, find_correspondences(ctx, targets, posed))


def total_residual(terms: dict[str, torch.Tensor], frames: int, like: torch.Tensor) -> torch.Tensor:
    """(F,) sum of the per-term energies (zeros when every term is disabled)."""
    return sum(terms.values(), like.new_zeros(frames))


def fit_stages(
    ctx: Context,
    targets: Targets,
    state: BodyState,
    links: Links | None,
    anchor: ShapeAnchor | None,
    factor: int = 1,
) -> BodyState:
    """Run the three stages of :attr:`FitOptions.iterations` (times ``factor``) on a window."""
    for stage, iterations in enumerate(ctx.options.iterations, start=1):
        if iterations > 0:
            state = run_stage(ctx, targets, state, stage, iterations * factor, links, anchor)
    return state


# --------------------------------------------------------------------------------------------------
# Initialisation


def keypoint_start(ctx: Context, targets: Targets, local: BodyOutput) -> tuple[torch.Tensor, ...]:
    """Root rotation and pelvis position of each frame from its torso keypoints (see the module
    docstring).

    Args:
        local: the frames' :func:`local_bodies`.
    Returns:
        rot (F, 3, 3), position (F, 3), ok (F,) bool: frames with a shoulder pair or a hip pair lifted.
    """
    frames = targets.num_frames
    names = ctx.keypoint_names
    if not set(TORSO_KEYPOINTS) <= set(names):
        device = targets.points.device
        eye = torch.eye(3, device=device).expand(frames, 3, 3)
        return eye, targets.points.new_zeros(frames, 3), torch.zeros(frames, dtype=torch.bool, device=device)
    o = ctx.options
    torso = [names.index(n) for n in TORSO_KEYPOINTS]
    pixels, projectable = to_color_pixels(ctx, targets.points)
    gaps = torch.cdist(targets.kp_xy[:, torso], pixels)  # (F, 4, P)
    gaps = gaps.masked_fill(~(projectable & targets.valid)[:, None], torch.inf)
    gap, nearest = gaps.min(-1)
    found = (targets.kp_conf[:, torso] > 0) & (gap < o.keypoint_max_gap_px)
    surface = gather_rows(targets.points, nearest)
    lifted = surface + JOINT_DEPTH * torch.nn.functional.normalize(surface, dim=-1)
    rot = torso_rotation(lifted, found, facing_camera(ctx, targets))
    model = local.joints[:, [JOINT_INDEX[n] for n in TORSO_KEYPOINTS]]
    weight = found[..., None].float()
    anchor = (lifted * weight).sum(1) / weight.sum(1).clamp_min(1)
    anchor_local = (model * weight).sum(1) / weight.sum(1).clamp_min(1)
    pelvis = local.joints[:, 0]
    position = anchor - ((anchor_local - pelvis)[:, None] @ rot.transpose(-1, -2))[:, 0]
    pairs = found.reshape(frames, 2, 2).all(-1).any(-1)
    return rot, position, pairs


def facing_camera(ctx: Context, targets: Targets) -> torch.Tensor:
    """(F,) bool: the face keypoints are confident enough for the person to face the camera."""
    face = [ctx.keypoint_names.index(n) for n in FACE_KEYPOINTS if n in ctx.keypoint_names]
    if not face:
        return torch.ones(targets.num_frames, dtype=torch.bool, device=targets.points.device)
    return targets.kp_conf[:, face].mean(-1) > ctx.options.face_confidence


def torso_rotation(lifted: torch.Tensor, found: torch.Tensor, facing: torch.Tensor) -> torch.Tensor:
    """Body-to-camera rotation from lifted torso joints.

    Args:
        lifted: (F, 4, 3) left/right shoulder, left/right hip in the camera frame;
        found: (F, 4) bool; facing: (F,) bool, the person faces the camera.
    Returns:
        (F, 3, 3) with columns left (body +x), up (+y) and forward (+z). Left comes from the
        shoulder and hip lines, up from hips to shoulders (the camera's up without both); left is
        negated where the forward direction disagrees with ``facing``.
    """
    shoulders, hips = lifted[:, :2], lifted[:, 2:]
    pair_ok = found.reshape(-1, 2, 2).all(-1).float()  # (F, 2) shoulders, hips
    left = pair_ok[:, :1] * (shoulders[:, 0] - shoulders[:, 1]) + pair_ok[:, 1:] * (hips[:, 0] - hips[:, 1])
    weight = found.float()[..., None]
    mid_shoulder = (shoulders * weight[:, :2]).sum(1) / weight[:, :2].sum(1).clamp_min(1)
    mid_hip = (hips * weight[:, 2:]).sum(1) / weight[:, 2:].sum(1).clamp_min(1)
    both = (found[:, :2].any(-1) & found[:, 2:].any(-1))[:, None]
    camera_up = lifted.new_tensor(CAMERA_UP).expand_as(mid_hip)
    up = torch.nn.functional.normalize(torch.where(both, mid_shoulder - mid_hip, camera_up), dim=-1)
    left = torch.nn.functional.normalize(left - (left * up).sum(-1, keepdim=True) * up, dim=-1)
    forward = torch.cross(left, up, -1)
    towards = (forward * (mid_shoulder + mid_hip)).sum(-1) < 0
    sign = torch.where(towards == facing, 1.0, -1.0)[:, None]
    return torch.stack([left * sign, up, forward * sign], -1)


def cloud_start(ctx: Context, targets: Targets, body_pose: torch.Tensor, shape: torch.Tensor) -> BodyState:
    """Start of frames from their point clouds alone: the best of :attr:`FitOptions.init_yaws`
    upright yaw candidates at the centroid, each refined by a short stage 1.

    Args:
        body_pose: (F, 69) the articulation to start with; shape: (S,).
    """
    frames, yaws = targets.num_frames, ctx.options.init_yaws
    with torch.no_grad():
        local = local_bodies(ctx.body, body_pose, shape)
    centroid = (targets.points * targets.valid[..., None]).sum(1) / targets.valid.sum(
        1, keepdim=True
    ).clamp_min(1)
    pelvis = local.joints[:, 0]
    rot = yaw_rotations(yaws, centroid.dtype, centroid.device).repeat(frames, 1, 1)  # (F·Y, 3, 3)
    offset = (local.vertices.mean(1) - pelvis).repeat_interleave(yaws, 0)
    behind = centroid + JOINT_DEPTH * torch.nn.functional.normalize(centroid, dim=-1)
    position = behind.repeat_interleave(yaws, 0) - (offset[:, None] @ rot.transpose(-1, -2))[:, 0]
    candidates = BodyState(rot, position, body_pose.repeat_interleave(yaws, 0), shape)
    tried = targets.repeat(yaws)
    refined = run_stage(ctx, tried, candidates, 1, ctx.options.init_iterations)
    residual = total_residual(evaluate(ctx, tried, refined), frames * yaws, position)
    best = torch.arange(frames, device=position.device) * yaws + residual.reshape(frames, yaws).argmin(1)
    return refined.select(best)


def initialise(ctx: Context, targets: Targets, body_pose: torch.Tensor, shape: torch.Tensor) -> BodyState:
    """Starting bodies of frames from their own observations: keypoints where the torso was
    detected, the point cloud elsewhere.

    Args:
        body_pose: (F, 69) the articulation to start with; shape: (S,).
    """
    with torch.no_grad():
        local = local_bodies(ctx.body, body_pose, shape)
        rot, position, ok = keypoint_start(ctx, targets, local)
    if ok.all():
        return BodyState(rot, position, body_pose, shape)
    rest = torch.nonzero(~ok)[:, 0]
    from_cloud = cloud_start(ctx, targets.select(rest), body_pose[rest], shape)
    rot, position = rot.clone(), position.clone()
    rot[rest], position[rest] = from_cloud.rot, from_cloud.position
    return BodyState(rot, position, body_pose, shape)


# --------------------------------------------------------------------------------------------------
# Failure handling


def outlier_frames(residuals: torch.Tensor, history: torch.Tensor, options: FitOptions) -> torch.Tensor:
    """(F,) bool: frames whose residual is far above the median of the window and recent good frames.

    Args:
        residuals: (F,) this window's; history: (H,) recent good frames'.
    """
    reference = torch.cat([history, residuals])
    if len(reference) < 3:
        return torch.zeros_like(residuals, dtype=torch.bool)
    median = reference.median()
    spread = torch.maximum(1.4826 * (reference - median).abs().median(), options.outlier_floor * median)
    return residuals > median + options.outlier_mads * spread


# --------------------------------------------------------------------------------------------------
# The sequence


@dataclass
class Tracker:
    """What one window hands the next.

    Attributes:
        good: the last (at most two) frames not flagged as failures: (frame number in the fit,
            body of one frame); the last one's shape is the current shape estimate.
        links_rots: (L, J, 3, 3), links_positions: (L, 3), links_ok: (L,) the last L ≤ 2
            frames, for temporal smoothness (:class:`Links`).
        history: (H,) recent good frames' residuals; fitted: frames fitted so far;
        outputs: every window's results, on the CPU.
    """

    good: list[tuple[int, BodyState]]
    links_rots: torch.Tensor
    links_positions: torch.Tensor
    links_ok: torch.Tensor
    history: torch.Tensor
    fitted: int = 0
    outputs: list[dict[str, torch.Tensor]] = field(default_factory=list)


def window_links(tracker: Tracker, reinitialised: torch.Tensor) -> Links:
    """Temporal links of a window whose flagged frames (F,) take no part in smoothness."""
    return Links(tracker.links_rots, tracker.links_positions, torch.cat([tracker.links_ok, ~reinitialised]))


def extrapolate(tracker: Tracker, frames: int) -> BodyState:
    """Starting bodies of the next F frames: the last good body moved on at the constant velocity
    of the last two good frames (every joint keeps turning at its rate, the pelvis keeps moving),
    or held still after only one.
    """
    index, last = tracker.good[-1]
    if len(tracker.good) < 2:
        return last.select(torch.zeros(frames, dtype=torch.long, device=last.position.device))
    before_index, before = tracker.good[0]
    current = last.rotations()[0]  # (J, 3, 3)
    turn = lbs.matrix_to_axis_angle(before.rotations()[0].transpose(-1, -2) @ current)  # (J, 3)
    gap = index - before_index
    steps = torch.arange(frames, dtype=turn.dtype, device=turn.device) + (tracker.fitted - index)
    rots = current @ lbs.axis_angle_to_matrix(steps[:, None, None] * turn / gap)  # (F, J, 3, 3)
    position = last.position + steps[:, None] * (last.position - before.position) / gap
    body_pose = lbs.matrix_to_axis_angle(rots[:, 1:]).reshape(frames, -1)
    return BodyState(rots[:, 0], position, body_pose, last.shape)


def fit_window(
    ctx: Context, targets: Targets, tracker: Tracker
) -> tuple[BodyState, dict[str, torch.Tensor], torch.Tensor]:
    """Fit one window, re-initialising and re-fitting its failed frames.

    Returns:
        bodies, per-term energies name → (F,), reinitialised (F,) bool.
    """
    frames = targets.num_frames
    start = extrapolate(tracker, frames)
    anchor, factor = None, ctx.options.first_window_factor
    if tracker.fitted > 0:
        anchor = ShapeAnchor(start.shape, ctx.weights.shape_continuity * tracker.fitted / frames)
        factor = 1
    flags = torch.zeros(frames, dtype=torch.bool, device=targets.points.device)
    state = fit_stages(ctx, targets, start, window_links(tracker, flags), anchor, factor)
    terms = evaluate(ctx, targets, state)
    flags = outlier_frames(total_residual(terms, frames, targets.points), tracker.history, ctx.options)
    if flags.any():
        picked = torch.nonzero(flags)[:, 0]
        fresh = initialise(ctx, targets.select(picked), start.body_pose[picked], state.shape)
        restart = BodyState(state.rot.clone(), state.position.clone(), state.body_pose.clone(), state.shape)
        restart.rot[picked], restart.position[picked] = fresh.rot, fresh.position
        restart.body_pose[picked] = fresh.body_pose
        refit = fit_stages(ctx, targets, restart, window_links(tracker, flags), anchor, factor)
        refit_terms = evaluate(ctx, targets, refit)
        worse = flags & (
            total_residual(refit_terms, frames, refit.position)
            > total_residual(terms, frames, refit.position)
        )
        state = refit.replaced(worse, state)
        terms = evaluate(ctx, targets, state) if worse.any() else refit_terms
    return state, terms, flags


def advance(
    tracker: Tracker, state: BodyState, terms: dict[str, torch.Tensor], flags: torch.Tensor
) -> Tracker:
    """The tracker after a fitted window."""
    frames = len(flags)
    residuals = total_residual(terms, frames, state.position)
    good = torch.nonzero(~flags)[:, 0]
    recent = [(tracker.fitted + int(i), state.select(i[None])) for i in good[-2:]]
    earlier = [(index, replace(body, shape=state.shape)) for index, body in tracker.good if index >= 0]
    rots = torch.cat([tracker.links_rots, state.rotations()])[-2:]
    positions = torch.cat([tracker.links_positions, state.position])[-2:]
    ok = torch.cat([tracker.links_ok, ~flags])[-2:]
    output = {
        "poses": state.pose(),
        "positions": state.position,
        "residuals": residuals,
        "reinitialised": flags,
        **{f"term_{name}": value for name, value in terms.items()},
    }
    return replace(
        tracker,
        good=(earlier + recent)[-2:] or [(-1, replace(tracker.good[-1][1], shape=state.shape))],
        links_rots=rots,
        links_positions=positions,
        links_ok=ok,
        history=torch.cat([tracker.history, residuals[good]])[-HISTORY:],
        fitted=tracker.fitted + frames,
        outputs=[*tracker.outputs, {k: v.detach().cpu() for k, v in output.items()}],
    )


def first_state(ctx: Context, targets: Targets, start: BodyStart | None, device: torch.device) -> BodyState:
    """The first frame's starting body: ``start`` if given, else from its own observations."""
    body = ctx.body
    if start is not None:
        pose = start.pose.to(device, torch.float32).reshape(1, -1)
        shape = body.default_shape if start.shape is None else start.shape.to(device, torch.float32)
        position = start.trans.to(device, torch.float32).reshape(1, 3) + rest_pelvis(body, shape)
        return BodyState(lbs.axis_angle_to_matrix(pose[:, :3]), position, pose[:, 3:], shape)
    return initialise(
        ctx, targets.select(torch.tensor([0], device=device)), standing_pose(device), body.default_shape
    )


def standing_pose(device: torch.device) -> torch.Tensor:
    """(1, 69) the articulation a fit starts from: standing, arms :data:`ARM_DROP` below the T-pose
    (closer than the T-pose to most poses a capture starts in)."""
    pose = torch.zeros(NUM_JOINTS, 3, device=device)
    pose[JOINT_INDEX["left_shoulder"], 2] = -ARM_DROP
    pose[JOINT_INDEX["right_shoulder"], 2] = ARM_DROP
    return pose[1:].reshape(1, -1)


def rest_pelvis(body: BodyModel, shape: torch.Tensor) -> torch.Tensor:
    """(3,) the rest pelvis joint j0 of a shape (S,)."""
    return body.rest(shape)[1][0, 0]


def body_on(body: BodyModel, device: torch.device) -> BodyModel:
    """The body model on ``device`` (a copy if it lives elsewhere; the caller's is left alone)."""
    return body if body.v_template.device == device else copy.deepcopy(body).to(device)


def fit_body(
    body: BodyModel,
    obs: FitObservations,
    weights: FitWeights = FitWeights(),
    options: FitOptions = FitOptions(),
    progress: Callable[[int, int], None] | None = None,
    start: BodyStart | None = None,
    clothing: Mapping[str, float] | None = None,
) -> BodyFit:
    """Fit the body model to every frame of ``obs`` (see the module docstring for the method).

    Args:
        body: the body model (anny or SMPL).
        obs: observations of F frames (any device; windows are moved to the fitting device one
            at a time, so a long sequence may stay on the CPU).
        weights, options: see :class:`FitWeights`, :class:`FitOptions`.
        progress: called with (frames done, F) after each window (again from 0 for the refit
            of :attr:`FitOptions.correct_depth`).
        start: a known starting body for the first frame, instead of initialising it from its
            observations.
        clothing: metres by region that the observed clothed surface stands in front of the
            body along the viewing rays (see :func:`clothing_layer`), when known.
    Returns:
        :class:`BodyFit`, on the CPU.
    """
    device = torch.empty(0, device=options.device or obs.points.device).device
    body = body_on(body, device)
    ctx = make_context(body, obs, weights, options, device, clothing)
    total = obs.num_frames
    tracker = None
    for begin in range(0, total, options.batch_size):
        window = obs.select(slice(begin, begin + options.batch_size)).to(device)
        targets = prepare_targets(window, ctx)
        if tracker is None:
            tracker = new_tracker(first_state(ctx, targets, start, device))
        state, terms, flags = fit_window(ctx, targets, tracker)
        if flags.any():
            logger.info("re-initialised frames %s", window.frames[flags].tolist())
        tracker = advance(tracker, state, terms, flags)
        if progress is not None:
            progress(tracker.fitted, total)
    fit = collect(tracker, obs.frames, body)
    if not (options.correct_depth and matches_surface(weights, obs)):
        return replace(fit, clothing=dict(clothing or {}))
    return refit_with_clothing(body, obs, weights, options, progress, fit, clothing)


def matches_surface(weights: FitWeights, obs: FitObservations) -> bool:
    """Whether a data term matches the body to the observed surface (ICP, or DensePose with
    correspondences): only then can a clothing layer move the fit."""
    return weights.icp > 0 or (weights.densepose > 0 and bool(obs.dp_valid.any()))


def refit_with_clothing(
    body: BodyModel,
    obs: FitObservations,
    weights: FitWeights,
    options: FitOptions,
    progress: Callable[[int, int], None] | None,
    fit: BodyFit,
    clothing: Mapping[str, float] | None,
) -> BodyFit:
    """Fit again with a clothing layer until the views agree (see the module docstring).

    The depth offset s of each clothed region's points (:func:`depth_offsets_of`) is added to that
    region's layer and the sequence fitted again (shape fixed, the first pass's first body as the
    start), until every |s| < :data:`MIN_CLOTHING` or after :attr:`FitOptions.depth_refits`
    refits. The layer moves only the clothed parts back: the bare hands, feet and head, which the
    first pass fitted where they are, stay there (a rigid shift of the whole body would move them
    too)."""
    first, estimates = fit, [depth_offsets_of(body, obs, fit)]
    layer = dict.fromkeys(CLOTHED_REGIONS, 0.0) | dict(clothing or {})
    while remaining(estimates[-1]) >= MIN_CLOTHING and len(estimates) <= options.depth_refits:
        layer = {region: metres + estimates[-1][region].offset for region, metres in layer.items()}
        logger.info("fitting again with a clothing layer of %s", in_mm(layer))
        fit = fit_behind_layer(body, obs, weights, options, progress, first, layer)
        estimates.append(depth_offsets_of(body, obs, fit))
    return replace(fit, clothing=layer, depth_offsets=estimates)


def remaining(estimates: Mapping[str, DepthOffset]) -> float:
    """Metres: the largest depth offset of the regions, in size."""
    return max(abs(found.offset) for found in estimates.values())


def in_mm(metres: Mapping[str, float]) -> str:
    """Metres by region in millimetres, e.g. ``lower 21.3 mm, upper 19.0 mm``."""
    return ", ".join(f"{region} {value * 1e3:.1f} mm" for region, value in metres.items())


def fit_behind_layer(
    body: BodyModel,
    obs: FitObservations,
    weights: FitWeights,
    options: FitOptions,
    progress: Callable[[int, int], None] | None,
    first: BodyFit,
    clothing: Mapping[str, float],
) -> BodyFit:
    """One refit of :func:`refit_with_clothing`: the sequence fitted again behind a clothing layer
    ``clothing`` metres thick by region, the shape fixed, from the first pass's (``first``) first
    body."""
    stages = options.iterations
    again = replace(options, correct_depth=False, iterations=(stages[0], stages[1] + stages[2], 0))
    return fit_body(
        body, obs, weights, again, progress, BodyStart(first.poses[0], first.trans[0], first.shape), clothing
    )


def depth_offsets_of(body: BodyModel, obs: FitObservations, fit: BodyFit) -> dict[str, DepthOffset]:
    """:func:`fitting.depth_offset.estimate_depth_offsets` of a fit (each region of
    :data:`fitting.depth_offset.CLOTHED_REGIONS` from its points alone), on the body model's device."""
    device = body.v_template.device
    poses, shape, trans = (value.to(device) for value in (fit.poses, fit.shape, fit.trans))
    found = estimate_depth_offsets(body, poses, shape, trans, obs.points, obs.normals, obs.valid)
    logger.info(
        "clothing depth offsets %s from %d view pairs",
        in_mm({region: estimate.offset for region, estimate in found.items()}),
        max(estimate.pairs for estimate in found.values()),
    )
    return found


def new_tracker(first: BodyState) -> Tracker:
    """A tracker before the first window, starting from the first frame's body (frame −1: it is
    no fitted frame and gives no velocity)."""
    rots = first.rot.new_zeros(0, NUM_JOINTS, 3, 3)
    return Tracker(
        good=[(-1, first)],
        links_rots=rots,
        links_positions=first.position.new_zeros(0, 3),
        links_ok=torch.zeros(0, dtype=torch.bool, device=first.position.device),
        history=first.position.new_zeros(0),
    )


def collect(tracker: Tracker, frames: torch.Tensor, body: BodyModel) -> BodyFit:
    """The :class:`BodyFit` of every window's outputs, translations for the final shape."""
    joined = {key: torch.cat([out[key] for out in tracker.outputs]) for key in tracker.outputs[0]}
    shape = tracker.good[-1][1].shape
    return BodyFit(
        frames=frames.cpu(),
        shape=shape.cpu(),
        poses=joined["poses"],
        trans=joined["positions"] - rest_pelvis(body, shape).cpu(),
        residuals=joined["residuals"],
        terms={key[5:]: value for key, value in joined.items() if key.startswith("term_")},
        reinitialised=joined["reinitialised"],
    )
