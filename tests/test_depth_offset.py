"""The clothing's depth offset: recovered from the views of a turning subject, zero without one."""

from __future__ import annotations

import math

import pytest
import torch

from fitting.depth_offset import (
    CLOTHED_REGIONS,
    PARTNERS,
    DepthOffset,
    estimate_depth_offsets,
    view_pairs,
    viewing_rays,
)
from rgbd2avatar.body import lbs, load_body_model
from rgbd2avatar.body.skeleton import JOINT_INDEX, NUM_JOINTS

SHAPE = torch.tensor([0.4, 0.5, 0.5, 0.5, 0.5, 0.5])


@pytest.fixture(scope="module")
def body():
    return load_body_model("anny")


def turning_subject(body, frames: int, turn: float = 2 * math.pi):
    """A standing body 2.5 m in front of the depth camera (y down) turning by ``turn`` radians
    about its vertical axis over ``frames`` frames: poses (F, 72) and translations (F, 3)."""
    pose = torch.zeros(frames, NUM_JOINTS, 3)
    pose[:, JOINT_INDEX["left_shoulder"], 2] = -1.1
    pose[:, JOINT_INDEX["right_shoulder"], 2] = 1.1
    pose[:, 0, 1] = turn * torch.arange(frames) / frames
    flip = lbs.axis_angle_to_matrix(torch.tensor([math.pi, 0.0, 0.0]))
    return body.move_params(
        pose.reshape(frames, -1), torch.zeros(frames, 3), flip, torch.tensor([0.0, 0.2, 2.5]), SHAPE
    )


def seen_surface(body, poses, trans, clothing: float):
    """What the camera sees: the front-facing vertices moved ``clothing`` metres out along their
    normals (a loose layer of even thickness), with those normals; (F, V, 3) twice and (F, V) valid."""
    with torch.no_grad():
        vertices = body(poses, SHAPE, trans).vertices
    corners = vertices[:, body.faces]
    face_normals = torch.cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0], -1)
    spread = face_normals[:, :, None].expand(-1, -1, 3, -1).reshape(len(vertices), -1, 3)
    normals = torch.nn.functional.normalize(
        torch.zeros_like(vertices).index_add_(1, body.faces.reshape(-1), spread), dim=-1
    )
    front = (normals * vertices).sum(-1) < 0
    return vertices + clothing * normals, normals, front


def estimate(body, poses, trans, seen) -> dict[str, DepthOffset]:
    found = estimate_depth_offsets(body, poses, SHAPE, trans, *seen)
    assert found.keys() == CLOTHED_REGIONS.keys()
    return found


def test_exact_fits_of_a_turning_subject_need_no_correction(body):
    poses, trans = turning_subject(body, 24)
    for found in estimate(body, poses, trans, seen_surface(body, poses, trans, clothing=0.02)).values():
        assert found.pairs > 0
        assert abs(found.offset) < 0.002


@pytest.mark.parametrize("pushed", [0.02, 0.04])
def test_bodies_pushed_towards_the_camera_are_moved_back(body, pushed):
    poses, trans = turning_subject(body, 24)
    seen = seen_surface(body, poses, trans, clothing=0.02)
    rays = viewing_rays(body, poses, SHAPE, trans)
    close = trans - pushed * rays
    for found in estimate(body, poses, close, seen).values():
        assert found.offset == pytest.approx(pushed, abs=0.002)
        assert found.scores.argmin() == found.candidates.sub(pushed).abs().argmin()
        corrected = close + found.offset * viewing_rays(body, poses, SHAPE, close)
        assert (corrected - trans).norm(dim=-1).max() < 0.003


def test_each_region_gets_the_offset_of_its_own_points(body):
    """The hips and thighs seen 3 cm farther along the rays than the body, the rest 1 cm."""
    poses, trans = turning_subject(body, 24)
    points, normals, front = seen_surface(body, poses, trans, clothing=0.02)
    rays = viewing_rays(body, poses, SHAPE, trans)
    lower = torch.isin(body.part_labels, torch.tensor([JOINT_INDEX[b] for b in CLOTHED_REGIONS["lower"]]))
    farther = torch.where(lower, 0.03, 0.01)
    found = estimate(body, poses, trans, (points + farther[None, :, None] * rays[:, None], normals, front))
    assert found["lower"].offset == pytest.approx(0.03, abs=0.003)
    assert found["upper"].offset == pytest.approx(0.01, abs=0.003)


def test_a_subject_that_does_not_turn_gives_no_evidence_and_no_correction(body):
    poses, trans = turning_subject(body, 12, turn=math.radians(20))
    close = trans - 0.03 * viewing_rays(body, poses, SHAPE, trans)
    for found in estimate(body, poses, close, seen_surface(body, poses, trans, clothing=0.02)).values():
        assert found.pairs == 0 and found.offset == 0.0 and len(found.scores) == 0


def test_view_pairs_are_the_frames_40_to_80_degrees_apart_in_the_body_frame():
    yaws = torch.tensor([0.0, 30.0, 60.0, 180.0]) * math.pi / 180
    root = torch.zeros(4, 3)
    root[:, 1] = yaws
    rays = torch.tensor([0.0, 0.0, 1.0]).expand(4, 3)
    pairs = {tuple(pair) for pair in view_pairs(root, rays).tolist()}
    assert pairs == {(0, 2), (2, 0)}
    moved = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 1.0]]), dim=-1)
    turned = torch.zeros(1, 3)
    turned[0, 1] = math.pi / 4  # turning with the ray keeps the same view
    assert len(view_pairs(torch.cat([torch.zeros(1, 3), turned]), torch.cat([rays[:1], moved]))) == 0


def test_each_frame_of_a_long_turn_gets_at_most_the_allowed_partners():
    root = torch.zeros(36, 3)
    root[:, 1] = torch.arange(36) * math.pi / 18  # 10° a frame: 10 frames lie 40–80° from each
    pairs = view_pairs(root, torch.tensor([0.0, 0.0, 1.0]).expand(36, 3))
    assert torch.bincount(pairs[:, 0], minlength=36).tolist() == [PARTNERS] * 36
    apart = (pairs[:, 0] - pairs[:, 1]).abs() % 36
    assert set(torch.minimum(apart, 36 - apart).tolist()) <= {4, 5, 6, 7, 8}
