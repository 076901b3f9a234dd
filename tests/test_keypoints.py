"""Synthetic detector annotations: landmarks, keypoint layouts, detector noise, file formats."""

import numpy as np
import pytest
import torch

from rgbd2avatar.body import keypoints as kp
from rgbd2avatar.body import load_body_model
from rgbd2avatar.body.skeleton import JOINT_INDEX
from rgbd2avatar.synth import annotations as ann


@pytest.fixture(scope="module")
def body():
    return load_body_model("anny")


def test_landmarks_sit_where_anatomy_says(body):
    verts = body.rest()[0][0].numpy()
    joints = body.rest()[1][0].numpy()
    lm = {name: verts[i] for name, i in kp.landmark_vertices(body).items()}
    assert set(lm) == set(kp.LANDMARKS)
    assert lm["nose"][2] > lm["left_eye"][2] > lm["left_ear"][2]  # nose in front, ears behind
    assert lm["left_eye"][1] > lm["nose"][1] > joints[JOINT_INDEX["neck"], 1]
    for side, sign in (("left", 1), ("right", -1)):
        assert sign * lm[f"{side}_eye"][0] > 0 and sign * lm[f"{side}_ear"][0] > sign * lm[f"{side}_eye"][0]
        assert lm[f"{side}_big_toe"][2] > joints[JOINT_INDEX[f"{side}_ankle"], 2] > lm[f"{side}_heel"][2]
        assert sign * (lm[f"{side}_small_toe"][0] - lm[f"{side}_big_toe"][0]) > 0  # small toe outside
    assert np.allclose(lm["left_eye"] * [-1, 1, 1], lm["right_eye"], atol=1e-4)


def test_layouts_resolve_every_keypoint(body):
    landmarks = kp.landmark_vertices(body)
    out = body(torch.zeros(1, 72))
    verts, joints = out.vertices.numpy(), out.joints.numpy()
    coco = kp.keypoint_layout(kp.COCO17, landmarks).points(joints, verts)
    body25 = kp.keypoint_layout(kp.BODY25, landmarks).points(joints, verts)
    assert coco.shape == (1, 17, 3) and body25.shape == (1, 25, 3)
    assert np.allclose(coco[0, kp.COCO17.index("left_wrist")], joints[0, JOINT_INDEX["left_wrist"]])
    neck = joints[0, [JOINT_INDEX["left_shoulder"], JOINT_INDEX["right_shoulder"]]].mean(0)
    assert np.allclose(body25[0, kp.BODY25.index("neck")], neck)
    assert np.allclose(body25[0, kp.BODY25.index("nose")], coco[0, 0])


def test_detector_noise_statistics():
    rng = np.random.default_rng(0)
    exact = rng.uniform(0, 1000, (20000, 2))
    visible = np.arange(20000) < 10000
    noise = ann.DetectorNoise(outlier=0.0)
    det = ann.detect(exact, visible, rng, noise)
    reported = det[:, 2] > 0
    err = det[:, :2] - exact
    assert abs(err[visible & reported].std() - noise.sigma_px) < 0.1
    assert abs(err[~visible & reported].std() - noise.occluded_sigma_px) < 0.3
    assert abs((~reported[visible]).mean() - noise.miss) < 0.01
    assert abs((~reported[~visible]).mean() - noise.occluded_miss) < 0.02
    assert det[visible & reported, 2].min() > det[~visible & reported, 2].max()
    assert (det[~reported] == 0).all()


def test_file_formats():
    kp = np.arange(75, dtype=float).reshape(25, 3)
    assert ann.openpose_json(kp)["people"][0]["pose_keypoints_2d"] == list(range(75))
    coco = ann.coco_result(7, np.ones((17, 3)))
    assert coco["image_id"] == 7 and len(coco["keypoints"]) == 51 and coco["score"] == 1.0
    hit = np.array([[True, False]])
    iuv = ann.iuv_image(np.array([[23, 5]]), np.array([[[1.0, 0.5], [0.2, 0.2]]]), hit)
    assert iuv.dtype == np.uint8 and iuv[0, 0].tolist() == [24, 255, 128] and iuv[0, 1].tolist() == [0, 0, 0]


def test_unprojectable_keypoints_are_missed():
    pixels = np.array([[np.nan, np.nan], [10.0, 20.0]])
    det = ann.detect(pixels, np.array([False, True]), np.random.default_rng(0), ann.DetectorNoise(miss=0.0))
    assert (det[0] == 0).all() and np.isfinite(det).all() and det[1, 2] > 0
