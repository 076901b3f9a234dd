"""Command-line values that several commands parse the same way."""

from __future__ import annotations

from collections.abc import Sequence

from rgbd2avatar.errors import UserError


def parse_assignments(option: str, specs: Sequence[str], names: Sequence[str]) -> dict[str, float]:
    """``NAME=VALUE`` strings (e.g. ``--shape height=0.8``) as ``{name: value}``, later ones winning.

    Args:
        option: the option's name, for the error message; names: the accepted names.
    Raises:
        UserError: a string is not ``NAME=VALUE`` with a known name and a number.
    """
    values = {}
    for spec in specs:
        name, _, value = spec.partition("=")
        if name not in names or not value:
            raise UserError(f"{option} {spec!r} is not NAME=VALUE with NAME one of {', '.join(names)}.")
        try:
            values[name] = float(value)
        except ValueError:
            raise UserError(f"{option} {spec!r}: {value!r} is not a number.") from None
    return values
