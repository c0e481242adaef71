"""`imagebuild`: build the root filesystem (and, later, the disk image)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from flotilla.process import CommandError

from .rootfs import build_rootfs, default_cache_root
from .spec import DEFAULT_SPEC, SpecError


@click.group()
def main() -> None:
    """Build what Flotilla machines boot."""


@main.command()
@click.option(
    "--spec",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_SPEC,
    show_default=True,
    help="Rootfs manifest (YAML).",
)
@click.option(
    "--cache",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Cache directory [default: $FLOTILLA_CACHE/rootfs or /var/cache/flotilla/rootfs].",
)
def rootfs(spec: Path, cache: Path | None) -> None:
    """Build (or reuse) the root filesystem tree; print its path."""
    try:
        path = build_rootfs(spec, cache or default_cache_root())
    except (SpecError, CommandError) as error:
        click.echo(f"imagebuild: {error}", err=True)
        sys.exit(1)
    click.echo(path)
