"""What every Flotilla command line has: -h beside --help, and --version."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from . import __version__

F = TypeVar("F", bound=Callable[..., Any])

# Passed as a click command's context_settings; subcommands inherit it.
HELP_OPTIONS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}


def version_option(prog: str) -> Callable[[F], F]:
    """`--version` printing `PROG VERSION`, as fleetd's does (no `-v`: some tools use it)."""
    return click.version_option(
        __version__, "--version", prog_name=prog, message="%(prog)s %(version)s"
    )
