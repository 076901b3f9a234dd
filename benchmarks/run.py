"""Run the benchmarks: ``python -m benchmarks.run [NAME ...]`` (``make bench`` runs them all).

Every module ``benchmarks/bench_<name>.py`` exposes ``run() -> dict`` of JSON-able measurements.
Each result is written atomically to ``benchmarks/results/<name>.json`` as
``{"benchmark", "machine", "seconds", "results"}`` and a table of all results is printed. A
benchmark that raises is reported and the others still run; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import platform
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import rgbd2avatar
from capture.files import write_json

BENCHMARKS_DIR = Path(__file__).parent
RESULTS_DIR = BENCHMARKS_DIR / "results"
PREFIX = "bench_"


def discover() -> list[str]:
    """Names (without the ``bench_`` prefix) of the benchmark modules, sorted."""
    modules = pkgutil.iter_modules([str(BENCHMARKS_DIR)])
    return sorted(module.name[len(PREFIX) :] for module in modules if module.name.startswith(PREFIX))


def machine() -> dict[str, Any]:
    """Where the numbers were measured."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rgbd2avatar": rgbd2avatar.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }


def run_one(name: str) -> dict[str, Any]:
    """Run ``bench_<name>.run()`` and write its result file; returns what was written."""
    module = importlib.import_module(f"benchmarks.{PREFIX}{name}")
    start = time.perf_counter()
    results = module.run()
    document = {
        "benchmark": name,
        "machine": machine(),
        "seconds": time.perf_counter() - start,
        "results": results,
    }
    write_json(RESULTS_DIR / f"{name}.json", document)
    return document


def summary_table(documents: list[dict[str, Any]]) -> Table:
    """One row per benchmark: name, wall time, and its top-level results."""
    table = Table(title="benchmarks")
    for column in ("benchmark", "seconds", "results"):
        table.add_column(column)
    for document in documents:
        results = ", ".join(f"{key}={_short(value)}" for key, value in document["results"].items())
        table.add_row(document["benchmark"], f"{document['seconds']:.1f}", results)
    return table


def _short(value: Any) -> str:
    """Compact text for a table cell: floats to 4 significant digits, nested values by type."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return f"<{type(value).__name__} of {len(value)}>"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    """Run the named (default: all) benchmarks; 0 if all succeeded."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all): " + " ".join(discover()))
    names = parser.parse_args(argv).names or discover()
    unknown = sorted(set(names) - set(discover()))
    if unknown:
        parser.error(f"unknown benchmarks: {' '.join(unknown)}")
    documents, failed = [], []
    for name in names:
        try:
            documents.append(run_one(name))
        except Exception:
            traceback.print_exc()
            failed.append(name)
    console = Console()
    console.print(summary_table(documents))
    console.print(f"results in {RESULTS_DIR}" + (f"; FAILED: {' '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
