"""The ``rgbd2avatar`` command line: thin commands that wire the stages together.

Conventions for every command:

- register it with ``@command()`` (not ``@app.command()``): its body then runs inside the one
  error handler — a :class:`~rgbd2avatar.errors.UserError` or
  :class:`~capture.errors.CaptureError` prints its message as one red line on stderr and exits
  with code 2, without a traceback (``-v`` adds the traceback as a debug log);
- import stage packages inside the function, so ``rgbd2avatar --help`` stays fast (no torch);
- every option has a help string and a default;
- logs, progress and summaries go to stderr (:mod:`rgbd2avatar.logs`), results to stdout.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer

from capture.errors import CaptureError
from rgbd2avatar import __version__
from rgbd2avatar.errors import UserError
from rgbd2avatar.logs import console, setup_logging

if TYPE_CHECKING:
    from rich.table import Table

    from rgbd2avatar.workspace import Workspace

USER_ERROR_EXIT_CODE = 2
"""Exit code of a command stopped by a UserError or CaptureError."""

Command = TypeVar("Command", bound=Callable[..., Any])

app = typer.Typer(
    name="rgbd2avatar",
    help="Animatable, textured 3D avatars from one person's RGB-D video (PINA).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
_log = logging.getLogger(__name__)


def command(name: str | None = None, **options: Any) -> Callable[[Command], Command]:
    """Register a function as a subcommand whose user errors end in one line and exit code 2."""

    def register(function: Command) -> Command:
        app.command(name, **options)(_reporting_user_errors(function))
        return function

    return register


def _reporting_user_errors(function: Command) -> Command:
    """Wrap ``function`` so UserError/CaptureError print one red stderr line and exit with code 2."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (UserError, CaptureError) as error:
            _log.debug("traceback of the error below", exc_info=True)
            console.print(f"error: {error}", style="red", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(code=USER_ERROR_EXIT_CODE) from None

    return cast(Command, run)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"rgbd2avatar {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show debug logs, and tracebacks of user errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """Animatable, textured 3D avatars from one person's RGB-D video (PINA)."""
    setup_logging(verbose)


@command()
def demo(
    out: Annotated[Path, typer.Argument(help="Directory for the demo's outputs.")] = Path("demo_out"),
) -> None:
    """Run the whole pipeline on a built-in synthetic subject (no camera needed)."""
    typer.echo(f"demo: outputs will go to {out.absolute()}")


@command()
def status(
    subject: Annotated[Path, typer.Argument(help="Subject workspace directory.")] = Path("."),
) -> None:
    """Show each stage of a subject workspace: up to date or why not, outputs, when it ran."""
    from rich.console import Console

    from rgbd2avatar.workspace import Workspace

    Console().print(_status_table(Workspace(subject)))


def _status_table(workspace: Workspace) -> Table:
    """A rich Table with one row per stage of ``workspace``."""
    from rich.markup import escape
    from rich.table import Table

    from rgbd2avatar.workspace import STAGES

    table = Table(title=escape(f"Subject {workspace.root}"))
    for column in ("stage", "up to date", "outputs", "finished"):
        table.add_column(column)
    for stage in STAGES:
        record = workspace.stage_record(stage)
        if record is None:
            table.add_row(stage, "not run", "", "")
            continue
        reason = workspace.stale_reason(stage)
        state = "[green]yes[/]" if reason is None else f"[yellow]no[/]: {escape(reason)}"
        table.add_row(stage, state, escape("\n".join(record.outputs)), _local_time(record.finished))
    return table


def _local_time(iso: str) -> str:
    """``YYYY-MM-DD HH:MM`` in local time of an ISO 8601 timestamp."""
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="rgbd2avatar")
