"""Correspondence search: posed points per second with K = 9 candidates for N = 10,000 points.

A realistic set-up: a SkinningNetwork(hidden=128, layers=4) is pretrained on the anny body's
canonical vertices and skinning weights (normalised to the canonical body's box plus 15 cm, as
the avatar does); bone transforms are canonical→posed for a deep squat and a walking stride of
the built-in motions; posed points are canonical surface points (random vertices + 1 cm noise,
like training samples near the surface) skinned by the network. Measured per pose and device:
the search alone (no gradients) and the search with implicit gradients plus a backward pass, the
share of points with a valid candidate, the share whose canonical point was recovered to 1e-4 m,
and the mean number of valid candidates per point. On the CPU both with one thread and with
torch's default; the machine's load average is recorded, since on a shared machine the default
threads wait for each other at every small tensor operation of the solver loop.
"""

from __future__ import annotations

import os
import time

import torch

from rgbd2avatar.avatar.deformer import ForwardDeformer
from rgbd2avatar.avatar.networks import SkinningNetwork, pretrain_skinning
from rgbd2avatar.devices import synchronize
from rgbd2avatar.motion import builtin_motion

POINTS = 10_000
PADDING = 0.15
"""Metres around the canonical body's box in the networks' normalisation (as the avatar)."""
PRETRAIN_STEPS = 300
POSES = {"squat_bottom": ("squat", 60), "walk_stride": ("walk", 12)}
"""Benchmark pose → (built-in motion, frame)."""


def skinning_network(points: torch.Tensor, weights: torch.Tensor) -> tuple[SkinningNetwork, dict]:
    """A skinning network fitted to the body's canonical weights, and the fit's numbers."""
    low, high = points.min(0).values - PADDING, points.max(0).values + PADDING
    center, scale = ((low + high) / 2).tolist(), float((high - low).max()) / 2
    torch.manual_seed(0)
    net = SkinningNetwork(hidden=128, layers=4, center=center, scale=scale)
    start = time.perf_counter()
    loss = pretrain_skinning(
        net, points, weights, steps=PRETRAIN_STEPS, lr=1e-3, generator=torch.Generator().manual_seed(0)
    )
    seconds = time.perf_counter() - start
    with torch.no_grad():
        agreement = float((net(points[None])[0].argmax(-1) == weights.argmax(-1)).float().mean())
    return net, {
        "pretrain_steps": PRETRAIN_STEPS,
        "pretrain_s": seconds,
        "final_kl": loss,
        "dominant_bone_agreement": agreement,
    }


def measure(deformer: ForwardDeformer, xc: torch.Tensor, tfs: torch.Tensor) -> dict:
    """Search throughput and quality for canonical points xc (1, N, 3) under transforms tfs."""
    device = xc.device
    with torch.no_grad():
        xd = deformer.skin(xc, tfs)
    deformer.search(xd[:, :256], tfs)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    candidates, valid = deformer.search(xd, tfs)
    synchronize(device)
    search_s = time.perf_counter() - start
    recovered = (((candidates - xc[:, :, None]).norm(dim=-1) < 1e-4) & valid).any(-1)

    xd_grad = xd.clone().requires_grad_(True)
    start = time.perf_counter()
    attached, valid_g = deformer.correspondences(xd_grad, tfs)
    (attached * valid_g[..., None]).sum().backward()
    synchronize(device)
    with_grad_s = time.perf_counter() - start
    points = xc.shape[1]
    return {
        "search_points_per_s": points / search_s,
        "search_s": search_s,
        "with_implicit_gradients_points_per_s": points / with_grad_s,
        "any_valid": float(valid.any(-1).float().mean()),
        "recovered_1e-4m": float(recovered.float().mean()),
        "valid_candidates_per_point": float(valid.float().sum(-1).mean()),
    }


def benchmark_inputs() -> tuple[SkinningNetwork, dict, torch.Tensor, dict[str, torch.Tensor]]:
    """The pretrained skinning network and its fit's numbers, the (1, N, 3) canonical points and
    the (1, J, 4, 4) bone transforms of each benchmark pose (CPU)."""
    from rgbd2avatar.body import load_body_model

    body = load_body_model("anny")
    with torch.no_grad():
        canonical = body.canonical().vertices[0]
    net, fit = skinning_network(canonical, body.weights)
    gen = torch.Generator().manual_seed(1)
    rows = torch.randint(len(canonical), (POINTS,), generator=gen)
    xc = (canonical[rows] + 0.01 * torch.randn(POINTS, 3, generator=gen))[None]
    transforms = {}
    for name, (motion, frame) in POSES.items():
        pose = torch.from_numpy(builtin_motion(motion).poses[frame : frame + 1])
        with torch.no_grad():
            transforms[name] = body.canonical_to_posed(pose)
    return net, fit, xc, transforms


def run() -> dict:
    default_threads = torch.get_num_threads()
    results: dict = {"points": POINTS, "candidates": 9, "load_average_start": os.getloadavg()[0]}
    net, fit, xc, transforms = benchmark_inputs()
    results.update(fit)
    for name, tfs in transforms.items():
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            results[f"{name}_cpu_{threads}_threads"] = measure(ForwardDeformer(net), xc, tfs)
        torch.set_num_threads(default_threads)
        if torch.cuda.is_available():
            deformer = ForwardDeformer(net).to("cuda")
            results[f"{name}_cuda"] = measure(deformer, xc.cuda(), tfs.cuda())
            net.cpu()
    results["load_average_end"] = os.getloadavg()[0]
    results["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return results
