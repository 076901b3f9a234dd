"""The synthetic capture end to end: formats, ground truth consistency, determinism."""

import json

import numpy as np
import pytest
import torch
import trimesh
from scipy import ndimage

from capture.calibration import backproject, transform_points
from capture.files import load_npz, read_image
from capture.sequence import SequenceReader
from rgbd2avatar.body import keypoints as kp
from rgbd2avatar.geometry import MeshQuery
from rgbd2avatar.synth.generate import SynthOptions, synthesize
from rgbd2avatar.synth.sensor import NoiseModel
from rgbd2avatar.synth.subject import make_subject

FRAMES = 3


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, SynthOptions(frames=FRAMES, seed=3))
    return out


def test_writes_the_sequence_format_and_every_ground_truth_file(capture):
    reader = SequenceReader(capture / "sequence")
    assert len(reader) == FRAMES
    assert reader.calibration.depth.shape == (576, 640) and reader.calibration.color.shape == (720, 1280)
    assert np.allclose(np.diff(reader.timestamps), 1 / 30)
    frame = reader.frame(1)
    assert frame.depth_mm.dtype == np.uint16 and frame.color.shape == (720, 1280, 3)
    truth = capture / "ground_truth"
    for sub, suffix in (("meshes", ".ply"), ("masks", ".png"), ("color_masks", ".png"), ("iuv", ".png")):
        assert len(list((truth / sub).glob(f"*{suffix}"))) == FRAMES, sub
    openpose = json.loads((truth / "keypoints" / "openpose" / "000000_keypoints.json").read_text())
    assert len(openpose["people"][0]["pose_keypoints_2d"]) == 75
    coco = json.loads((truth / "keypoints" / "coco17.json").read_text())
    assert [c["image_id"] for c in coco] == list(range(FRAMES)) and len(coco[0]["keypoints"]) == 51
    iuv = read_image(truth / "iuv" / "000000.png")
    assert iuv.shape == (720, 1280, 3) and set(np.unique(iuv[..., 0])) <= set(range(25))
    assert len(np.unique(iuv[..., 0])) > 15  # most body parts are seen


def test_backprojected_depth_lies_on_the_true_surface_within_the_noise(capture):
    reader = SequenceReader(capture / "sequence")
    truth = capture / "ground_truth"
    noise = NoiseModel()
    for index in range(FRAMES):
        depth = reader.frame(index, color=False).depth_m
        mask = ndimage.binary_erosion(read_image(truth / "masks" / f"{index:06d}.png") > 0, iterations=2)
        points = backproject(depth, reader.calibration.depth)[mask & (depth > 0)]
        mesh = trimesh.load(truth / "meshes" / f"{index:06d}.ply", process=False)
        distance = np.abs(MeshQuery(mesh.vertices, mesh.faces).signed_distance(points))
        sigma = noise.sigma(points[:, 2])
        assert len(points) > 5000
        # Gaussian axial noise: |d| ≤ σ for ~68 % and ≤ 3σ for ~99.7 % (distance to the surface
        # is at most the axial error); quantisation adds up to 0.5 mm.
        assert np.mean(distance <= sigma + 5e-4) > 0.6
        assert np.mean(distance <= 3 * sigma + 5e-4) > 0.97


def test_ground_truth_body_parameters_reproduce_the_meshes_in_the_camera_frame(capture):
    truth = capture / "ground_truth"
    body = load_npz(truth / "body.npz")
    subject = make_subject("casual", seed=3)
    with torch.no_grad():
        clothed = subject.clothed(torch.from_numpy(body["poses"]), torch.from_numpy(body["trans"])).numpy()
    for index in range(FRAMES):
        mesh = trimesh.load(truth / "meshes" / f"{index:06d}.ply", process=False)
        assert np.abs(mesh.vertices - clothed[index]).max() < 1e-4
    world = transform_points(body["world_from_depth"], clothed[0])
    assert abs(world[:, 1].min()) < 0.01  # standing on the floor (y = 0)


def test_visible_keypoints_project_into_the_person(capture):
    truth = capture / "ground_truth"
    exact = load_npz(truth / "keypoints_exact.npz")
    for index in range(FRAMES):
        mask = read_image(truth / "color_masks" / f"{index:06d}.png") > 0
        mask = ndimage.binary_dilation(mask, iterations=3)
        pixels = np.rint(exact["body25"][index][exact["body25_visible"][index]]).astype(int)
        assert len(pixels) > 10
        assert mask[pixels[:, 1], pixels[:, 0]].mean() > 0.9
    assert exact["body25"].shape == (FRAMES, len(kp.BODY25), 2)


def test_same_seed_same_capture(capture, tmp_path):
    synthesize(tmp_path, SynthOptions(frames=1, seed=3))
    again = SequenceReader(tmp_path / "sequence").frame(0)
    first = SequenceReader(capture / "sequence").frame(0)
    assert np.array_equal(again.depth_mm, first.depth_mm) and np.array_equal(again.color, first.color)
