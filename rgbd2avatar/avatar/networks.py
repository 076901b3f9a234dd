"""The avatar's canonical-space networks: the pose-conditioned SDF f_sdf (PINA Eq. 1–3) and the
skinning field f_w (Eq. 4), both MLPs on (positionally encoded) canonical points.

Both networks see canonical points in normalised coordinates (x − center) / scale, so that the
canonical body (≈ 1.8 m tall) spans roughly [−1, 1]³ whatever its size and placement; the SDF is
returned in metres.

Shapes: B frames (batch), N points, J bones (24), P pose features (69), V vertices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from rgbd2avatar.body.skeleton import NUM_JOINTS, POSE_DIM

POSE_FEATURES = POSE_DIM - 3
"""P: the axis-angles of the 23 non-root joints."""
SOFTPLUS_BETA = 100.0
"""Sharpness of the Softplus activations: ReLU-like, yet smooth enough for gradients of gradients."""
SOFTPLUS_FLOOR = -20.0
"""β·x below which :class:`Softplus` clamps its input (softplus there is < e⁻²⁰ / β)."""

CALIBRATION_DIRECTIONS = 512
"""Directions (a Fibonacci sphere) of the points the initial sphere is calibrated on."""
CALIBRATION_SHELLS = 8
"""Radii (0.25–2 sphere radii) of the calibration points."""
CALIBRATION_RIDGE = 1e-4
"""Ridge weight of the calibration, relative to the mean diagonal of the normal equations."""


def pose_features(pose: torch.Tensor) -> torch.Tensor:
    """The SDF's pose condition (PINA Eq. 1): the 23 non-root joints' axis-angles divided by π.

    The global root rotation is left out: canonical space has no root orientation, so turning the
    whole person must not change the canonical shape.

    Args:
        pose: (B, 72) SMPL-layout axis-angle poses.
    Returns:
        (B, 69) features, roughly in [−1, 1].
    """
    return pose[..., 3:] / math.pi


class PositionalEncoding(nn.Module):
    """x ↦ [x, sin(2^k π x), cos(2^k π x)] for k = 0 … L−1 (NeRF's encoding, L = ``num_freqs``).

    The output is ordered [x (3), sines (3L), cosines (3L)], the sines and cosines frequency-major:
    (…, 3) → (…, 3 + 6L). ``num_freqs = 0`` is the identity.
    """

    def __init__(self, num_freqs: int) -> None:
        super().__init__()
        self.num_freqs = num_freqs
        self.out_dim = 3 + 6 * num_freqs
        freqs = math.pi * 2.0 ** torch.arange(num_freqs, dtype=torch.float32)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = (self.freqs[:, None] * x[..., None, :]).flatten(-2)  # (..., 3L)
        return torch.cat([x, angles.sin(), angles.cos()], -1)


class Softplus(nn.Module):
    """Softplus(β): x ↦ log(1 + e^{βx}) / β, with the input clamped at ``SOFTPLUS_FLOOR`` / β.

    Below the clamp softplus is < e⁻²⁰/β (2·10⁻¹¹ for β = 100) and its slope < e⁻²⁰, so the clamp
    changes nothing measurable; it keeps e^{βx} out of the subnormal floats that make the CPU
    kernels several times slower (the activations dominate the networks' cost on a CPU).
    """

    def __init__(self, beta: float = SOFTPLUS_BETA) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(x.clamp_min(SOFTPLUS_FLOOR / self.beta), beta=self.beta)


class CanonicalField(nn.Module):
    """Base of the canonical networks: holds the normalisation x ↦ (x − center) / scale.

    Buffers: ``center`` (3,) in metres, ``scale`` () metres per normalised unit.
    """

    def __init__(self, center: Sequence[float] = (0.0, 0.0, 0.0), scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("center", torch.tensor(center, dtype=torch.float32).reshape(3))
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float32))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Canonical points in the networks' coordinates: (…, 3) metres → (…, 3)."""
        return (x - self.center) / self.scale


class SDFNetwork(CanonicalField):
    """f_sdf(x_c, p): the pose-conditioned canonical signed distance field (PINA Eq. 1), in metres.

    An MLP (IDR/SAL style) on [PE(x̂), E p], x̂ = (x_c − center) / scale the normalised point, PE
    the positional encoding and E a linear embedding of the pose features; Softplus(β = 100)
    activations, the input re-injected (concatenated, then scaled by 1/√2) before the ``skip``
    layers. Geometric initialisation (:func:`geometric_init`) makes the initial field the signed
    distance to a sphere of ``init_radius`` metres around ``init_center``, positive outside, for
    every pose.

    Args:
        pose_dim: P, pose features (:func:`pose_features`).
        hidden, layers: width and number of hidden layers (``layers + 1`` linear layers in all).
        num_freqs: positional-encoding frequencies.
        pose_embed: size of the pose embedding; 0 for a pose-independent SDF (``pose_feat`` is
            then ignored).
        skip: indices of the linear layers whose input is concatenated with the network input.
        init_radius, init_center: the initial sphere, metres.
        center, scale: the normalisation (metres).
    """

    def __init__(
        self,
        pose_dim: int = POSE_FEATURES,
        hidden: int = 256,
        layers: int = 8,
        num_freqs: int = 6,
        pose_embed: int = 8,
        skip: Sequence[int] = (4,),
        init_radius: float = 0.5,
        init_center: Sequence[float] = (0.0, 0.0, 0.0),
        center: Sequence[float] = (0.0, 0.0, 0.0),
        scale: float = 1.0,
    ) -> None:
        super().__init__(center, scale)
        self.encoding = PositionalEncoding(num_freqs)
        self.pose_embedding = nn.Linear(pose_dim, pose_embed) if pose_embed > 0 else None
        self.in_dim = self.encoding.out_dim + pose_embed
        self.skip = tuple(skip)
        dims = [self.in_dim] + [hidden] * layers + [1]
        if any(not 0 < s <= layers for s in self.skip) or hidden <= self.in_dim:
            raise ValueError(
                f"skip layers must lie in 1..{layers} and hidden exceed the input ({self.in_dim})"
            )
        self.linears = nn.ModuleList(
            nn.Linear(dims[i], dims[i + 1] - (self.in_dim if i + 1 in self.skip else 0))
            for i in range(layers + 1)
        )
        self.activation = Softplus()
        center_n = (torch.tensor(init_center, dtype=torch.float32) - self.center) / self.scale
        geometric_init(self.linears, self.skip, init_radius / float(scale), center_n)
        self.calibrate_sphere(init_radius / float(scale), center_n)

    def network_input(self, x: torch.Tensor, pose_feat: torch.Tensor) -> torch.Tensor:
        """[PE(x̂), E p]: (B, N, 3), (B, P) → (B, N, in_dim)."""
        encoded = self.encoding(self.normalise(x))
        if self.pose_embedding is None:
            return encoded
        embedded = self.pose_embedding(pose_feat)[:, None].expand(*encoded.shape[:-1], -1)
        return torch.cat([encoded, embedded], -1)

    def forward(self, x: torch.Tensor, pose_feat: torch.Tensor) -> torch.Tensor:
        """Signed distances in metres.

        Args:
            x: (B, N, 3) canonical points (metres); pose_feat: (B, P) pose features.
        Returns:
            (B, N) SDF values.
        """
        features = self.hidden_features(self.network_input(x, pose_feat))
        return self.linears[-1](features)[..., 0] * self.scale

    def hidden_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activations: (…, in_dim) network inputs → (…, hidden)."""
        h = inputs
        for i, linear in enumerate(self.linears[:-1]):
            if i in self.skip:
                h = torch.cat([h, inputs], -1) / math.sqrt(2.0)
            h = self.activation(linear(h))
        return h

    @torch.no_grad()
    def calibrate_sphere(self, radius: float, center: torch.Tensor) -> None:
        """Refit the last layer so that the initial field is ‖x̂ − center‖ − radius more exactly.

        The random geometric initialisation alone gives a lumpy sphere: ‖x̂‖ times a factor that
        varies with the direction by 10–20 % (random features, and Softplus's offset at small
        activations). Ridge regression of the last layer (weights and bias) on the hidden
        features at fixed points on shells of 0.25–2 radii, pulled towards the random
        initialisation, brings the error near the sphere to ≈ 1 % of the radius on average and a
        few % at most (width 256).

        Args:
            radius: sphere radius, normalised units; center: (3,) its centre, normalised units.
        """
        shells = radius * torch.linspace(0.25, 2.0, CALIBRATION_SHELLS)
        points = center + (fibonacci_sphere(CALIBRATION_DIRECTIONS)[None] * shells[:, None, None]).reshape(
            -1, 3
        )
        no_pose = points.new_zeros(len(points), self.in_dim - self.encoding.out_dim)  # zero weights at init
        inputs = torch.cat([self.encoding(points), no_pose], -1)
        features = self.hidden_features(inputs).double()
        design = torch.cat([features, torch.ones_like(features[:, :1])], 1)  # (Q, hidden + 1)
        target = ((points - center).norm(dim=-1) - radius).double()
        last = self.linears[-1]
        prior = torch.cat([last.weight[0], last.bias]).double()
        normal = design.T @ design
        ridge = CALIBRATION_RIDGE * normal.diagonal().mean()
        eye = torch.eye(len(normal), dtype=normal.dtype)
        solution = torch.linalg.solve(normal + ridge * eye, design.T @ target + ridge * prior)
        last.weight.copy_(solution[None, :-1])
        last.bias.copy_(solution[-1:])

    def gradient(
        self, x: torch.Tensor, pose_feat: torch.Tensor, create_graph: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SDF values and their spatial gradients ∇_x f_sdf (the canonical normals, Eq. 3).

        Works inside ``torch.no_grad()`` too. When ``x`` already requires grad (e.g. a root from
        the deformer carrying implicit gradients) the gradient is taken with respect to it and
        the graph through it is kept.

        Args:
            x: (B, N, 3) canonical points; pose_feat: (B, P).
            create_graph: keep the graph of both results for training (Eikonal and normal
                losses); False returns both detached (inference).
        Returns:
            sdf (B, N) and grad (B, N, 3).
        """
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            sdf = self(x, pose_feat)
            (grad,) = torch.autograd.grad(sdf.sum(), x, create_graph=create_graph)
        if not create_graph:
            return sdf.detach(), grad.detach()
        return sdf, grad


def geometric_init(
    linears: Sequence[nn.Linear], skip: Sequence[int], radius: float, center: torch.Tensor
) -> None:
    """IGR/SAL geometric initialisation: the MLP starts as ≈ ‖x̂ − center‖ − radius.

    Hidden layers get weights N(0, 2 / fan_out) and zero biases, the last layer weights
    N(√π / √fan_in, 1e-4) and bias −radius (SAL, Atzmon & Lipman 2020). As in IDR, the first layer
    and the skip layers see only the 3 point coordinates of the input at first: their weights on
    the positional-encoding sines/cosines and on the pose embedding are zero, so the initial field
    is smooth and pose-independent. The sphere is moved to ``center`` through the biases of the
    layers that see the coordinates.

    Args:
        linears: the MLP's linear layers (last one with one output).
        skip: indices of the layers whose input ends with the re-injected network input.
        radius: sphere radius in normalised units; center: (3,) sphere centre, normalised units.
    """
    in_dim = linears[0].in_features
    with torch.no_grad():
        for i, linear in enumerate(linears):
            if i == len(linears) - 1:
                nn.init.normal_(linear.weight, mean=math.sqrt(math.pi / linear.in_features), std=1e-4)
                nn.init.constant_(linear.bias, -radius)
                continue
            nn.init.normal_(linear.weight, 0.0, math.sqrt(2.0 / linear.out_features))
            nn.init.zeros_(linear.bias)
            if i == 0:
                linear.weight[:, 3:] = 0.0
                linear.bias.copy_(-linear.weight[:, :3] @ center)
            elif i in skip:
                start = linear.in_features - in_dim
                linear.weight[:, start + 3 :] = 0.0
                linear.bias.copy_(-linear.weight[:, start : start + 3] @ center / math.sqrt(2.0))


class SkinningNetwork(CanonicalField):
    """f_w(x_c): the canonical skinning field (PINA Eq. 4), weights via a softmax over J bones.

    A small MLP (it runs at every Broyden iteration of the correspondence search) on the
    normalised, optionally encoded point; Softplus(β = 100) activations; weights =
    softmax(logits / temperature), non-negative and summing to 1. A small temperature (SNARF's
    factor 20 is ``temperature = 0.05``) lets the field be nearly rigid within a bone's region.

    Args:
        num_bones: J.
        hidden, layers: width and number of hidden layers.
        num_freqs: positional-encoding frequencies (0: the plain point, the smoothest field).
        temperature: softmax temperature.
        center, scale: the normalisation (metres).
    """

    def __init__(
        self,
        num_bones: int = NUM_JOINTS,
        hidden: int = 128,
        layers: int = 4,
        num_freqs: int = 0,
        temperature: float = 0.05,
        center: Sequence[float] = (0.0, 0.0, 0.0),
        scale: float = 1.0,
    ) -> None:
        super().__init__(center, scale)
        self.encoding = PositionalEncoding(num_freqs)
        self.temperature = temperature
        dims = [self.encoding.out_dim] + [hidden] * layers
        blocks: list[nn.Module] = []
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
            blocks += [nn.Linear(fan_in, fan_out), Softplus()]
        self.mlp = nn.Sequential(*blocks, nn.Linear(dims[-1], num_bones))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Tempered logits: (…, 3) canonical points → (…, J)."""
        return self.mlp(self.encoding(self.normalise(x))) / self.temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Skinning weights: (B, N, 3) canonical points → (B, N, J), rows summing to 1."""
        return torch.softmax(self.logits(x), -1)


def pretrain_skinning(
    net: SkinningNetwork,
    points: torch.Tensor,
    weights: torch.Tensor,
    steps: int = 500,
    lr: float = 1e-3,
    batch: int = 4096,
    generator: torch.Generator | None = None,
) -> float:
    """Fit the skinning field to known weights (e.g. a body model's, at its canonical vertices).

    Minimises the KL divergence KL(w_target ‖ f_w(x)) with Adam on random batches; the networks
    of a fresh avatar start this way so that the correspondence search has a body-like field.

    Args:
        net: the network to train (in place).
        points: (V, 3) canonical points; weights: (V, J) their target weights (rows sum to 1).
        steps, lr, batch: Adam iterations, learning rate and points per step.
        generator: CPU random generator for the batches (reproducible runs).
    Returns:
        The mean KL divergence of the last step.
    """
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    target_log = weights.clamp_min(1e-12).log()
    loss = torch.zeros(())
    for _ in range(steps):
        rows = torch.randint(points.shape[0], (min(batch, points.shape[0]),), generator=generator)
        rows = rows.to(points.device)
        log_pred = torch.log_softmax(net.logits(points[rows]), -1)
        loss = (weights[rows] * (target_log[rows] - log_pred)).sum(-1).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return float(loss.detach())


def fibonacci_sphere(count: int) -> torch.Tensor:
    """Nearly uniform unit directions on the sphere (the Fibonacci lattice): → (count, 3)."""
    index = torch.arange(count, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * index / count
    rho = (1.0 - z * z).sqrt()
    phi = math.pi * (3.0 - math.sqrt(5.0)) * index
    return torch.stack([rho * phi.cos(), rho * phi.sin(), z], -1).float()
