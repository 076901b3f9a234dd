"""What one PINA joint step costs: seconds and tensor operators, on the ``small`` protocol's data.

    rgbd2avatar bench                                   # once: bench_out/small/subject
    python -m benchmarks.step_cost [--preset fast] [--steps 35] [--device cpu]

A trainer of the preset is built on the subject's data, pretrained for a few steps, warmed up
for :data:`WARMUP` joint steps, then timed over ``--steps`` joint steps; a further
:data:`COUNTED` steps run under a dispatch mode that counts every tensor operator that is not a
view (on a GPU, each is at least one kernel launch), grouped by the function of this project
that issued it. On a GPU, where a step is bound by launching kernels, the operator count is what
the time follows; ``benchmarks/gpu_session.py`` profiles the kernels themselves.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fitting.pina.config import preset
from fitting.pina.data import load_pina_data
from fitting.pina.trainer import PinaTrainer
from rgbd2avatar.body import load_body_model
from rgbd2avatar.devices import synchronize

SUBJECT = Path("bench_out") / "small" / "subject"
PRETRAIN, WARMUP, COUNTED = 10, 5, 5
VIEWS = frozenset(
    "view as_strided reshape expand t transpose unsqueeze squeeze select slice permute _unsafe_view "
    "alias detach unbind split split_with_sizes narrow unflatten flatten".split()
)
"""Operators that only make a view (no kernel)."""
PACKAGES = ("rgbd2avatar", "fitting", "capture")


class OperatorCount(TorchDispatchMode):
    """Counts non-view operators by the innermost function of :data:`PACKAGES` that called them."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func.__name__.split(".")[0] not in VIEWS:
            self.counts[_caller()] += 1
        return func(*args, **(kwargs or {}))


def _caller() -> str:
    """``package/module.py:function`` of the innermost project frame on the stack."""
    frame = sys._getframe(2)
    while frame is not None:
        parts = Path(frame.f_code.co_filename).parts
        for package in PACKAGES:
            if package in parts and ".venv" not in parts and "site-packages" not in parts:
                index = len(parts) - 1 - parts[::-1].index(package)
                return f"{'/'.join(parts[index:])}:{frame.f_code.co_name}"
        frame = frame.f_back
    return "autograd engine"


def seconds_per_step(trainer: PinaTrainer, until: int, device: torch.device) -> float:
    """Run the trainer up to step ``until``; wall-clock seconds per step it took."""
    first = trainer.step
    synchronize(device)
    start = time.perf_counter()
    trainer.run(until=until)
    synchronize(device)
    return (time.perf_counter() - start) / (until - first)


def measure(preset_name: str, steps: int, device: torch.device, subject: Path = SUBJECT) -> dict[str, Any]:
    """Seconds per joint step and operators per joint step (total and by caller)."""
    body = load_body_model("anny")
    config = preset(preset_name, pretrain_steps=PRETRAIN, joint_steps=WARMUP + steps + COUNTED)
    data = load_pina_data(subject, body, config)
    trainer = PinaTrainer(body.to(device), data.to(device), config)
    trainer.run(until=PRETRAIN + WARMUP)
    seconds = seconds_per_step(trainer, PRETRAIN + WARMUP + steps, device)
    with OperatorCount() as counter:
        trainer.run()
    per_step = {name: count / COUNTED for name, count in counter.counts.most_common()}
    return {
        "preset": preset_name,
        "device": str(device),
        "seconds_per_joint_step": seconds,
        "operators_per_joint_step": sum(per_step.values()),
        "operators_by_caller": per_step,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--steps", type=int, default=35, help="joint steps timed")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    result = measure(args.preset, args.steps, torch.device(args.device))
    print(
        f"{result['preset']} on {result['device']}: {result['seconds_per_joint_step']:.4f} s per joint step, "
        f"{result['operators_per_joint_step']:.0f} operators per joint step"
    )
    for name, count in list(result["operators_by_caller"].items())[:12]:
        print(f"  {count:7.0f}  {name}")


if __name__ == "__main__":
    main()
