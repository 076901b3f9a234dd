"""Per-frame body fitting: torch camera, priors, and recovery of a known body from synthetic
observations made straight from the posed model (no renderer)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from capture import calibration as npcam
from capture.calibration import azure_kinect_preset
from fitting import camera, priors
from fitting.body_fit import (
    BodyStart,
    FitOptions,
    FitWeights,
    clothing_layer,
    fit_body,
    scalp,
    torso_rotation,
)
from fitting.depth_offset import CLOTHED_REGIONS
from fitting.observations import FitObservations
from rgbd2avatar.body import keypoints as kp
from rgbd2avatar.body import lbs, load_body_model
from rgbd2avatar.body.skeleton import JOINT_INDEX, NUM_JOINTS
from rgbd2avatar.geometry import batched_vertex_normals
from tests.smpl_fixture import write_smpl_model

CALIBRATION = azure_kinect_preset()
FAST = FitOptions(iterations=(10, 20, 40), max_points=768)


@pytest.fixture(scope="module")
def body():
    return load_body_model("anny")


# --------------------------------------------------------------------------------------------------
# Camera


@pytest.mark.parametrize("name", ["depth", "color"])
def test_projection_matches_numpy(name):
    intrinsics = getattr(CALIBRATION, name)
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform(-1.5, 1.5, (500, 2)), rng.uniform(0.5, 4.0, (500, 1))], 1)
    expected, _ = npcam.project(points, intrinsics)
    for dtype, tolerance in ((torch.float64, 1e-6), (torch.float32, 1e-3)):
        pixels, valid = camera.project(torch.as_tensor(points, dtype=dtype), intrinsics)
        inside = np.isfinite(expected).all(1)
        assert np.array_equal(valid.numpy(), inside) and inside.sum() > 300
        assert np.abs(pixels.double().numpy()[inside] - expected[inside]).max() < tolerance


def test_projection_to_color_matches_numpy():
    points = np.random.default_rng(1).uniform([-1, -1, 1.5], [1, 1, 3.0], (200, 3))
    moved = npcam.transform_points(CALIBRATION.depth_to_color, points)
    expected, _ = npcam.project(moved, CALIBRATION.color)
    pixels, valid = camera.project_to_color(torch.as_tensor(points), CALIBRATION)
    assert valid.all() and np.abs(pixels.numpy() - expected).max() < 1e-4


def test_projection_marks_points_behind_the_camera_invalid_without_nans():
    points = torch.tensor([[0.1, 0.2, -1.0], [0.0, 0.0, 0.0], [5.0, 0.0, 1.0]], requires_grad=True)
    pixels, valid = camera.project(points, CALIBRATION.color)
    assert not valid.any() and torch.isfinite(pixels).all()
    pixels.sum().backward()
    assert torch.isfinite(points.grad).all()


# --------------------------------------------------------------------------------------------------
# Priors


def test_joint_limits_are_zero_in_range_and_push_a_backward_knee_back():
    lower, upper = priors.joint_limits()
    assert (lower[1:] < 0).all() and (upper[1:] > 0).all()  # the rest pose is inside every range
    pose = torch.zeros(2, 72)
    knee = 3 * JOINT_INDEX["left_knee"]
    pose[0, knee] = 1.2  # bent forward: fine
    pose[1, knee] = -0.6  # bent backward
    pose.requires_grad_(True)
    penalty = priors.joint_limit_penalty(pose, lower, upper)
    assert penalty[0] == 0 and penalty[1] > 0.2
    penalty.sum().backward()
    assert pose.grad[1, knee] < 0  # descending the gradient straightens the knee
    assert pose.grad[0].abs().sum() == 0


def test_right_side_limits_mirror_the_left():
    lower, upper = priors.joint_limits()
    left, right = JOINT_INDEX["left_elbow"], JOINT_INDEX["right_elbow"]
    assert upper[left, 1] < 0.5 and lower[right, 1] > -0.5  # each elbow bends one way only
    assert torch.allclose(lower[right], torch.stack([lower[left, 0], -upper[left, 1], -upper[left, 2]]))


def test_pose_and_shape_priors(body):
    assert priors.pose_l2(torch.zeros(3, 69)).abs().sum() == 0
    assert priors.shape_prior(body.default_shape, body.default_shape) == 0
    bounds = priors.shape_bounds(body)
    assert priors.shape_bounds_penalty(torch.full((6,), 0.7), bounds) == 0
    assert priors.shape_bounds_penalty(torch.tensor([1.2, 0.5, 0.5, 0.5, 0.5, -0.1]), bounds) > 0


def test_pose_prior_makes_spine_twists_and_collars_dearer():
    scales = priors.pose_prior_scales(torch.float64)

    def cost(joint: str, axis: int) -> float:
        body_pose = torch.zeros(1, NUM_JOINTS, 3, dtype=torch.float64)
        body_pose[0, JOINT_INDEX[joint], axis] = 0.2
        return float(priors.pose_l2(body_pose[:, 1:].reshape(1, -1), scales))

    shoulder = cost("left_shoulder", 2)
    assert shoulder == pytest.approx(0.04)
    assert cost("spine2", 1) == pytest.approx(priors.TWIST_SCALE * shoulder)
    assert cost("spine2", 0) == pytest.approx(shoulder)
    for joint in ("neck", "left_collar", "right_collar"):
        for axis in range(3):
            assert cost(joint, axis) == pytest.approx(priors.STIFF_SCALE * shoulder)


def test_smoothness_is_zero_for_constant_motion_and_positive_for_a_jerk():
    t = torch.arange(6, dtype=torch.float64)[:, None]
    axis = torch.nn.functional.normalize(torch.randn(NUM_JOINTS, 3, dtype=torch.float64), dim=-1)
    start = lbs.axis_angle_to_matrix(torch.randn(NUM_JOINTS, 3, dtype=torch.float64))
    rots = start @ lbs.axis_angle_to_matrix(0.05 * t[..., None] * axis)  # constant angular velocity
    rots[:, 0] = lbs.axis_angle_to_matrix(torch.tensor([math.pi - 0.05, 0.0, 0.0], dtype=torch.float64))
    trans = torch.tensor([0.1, -0.2, 2.5], dtype=torch.float64) + 0.03 * t
    assert priors.pose_smoothness(rots).abs().max() < 1e-12
    assert priors.translation_smoothness(trans).abs().max() < 1e-12
    jerked = rots.clone()
    jerked[3] = jerked[3] @ lbs.axis_angle_to_matrix(torch.tensor([0.0, 0.1, 0.0], dtype=torch.float64))
    assert priors.pose_smoothness(jerked)[1:4].min() > 1e-3


# --------------------------------------------------------------------------------------------------
# Synthetic recovery


def world_poses(frames: int, yaw: float = 0.3, turn: float = 0.03) -> torch.Tensor:
    """(F, 72) a standing pose (y up, turned by ``yaw`` from facing +z, turning ``turn`` rad a
    frame) that moves a little from frame to frame."""
    pose = torch.zeros(frames, NUM_JOINTS, 3)
    t = torch.arange(frames, dtype=torch.float32)
    pose[:, JOINT_INDEX["left_shoulder"], 2] = -0.9 + 0.04 * t
    pose[:, JOINT_INDEX["right_shoulder"], 2] = 1.0
    pose[:, JOINT_INDEX["left_elbow"], 1] = -0.6
    pose[:, JOINT_INDEX["right_elbow"], 1] = 0.4 + 0.05 * t
    pose[:, JOINT_INDEX["left_hip"], 0] = -0.3
    pose[:, JOINT_INDEX["left_knee"], 0] = 0.4
    pose[:, JOINT_INDEX["right_hip"], 2] = -0.15
    pose[:, JOINT_INDEX["spine2"], 1] = 0.15
    pose[:, JOINT_INDEX["neck"], 0] = 0.1
    pose[:, 0, 1] = yaw + turn * t
    return pose.reshape(frames, 72)


def camera_frame_bodies(body, frames: int, yaw: float = 0.3, turn: float = 0.03):
    """Ground truth in the depth camera's frame (x right, y down, z forward), 2.5 m away."""
    shape = torch.tensor([0.3, 0.6, 0.55, 0.4, 0.55, 0.45])
    flip = lbs.axis_angle_to_matrix(torch.tensor([math.pi, 0.0, 0.0]))
    trans = torch.tensor([0.05, 0.0, 0.0]) + torch.zeros(frames, 3)
    trans[:, 0] += 0.01 * torch.arange(frames)
    pose, trans = body.move_params(
        world_poses(frames, yaw, turn), trans, flip, torch.tensor([0.0, 0.2, 2.5]), shape
    )
    return pose, trans, shape


def test_clothing_layer_covers_the_torso_and_thins_along_the_limbs_to_bare_knees_and_elbows(body):
    thickness = 0.02
    layer = clothing_layer(body, dict.fromkeys(CLOTHED_REGIONS, thickness))
    with torch.no_grad():
        vertices, joints = (value[0] for value in body.rest())
    main_bone = body.weights.argmax(1)

    def near(joint: torch.Tensor, bone: str) -> torch.Tensor:
        """Layer of the vertices of ``bone`` within 6 cm of a point."""
        return layer[((vertices - joint).norm(dim=-1) < 0.06) & (main_bone == JOINT_INDEX[bone])]

    def within(*bones: str) -> torch.Tensor:
        """Layer of the vertices skinned (almost) only to ``bones``."""
        found = layer[body.weights[:, [JOINT_INDEX[bone] for bone in bones]].sum(1) > 0.999]
        assert len(found)
        return found

    torso = within("pelvis", "spine1", "spine2", "spine3", "neck", "left_collar", "right_collar")
    assert (torso > 0.8 * thickness).all()
    assert within("head").max() < 1e-6 and within("left_hand").max() < 1e-6
    for bone, end in (("left_hip", "left_knee"), ("right_shoulder", "right_elbow")):
        start, stop = joints[JOINT_INDEX[bone]], joints[JOINT_INDEX[end]]
        middle, at_end = near((start + stop) / 2, bone), near(stop, bone)
        assert len(middle) and len(at_end)
        assert 0.3 * thickness < middle.mean() < 0.7 * thickness
        assert at_end.max() < 0.25 * thickness
    assert torch.allclose(clothing_layer(body, dict.fromkeys(CLOTHED_REGIONS, 2 * thickness)), 2 * layer)


def test_each_clothing_region_has_its_own_thickness(body):
    lower, upper = clothing_layer(body, {"lower": 0.03}), clothing_layer(body, {"upper": 0.01})
    weights = body.weights

    def only(*bones: str) -> torch.Tensor:
        """Vertices skinned (almost) only to ``bones``."""
        return weights[:, [JOINT_INDEX[bone] for bone in bones]].sum(1) > 0.999

    hips, trunk = only(*CLOTHED_REGIONS["lower"]), only("spine1", "spine2", "spine3")
    assert hips.any() and trunk.any()
    assert upper[hips].max() < 1e-6 and abs(lower[hips].max() - 0.03) < 1e-4  # thinning down the thighs
    assert torch.allclose(upper[trunk], torch.tensor(0.01)) and lower[trunk].max() < 1e-6
    assert torch.allclose(clothing_layer(body, {"lower": 0.03, "upper": 0.01}), lower + upper)


def synthetic_observations(
    body,
    pose,
    trans,
    shape,
    seed: int = 0,
    points: int = 1500,
    dp: int = 200,
    clothes: float = 0.0,
    hair: float = 0.0,
):
    """FitObservations sampled from the posed body: front-facing vertices with their normals,
    COCO-17 keypoints projected into the colour camera (+1 px noise), DensePose correspondences
    of sampled vertices (one of the vertex's triangles, one-hot barycentrics). ``clothes`` (m)
    moves the clothed vertices (torso, upper arms, thighs) out along their normals, ``hair`` (m)
    the scalp's."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        out = body(pose, shape, trans)
    joints, normals = out.joints, batched_vertex_normals(out.vertices, body.faces)
    offsets = clothing_layer(body, dict.fromkeys(CLOTHED_REGIONS, clothes)) + hair * scalp(body)
    verts = out.vertices + normals * offsets[:, None]
    front = (normals * verts).sum(-1) < 0
    score = torch.rand(front.shape, generator=gen) + front.float()  # front-facing first, shuffled
    index = score.topk(points, dim=1).indices
    sampled = torch.gather(verts, 1, index[..., None].expand(-1, -1, 3))
    sampled_normals = torch.gather(normals, 1, index[..., None].expand(-1, -1, 3))
    faces = body.faces
    corner_face = torch.zeros(body.num_vertices, dtype=torch.long)
    corner_slot = torch.zeros(body.num_vertices, dtype=torch.long)
    corner_face[faces.reshape(-1)] = torch.arange(len(faces)).repeat_interleave(3)
    corner_slot[faces.reshape(-1)] = torch.arange(3).repeat(len(faces))
    dp_rows = torch.randperm(points, generator=gen)[:dp].expand(len(pose), -1)
    dp_vertices = torch.gather(index, 1, dp_rows)
    layout = kp.keypoint_layout(kp.COCO17, kp.landmark_vertices(body))
    points3d = layout.points(joints.numpy(), verts.numpy())
    moved = npcam.transform_points(CALIBRATION.depth_to_color, points3d.reshape(-1, 3))
    pixels, _ = npcam.project(moved, CALIBRATION.color)
    pixels = pixels.reshape(len(pose), -1, 2) + np.random.default_rng(seed).normal(0, 1.0, (len(pose), 17, 2))
    keypoints = torch.cat(
        [torch.as_tensor(pixels, dtype=torch.float32), torch.full((len(pose), 17, 1), 0.9)], -1
    )
    frames = len(pose)
    return FitObservations(
        frames=torch.arange(frames),
        points=sampled,
        normals=sampled_normals,
        valid=torch.ones(frames, points, dtype=torch.bool),
        keypoints=keypoints,
        keypoint_names=kp.COCO17,
        dp_points=dp_rows.clone(),
        dp_triangles=corner_face[dp_vertices],
        dp_barycentrics=torch.nn.functional.one_hot(corner_slot[dp_vertices], 3).float(),
        dp_valid=torch.ones(frames, dp, dtype=torch.bool),
        calibration=CALIBRATION,
    )


def mpjpe(body, fit, pose, trans, shape) -> torch.Tensor:
    """(F,) mean per-joint position error (m) of a fit against the ground truth."""
    with torch.no_grad():
        truth = body(pose, shape, trans).joints
        fitted = body(fit.poses, fit.shape, fit.trans).joints
    return (truth - fitted).norm(dim=-1).mean(-1)


def test_fit_recovers_a_known_body_from_a_perturbed_start(body):
    pose, trans, shape = camera_frame_bodies(body, 6)
    obs = synthetic_observations(body, pose, trans, shape)
    gen = torch.Generator().manual_seed(3)
    start_pose = pose[0] + 0.15 * torch.randn(72, generator=gen)
    start = BodyStart(start_pose, trans[0] + torch.tensor([0.08, -0.05, 0.1]))
    done = []
    fit = fit_body(
        body, obs, options=replace(FAST, batch_size=3), start=start, progress=lambda *a: done.append(a)
    )
    errors = mpjpe(body, fit, pose, trans, shape)
    assert errors.max() < 0.02, errors  # two windows: the second one tracks from the first
    assert done == [(3, 6), (6, 6)] and not fit.reinitialised.any()
    assert fit.poses.shape == (6, 72) and fit.trans.shape == (6, 3) and fit.shape.shape == (6,)
    assert set(fit.terms) == {"keypoints", "densepose", "icp"} and fit.residuals.shape == (6,)


def test_fit_initialises_itself_from_keypoints(body):
    pose, trans, shape = camera_frame_bodies(body, 2)
    obs = synthetic_observations(body, pose, trans, shape, seed=1)
    fit = fit_body(body, obs, options=FAST)
    assert mpjpe(body, fit, pose, trans, shape).max() < 0.03


def test_a_person_facing_away_is_initialised_facing_away(body):
    pose, trans, shape = camera_frame_bodies(body, 2, yaw=math.pi + 0.3)
    obs = synthetic_observations(body, pose, trans, shape, seed=4)
    face = [kp.COCO17.index(name) for name in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")]
    obs.keypoints[:, face, 2] = 0.1  # a detector guesses at a face it cannot see
    fit = fit_body(body, obs, options=FAST)
    assert mpjpe(body, fit, pose, trans, shape).max() < 0.03


def test_the_torso_turns_to_agree_with_the_face():
    frontal = torch.tensor([[[0.2, -0.4, 2.4], [-0.2, -0.4, 2.4], [0.1, 0.1, 2.4], [-0.1, 0.1, 2.4]]])
    found = torch.ones(1, 4, dtype=torch.bool)
    towards = torso_rotation(frontal, found, torch.tensor([True]))[0]
    assert torch.allclose(towards, torch.diag(torch.tensor([1.0, -1.0, -1.0])), atol=1e-6)
    # the same labels without a face: a detector that assumed a frontal view swapped left and right
    away = torso_rotation(frontal, found, torch.tensor([False]))[0]
    assert torch.allclose(away, torch.diag(torch.tensor([-1.0, -1.0, 1.0])), atol=1e-6)
    back_view = frontal[:, [1, 0, 3, 2]]  # correctly labelled from behind
    assert torch.allclose(torso_rotation(back_view, found, torch.tensor([False]))[0], away, atol=1e-6)


def test_fit_starts_from_the_point_cloud_without_keypoints(body):
    pose, trans, shape = camera_frame_bodies(body, 2)
    obs = replace(
        synthetic_observations(body, pose, trans, shape, seed=1), keypoints=None, keypoint_names=None
    )
    fit = fit_body(body, obs, options=FAST)
    assert mpjpe(body, fit, pose, trans, shape).max() < 0.03


def test_fit_works_with_an_smpl_format_model(tmp_path):
    write_smpl_model(tmp_path / "SMPL_NEUTRAL.pkl")
    body = load_body_model("smpl", model_dir=tmp_path)  # 10 betas, pose correctives, no bounds
    shape = torch.zeros(10)
    shape[:3] = torch.tensor([0.5, -0.3, 0.2])
    flip = lbs.axis_angle_to_matrix(torch.tensor([math.pi, 0.0, 0.0]))
    pose, trans = body.move_params(
        world_poses(3), torch.zeros(3, 3), flip, torch.tensor([0.0, 0.2, 2.5]), shape
    )
    obs = synthetic_observations(body, pose, trans, shape, points=150, dp=40)
    gen = torch.Generator().manual_seed(3)
    start = BodyStart(
        pose[0] + 0.1 * torch.randn(72, generator=gen), trans[0] + torch.tensor([0.05, -0.05, 0.05])
    )
    fit = fit_body(body, obs, options=FAST, start=start)
    assert mpjpe(body, fit, pose, trans, shape).max() < 0.02


def test_a_garbage_frame_is_reinitialised_without_dragging_its_neighbours(body):
    pose, trans, shape = camera_frame_bodies(body, 6)
    obs = synthetic_observations(body, pose, trans, shape, seed=2)
    gen = torch.Generator().manual_seed(5)
    bad = 3
    obs.points[bad] = torch.rand(obs.points.shape[1:], generator=gen) * torch.tensor(
        [2.0, 2.0, 1.0]
    ) + torch.tensor([-1.0, -1.0, 2.0])
    obs.keypoints[bad, :, :2] = torch.rand(17, 2, generator=gen) * torch.tensor([1280.0, 720.0])
    start = BodyStart(pose[0], trans[0], shape)
    fit = fit_body(body, obs, options=FAST, start=start)
    assert fit.reinitialised.tolist() == [i == bad for i in range(6)]
    errors = mpjpe(body, fit, pose, trans, shape)
    assert errors[[0, 1, 2, 4, 5]].max() < 0.02, errors


def test_loose_clothes_on_a_turning_subject_are_fitted_behind_their_surface(body):
    pose, trans, shape = camera_frame_bodies(body, 16, turn=math.pi / 16)
    obs = synthetic_observations(body, pose, trans, shape, seed=6, clothes=0.03)
    start = BodyStart(pose[0], trans[0], shape)
    fixed_shape = replace(FAST, iterations=(10, 40, 0))  # a body that cannot thicken into the clothes
    plain = fit_body(body, obs, options=replace(fixed_shape, correct_depth=False), start=start)
    fit = fit_body(body, obs, options=fixed_shape, start=start)
    with torch.no_grad():
        truth = body(pose, shape, trans).joints
        rays = torch.nn.functional.normalize(truth[:, 0], dim=-1)
        depth = {
            name: ((body(f.poses, f.shape, f.trans).joints - truth)[:, 0] * rays).sum(-1).mean()
            for name, f in (("plain", plain), ("corrected", fit))
        }
    assert not plain.depth_offsets and depth["plain"] < -0.01  # pulled towards the camera
    # the layer lies along the viewing rays, these clothes along the normals (they also widen the
    # silhouette), so the refit removes most of the depth error, not all of it
    assert min(fit.clothing.values()) > 0.02 and abs(depth["corrected"]) < abs(depth["plain"]) / 3
    first, last = fit.depth_offsets[0], fit.depth_offsets[-1]
    assert all(abs(last[region].offset) < abs(first[region].offset) / 4 for region in CLOTHED_REGIONS)
    assert mpjpe(body, fit, pose, trans, shape).mean() < 0.7 * mpjpe(body, plain, pose, trans, shape).mean()


def test_the_scalp_is_the_back_top_and_sides_of_the_head_not_the_face(body):
    region = scalp(body)
    with torch.no_grad():
        vertices = body.rest()[0][0]
    head = body.weights[:, JOINT_INDEX["head"]] >= 0.5
    x, y, z = vertices[head].T
    on_head = region[head]
    assert on_head[z.argmin()] and on_head[y.argmax()] and on_head[x.argmin()] and on_head[x.argmax()]
    assert not on_head[z.argmax()]  # the tip of the nose
    assert not region[~head].any() and 0.2 < on_head.float().mean() < 0.8


def test_hair_does_not_pull_the_head_of_a_person_seen_from_behind(body):
    pose, trans, shape = camera_frame_bodies(body, 4, yaw=math.pi)
    obs = synthetic_observations(body, pose, trans, shape, seed=5, hair=0.03)
    start = BodyStart(pose[0], trans[0], shape)
    head = body.weights[:, JOINT_INDEX["head"]] >= 0.5
    with torch.no_grad():
        truth = body(pose, shape, trans).vertices[:, head].mean(1)
    errors = {}
    for match in (True, False):
        options = replace(FAST, correct_depth=False, match_scalp=match)
        fit = fit_body(body, obs, options=options, start=start)
        with torch.no_grad():
            fitted = body(fit.poses, fit.shape, fit.trans).vertices[:, head].mean(1)
        errors[match] = float((fitted - truth).norm(dim=-1).mean())
    assert errors[False] < 0.5 * errors[True], errors


def test_keypoints_alone_make_no_depth_correction(body):
    pose, trans, shape = camera_frame_bodies(body, 8, turn=math.pi / 8)
    obs = synthetic_observations(body, pose, trans, shape, seed=6, clothes=0.03)
    keypoints_only = replace(FitWeights(), icp=0.0, densepose=0.0)
    fit = fit_body(body, obs, keypoints_only, FAST, start=BodyStart(pose[0], trans[0], shape))
    assert fit.clothing == {} and not fit.depth_offsets  # no surface term a layer could move
