"""Body models: the anny derivation's build and load times, and posed bodies per second.

Measured: the first build in a fresh process with both caches empty (anny's own cache and ours,
as on a new machine), the build with anny's cache warm, loading the cached model, and the
forward pass (vertices, joints, transforms) for batches of 64 random poses on each device.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import torch

from rgbd2avatar.devices import synchronize

BATCH = 64
REPEATS = 20
COLD_BUILD = (
    "import time; from rgbd2avatar.body import load_body_model; t = time.perf_counter(); "
    "load_body_model('anny'); print(time.perf_counter() - t)"
)
"""Times the model's build or load alone: torch and the package are imported before the clock starts."""


def _timed_subprocess(env: dict[str, str]) -> float:
    """Seconds a fresh Python process takes to build (or load) the anny model."""
    out = subprocess.run(
        [sys.executable, "-c", COLD_BUILD], env=env, check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def build_and_load_times() -> dict[str, float]:
    """First build with empty caches, build with anny's cache warm, then load from our cache."""
    with tempfile.TemporaryDirectory() as anny_cache, tempfile.TemporaryDirectory() as ours:
        env = {**os.environ, "ANNY_CACHE_DIR": anny_cache, "RGBD2AVATAR_CACHE": ours}
        first = _timed_subprocess(env)
        load = _timed_subprocess(env)
    with tempfile.TemporaryDirectory() as ours:
        warm = _timed_subprocess({**os.environ, "RGBD2AVATAR_CACHE": ours})
    return {"first_build_s": first, "build_with_anny_cache_s": warm, "load_s": load}


def forward_throughput(device: torch.device) -> float:
    """Posed anny bodies per second for batches of 64 random poses."""
    from rgbd2avatar.body import load_body_model

    body = load_body_model("anny").to(device)
    gen = torch.Generator().manual_seed(0)
    pose = (0.3 * torch.randn(BATCH, 72, generator=gen)).to(device)
    trans = torch.zeros(BATCH, 3, device=device)
    with torch.no_grad():
        body(pose, None, trans)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(REPEATS):
            body(pose, None, trans)
        synchronize(device)
    return BATCH * REPEATS / (time.perf_counter() - start)


def run() -> dict:
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    return {
        **build_and_load_times(),
        "torch_threads": torch.get_num_threads(),
        **{f"posed_bodies_per_s_{d.type}_batch{BATCH}": forward_throughput(d) for d in devices},
        "devices": {d.type: (torch.cuda.get_device_name() if d.type == "cuda" else "cpu") for d in devices},
    }
