#!/usr/bin/env python3
"""Write a man page (section 1) for every console script in pyproject.toml, from the CLI itself.

    python scripts/make_man.py [OUTDIR]      (default: build/man; `make man` runs it)

click tools are read through click's own objects (commands, options, help texts, every
subcommand); argparse tools (fleetd, fleetd-backstop) through their parser, caught when their
main() asks it to parse. Nothing is run: no tool starts, nothing is read from a cluster.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import click

REPO = Path(__file__).resolve().parents[1]
MANUAL = "Flotilla manual"


class ParserCaught(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def roff(text: str) -> str:
    """Text safe in a roff paragraph: backslashes and hyphens escaped, no line starting with a
    control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in ".'" else line for line in text.splitlines())


def paragraphs(text: str) -> list[str]:
    """Help text as roff: click's \\b marks (keep this block's lines) become no-fill blocks."""
    lines: list[str] = []
    for block in re.split(r"\n\s*\n", inspect.cleandoc(text or "")):
        if block.startswith("\b"):
            lines += [".PP", ".nf", roff(block.removeprefix("\b").strip("\n")), ".fi"]
        elif block.strip():
            lines += [".PP", roff(" ".join(block.split()))]
    return lines


def option_items(records: list[tuple[str, str]]) -> list[str]:
    lines: list[str] = []
    for invocation, help_text in records:
        lines += [".TP", f"\\fB{roff(invocation)}\\fR", roff(" ".join(help_text.split()))]
    return lines


def click_records(command: click.Command, ctx: click.Context) -> list[tuple[str, str]]:
    """The options (arguments are in the synopsis), with defaults that name a file of ours
    shown inside the installed packages rather than on the machine that made the page."""
    options = (p for p in command.get_params(ctx) if isinstance(p, click.Option))
    records = (option.get_help_record(ctx) for option in options)
    return [(opts, text.replace(f"{REPO}/", "<packages>/")) for opts, text in filter(None, records)]


def click_subcommands(
    group: click.Command, ctx: click.Context
) -> Iterator[tuple[click.Command, click.Context]]:
    """Every visible subcommand, depth first, each with its own context (its full name)."""
    if not isinstance(group, click.Group):
        return
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        child = click.Context(command, info_name=name, parent=ctx, **command.context_settings)
        yield command, child
        yield from click_subcommands(command, child)


def click_page(name: str, command: click.Command) -> list[str]:
    ctx = click.Context(command, info_name=name, **command.context_settings)
    usage = " ".join(command.collect_usage_pieces(ctx))
    lines = [".SH NAME", f"{name} \\- {roff(command.get_short_help_str(limit=200))}"]
    lines += [".SH SYNOPSIS", f".B {name}", roff(usage), ".SH DESCRIPTION"]
    lines += paragraphs(command.help or "")
    lines += [".SH OPTIONS", *option_items(click_records(command, ctx))]
    subcommands = list(click_subcommands(command, ctx))
    if subcommands:
        lines.append(".SH COMMANDS")
    for sub, sub_ctx in subcommands:
        path = sub_ctx.command_path
        usage = " ".join(sub.collect_usage_pieces(sub_ctx))
        lines += [f'.SS "{roff(path)}"', f"\\fB{roff(path)}\\fR {roff(usage)}"]
        lines += paragraphs(sub.help or sub.short_help or "")
        lines += option_items(click_records(sub, sub_ctx))
    return lines


def caught_parser(main: Callable[..., object]) -> argparse.ArgumentParser:
    """The parser main() builds, caught when it parses (before main does anything else)."""

    def catch(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        raise ParserCaught(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", catch):
        try:
            main([])
        except ParserCaught as caught:
            return caught.parser
    raise RuntimeError(f"{main.__module__}.main never parsed its arguments")


def argparse_page(name: str, parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()  # argparse's own rendering of each option
    usage = parser.format_usage().removeprefix("usage: ").removeprefix(parser.prog).strip()
    description = parser.description or ""
    lines = [".SH NAME", f"{name} \\- {roff(description.splitlines()[0] if description else name)}"]
    lines += [".SH SYNOPSIS", f".B {name}", roff(" ".join(usage.split())), ".SH DESCRIPTION"]
    lines += paragraphs(description)
    records = [
        (formatter._format_action_invocation(action), formatter._expand_help(action))
        for action in parser._actions
        if action.help != argparse.SUPPRESS
    ]
    return [*lines, ".SH OPTIONS", *option_items(records)]


def page(name: str, target: str, version: str, others: list[str]) -> str:
    module, _, function = target.partition(":")
    main = getattr(importlib.import_module(module), function)
    body = (
        click_page(name, main)
        if isinstance(main, click.Command)
        else argparse_page(name, caught_parser(main))
    )
    see_also = ", ".join(f"\\fB{roff(other)}\\fR(1)" for other in others if other != name)
    header = f'.TH "{name.upper()}" 1 "" "flotilla {version}" "{MANUAL}"'
    return "\n".join([header, *body, ".SH SEE ALSO", see_also]) + "\n"


def write_pages(out: Path) -> list[Path]:
    sys.path.insert(0, str(REPO))
    from flotilla import __version__

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, target in sorted(scripts.items()):
        path = out / f"{name}.1"
        path.write_text(page(name, target, __version__, sorted(scripts)))
        written.append(path)
    return written


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "build/man"
    for path in write_pages(out):
        print(path)


if __name__ == "__main__":
    main()
