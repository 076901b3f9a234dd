"""The synthetic accuracy benchmark, ``small`` protocol: every stage that exists, and the naked-body
baseline (see :mod:`rgbd2avatar.bench`). Its data is kept in ``bench_out/`` between runs."""

from __future__ import annotations

from pathlib import Path

from rgbd2avatar.bench import run_benchmark


def run() -> dict:
    return run_benchmark("small", Path("bench_out"))
