"""Detector-like annotations of synthetic frames: noisy 2D keypoints as detectors write them
(COCO-17 results, OpenPose BODY_25 JSON; the keypoints themselves are :mod:`rgbd2avatar.body.keypoints`)
and DensePose-style IUV images.

Shapes: K keypoints, H×W image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
