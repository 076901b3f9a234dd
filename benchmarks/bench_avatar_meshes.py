"""Avatar meshes: MISE against the dense grid on an avatar's SDF, and posed meshes fast
(canonical MISE per pose condition + forward skinning) against exact (MISE of the posed SDF by
correspondence search, PINA Sec. 3.3): meshes per second and the distance between the two.

The avatar: the default network sizes (SDF 128 × 6, skinning 64 × 4) after PINA's pretraining
stage on the ``anny`` body (``fitting.pina.trainer.PinaTrainer``, :data:`PRETRAIN_STEPS` steps,
conditioned on frames of the built-in ``capture`` motion): a body-shaped SDF and body-like
skinning, as a fit starts from; a fitted avatar costs the same per evaluation. Poses: frames of
the built-in ``walk`` motion (a lifted knee, swinging arms).

Reported: ``pretrain``: steps and seconds; ``mise_vs_dense``: evaluations and seconds of the
canonical SDF meshed both ways at :data:`DENSE_RESOLUTION` and the vertex-to-surface distances
between the two meshes; per resolution in ``posed``: seconds per mesh fast and exact, the MISE
evaluations of each, and Chamfer-L2 (cm, :func:`rgbd2avatar.metrics.chamfer_l2_cm`) of fast vs
exact and of both against the posed naked body. The exact mesh at 256 (about 5 minutes) is
estimated rather than made (:func:`posed_comparison`). CPU, :data:`THREADS` torch thread; about
3 minutes on a 2-core CPU, half of it the exact mesh at 128.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fitting.pina.config import PinaConfig
from fitting.pina.data import PinaData, canonical_samples
from fitting.pina.trainer import PinaTrainer
from rgbd2avatar.avatar.avatar import Avatar
from rgbd2avatar.avatar.meshes import MESH_BATCH, AvatarMesh, posed_bounds, posed_mesh_exact, posed_mesh_fast
from rgbd2avatar.avatar.networks import pose_features
from rgbd2avatar.body import load_body_model
from rgbd2avatar.body.model import BodyModel
from rgbd2avatar.geometry import MeshQuery
from rgbd2avatar.meshing import dense_grid_mesh, extract_mesh
from rgbd2avatar.metrics import chamfer_l2_cm
from rgbd2avatar.motion import builtin_motion

PRETRAIN_STEPS = 150
DENSE_RESOLUTION = 128
RESOLUTIONS = (128, 256)
EXACT_RESOLUTIONS = (128,)
"""Resolutions whose exact meshes are made; at 256 one takes about 5 minutes on this CPU, so its
cost is estimated (:func:`posed_comparison`)."""
THREADS = 1
"""torch threads: the benchmark machine is shared, and two OpenMP threads lose 2–3× to other
processes there; on an idle 2-core machine two threads are up to twice as fast."""
WALK_FRAMES = (12,)
"""Frames (at 30 fps) of the ``walk`` motion meshed: the left knee high, the arms swinging."""
CHAMFER_SAMPLES = 50_000


def pretrained_avatar(body: BodyModel, steps: int = PRETRAIN_STEPS) -> tuple[Avatar, float]:
    """An avatar of default size after ``steps`` pretraining steps on the canonical body; seconds."""
    shape = body.default_shape
    with torch.no_grad():
        canonical = body.canonical(shape).vertices[0].numpy()
    points, sdf, weights = canonical_samples(
        canonical, body.faces.numpy(), body.weights.numpy(), np.random.default_rng(0)
    )
    capture = builtin_motion("capture", num_frames=8)
    poses, trans = capture.to_torch()
    frames = len(poses)
    empty = torch.zeros(frames, 1, 3)  # pretraining reads only the canonical samples and the poses
    data = PinaData(
        frames=torch.arange(frames), points=empty, normals=empty, counts=torch.ones(frames, dtype=torch.long),
        poses=poses, trans=trans, shape=shape, off_points=empty, off_sdf=torch.zeros(frames, 1),
        canonical_points=torch.from_numpy(points), canonical_sdf=torch.from_numpy(sdf),
        canonical_weights=torch.from_numpy(weights),
    )  # fmt: skip
    start = time.perf_counter()
    trainer = PinaTrainer(body, data, PinaConfig(pretrain_steps=steps, joint_steps=0))
    trainer.run()
    return trainer.avatar.eval(), time.perf_counter() - start


def vertex_distances(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> dict:
    """Mean and max distance (m) of each mesh's vertices to the other's surface, both ways."""
    to_b = MeshQuery(*b).closest_points(a[0]).distances
    to_a = MeshQuery(*a).closest_points(b[0]).distances
    both = np.concatenate([to_b, to_a])
    return {"mean": float(both.mean()), "max": float(both.max())}


def mise_vs_dense(avatar: Avatar) -> dict:
    """The canonical SDF (canonical condition) meshed by MISE and by the dense grid."""
    condition = pose_features(avatar.canonical_condition())

    def sdf(points: torch.Tensor) -> torch.Tensor:
        return avatar.sdf(points[None], condition)[0]

    low, high = avatar.bounds.numpy()
    mise = extract_mesh(sdf, low, high, resolution=DENSE_RESOLUTION, batch_points=MESH_BATCH)
    dense = dense_grid_mesh(sdf, low, high, resolution=DENSE_RESOLUTION, batch_points=MESH_BATCH)
    return {
        "resolution": DENSE_RESOLUTION,
        "mise": {"evaluations": mise.evaluations, "seconds": mise.seconds},
        "dense": {"evaluations": dense.evaluations, "seconds": dense.seconds},
        "distance_m": vertex_distances((mise.vertices, mise.faces), (dense.vertices, dense.faces)),
    }


def posed_comparison(avatar: Avatar, body: BodyModel, resolution: int, exact: bool) -> dict:
    """Fast and exact posed meshes of the walk frames at ``resolution``: timings and distances.

    With ``exact`` False the exact mesh is not made; its evaluations are estimated by MISE of
    the signed distance to the fast mesh over the same posed box (the two surfaces nearly
    coincide, so MISE refines nearly the same cells), and its seconds by that count times
    ``seconds_per_exact_evaluation`` (measured at a lower resolution).
    """
    poses, trans = builtin_motion("walk").to_torch()
    rows: dict[str, list[float]] = {}
    for frame in WALK_FRAMES:
        pose, translation = poses[frame], trans[frame]
        fast, fast_seconds = timed(posed_mesh_fast, avatar, pose, translation, resolution)
        with torch.no_grad():
            naked = (
                body(pose[None], avatar.shape, translation[None]).vertices[0].numpy(),
                body.faces.numpy(),
            )
        values = {
            "fast_seconds": fast_seconds,
            "fast_canonical_seconds": fast.extraction.seconds,
            "fast_evaluations": fast.extraction.evaluations,
            "exact_evaluations_estimate": proxy_evaluations(avatar, fast, pose, translation, resolution),
            "fast_vs_body_cm": chamfer_l2_cm((fast.vertices, fast.faces), naked, CHAMFER_SAMPLES),
        }
        if exact:
            mesh, seconds = timed(posed_mesh_exact, avatar, pose, translation, resolution)
            values |= {
                "exact_seconds": seconds,
                "exact_evaluations": mesh.extraction.evaluations,
                "seconds_per_exact_evaluation": seconds / mesh.extraction.evaluations,
                "exact_vs_body_cm": chamfer_l2_cm((mesh.vertices, mesh.faces), naked, CHAMFER_SAMPLES),
                "fast_vs_exact_cm": chamfer_l2_cm(
                    (fast.vertices, fast.faces), (mesh.vertices, mesh.faces), CHAMFER_SAMPLES
                ),
            }
        for key, value in values.items():
            rows.setdefault(key, []).append(float(value))
    result = {key: float(np.mean(values)) for key, values in rows.items()}
    result["fast_meshes_per_second"] = 1.0 / result["fast_seconds"]
    if exact:
        result["exact_meshes_per_second"] = 1.0 / result["exact_seconds"]
    return result


def proxy_evaluations(
    avatar: Avatar, fast: AvatarMesh, pose: torch.Tensor, trans: torch.Tensor, resolution: int
) -> int:
    """MISE evaluations over the exact mode's posed box of the signed distance to the fast mesh."""
    query = MeshQuery(fast.vertices, fast.faces)

    def sdf(points: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(query.signed_distance(points.numpy()))

    low, high = posed_bounds(avatar, pose, trans)
    return extract_mesh(sdf, low, high, resolution=resolution, batch_points=MESH_BATCH).evaluations


def timed(function: Callable[..., AvatarMesh], *args: Any) -> tuple[AvatarMesh, float]:
    """A mesh-making call's result and its wall-clock seconds."""
    start = time.perf_counter()
    mesh = function(*args)
    return mesh, time.perf_counter() - start


def run() -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        body = load_body_model("anny")
        avatar, pretrain_seconds = pretrained_avatar(body)
        with torch.no_grad():
            results = {
                "torch_threads": THREADS,
                "load_average": os.getloadavg()[0],
                "pretrain": {"steps": PRETRAIN_STEPS, "seconds": pretrain_seconds},
                "mise_vs_dense": mise_vs_dense(avatar),
                "posed": {
                    str(resolution): posed_comparison(
                        avatar, body, resolution, resolution in EXACT_RESOLUTIONS
                    )
                    for resolution in RESOLUTIONS
                },
            }
    finally:
        torch.set_num_threads(threads)
    measured = results["posed"][str(EXACT_RESOLUTIONS[-1])]["seconds_per_exact_evaluation"]
    for row in results["posed"].values():
        row.setdefault("exact_seconds_estimate", row["exact_evaluations_estimate"] * measured)
    return results
