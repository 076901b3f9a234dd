"""Rotation and skinning maths: closed forms, round trips and finite-difference gradients."""

import math

import pytest
import torch

from rgbd2avatar.body import lbs
from rgbd2avatar.body.model import BodyModel
from rgbd2avatar.body.skeleton import JOINT_INDEX, PARENTS, mirror_pose


def random_axis_angle(n: int, max_angle: float = math.pi, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen, dtype=torch.float64), dim=1)
    return axis * torch.rand(n, 1, generator=gen, dtype=torch.float64) * max_angle


def test_axis_angle_matches_closed_form_about_z():
    angle = torch.tensor(0.7, dtype=torch.float64)
    rot = lbs.axis_angle_to_matrix(torch.tensor([0.0, 0.0, 0.7], dtype=torch.float64))
    c, s = torch.cos(angle), torch.sin(angle)
    expected = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(rot, expected, atol=1e-12)


def test_rotations_are_orthonormal():
    rot = lbs.axis_angle_to_matrix(random_axis_angle(1000))
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(rot @ rot.transpose(-1, -2), eye.expand_as(rot), atol=1e-12)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(1000, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-4, 1.0, math.pi - 1e-4, math.pi - 1e-9, math.pi])
def test_axis_angle_round_trip_including_near_zero_and_pi(angle):
    aa = torch.cat(
        [
            random_axis_angle(200),
            torch.tensor([[0.0, angle, 0.0], [0.6 * angle, 0.0, 0.8 * angle]], dtype=torch.float64),
        ]
    )
    rot = lbs.axis_angle_to_matrix(aa)
    back = lbs.matrix_to_axis_angle(rot)
    assert torch.allclose(lbs.axis_angle_to_matrix(back), rot, atol=1e-10)
    assert (back.norm(dim=1) <= math.pi + 1e-9).all()


def test_axis_angle_gradient_matches_finite_differences():
    aa = torch.cat(
        [random_axis_angle(4), torch.tensor([[1e-5, -2e-5, 3e-6]], dtype=torch.float64)]
    ).requires_grad_()
    assert torch.autograd.gradcheck(lbs.axis_angle_to_matrix, (aa,), eps=1e-7, atol=1e-6)


def test_forward_kinematics_of_a_chain_matches_closed_form():
    # Two bones along +x, each joint rotated 90° about z: the tip turns to +y then to -x.
    joints = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]], dtype=torch.float64)
    rots = lbs.axis_angle_to_matrix(
        torch.tensor([[[0, 0, 0], [0, 0, math.pi / 2], [0, 0, 0]]], dtype=torch.float64)
    )
    world = lbs.forward_kinematics(rots, joints, (-1, 0, 1))
    assert torch.allclose(world[0, 2, :3, 3], torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64), atol=1e-12)


def toy_body(seed: int = 0, dtype=torch.float64) -> BodyModel:
    """A random body model on SMPL's tree: 60 vertices, 3 shape coefficients."""
    gen = torch.Generator().manual_seed(seed)
    v, c = 60, 3
    return BodyModel(
        name="toy",
        v_template=torch.randn(v, 3, generator=gen),
        shapedirs=0.05 * torch.randn(v, 3, c, generator=gen),
        j_template=torch.randn(24, 3, generator=gen),
        joint_shapedirs=0.05 * torch.randn(24, 3, c, generator=gen),
        weights=torch.softmax(3 * torch.randn(v, 24, generator=gen), 1),
        faces=torch.randint(0, v, (20, 3), generator=gen),
        shape_names=["a", "b", "c"],
        default_shape=torch.zeros(c),
        posedirs=0.01 * torch.randn(207, v * 3, generator=gen),
    ).to(dtype)


def test_posed_vertices_gradient_matches_finite_differences():
    body = toy_body()
    pose = (0.3 * torch.randn(2, 72, dtype=torch.float64)).requires_grad_()
    shape = torch.randn(3, dtype=torch.float64, requires_grad=True)
    trans = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)

    def posed(p, s, t):
        return body(p, s, t).vertices

    assert torch.autograd.gradcheck(posed, (pose, shape, trans), eps=1e-6, atol=1e-5)


def test_zero_pose_gives_rest_body_and_identity_transforms():
    body = toy_body()
    out = body(torch.zeros(1, 72, dtype=torch.float64))
    verts, joints = body.rest()
    assert torch.allclose(out.vertices, verts, atol=1e-12)
    assert torch.allclose(out.joints, joints, atol=1e-12)
    assert torch.allclose(
        out.transforms, torch.eye(4, dtype=torch.float64).expand_as(out.transforms), atol=1e-12
    )


def test_batch_equals_per_frame():
    body = toy_body()
    pose, trans = 0.4 * torch.randn(5, 72, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    shapes = torch.randn(5, 3, dtype=torch.float64)
    batch = body(pose, shapes, trans)
    for f in range(5):
        single = body(pose[f : f + 1], shapes[f], trans[f : f + 1])
        assert torch.allclose(single.vertices[0], batch.vertices[f], atol=1e-12)
        assert torch.allclose(single.transforms[0], batch.transforms[f], atol=1e-12)


def test_posed_joints_are_transforms_applied_to_rest_joints():
    body = toy_body()
    pose, trans = 0.5 * torch.randn(3, 72, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    out = body(pose, None, trans)
    _, rest_joints = body.rest()
    mapped = (out.transforms[..., :3, :3] @ rest_joints[..., None])[..., 0] + out.transforms[..., :3, 3]
    assert torch.allclose(mapped, out.joints, atol=1e-12)


def test_mirror_pose_is_an_involution_and_swaps_sides():
    pose = torch.randn(4, 72, dtype=torch.float64)
    assert torch.equal(mirror_pose(mirror_pose(pose)), pose)
    mirrored = mirror_pose(pose).reshape(4, 24, 3)
    left, right = JOINT_INDEX["left_elbow"], JOINT_INDEX["right_elbow"]
    assert torch.equal(mirrored[:, left, 0], pose.reshape(4, 24, 3)[:, right, 0])
    assert torch.equal(mirrored[:, left, 1:], -pose.reshape(4, 24, 3)[:, right, 1:])


def test_parents_precede_children():
    assert all(p < j for j, p in enumerate(PARENTS) if j)
