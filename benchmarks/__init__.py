"""Benchmarks: each ``bench_<name>.py`` module exposes ``run() -> dict``; see ``benchmarks/run.py``."""
