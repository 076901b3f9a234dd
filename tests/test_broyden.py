"""Broyden's method: many smooth 3-D problems at once, failures, and the rank-one update."""

from __future__ import annotations

import pytest
import torch

from rgbd2avatar.avatar.broyden import broyden, good_broyden_update

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
pytestmark = pytest.mark.usefixtures("one_thread")


def smooth_map(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """x + 0.1 sin(A x), per problem A (M, 3, 3) with ‖A‖ ≤ ~3: invertible, Jacobian I + 0.1 cos · A."""
    return x + 0.1 * torch.sin((a @ x[..., None])[..., 0])


def test_solves_many_smooth_invertible_maps_together():
    gen = torch.Generator().manual_seed(0)
    count = 2000
    a = torch.randn(count, 3, 3, generator=gen)
    a = 3.0 * a / torch.linalg.matrix_norm(a, ord=2)[:, None, None]
    truth = torch.rand(count, 3, generator=gen) * 2 - 1
    target = smooth_map(truth, a)
    calls = []

    def residual(x, index):
        calls.append(len(index))
        return smooth_map(x, a[index]) - target[index]

    eye = torch.eye(3).expand(count, 3, 3)
    result = broyden(residual, target.clone(), eye, max_steps=50, tol=1e-6)
    assert result.valid.all()
    assert (result.residual_norm < 1e-6).all()
    assert torch.allclose(result.x, truth, atol=1e-5)
    assert result.steps <= 50
    assert calls[0] == count and min(calls) < count  # converged problems stop being evaluated
    assert sum(calls) < count * (result.steps + 1)


def test_reports_problems_without_roots_invalid():
    """Half the problems have ‖g‖ ≥ 1 everywhere: never converge (or fail at once with diverge ≤ 1)."""
    gen = torch.Generator().manual_seed(1)
    count = 200
    target = torch.rand(count, 3, generator=gen)
    solvable = torch.arange(count) % 2 == 0

    def residual(x, index):
        shifted = x - target[index]
        no_root = torch.stack([shifted[:, 0] ** 2 + 1.0, shifted[:, 1], shifted[:, 2]], -1)
        return torch.where(solvable[index, None], shifted, no_root)

    start = target + 0.1
    eye = torch.eye(3).expand(count, 3, 3)
    patient = broyden(residual, start, eye, max_steps=30, tol=1e-6, diverge=100.0)
    assert torch.equal(patient.valid, solvable)
    assert (patient.residual_norm[~solvable] >= 1.0).all()
    strict = broyden(residual, start, eye, max_steps=30, tol=1e-6, diverge=1.0)
    assert torch.equal(strict.valid, solvable)


def test_divergence_and_non_finite_residuals_are_invalid():
    count = 4
    target = torch.zeros(count, 3)

    def residual(x, index):
        r = x - target[index]
        r = torch.where((index == 2)[:, None], torch.full_like(r, float("nan")), r)
        return torch.where((index == 3)[:, None], 5.0 + r.abs(), r)

    start = torch.full((count, 3), 0.1)
    result = broyden(residual, start, torch.eye(3).expand(count, 3, 3), tol=1e-8, diverge=1.0)
    assert result.valid.tolist() == [True, True, False, False]


def test_no_gradients_are_tracked():
    x0 = torch.rand(5, 3, requires_grad=True)
    result = broyden(lambda x, i: x - 0.5, x0, torch.eye(3).expand(5, 3, 3))
    assert not result.x.requires_grad
    assert result.valid.all() and torch.allclose(result.x, torch.full((5, 3), 0.5))


def test_good_broyden_update_meets_the_secant_condition():
    gen = torch.Generator().manual_seed(2)
    jac_inv = torch.randn(10, 3, 3, generator=gen, dtype=torch.float64)
    dx = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    dr = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    updated = good_broyden_update(jac_inv, dx, dr)
    assert torch.allclose((updated @ dr[..., None])[..., 0], dx)
    # the update changes H only along (Δx − H Δr) (Δxᵀ H): directions v with Δxᵀ H v = 0 keep H v
    v = torch.linalg.cross((dx[:, None, :] @ jac_inv)[:, 0], dr)
    assert torch.allclose((updated @ v[..., None]), (jac_inv @ v[..., None]))
    zero_step = good_broyden_update(jac_inv, torch.zeros_like(dx), dr)
    assert torch.equal(zero_step, jac_inv)


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_every_device(device):
    target = torch.rand(64, 3, device=device)
    eye = torch.eye(3, device=device).expand(64, 3, 3)
    result = broyden(lambda x, i: x + 0.1 * x**3 - target[i], target.clone(), eye)
    assert result.valid.all() and result.x.device.type == device
