"""The fit's inputs: detector keypoint files, DensePose chart lookups, correspondences, loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from scipy import ndimage

from capture.calibration import backproject
from capture.files import load_npz, read_image, write_image, write_json
from capture.preprocess import preprocess
from capture.sequence import SequenceReader
from fitting.densepose import (
    BodyUVLookup,
    SmplDensePoseLookup,
    densepose_correspondences,
    locate_in_triangles,
    match_faces,
)
from fitting.keypoints_io import read_coco, read_keypoints, read_openpose
from fitting.load import load_observations
from rgbd2avatar.body import BodyModel, load_body_model
from rgbd2avatar.body.keypoints import BODY25, COCO17
from rgbd2avatar.errors import UserError
from rgbd2avatar.synth.generate import SynthOptions, synthesize

FRAMES = 2


def _person(count: int, confidence: float, offset: float = 0.0) -> list[float]:
    rows = np.column_stack([np.arange(count) + offset, np.arange(count) * 2.0, np.full(count, confidence)])
    return rows.reshape(-1).tolist()


# --------------------------------------------------------------------------------------------------
# Keypoint files


def test_openpose_folder_takes_frame_numbers_from_names_and_the_most_confident_person(tmp_path):
    people = [{"pose_keypoints_2d": _person(25, 0.3)}, {"pose_keypoints_2d": _person(25, 0.6, offset=100)}]
    write_json(tmp_path / "clip_000000000003_keypoints.json", {"version": 1.3, "people": people})
    write_json(tmp_path / "000005_keypoints.json", {"version": 1.3, "people": []})
    write_json(tmp_path / "000006_keypoints.json", {"people": [{"pose_keypoints_2d": _person(25, 1.5)}]})
    keypoints, names = read_openpose(tmp_path, [3, 4, 5, 6])
    assert names == BODY25 and keypoints.shape == (4, 25, 3) and keypoints.dtype == np.float32
    assert keypoints[0, 1].tolist() == pytest.approx([101.0, 2.0, 0.6])
    assert not keypoints[1:3].any()  # no file, nobody detected
    assert np.all(keypoints[3, :, 2] == 1.0)  # confidences clipped to [0, 1]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("000000_keypoints.json", "{not json", "not valid JSON"),
        (
            "000000_keypoints.json",
            json.dumps({"people": [{"pose_keypoints_2d": _person(18, 0.5)}]}),
            "54 values",
        ),
        ("000000_keypoints.json", json.dumps({"persons": []}), "not OpenPose output"),
        ("000000_keypoints.json", json.dumps({"people": [{"pose_keypoints_2d": "x"}]}), "expected 75"),
    ],
)
def test_openpose_errors_name_the_file(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(UserError, match=message) as error:
        read_openpose(tmp_path, [0])
    assert name in str(error.value)


def test_openpose_folder_errors(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        read_openpose(tmp_path / "missing", [0])
    with pytest.raises(UserError, match="holds no"):
        read_openpose(tmp_path, [0])
    write_json(tmp_path / "a_000001_keypoints.json", {"people": []})
    write_json(tmp_path / "b_1_keypoints.json", {"people": []})
    with pytest.raises(UserError, match="both frame 1"):
        read_openpose(tmp_path, [1])


def test_coco_results_take_the_highest_score_per_image(tmp_path):
    results = [
        {"image_id": 2, "category_id": 1, "keypoints": _person(17, 0.9), "score": 0.4},
        {"image_id": 2, "category_id": 1, "keypoints": _person(17, 0.5, offset=50), "score": 0.8},
        {"image_id": 2, "category_id": 2, "keypoints": _person(17, 0.9, offset=9), "score": 0.99},
        {"image_id": "000007.jpg", "keypoints": _person(17, -3.0)},
    ]
    write_json(tmp_path / "results.json", results)
    keypoints, names = read_coco(tmp_path / "results.json", [7, 1, 2])
    assert names == COCO17 and keypoints.shape == (3, 17, 3)
    assert keypoints[2, 0].tolist() == pytest.approx([50.0, 0.0, 0.5])
    assert not keypoints[1].any() and not keypoints[0, :, 2].any()  # negative scores → 0
    assert keypoints[0, 3, :2].tolist() == [3.0, 6.0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"annotations": []}, "not a COCO keypoint results list"),
        ([{"image_id": 0}], "needs image_id and keypoints"),
        ([{"image_id": 0, "keypoints": _person(25, 0.5)}], "75 values, expected 51"),
        ([{"image_id": "left", "keypoints": _person(17, 0.5)}], "names no frame"),
    ],
)
def test_coco_errors_name_the_file(tmp_path, content, message):
    write_json(tmp_path / "coco.json", content)
    with pytest.raises(UserError, match=message) as error:
        read_coco(tmp_path / "coco.json", [0])
    assert "coco.json" in str(error.value)


def test_read_keypoints_dispatches_on_folder_or_json(tmp_path):
    write_json(
        tmp_path / "op" / "000000_keypoints.json", {"people": [{"pose_keypoints_2d": _person(25, 0.5)}]}
    )
    write_json(tmp_path / "coco.json", [{"image_id": 0, "keypoints": _person(17, 0.5), "score": 1.0}])
    assert read_keypoints(tmp_path / "op", [0])[1] == BODY25
    assert read_keypoints(tmp_path / "coco.json", [0])[1] == COCO17
    with pytest.raises(UserError, match="does not exist"):
        read_keypoints(tmp_path / "nothing.json", [0])
    (tmp_path / "keypoints.txt").write_text("0 0 0")
    with pytest.raises(UserError, match="neither"):
        read_keypoints(tmp_path / "keypoints.txt", [0])


# --------------------------------------------------------------------------------------------------
# Chart lookups


def test_locate_in_triangles_clamps_outside_points_to_the_closest_edge():
    corners = np.array([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]] * 3)
    points = np.array([[0.25, 0.25], [0.5, -0.5], [2.0, 2.0]])
    weights, distance = locate_in_triangles(points, corners)
    assert weights[0] == pytest.approx([0.5, 0.25, 0.25]) and distance[0] == 0.0
    assert weights[1] == pytest.approx([0.5, 0.5, 0.0]) and distance[1] == pytest.approx(0.5)
    assert weights[2] == pytest.approx([0.0, 0.5, 0.5]) and distance[2] == pytest.approx(np.sqrt(4.5))


@pytest.fixture(scope="module")
def anny() -> BodyModel:
    return load_body_model("anny")


def _surface_samples(body: BodyModel, count: int, seed: int = 0):
    """Random surface points: triangles (n,), barycentrics (n, 3), rest positions (n, 3), their
    IUV label (part of the first vertex + 1, as the synthetic renderer) and UV (n, 2)."""
    rng = np.random.default_rng(seed)
    faces = body.faces.numpy()
    triangles = rng.integers(0, len(faces), count)
    bary = rng.dirichlet([1.0, 1.0, 1.0], count)
    rest = body.rest()[0][0].numpy().astype(np.float64)
    points = np.einsum("nk,nkd->nd", bary, rest[faces[triangles]])
    uv = np.einsum("nk,nkd->nd", bary, body.face_uvs.numpy()[triangles])
    labels = body.part_labels.numpy()[faces[triangles, 0]] + 1
    return triangles, points, labels, uv, rest, faces


def _recovered(match, rest: np.ndarray, faces: np.ndarray) -> np.ndarray:
    return np.einsum("nk,nkd->nd", match.barycentrics.astype(np.float64), rest[faces[match.triangles]])


def test_body_uv_lookup_round_trip_on_anny(anny):
    triangles, points, labels, uv, rest, faces = _surface_samples(anny, 20000)
    lookup = BodyUVLookup(anny)
    exact = lookup.query(labels, uv)
    error = np.linalg.norm(_recovered(exact, rest, faces) - points, axis=1)
    # Measured: 99.85 % land in their own triangle; 99.9th percentile 0.03 mm, worst 1.1 mm.
    assert np.mean(exact.triangles == triangles) > 0.99
    assert np.percentile(error, 99.9) < 1e-3 and error.max() < 0.01
    quantised = lookup.query(labels, np.round(uv * 255) / 255)  # what an 8-bit IUV image keeps
    error = np.linalg.norm(_recovered(quantised, rest, faces) - points, axis=1)
    # Measured: median 2.4 mm, 99th percentile 6.3 mm, worst 11 mm (one UV step ≈ 7 mm on anny).
    assert np.median(error) < 0.004 and np.percentile(error, 99) < 0.01
    unknown = lookup.query(np.array([0, 25]), np.full((2, 2), 0.5))
    assert unknown.triangles.tolist() == [-1, -1] and np.all(np.isinf(unknown.distance))


def test_body_uv_lookup_needs_a_uv_layout():
    weights = torch.zeros(3, 24)
    weights[:, 0] = 1.0
    body = BodyModel(
        "uvless",
        torch.eye(3),
        torch.zeros(3, 3, 1),
        torch.zeros(24, 3),
        torch.zeros(24, 3, 1),
        weights,
        torch.tensor([[0, 1, 2]]),
        ["s"],
        torch.zeros(1),
    )
    with pytest.raises(UserError, match="no UV layout"):
        BodyUVLookup(body)


def _grid_mesh(size: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """A (size × size)-vertex bumpy grid over [0, 1]² (odd size: a vertex column at x = 0.5)."""
    x, y = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size))
    verts = np.column_stack([x.ravel(), y.ravel(), 0.1 * np.sin(3 * x.ravel()) * y.ravel()])
    corner = (np.arange(size - 1)[:, None] * size + np.arange(size - 1)).ravel()
    quads = np.stack([corner, corner + 1, corner + size + 1, corner + size], 1)
    faces = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    return verts, faces


def _densepose_mat(path: Path, verts: np.ndarray, faces: np.ndarray) -> None:
    """A UV_Processed.mat with two charts (left and right half of the grid), vertices split
    per chart, 1-based MATLAB indices and column/row vector shapes as DensePose's file has."""
    right = verts[faces].mean(1)[:, 0] > 0.5
    chart = np.where(right, 2, 1)
    # DensePose vertex = (chart, mesh vertex); keep the pairs that faces use.
    pairs, inverse = np.unique(np.stack([np.repeat(chart, 3), faces.ravel()], 1), axis=0, return_inverse=True)
    u = np.where(pairs[:, 0] == 2, verts[pairs[:, 1], 0] - 0.5, verts[pairs[:, 1], 0]) * 2.0
    v = verts[pairs[:, 1], 1]
    scipy.io.savemat(
        path,
        {
            "All_FaceIndices": chart[:, None].astype(np.float64),
            "All_Faces": inverse.reshape(-1, 3).astype(np.float64) + 1,
            "All_U_norm": u[:, None],
            "All_V_norm": v[:, None],
            "All_vertices": pairs[None, :, 1].astype(np.float64) + 1,
        },
    )


def test_smpl_densepose_lookup_from_a_uv_processed_mat(tmp_path):
    verts, faces = _grid_mesh()
    _densepose_mat(tmp_path / "UV_Processed.mat", verts, faces)
    rng = np.random.default_rng(1)
    shuffle = rng.permutation(len(faces))
    body_faces = np.roll(faces[shuffle], 1, axis=1)  # another face order and corner order
    lookup = SmplDensePoseLookup.from_mat(tmp_path / "UV_Processed.mat", body_faces)
    points = rng.uniform(0.02, 0.98, (500, 2))
    labels = np.where(points[:, 0] > 0.5, 2, 1)
    uv = np.column_stack([np.where(labels == 2, points[:, 0] - 0.5, points[:, 0]) * 2.0, points[:, 1]])
    match = lookup.query(labels, uv)
    found = np.einsum("nk,nkd->nd", match.barycentrics.astype(np.float64), verts[body_faces[match.triangles]])
    assert np.all(match.distance == 0.0)
    assert np.abs(found[:, :2] - points).max() < 1e-5


def test_smpl_densepose_lookup_errors(tmp_path):
    verts, faces = _grid_mesh()
    path = tmp_path / "UV_Processed.mat"
    with pytest.raises(UserError, match="does not exist"):
        SmplDensePoseLookup.from_mat(path, faces)
    _densepose_mat(path, verts, faces)
    with pytest.raises(UserError, match="not faces of the body model"):
        SmplDensePoseLookup.from_mat(path, faces[1:])
    scipy.io.savemat(path, {"All_FaceIndices": np.ones((2, 1))})
    with pytest.raises(UserError, match="lacks All_Faces"):
        SmplDensePoseLookup.from_mat(path, faces)
    path.write_text("garbage")
    with pytest.raises(UserError, match="not a readable .mat"):
        SmplDensePoseLookup.from_mat(path, faces)


def test_match_faces_reorders_corners():
    faces = np.array([[0, 1, 2], [2, 3, 0]])
    triangles, order = match_faces(np.array([[3, 0, 2], [1, 2, 0], [1, 2, 3]]), faces)
    assert triangles.tolist() == [1, 0, -1]
    assert order[:2].tolist() == [[1, 2, 0], [1, 2, 0]]


# --------------------------------------------------------------------------------------------------
# A synthetic capture end to end


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fit_inputs")
    synthesize(out, SynthOptions(frames=FRAMES, seed=2))
    return out


def _person_points(capture: Path, frame: int) -> np.ndarray:
    """Back-projected depth inside the eroded ground-truth person mask: (N, 3), depth camera."""
    reader = SequenceReader(capture / "sequence")
    depth = reader.frame(frame, color=False).depth_m
    mask = ndimage.binary_erosion(
        read_image(capture / "ground_truth" / "masks" / f"{frame:06d}.png") > 0, iterations=2
    )
    return backproject(depth, reader.calibration.depth)[mask & (depth > 0)]


def _true_bodies(capture: Path, body: BodyModel) -> np.ndarray:
    """(F, V, 3) naked bodies posed with the ground-truth parameters, depth camera frame."""
    truth = load_npz(capture / "ground_truth" / "body.npz")
    with torch.no_grad():
        posed = body(
            torch.from_numpy(truth["poses"]),
            torch.from_numpy(truth["shape"]),
            torch.from_numpy(truth["trans"]),
        )
    return posed.vertices.numpy().astype(np.float64)


def test_densepose_correspondences_of_true_points_lie_on_the_true_body(capture, anny):
    calibration = SequenceReader(capture / "sequence").calibration
    bodies, faces = _true_bodies(capture, anny), anny.faces.numpy()
    lookup = BodyUVLookup(anny)
    for frame in range(FRAMES):
        points = _person_points(capture, frame)
        iuv = read_image(capture / "ground_truth" / "iuv" / f"{frame:06d}.png")
        index, triangles, bary = densepose_correspondences(iuv, points, calibration, lookup)
        on_body = np.einsum("mk,mkd->md", bary, bodies[frame][faces[triangles]])
        distance = np.linalg.norm(on_body - points[index], axis=1)
        # Measured: ~91 % of the person points labelled; median 2.7 cm, 90th percentile 4.8 cm
        # (the clothing is 2–6 cm thick; the naked body's silhouette is inside the clothed one).
        assert len(index) > 0.8 * len(points)
        assert np.median(distance) < 0.05 and np.percentile(distance, 90) < 0.08


def test_openpose_detections_of_the_synthetic_capture_match_the_exact_projections(capture):
    truth = capture / "ground_truth"
    exact = load_npz(truth / "keypoints_exact.npz")
    for folder, names, key in ((truth / "keypoints" / "openpose", BODY25, "body25"),
                               (truth / "keypoints" / "coco17.json", COCO17, "coco17")):  # fmt: skip
        keypoints, found = read_keypoints(folder, range(FRAMES))
        assert found == names
        seen = (keypoints[..., 2] > 0.5) & exact[f"{key}_visible"]
        error = np.linalg.norm(keypoints[..., :2] - exact[key], axis=-1)[seen]
        assert seen.sum() > 10 and np.median(error) < 10.0


@pytest.fixture(scope="module")
def preprocessed(capture) -> Path:
    """The capture through the preprocessing stage (every frame)."""
    preprocess(capture / "sequence", capture / "preprocess", stride=1)
    return capture / "preprocess"


def test_load_observations_on_the_synthetic_capture(capture, preprocessed, anny, tmp_path):
    truth = capture / "ground_truth"
    iuv_dir = tmp_path / "iuv"
    write_image(iuv_dir / "000000.png", read_image(truth / "iuv" / "000000.png"))  # frame 1: no DensePose
    calibration = SequenceReader(capture / "sequence").calibration
    obs = load_observations(
        preprocessed, calibration, keypoints=truth / "keypoints" / "openpose", densepose=iuv_dir, body=anny,
        max_points=3000, seed=4,
    )  # fmt: skip
    assert obs.frames.tolist() == [0, 1] and obs.points.shape == (2, 3000, 3) and obs.valid.all()
    assert obs.keypoints.shape == (2, 25, 3) and obs.keypoint_names == BODY25
    assert obs.dp_valid[0].sum() > 2000 and not obs.dp_valid[1].any()
    assert obs.dp_points.dtype == torch.long and obs.dp_barycentrics.shape[-1] == 3
    bodies, faces = _true_bodies(capture, anny), anny.faces.numpy()
    rows = obs.dp_valid[0].numpy()
    tri, bary = obs.dp_triangles[0, rows].numpy(), obs.dp_barycentrics[0, rows].numpy()
    on_body = np.einsum("mk,mkd->md", bary, bodies[0][faces[tri]])
    observed = obs.points[0, obs.dp_points[0, rows]].numpy()
    assert np.median(np.linalg.norm(on_body - observed, axis=1)) < 0.05
    again = load_observations(preprocessed, calibration, frames=[1], max_points=3000, seed=4)
    assert torch.equal(again.points[0], obs.points[1])  # per-frame subsampling
    assert again.keypoints is None and again.dp_valid.shape == (1, 0)


def test_load_observations_errors(capture, preprocessed, anny, tmp_path):
    calibration = SequenceReader(capture / "sequence").calibration
    with pytest.raises(UserError, match="run `rgbd2avatar preprocess`"):
        load_observations(tmp_path / "preprocess", calibration)
    with pytest.raises(UserError, match="no frame 5"):
        load_observations(preprocessed, calibration, frames=[0, 5])
    with pytest.raises(UserError, match="not a folder"):
        load_observations(preprocessed, calibration, densepose=tmp_path / "iuv", body=anny)
    with pytest.raises(UserError, match="does not exist"):
        load_observations(preprocessed, calibration, keypoints=tmp_path / "openpose")
    write_image(tmp_path / "iuv" / "000000.png", np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(UserError, match="000000.png is uint8"):
        load_observations(preprocessed, calibration, densepose=tmp_path / "iuv", body=anny)
