"""The command line of the benchmarks that measure fitted workspaces one at a time."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from capture.files import read_json, write_json

DEFAULT_WORKSPACE = Path("bench_out") / "small" / "subject"
"""The workspace of ``rgbd2avatar bench``."""


def measure_workspaces(
    argv: list[str] | None,
    module: str,
    doc: str,
    results: Path,
    measure: Callable[[Path], dict],
    summary: Callable[[dict], str],
) -> None:
    """Parse ``[WORKSPACE ...]`` (default :data:`DEFAULT_WORKSPACE`), then for each: measure it,
    print ``WORKSPACE: summary(row)`` and store the row under the workspace's path in the JSON
    file ``results`` (kept across runs, written after each workspace)."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{module}", description=doc.splitlines()[0])
    parser.add_argument("workspaces", nargs="*", type=Path, default=[DEFAULT_WORKSPACE])
    args = parser.parse_args(argv)
    rows = read_json(results) if results.exists() else {}
    for workspace in args.workspaces:
        rows[str(workspace)] = row = measure(workspace)
        print(f"{workspace}: {summary(row)}", flush=True)
        write_json(results, rows)
