"""Meshing: MISE (32 → 256) against evaluating the dense 256³ grid, on a body-like neural SDF.

The SDF: a 1.8 m person in an A-pose made of 10 capsules (torso, head, upper and lower arms and
legs), plus a small random MLP (3 → 128 → 128 → 128 → 1, softplus β = 100 as in IGR-style SDF
networks, seed 0) whose output, squashed to ±1 cm, perturbs the surface — so each evaluation costs
about what a small neural SDF costs, and the function is no longer an exact distance. Box:
2 × 2.2 × 1 m (7.8 × 8.6 × 3.9 mm cells at 256). PINA's own SDF network (8 layers of 256) costs
several times more per point; ``sdf_us_per_point`` and ``*_sdf_seconds`` let one scale the
results to it (the grid bookkeeping is ``*_seconds`` minus ``*_sdf_seconds``).

Reported for each method: SDF points evaluated, total seconds, seconds inside the SDF, vertex
and triangle counts; then the distances between the two meshes (each mesh's vertices to the
other's surface, both ways: the max is the vertex-sampled Hausdorff distance), on the CPU with
torch's default threads, and on CUDA too when present. About 4 minutes on a 2-core CPU, nearly
all of it the dense grid.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from rgbd2avatar.devices import synchronize
from rgbd2avatar.geometry import MeshQuery
from rgbd2avatar.meshing import MeshResult, dense_grid_mesh, extract_mesh

RESOLUTION = 256
INITIAL_RESOLUTION = 32
BOUNDS_MIN = np.array([-1.0, -0.1, -0.5])
BOUNDS_MAX = np.array([1.0, 2.1, 0.5])
PERTURBATION = 0.01
"""Metres: the MLP's output is squashed to ± this."""

SEGMENTS = np.array(  # (C, 2, 3) capsule end points, metres, feet at y = 0
    [
        [(0.0, 0.95, 0.0), (0.0, 1.40, 0.0)],  # torso
        [(0.0, 1.60, 0.0), (0.0, 1.68, 0.02)],  # head
        [(-0.10, 0.92, 0.0), (-0.16, 0.50, 0.02)],  # thighs
        [(0.10, 0.92, 0.0), (0.16, 0.50, 0.02)],
        [(-0.16, 0.50, 0.02), (-0.22, 0.08, 0.0)],  # shins
        [(0.16, 0.50, 0.02), (0.22, 0.08, 0.0)],
        [(-0.12, 1.38, 0.0), (-0.45, 1.18, 0.0)],  # upper arms
        [(0.12, 1.38, 0.0), (0.45, 1.18, 0.0)],
        [(-0.45, 1.18, 0.0), (-0.68, 0.98, 0.05)],  # forearms
        [(0.45, 1.18, 0.0), (0.68, 0.98, 0.05)],
    ]
)
RADII = np.array([0.14, 0.10, 0.075, 0.075, 0.055, 0.055, 0.045, 0.045, 0.035, 0.035])


class BodySdf(torch.nn.Module):
    """Union of capsules plus a bounded random-MLP perturbation: (N, 3) points → (N,) distances."""

    def __init__(self, hidden: int = 128, seed: int = 0) -> None:
        super().__init__()
        self.register_buffer("starts", torch.tensor(SEGMENTS[:, 0], dtype=torch.float32))
        self.register_buffer("axes", torch.tensor(SEGMENTS[:, 1] - SEGMENTS[:, 0], dtype=torch.float32))
        self.register_buffer("radii", torch.tensor(RADII, dtype=torch.float32))
        widths = [3, hidden, hidden, hidden]
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            layers = [
                module
                for n_in, n_out in zip(widths[:-1], widths[1:], strict=True)
                for module in (torch.nn.Linear(n_in, n_out), torch.nn.Softplus(beta=100))
            ]
            self.mlp = torch.nn.Sequential(*layers, torch.nn.Linear(hidden, 1))

    def capsules(self, points: torch.Tensor) -> torch.Tensor:
        """(N,) distance to the union of the capsules (exact outside)."""
        offsets = points[:, None] - self.starts  # (N, C, 3)
        t = ((offsets * self.axes).sum(-1) / (self.axes * self.axes).sum(-1)).clamp(0.0, 1.0)  # (N, C)
        to_axis = offsets - t[..., None] * self.axes
        return (torch.linalg.vector_norm(to_axis, dim=-1) - self.radii).amin(1)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) points → (N,) capsule distances moved by at most PERTURBATION."""
        return self.capsules(points) + PERTURBATION * torch.tanh(self.mlp(points)[:, 0])


class TimedSdf:
    """Wraps an SDF to add up the seconds spent inside it."""

    def __init__(self, sdf: torch.nn.Module, device: torch.device) -> None:
        self.sdf, self.device, self.seconds = sdf, device, 0.0

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        values = self.sdf(points)
        synchronize(self.device)
        self.seconds += time.perf_counter() - start
        return values


def _mesh_distances(a: MeshResult, b: MeshResult) -> dict[str, float]:
    """Distances (metres) from each mesh's vertices to the other mesh's surface, both ways pooled."""
    a_to_b = MeshQuery(b.vertices, b.faces).closest_points(a.vertices).distances
    b_to_a = MeshQuery(a.vertices, a.faces).closest_points(b.vertices).distances
    both = np.concatenate([a_to_b, b_to_a])
    return {"max_distance_m": float(both.max()), "mean_distance_m": float(both.mean())}


def _summary(name: str, result: MeshResult, sdf: TimedSdf) -> dict[str, float | int]:
    """One method's costs and mesh size, keys prefixed by ``name``."""
    return {
        f"{name}_evaluations": result.evaluations,
        f"{name}_seconds": result.seconds,
        f"{name}_sdf_seconds": sdf.seconds,
        f"{name}_vertices": len(result.vertices),
        f"{name}_faces": len(result.faces),
    }


def compare(device: torch.device) -> dict[str, float | int]:
    """MISE and the dense grid on one device, and how far apart their meshes are."""
    sdf = BodySdf().to(device)
    timed_mise, timed_dense = TimedSdf(sdf, device), TimedSdf(sdf, device)
    mise = extract_mesh(timed_mise, BOUNDS_MIN, BOUNDS_MAX, RESOLUTION, INITIAL_RESOLUTION, device=device)
    dense = dense_grid_mesh(timed_dense, BOUNDS_MIN, BOUNDS_MAX, RESOLUTION, device=device)
    return {
        **_summary("mise", mise, timed_mise),
        **_summary("dense", dense, timed_dense),
        "evaluation_ratio": mise.evaluations / dense.evaluations,
        "speedup": dense.seconds / mise.seconds,
        "sdf_us_per_point": 1e6 * timed_dense.seconds / dense.evaluations,
        **_mesh_distances(mise, dense),
    }


def run() -> dict:
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    results: dict = {
        "resolution": RESOLUTION,
        "initial_resolution": INITIAL_RESOLUTION,
        "cell_size_m": float(np.max((BOUNDS_MAX - BOUNDS_MIN) / RESOLUTION)),
        "torch_threads": torch.get_num_threads(),
    }
    for device in devices:
        results.update({f"{key}_{device.type}": value for key, value in compare(device).items()})
    return results
