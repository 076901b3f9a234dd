"""Broyden's method for many small root-finding problems g_m(x) = 0, x ∈ R³, solved together.

Each problem keeps an estimate H_m of its inverse Jacobian, starts from x⁰_m and H⁰_m and
iterates

    x ← x − H r,   r = g(x)
    H ← H + (Δx − H Δr) Δxᵀ H / (Δxᵀ H Δr)        ("good" Broyden, Sherman–Morrison form)

which keeps H the inverse of the Jacobian estimate that Broyden's rank-one secant update gives,
so no 3×3 system is solved inside the loop. All M problems advance in one batched tensor step;
only the problems still running (neither converged nor failed) are evaluated, so the cost
follows the slow problems' count, not M times the slowest one's steps.

Shapes: M problems, m of them still running.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

ResidualFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""g(x, index): x (m, 3) iterates of the problems ``index`` (m,) long → residuals (m, 3)."""


@dataclass
class BroydenResult:
    """Outcome of :func:`broyden`.

    Attributes:
        x: (M, 3) last iterates (the roots where ``valid``; NaN or anything where not).
        valid: (M,) bool, converged: ‖g(x)‖ < tol within the step budget.
        steps: iterations run (those of the slowest problem).
        residual_norm: (M,) ‖g(x)‖ at the last iterate.
    """

    x: torch.Tensor
    valid: torch.Tensor
    steps: int
    residual_norm: torch.Tensor


@torch.no_grad()
def broyden(
    residual_fn: ResidualFn,
    x0: torch.Tensor,
    jac_inv0: torch.Tensor,
    max_steps: int = 50,
    tol: float = 1e-5,
    diverge: float = 1.0,
) -> BroydenResult:
    """Solve g_m(x) = 0 for M problems at once with Broyden's method; no gradients.

    A problem stops when it converges (‖g‖ < ``tol``) or fails: its residual is not finite or
    exceeds ``diverge``. Problems still running after ``max_steps`` iterations are invalid.

    Args:
        residual_fn: g(x, index) for the running problems ``index``, see :data:`ResidualFn`.
        x0: (M, 3) initial guesses.
        jac_inv0: (M, 3, 3) initial inverse Jacobians (e.g. the exact one at ``x0``).
        max_steps: iteration budget.
        tol: convergence threshold on ‖g(x)‖ (units of g).
        diverge: failure threshold on ‖g(x)‖.
    Returns:
        :class:`BroydenResult`.
    """
    x = x0.clone()
    jac_inv = jac_inv0.clone()
    residual = residual_fn(x, torch.arange(len(x), device=x.device))
    norm = residual.norm(dim=-1)
    converged = norm < tol
    running = ~converged & _healthy(norm, diverge)
    steps = 0
    while steps < max_steps and bool(running.any()):
        index = running.nonzero()[:, 0]
        step = -(jac_inv[index] @ residual[index, :, None])[..., 0]
        x_new = x[index] + step
        residual_new = residual_fn(x_new, index)
        jac_inv[index] = good_broyden_update(jac_inv[index], step, residual_new - residual[index])
        x[index], residual[index] = x_new, residual_new
        norm_new = residual_new.norm(dim=-1)
        norm[index] = norm_new
        converged[index] = norm_new < tol
        running[index] = ~converged[index] & _healthy(norm_new, diverge)
        steps += 1
    return BroydenResult(x=x, valid=converged, steps=steps, residual_norm=norm)


def good_broyden_update(jac_inv: torch.Tensor, dx: torch.Tensor, dr: torch.Tensor) -> torch.Tensor:
    """Rank-one ("good" Broyden) update of inverse Jacobians after a step.

    H' = H + (Δx − H Δr) (Δxᵀ H) / (Δxᵀ H Δr): H' Δr = Δx (the secant condition), and H' is the
    Sherman–Morrison inverse of Broyden's updated Jacobian. Where the denominator is (nearly)
    zero relative to its factors the update is skipped.

    Args:
        jac_inv: (m, 3, 3) H; dx: (m, 3) the steps Δx; dr: (m, 3) the residual changes Δr.
    Returns:
        (m, 3, 3) H'.
    """
    h_dr = (jac_inv @ dr[..., None])[..., 0]  # (m, 3)
    dx_h = (dx[..., None, :] @ jac_inv)[..., 0, :]  # (m, 3)
    denom = (dx * h_dr).sum(-1)  # (m,)
    scale = dx.norm(dim=-1) * h_dr.norm(dim=-1)
    usable = (denom.abs() > torch.finfo(denom.dtype).eps * scale) & torch.isfinite(denom)
    update = (dx - h_dr)[..., :, None] * dx_h[..., None, :] / torch.where(usable, denom, 1.0)[:, None, None]
    return torch.where(usable[:, None, None], jac_inv + update, jac_inv)


def _healthy(norm: torch.Tensor, diverge: float) -> torch.Tensor:
    """Problems that have not failed: finite residual norms not above ``diverge``: (m,) → (m,) bool."""
    return torch.isfinite(norm) & (norm <= diverge)
