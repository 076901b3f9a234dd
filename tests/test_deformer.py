"""The forward deformer: learned LBS, its Jacobian, the Broyden correspondence search on random
smooth skinning fields and poses, and implicit gradients against finite differences."""

from __future__ import annotations

import math

import pytest
import torch

from rgbd2avatar.avatar.deformer import ForwardDeformer, take
from rgbd2avatar.avatar.networks import CanonicalField, SkinningNetwork
from rgbd2avatar.body.lbs import axis_angle_to_matrix, rigid

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
pytestmark = pytest.mark.usefixtures("one_thread")


def random_field(seed: int, bones: int = 24, temperature: float = 0.02, **kwargs) -> SkinningNetwork:
    """A random smooth skinning field over [-1, 1]³; a small temperature makes most points nearly
    rigid with one bone and leaves smooth blends between the bones' regions."""
    torch.manual_seed(seed)
    return SkinningNetwork(num_bones=bones, hidden=32, layers=3, temperature=temperature, **kwargs)


def random_axis_angles(shape: tuple[int, ...], max_angle: float, gen: torch.Generator) -> torch.Tensor:
    axis = torch.randn(*shape, 3, generator=gen, dtype=torch.float64)
    return (
        axis
        / axis.norm(dim=-1, keepdim=True)
        * max_angle
        * torch.rand(*shape, 1, generator=gen, dtype=torch.float64)
    )


def bone_transforms(axis_angles: torch.Tensor, pivots: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Rigid transforms rotating by the axis-angles about the pivots, then shifting: (…, 3) ×3 → (…, 4, 4)."""
    rotation = axis_angle_to_matrix(axis_angles)
    return rigid(rotation, pivots - (rotation @ pivots[..., None])[..., 0] + shifts)


def random_transforms(
    frames: int, bones: int, gen: torch.Generator, max_angle: float = math.pi / 4
) -> torch.Tensor:
    """(B, J, 4, 4) float64: rotations up to ``max_angle`` about pivots in the body's box, shifts ≤ 5 cm."""
    angles = random_axis_angles((frames, bones), max_angle, gen)
    pivots = torch.rand(frames, bones, 3, generator=gen, dtype=torch.float64) * 1.2 - 0.6
    shifts = (torch.rand(frames, bones, 3, generator=gen, dtype=torch.float64) * 2 - 1) * 0.05
    return bone_transforms(angles, pivots, shifts)


class BlobField(CanonicalField):
    """An analytic skinning field of Gaussian-blob bones: w = softmax(−‖x − c_j‖² / temperature).

    Each bone owns the Voronoi cell of its centre c_j, rigidly inside and blended near the cell
    walls (over a few cm for temperature 0.01–0.03 m²).
    """

    def __init__(self, centres: torch.Tensor, temperature: float) -> None:
        super().__init__()
        self.register_buffer("centres", centres)
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(-((x[..., None, :] - self.centres) ** 2).sum(-1) / self.temperature, -1)


def articulated_transforms(
    frames: int, centres: torch.Tensor, gen: torch.Generator, max_angle: float
) -> torch.Tensor:
    """Random poses of a 24-joint-like tree over blob bones: each bone's parent is the nearest
    earlier centre, its joint the midpoint of the two centres (on their cell wall), its local
    rotation random up to ``max_angle``; world transforms compose down the tree (as forward
    kinematics does). Returns (B, J, 4, 4) float64."""
    bones = len(centres)
    parents = [-1] + [int(((centres[:j] - centres[j]) ** 2).sum(-1).argmin()) for j in range(1, bones)]
    joints = torch.stack([centres[0]] + [(centres[j] + centres[parents[j]]) / 2 for j in range(1, bones)])
    joints = joints.double().expand(frames, bones, 3)
    local = bone_transforms(
        random_axis_angles((frames, bones), max_angle, gen), joints, torch.zeros_like(joints)
    )
    world = [local[:, 0]]
    for j in range(1, bones):
        world.append(world[parents[j]] @ local[:, j])
    return torch.stack(world, 1)


def test_skin_is_eq5_and_skin_normals_eq6():
    gen = torch.Generator().manual_seed(0)
    deformer = ForwardDeformer(random_field(0, bones=5, temperature=0.3))
    tfs = random_transforms(2, 5, gen).float()
    xc = torch.rand(2, 7, 3, generator=gen) - 0.5
    normals = torch.randn(2, 7, 3, generator=gen)
    w = deformer.skinning(xc)
    expected = torch.einsum("bnj,bjik,bnk->bni", w, tfs[..., :3, :3], xc) + torch.einsum(
        "bnj,bji->bni", w, tfs[..., :3, 3]
    )
    assert torch.allclose(deformer.skin(xc, tfs), expected, atol=1e-6)
    blended = torch.einsum("bnj,bjik,bnk->bni", w, tfs[..., :3, :3], normals)
    expected_n = blended / blended.norm(dim=-1, keepdim=True)
    assert torch.allclose(deformer.skin_normals(xc, normals, tfs), expected_n, atol=1e-6)


def test_jacobian_matches_finite_differences():
    gen = torch.Generator().manual_seed(1)
    deformer = ForwardDeformer(random_field(1, bones=6, temperature=0.1).double())
    tfs = random_transforms(2, 6, gen)
    xc = torch.rand(2, 9, 3, generator=gen, dtype=torch.float64) - 0.5
    jac = deformer.jacobian(xc, tfs)
    assert jac.shape == (2, 9, 3, 3) and not jac.requires_grad
    h = 1e-6
    for axis in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[axis] = h
        with torch.no_grad():
            column = (deformer.skin(xc + step, tfs) - deformer.skin(xc - step, tfs)) / (2 * h)
        assert torch.allclose(jac[..., axis], column, atol=1e-7)


@pytest.mark.parametrize(("seed", "temperature"), [(0, 0.01), (1, 0.03)])
def test_search_recovers_canonical_points_of_random_fields_and_poses(seed, temperature):
    """The issue's acceptance test, on 24 blob bones posed by random 45° joint rotations down a
    tree (harsher than a body: 4–6 % of the canonical box folds over other parts).

    Every valid candidate is a root in the canonical domain, ≥ 99 % of the posed points get one,
    and ≥ 99 % of the points that should be recovered are, to 1e-4 m. Should be recovered: the
    point's dominant bone starts a candidate, the map keeps orientation at the point and no
    other root of its posed point is known (a thorough search from all 24 bones finds none;
    where a posed point has several roots, the search owes one of them, not a particular one).
    """
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(24, 3, generator=gen) * 1.4 - 0.7
    field = BlobField(centres, temperature)
    deformer = ForwardDeformer(field)
    tfs = articulated_transforms(2, centres, gen, math.pi / 4).float()
    xc = torch.rand(2, 400, 3, generator=gen) * 1.6 - 0.8
    with torch.no_grad():
        xd = deformer.skin(xc, tfs)
        dominant = deformer.skinning(xc).argmax(-1)
    candidates, valid = deformer.search(xd, tfs)
    assert candidates.shape == (2, 400, 9, 3) and valid.shape == (2, 400, 9)

    with torch.no_grad():
        skinned = deformer.skin(candidates.flatten(1, 2), tfs).view_as(candidates)
    assert ((skinned - xd[:, :, None]).norm(dim=-1)[valid] < 1e-4).all()
    assert deformer.inside(candidates[valid]).all() and torch.isfinite(candidates).all()
    assert valid.any(-1).float().mean() >= 0.99

    thorough = ForwardDeformer(field, init_bones=range(24), max_steps=100, diverge=100.0)
    roots, found = thorough.search(xd, tfs)
    other_root = (((roots - xc[:, :, None]).norm(dim=-1) > 1e-3) & found).any(-1)
    orientation_kept = torch.linalg.det(deformer.jacobian(xc, tfs)) > 0
    should = torch.isin(dominant, torch.tensor(deformer.init_bones)) & orientation_kept & ~other_root
    recovered = (((candidates - xc[:, :, None]).norm(dim=-1) < 1e-4) & valid).any(-1)
    assert should.sum() > 100
    assert recovered[should].float().mean() >= 0.99
    assert recovered.float().mean() >= 0.9


@pytest.mark.parametrize("seed", [1, 2])
def test_search_inverts_random_skinning_networks(seed):
    """A random SkinningNetwork (sharp softmax: a few bone regions, wide blends) over 9 bones with
    random rigid motions, every bone starting a candidate."""
    gen = torch.Generator().manual_seed(seed)
    deformer = ForwardDeformer(random_field(seed, bones=9), init_bones=range(9))
    tfs = random_transforms(2, 9, gen).float()
    xc = torch.rand(2, 300, 3, generator=gen) * 1.6 - 0.8
    with torch.no_grad():
        xd = deformer.skin(xc, tfs)
    candidates, valid = deformer.search(xd, tfs)
    recovered = (((candidates - xc[:, :, None]).norm(dim=-1) < 1e-4) & valid).any(-1)
    assert recovered.float().mean() >= 0.99


def test_far_and_unreachable_points_are_invalid():
    gen = torch.Generator().manual_seed(3)
    deformer = ForwardDeformer(random_field(3))
    tfs = random_transforms(1, 24, gen).float()
    far = torch.tensor([[[100.0, 0.0, 0.0], [0.0, -100.0, 50.0], [0.0, 0.0, 100.0]]])
    _, valid = deformer.search(far, tfs)
    assert not valid.any()

    # every bone moves 3 m along x: posed points near the origin come from x − 3 m, outside the
    # canonical domain (|x̂| ≤ 1); the same points moved by 3 m are reachable and map back exactly
    shift = torch.eye(4).repeat(1, 24, 1, 1)
    shift[..., 0, 3] = 3.0
    inside = torch.rand(1, 50, 3, generator=gen) - 0.5
    _, unreachable = deformer.search(inside, shift)
    assert not unreachable.any()
    candidates, reachable = deformer.search(inside + torch.tensor([3.0, 0.0, 0.0]), shift)
    assert reachable.all()
    assert torch.allclose(candidates, inside[:, :, None].expand_as(candidates), atol=1e-5)


def test_chunking_does_not_change_the_search():
    gen = torch.Generator().manual_seed(4)
    field = random_field(4, bones=8, temperature=0.05).double()
    tfs = random_transforms(2, 8, gen)
    xd = torch.rand(2, 30, 3, generator=gen, dtype=torch.float64) - 0.5
    whole = ForwardDeformer(field, init_bones=(0, 3, 5)).search(xd, tfs)
    chunked = ForwardDeformer(field, init_bones=(0, 3, 5), chunk=50).search(xd, tfs)
    assert torch.equal(whole[1], chunked[1])
    assert torch.allclose(whole[0], chunked[0], atol=1e-9)


def test_select_picks_the_smallest_valid_candidate():
    values = torch.tensor([[[0.3, -0.2, 0.1], [0.5, 0.4, 0.6]]])
    valid = torch.tensor([[[True, False, True], [False, False, False]]])
    index, found = ForwardDeformer.select(values, valid)
    assert index.tolist() == [[2, 0]] and found.tolist() == [[True, False]]
    points = torch.arange(18.0).view(1, 2, 3, 3)
    assert torch.equal(take(points, index), torch.stack([points[0, 0, 2], points[0, 1, 0]])[None])
    assert torch.equal(take(values, index), torch.tensor([[0.1, 0.5]]))


def test_correspondences_keep_values_and_give_implicit_gradients():
    """dL/dθ, dL/d(pose angle) and dL/dx_d through the roots agree with central differences of
    re-solved roots (float64)."""
    gen = torch.Generator().manual_seed(5)
    field = random_field(5, bones=4, temperature=0.1).double()
    deformer = ForwardDeformer(field, init_bones=(0, 1, 2, 3), tol=1e-12, max_steps=100)
    angles = random_axis_angles((1, 4), math.pi / 4, gen).requires_grad_(True)
    pivots = torch.rand(1, 4, 3, generator=gen, dtype=torch.float64) - 0.5
    shifts = 0.05 * torch.randn(1, 4, 3, generator=gen, dtype=torch.float64)
    xc_true = torch.rand(1, 12, 3, generator=gen, dtype=torch.float64) - 0.5
    with torch.no_grad():
        xd = deformer.skin(xc_true, bone_transforms(angles, pivots, shifts))
    xd.requires_grad_(True)
    probe = torch.randn(3, generator=gen, dtype=torch.float64)

    def loss(xc: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return (torch.sin(3.0 * xc) @ probe * valid).sum()

    xc, valid = deformer.correspondences(xd, bone_transforms(angles, pivots, shifts))
    searched, _ = deformer.search(xd, bone_transforms(angles, pivots, shifts))
    assert torch.equal(xc.detach(), searched)
    assert valid.sum() >= 12
    total = loss(xc, valid)
    total.backward()

    def resolved() -> float:
        with torch.no_grad():
            again, valid_again = deformer.search(xd, bone_transforms(angles, pivots, shifts))
        assert torch.equal(valid_again, valid)
        return float(loss(again, valid))

    weight = field.mlp[0].weight
    checks = [
        (weight, (3, 1)),
        (field.mlp[-1].bias, (2,)),
        (angles, (0, 2, 1)),
        (angles, (0, 0, 0)),
        (xd, (0, 4, 2)),
    ]
    h = 1e-6
    for tensor, where in checks:
        analytic = float(tensor.grad[where])
        with torch.no_grad():
            tensor[where] += h
        plus = resolved()
        with torch.no_grad():
            tensor[where] -= 2 * h
        minus = resolved()
        with torch.no_grad():
            tensor[where] += h
        numeric = (plus - minus) / (2 * h)
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-7), (where, analytic, numeric)


def test_attach_gradients_without_grad_mode_returns_plain_roots():
    deformer = ForwardDeformer(random_field(6, bones=3), init_bones=(0, 1, 2))
    tfs = torch.eye(4).repeat(1, 3, 1, 1)
    xd = torch.rand(1, 5, 3) - 0.5
    with torch.no_grad():
        xc, valid = deformer.correspondences(xd, tfs)
    assert valid.all() and not xc.requires_grad
    assert torch.allclose(xc, xd[:, :, None].expand_as(xc))


@pytest.mark.parametrize("device", DEVICES)
def test_search_runs_on_every_device(device):
    gen = torch.Generator().manual_seed(7)
    deformer = ForwardDeformer(random_field(7)).to(device)
    tfs = random_transforms(1, 24, gen).float().to(device)
    xc = (torch.rand(1, 50, 3, generator=gen) - 0.5).to(device)
    with torch.no_grad():
        xd = deformer.skin(xc, tfs)
    candidates, valid = deformer.search(xd, tfs)
    assert candidates.device.type == device and valid.any(-1).float().mean() > 0.9
