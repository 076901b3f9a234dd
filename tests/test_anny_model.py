"""The derived `anny` model: faithful to the anny package, deterministic, SMPL-like rest pose."""

import numpy as np
import pytest
import torch
import trimesh

from rgbd2avatar import geometry
from rgbd2avatar.body import anny_model, load_body_model
from rgbd2avatar.body.skeleton import JOINT_INDEX, JOINT_NAMES

J = JOINT_INDEX


@pytest.fixture(scope="module")
def body():
    return load_body_model("anny")


@pytest.fixture(scope="module")
def anny_package_model():
    import anny

    return anny.Anny().double()


def test_phenotype_map_matches_the_anny_package(anny_package_model):
    phenotypes = torch.rand(16, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    phenotypes[0] = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])  # anchors at both ends
    none = torch.zeros(16, 0, dtype=torch.float64)
    expected = anny_package_model._get_phenotype_blendshape_coefficients(phenotypes, none, none)
    mask = anny_package_model.stacked_phenotype_blend_shapes_mask.double()
    ours = anny_model.blend_products(anny_model.variation_weights(phenotypes), mask)
    assert torch.allclose(
        ours @ anny_package_model.phenotype_blendshape_projection.double(), expected, atol=1e-12
    )


def test_rest_surface_matches_the_anny_package_at_the_default_phenotype(body, anny_package_model):
    """Away from the re-posed arms, our T-pose body is anny's own rest body in SMPL axes."""
    ours = body.rest()[0][0].double().numpy()
    theirs = anny_package_model()["rest_vertices"][0].numpy()[
        anny_model.load_anny_arrays()["anny_vertex_ids"]
    ]
    theirs = theirs @ anny_model.ANNY_TO_SMPL_AXES.T
    legs = np.isin(body.part_labels.numpy(), [J[n] for n in JOINT_NAMES if "knee" in n or "ankle" in n])
    assert np.abs(ours[legs] - theirs[legs]).max() < 2e-4


def test_build_is_deterministic():
    cached = anny_model.load_anny_arrays()
    rebuilt = anny_model.build_anny_arrays()
    assert cached.keys() == rebuilt.keys()
    for key, value in rebuilt.items():
        expected = value.astype(np.float32) if value.dtype == np.float64 else value
        assert np.array_equal(cached[key], expected), key


def test_rest_pose_is_a_t_pose_with_straight_horizontal_arms(body):
    _, joints = body.rest()
    for side in ("left", "right"):
        arm = joints[0, [J[f"{side}_shoulder"], J[f"{side}_elbow"], J[f"{side}_wrist"]]]
        assert (arm[:, 1:] - arm[0, 1:]).abs().max() < 1e-3  # same height and depth
    assert joints[0, J["left_wrist"], 0] > 0.4 and joints[0, J["right_wrist"], 0] < -0.4


def test_joints_lie_inside_the_body(body):
    verts, joints = body.rest()
    sdf = geometry.signed_distance(verts[0].numpy(), body.faces.numpy(), joints[0].numpy())
    assert (sdf < 0).all(), [JOINT_NAMES[i] for i in np.flatnonzero(sdf >= 0)]


def test_surface_is_one_watertight_mesh_with_uvs_and_24_parts(body):
    mesh = trimesh.Trimesh(body.v_template.numpy(), body.faces.numpy(), process=False)
    assert mesh.is_watertight and mesh.volume > 0
    assert body.face_uvs.shape == (body.faces.shape[0], 3, 2)
    assert body.face_uvs.min() >= 0 and body.face_uvs.max() <= 1
    assert set(body.part_labels.tolist()) == set(range(24))


def test_height_phenotype_makes_a_taller_body(body):
    shapes = body.default_shape.repeat(3, 1)
    shapes[:, anny_model.PHENOTYPES.index("height")] = torch.tensor([0.0, 0.5, 1.0])
    verts, _ = body.rest(shapes)
    stature = verts[..., 1].amax(1) - verts[..., 1].amin(1)
    assert stature[0] + 0.05 < stature[1] < stature[2] - 0.05


def test_shape_gradient_reaches_the_phenotypes(body):
    shape = body.default_shape.clone().requires_grad_()
    body.rest(shape)[0][..., 1].max().backward()
    assert shape.grad[anny_model.PHENOTYPES.index("height")] > 0
