"""The avatar's canonical networks: encoding, pose features, SDF geometric init and gradients,
skinning weights, normalisation, dtype/device handling and skinning pretraining."""

from __future__ import annotations

import math

import pytest
import torch

from rgbd2avatar.avatar.networks import (
    PositionalEncoding,
    SDFNetwork,
    SkinningNetwork,
    pose_features,
    pretrain_skinning,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
pytestmark = pytest.mark.usefixtures("one_thread")


def unit_directions(count: int, generator: torch.Generator) -> torch.Tensor:
    d = torch.randn(count, 3, generator=generator)
    return d / d.norm(dim=-1, keepdim=True)


def test_positional_encoding_layout_and_values():
    encoding = PositionalEncoding(3)
    x = torch.tensor([[0.1, -0.2, 0.3], [0.5, 0.0, -1.0]])
    out = encoding(x)
    assert encoding.out_dim == 3 + 6 * 3 == out.shape[-1]
    assert torch.equal(out[:, :3], x)
    for k in range(3):
        angles = 2.0**k * math.pi * x
        assert torch.allclose(out[:, 3 + 3 * k : 6 + 3 * k], angles.sin(), atol=1e-6)
        assert torch.allclose(out[:, 12 + 3 * k : 15 + 3 * k], angles.cos(), atol=1e-6)
    assert torch.equal(PositionalEncoding(0)(x), x)
    assert PositionalEncoding(2)(torch.zeros(4, 5, 3)).shape == (4, 5, 15)


def test_pose_features_drop_the_root():
    pose = torch.randn(2, 72)
    features = pose_features(pose)
    assert features.shape == (2, 69)
    assert torch.allclose(features, pose[:, 3:] / math.pi)


def test_sdf_geometric_init_is_a_sphere_in_metres():
    """Initial SDF ≈ ‖x − c‖ − r (metres) near the sphere, with a normalisation that is not identity."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    scale, radius = 0.9, 0.45
    sphere_center = torch.tensor([0.1, -0.3, 0.05])
    net = SDFNetwork(
        init_radius=radius, init_center=tuple(sphere_center.tolist()), center=(0.05, -0.2, 0.0), scale=scale
    )
    distance = radius * (0.9 + 0.2 * torch.rand(1, 3000, 1, generator=gen))
    x = sphere_center + unit_directions(3000, gen)[None] * distance
    with torch.no_grad():
        sdf = net(x, torch.randn(1, 69, generator=gen))
    error = (sdf - (distance[..., 0] - radius)).abs()
    assert error.mean() < 1e-2 * scale
    assert error.max() < 3e-2 * scale
    with torch.no_grad():
        inside = net(sphere_center.expand(1, 1, 3), torch.zeros(1, 69))
        outside = net(sphere_center + torch.tensor([[[2 * radius, 0.0, 0.0]]]), torch.zeros(1, 69))
    assert inside.item() < -0.8 * radius and outside.item() > 0.8 * radius


def test_sdf_init_does_not_depend_on_pose():
    torch.manual_seed(0)
    net = SDFNetwork(hidden=64, layers=4, skip=(2,))
    x = torch.rand(3, 50, 3) - 0.5
    with torch.no_grad():
        a = net(x, torch.randn(3, 69))
        b = net(x, torch.randn(3, 69))
    assert torch.equal(a, b)


def test_sdf_without_pose_conditioning_ignores_the_pose():
    net = SDFNetwork(hidden=64, layers=3, skip=(2,), pose_embed=0)
    x = torch.rand(2, 10, 3)
    assert torch.equal(net(x, torch.zeros(2, 69)), net(x, torch.ones(2, 69)))
    assert net.pose_embedding is None


def test_sdf_gradient_matches_finite_differences():
    torch.manual_seed(0)
    net = SDFNetwork(hidden=64, layers=4, skip=(2,), num_freqs=4, scale=0.8).double()
    with torch.no_grad():  # move away from the init so that the positional encoding matters
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.rand(2, 20, 3, dtype=torch.float64) - 0.5
    pose = torch.randn(2, 69, dtype=torch.float64)
    sdf, grad = net.gradient(x, pose, create_graph=False)
    assert sdf.shape == (2, 20) and grad.shape == (2, 20, 3)
    h = 1e-6
    for axis in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[axis] = h
        with torch.no_grad():
            numeric = (net(x + step, pose) - net(x - step, pose)) / (2 * h)
        assert torch.allclose(grad[..., axis], numeric, rtol=1e-6, atol=1e-7)


def test_sdf_gradient_keeps_graphs():
    """Eikonal-style losses reach the parameters, and gradients flow through an x that requires grad."""
    net = SDFNetwork(hidden=32, layers=2, skip=(1,), num_freqs=2)
    leaf = torch.rand(1, 8, 3, requires_grad=True)
    x = leaf * 1.0  # a non-leaf, like a root carrying implicit gradients
    sdf, grad = net.gradient(x, torch.zeros(1, 69))
    loss = ((grad.norm(dim=-1) - 1) ** 2).mean() + sdf.abs().mean()
    loss.backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0
    assert net.linears[0].weight.grad is not None
    with torch.no_grad():
        sdf_ng, grad_ng = net.gradient(torch.rand(1, 8, 3), torch.zeros(1, 69), create_graph=False)
    assert not sdf_ng.requires_grad and not grad_ng.requires_grad and grad_ng.abs().sum() > 0


@pytest.mark.parametrize("device", DEVICES)
def test_skinning_weights_are_a_partition_of_unity(device):
    net = SkinningNetwork(hidden=32, layers=2, num_freqs=2).to(device)
    weights = net(torch.randn(2, 100, 3, device=device))
    assert weights.shape == (2, 100, 24) and weights.device.type == device
    assert (weights >= 0).all()
    assert torch.allclose(weights.sum(-1), torch.ones(2, 100, device=device), atol=1e-5)


def test_normalisation_is_the_only_effect_of_center_and_scale():
    torch.manual_seed(0)
    plain = SkinningNetwork(hidden=16, layers=2)
    center, scale = torch.tensor([0.2, -0.1, 0.3]), 0.7
    moved = SkinningNetwork(hidden=16, layers=2, center=tuple(center.tolist()), scale=scale)
    moved.mlp.load_state_dict(plain.mlp.state_dict())
    u = torch.rand(1, 30, 3) * 2 - 1
    assert torch.allclose(moved(center + scale * u), plain(u), atol=1e-6)
    assert set(moved.state_dict()) >= {"center", "scale"}


@pytest.mark.parametrize("device", DEVICES)
def test_networks_follow_dtype_and_device(device):
    sdf = SDFNetwork(hidden=32, layers=2, skip=(1,), num_freqs=2).to(device, torch.float64)
    skin = SkinningNetwork(hidden=16, layers=2, num_freqs=1).to(device, torch.float64)
    x = torch.rand(1, 5, 3, dtype=torch.float64, device=device)
    assert sdf(x, torch.zeros(1, 69, dtype=torch.float64, device=device)).dtype == torch.float64
    assert skin(x).dtype == torch.float64 and skin(x).device.type == device


def test_pretrain_skinning_learns_a_weight_table():
    """A small fake body: three bones owning the thirds of a bar, blended near the borders."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(600, 3, generator=gen) * torch.tensor([1.8, 0.2, 0.2]) - torch.tensor([0.9, 0.1, 0.1])
    centers = torch.tensor([-0.6, 0.0, 0.6])
    target = torch.softmax(-((points[:, :1] - centers) ** 2) / 0.02, -1)
    net = SkinningNetwork(num_bones=3, hidden=32, layers=2)
    with torch.no_grad():
        before = float((target * (target.clamp_min(1e-12).log() - net(points).log())).sum(-1).mean())
    after = pretrain_skinning(net, points, target, steps=100, lr=5e-3, batch=128, generator=gen)
    assert after < 0.2 * before
    with torch.no_grad():
        agreement = (net(points).argmax(-1) == target.argmax(-1)).float().mean()
    assert agreement > 0.95
