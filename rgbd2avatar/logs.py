"""Logging, progress bars and one-line stage summaries, all on stderr (stdout stays for results).

Typical stage::

    with Timer() as timer:
        for frame in progress(reader, total=len(reader), description="preprocess"):
            ...
    fps = len(reader) / timer.seconds
    stage_summary("preprocess", f"{len(reader)} frames", timer.seconds, f"{fps:.1f} fps")
    # → "preprocess: 3600 frames in 2 min 01 s (29.8 fps)"
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import Progress, track

T = TypeVar("T")

console = Console(stderr=True)
"""The stderr console shared by log records, progress bars and summaries."""

_NOISY_LOGGERS = ("PIL", "matplotlib", "urllib3", "trimesh")


def setup_logging(verbose: bool = False) -> None:
    """Send log records to stderr through rich: INFO and up, or DEBUG and up when ``verbose``."""
    handler = RichHandler(console=console, show_path=verbose, markup=False, rich_tracebacks=True)
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]", handlers=[handler], force=True)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def progress(iterable: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
    """Iterate ``iterable`` with a progress bar on a terminal; silently when stderr is not one."""
    if not console.is_terminal:
        yield from iterable
        return
    yield from track(iterable, description=description, total=total, console=console, transient=True)


@contextmanager
def progress_callback(description: str) -> Iterator[Callable[[int, int], None]]:
    """A ``report(done, total)`` callback drawing a progress bar on a terminal (silent otherwise),
    for stages that report progress themselves rather than being iterated."""
    if not console.is_terminal:
        yield lambda done, total: None
        return
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


class Timer:
    """Wall-clock timer: ``with Timer() as t: ...`` then ``t.seconds`` (also readable inside)."""

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        self._end: float | None = None
        return self

    def __exit__(self, *_: object) -> None:
        self._end = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Seconds from entering to leaving the block (to now while inside it)."""
        end = time.perf_counter() if self._end is None else self._end
        return end - self._start


def format_duration(seconds: float) -> str:
    """Human-readable duration: "12.3 s", "4 min 05 s" or "1 h 02 min"."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def stage_summary(stage: str, what: str, seconds: float, *details: str) -> str:
    """Print and return the final line of a stage: ``"<stage>: <what> in 12.3 s (<details>)"``."""
    line = f"{stage}: {what} in {format_duration(seconds)}"
    if details:
        line += f" ({', '.join(details)})"
    console.print(line, markup=False, highlight=False, soft_wrap=True)
    return line
