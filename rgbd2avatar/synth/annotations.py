"""Detector-like annotations of synthetic frames: 2D keypoints (COCO-17, OpenPose BODY_25) and
DensePose-style IUV images, rendered from the body model's joints, surface, parts and UVs.

Keypoints are SMPL joints (limb joints) and surface landmarks (nose, eyes, ears, toes, heels)
found on the rest mesh by geometric rules, so they work for any body model on SMPL's tree. They
are not the exact points a detector was trained on (a detector's hip sits lower and wider than
SMPL's hip joint, for example): the fitting stage treats them as noisy observations anyway.

Shapes: F frames, V vertices, K keypoints, H×W image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rgbd2avatar.body import BodyModel
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


@dataclass(frozen=True)
class DetectorNoise:
    """How a 2D keypoint detector errs (defaults: a decent detector on 720p images).

    Attributes:
        sigma_px: Gaussian error of visible keypoints, pixels.
        occluded_sigma_px: error of self-occluded keypoints.
        occluded_miss: chance an occluded keypoint is not reported at all.
        miss: chance a visible keypoint is not reported.
        outlier: chance of a gross error of 20–80 px.
        occlusion_tolerance_m: a keypoint counts as visible when it is at most this far behind
            the rendered surface along its pixel's ray (joints lie inside the body, so this is
            larger than for surface points).
    """

    sigma_px: float = 3.0
    occluded_sigma_px: float = 10.0
    occluded_miss: float = 0.4
    miss: float = 0.02
    outlier: float = 0.01
    occlusion_tolerance_m: float = 0.12


def detect(
    pixels: np.ndarray, visible: np.ndarray, rng: np.random.Generator, noise: DetectorNoise = DetectorNoise()
) -> np.ndarray:
    """Detector-like keypoints from exact projections.

    Args:
        pixels: (K, 2) exact pixel positions (NaN: cannot be seen, always missed);
        visible: (K,) bool, in the image and not occluded.
    Returns:
        (K, 3) x, y, confidence; missed keypoints are (0, 0, 0), as detectors write them.
    """
    count = len(pixels)
    projectable = np.isfinite(pixels).all(1)
    pixels = np.nan_to_num(pixels)
    sigma = np.where(visible, noise.sigma_px, noise.occluded_sigma_px)[:, None]
    noisy = pixels + rng.normal(size=(count, 2)) * sigma
    gross = rng.random(count) < noise.outlier
    angle = rng.uniform(0, 2 * np.pi, count)
    noisy += gross[:, None] * rng.uniform(20, 80, (count, 1)) * np.stack([np.cos(angle), np.sin(angle)], 1)
    confidence = np.where(visible, rng.uniform(0.6, 0.95, count), rng.uniform(0.05, 0.4, count))
    confidence = np.where(gross, rng.uniform(0.2, 0.5, count), confidence)
    missed = (rng.random(count) < np.where(visible, noise.miss, noise.occluded_miss)) | ~projectable
    out = np.concatenate([noisy, confidence[:, None]], 1)
    out[missed] = 0.0
    return out


def openpose_json(keypoints: np.ndarray) -> dict:
    """OpenPose's per-image JSON for one person from (25, 3) BODY_25 keypoints."""
    return {
        "version": 1.3,
        "people": [{"person_id": [-1], "pose_keypoints_2d": keypoints.reshape(-1).tolist()}],
    }


def coco_result(frame: int, keypoints: np.ndarray) -> dict:
    """One COCO keypoint-detection result (the list format COCO evaluation reads) from (17, 3)."""
    return {
        "image_id": frame,
        "category_id": 1,
        "keypoints": keypoints.reshape(-1).tolist(),
        "score": float(keypoints[:, 2].mean()),
    }


def iuv_image(part: np.ndarray, uv: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """DensePose-style IUV image: I = body part 1..24 (0 background), U and V scaled to 0..255.

    Args:
        part: (H, W) 0-based part label of the surface seen; uv: (H, W, 2) in [0, 1];
        hit: (H, W) bool, pixels that see the body.
    Returns:
        (H, W, 3) uint8.
    """
    out = np.zeros((*part.shape, 3), dtype=np.uint8)
    out[..., 0] = np.where(hit, part + 1, 0)
    out[..., 1:] = np.where(hit[..., None], np.round(255 * np.clip(uv, 0, 1)), 0)
    return out
