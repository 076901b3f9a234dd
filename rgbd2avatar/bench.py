"""The accuracy benchmark on the synthetic subject: the protocol, its data and its table.

Protocol (two sizes and a noise-free variant, :data:`PROTOCOLS`):

- **Training capture**: the subject doing the built-in ``capture`` motion (one slow turn while
  raising the arms and bending the elbows), filmed by the virtual Azure Kinect at 30 fps.
- **Reconstruction evaluation**: evenly spaced training frames; each method's mesh for that
  frame against the ground-truth clothed mesh.
- **Animation evaluation**: held-out motions the capture never shows (``squat``, ``walk``, …);
  each method's mesh in those poses against the ground-truth clothed mesh.
- **Metrics** (:mod:`rgbd2avatar.metrics`): volumetric IoU (uniform + near-surface samples),
  Chamfer-L2 in cm and normal consistency, averaged over the evaluation frames.

Methods in the table are the stages that exist. The naked-body baseline is always there: the
body model without clothing, as fitted by ``fit-body`` to the capture (``naked_body_fitted``, on
the fitted frames nearest the evaluation frames) and, as a reference, posed with the
ground-truth pose and shape (``naked_body_gt``). A second reference, ``pina_gt_poses``, is PINA
fitted from the ground-truth poses and shape: the gap between it and ``pina`` is the error the
body fit's poses bring. The table also reports the poses' own accuracy against the ground truth,
of the body fit and of PINA's refinement (:func:`pose_accuracy`).
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import trimesh

from capture.files import load_npz, read_json, save_npz
from rgbd2avatar.avatar.meshes import posed_mesh_fast, posed_meshes
from rgbd2avatar.avatar.store import StoredAvatar
from rgbd2avatar.geometry import ClosestPoints, MeshQuery
from rgbd2avatar.logs import Timer
from rgbd2avatar.metrics import mesh_metrics
from rgbd2avatar.motion import builtin_motion
from rgbd2avatar.synth.generate import SynthOptions, synthesize
from rgbd2avatar.synth.sensor import NoiseModel
from rgbd2avatar.synth.subject import PosedSubject, Subject, make_subject

METRIC_KEYS = ("iou", "iou_uniform", "chamfer_l2_cm", "normal_consistency")


@dataclass(frozen=True)
class Protocol:
    """One size of the benchmark.

    Attributes:
        subject, seed: the synthetic subject; train_frames: frames of the ``capture`` motion (30 fps);
        recon_frames: training frames evaluated; anim_motions: held-out built-in motions;
        anim_frames: frames evaluated per held-out motion; samples: metric samples per mesh.
        depth_noise: the virtual Kinect's noise, flying pixels and dropouts
            (:class:`~rgbd2avatar.synth.sensor.NoiseModel`); False renders the depth clean, as
            PINA renders CAPE's meshes for its animation experiment.
    """

    name: str
    subject: str
    seed: int
    train_frames: int
    recon_frames: int
    anim_motions: tuple[str, ...]
    anim_frames: int
    samples: int
    pina_preset: str
    mesh_resolution: int
    depth_noise: bool = True


_SMALL = Protocol("small", "casual", 0, 181, 6, ("squat", "walk"), 3, 50_000, "fast", 256)
PROTOCOLS = {
    "small": _SMALL,
    "small_clean": replace(_SMALL, name="small_clean", depth_noise=False),
    "full": Protocol(
        "full", "loose", 0, 721, 24, ("squat", "walk", "raise_arms"), 12, 200_000, "quality", 512
    ),
}
"""``small`` runs the whole pipeline on a 2-core CPU within 30 minutes; ``small_clean`` is
``small`` with noise-free depth (PINA's CAPE setting: depth rendered from the meshes); ``full``
is for a GPU."""


def evenly_spaced(count: int, total: int) -> np.ndarray:
    """``count`` frame indices spread evenly over ``total`` frames (first and last included)."""
    return np.unique(np.linspace(0, total - 1, count).round().astype(int))


def distinct_poses(poses: np.ndarray, count: int) -> np.ndarray:
    """``count`` frames whose poses differ most (farthest-point sampling of the 23 joints'
    axis-angles, starting from the rest pose, which is never chosen): evenly spaced frames of a
    periodic motion can repeat one pose.

    Args:
        poses: (F, 72) a motion's poses.
    Returns:
        (count,) sorted frame indices.
    """
    joints = poses[:, 3:]
    nearest = np.linalg.norm(joints, axis=1)  # distance to the nearest chosen pose (the rest pose)
    chosen = []
    for _ in range(min(count, len(poses))):
        chosen.append(int(nearest.argmax()))
        nearest = np.minimum(nearest, np.linalg.norm(joints - joints[chosen[-1]], axis=1))
    return np.sort(np.array(chosen, dtype=int))


def ensure_capture(protocol: Protocol, data_dir: Path) -> dict:
    """The protocol's training capture in ``data_dir``, synthesised unless already there.

    Returns:
        {"frames", "seconds", "fps", "reused"} of the synthesis.
    """
    options = SynthOptions(
        subject=protocol.subject, motion="capture", frames=protocol.train_frames, seed=protocol.seed,
        noise=NoiseModel() if protocol.depth_noise else NoiseModel.ideal(),
    )  # fmt: skip
    summary_path = data_dir / "ground_truth" / "subject.json"
    if summary_path.exists() and read_json(summary_path)["options"]["frames"] == protocol.train_frames:
        return {"frames": protocol.train_frames, "reused": True}
    with Timer() as timer:
        synthesize(data_dir, options)
    return {
        "frames": protocol.train_frames,
        "seconds": timer.seconds,
        "frames_per_s": protocol.train_frames / timer.seconds,
        "reused": False,
    }


def prepare_subject(capture_dir: Path, subject: Path, terms: tuple[str, ...] | None = None) -> Path:
    """Import, preprocess and fit the body of a synthetic capture into a subject workspace.

    The detector inputs are the capture's synthetic keypoints (OpenPose BODY_25) and IUV images.
    """
    from rgbd2avatar.stages import DATA_TERMS, fit_body_stage, import_stage, preprocess_stage

    truth = capture_dir / "ground_truth"
    import_stage(capture_dir / "sequence", subject)
    preprocess_stage(subject, stride=None, max_frames=None, mask_dir=None)
    fit_body_stage(
        subject,
        keypoints=truth / "keypoints" / "openpose",
        densepose=truth / "iuv",
        terms=terms or DATA_TERMS,
    )
    return subject


def body_fit_accuracy(subject: Path, capture_dir: Path) -> dict:
    """The fitted bodies against the ground-truth bodies (same model), see :func:`pose_accuracy`;
    plus the fit's own counts and speed."""
    fits = load_npz(subject / "body_fit" / "fits.npz")
    summary = read_json(subject / "body_fit" / "fit.json")
    return pose_accuracy(fits, capture_dir) | {
        "clothing_layer_cm": {region: 100 * metres for region, metres in summary["clothing_layer_m"].items()},
        "reinitialised": int(fits["reinitialised"].sum()),
        "fit_frames_per_s": summary["frames_per_second"],
        "fit_device": summary["device"],
    }


def refined_pose_accuracy(subject: Path, capture_dir: Path) -> dict:
    """PINA's refined poses (with ``fit-body``'s shape) against the ground truth, as
    :func:`pose_accuracy` measures the body fit's."""
    fits = load_npz(subject / "body_fit" / "fits.npz")
    refined = load_npz(subject / "pina" / "poses.npz")
    return pose_accuracy(fits | {key: refined[key] for key in ("frames", "poses", "trans")}, capture_dir)


def pose_accuracy(fits: dict[str, np.ndarray], capture_dir: Path) -> dict:
    """Bodies posed by ``fits`` (body_model, frames, poses (F, 72), trans (F, 3), shape) against the
    ground-truth bodies of the same frames.

    Returns (cm, radians): MPJPE (mean, median frame, frames over 10 cm); the median per-vertex
    distance; the mean over frames (a constant offset, e.g. a body pushed towards the camera by
    loose clothing) and the spread of the root joint's error in the depth camera's frame; the part
    of the joint errors that changes from frame to frame (the errors in the true root's frame
    minus their mean over frames); the mean geodesic angle between fitted and true joint rotations;
    and per joint, by name, the mean position error, the mean geodesic angle of its rotation and
    the mean error of its distance from the camera (positive: too far; the depth camera sits at
    the origin of the frame the bodies are posed in), and the mean position error over the frames
    that see the true body from behind (its forward axis within 60° of the optical axis; empty
    when there are none).
    """
    from rgbd2avatar.body import load_body_model
    from rgbd2avatar.body.lbs import axis_angle_to_matrix
    from rgbd2avatar.body.skeleton import JOINT_NAMES

    truth = load_npz(capture_dir / "ground_truth" / "body.npz")
    body = load_body_model(str(fits["body_model"]))
    frames = fits["frames"]
    true_poses = torch.from_numpy(truth["poses"][frames]).float()
    poses = torch.from_numpy(fits["poses"]).float()
    with torch.no_grad():
        fitted = body(poses, torch.from_numpy(fits["shape"]), torch.from_numpy(fits["trans"]))
        true = body(true_poses, torch.from_numpy(truth["shape"]), torch.from_numpy(truth["trans"][frames]))
    errors = fitted.joints - true.joints  # (F, J, 3), depth camera frame
    mpjpe = errors.norm(dim=-1).mean(-1) * 100  # (F,)
    vertex = (fitted.vertices - true.vertices).norm(dim=-1).median(-1).values * 100  # (F,)
    true_rotations = axis_angle_to_matrix(true_poses.view(len(frames), -1, 3))  # (F, J, 3, 3)
    body_frame = torch.einsum("fji,fkj->fki", true_rotations[:, 0], errors)  # R_rootᵀ e
    varying = body_frame - body_frame.mean(0)
    relative = axis_angle_to_matrix(poses.view(len(frames), -1, 3)).transpose(-1, -2) @ true_rotations
    cosine = ((relative.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    angles = torch.arccos(cosine)  # (F, J)
    per_joint = errors.norm(dim=-1).mean(0) * 100  # (J,)
    behind = true_rotations[:, 0, 2, 2] > 0.5  # (F,) the root's forward (+z) axis along the optical axis
    from_behind = (errors[behind].norm(dim=-1).mean(0) * 100).tolist() if behind.any() else []
    farther = (fitted.joints.norm(dim=-1) - true.joints.norm(dim=-1)).mean(0) * 100  # (J,)
    return {
        "frames": len(frames),
        "mpjpe_cm": float(mpjpe.mean()),
        "mpjpe_cm_median_frame": float(mpjpe.median()),
        "frames_over_10cm": int((mpjpe > 10).sum()),
        "median_vertex_cm": float(vertex.mean()),
        "root_offset_cm": (errors[:, 0].mean(0) * 100).tolist(),
        "root_offset_spread_cm": (errors[:, 0].std(0) * 100).tolist(),
        "frame_varying_joint_error_cm": float(varying.norm(dim=-1).mean() * 100),
        "joint_angle_error_rad": float(angles.mean()),
        "joint_error_cm": dict(zip(JOINT_NAMES, per_joint.tolist(), strict=True)),
        "joint_angle_error_rad_by_joint": dict(zip(JOINT_NAMES, angles.mean(0).tolist(), strict=True)),
        "joint_depth_error_cm": dict(zip(JOINT_NAMES, farther.tolist(), strict=True)),
        "joint_error_cm_from_behind": dict(zip(JOINT_NAMES, from_behind, strict=False)),
    }


def average(rows: list[dict]) -> dict:
    """Mean of each metric over evaluation frames, plus the frame count."""
    return {key: float(np.mean([row[key] for row in rows])) for key in METRIC_KEYS} | {"frames": len(rows)}


def evaluation_frames(protocol: Protocol, fitted_frames: np.ndarray) -> np.ndarray:
    """The fitted frames nearest to ``recon_frames`` evenly spaced training frames (sorted, unique)."""
    targets = evenly_spaced(protocol.recon_frames, protocol.train_frames)
    nearest = np.abs(fitted_frames[None, :] - targets[:, None]).argmin(1)
    return np.unique(fitted_frames[nearest])


def fitted_body_meshes(subject_dir: Path, frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The naked body as ``fit-body`` fitted it, at the given (fitted) frames, depth-camera frame."""
    from rgbd2avatar.body import load_body_model

    fits = load_npz(subject_dir / "body_fit" / "fits.npz")
    body = load_body_model(str(fits["body_model"]))
    rows = np.searchsorted(fits["frames"], frames)
    with torch.no_grad():
        posed = body(
            torch.from_numpy(fits["poses"][rows]),
            torch.from_numpy(fits["shape"]),
            torch.from_numpy(fits["trans"][rows]),
        )
    faces = body.faces.numpy()
    return [(vertices.numpy(), faces) for vertices in posed.vertices]


def fit_avatars(
    protocol: Protocol, subject_dir: Path, capture_dir: Path, device: str = "auto"
) -> dict[str, Path]:
    """PINA on the subject with and without pose optimisation (PINA's Table 1 ablation), and
    given the exact poses (a reference, like ``naked_body_gt``).

    The ablation and the reference run in copies of the workspace (without the recording) next
    to it; the reference's body fit is replaced by the ground-truth body (:func:`use_true_bodies`).

    Returns:
        method name → subject workspace holding that avatar.
    """
    from fitting.pina.config import preset
    from rgbd2avatar.stages import pina_stage

    ablation, reference = (_workspace_copy(subject_dir, suffix) for suffix in ("_no_pose_opt", "_gt_poses"))
    use_true_bodies(reference, capture_dir)
    pina_stage(subject_dir, preset(protocol.pina_preset), device)
    pina_stage(ablation, preset(protocol.pina_preset, optimise_poses=False), device)
    pina_stage(reference, preset(protocol.pina_preset, optimise_poses=False), device)
    return {"pina": subject_dir, "pina_no_pose_opt": ablation, "pina_gt_poses": reference}


def _workspace_copy(subject_dir: Path, suffix: str) -> Path:
    """A fresh copy of a subject workspace without its recording and avatar, beside it."""
    copy = subject_dir.with_name(subject_dir.name + suffix)
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(subject_dir, copy, ignore=shutil.ignore_patterns("recording", "pina"))
    return copy


def use_true_bodies(subject_dir: Path, capture_dir: Path) -> None:
    """Replace a workspace's fitted poses, translations and shape by the synthetic capture's true
    ones (same body model, same frames), so PINA starts from exact poses."""
    path = subject_dir / "body_fit" / "fits.npz"
    fits = load_npz(path)
    truth = load_npz(capture_dir / "ground_truth" / "body.npz")
    frames = fits["frames"]
    exact = {
        "poses": truth["poses"][frames],
        "trans": truth["trans"][frames],
        "shape": truth["shape"],
    }
    save_npz(path, **(fits | {key: value.astype(fits[key].dtype) for key, value in exact.items()}))


def avatar_meshes(
    subject_dir: Path, frames: np.ndarray, resolution: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The fitted avatar at training frames, with its refined poses (fast posed meshes)."""
    from rgbd2avatar.avatar.store import load_avatar
    from rgbd2avatar.devices import resolve_device

    stored = load_avatar(subject_dir / "pina" / "avatar.pt", resolve_device("auto"))
    rows = np.searchsorted(stored.frames.numpy(), frames)
    meshes = [
        posed_mesh_fast(stored.avatar, stored.poses[row], stored.trans[row], resolution) for row in rows
    ]
    return [(mesh.vertices, mesh.faces) for mesh in meshes]


def true_subject(protocol: Protocol, data_dir: Path, frames: np.ndarray) -> tuple[Subject, PosedSubject]:
    """The protocol's synthetic subject and its ground-truth bodies at capture ``frames`` (F,)."""
    body = load_npz(data_dir / "ground_truth" / "body.npz")
    subject = make_subject(protocol.subject, seed=protocol.seed)
    with torch.no_grad():
        return subject, subject.posed(
            torch.from_numpy(body["poses"][frames]), torch.from_numpy(body["trans"][frames])
        )


def true_mesh(data_dir: Path, frame: int) -> trimesh.Trimesh:
    """The capture's ground-truth clothed mesh at capture ``frame``, as written (not processed)."""
    return trimesh.load(data_dir / "ground_truth" / "meshes" / f"{int(frame):06d}.ply", process=False)


def true_surface_at(data_dir: Path, frame: int, points: np.ndarray) -> tuple[ClosestPoints, np.ndarray]:
    """The closest points to (N, 3) ``points`` on the capture's ground-truth clothed mesh at
    capture ``frame``, and the (N, 3) unit normals of the triangles they lie on."""
    truth = true_mesh(data_dir, frame)
    query = MeshQuery(truth.vertices, truth.faces)
    closest = query.closest_points(points)
    return closest, query.face_normals[closest.triangle_ids]


def true_meshes(data_dir: Path, frames: np.ndarray) -> list[trimesh.Trimesh]:
    """The capture's ground-truth clothed meshes at ``frames`` (F,), as written (not processed)."""
    return [true_mesh(data_dir, frame) for frame in frames]


def reconstruction_table(
    protocol: Protocol, data_dir: Path, subject_dir: Path, avatars: dict[str, Path] | None = None
) -> dict[str, dict]:
    """Methods' metrics on training frames against the ground-truth clothed meshes.

    ``avatars`` (method name → workspace with a fitted avatar) adds those avatars' meshes. The
    evaluation frames are the fitted frames nearest to evenly spaced training frames, so
    every method is scored on frames it was fitted to.
    """
    frames = evaluation_frames(protocol, load_npz(subject_dir / "body_fit" / "fits.npz")["frames"])
    subject, posed = true_subject(protocol, data_dir, frames)
    faces = subject.faces.numpy()
    methods = {
        "naked_body_gt": [(vertices.numpy(), faces) for vertices in posed.body],
        "naked_body_fitted": fitted_body_meshes(subject_dir, frames),
    } | {
        name: avatar_meshes(workspace, frames, protocol.mesh_resolution)
        for name, workspace in (avatars or {}).items()
    }
    truths = true_meshes(data_dir, frames)
    return {
        name: average(
            [
                mesh_metrics(mesh, (gt.vertices, gt.faces), num_samples=protocol.samples)
                for mesh, gt in zip(meshes, truths, strict=True)
            ]
        )
        | {"evaluated_frames": frames.tolist()}
        for name, meshes in methods.items()
    }


def held_out_poses(protocol: Protocol) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The evaluated frames of each held-out motion: (F, 72) poses and (F, 3) translations (float64)
    at the motion's :func:`distinct_poses`, one pair per motion of ``protocol.anim_motions``."""
    pairs = []
    for name in protocol.anim_motions:
        motion = builtin_motion(name)
        frames = distinct_poses(motion.poses, protocol.anim_frames)
        pairs.append((torch.from_numpy(motion.poses[frames]), torch.from_numpy(motion.trans[frames])))
    return pairs


def animation_table(
    protocol: Protocol,
    subject_dir: Path | None = None,
    avatars: dict[str, Path] | None = None,
    own_condition: tuple[str, ...] = ("pina",),
) -> dict[str, dict]:
    """Methods' metrics on held-out motions against the ground-truth clothed meshes.

    Every method is posed with the motion's own poses and translations (the body model's frame),
    on the :func:`distinct_poses` of each motion; ``subject_dir`` adds the naked body with the
    fitted shape, ``avatars`` the fitted avatars (fast posed meshes, SDF conditioned on the
    training poses' mean as ``animate`` does), and the avatars named in ``own_condition`` once
    more as ``<name>_own_condition``, conditioned on each frame's pose.
    """
    from rgbd2avatar.body import load_body_model

    subject = make_subject(protocol.subject, seed=protocol.seed)
    faces = subject.faces.numpy()
    rows: dict[str, list[dict]] = {}
    stored = {name: _load(workspace) for name, workspace in (avatars or {}).items()}
    fits = load_npz(subject_dir / "body_fit" / "fits.npz") if subject_dir else None
    body = load_body_model(str(fits["body_model"])) if fits is not None else None
    for poses, trans in held_out_poses(protocol):
        with torch.no_grad():
            posed = subject.posed(poses, trans)
            fitted = body(poses, torch.from_numpy(fits["shape"]), trans).vertices if body else None
        animated = {
            label: meshes
            for method, avatar in stored.items()
            for label, meshes in _held_out_meshes(
                method, avatar, poses, trans, protocol.mesh_resolution, method in own_condition
            ).items()
        }
        for i in range(len(poses)):
            truth = (posed.clothed[i].numpy(), faces)
            methods = {"naked_body_gt": (posed.body[i].numpy(), faces)}
            if fitted is not None:
                methods["naked_body_fitted"] = (fitted[i].numpy(), body.faces.numpy())
            methods |= {label: meshes[i] for label, meshes in animated.items()}
            for method, mesh in methods.items():
                rows.setdefault(method, []).append(mesh_metrics(mesh, truth, num_samples=protocol.samples))
    return {method: average(values) for method, values in rows.items()}


def _held_out_meshes(
    method: str, stored: StoredAvatar, poses: torch.Tensor, trans: torch.Tensor, resolution: int, own: bool
) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Fast posed meshes of one avatar for (F, 72) poses and (F, 3) translations: under
    ``method`` with the training poses' mean as the SDF's condition (one canonical extraction for
    all frames), and with ``own`` also under ``<method>_own_condition`` with each frame's pose."""
    poses, trans = poses.to(stored.poses), trans.to(stored.poses)
    conditions = {method: stored.mean_pose()} | ({f"{method}_own_condition": None} if own else {})
    return {
        label: [
            (mesh.vertices, mesh.faces)
            for mesh in posed_meshes(stored.avatar, poses, trans, resolution, condition=condition)
        ]
        for label, condition in conditions.items()
    }


def _load(workspace: Path) -> StoredAvatar:
    """The fitted avatar of a workspace, on the default device."""
    from rgbd2avatar.avatar.store import load_avatar
    from rgbd2avatar.devices import resolve_device

    return load_avatar(workspace / "pina" / "avatar.pt", resolve_device("auto"))


def run_benchmark(protocol_name: str, out_dir: Path, pina_preset: str | None = None) -> dict:
    """Run every stage that exists on the protocol and return the table (JSON-able).

    ``pina_preset`` replaces the protocol's PINA preset (e.g. ``default`` on the ``small`` protocol);
    the capture and the body fit in ``out_dir`` are shared by every preset.
    """
    protocol = PROTOCOLS[protocol_name]
    if pina_preset is not None:
        protocol = replace(protocol, pina_preset=pina_preset)
    data_dir = out_dir / protocol.name / "capture"
    subject_dir = out_dir / protocol.name / "subject"
    synth = ensure_capture(protocol, data_dir)
    with Timer() as timer:
        prepare_subject(data_dir, subject_dir)
    with Timer() as pina_timer:
        avatars = fit_avatars(protocol, subject_dir, data_dir)
    return {
        "protocol": asdict(protocol),
        "synth": synth,
        "pipeline_seconds": {
            "import_preprocess_fit_body": timer.seconds,
            "fit_avatars": pina_timer.seconds,
        },
        "body_fit": body_fit_accuracy(subject_dir, data_dir),
        "refined_poses": refined_pose_accuracy(subject_dir, data_dir),
        "pina": {
            name: read_json(path / "pina" / "train.json") | {"history": None}
            for name, path in avatars.items()
        },
        "reconstruction": reconstruction_table(protocol, data_dir, subject_dir, avatars),
        "animation": animation_table(protocol, subject_dir, avatars),
    }
