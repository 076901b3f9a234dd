"""The forward deformer: canonical → posed by learned linear blend skinning (PINA Eq. 5–6), and
the correspondence search posed → canonical by Broyden root finding (Sec. 3.1, after SNARF).

A canonical point x_c goes to x_d = f(x_c) = Σ_j w_j(x_c) B_j x_c, with w = f_w the skinning
network and B_j the canonical→posed bone transforms of a frame. A posed point x_d has one or
more canonical correspondences: the roots of f(x) − x_d. They are searched from K starting
points, x⁰_k = B_k⁻¹ x_d for the bones k of ``init_bones`` (the answer if x_d moved rigidly
with bone k), each by Broyden's method. The search itself carries no gradients; the roots are
made differentiable afterwards by the implicit function theorem (:meth:`ForwardDeformer.
attach_gradients`), which is exact at a root and costs one skinning pass instead of an unrolled
solver.

Shapes: B frames, N points, K candidates, J bones, M = B·N·K search problems.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from rgbd2avatar.avatar.broyden import broyden
from rgbd2avatar.avatar.networks import SkinningNetwork
from rgbd2avatar.body import lbs

INIT_BONES = (0, 1, 2, 4, 5, 16, 17, 18, 19)
"""SNARF's starting bones: pelvis, hips, knees, shoulders, elbows (SMPL joint indices)."""


class ForwardDeformer(nn.Module):
    """Learned LBS in canonical space and its inversion by correspondence search.

    Args:
        skinning: the canonical skinning field f_w (its normalisation also defines the canonical
            domain, see ``bound``).
        init_bones: bones whose inverse transforms give the K starting points.
        max_steps, tol, diverge: Broyden's iteration budget, convergence threshold on
            ‖f(x) − x_d‖ (metres) and failure threshold (metres).
        bound: the canonical domain is the cube |x̂|∞ ≤ bound in the skinning network's
            normalised coordinates x̂ = (x − center) / scale; roots outside it are invalid (the
            fields are meaningless there, and far posed points would otherwise find roots far
            away where the field happens to be rigid).
        chunk: search problems (points × candidates) per Broyden call, bounding memory.
    """

    def __init__(
        self,
        skinning: SkinningNetwork,
        init_bones: Sequence[int] = INIT_BONES,
        max_steps: int = 50,
        tol: float = 1e-5,
        diverge: float = 1.0,
        bound: float = 1.0,
        chunk: int = 32768,
    ) -> None:
        super().__init__()
        self.skinning = skinning
        self.init_bones = tuple(init_bones)
        self.max_steps = max_steps
        self.tol = tol
        self.diverge = diverge
        self.bound = bound
        self.chunk = chunk

    @property
    def num_candidates(self) -> int:
        """K, the starting points per posed point."""
        return len(self.init_bones)

    def skin(self, xc: torch.Tensor, tfs: torch.Tensor) -> torch.Tensor:
        """Deform canonical points (PINA Eq. 5): x_d = Σ_j w_j(x_c) B_j x_c, differentiable.

        Args:
            xc: (B, N, 3) canonical points; tfs: (B, J, 4, 4) bone transforms B_j.
        Returns:
            (B, N, 3) posed points.
        """
        return lbs.skin_points(xc, self.skinning(xc), tfs)

    def skin_normals(self, xc: torch.Tensor, normals_c: torch.Tensor, tfs: torch.Tensor) -> torch.Tensor:
        """Deform canonical normals (PINA Eq. 6): n_d = Σ_j w_j(x_c) R_j n_c, normalised.

        Args:
            xc: (B, N, 3) canonical points; normals_c: (B, N, 3) canonical normals (e.g. SDF
                gradients, any length); tfs: (B, J, 4, 4).
        Returns:
            (B, N, 3) unit posed normals.
        """
        frames, bones = tfs.shape[:2]
        rotations = tfs[..., :3, :3].reshape(frames, bones, 9)
        blended = torch.matmul(self.skinning(xc), rotations).unflatten(-1, (3, 3))  # (B, N, 3, 3)
        return nn.functional.normalize((blended @ normals_c[..., None])[..., 0], dim=-1)

    def jacobian(self, xc: torch.Tensor, tfs: torch.Tensor) -> torch.Tensor:
        """Exact Jacobians ∂x_d/∂x_c of :meth:`skin` (detached, no graph).

        Args:
            xc: (B, N, 3) canonical points; tfs: (B, J, 4, 4).
        Returns:
            (B, N, 3, 3), rows: posed coordinates, columns: canonical ones.
        """
        return pointwise_jacobian(lambda x: self.skin(x, tfs), xc)

    def inside(self, xc: torch.Tensor) -> torch.Tensor:
        """Whether canonical points lie in the canonical domain: (…, 3) → (…,) bool."""
        return self.skinning.normalise(xc).abs().amax(-1) <= self.bound

    def initial_guesses(self, xd: torch.Tensor, tfs: torch.Tensor) -> torch.Tensor:
        """Starting points x⁰_k = B_k⁻¹ x_d for the bones of ``init_bones``.

        Args:
            xd: (B, N, 3) posed points; tfs: (B, J, 4, 4).
        Returns:
            (B, N, K, 3).
        """
        inverse = torch.linalg.inv(tfs[:, list(self.init_bones)])  # (B, K, 4, 4)
        rotated = torch.einsum("bkij,bnj->bnki", inverse[..., :3, :3], xd)
        return rotated + inverse[:, None, :, :3, 3]

    @torch.no_grad()
    def search(self, xd: torch.Tensor, tfs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Canonical correspondence candidates of posed points (roots of Eq. 5); no gradients.

        From each of the K starting points (:meth:`initial_guesses`), Broyden's method runs with
        the exact inverse Jacobian at the start, in chunks of ``chunk`` problems. A candidate is
        valid when it converged (‖f(x) − x_d‖ < tol) inside the canonical domain; invalid ones
        hold their (finite) starting point. Several candidates may converge to the same root.

        Args:
            xd: (B, N, 3) posed points; tfs: (B, J, 4, 4).
        Returns:
            xc (B, N, K, 3) candidates and valid (B, N, K) bool.
        """
        frames, points = xd.shape[:2]
        shape = (frames, points, self.num_candidates)
        starts = self.initial_guesses(xd, tfs).reshape(-1, 3)  # (M, 3)
        targets = xd[:, :, None].expand(*shape, 3).reshape(-1, 3)
        frame = torch.arange(frames, device=xd.device).repeat_interleave(points * self.num_candidates)
        rows = tfs[:, :, :3, :].flatten(-2)  # (B, J, 12)
        parts = [slice(i, i + self.chunk) for i in range(0, len(starts), self.chunk)]
        solved = [self._solve(starts[part], targets[part], frame[part], rows) for part in parts]
        xc = torch.cat([x for x, _ in solved]).reshape(*shape, 3)
        valid = torch.cat([v for _, v in solved]).reshape(shape)
        return xc, valid

    def attach_gradients(self, xc: torch.Tensor, xd: torch.Tensor, tfs: torch.Tensor) -> torch.Tensor:
        """Give roots of f(x; θ, B) = x_d their derivatives by the implicit function theorem.

        Differentiating f(x*(θ, B, x_d); θ, B) = x_d gives J dx* + ∂f/∂θ dθ + ∂f/∂B dB = dx_d
        with J = ∂f/∂x at x*, so dx*/dθ = −J⁻¹ ∂f/∂θ, dx*/dB = −J⁻¹ ∂f/∂B and dx*/dx_d = J⁻¹.
        The returned x* − J⁻¹ (r − stopgrad(r)), r = f(x*; θ, B) − x_d, with x* and J detached,
        equals x* in value and has exactly these derivatives: gradients reach the skinning
        network's parameters, the transforms (hence the poses that made them) and x_d, without
        unrolling the solver. Points that are not roots (invalid candidates) get meaningless but
        finite gradients where J is invertible; callers mask them out.

        Args:
            xc: (B, N, 3) roots (any graph is dropped); xd: (B, N, 3) posed points;
                tfs: (B, J, 4, 4) bone transforms.
        Returns:
            (B, N, 3) the roots, differentiable (plain detached roots when grad is disabled).
        """
        root = xc.detach()
        if not torch.is_grad_enabled():
            return root
        jac_inv = safe_inverse(self.jacobian(root, tfs.detach()))
        residual = self.skin(root, tfs) - xd
        return root - (jac_inv @ (residual - residual.detach())[..., None])[..., 0]

    def correspondences(self, xd: torch.Tensor, tfs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All canonical candidates of posed points, differentiable (:meth:`search` then
        :meth:`attach_gradients`).

        Args:
            xd: (B, N, 3) posed points; tfs: (B, J, 4, 4).
        Returns:
            xc (B, N, K, 3) and valid (B, N, K) bool.
        """
        xc, valid = self.search(xd, tfs)
        frames, points, candidates = valid.shape
        targets = xd[:, :, None].expand(frames, points, candidates, 3)
        attached = self.attach_gradients(xc.flatten(1, 2), targets.flatten(1, 2), tfs)
        return attached.view_as(xc), valid

    @staticmethod
    def select(values: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The valid candidate of smallest value per point (PINA Eq. 7–8, values = f_sdf).

        Use ``take(xc, index)`` for x_c* and ``take(values, index)`` for SDF(x_d).

        Args:
            values: (B, N, K); valid: (B, N, K) bool.
        Returns:
            index (B, N) long (0 where no candidate is valid) and any_valid (B, N) bool.
        """
        masked = values.masked_fill(~valid, torch.inf)
        return masked.argmin(-1), valid.any(-1)

    def _solve(
        self, starts: torch.Tensor, targets: torch.Tensor, frame: torch.Tensor, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One Broyden call: (m, 3) starts and targets, (m,) frame of each, (B, J, 12) transforms →
        roots (m, 3) (starts where invalid) and valid (m,)."""

        def residual(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            return self._skin_flat(x, frame[index], rows) - targets[index]

        start_jac = pointwise_jacobian(lambda x: self._skin_flat(x, frame, rows), starts)
        result = broyden(residual, starts, safe_inverse(start_jac), self.max_steps, self.tol, self.diverge)
        valid = result.valid & self.inside(result.x)
        return torch.where(valid[:, None], result.x, starts), valid

    def _skin_flat(self, x: torch.Tensor, frame: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Eq. 5 for points of different frames: x (m, 3), frame (m,) long, rows (B, J, 12) the
        transforms' top rows → (m, 3). The weights blend every frame's transforms in one matrix
        product, (m, J) × (J, B·12), and each point keeps its own frame's blend."""
        weights = self.skinning(x[None])[0]  # (m, J)
        frames, bones = rows.shape[:2]
        blends = (weights @ rows.transpose(0, 1).reshape(bones, frames * 12)).view(-1, frames, 12)
        blend = blends.gather(1, frame[:, None, None].expand(-1, 1, 12))[:, 0].view(-1, 3, 4)
        return (blend[..., :3] @ x[..., None])[..., 0] + blend[..., 3]


def take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pick one candidate per point: values (B, N, K, …), index (B, N) long → (B, N, …)."""
    expanded = index.view(*index.shape, 1, *([1] * (values.dim() - 3))).expand(
        *index.shape, 1, *values.shape[3:]
    )
    return values.gather(2, expanded).squeeze(2)


def pointwise_jacobian(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Jacobians of a pointwise map R³ → R³ (each output point depends on its own input only).

    Three backward passes of the summed output coordinates give the three rows exactly for all
    points at once. Works under ``torch.no_grad()``; the result is detached.

    Args:
        fn: (…, 3) → (…, 3); x: (…, 3).
    Returns:
        (…, 3, 3), [..., i, j] = ∂fn_i/∂x_j.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y = fn(x)
        rows = [torch.autograd.grad(y[..., i].sum(), x, retain_graph=i < 2)[0] for i in range(3)]
    return torch.stack(rows, -2)


def safe_inverse(matrices: torch.Tensor) -> torch.Tensor:
    """Inverses of (…, 3, 3) matrices; the identity where a matrix is singular or not finite."""
    inverse, info = torch.linalg.inv_ex(matrices)
    good = (info == 0) & torch.isfinite(inverse).flatten(-2).all(-1)
    eye = torch.eye(3, dtype=matrices.dtype, device=matrices.device)
    return torch.where(good[..., None, None], inverse, eye)
