"""Body keypoints: the COCO-17 and OpenPose BODY_25 sets, defined on any body model on SMPL's tree.

Limb keypoints are SMPL joints; nose, eyes, ears, toes and heels are surface landmarks found on
the rest mesh by geometric rules; OpenPose's neck and mid-hip are joint midpoints. They are not
exactly the points a detector was trained on (a detector's hip sits lower and wider than SMPL's
hip joint, for example), so fitting treats detections as noisy observations of them.

Shapes: F frames, V vertices, K keypoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rgbd2avatar.body.model import BodyModel
from rgbd2avatar.body.skeleton import JOINT_INDEX

LANDMARKS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
)  # fmt: skip

COCO17 = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
"""COCO's 17 person keypoints, in COCO's order."""

BODY25 = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
    "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe",
    "left_heel", "right_big_toe", "right_small_toe", "right_heel",
)  # fmt: skip
"""OpenPose's BODY_25 keypoints, in OpenPose's order."""

MIDPOINTS = {"neck": ("left_shoulder", "right_shoulder"), "mid_hip": ("left_hip", "right_hip")}
"""OpenPose's neck and mid-hip: midpoints of the shoulder and hip joints."""


def _head_landmarks(verts: np.ndarray, labels: np.ndarray) -> dict[str, int]:
    """Nose, eyes and ears on the rest head (y up, facing +z): vertex indices.

    The nose tip is the most forward head vertex near the midline; the eyes are the most forward
    vertices 3.5 cm above it and ±3.2 cm aside; the ears are the outermost head vertices at
    eye height within 3 cm of the head's mid-depth.
    """
    head = np.flatnonzero(labels == JOINT_INDEX["head"])
    hv = verts[head]
    nose = head[np.argmax(np.where(np.abs(hv[:, 0]) < 0.01, hv[:, 2], -np.inf))]
    eye_y = verts[nose, 1] + 0.035
    mid_z = 0.5 * (hv[:, 2].min() + hv[:, 2].max())
    found = {"nose": int(nose)}
    for side, sign in (("left", 1.0), ("right", -1.0)):
        near_eye = np.hypot(hv[:, 0] - sign * 0.032, hv[:, 1] - eye_y) < 0.012
        found[f"{side}_eye"] = int(head[np.argmax(np.where(near_eye, hv[:, 2], -np.inf))])
        near_ear = (np.abs(hv[:, 1] - eye_y) < 0.02) & (np.abs(hv[:, 2] - mid_z) < 0.03)
        found[f"{side}_ear"] = int(head[np.argmax(np.where(near_ear, sign * hv[:, 0], -np.inf))])
    return found


def _foot_landmarks(verts: np.ndarray, labels: np.ndarray) -> dict[str, int]:
    """Big toe, small toe and heel of each rest foot: vertex indices.

    Toes: the most forward sole-level vertices on the inner and outer halves of the toe part;
    heel: the rearmost vertex of the ankle part in its lowest 3 cm.
    """
    found = {}
    for side, sign in (("left", 1.0), ("right", -1.0)):
        toes = np.flatnonzero(labels == JOINT_INDEX[f"{side}_foot"])
        tv = verts[toes]
        centre_x = np.median(tv[:, 0])
        inner = sign * (tv[:, 0] - centre_x) < 0
        for name, half in (("big_toe", inner), ("small_toe", ~inner)):
            found[f"{side}_{name}"] = int(toes[np.argmax(np.where(half, tv[:, 2], -np.inf))])
        ankle = np.flatnonzero(labels == JOINT_INDEX[f"{side}_ankle"])
        av = verts[ankle]
        low = av[:, 1] < av[:, 1].min() + 0.03
        found[f"{side}_heel"] = int(ankle[np.argmax(np.where(low, -av[:, 2], -np.inf))])
    return found


def landmark_vertices(body: BodyModel) -> dict[str, int]:
    """Surface landmarks (:data:`LANDMARKS`) as vertex indices of the body mesh."""
    verts = body.rest()[0][0].detach().cpu().numpy()
    labels = body.part_labels.cpu().numpy()
    return {**_head_landmarks(verts, labels), **_foot_landmarks(verts, labels)}


@dataclass(frozen=True)
class KeypointLayout:
    """How to compute a keypoint set from posed joints and vertices.

    Attributes:
        names: K keypoint names.
        joints: (K,) SMPL joint index or −1; vertices: (K,) landmark vertex index or −1;
        pairs: (K, 2) joint indices averaged for midpoints, or −1.
    """

    names: tuple[str, ...]
    joints: np.ndarray
    vertices: np.ndarray
    pairs: np.ndarray

    def points(self, joints: np.ndarray, vertices: np.ndarray) -> np.ndarray:
        """3D keypoints (F, K, 3) from posed joints (F, 24, 3) and vertices (F, V, 3)."""
        out = np.zeros((joints.shape[0], len(self.names), 3), dtype=np.float64)
        is_joint, is_vertex, is_pair = self.joints >= 0, self.vertices >= 0, self.pairs[:, 0] >= 0
        out[:, is_joint] = joints[:, self.joints[is_joint]]
        out[:, is_vertex] = vertices[:, self.vertices[is_vertex]]
        out[:, is_pair] = joints[:, self.pairs[is_pair]].mean(axis=2)
        return out


def keypoint_layout(names: tuple[str, ...], landmarks: dict[str, int]) -> KeypointLayout:
    """Resolve each keypoint name to an SMPL joint, a landmark vertex or a joint midpoint."""
    joints, vertices = np.full(len(names), -1), np.full(len(names), -1)
    pairs = np.full((len(names), 2), -1)
    for k, name in enumerate(names):
        if name in landmarks:
            vertices[k] = landmarks[name]
        elif name in MIDPOINTS:
            pairs[k] = [JOINT_INDEX[j] for j in MIDPOINTS[name]]
        else:
            joints[k] = JOINT_INDEX[name]
    return KeypointLayout(names, joints, vertices, pairs)
