"""The synthetic subject: clothing geometry, pose dependence, animation, presets and colours."""

import time

import numpy as np
import open3d as o3d
import pytest
import torch

from rgbd2avatar.body import load_body_model
from rgbd2avatar.body.skeleton import JOINT_INDEX
from rgbd2avatar.errors import UserError
from rgbd2avatar.geometry import MeshQuery, face_normals
from rgbd2avatar.motion import builtin_motion
from rgbd2avatar.synth.subject import (
    BOTTOM,
    FIELDS,
    HAIR,
    PRESETS,
    SHOES,
    SKIN,
    TOP,
    cotangent_laplacian,
    make_subject,
    reflectivity,
)

J = JOINT_INDEX


@pytest.fixture(scope="module")
def body():
    return load_body_model("anny")


@pytest.fixture(scope="module")
def subjects(body):
    return {name: make_subject(name, seed=0, body=body) for name in PRESETS}


def arms(elevation: float, frames: int = 1) -> torch.Tensor:
    """(F, 72) poses with both arms raised by ``elevation`` radians from the T-pose."""
    pose = torch.zeros(frames, 24, 3)
    pose[:, J["left_shoulder"], 2] = elevation
    pose[:, J["right_shoulder"], 2] = -elevation
    return pose.reshape(frames, 72)


def motion_frames() -> torch.Tensor:
    """(F, 72) a few frames of the built-in motions."""
    clips = [("walk", 10.0, [4, 12]), ("squat", 4.0, [8]), ("raise_arms", 4.0, [8]), ("turn", 4.0, [10])]
    return torch.cat([builtin_motion(name, fps=fps).to_torch()[0][index] for name, fps, index in clips])


def bare(subject) -> np.ndarray:
    """(V,) bool: vertices no garment covers at all."""
    return subject.garment_coverage[:, 1:].max(1).values.numpy() == 0


def face_and_hands(subject) -> np.ndarray:
    """(V,) bool: the hands and the face below the eyes."""
    verts = subject.rest_vertices.numpy()
    parts = subject.body.part_labels.numpy()
    hands = np.isin(parts, [J["left_hand"], J["right_hand"]])
    face = (
        (parts == J["head"])
        & (verts[:, 2] > subject.frame.head_centre[2] + 0.04)
        & (verts[:, 1] < subject.frame.eyes[:, 1].min())
    )
    return hands | face


@pytest.mark.parametrize("name", list(PRESETS))
def test_clothing_is_thick_bounded_and_absent_on_skin(subjects, name):
    subject = subjects[name]
    naked, faces = subject.rest_vertices.numpy(), subject.faces.numpy()
    clothed = subject.rest_clothed().numpy()
    distance = MeshQuery(naked, faces).closest_points(clothed).distances  # (V,) to the naked surface
    _, area = cotangent_laplacian(naked.astype(np.float64), faces)
    assert area[distance > 0.02].sum() / area.sum() >= 0.3
    assert np.linalg.norm(clothed - naked, axis=1).max() < 0.08
    assert face_and_hands(subject).sum() > 1000
    assert bare(subject)[face_and_hands(subject)].all()
    moved = np.abs(subject.displacement(torch.cat([arms(0.0), motion_frames()])).numpy()).max((0, 2))
    assert (moved[bare(subject)] == 0).all()


def volume(verts: np.ndarray, faces: np.ndarray) -> float:
    """Enclosed volume of a closed mesh (divergence theorem)."""
    corners = verts[faces].astype(np.float64)
    return float(np.linalg.det(corners).sum() / 6)


@pytest.mark.parametrize("name", list(PRESETS))
def test_rest_clothed_mesh_is_a_valid_enlarged_surface(subjects, name):
    """No inverted triangles (but inside the shoes, where the toes are faired), no
    self-intersections, a larger volume that still holds every joint."""
    subject = subjects[name]
    naked, faces = subject.rest_vertices.numpy(), subject.faces.numpy()
    clothed = subject.rest_clothed().numpy()
    inverted = (face_normals(naked, faces) * face_normals(clothed, faces)).sum(1) < 0
    in_shoes = (subject.garment_labels.numpy()[faces] == SHOES).all(1)
    assert not (inverted & ~in_shoes).any()
    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(clothed.astype(np.float64)), o3d.utility.Vector3iVector(faces)
    )
    assert not mesh.is_self_intersecting()
    assert mesh.is_edge_manifold() and mesh.is_vertex_manifold()
    assert volume(clothed, faces) > 1.2 * volume(naked, faces) > 0
    joints = subject.frame.joints
    assert MeshQuery(clothed, faces).inside(joints).all()


def test_displacement_depends_on_pose(subjects):
    subject = subjects["casual"]
    top = (subject.garment_labels == TOP).numpy()
    up, down = subject.displacement(torch.cat([arms(1.3), arms(-1.3)])).numpy()
    assert np.linalg.norm(up - down, axis=1)[top].max() >= 0.005
    same = subject.displacement(torch.cat([arms(0.7), arms(0.7)]))
    assert torch.equal(same[0], same[1])
    assert torch.allclose(subject.displacement(arms(0.7))[0], same[0], atol=1e-7)  # any batch size


def test_displacement_is_a_smooth_function_of_pose(subjects):
    """Central differences converge: the same slope at two step sizes, bounded curvature."""
    subject = subjects["loose"]
    generator = torch.Generator().manual_seed(0)
    pose = (torch.rand(1, 72, generator=generator) - 0.5) * 1.0
    direction = torch.randn(1, 72, generator=generator)
    direction /= direction.norm()
    slopes = []
    for step in (1e-2, 1e-3):
        d = subject.displacement(torch.cat([pose - step * direction, pose, pose + step * direction])).double()
        slopes.append((d[2] - d[0]) / (2 * step))
        assert (d[2] - 2 * d[1] + d[0]).abs().max() / step**2 < 0.1  # m / rad²
    assert 1e-4 < slopes[0].abs().max() < 0.05  # m / rad
    assert (slopes[0] - slopes[1]).abs().max() < 0.01 * slopes[0].abs().max() + 1e-5


def test_every_pose_field_moves_the_cloth_of_some_preset(subjects):
    for k, field in enumerate(FIELDS):
        assert max(subject.cloth_bases[k].abs().max() for subject in subjects.values()) > 0, field


@pytest.mark.parametrize("name", list(PRESETS))
def test_clothed_subject_animates_like_the_body(subjects, name):
    subject = subjects[name]
    rest = subject.clothed(torch.zeros(1, 72))[0]
    assert torch.allclose(rest, subject.rest_clothed(), atol=1e-6)
    poses = motion_frames()
    trans = torch.randn(len(poses), 3, generator=torch.Generator().manual_seed(1))
    posed = subject.posed(poses, trans)
    assert posed.clothed.shape == (len(poses), subject.body.num_vertices, 3)
    naked = subject.body(poses, subject.shape, trans)
    assert torch.allclose(posed.body, naked.vertices) and torch.allclose(posed.joints, naked.joints)
    assert torch.allclose(subject.clothed(poses, trans), posed.clothed)
    bare_skin = torch.from_numpy(bare(subject))
    assert torch.allclose(posed.clothed[:, bare_skin], naked.vertices[:, bare_skin], atol=1e-5)
    faces = subject.faces.numpy()
    for clothed, joints in zip(posed.clothed.numpy(), posed.joints.numpy(), strict=True):
        assert MeshQuery(clothed, faces).inside(joints).all()


def test_presets_are_distinct_and_seeds_deterministic(subjects, body):
    rests = {name: s.rest_clothed() for name, s in subjects.items()}
    colors = {name: s.vertex_colors() for name, s in subjects.items()}
    names = list(PRESETS)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert (rests[a] - rests[b]).norm(dim=1).mean() > 0.01
            assert np.abs(colors[a] - colors[b]).mean() > 0.05
            assert not torch.equal(subjects[a].offsets, subjects[b].offsets)
    again = make_subject("casual", seed=0, body=body)
    assert torch.equal(again.rest_clothed(), rests["casual"])
    assert np.array_equal(again.vertex_colors(), colors["casual"])
    other = make_subject("casual", seed=1, body=body)
    assert torch.equal(other.rest_clothed(), rests["casual"])  # a seed varies appearance only
    assert np.abs(other.vertex_colors() - colors["casual"]).mean() > 0.01


def test_unknown_preset_is_a_user_error(body):
    with pytest.raises(UserError, match="casual"):
        make_subject("tuxedo", body=body)


def surface_samples(subject, label: int, count: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """Random triangles whose corners all carry ``label`` and random barycentrics in them."""
    rng = np.random.default_rng(0)
    faces = subject.faces.numpy()
    chosen = np.flatnonzero((subject.garment_labels.numpy()[faces] == label).all(1))
    triangles = rng.choice(chosen, count)
    weights = rng.dirichlet(np.ones(3), count)
    return triangles, weights


@pytest.mark.parametrize("name", list(PRESETS))
def test_colours_mark_regions_and_the_top_has_a_pattern(subjects, name):
    subject = subjects[name]
    colors = subject.vertex_colors()
    assert colors.shape == (subject.body.num_vertices, 3)
    assert colors.min() >= 0 and colors.max() <= 1
    albedo = {}
    for label in (SKIN, TOP, BOTTOM, HAIR, SHOES):
        triangles, weights = surface_samples(subject, label)
        albedo[label] = subject.albedo_at(triangles, weights)
        assert albedo[label].min() >= 0 and albedo[label].max() <= 1
    means = {label: a.mean(0) for label, a in albedo.items()}
    for a in means:
        for b in means:
            if a < b:
                assert np.abs(means[a] - means[b]).max() > 0.08, (a, b)
    luminance = albedo[TOP] @ np.array([0.2126, 0.7152, 0.0722])
    assert luminance.std() > 0.08


def test_albedo_at_a_vertex_is_the_vertex_colour(subjects):
    subject = subjects["casual"]
    faces = subject.faces.numpy()
    triangles = np.arange(0, len(faces), 97)
    corner = np.zeros((len(triangles), 3))
    corner[:, 0] = 1.0
    expected = subject.vertex_colors()[faces[triangles, 0]]
    assert np.allclose(subject.albedo_at(triangles, corner), expected)
    points, labels = subject.surface_at(triangles, corner)
    assert np.allclose(points, subject.rest_clothed().numpy()[faces[triangles, 0]], atol=1e-6)
    assert np.array_equal(labels, subject.garment_labels.numpy()[faces[triangles, 0]])


def test_reflectivity_is_low_for_dark_hair(subjects):
    subject = subjects["loose"]  # black hair
    hair = subject.reflectivity_at(*surface_samples(subject, HAIR))
    skin = subject.reflectivity_at(*surface_samples(subject, SKIN))
    assert 0 <= hair.min() and skin.max() <= 1
    assert hair.mean() < 0.5 * skin.mean()
    labels = subject.garment_labels.numpy()
    assert reflectivity(subject.vertex_colors(), labels).shape == labels.shape


def test_clothing_64_frames_is_fast(subjects):
    subject = subjects["casual"]
    poses = builtin_motion("walk", num_frames=64).to_torch()[0]
    subject.clothed(poses[:2])
    start = time.perf_counter()
    subject.body(poses, subject.shape)
    body_time = time.perf_counter() - start
    start = time.perf_counter()
    subject.clothed(poses)
    assert time.perf_counter() - start - body_time < 1.0
