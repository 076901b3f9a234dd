"""PINA's objective (Eq. 9–12) and our two regularisers, one function per term.

Every term is a mean over the points it covers, so the weights of :class:`~fitting.pina.config.
LossWeights` do not depend on how many points a step draws. Points whose correspondence search
found no valid candidate (``found`` False) are left out of the posed-space terms.

Shapes: B frames, N points, J bones.
"""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` holds (0 when it never does): (B, N), (B, N) → ()."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def on_surface_sdf(sdf: torch.Tensor, found: torch.Tensor) -> torch.Tensor:
    """L_sdf (Eq. 10): mean |SDF(x_d)| of observed points."""
    return masked_mean(sdf.abs(), found)


def normal_agreement(normals: torch.Tensor, observed: torch.Tensor, found: torch.Tensor) -> torch.Tensor:
    """L_n (Eq. 10): mean ‖n_obs − n_d‖ of observed points; normals (B, N, 3) unit."""
    return masked_mean((observed - normals).norm(dim=-1), found)


def off_surface(sdf: torch.Tensor, body_sdf: torch.Tensor, found: torch.Tensor) -> torch.Tensor:
    """L_off (Eq. 11): mean |SDF(x_d) − SDF_body(x_d)| of points away from the fitted body."""
    return masked_mean((sdf - body_sdf).abs(), found)


def eikonal(gradients: torch.Tensor) -> torch.Tensor:
    """L_eik (Eq. 12): mean (‖∇f_sdf(x_c)‖ − 1)² of canonical points; gradients (..., 3)."""
    return ((gradients.norm(dim=-1) - 1.0) ** 2).mean()


def skinning_anchor(log_weights: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean KL(w_body ‖ f_w) of skinning weights: log f_w (..., J), w_body (..., J) → ().

    KL on the log-softmax trains a softmax field much faster than a distance between weights
    (whose gradient vanishes once a weight saturates)."""
    return (target * (target.clamp_min(1e-12).log() - log_weights)).sum(-1).mean()


def canonical_sdf_fit(sdf: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pretraining: mean |f_sdf(x_c) − SDF_body(x_c)| in canonical space."""
    return (sdf - target).abs().mean()


def pose_change(poses: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """Mean squared change of refined poses from the body fit: (B, 72), (B, 72) → ()."""
    return ((poses - initial) ** 2).mean()
