"""The GPU checks and timings for a lent CUDA machine, in one call: ``prepare`` here, ``run``
there, ``evaluate`` here.

The GPU machine has torch but not open3d (its wheel is far larger than what may travel there),
which the synthetic capture, the body fit and the pseudo ground truth of PINA's data need. So
the CPU prepares what the optimisation reads, and the GPU runs everything after it on the same
code paths as ``rgbd2avatar fit`` (:func:`rgbd2avatar.pina_stage.optimise_avatar`), the mesh
extraction and the correspondence search::

    rgbd2avatar bench                                  # makes bench_out/small (CPU)
    python -m benchmarks.gpu_session prepare .gpu      # PinaData + the derived anny body (CPU)
    bash benchmarks/gpu_session.sh .gpu OUT [BUDGET_S] # on the GPU: CUDA tests, then ``run``
    python -m benchmarks.gpu_session evaluate OUT      # accuracy of the GPU avatars (CPU)

``run`` does, in this order, as long as ``--budget`` seconds allow (each result is written to
``OUT/gpu_session.json`` as soon as it exists, so a run stopped at its limit keeps them):

1. ``search``: correspondence-search throughput (10,000 posed points, 9 candidates) on the GPU,
   as :mod:`benchmarks.bench_deformer` measures it.
2. ``steps``: seconds per pretraining and joint step of each preset (:data:`TIMING_STEPS` each).
3. ``profile``: operators, kernel launches and device time of a ``default`` joint step.
4. ``meshes``: MISE against the dense grid, and fast / exact posed meshes, on the pretrained
   ``default`` avatar of step 2; the meshes go to ``OUT/meshes.npz`` for distances here.
5. ``fit_<preset>``: whole fits of :data:`FITS` when the measured seconds per step say they fit
   in the time left; each writes ``OUT/<preset>/avatar.pt`` and ``train.json``.

Shapes: F frames, V vertices, T triangles.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from capture.files import load_npz, read_json, write_json
from fitting.pina.config import PRESETS, preset
from fitting.pina.data import PinaData
from rgbd2avatar.devices import synchronize

BENCH = Path("bench_out") / "small"
DATA_FILE = "pina_data.pt"
CACHE_DIR = "cache"
TIMING_STEPS = 40
"""Pretraining and joint steps timed per preset (after :data:`WARMUP_STEPS` of each)."""
WARMUP_STEPS = 5
PROFILED_STEPS = 5
FITS = ("quality", "default", "fast")
"""Presets fitted whole when time allows, most wanted first."""
SAFETY = 1.3
"""A fit starts only if its predicted seconds times this fit in the time left."""
MESH_RESOLUTIONS = (128, 256)
SEQUENCE_FRAMES = 30
"""Frames of the ``walk`` motion posed fast at 256 for meshes/s, the SDF conditioned on the
motion's mean pose (one canonical extraction, as ``animate`` with its default condition)."""


def prepare(folder: Path, subject: Path = BENCH / "subject") -> None:
    """Write the optimisation's inputs for ``run``: ``DATA_FILE`` (the subject's :class:`PinaData`
    as the presets read it) and ``CACHE_DIR`` (the derived anny body model)."""
    from fitting.pina.data import load_pina_data
    from rgbd2avatar.body import load_body_model
    from rgbd2avatar.body.anny_model import cache_path

    config = preset("default")
    assert {(c.max_points, c.off_margin, c.seed) for c in PRESETS.values()} == {
        (config.max_points, config.off_margin, config.seed)
    }, "the presets read different data"
    body = load_body_model(str(load_npz(subject / "body_fit" / "fits.npz")["body_model"]))
    data = load_pina_data(subject, body, config)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(vars(data), folder / DATA_FILE)
    (folder / CACHE_DIR).mkdir(exist_ok=True)
    shutil.copy(cache_path(), folder / CACHE_DIR / cache_path().name)


class Session:
    """The results of one ``run``, written to ``out/gpu_session.json`` after every task."""

    def __init__(self, out: Path, budget: float) -> None:
        self.out, self.deadline = out, time.perf_counter() + budget
        self.results: dict[str, Any] = {"environment": environment()}
        self.save()

    def left(self) -> float:
        """Seconds left of the budget."""
        return self.deadline - time.perf_counter()

    def task(self, name: str, function: Callable[[], Any]) -> Any:
        """Run one task, keep its result (or its error) under ``name``; returns the result or None."""
        start = time.perf_counter()
        print(f"[{name}] start, {self.left():.0f} s left", flush=True)
        try:
            value = function()
        except Exception:  # noqa: BLE001 — a failed task is reported and the others still run
            self.results[name] = {"error": traceback.format_exc()}
            print(self.results[name]["error"], flush=True)
            value = None
        else:
            self.results[name] = value
        self.results.setdefault("task_seconds", {})[name] = time.perf_counter() - start
        self.save()
        print(f"[{name}] done in {time.perf_counter() - start:.1f} s", flush=True)
        return value

    def save(self) -> None:
        write_json(self.out / "gpu_session.json", self.results)


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    cuda = torch.cuda.is_available()
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "cpu_threads": torch.get_num_threads(),
    }


def search_throughput(device: torch.device) -> dict[str, Any]:
    """:mod:`benchmarks.bench_deformer`'s measurement on ``device`` only."""
    from benchmarks.bench_deformer import POINTS, benchmark_inputs, measure
    from rgbd2avatar.avatar.deformer import ForwardDeformer

    net, fit, xc, transforms = benchmark_inputs()
    results: dict[str, Any] = {"points": POINTS, "candidates": 9} | fit
    deformer = ForwardDeformer(net).to(device)
    for name, tfs in transforms.items():
        measure(deformer, xc.to(device), tfs.to(device))  # first calls compile and allocate
        results[name] = measure(deformer, xc.to(device), tfs.to(device))
    return results


def load_data(folder: Path) -> PinaData:
    return PinaData(**torch.load(folder / DATA_FILE, weights_only=True))


def step_seconds(folder: Path, name: str, device: torch.device) -> tuple[dict[str, float], Any]:
    """Seconds per pretraining and per joint step of a preset; and the trainer (pretrained)."""
    from benchmarks.step_cost import seconds_per_step
    from fitting.pina.trainer import PinaTrainer
    from rgbd2avatar.body import load_body_model

    steps = WARMUP_STEPS + TIMING_STEPS
    config = preset(name, pretrain_steps=steps, joint_steps=steps)
    trainer = PinaTrainer(load_body_model("anny").to(device), load_data(folder).to(device), config)
    seconds = {}
    for stage, end in (("pretrain", steps), ("joint", 2 * steps)):
        trainer.run(until=end - TIMING_STEPS)
        seconds[f"seconds_per_{stage}_step"] = seconds_per_step(trainer, end, device)
    full = preset(name)
    seconds["predicted_fit_seconds"] = (
        full.pretrain_steps * seconds["seconds_per_pretrain_step"]
        + full.joint_steps * seconds["seconds_per_joint_step"]
    )
    return seconds, trainer


def profile_steps(trainer: Any, device: torch.device, out: Path) -> dict[str, Any]:
    """Where a joint step's time goes: torch.profiler over :data:`PROFILED_STEPS` further steps.

    Reports per step: the wall time, operator calls, the kernels' summed device time and the
    CUDA runtime calls (launches, copies, synchronisations) by name; the operator table (by
    self CPU time) goes to ``out/profile.txt``.
    """
    from torch.profiler import ProfilerActivity, profile

    steps = PROFILED_STEPS
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    trainer.config = replace(trainer.config, joint_steps=trainer.config.joint_steps + steps)
    synchronize(device)
    start = time.perf_counter()
    with profile(activities=activities) as profiler:
        trainer.run(until=trainer.step + steps)
        synchronize(device)
    wall = time.perf_counter() - start
    events = profiler.key_averages()
    (out / "profile.txt").write_text(events.table(sort_by="self_cpu_time_total", row_limit=40))
    kernel_us = sum(getattr(e, "self_device_time_total", 0.0) for e in events)
    return {
        "steps": steps,
        "wall_s_per_step": wall / steps,
        "operators_per_step": sum(e.count for e in events if e.key.startswith("aten::")) / steps,
        "device_time_s_per_step": kernel_us / 1e6 / steps,
        "runtime_calls_per_step": {
            e.key: e.count / steps for e in events if e.key.startswith(("cuda", "cu"))
        },
    }


def mesh_timings(avatar: Any, device: torch.device, out: Path) -> dict[str, Any]:
    """MISE vs the dense grid (canonical, 256) and fast / exact posed meshes; saves the meshes."""
    from rgbd2avatar.avatar.meshes import (
        MESH_BATCH,
        canonical_mesh,
        posed_mesh_exact,
        posed_mesh_fast,
        posed_meshes,
    )
    from rgbd2avatar.avatar.networks import pose_features
    from rgbd2avatar.meshing import dense_grid_mesh, extract_mesh
    from rgbd2avatar.motion import builtin_motion

    avatar = avatar.eval()
    condition = pose_features(avatar.canonical_condition())
    low, high = avatar.bounds.cpu().numpy()
    arrays: dict[str, np.ndarray] = {}
    results: dict[str, Any] = {}

    def sdf(points: torch.Tensor) -> torch.Tensor:
        return avatar.sdf(points[None], condition)[0]

    def timed(label: str, make: Callable[[], Any]) -> Any:
        synchronize(device)
        start = time.perf_counter()
        mesh = make()
        synchronize(device)
        arrays[f"{label}_vertices"], arrays[f"{label}_faces"] = mesh.vertices, mesh.faces
        results[label] = {"seconds": time.perf_counter() - start, "evaluations": mesh_evaluations(mesh)}
        return mesh

    poses, trans = builtin_motion("walk").to_torch()
    with torch.no_grad():
        canonical_mesh(avatar, resolution=64)  # warm-up
        for resolution in MESH_RESOLUTIONS:
            args = dict(resolution=resolution, batch_points=MESH_BATCH, device=device)
            timed(f"mise_{resolution}", lambda: extract_mesh(sdf, low, high, **args))  # noqa: B023
            timed(f"dense_{resolution}", lambda: dense_grid_mesh(sdf, low, high, **args))  # noqa: B023
            timed(f"fast_{resolution}", lambda: posed_mesh_fast(avatar, poses[12], trans[12], resolution))  # noqa: B023
            timed(f"exact_{resolution}", lambda: posed_mesh_exact(avatar, poses[12], trans[12], resolution))  # noqa: B023
        synchronize(device)
        start = time.perf_counter()
        count = sum(
            1
            for _ in posed_meshes(
                avatar, poses[:SEQUENCE_FRAMES], trans[:SEQUENCE_FRAMES], 256, condition=poses.mean(0)
            )
        )
        synchronize(device)
        results["sequence_fast_256"] = {
            "frames": count,
            "meshes_per_s": count / (time.perf_counter() - start),
        }
    np.savez_compressed(out / "meshes.npz", **arrays)
    return results


def mesh_evaluations(mesh: Any) -> int:
    """SDF evaluations of a :class:`~rgbd2avatar.meshing.MeshResult` or an avatar mesh."""
    return int(getattr(mesh, "extraction", mesh).evaluations)


def fit(folder: Path, name: str, device: torch.device, out: Path) -> dict[str, Any]:
    """A whole fit of a preset through :func:`rgbd2avatar.pina_stage.optimise_avatar`; the checkpoint
    and the canonical mesh are deleted (few files may come back from a lent machine)."""
    from rgbd2avatar.body import load_body_model
    from rgbd2avatar.pina_stage import files_signature, optimise_avatar

    config = preset(name)
    (out / name).mkdir(parents=True, exist_ok=True)
    summary = optimise_avatar(
        out / name,
        load_data(folder),
        load_body_model("anny"),
        config,
        device,
        files_signature([folder / DATA_FILE], config, device),
    )
    (out / name / "checkpoint.pt").unlink(missing_ok=True)
    (out / name / "canonical.ply").unlink(missing_ok=True)
    return {key: value for key, value in summary.items() if key not in ("history", "config")}


TASKS = ("search", "steps", "profile", "meshes", "fits")


def run(folder: Path, out: Path, budget: float, device_name: str, tasks: tuple[str, ...] = TASKS) -> dict:
    """The GPU session's ``tasks`` (of :data:`TASKS`), most wanted first, within ``budget`` seconds;
    ``profile`` and ``meshes`` use the ``default`` trainer of ``steps``."""
    device = torch.device(device_name)
    out.mkdir(parents=True, exist_ok=True)
    session = Session(out, budget)
    if "search" in tasks:
        session.task("search", lambda: search_throughput(device))
    trainers: dict[str, Any] = {}

    def timing(name: str) -> dict[str, float]:
        seconds, trainers[name] = step_seconds(folder, name, device)
        return seconds

    steps = {}
    if "steps" in tasks:
        steps = {name: session.task(f"steps_{name}", lambda name=name: timing(name)) for name in PRESETS}
    if "default" in trainers and "profile" in tasks:
        session.task("profile", lambda: profile_steps(trainers["default"], device, out))
    if "default" in trainers and "meshes" in tasks:
        session.task("meshes", lambda: mesh_timings(trainers["default"].avatar, device, out))
    trainers.clear()
    for name in FITS if "fits" in tasks else ():
        if steps.get(name) and steps[name]["predicted_fit_seconds"] * SAFETY < session.left():
            session.task(f"fit_{name}", lambda name=name: fit(folder, name, device, out))
        else:
            session.results[f"fit_{name}"] = {"skipped": f"{session.left():.0f} s left"}
    session.save()
    return session.results


def evaluate(out: Path, bench: Path = BENCH) -> dict[str, Any]:
    """Accuracy of each GPU-fitted avatar in ``out`` on the small protocol (as ``rgbd2avatar bench``),
    and the distances between the GPU's fast and exact posed meshes; written to
    ``benchmarks/results/gpu_session.json``."""
    from rgbd2avatar.bench import PROTOCOLS, animation_table, reconstruction_table
    from rgbd2avatar.metrics import chamfer_l2_cm

    protocol = PROTOCOLS["small"]
    session = read_json(out / "gpu_session.json")
    avatars = {}
    for name in FITS:
        if (out / name / "avatar.pt").exists():
            workspace = bench / f"gpu_{name}"
            shutil.rmtree(workspace, ignore_errors=True)
            shutil.copytree(bench / "subject", workspace, ignore=shutil.ignore_patterns("recording", "pina"))
            (workspace / "pina").mkdir()
            shutil.copy(out / name / "avatar.pt", workspace / "pina" / "avatar.pt")
            avatars[f"pina_{name}_gpu"] = workspace
    data_dir = bench / "capture"
    evaluation: dict[str, Any] = {"session": session}
    if avatars:
        evaluation["reconstruction"] = reconstruction_table(protocol, data_dir, bench / "subject", avatars)
        evaluation["animation"] = animation_table(protocol, None, avatars, own_condition=())
    if (out / "meshes.npz").exists():
        meshes = load_npz(out / "meshes.npz")
        evaluation["fast_vs_exact_cm"] = {
            str(r): chamfer_l2_cm(
                (meshes[f"fast_{r}_vertices"], meshes[f"fast_{r}_faces"]),
                (meshes[f"exact_{r}_vertices"], meshes[f"exact_{r}_faces"]),
                50_000,
            )
            for r in MESH_RESOLUTIONS
        }
    write_json(Path("benchmarks") / "results" / "gpu_session.json", evaluation)
    return evaluation


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prepare_parser = commands.add_parser("prepare", help="write the GPU run's inputs (CPU, after bench)")
    prepare_parser.add_argument("folder", type=Path)
    run_parser = commands.add_parser("run", help="the GPU tasks")
    run_parser.add_argument("folder", type=Path)
    run_parser.add_argument("out", type=Path)
    run_parser.add_argument("--budget", type=float, default=400.0, help="seconds for all tasks")
    run_parser.add_argument("--device", default="cuda")
    run_parser.add_argument("--tasks", nargs="+", choices=TASKS, default=TASKS, help="which tasks to run")
    evaluate_parser = commands.add_parser("evaluate", help="accuracy of the GPU avatars (CPU)")
    evaluate_parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.folder)
    elif args.command == "run":
        run(args.folder, args.out, args.budget, args.device, tuple(args.tasks))
    else:
        evaluate(args.out)


if __name__ == "__main__":
    sys.exit(main())
