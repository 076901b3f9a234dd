"""Motion clips in SMPL's pose layout: AMASS-style ``.npz`` files and built-in procedural motions.

A :class:`Motion` holds F frames of SMPL poses (F, 72) — root axis-angle then 23 joint rotations,
each local to its parent — and root translations (F, 3) sampled at ``fps`` frames per second.
Frame k is at time t_k = k / fps, so a clip spans ``duration = (F - 1) / fps`` seconds.

Coordinates follow SMPL: y up, the body faces +z, the subject's left is +x, and the rest pose is a
T-pose. AMASS files are read as they are stored (AMASS itself uses a z-up world); no axis
conversion is made here.

Rotations are interpolated as unit quaternions (w, x, y, z), computed in float64 and stored as
float32 axis-angle with angles in [0, π].
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from capture.files import save_npz
from rgbd2avatar.body.skeleton import JOINT_INDEX, NUM_JOINTS, POSE_DIM
from rgbd2avatar.errors import UserError

FrameRange = tuple[int | None, int | None]

SMPL_BODY_DIM = 66  # root + 21 body joints: the part shared by SMPL, SMPL-H and SMPL-X
POSE_LAYOUTS: dict[int, str] = {72: "SMPL", 156: "SMPL-H", 165: "SMPL-X"}
FRAME_RATE_KEYS = ("mocap_framerate", "mocap_frame_rate")
MOTION_KEYS = ("poses", "trans", "betas", "gender", *FRAME_RATE_KEYS)


# --------------------------------------------------------------------------------------------
# Quaternion maths (numpy, float64, (w, x, y, z))
# --------------------------------------------------------------------------------------------


def _axis_angle_to_quaternion(aa: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle → (..., 4) unit quaternions."""
    aa = np.asarray(aa, dtype=np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    half = 0.5 * angle
    # sin(θ/2)/θ with its Taylor series near zero.
    scale = np.where(angle < 1e-6, 0.5 - angle**2 / 48.0, np.sin(half) / np.maximum(angle, 1e-12))
    return np.concatenate([np.cos(half), aa * scale], axis=-1)


def _quaternion_to_axis_angle(q: np.ndarray) -> np.ndarray:
    """(..., 4) unit quaternions → (..., 3) axis-angle with angle in [0, π]."""
    q = np.where(q[..., :1] < 0.0, -q, q)
    w, vec = q[..., :1], q[..., 1:]
    sin_half = np.linalg.norm(vec, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(sin_half, w)
    scale = np.where(sin_half < 1e-6, 2.0 / np.maximum(w, 1e-12), angle / np.maximum(sin_half, 1e-12))
    return vec * scale


def _quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a ⊗ b of (..., 4) quaternions: the rotation b followed by a."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def _slerp(q0: np.ndarray, q1: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Spherical linear interpolation along the shorter arc.

    Args:
        q0, q1: (..., 4) unit quaternions.
        weight: (...,) or broadcastable interpolation weights in [0, 1]; 0 gives q0.
    Returns:
        (..., 4) unit quaternions.
    """
    weight = np.asarray(weight, dtype=np.float64)[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0.0, -q1, q1)
    dot = np.abs(dot).clip(max=1.0)
    theta = np.arccos(dot)
    sin_theta = np.sin(theta)
    near = sin_theta < 1e-6
    safe = np.where(near, 1.0, sin_theta)
    w0 = np.where(near, 1.0 - weight, np.sin((1.0 - weight) * theta) / safe)
    w1 = np.where(near, weight, np.sin(weight * theta) / safe)
    q = w0 * q0 + w1 * q1
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """Axis-angle (..., 3) of R(outer) · R(inner): the rotation ``inner`` followed by ``outer``."""
    q = _quaternion_multiply(_axis_angle_to_quaternion(outer), _axis_angle_to_quaternion(inner))
    return _quaternion_to_axis_angle(q)


# --------------------------------------------------------------------------------------------
# Motion
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Motion:
    """A clip of SMPL poses.

    Attributes:
        poses: (F, 72) float32 axis-angle poses (root then joints 1..23, each local to its parent).
        trans: (F, 3) float32 root translations in metres.
        fps: frames per second; frame k is at time k / fps.
        betas: optional (S,) float32 shape coefficients stored with the clip.
        gender: optional body-model gender stored with the clip ("male", "female", "neutral").
        name: a label for messages and outputs (a file's stem or a built-in motion's name).
    """

    poses: np.ndarray
    trans: np.ndarray
    fps: float
    betas: np.ndarray | None = None
    gender: str | None = None
    name: str = "motion"

    def __post_init__(self) -> None:
        self.poses = np.ascontiguousarray(self.poses, dtype=np.float32)
        self.trans = np.ascontiguousarray(self.trans, dtype=np.float32)
        self.fps = float(self.fps)
        if self.betas is not None:
            self.betas = np.ascontiguousarray(self.betas, dtype=np.float32)
        if self.poses.ndim != 2 or self.poses.shape[1] != POSE_DIM:
            raise ValueError(f"poses must be (F, {POSE_DIM}), got {self.poses.shape}")
        if self.trans.shape != (self.poses.shape[0], 3):
            raise ValueError(f"trans must be ({self.poses.shape[0]}, 3), got {self.trans.shape}")
        if not (math.isfinite(self.fps) and self.fps > 0.0):
            raise ValueError(f"fps must be positive, got {self.fps}")

    @property
    def num_frames(self) -> int:
        """F, the number of frames."""
        return int(self.poses.shape[0])

    @property
    def duration(self) -> float:
        """Seconds from the first frame to the last, (F - 1) / fps."""
        return (self.num_frames - 1) / self.fps

    def resample(self, target_fps: float) -> Motion:
        """The clip sampled at ``target_fps``: frames at t_k = k / target_fps for t_k ≤ duration.

        Joint rotations are slerped per joint between the two neighbouring source frames,
        translations are interpolated linearly. The same frame rate returns an exact copy.
        """
        target_fps = _check_frame_rate(target_fps, f"motion '{self.name}'")
        if target_fps == self.fps or self.num_frames == 1:
            return replace(self, poses=self.poses.copy(), trans=self.trans.copy(), fps=target_fps)
        count = math.floor((self.num_frames - 1) * target_fps / self.fps + 1e-6) + 1
        source = np.arange(count) * self.fps / target_fps  # (F',) fractional source frame indices
        lower = np.minimum(np.floor(source).astype(np.int64), self.num_frames - 2)
        weight = source - lower  # (F',)
        quats = _axis_angle_to_quaternion(self.poses.reshape(-1, NUM_JOINTS, 3))  # (F, J, 4)
        slerped = _slerp(quats[lower], quats[lower + 1], np.repeat(weight[:, None], NUM_JOINTS, 1))
        trans = (1.0 - weight[:, None]) * self.trans[lower] + weight[:, None] * self.trans[lower + 1]
        poses = _quaternion_to_axis_angle(slerped).reshape(count, POSE_DIM)
        return replace(self, poses=poses, trans=trans, fps=target_fps)

    def slice(self, start: int | None = None, stop: int | None = None) -> Motion:
        """Frames start..stop-1 (Python-style: None is open, negatives count from the end).

        Raises:
            UserError: the range selects no frames or reaches past the clip.
        """
        first, last = _resolve_frame_range(start, stop, self.num_frames, self.name)
        return replace(self, poses=self.poses[first:last].copy(), trans=self.trans[first:last].copy())

    def to_torch(self, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(F, 72) poses and (F, 3) translations as float32 tensors on ``device``."""
        return torch.from_numpy(self.poses).to(device), torch.from_numpy(self.trans).to(device)


def _check_frame_rate(fps: float, where: str) -> float:
    """``fps`` as a float, or a UserError if it is not a positive finite number."""
    value = float(fps)
    if not (math.isfinite(value) and value > 0.0):
        raise UserError(f"The frame rate {fps!r} for {where} is not a positive number; pass one such as 30.")
    return value


def _resolve_frame_range(start: int | None, stop: int | None, count: int, name: str) -> tuple[int, int]:
    """Non-negative bounds 0 ≤ first < last ≤ count of a Python-style frame range."""
    first = 0 if start is None else (start + count if start < 0 else start)
    last = count if stop is None else (stop + count if stop < 0 else stop)
    if not 0 <= first < last <= count:
        shown = f"{'' if start is None else start}:{'' if stop is None else stop}"
        raise UserError(
            f"The frame range {shown} selects no frames or goes past the {count} frames of motion '{name}'; "
            f"choose START:STOP within 0:{count}."
        )
    return first, last


def parse_frame_range(spec: str) -> FrameRange:
    """Parse the CLI's ``START:STOP`` frame range (either side may be empty, e.g. ``100:``).

    Raises:
        UserError: the text is not of that form.
    """
    parts = spec.split(":")
    try:
        if len(parts) != 2:
            raise ValueError(spec)
        return tuple(int(p) if p.strip() else None for p in parts)  # type: ignore[return-value]
    except ValueError:
        raise UserError(
            f"The frame range '{spec}' is not of the form START:STOP; write e.g. 0:300, 100: or :300."
        ) from None


# --------------------------------------------------------------------------------------------
# AMASS-style files
# --------------------------------------------------------------------------------------------


def _check_npz_file(path: Path) -> None:
    """Raise a UserError unless ``path`` is an existing, non-empty zip (``.npz``) file."""
    if not path.exists():
        raise UserError(
            f"The motion file {path} does not exist; check the path or pass a built-in motion name."
        )
    if not path.is_file() or path.stat().st_size == 0:
        raise UserError(f"The motion file {path} is empty or not a file; pass an AMASS-style .npz file.")
    if not zipfile.is_zipfile(path):
        raise UserError(f"The motion file {path} is not an .npz archive; pass an AMASS-style .npz file.")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` motion this module uses, loaded without pickle.

    Other arrays (AMASS files carry marker data, some of it pickled) are not read.
    """
    _check_npz_file(path)
    key = None
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {}
            for key in (k for k in MOTION_KEYS if k in archive.files):
                arrays[key] = archive[key]
            return arrays
    except ValueError as err:
        if "pickle" not in str(err).lower():
            raise UserError(
                f"The motion file {path} could not be read ({err}); re-export it as an .npz file."
            ) from None
        raise UserError(
            f"The motion file {path} stores '{key}' as Python objects, which are not loaded for safety; "
            "re-save it with plain numeric and string arrays."
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"The motion file {path} is damaged ({err}); re-export or re-download it.") from None


def _smpl_poses(poses: np.ndarray, path: Path) -> np.ndarray:
    """SMPL (F, 72) poses from an SMPL (72), SMPL-H (156) or SMPL-X (165) wide (F, D) array.

    SMPL poses are kept whole. SMPL-H and SMPL-X share SMPL's root and 21 body joints (the first
    66 numbers); their hands, jaw and eyes are dropped and SMPL's hand joints (22, 23) set to zero.
    """
    if poses.ndim != 2 or poses.shape[0] == 0 or poses.shape[1] not in POSE_LAYOUTS:
        widths = ", ".join(f"{width} ({layout})" for width, layout in POSE_LAYOUTS.items())
        raise UserError(
            f"The motion file {path} has 'poses' of shape {poses.shape}, but frames × {{{widths}}} "
            "is needed; pass an AMASS SMPL, SMPL-H or SMPL-X file."
        )
    if poses.shape[1] == POSE_DIM:
        return poses
    body = poses[:, :SMPL_BODY_DIM]
    hands = np.zeros((poses.shape[0], POSE_DIM - SMPL_BODY_DIM), dtype=body.dtype)
    return np.concatenate([body, hands], axis=1)


def _numeric(arrays: dict[str, np.ndarray], key: str, path: Path) -> np.ndarray:
    """``arrays[key]`` as finite float64, or a UserError naming the key."""
    value = arrays[key]
    if value.dtype.kind not in "iuf":
        raise UserError(f"The motion file {path} has a non-numeric '{key}' array; re-export it with numbers.")
    value = value.astype(np.float64)
    if not np.isfinite(value).all():
        raise UserError(
            f"The motion file {path} has NaN or infinite values in '{key}'; re-export or repair it."
        )
    return value


def _file_frame_rate(arrays: dict[str, np.ndarray], path: Path, fps: float | None) -> float:
    """The frame rate stored under ``mocap_framerate`` or ``mocap_frame_rate``, else ``fps``."""
    key = next((k for k in FRAME_RATE_KEYS if k in arrays), None)
    if key is None:
        if fps is None:
            raise UserError(
                f"The motion file {path} has no frame rate ('mocap_framerate'); "
                "pass its frame rate with --fps."
            )
        return _check_frame_rate(fps, str(path))
    value = _numeric(arrays, key, path)
    if value.size != 1:
        raise UserError(
            f"The motion file {path} has a '{key}' of shape {value.shape}; it must be one number."
        )
    return _check_frame_rate(value.item(), str(path))


def _file_gender(arrays: dict[str, np.ndarray]) -> str | None:
    """The stored gender as text (0-d unicode or bytes arrays are both accepted), or None."""
    if "gender" not in arrays:
        return None
    value = arrays["gender"].item() if arrays["gender"].size == 1 else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else None


def load_amass(path: str | os.PathLike, fps: float | None = None, frames: FrameRange | None = None) -> Motion:
    """Read an AMASS-style ``.npz`` motion (SMPL, SMPL-H or SMPL-X poses) as SMPL poses.

    Args:
        path: file with ``poses`` (F, 72 | 156 | 165), ``trans`` (F, 3), a frame rate under
            ``mocap_framerate`` or ``mocap_frame_rate``, and optional ``betas`` and ``gender``.
        fps: target frame rate: the clip is resampled to it. A file without a stored frame rate is
            taken to be recorded at ``fps``.
        frames: optional (start, stop) frame range, applied after resampling.
    Returns:
        The motion, named after the file's stem.
    Raises:
        UserError: the file is missing, unreadable, needs pickle or its arrays are malformed.
    """
    path = Path(path)
    arrays = _read_npz(path)
    for key in ("poses", "trans"):
        if key not in arrays:
            raise UserError(f"The motion file {path} has no '{key}' array; pass an AMASS-style .npz file.")
    poses = _smpl_poses(_numeric(arrays, "poses", path), path)
    trans = _numeric(arrays, "trans", path)
    if trans.shape != (poses.shape[0], 3):
        raise UserError(
            f"The motion file {path} has 'trans' of shape {trans.shape} but {poses.shape[0]} frames "
            "of poses; it must be frames × 3."
        )
    betas = _numeric(arrays, "betas", path) if "betas" in arrays else None
    motion = Motion(
        poses=poses,
        trans=trans,
        fps=_file_frame_rate(arrays, path, fps),
        betas=betas,
        gender=_file_gender(arrays),
        name=path.stem,
    )
    return _finish(motion, fps, frames)


def _finish(motion: Motion, fps: float | None, frames: FrameRange | None) -> Motion:
    """Resample ``motion`` to ``fps`` (if given), then cut it to ``frames`` (if given)."""
    if fps is not None:
        motion = motion.resample(fps)
    if frames is not None:
        motion = motion.slice(*frames)
    return motion


def save_amass(motion: Motion, path: str | os.PathLike) -> None:
    """Write ``motion`` as an AMASS-style SMPL ``.npz``, atomically.

    Keys: ``poses`` (F, 72) float32, ``trans`` (F, 3) float32, ``mocap_framerate`` (float64),
    ``betas`` (S,) if any, ``gender`` as a unicode string array if any. ``load_amass`` reads it
    back exactly.
    """
    arrays = {
        "poses": motion.poses,
        "trans": motion.trans,
        "mocap_framerate": np.array(motion.fps, dtype=np.float64),
    }
    if motion.betas is not None:
        arrays["betas"] = motion.betas
    if motion.gender is not None:
        arrays["gender"] = np.array(motion.gender, dtype=np.str_)
    save_npz(path, **arrays)


# --------------------------------------------------------------------------------------------
# Built-in procedural motions
# --------------------------------------------------------------------------------------------

DEG = math.pi / 180.0
ARMS_DOWN = 75.0 * DEG  # shoulder rotation from the T-pose down to a natural stance
TURN_ARMS_DOWN = 60.0 * DEG  # arms slightly raised from the sides while turning
RAISE_PERIOD = 4.0  # seconds per up-and-down cycle
RAISE_PEAK = 80.0 * DEG  # shoulder elevation above horizontal at the top
SQUAT_PERIOD = 4.0  # seconds per down-and-up cycle
SQUAT_HIP = 75.0 * DEG  # thigh forward of vertical at the bottom
SQUAT_KNEE = 105.0 * DEG  # knee flexion at the bottom
SQUAT_LEAN = 30.0 * DEG  # trunk (pelvis) forward lean at the bottom
THIGH_LENGTH = 0.42  # metres, hip to knee
SHIN_LENGTH = 0.42  # metres, knee to ankle
WALK_PERIOD = 1.6  # seconds per stride (one step of each leg)
WALK_HIP = 40.0 * DEG  # hip flexion of the lifted leg
WALK_KNEE = 65.0 * DEG  # knee flexion of the lifted leg
WALK_ARM_SWING = 25.0 * DEG  # forward/backward arm swing amplitude
WALK_ELBOW = 15.0 * DEG  # constant elbow flexion
CAPTURE_SECONDS = 12.0  # one slow turn of the training capture
CAPTURE_ARMS_UP = 45.0 * DEG  # highest shoulder elevation above horizontal while turning
CAPTURE_ELBOW = 50.0 * DEG  # largest elbow flexion while turning

X, Y, Z = 0, 1, 2
ROOT = JOINT_INDEX["pelvis"]


def _about(axis: int, angle: np.ndarray) -> np.ndarray:
    """Axis-angle (F, 3) of rotations by ``angle`` (F,) radians about coordinate ``axis``."""
    aa = np.zeros(np.shape(angle) + (3,))
    aa[..., axis] = angle
    return aa


def _mirror(aa: np.ndarray) -> np.ndarray:
    """Axis-angle (..., 3) reflected through the x = 0 plane: (x, y, z) → (x, -y, -z)."""
    return aa * np.array([1.0, -1.0, -1.0])


def _wrap(angle: np.ndarray) -> np.ndarray:
    """Angles wrapped to (-π, π]."""
    return math.pi - np.mod(math.pi - angle, 2.0 * math.pi)


def _raised_cosine(t: np.ndarray, period: float) -> np.ndarray:
    """Smooth periodic 0 → 1 → 0 profile, (1 - cos 2πt/T) / 2, for times t (F,)."""
    return 0.5 * (1.0 - np.cos(2.0 * math.pi * t / period))


def _set_symmetric(pose: np.ndarray, joint: str, left: np.ndarray) -> None:
    """Set ``left_<joint>`` to ``left`` (F, 3) and ``right_<joint>`` to its mirror image, in place."""
    pose[:, JOINT_INDEX["left_" + joint]] = left
    pose[:, JOINT_INDEX["right_" + joint]] = _mirror(left)


def _shoulders_down(frames: int, angle: float) -> np.ndarray:
    """Left shoulder axis-angle (F, 3) rotating the arm ``angle`` radians down from horizontal."""
    return _about(Z, np.full(frames, -angle))


def _static(t: np.ndarray, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """The rest T-pose at every time: (F, 24, 3) zeros and (F, 3) zero translations."""
    return np.zeros((len(t), NUM_JOINTS, 3)), np.zeros((len(t), 3))


def _turn(t: np.ndarray, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """One 360° turn about +y over the clip, yaw 2π t / duration, arms slightly raised from the sides."""
    pose = np.zeros((len(t), NUM_JOINTS, 3))
    yaw = 2.0 * math.pi * t / duration if duration > 0.0 else np.zeros_like(t)
    pose[:, ROOT] = _about(Y, _wrap(yaw))
    _set_symmetric(pose, "shoulder", _shoulders_down(len(t), TURN_ARMS_DOWN))
    return pose, np.zeros((len(t), 3))


def _raise_arms(t: np.ndarray, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """Arms from the sides (-75°) up over the head (+80°) and back, every RAISE_PERIOD seconds."""
    pose = np.zeros((len(t), NUM_JOINTS, 3))
    elevation = -ARMS_DOWN + (ARMS_DOWN + RAISE_PEAK) * _raised_cosine(t, RAISE_PERIOD)
    _set_symmetric(pose, "shoulder", _about(Z, elevation))
    return pose, np.zeros((len(t), 3))


def _squat_pelvis_offset(hip: np.ndarray, knee: np.ndarray) -> np.ndarray:
    """Root translation (F, 3) that keeps the ankles in place for thigh angle ``hip`` and ``knee``.

    In the sagittal plane the thigh leans forward by ``hip`` and the shin back from it by ``knee``,
    so the ankle sits L_t cos(hip) + L_s cos(knee - hip) below the hip (L_t + L_s when standing)
    and L_t sin(hip) - L_s sin(knee - hip) ahead of it. The pelvis moves down and back by the
    change. The small shift of the hip joints as the pelvis leans is ignored.
    """
    shin = knee - hip
    drop = THIGH_LENGTH * (1.0 - np.cos(hip)) + SHIN_LENGTH * (1.0 - np.cos(shin))
    ahead = THIGH_LENGTH * np.sin(hip) - SHIN_LENGTH * np.sin(shin)
    return np.stack([np.zeros_like(hip), -drop, -ahead], axis=-1)


def _squat_arms(depth: np.ndarray) -> np.ndarray:
    """Left shoulder (F, 3): slerp from arms down to arms forward, level in the world at full lean."""
    down = _axis_angle_to_quaternion(_about(Z, -ARMS_DOWN))
    forward = _quaternion_multiply(
        _axis_angle_to_quaternion(_about(X, -SQUAT_LEAN)), _axis_angle_to_quaternion(_about(Y, -90.0 * DEG))
    )
    return _quaternion_to_axis_angle(_slerp(down, forward, depth))


def _squat(t: np.ndarray, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """Squat down and up every SQUAT_PERIOD seconds, arms forward, feet kept on the floor.

    At depth d ∈ [0, 1]: thigh forward by d·75°, knee bent d·105°, pelvis leaning forward d·30°,
    ankles dorsiflexed so the feet stay flat (the leg's rotations about x sum to zero).
    """
    depth = _raised_cosine(t, SQUAT_PERIOD)
    hip, knee, lean = SQUAT_HIP * depth, SQUAT_KNEE * depth, SQUAT_LEAN * depth
    pose = np.zeros((len(t), NUM_JOINTS, 3))
    pose[:, ROOT] = _about(X, lean)
    _set_symmetric(pose, "hip", _about(X, -hip - lean))
    _set_symmetric(pose, "knee", _about(X, knee))
    _set_symmetric(pose, "ankle", _about(X, hip - knee))
    _set_symmetric(pose, "shoulder", _squat_arms(depth))
    return pose, _squat_pelvis_offset(hip, knee)


def _walk_left_side(phase: np.ndarray) -> dict[str, np.ndarray]:
    """Left-side joint rotations (F, 3) of walking in place at stride phase (F,) radians.

    The left leg lifts during the first half-stride with a smooth max(0, sin φ)² profile while the
    left arm swings back; the right side is this at φ + π, mirrored.
    """
    lift = np.maximum(np.sin(phase), 0.0) ** 2
    arm_down = _about(Z, np.full(phase.shape, -ARMS_DOWN))
    return {
        "hip": _about(X, -WALK_HIP * lift),
        "knee": _about(X, WALK_KNEE * lift),
        "shoulder": _compose(_about(X, WALK_ARM_SWING * np.sin(phase)), arm_down),
        "elbow": _about(Y, np.full(phase.shape, -WALK_ELBOW)),
    }


def _walk(t: np.ndarray, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """Walk in place: alternating hip/knee lifts and counter arm swing, WALK_PERIOD s per stride."""
    phase = 2.0 * math.pi * t / WALK_PERIOD
    pose = np.zeros((len(t), NUM_JOINTS, 3))
    left, right = _walk_left_side(phase), _walk_left_side(phase + math.pi)
    for joint in left:
        pose[:, JOINT_INDEX["left_" + joint]] = left[joint]
        pose[:, JOINT_INDEX["right_" + joint]] = _mirror(right[joint])
    return pose, np.zeros((len(t), 3))


def _capture(t: np.ndarray, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """A training capture: one slow turn while the arms rise and fall every RAISE_PERIOD seconds
    (from 60° below to 45° above horizontal) and the elbows bend forward twice as often."""
    pose, trans = _turn(t, duration)
    elevation = -TURN_ARMS_DOWN + (TURN_ARMS_DOWN + CAPTURE_ARMS_UP) * _raised_cosine(t, RAISE_PERIOD)
    _set_symmetric(pose, "shoulder", _about(Z, elevation))
    _set_symmetric(pose, "elbow", _about(Y, -CAPTURE_ELBOW * _raised_cosine(t, RAISE_PERIOD / 2)))
    return pose, trans


MotionFunction = Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray]]

# name → (pose function of (times (F,), clip duration), default clip length in seconds, description)
_BUILTINS: dict[str, tuple[MotionFunction, float, str]] = {
    "turn": (_turn, 8.0, "turn around 360° in place over the clip, arms slightly raised from the sides"),
    "raise_arms": (_raise_arms, 2 * RAISE_PERIOD, "arms from the sides up over the head and back, every 4 s"),
    "squat": (_squat, 2 * SQUAT_PERIOD, "squat down and up with arms forward, feet on the floor, every 4 s"),
    "walk": (
        _walk,
        4 * WALK_PERIOD,
        "walk in place: alternating leg lifts and counter arm swing, 1.6 s per stride",
    ),
    "capture": (
        _capture,
        CAPTURE_SECONDS,
        "a training capture: one slow turn while raising the arms and bending the elbows",
    ),
    "tpose": (_static, 1.0, "static rest T-pose"),
    "rest": (_static, 1.0, "static rest T-pose (same as tpose)"),
}
BUILTIN_MOTIONS: dict[str, str] = {name: entry[2] for name, entry in _BUILTINS.items()}


def _frame_count(name: str, num_frames: int | None, fps: float, seconds: float | None) -> int:
    """Frames to generate: ``num_frames``, else round(seconds · fps) + 1 (the default length if neither)."""
    if num_frames is not None and seconds is not None:
        raise UserError(
            f"Both a frame count and a length in seconds were given for motion '{name}'; pass only one."
        )
    if num_frames is None:
        length = _BUILTINS[name][1] if seconds is None else float(seconds)
        if not (math.isfinite(length) and length >= 0.0):
            raise UserError(
                f"The length {seconds!r} s for motion '{name}' is not a non-negative number; pass e.g. 8."
            )
        num_frames = round(length * fps) + 1
    if num_frames < 1:
        raise UserError(f"The frame count {num_frames} for motion '{name}' is not positive; pass at least 1.")
    return int(num_frames)


def _unknown_motion(spec: str) -> UserError:
    """The error for a motion name that is neither built in nor a file."""
    names = ", ".join(BUILTIN_MOTIONS)
    return UserError(
        f"The motion '{spec}' is neither a built-in motion ({names}) nor an existing file; pass one of those."
    )


def builtin_motion(
    name: str, num_frames: int | None = None, fps: float = 30.0, seconds: float | None = None
) -> Motion:
    """A procedural motion sampled at t_k = k / fps, k = 0..F-1.

    Args:
        name: a key of :data:`BUILTIN_MOTIONS`.
        num_frames: F; alternatively ``seconds`` gives F = round(seconds · fps) + 1, so the clip
            spans exactly ``seconds``. With neither, a default length of whole cycles is used,
            whose last frame repeats the first.
        fps: frame rate.
    Returns:
        The motion with (F, 72) poses and (F, 3) translations, named ``name``.
    """
    if name not in _BUILTINS:
        raise _unknown_motion(name)
    fps = _check_frame_rate(fps, f"motion '{name}'")
    count = _frame_count(name, num_frames, fps, seconds)
    times = np.arange(count) / fps
    pose, trans = _BUILTINS[name][0](times, (count - 1) / fps)
    return Motion(poses=pose.reshape(count, POSE_DIM), trans=trans, fps=fps, name=name)


def load_motion(
    spec: str | os.PathLike, fps: float | None = None, frames: FrameRange | None = None
) -> Motion:
    """A built-in motion by name, or an AMASS-style ``.npz`` file by path.

    Args:
        spec: a key of :data:`BUILTIN_MOTIONS` or a path.
        fps: frame rate: built-ins are generated at it (30 if None), files resampled to it.
        frames: optional (start, stop) frame range, applied after resampling.
    Raises:
        UserError: ``spec`` is neither a built-in name nor an existing file, or the file is bad.
    """
    text = os.fspath(spec)
    if text in _BUILTINS:
        return _finish(builtin_motion(text, fps=30.0 if fps is None else fps), None, frames)
    path = Path(text)
    if path.exists() or path.suffix.lower() == ".npz":
        return load_amass(path, fps=fps, frames=frames)
    raise _unknown_motion(text)
