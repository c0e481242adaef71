"""What every Flotilla command line has: -h beside --help, --version, and for listings
`--output json`."""

from __future__ import annotations

import json
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


def output_option(human: str = "table") -> Callable[[F], F]:
    """`--output HUMAN|json`: the human form stays the default, so scripts reading it keep
    working; `json` is one document on stdout, with the keys the README lists."""
    return click.option(
        "--output",
        type=click.Choice([human, "json"]),
        default=human,
        show_default=True,
        help="How to print the result: for people, or one JSON document for scripts.",
    )


def echo_json(document: object) -> None:
    """One JSON document on stdout, keys in the order the code builds them."""
    click.echo(json.dumps(document, indent=2))
