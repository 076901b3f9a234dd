"""Motion clips: AMASS-style files, resampling, frame ranges and the built-in motions."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from rgbd2avatar.body.lbs import axis_angle_to_matrix
from rgbd2avatar.body.skeleton import JOINT_INDEX, mirror_pose
from rgbd2avatar.errors import UserError
from rgbd2avatar.motion import (
    BUILTIN_MOTIONS,
    Motion,
    builtin_motion,
    load_amass,
    load_motion,
    parse_frame_range,
    save_amass,
)

RNG = np.random.default_rng(0)


def random_motion(frames: int = 20, fps: float = 60.0) -> Motion:
    """A motion of random (F, 72) poses and (F, 3) translations."""
    return Motion(
        poses=RNG.normal(scale=0.5, size=(frames, 72)),
        trans=RNG.normal(size=(frames, 3)),
        fps=fps,
        betas=RNG.normal(size=10),
        gender="female",
        name="random",
    )


def rotations(aa: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle → (..., 3, 3) rotation matrices, in float64."""
    return axis_angle_to_matrix(torch.as_tensor(aa, dtype=torch.float64)).numpy()


def rot_y(angle: float) -> np.ndarray:
    """R_y(angle) in closed form."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def frame_to_frame_angles(poses: np.ndarray) -> np.ndarray:
    """(F-1, 24) rotation angles in radians between consecutive frames of each joint."""
    rots = rotations(poses.reshape(len(poses), 24, 3))
    relative = np.swapaxes(rots[:-1], -1, -2) @ rots[1:]
    cos = (np.trace(relative, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.arccos(np.clip(cos, -1.0, 1.0))


# ------------------------------------------------------------------------------------- files


def test_save_load_round_trip_is_exact(tmp_path):
    motion = random_motion()
    path = tmp_path / "clip.npz"
    save_amass(motion, path)
    loaded = load_amass(path)
    np.testing.assert_array_equal(loaded.poses, motion.poses)
    np.testing.assert_array_equal(loaded.trans, motion.trans)
    np.testing.assert_array_equal(loaded.betas, motion.betas)
    assert loaded.fps == motion.fps
    assert loaded.gender == "female"
    assert loaded.name == "clip"
    assert [p.name for p in tmp_path.iterdir()] == ["clip.npz"]


def test_saved_file_is_amass_style(tmp_path):
    path = tmp_path / "clip.npz"
    save_amass(random_motion(frames=5), path)
    with np.load(path, allow_pickle=False) as data:
        assert data["poses"].shape == (5, 72)
        assert data["trans"].shape == (5, 3)
        assert float(data["mocap_framerate"]) == 60.0
        assert data["gender"].dtype.kind == "U"


def joint_coded_poses(frames: int, width: int) -> np.ndarray:
    """(F, width) poses whose joint j (3 numbers) holds the value j + 1 in every frame."""
    return np.repeat(np.arange(width) // 3 + 1.0, frames).reshape(width, frames).T.copy()


@pytest.mark.parametrize("width", [156, 165])
def test_smplh_and_smplx_layouts_map_to_smpl(tmp_path, width):
    path = tmp_path / "clip.npz"
    np.savez(path, poses=joint_coded_poses(4, width), trans=np.zeros((4, 3)), mocap_framerate=120.0)
    poses = load_amass(path).poses.reshape(4, 24, 3)
    np.testing.assert_array_equal(poses[:, :22], np.broadcast_to(np.arange(1.0, 23.0)[:, None], (4, 22, 3)))
    np.testing.assert_array_equal(poses[:, 22:], 0.0)


@pytest.mark.parametrize("key", ["mocap_framerate", "mocap_frame_rate"])
def test_both_frame_rate_keys_are_read(tmp_path, key):
    path = tmp_path / "clip.npz"
    np.savez(path, poses=np.zeros((3, 72)), trans=np.zeros((3, 3)), **{key: np.array(50.0)})
    assert load_amass(path).fps == 50.0


def test_bytes_gender_is_decoded(tmp_path):
    path = tmp_path / "clip.npz"
    np.savez(
        path, poses=np.zeros((3, 72)), trans=np.zeros((3, 3)), mocap_framerate=30.0, gender=np.array(b"male")
    )
    assert load_amass(path).gender == "male"


def test_explicit_fps_stands_in_for_a_missing_frame_rate(tmp_path):
    path = tmp_path / "clip.npz"
    np.savez(path, poses=np.zeros((3, 72)), trans=np.zeros((3, 3)))
    assert load_amass(path, fps=25.0).fps == 25.0


def test_load_resamples_then_cuts_the_frame_range(tmp_path):
    path = tmp_path / "clip.npz"
    save_amass(random_motion(frames=61, fps=60.0), path)
    motion = load_amass(path, fps=30.0, frames=(5, 15))
    assert motion.fps == 30.0
    assert motion.num_frames == 10
    np.testing.assert_allclose(motion.trans, load_amass(path).trans[10:30:2], atol=1e-6)


def write_bad_file(path, case: str) -> None:
    """Write one kind of malformed motion file to ``path``."""
    good = {"poses": np.zeros((4, 72)), "trans": np.zeros((4, 3)), "mocap_framerate": 30.0}
    if case == "missing poses":
        np.savez(path, trans=good["trans"], mocap_framerate=30.0)
    elif case == "missing trans":
        np.savez(path, poses=good["poses"], mocap_framerate=30.0)
    elif case == "wrong pose width":
        np.savez(path, **{**good, "poses": np.zeros((4, 70))})
    elif case == "trans frame mismatch":
        np.savez(path, **{**good, "trans": np.zeros((5, 3))})
    elif case == "trans not F×3":
        np.savez(path, **{**good, "trans": np.zeros((4, 2))})
    elif case == "NaN pose":
        np.savez(path, **{**good, "poses": np.full((4, 72), np.nan)})
    elif case == "infinite trans":
        np.savez(path, **{**good, "trans": np.full((4, 3), np.inf)})
    elif case == "no frame rate":
        np.savez(path, poses=good["poses"], trans=good["trans"])
    elif case == "zero frame rate":
        np.savez(path, **{**good, "mocap_framerate": 0.0})
    elif case == "pickled object array":
        np.savez(path, **{**good, "gender": np.array([{"gender": "male"}], dtype=object)})
    elif case == "plain pickle":
        path.write_bytes(pickle.dumps(good))
    elif case == "text file":
        path.write_text("poses, trans\n")
    elif case == "empty file":
        path.write_bytes(b"")


BAD_CASES = [
    "missing poses",
    "missing trans",
    "wrong pose width",
    "trans frame mismatch",
    "trans not F×3",
    "NaN pose",
    "infinite trans",
    "no frame rate",
    "zero frame rate",
    "pickled object array",
    "plain pickle",
    "text file",
    "empty file",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_files_raise_user_error_naming_the_file(tmp_path, case):
    path = tmp_path / "bad.npz"
    write_bad_file(path, case)
    with pytest.raises(UserError, match="bad.npz"):
        load_amass(path)


def test_pickled_arrays_the_loader_does_not_use_are_ignored(tmp_path):
    path = tmp_path / "clip.npz"
    markers = np.array([{"marker": 1}], dtype=object)
    np.savez(path, poses=np.zeros((3, 72)), trans=np.zeros((3, 3)), mocap_framerate=30.0, markers=markers)
    assert load_amass(path).num_frames == 3


def test_missing_file_raises_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_amass(tmp_path / "absent.npz")
    with pytest.raises(UserError, match="does not exist"):
        load_motion(tmp_path / "absent.npz")


def test_unknown_builtin_name_lists_the_builtins():
    with pytest.raises(UserError, match="turn, raise_arms"):
        load_motion("moonwalk")


def test_load_motion_reads_files_and_builtins(tmp_path):
    path = tmp_path / "clip.npz"
    save_amass(random_motion(frames=7, fps=30.0), path)
    assert load_motion(str(path)).num_frames == 7
    walk = load_motion("walk", fps=24.0, frames=(0, 10))
    assert (walk.name, walk.fps, walk.num_frames) == ("walk", 24.0, 10)


# --------------------------------------------------------------------------------- resample


def test_resample_constant_velocity_rotation_matches_closed_form():
    axis = np.array([1.0, 2.0, -2.0]) / 3.0
    speed = 2.5  # rad/s, so the angle stays below π over the 1 s clip
    source_times = np.arange(61) / 60.0
    poses = np.zeros((61, 72))
    poses[:, 3 * 5 : 3 * 6] = axis * speed * source_times[:, None]
    trans = np.stack([source_times, 2.0 * source_times, np.ones(61)], axis=1)
    resampled = Motion(poses=poses, trans=trans, fps=60.0).resample(24.0)
    target_times = np.arange(25) / 24.0
    assert resampled.num_frames == 25 and resampled.fps == 24.0
    np.testing.assert_allclose(resampled.poses[:, 15:18], axis * speed * target_times[:, None], atol=1e-5)
    np.testing.assert_allclose(np.delete(resampled.poses, np.s_[15:18], axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(
        resampled.trans[:, :2], np.stack([target_times, 2 * target_times], 1), atol=1e-6
    )


def test_resample_past_half_a_turn_matches_rotation_matrices():
    source_times = np.arange(31) / 30.0
    angles = 6.0 * source_times  # up to 6 rad, wrapping past π
    poses = np.zeros((31, 72))
    poses[:, 0:3] = np.stack([np.zeros(31), angles, np.zeros(31)], 1)
    resampled = Motion(poses=poses, trans=np.zeros((31, 3)), fps=30.0).resample(25.0)
    expected = np.stack([rot_y(6.0 * k / 25.0) for k in range(26)])
    np.testing.assert_allclose(rotations(resampled.poses[:, 0:3]), expected, atol=1e-5)
    assert np.linalg.norm(resampled.poses[:, 0:3], axis=1).max() <= math.pi + 1e-6


def test_resample_to_same_fps_is_identity():
    motion = random_motion()
    same = motion.resample(motion.fps)
    np.testing.assert_array_equal(same.poses, motion.poses)
    np.testing.assert_array_equal(same.trans, motion.trans)


def test_resample_keeps_only_frames_within_the_clip():
    motion = random_motion(frames=11, fps=10.0)  # 1 s
    assert motion.resample(25.0).num_frames == 26
    assert motion.resample(3.0).num_frames == 4  # t = 0, 1/3, 2/3, 1


# ------------------------------------------------------------------------------ frame range


def test_slice_selects_frame_range():
    motion = random_motion(frames=20)
    part = motion.slice(5, 12)
    np.testing.assert_array_equal(part.poses, motion.poses[5:12])
    np.testing.assert_array_equal(part.trans, motion.trans[5:12])
    assert motion.slice(None, -5).num_frames == 15
    with pytest.raises(UserError, match="random"):
        motion.slice(15, 30)
    with pytest.raises(UserError):
        motion.slice(8, 8)


@pytest.mark.parametrize(
    ("spec", "expected"), [("10:200", (10, 200)), (":50", (None, 50)), ("7:", (7, None))]
)
def test_parse_frame_range(spec, expected):
    assert parse_frame_range(spec) == expected


@pytest.mark.parametrize("spec", ["10", "a:b", "1:2:3"])
def test_parse_frame_range_rejects_bad_text(spec):
    with pytest.raises(UserError, match="START:STOP"):
        parse_frame_range(spec)


def test_to_torch_gives_float32_tensors():
    poses, trans = random_motion(frames=3).to_torch("cpu")
    assert poses.shape == (3, 72) and trans.shape == (3, 3)
    assert poses.dtype == trans.dtype == torch.float32


# ------------------------------------------------------------------------- built-in motions


@pytest.mark.parametrize("name", list(BUILTIN_MOTIONS))
def test_builtin_shapes_finite_deterministic_and_smooth(name):
    motion = builtin_motion(name, num_frames=90, fps=30.0)
    assert motion.poses.shape == (90, 72) and motion.trans.shape == (90, 3)
    assert motion.poses.dtype == np.float32
    assert np.isfinite(motion.poses).all() and np.isfinite(motion.trans).all()
    again = builtin_motion(name, num_frames=90, fps=30.0)
    np.testing.assert_array_equal(again.poses, motion.poses)
    assert frame_to_frame_angles(motion.poses).max() < math.radians(12.0)
    assert np.abs(np.diff(motion.trans, axis=0)).max() < 0.02


def test_builtin_length_from_seconds():
    assert builtin_motion("walk", seconds=2.0, fps=25.0).num_frames == 51
    assert builtin_motion("turn").duration == pytest.approx(8.0)


def test_turn_is_one_full_turn_about_y():
    motion = builtin_motion("turn", num_frames=241, fps=30.0)
    root = rotations(motion.poses[:, 0:3])
    for frame, angle in [(0, 0.0), (60, math.pi / 2), (120, math.pi)]:
        np.testing.assert_allclose(root[frame], rot_y(angle), atol=1e-6)
    yaw = np.unwrap(np.arctan2(root[:, 0, 2], root[:, 2, 2]))
    assert yaw[-1] - yaw[0] == pytest.approx(2 * math.pi, abs=1e-5)


def test_turn_keeps_arms_near_the_sides():
    left = JOINT_INDEX["left_shoulder"]
    left_arm = rotations(builtin_motion("turn").poses[0, 3 * left : 3 * left + 3]) @ np.array([1.0, 0.0, 0.0])
    assert left_arm[1] < -0.7


def test_squat_lowers_the_pelvis():
    trans = builtin_motion("squat").trans
    assert trans[:, 1].min() < trans[0, 1] - 0.2


def test_raise_arms_lifts_arms_above_horizontal():
    poses = builtin_motion("raise_arms").poses
    left = JOINT_INDEX["left_shoulder"]
    arm_y = (rotations(poses[:, 3 * left : 3 * left + 3]) @ np.array([1.0, 0.0, 0.0]))[:, 1]
    assert arm_y[0] < -0.9
    assert arm_y.max() > 0.5


def test_walk_is_mirror_symmetric_half_a_stride_apart():
    motion = builtin_motion("walk", fps=30.0)  # 1.6 s stride = 48 frames
    half = 24
    poses = torch.from_numpy(motion.poses)
    np.testing.assert_allclose(poses[half:].numpy(), mirror_pose(poses[:-half]).numpy(), atol=1e-6)
    swinging = [
        JOINT_INDEX[f"{side}_{joint}"] for side in ("left", "right") for joint in ("hip", "knee", "shoulder")
    ]
    swing = motion.poses.reshape(-1, 24, 3)[:, swinging]  # (F, 6, 3)
    assert ((swing.max(0) - swing.min(0)).max(-1) > math.radians(20)).all()


def test_static_poses_are_rest():
    np.testing.assert_array_equal(builtin_motion("tpose", num_frames=5).poses, 0.0)


def test_capture_motion_turns_once_while_the_arms_move():
    motion = builtin_motion("capture")
    root = axis_angle_to_matrix(torch.from_numpy(motion.poses[:, :3]).double())
    half = motion.num_frames // 2
    assert torch.allclose(
        root[half], torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=torch.float64)), atol=1e-2
    )
    assert torch.allclose(root[-1], torch.eye(3, dtype=torch.float64), atol=1e-6)
    shoulder = motion.poses[:, 16 * 3 + 2]
    assert shoulder.max() - shoulder.min() > np.radians(90)
