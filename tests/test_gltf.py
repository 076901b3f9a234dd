"""Rigged glTF: the file's structure follows glTF 2.0's binary rules, and a small independent
reader that skins the mesh from the file's nodes, skin and animation reproduces the avatar's
canonical→posed skinning (and the body model's) within 1 mm."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from rgbd2avatar.body import lbs, load_body_model
from rgbd2avatar.body.model import canonical_pose
from rgbd2avatar.body.skeleton import JOINT_INDEX, JOINT_NAMES, NUM_JOINTS
from rgbd2avatar.gltf import MeshTexture, top_influences, write_rigged_glb

COMPONENTS = {5126: np.float32, 5121: np.uint8, 5123: np.uint16, 5125: np.uint32}
WIDTHS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


# --- a small glTF reader, independent of the writer --------------------------------------------


def read_glb(path) -> tuple[dict, bytes, int]:
    """(JSON document, BIN chunk, total length in the header) of a .glb file, checking the chunks."""
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    json_length, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A and json_length % 4 == 0
    document = json.loads(data[20 : 20 + json_length])
    bin_length, bin_type = struct.unpack_from("<II", data, 20 + json_length)
    assert bin_type == 0x004E4942 and bin_length % 4 == 0
    binary = data[28 + json_length : 28 + json_length + bin_length]
    assert 28 + json_length + bin_length == len(data)
    return document, binary, length


def accessor(document: dict, binary: bytes, index: int) -> np.ndarray:
    """An accessor's data as (count, width) or (count,) array (tightly packed views only)."""
    acc = document["accessors"][index]
    view = document["bufferViews"][acc["bufferView"]]
    width = WIDTHS[acc["type"]]
    dtype = np.dtype(COMPONENTS[acc["componentType"]])
    start = view["byteOffset"] + acc.get("byteOffset", 0)
    values = np.frombuffer(binary, dtype, acc["count"] * width, start)
    return values.reshape(acc["count"], width) if width > 1 else values


def quaternion_matrix(q: np.ndarray) -> np.ndarray:
    """(4,) glTF quaternion (x, y, z, w) → (3, 3)."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def node_locals(document: dict, binary: bytes, time: float | None) -> list[np.ndarray]:
    """Each node's local 4×4 matrix: its TRS, animated at ``time`` (a keyframe time) when given."""
    trs = [
        {"translation": node.get("translation", [0, 0, 0]), "rotation": node.get("rotation", [0, 0, 0, 1])}
        for node in document["nodes"]
    ]
    if time is not None:
        animation = document["animations"][0]
        for channel in animation["channels"]:
            sampler = animation["samplers"][channel["sampler"]]
            times = accessor(document, binary, sampler["input"])
            key = int(np.flatnonzero(np.isclose(times, time, atol=1e-6))[0])
            trs[channel["target"]["node"]][channel["target"]["path"]] = accessor(
                document, binary, sampler["output"]
            )[key]
    matrices = []
    for entry in trs:
        matrix = np.eye(4)
        matrix[:3, :3] = quaternion_matrix(entry["rotation"])
        matrix[:3, 3] = entry["translation"]
        matrices.append(matrix)
    return matrices


def skinned_vertices(document: dict, binary: bytes, time: float | None) -> np.ndarray:
    """(V, 3) vertices of the skinned mesh as a glTF viewer computes them at ``time``."""
    local = node_locals(document, binary, time)
    world: dict[int, np.ndarray] = {}

    def visit(node: int, parent: np.ndarray) -> None:
        world[node] = parent @ local[node]
        for child in document["nodes"][node].get("children", []):
            visit(child, world[node])

    for root in document["scenes"][0]["nodes"]:
        visit(root, np.eye(4))
    skin = document["skins"][0]
    inverse_bind = (
        accessor(document, binary, skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
    )
    joint_matrices = np.stack([world[node] for node in skin["joints"]]) @ inverse_bind
    primitive = document["meshes"][0]["primitives"][0]
    positions = accessor(document, binary, primitive["attributes"]["POSITION"]).astype(np.float64)
    joints = accessor(document, binary, primitive["attributes"]["JOINTS_0"]).astype(np.int64)
    weights = accessor(document, binary, primitive["attributes"]["WEIGHTS_0"]).astype(np.float64)
    blended = np.einsum("vk,vkij->vij", weights, joint_matrices[joints])
    return np.einsum("vij,vj->vi", blended[:, :3, :3], positions) + blended[:, :3, 3]


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def body():
    return load_body_model("anny")


@pytest.fixture(scope="module")
def motion() -> tuple[np.ndarray, np.ndarray]:
    """Three poses (the rest pose, a bend of the elbows and knees, a turned crouch) and translations."""
    poses = np.zeros((3, NUM_JOINTS, 3))
    poses[1, JOINT_INDEX["left_elbow"]] = (0.0, -1.2, 0.0)
    poses[1, JOINT_INDEX["right_knee"]] = (0.9, 0.0, 0.0)
    poses[1, JOINT_INDEX["left_shoulder"]] = (0.2, 0.3, -0.8)
    poses[2, 0] = (0.3, 2.5, 0.1)
    poses[2, JOINT_INDEX["left_hip"]] = (-1.0, 0.2, 0.4)
    poses[2, JOINT_INDEX["spine2"]] = (0.4, -0.3, 0.2)
    poses[2, JOINT_INDEX["neck"]] = (-0.3, 0.6, 0.0)
    trans = np.array([[0.0, 0.0, 0.0], [0.1, -0.2, 0.3], [-0.5, 0.1, 2.0]])
    return poses.reshape(3, -1).astype(np.float32), trans.astype(np.float32)


@pytest.fixture(scope="module")
def rigged(body, motion, tmp_path_factory):
    """The canonical body, its own weights, bound in the canonical pose, written as a GLB."""
    shape = body.default_shape
    with torch.no_grad():
        vertices = body.canonical(shape).vertices[0].numpy()
        joints = body.rest(shape)[1][0].numpy()
    path = tmp_path_factory.mktemp("gltf") / "avatar.glb"
    poses, trans = motion
    write_rigged_glb(
        path, vertices, body.faces.numpy(), body.weights.numpy(), joints, body.parents, JOINT_NAMES,
        poses, trans, fps=10.0, bind_pose=canonical_pose(torch.float64).numpy(),
    )  # fmt: skip
    return path, vertices


# --- tests ---------------------------------------------------------------------------------------


def test_glb_structure_follows_the_binary_rules(rigged, body, motion):
    path, vertices = rigged
    document, binary, _ = read_glb(path)
    assert document["asset"]["version"] == "2.0"
    assert document["buffers"][0]["byteLength"] <= len(binary) < document["buffers"][0]["byteLength"] + 4
    for view in document["bufferViews"]:
        assert view["byteOffset"] % 4 == 0
        assert view["byteOffset"] + view["byteLength"] <= document["buffers"][0]["byteLength"]
    for acc in document["accessors"]:
        view = document["bufferViews"][acc["bufferView"]]
        size = np.dtype(COMPONENTS[acc["componentType"]]).itemsize * WIDTHS[acc["type"]]
        assert acc["count"] * size == view["byteLength"]
    primitive = document["meshes"][0]["primitives"][0]
    attributes = {name: document["accessors"][i] for name, i in primitive["attributes"].items()}
    assert {a["count"] for a in attributes.values()} == {len(vertices)}
    assert attributes["JOINTS_0"]["componentType"] == 5121 and attributes["JOINTS_0"]["type"] == "VEC4"
    assert attributes["WEIGHTS_0"]["componentType"] == 5126
    np.testing.assert_allclose(attributes["POSITION"]["min"], vertices.min(0), atol=1e-6)
    assert document["accessors"][primitive["indices"]]["count"] == body.faces.numel()
    weights = accessor(document, binary, primitive["attributes"]["WEIGHTS_0"])
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-6)
    normals = accessor(document, binary, primitive["attributes"]["NORMAL"])
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    skin = document["skins"][0]
    assert len(skin["joints"]) == NUM_JOINTS
    assert document["accessors"][skin["inverseBindMatrices"]]["count"] == NUM_JOINTS
    names = [document["nodes"][j]["name"] for j in skin["joints"]]
    assert names == list(JOINT_NAMES)
    children = {c for node in document["nodes"] for c in node.get("children", [])}
    assert children == set(range(1, NUM_JOINTS))
    animation = document["animations"][0]
    assert len(animation["channels"]) == NUM_JOINTS + 1
    times = accessor(document, binary, animation["samplers"][0]["input"])
    np.testing.assert_allclose(times, np.arange(len(motion[0])) / 10.0, atol=1e-7)
    assert all(s["interpolation"] == "LINEAR" for s in animation["samplers"])


def test_trimesh_loads_the_mesh(rigged):
    path, vertices = rigged
    scene = trimesh.load(path, force="scene")
    loaded = next(iter(scene.geometry.values()))
    assert len(loaded.vertices) == len(vertices)


def test_without_animation_the_skin_shows_the_mesh_as_bound(rigged):
    path, vertices = rigged
    document, binary, _ = read_glb(path)
    np.testing.assert_allclose(skinned_vertices(document, binary, None), vertices, atol=1e-5)


def test_animated_skin_matches_canonical_to_posed_skinning(rigged, body, motion):
    """Each keyframe equals Σ_j w_j B_j x_c with the same top-4 weights and the body model's
    canonical→posed transforms B_j (the avatar's deformer), within 1 mm."""
    path, vertices = rigged
    document, binary, _ = read_glb(path)
    poses, trans = motion
    joints, weights = top_influences(body.weights.numpy())
    dense = np.zeros((len(vertices), NUM_JOINTS), dtype=np.float32)
    np.put_along_axis(dense, joints.astype(np.int64), weights, axis=1)
    with torch.no_grad():
        tfs = body.canonical_to_posed(torch.from_numpy(poses), body.default_shape, torch.from_numpy(trans))
        expected = lbs.skin_points(torch.from_numpy(vertices), torch.from_numpy(dense), tfs).numpy()
    for frame in range(len(poses)):
        glb = skinned_vertices(document, binary, frame / 10.0)
        assert np.abs(glb - expected[frame]).max() < 1e-3


def test_animated_skin_follows_the_body_model(rigged, body, motion):
    """Against the body model's own LBS of its rest mesh: equal up to the 4-influence cut and the
    hips' canonical blending (see BodyModel.canonical_to_posed), a few millimetres at most."""
    path, _ = rigged
    document, binary, _ = read_glb(path)
    poses, trans = motion
    with torch.no_grad():
        posed = body(torch.from_numpy(poses), body.default_shape, torch.from_numpy(trans)).vertices.numpy()
    for frame in range(len(poses)):
        error = np.linalg.norm(skinned_vertices(document, binary, frame / 10.0) - posed[frame], axis=1)
        assert np.median(error) < 1e-3
        assert np.percentile(error, 99) < 0.02


def test_top_influences_keep_the_largest_weights_renormalised():
    weights = np.array([[0.1, 0.5, 0.05, 0.2, 0.15], [0.0, 0.0, 1.0, 0.0, 0.0], [0.0] * 5])
    joints, kept = top_influences(weights)
    assert joints.dtype == np.uint8
    np.testing.assert_array_equal(joints[0], [1, 3, 4, 0])
    np.testing.assert_allclose(kept[0], np.array([0.5, 0.2, 0.15, 0.1]) / 0.95, rtol=1e-6)
    np.testing.assert_allclose(kept.sum(1), 1.0, atol=1e-6)
    assert joints[1, 0] == 2 and kept[1, 0] == 1.0


def test_a_textured_rig_carries_its_image_and_uvs(body, motion, tmp_path):
    shape = body.default_shape
    with torch.no_grad():
        vertices = body.canonical(shape).vertices[0].numpy()
        joints = body.rest(shape)[1][0].numpy()
    uvs = np.random.default_rng(0).random((len(vertices), 2)).astype(np.float32)
    image = np.zeros((8, 16, 3), np.uint8)
    image[:4] = (255, 0, 0)  # top half red, bottom half blue
    image[4:] = (0, 0, 255)
    png = io.BytesIO()
    Image.fromarray(image).save(png, format="PNG")
    path = tmp_path / "textured.glb"
    poses, trans = motion
    write_rigged_glb(
        path, vertices, body.faces.numpy(), body.weights.numpy(), joints, body.parents, JOINT_NAMES,
        poses, trans, fps=10.0, bind_pose=canonical_pose(torch.float64).numpy(),
        texture=MeshTexture(uvs, png.getvalue()),
    )  # fmt: skip
    document, binary, _ = read_glb(path)
    primitive = document["meshes"][0]["primitives"][0]
    texcoords = accessor(document, binary, primitive["attributes"]["TEXCOORD_0"])
    np.testing.assert_allclose(texcoords, np.stack([uvs[:, 0], 1.0 - uvs[:, 1]], 1), atol=1e-6)
    material = document["materials"][primitive["material"]]
    texture = document["textures"][material["pbrMetallicRoughness"]["baseColorTexture"]["index"]]
    view = document["bufferViews"][document["images"][texture["source"]]["bufferView"]]
    assert binary[view["byteOffset"] : view["byteOffset"] + view["byteLength"]] == png.getvalue()
    loaded = next(iter(trimesh.load(path, force="scene").geometry.values()))
    decoded = np.asarray(loaded.visual.material.baseColorTexture.convert("RGB"))
    np.testing.assert_array_equal(decoded, image)
    # trimesh converts glTF's v (down) back to the OBJ convention we gave
    assert np.allclose(loaded.visual.uv, uvs, atol=1e-6)
