"""Mesh and image metrics on cases with known answers: boxes, spheres, planes, offset images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from skimage.metrics import structural_similarity

from rgbd2avatar.metrics import (
    chamfer_l2_cm,
    mesh_metrics,
    normal_consistency,
    psnr,
    sample_surface,
    ssim,
    volumetric_iou,
)

Mesh = tuple[np.ndarray, np.ndarray]


def sphere(radius: float, subdivisions: int = 4) -> Mesh:
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def unit_cube(shift_x: float = 0.0) -> Mesh:
    """The cube [0, 1]³ moved by ``shift_x`` along x."""
    mesh = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    return np.asarray(mesh.vertices) + [0.5 + shift_x, 0.5, 0.5], np.asarray(mesh.faces)


def square(angle: float = 0.0) -> Mesh:
    """The square [-1, 1]² in the plane z = 0, rotated by ``angle`` about the x axis (two triangles)."""
    corners = np.array([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]])
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return corners @ rotation.T, np.array([[0, 1, 2], [0, 2, 3]])


# --- surface sampling -------------------------------------------------------------------------


def test_samples_lie_on_the_surface_with_area_weights() -> None:
    half = np.array([0.1, 0.25, 0.5])
    box = trimesh.creation.box(extents=2 * half)
    points, normals = sample_surface(np.asarray(box.vertices), np.asarray(box.faces), 60_000, seed=3)
    assert points.shape == normals.shape == (60_000, 3) and points.dtype == np.float32
    on_face = np.isclose(np.abs(points), half, atol=1e-6)  # (N, 3): which face pair holds each point
    assert (on_face.sum(1) >= 1).all() and (np.abs(points) <= half + 1e-6).all()
    np.testing.assert_allclose(np.abs(normals)[on_face.sum(1) == 1], on_face[on_face.sum(1) == 1], atol=1e-6)
    areas = np.array([half[1] * half[2], half[0] * half[2], half[0] * half[1]])
    np.testing.assert_allclose(on_face.mean(0), areas / areas.sum(), atol=0.01)


def test_samples_are_uniform_within_a_triangle() -> None:
    vertices = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 1.5, 0.0]])
    points, normals = sample_surface(vertices, np.array([[0, 1, 2]]), 40_000, seed=0)
    assert (points[:, 0] >= 0).all() and (points[:, 1] >= 0).all()
    assert (points[:, 0] / 3.0 + points[:, 1] / 1.5 <= 1.0 + 1e-6).all()
    np.testing.assert_allclose(points.mean(0), vertices.mean(0), atol=0.01)
    np.testing.assert_allclose(normals, np.tile([0.0, 0.0, 1.0], (40_000, 1)))


def test_sampling_is_deterministic_per_seed_and_takes_torch() -> None:
    vertices, faces = sphere(1.0, 2)
    first, _ = sample_surface(vertices, faces, 1000, seed=7)
    again, _ = sample_surface(torch.from_numpy(vertices), torch.from_numpy(faces), 1000, seed=7)
    other, _ = sample_surface(vertices, faces, 1000, seed=8)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


# --- volumetric IoU ---------------------------------------------------------------------------


def test_iou_of_identical_meshes_is_one() -> None:
    result = volumetric_iou(sphere(1.0), sphere(1.0), num_uniform=20_000, num_near=20_000)
    assert result.iou == result.iou_uniform == result.iou_near == 1.0


def test_iou_of_shifted_cubes() -> None:
    """Volumes: intersection 0.5, union 1.5 → 1/3. Near the GT cube's faces (σ = 1 cm), per unit of
    area, the union holds 1/2 of the points at the face x = 0, all at x = 1 and 1/2 at the other
    four; the intersection 0, 1/2 and 1/4 → (1/2 + 1) / (1/2 + 1 + 2) = 3/7."""
    result = volumetric_iou(unit_cube(0.5), unit_cube(), num_uniform=50_000, num_near=50_000)
    assert result.iou_uniform == pytest.approx(1 / 3, abs=0.02)
    assert result.iou_near == pytest.approx(3 / 7, abs=0.02)
    assert result.iou_uniform < result.iou < result.iou_near


def test_iou_of_concentric_spheres_is_the_volume_ratio() -> None:
    result = volumetric_iou(sphere(0.5), sphere(1.0), num_uniform=50_000, num_near=10_000)
    assert result.iou_uniform == pytest.approx(1 / 8, abs=0.02)
    assert result.iou_near == 0.0  # no point near the big GT sphere is inside the small prediction


def test_iou_of_disjoint_meshes_is_zero() -> None:
    result = volumetric_iou(unit_cube(), unit_cube(2.0), num_uniform=20_000, num_near=20_000)
    assert result.iou == result.iou_uniform == result.iou_near == 0.0


def test_iou_is_deterministic_per_seed() -> None:
    pred, gt = unit_cube(0.3), unit_cube()
    first = volumetric_iou(pred, gt, num_uniform=5_000, num_near=5_000, seed=4)
    assert first == volumetric_iou(pred, gt, num_uniform=5_000, num_near=5_000, seed=4)
    assert first != volumetric_iou(pred, gt, num_uniform=5_000, num_near=5_000, seed=5)


# --- Chamfer-L2 -------------------------------------------------------------------------------


def test_chamfer_of_concentric_spheres_is_the_radius_gap() -> None:
    assert chamfer_l2_cm(sphere(1.0, 5), sphere(1.1, 5), num_samples=50_000) == pytest.approx(10.0, abs=0.3)


def test_chamfer_of_identical_meshes_is_zero_point_to_surface() -> None:
    """12 triangles: point-to-point matching of samples would be centimetres off, point-to-surface is 0."""
    assert chamfer_l2_cm(unit_cube(), unit_cube(), num_samples=20_000) < 1e-4


def test_chamfer_of_a_cube_shifted_by_one_centimetre() -> None:
    """Per unit area, each direction: 1 cm on one x face, 1 cm less a 5 mm average over a 1 cm
    border frame (4 × 0.01 × 0.005) on the other, 5 mm over a 1 cm strip of the four side faces
    (same amount): (0.01 + 0.01) / 6 m = 1/3 cm, to second order in the shift."""
    result = chamfer_l2_cm(unit_cube(0.01), unit_cube(), num_samples=100_000)
    assert result == pytest.approx(1 / 3, abs=0.01)


# --- normal consistency -----------------------------------------------------------------------


def test_normal_consistency_of_identical_meshes_is_one() -> None:
    assert normal_consistency(sphere(1.0), sphere(1.0), num_samples=20_000) > 0.999
    vertices, faces = unit_cube()
    assert normal_consistency((vertices, faces), (vertices, faces[:, ::-1]), num_samples=20_000) > 0.999


def test_normal_consistency_of_nearby_spheres_is_nearly_one() -> None:
    assert normal_consistency(sphere(1.0, 4), sphere(1.02, 5), num_samples=20_000) > 0.99


@pytest.mark.parametrize("angle", [0.3, np.pi / 6, 1.0])
def test_normal_consistency_of_a_tilted_plane_is_the_cosine(angle: float) -> None:
    """Every sample's closest point lies inside the other square, on a triangle with normal tilted by θ."""
    result = normal_consistency(square(angle), square(), num_samples=10_000)
    assert result == pytest.approx(np.cos(angle), abs=1e-5)


# --- all mesh metrics at once -----------------------------------------------------------------


def test_mesh_metrics_equal_the_separate_metrics() -> None:
    pred, gt = sphere(0.52, 3), sphere(0.5, 4)
    sizes = {"num_uniform": 5_000, "num_near": 5_000}
    result = mesh_metrics(pred, gt, num_samples=5_000, seed=2, **sizes)
    iou = volumetric_iou(pred, gt, seed=2, **sizes)
    assert result == {
        "iou": iou.iou,
        "iou_uniform": iou.iou_uniform,
        "iou_near": iou.iou_near,
        "chamfer_l2_cm": chamfer_l2_cm(pred, gt, num_samples=5_000, seed=2),
        "normal_consistency": normal_consistency(pred, gt, num_samples=5_000, seed=2),
    }
    assert result["chamfer_l2_cm"] == pytest.approx(2.0, abs=0.3)


# --- PSNR -------------------------------------------------------------------------------------


def random_image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 246, shape, dtype=np.uint8)


def test_psnr_of_a_constant_offset() -> None:
    image = random_image((20, 30, 3))
    assert psnr(image + np.uint8(10), image) == pytest.approx(20 * np.log10(255 / 10))
    floats = image / 255.0
    assert psnr(floats + 0.1, floats) == pytest.approx(20.0)
    assert psnr(floats + 0.1, floats, max_value=2.0) == pytest.approx(20 * np.log10(20))


def test_psnr_of_identical_images_is_infinite() -> None:
    image = random_image((8, 9))
    assert psnr(image, image.copy()) == float("inf")


def test_psnr_with_a_mask_ignores_the_other_pixels() -> None:
    gt = random_image((20, 30, 3))
    pred = gt.copy()
    pred[:, :10] += np.uint8(5)
    pred[:, 10:] = 0
    mask = np.zeros((20, 30), bool)
    mask[:, :10] = True
    assert psnr(pred, gt, mask=mask) == pytest.approx(20 * np.log10(255 / 5))
    with pytest.raises(ValueError, match="no pixel"):
        psnr(pred, gt, mask=np.zeros((20, 30), bool))


# --- SSIM -------------------------------------------------------------------------------------


def skimage_ssim(pred: np.ndarray, gt: np.ndarray, data_range: float) -> float:
    return structural_similarity(
        pred,
        gt,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=data_range,
        channel_axis=-1 if pred.ndim == 3 else None,
    )


def test_ssim_of_identical_images_is_one() -> None:
    image = random_image((32, 40, 3))
    assert ssim(image, image.copy()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("shape", [(48, 64), (40, 36, 3)])
def test_ssim_matches_scikit_image(shape: tuple[int, ...]) -> None:
    gt = random_image(shape, seed=1)
    noise = np.random.default_rng(2).integers(-30, 31, shape)
    pred = np.clip(gt + noise, 0, 255).astype(np.uint8)
    assert ssim(pred, gt) == pytest.approx(skimage_ssim(pred, gt, 255), abs=1e-3)
    pred_float, gt_float = pred / 255.0, gt / 255.0
    assert ssim(pred_float, gt_float) == pytest.approx(skimage_ssim(pred_float, gt_float, 1.0), abs=1e-3)


def test_ssim_with_a_mask_averages_the_masked_pixels() -> None:
    gt = random_image((30, 60, 3))
    pred = gt.copy()
    pred[:, 30:] = random_image((30, 30, 3), seed=9)
    far_from_change = np.zeros((30, 60), bool)
    far_from_change[:, :24] = True  # windows reach 5 px: columns < 25 see identical pixels only
    assert ssim(pred, gt, mask=far_from_change) == pytest.approx(1.0, abs=1e-12)
    assert ssim(pred, gt) < 0.9
    assert ssim(pred, gt, mask=np.ones((30, 60), bool)) == ssim(pred, gt)


def test_ssim_rejects_mismatched_images() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(random_image((20, 20)), random_image((20, 21)))
    with pytest.raises(ValueError, match="at least 11"):
        ssim(random_image((8, 20)), random_image((8, 20)))
