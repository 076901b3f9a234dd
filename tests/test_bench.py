"""The benchmark's helpers: the ground-truth-poses reference and the pose-error measures."""

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from capture.calibration import backproject
from capture.files import load_npz, read_image, save_npz
from capture.sequence import SequenceReader
from rgbd2avatar.bench import (
    PROTOCOLS,
    distinct_poses,
    ensure_capture,
    held_out_poses,
    pose_accuracy,
    true_mesh,
    use_true_bodies,
)
from rgbd2avatar.geometry import MeshQuery
from rgbd2avatar.motion import builtin_motion


def test_use_true_bodies_takes_the_fitted_frames_of_the_truth(tmp_path):
    rng = np.random.default_rng(0)
    frames = np.array([0, 3, 6, 9])
    fitted = {
        "body_model": np.array("anny"),
        "frames": frames,
        "poses": rng.normal(size=(4, 72)).astype(np.float32),
        "trans": rng.normal(size=(4, 3)).astype(np.float32),
        "shape": rng.uniform(size=6).astype(np.float32),
        "residuals": rng.uniform(size=4).astype(np.float32),
    }
    truth = {
        "poses": rng.normal(size=(12, 72)),
        "trans": rng.normal(size=(12, 3)),
        "shape": rng.uniform(size=6),
    }
    save_npz(tmp_path / "subject" / "body_fit" / "fits.npz", **fitted)
    save_npz(tmp_path / "capture" / "ground_truth" / "body.npz", **truth)

    use_true_bodies(tmp_path / "subject", tmp_path / "capture")

    result = load_npz(tmp_path / "subject" / "body_fit" / "fits.npz")
    np.testing.assert_allclose(result["poses"], truth["poses"][frames], rtol=1e-6)
    np.testing.assert_allclose(result["trans"], truth["trans"][frames], rtol=1e-6)
    np.testing.assert_allclose(result["shape"], truth["shape"], rtol=1e-6)
    assert result["poses"].dtype == np.float32
    np.testing.assert_array_equal(result["frames"], frames)
    np.testing.assert_array_equal(result["residuals"], fitted["residuals"])
    assert str(result["body_model"]) == "anny"


@pytest.fixture
def turning_truth(tmp_path):
    """A capture folder whose true body turns once about the vertical, evenly over 8 frames, with a
    bent elbow; returns (capture folder, fits of exactly the true bodies)."""
    poses = np.zeros((8, 72), np.float32)
    poses[:, 1] = np.arange(8) * 2 * np.pi / 8
    poses[:, 18 * 3 + 1] = -0.6
    trans, shape = np.zeros((8, 3), np.float32), np.full(6, 0.5, np.float32)
    save_npz(tmp_path / "ground_truth" / "body.npz", poses=poses, trans=trans, shape=shape)
    fits = {"body_model": np.array("anny"), "frames": np.arange(8), "poses": poses, "trans": trans}
    return tmp_path, fits | {"shape": shape}


def test_pose_accuracy_of_the_truth_is_zero(turning_truth):
    capture, fits = turning_truth
    result = pose_accuracy(fits, capture)
    assert result["mpjpe_cm"] < 1e-4 and result["joint_angle_error_rad"] < 1e-3
    assert result["frame_varying_joint_error_cm"] < 1e-4


def test_pose_accuracy_splits_a_camera_frame_offset_of_a_turning_body(turning_truth):
    """A body pushed 3 cm towards the camera in every frame: a constant root offset in the camera's
    frame that, as the body turns once evenly, is a 3 cm error in the body's frame averaging to 0."""
    capture, fits = turning_truth
    result = pose_accuracy(fits | {"trans": fits["trans"] + np.float32([0.0, 0.0, -0.03])}, capture)
    np.testing.assert_allclose(result["root_offset_cm"], [0.0, 0.0, -3.0], atol=1e-4)
    np.testing.assert_allclose(result["root_offset_spread_cm"], 0.0, atol=1e-4)
    assert abs(result["mpjpe_cm"] - 3.0) < 1e-4
    assert abs(result["frame_varying_joint_error_cm"] - 3.0) < 1e-3
    assert result["frames_over_10cm"] == 0
    np.testing.assert_allclose(list(result["joint_error_cm"].values()), 3.0, atol=1e-4)


def test_pose_accuracy_depth_error_is_the_change_of_distance_from_the_camera(turning_truth):
    """The turning body 10 m in front of the camera, fitted 2 cm farther along the optical axis:
    every joint, within a metre of the axis, is 2 cm farther from the camera (to 0.5 %)."""
    capture, fits = turning_truth
    truth = load_npz(capture / "ground_truth" / "body.npz")
    far = truth["trans"] + np.float32([0.0, 0.0, 10.0])
    save_npz(capture / "ground_truth" / "body.npz", **(truth | {"trans": far}))
    result = pose_accuracy(fits | {"trans": far + np.float32([0.0, 0.0, 0.02])}, capture)
    np.testing.assert_allclose(list(result["joint_depth_error_cm"].values()), 2.0, rtol=0.005)


def test_pose_accuracy_from_behind_takes_the_frames_facing_away_from_the_camera(turning_truth):
    """Of the 8 turning frames, 0, 1 and 7 face along the optical axis, away from the camera: a
    4 cm offset in those frames only is 4 cm from behind and 1.5 cm over all frames."""
    capture, fits = turning_truth
    offset = np.zeros((8, 3), np.float32)
    offset[[0, 1, 7], 0] = 0.04
    result = pose_accuracy(fits | {"trans": fits["trans"] + offset}, capture)
    np.testing.assert_allclose(list(result["joint_error_cm_from_behind"].values()), 4.0, rtol=1e-4)
    np.testing.assert_allclose(list(result["joint_error_cm"].values()), 1.5, rtol=1e-4)
    towards = {key: fits[key][2:7] for key in ("frames", "poses", "trans")}  # frames 2-6 only
    assert pose_accuracy(fits | towards, capture)["joint_error_cm_from_behind"] == {}


def test_pose_accuracy_angle_is_the_mean_geodesic_joint_angle(turning_truth):
    capture, fits = turning_truth
    bent = fits["poses"].copy()
    bent[:, 5 * 3] += 0.24  # one joint of 24 off by 0.24 rad: 0.01 rad on average
    result = pose_accuracy(fits | {"poses": bent}, capture)
    assert abs(result["joint_angle_error_rad"] - 0.01) < 1e-5
    by_joint = result["joint_angle_error_rad_by_joint"]
    assert abs(by_joint["right_knee"] - 0.24) < 1e-5  # joint 5 (SMPL order)
    assert max(angle for name, angle in by_joint.items() if name != "right_knee") < 1e-3
    assert result["joint_error_cm"]["right_knee"] < 1e-4 < result["joint_error_cm"]["right_ankle"]


def test_distinct_poses_of_a_periodic_motion_are_different_phases():
    phase = np.arange(40) * 2 * np.pi / 10  # four cycles of ten frames
    poses = np.zeros((40, 72))
    poses[:, 3] = 0.2 + np.sin(phase)  # a hip swinging around a bent rest
    frames = distinct_poses(poses, 3)
    values = poses[frames, 3]
    assert len(np.unique(np.round(values, 6))) == 3  # evenly spaced frames would repeat one phase
    assert values.max() == poses[:, 3].max()  # the pose farthest from the rest pose is one
    assert np.all(np.abs(values[:, None] - values[None])[~np.eye(3, dtype=bool)] > 0.3)


def test_held_out_poses_are_each_motions_distinct_poses():
    protocol = PROTOCOLS["small"]
    pairs = held_out_poses(protocol)
    assert len(pairs) == len(protocol.anim_motions)
    for name, (poses, trans) in zip(protocol.anim_motions, pairs, strict=True):
        motion = builtin_motion(name)
        frames = distinct_poses(motion.poses, protocol.anim_frames)
        assert poses.shape == (protocol.anim_frames, 72) and trans.shape == (protocol.anim_frames, 3)
        np.testing.assert_array_equal(poses.numpy(), motion.poses[frames])
        np.testing.assert_array_equal(trans.numpy(), motion.trans[frames])


def test_clean_protocol_films_depth_on_the_true_surface(tmp_path):
    protocol = replace(PROTOCOLS["small_clean"], train_frames=1)
    ensure_capture(protocol, tmp_path)
    reader = SequenceReader(tmp_path / "sequence")
    depth = reader.frame(0, color=False).depth_m
    mask = ndimage.binary_erosion(
        read_image(tmp_path / "ground_truth" / "masks" / "000000.png") > 0, iterations=2
    )
    points = backproject(depth, reader.calibration.depth)[mask & (depth > 0)]
    truth = true_mesh(tmp_path, 0)
    distance = np.abs(MeshQuery(truth.vertices, truth.faces).signed_distance(points))
    assert np.count_nonzero(mask) > 5000 and len(points) == np.count_nonzero(mask)  # no dropouts
    assert distance.max() < 1e-3  # millimetre quantisation only: no noise, no flying pixels
