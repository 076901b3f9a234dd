"""Shared by the command tests: the CLI runner, a tiny avatar size and the one-line error check."""

from __future__ import annotations

from typer.testing import CliRunner

from rgbd2avatar.avatar.avatar import AvatarSpec
from rgbd2avatar.cli import USER_ERROR_EXIT_CODE

runner = CliRunner()
TINY = AvatarSpec(sdf_hidden=24, sdf_layers=2, sdf_freqs=1, skin_hidden=16, skin_layers=2)
"""Networks small enough for command tests to build, save and run in a second."""


def one_error_line(result) -> str:
    """The single ``error: …`` line of a command stopped by a user error (exit 2, no traceback)."""
    assert result.exit_code == USER_ERROR_EXIT_CODE, result.output
    errors = [line for line in result.stderr.strip().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.strip().endswith(errors[0]) and "Traceback" not in result.output
    return errors[0]
