"""Rigged, animated glTF 2.0 binaries (``.glb``) of a skinned mesh on SMPL's 24-joint skeleton,
written with numpy, json and struct only.

What the file holds:

- one mesh (POSITION, NORMAL, JOINTS_0, WEIGHTS_0, triangle indices) in its bind pose;
- a skin: 24 joint nodes (SMPL's tree), their inverse bind matrices, the mesh node skinned by it;
- an animation: a rotation channel per joint (unit quaternions, glTF's x, y, z, w order) and a
  translation channel on the root, LINEAR samplers, frame f at time f / fps.

The maths. A joint node's local transform is its rest offset from its parent (the root's:
its rest position plus the frame's translation) and its local rotation, so a node's global
transform is the body model's joint frame G_j (:func:`rgbd2avatar.body.lbs.forward_kinematics`,
rest frames aligned with the world). SMPL's local rotations are relative to those world-aligned
rest frames, so a motion's axis-angles become the nodes' rotations unchanged. glTF skins a vertex
by Σ_j w_j G_j(pose) · IBM_j; with IBM_j = G_j(bind)⁻¹, the joint frames of the pose the mesh was
made in, this is Σ_j w_j G_j(pose) G_j(bind)⁻¹ — exactly the avatar's canonical→posed bone
transform B_j = A_j(pose) A_j(canonical)⁻¹ when the bind pose is the canonical pose (legs ±30°
at the hips; A_j = G_j · T(−j_rest), the T(±j_rest) cancel). The joint nodes' default
rotations are the bind pose's, so a viewer without the animation shows the mesh as it was made.

glTF allows 4 influences per vertex here (one JOINTS_0/WEIGHTS_0 pair): each vertex keeps its
4 largest weights, renormalised to sum to 1. Joints are unsigned bytes (24 < 256), weights
float32. Every buffer view starts on a 4-byte boundary.

Shapes: V vertices, T triangles, J joints (24), F frames.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import rgbd2avatar
from capture.files import write_bytes
from rgbd2avatar.body import lbs
from rgbd2avatar.geometry import vertex_normals

GLB_MAGIC = b"glTF"
GLB_VERSION = 2
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942
FLOAT, UNSIGNED_BYTE, UNSIGNED_SHORT, UNSIGNED_INT = 5126, 5121, 5123, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
LINEAR = 9729
"""glTF sampler filter."""
TRIANGLES = 4
INFLUENCES = 4
"""Joint influences per vertex in JOINTS_0 / WEIGHTS_0."""
ALIGNMENT = 4

_COMPONENT_TYPES = {
    np.dtype(np.float32): FLOAT,
    np.dtype(np.uint8): UNSIGNED_BYTE,
    np.dtype(np.uint16): UNSIGNED_SHORT,
    np.dtype(np.uint32): UNSIGNED_INT,
}
_ACCESSOR_TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4", 16: "MAT4"}


def top_influences(weights: np.ndarray, count: int = INFLUENCES) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` largest weights of each vertex, renormalised to sum to 1.

    Args:
        weights: (V, J) non-negative skinning weights.
    Returns:
        joints (V, count) uint8 (uint16 when J > 256) joint indices, largest first, and weights
        (V, count) float32 summing to 1.
    """
    weights = np.asarray(weights, dtype=np.float64)
    order = np.argsort(-weights, axis=1, kind="stable")[:, :count]
    kept = np.take_along_axis(weights, order, axis=1)
    total = kept.sum(1, keepdims=True)
    kept = np.where(total > 0, kept / np.where(total > 0, total, 1.0), np.eye(1, count))
    dtype = np.uint8 if weights.shape[1] <= 256 else np.uint16
    return order.astype(dtype), kept.astype(np.float32)


def joint_frames(joints: np.ndarray, parents: Sequence[int], poses: np.ndarray) -> np.ndarray:
    """World transforms G_j of every joint frame (the body model's forward kinematics).

    Args:
        joints: (J, 3) rest (T-pose) joint positions; parents: J parent indices, −1 for the root;
        poses: (F, 3J) axis-angle local rotations in SMPL layout.
    Returns:
        (F, J, 4, 4) float64.
    """
    count = len(parents)
    rots = lbs.axis_angle_to_matrix(torch.from_numpy(np.asarray(poses, dtype=np.float64)).view(-1, count, 3))
    rest = torch.from_numpy(np.asarray(joints, dtype=np.float64)).expand(rots.shape[0], count, 3)
    return lbs.forward_kinematics(rots, rest, tuple(parents)).numpy()


def local_quaternions(poses: np.ndarray, joint_count: int) -> np.ndarray:
    """Local joint rotations as glTF quaternions, sign-continuous over the frames.

    Args:
        poses: (F, 3J) axis-angle poses.
    Returns:
        (F, J, 4) float32 unit quaternions (x, y, z, w); each frame's quaternion is on the same
        side as the previous frame's (q and −q are the same rotation), so interpolation between
        keyframes never takes the long way round.
    """
    aa = torch.from_numpy(np.asarray(poses, dtype=np.float64)).view(-1, joint_count, 3)
    wxyz = lbs.matrix_to_quaternion(lbs.axis_angle_to_matrix(aa)).numpy()
    for frame in range(1, len(wxyz)):
        flip = (wxyz[frame] * wxyz[frame - 1]).sum(-1) < 0
        wxyz[frame, flip] *= -1.0
    return np.roll(wxyz, -1, axis=-1).astype(np.float32)


class _Buffer:
    """The binary chunk under construction and the glTF views and accessors into it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def accessor(
        self, array: np.ndarray, target: int | None = None, bounds: bool = False, normalized: bool = False
    ) -> int:
        """Append (N, C) or (N,) data as a new 4-byte-aligned buffer view and accessor; its index.

        Args:
            target: the view's ARRAY_BUFFER / ELEMENT_ARRAY_BUFFER, or None (animation, skin data).
            bounds: store the accessor's per-component min and max (required for positions and
                animation times).
        """
        array = np.ascontiguousarray(array)
        columns = 1 if array.ndim == 1 else int(np.prod(array.shape[1:]))
        self.data.extend(b"\0" * (-len(self.data) % ALIGNMENT))
        view = {"buffer": 0, "byteOffset": len(self.data), "byteLength": array.nbytes}
        if target is not None:
            view["target"] = target
        self.data.extend(array.tobytes())
        self.views.append(view)
        accessor = {
            "bufferView": len(self.views) - 1,
            "componentType": _COMPONENT_TYPES[array.dtype],
            "count": int(array.shape[0]),
            "type": _ACCESSOR_TYPES[columns],
        }
        if normalized:
            accessor["normalized"] = True
        if bounds:
            flat = array.reshape(len(array), columns)
            accessor["min"] = flat.min(0).tolist()
            accessor["max"] = flat.max(0).tolist()
        self.accessors.append(accessor)
        return len(self.accessors) - 1

    def blob(self, data: bytes) -> int:
        """Append raw bytes (e.g. an image) as a new 4-byte-aligned buffer view; its index."""
        self.data.extend(b"\0" * (-len(self.data) % ALIGNMENT))
        self.views.append({"buffer": 0, "byteOffset": len(self.data), "byteLength": len(data)})
        self.data.extend(data)
        return len(self.views) - 1


@dataclass(frozen=True)
class MeshTexture:
    """A colour texture of the rigged mesh: uvs (V, 2) in [0, 1] with u right and v up (OBJ's
    convention; glTF's v runs down, the writer flips it) and the image as PNG bytes."""

    uvs: np.ndarray
    png: bytes


def rigged_gltf(
    vertices: np.ndarray,
    faces: np.ndarray,
    weights: np.ndarray,
    joints: np.ndarray,
    parents: Sequence[int],
    joint_names: Sequence[str],
    poses: np.ndarray,
    trans: np.ndarray,
    fps: float,
    bind_pose: np.ndarray | None = None,
    texture: MeshTexture | None = None,
) -> tuple[dict, bytes]:
    """The glTF document and binary chunk of a rigged, animated mesh (see the module docstring).

    Args:
        vertices: (V, 3) the mesh in its bind pose; faces: (T, 3); weights: (V, J).
        joints: (J, 3) rest (T-pose) joint positions of the skeleton the poses refer to.
        parents: J parent indices (−1 for the root, parents before children); joint_names: J names.
        poses: (F, 3J) axis-angle local rotations (SMPL layout); trans: (F, 3) root translations.
        fps: frames per second of the animation.
        bind_pose: (3J,) the pose the mesh is in (e.g. the avatar's canonical pose); None = rest.
        texture: colours the mesh (base-colour texture of an unlit-looking, fully rough material).
    Returns:
        (the JSON document as a dict, the binary chunk without padding).
    """
    joints = np.asarray(joints, dtype=np.float64)
    parents = [int(p) for p in parents]
    count = len(parents)
    bind_pose = np.zeros(3 * count) if bind_pose is None else np.asarray(bind_pose, dtype=np.float64)
    poses, trans = np.asarray(poses, dtype=np.float64), np.asarray(trans, dtype=np.float64)
    buffer = _Buffer()
    mesh = _mesh(buffer, np.asarray(vertices, dtype=np.float32), np.asarray(faces), weights)
    nodes = _joint_nodes(joints, parents, joint_names, bind_pose)
    nodes.append({"name": "avatar", "mesh": 0, "skin": 0})
    bind = joint_frames(joints, parents, bind_pose[None])[0]
    inverse_bind = np.linalg.inv(bind).transpose(0, 2, 1).astype(np.float32)  # column-major
    skin = {"joints": list(range(count)), "skeleton": 0, "inverseBindMatrices": buffer.accessor(inverse_bind)}
    animation = _animation(buffer, joints[0] + trans, local_quaternions(poses, count), fps)
    document = {
        "asset": {"version": "2.0", "generator": f"rgbd2avatar {rgbd2avatar.__version__}"},
        "scene": 0,
        "scenes": [{"nodes": [0, count]}],
        "nodes": nodes,
        "meshes": [mesh],
        "skins": [skin],
        "animations": [animation],
        **(_material(buffer, mesh, texture) if texture is not None else {}),
        "accessors": buffer.accessors,
        "bufferViews": buffer.views,
        "buffers": [{"byteLength": len(buffer.data)}],
    }
    return document, bytes(buffer.data)


def _mesh(buffer: _Buffer, vertices: np.ndarray, faces: np.ndarray, weights: np.ndarray) -> dict:
    """The skinned mesh's data in ``buffer``; its glTF mesh entry."""
    influence_joints, influence_weights = top_influences(weights)
    attributes = {
        "POSITION": buffer.accessor(vertices, ARRAY_BUFFER, bounds=True),
        "NORMAL": buffer.accessor(vertex_normals(vertices, faces), ARRAY_BUFFER),
        "JOINTS_0": buffer.accessor(influence_joints, ARRAY_BUFFER),
        "WEIGHTS_0": buffer.accessor(influence_weights, ARRAY_BUFFER),
    }
    indices = buffer.accessor(faces.astype(np.uint32).reshape(-1), ELEMENT_ARRAY_BUFFER)
    return {
        "name": "avatar",
        "primitives": [{"attributes": attributes, "indices": indices, "mode": TRIANGLES}],
    }


def _material(buffer: _Buffer, mesh: dict, texture: MeshTexture) -> dict:
    """Adds TEXCOORD_0 and a textured material to ``mesh``; the document's image, texture, sampler
    and material entries."""
    uvs = np.asarray(texture.uvs, dtype=np.float32) * np.array([1.0, -1.0], np.float32) + np.array(
        [0.0, 1.0], np.float32
    )
    primitive = mesh["primitives"][0]
    primitive["attributes"]["TEXCOORD_0"] = buffer.accessor(uvs, ARRAY_BUFFER)
    primitive["material"] = 0
    image_view = buffer.blob(texture.png)
    return {
        "images": [{"bufferView": image_view, "mimeType": "image/png"}],
        "samplers": [{"magFilter": LINEAR, "minFilter": LINEAR}],
        "textures": [{"sampler": 0, "source": 0}],
        "materials": [
            {
                "name": "avatar",
                "pbrMetallicRoughness": {
                    "baseColorTexture": {"index": 0},
                    "metallicFactor": 0.0,
                    "roughnessFactor": 1.0,
                },
            }
        ],
    }


def _joint_nodes(
    joints: np.ndarray, parents: list[int], names: Sequence[str], bind_pose: np.ndarray
) -> list[dict]:
    """One node per joint: rest offset from its parent, the bind pose's local rotation, children."""
    rotations = local_quaternions(bind_pose[None], len(parents))[0]
    nodes = []
    for joint, parent in enumerate(parents):
        offset = joints[joint] - (joints[parent] if parent >= 0 else 0.0)
        node = {"name": names[joint], "translation": offset.tolist(), "rotation": rotations[joint].tolist()}
        children = [child for child, p in enumerate(parents) if p == joint]
        if children:
            node["children"] = children
        nodes.append(node)
    return nodes


def _animation(buffer: _Buffer, root_positions: np.ndarray, rotations: np.ndarray, fps: float) -> dict:
    """Samplers and channels: (F, 3) root positions, (F, J, 4) local rotations at t = f / fps."""
    times = buffer.accessor((np.arange(len(rotations)) / fps).astype(np.float32), bounds=True)
    samplers = [{"input": times, "output": buffer.accessor(root_positions.astype(np.float32))}]
    channels = [{"sampler": 0, "target": {"node": 0, "path": "translation"}}]
    for joint in range(rotations.shape[1]):
        samplers.append(
            {"input": times, "output": buffer.accessor(np.ascontiguousarray(rotations[:, joint]))}
        )
        channels.append({"sampler": len(samplers) - 1, "target": {"node": joint, "path": "rotation"}})
    for sampler in samplers:
        sampler["interpolation"] = "LINEAR"
    return {"name": "motion", "samplers": samplers, "channels": channels}


def pack_glb(document: dict, binary: bytes) -> bytes:
    """A GLB file: 12-byte header, JSON chunk padded with spaces, BIN chunk padded with zeros."""
    text = json.dumps(document, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % ALIGNMENT)
    binary += b"\0" * (-len(binary) % ALIGNMENT)
    length = 12 + 8 + len(text) + 8 + len(binary)
    header = GLB_MAGIC + struct.pack("<II", GLB_VERSION, length)
    return (
        header
        + struct.pack("<II", len(text), CHUNK_JSON)
        + text
        + struct.pack("<II", len(binary), CHUNK_BIN)
        + binary
    )


def write_rigged_glb(
    path: Path,
    vertices: np.ndarray,
    faces: np.ndarray,
    weights: np.ndarray,
    joints: np.ndarray,
    parents: Sequence[int],
    joint_names: Sequence[str],
    poses: np.ndarray,
    trans: np.ndarray,
    fps: float,
    bind_pose: np.ndarray | None = None,
    texture: MeshTexture | None = None,
) -> None:
    """Write a rigged, animated mesh as a ``.glb`` file atomically (arguments: :func:`rigged_gltf`)."""
    document, binary = rigged_gltf(
        vertices, faces, weights, joints, parents, joint_names, poses, trans, fps, bind_pose, texture
    )
    write_bytes(path, pack_glb(document, binary))
