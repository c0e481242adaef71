"""`imagebuild`: build the root filesystem and the OS disk image."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from flotilla import steps
from flotilla.manifest import ManifestError
from flotilla.process import CommandError
from flotilla.tool import HELP_OPTIONS, version_option

from .image import DEFAULT_OUT, build_image
from .image_spec import DEFAULT_IMAGE_SPEC
from .report import report_document, report_json, report_lines
from .rootfs import build_rootfs, default_rootfs_cache
from .serve import DEFAULT_HOST, make_server
from .spec import DEFAULT_SPEC, SpecError
from .tree import ImageError


@click.group(context_settings=HELP_OPTIONS)
@version_option("imagebuild")
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
    help="Cache directory [default: CACHE/rootfs, CACHE being $FLOTILLA_CACHE, else"
    " /var/cache/flotilla as root, else $XDG_CACHE_HOME/flotilla].",
)
def rootfs(spec: Path, cache: Path | None) -> None:
    """Build (or reuse) the root filesystem tree; print its path."""
    try:
        path = build_rootfs(spec, cache or default_rootfs_cache())
    except (SpecError, CommandError) as error:
        click.echo(f"imagebuild: {error}", err=True)
        sys.exit(1)
    click.echo(path)


@main.command()
@click.option(
    "--spec",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_IMAGE_SPEC,
    show_default=True,
    help="Image manifest (YAML).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_OUT,
    show_default=True,
    help="Directory for the disk images, kernel, initramfs, package list and report"
    " (relative to the current directory).",
)
@click.option(
    "--cache",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Cache directory [default: $FLOTILLA_CACHE, else /var/cache/flotilla as root,"
    " else $XDG_CACHE_HOME/flotilla].",
)
@click.option(
    "--source-date-epoch",
    type=int,
    default=None,
    help="Timestamp for every file in /usr [default: $SOURCE_DATE_EPOCH, else the last commit].",
)
@click.option(
    "--signing-key",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="ed25519 private key (OpenSSH format, no passphrase) that signs the update payload;"
    " its public key goes into the image [default: OUT/update-signing-key, made once].",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the build report (NAME.report.json) on stdout as one JSON document; the steps"
    " stay on stderr.",
)
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="On a terminal, show how far the package steps got (packages installed so far).",
)
def build(
    spec: Path,
    out: Path,
    cache: Path | None,
    source_date_epoch: int | None,
    signing_key: Path | None,
    as_json: bool,
    verbose: bool,
) -> None:
    """Build the OS disk image (raw and qcow2), its kernel and initramfs, and the signed
    update payload (OUT/update/); print a summary.

    The steps and their durations go to stderr, so stdout holds only the result."""
    steps.show_details = verbose
    try:
        artifacts = build_image(spec, out, cache, source_date_epoch, signing_key)
        document = report_document(artifacts.report.read_text(), artifacts.report)
    except (ManifestError, ImageError, SpecError, CommandError, ValueError) as error:
        click.echo(f"imagebuild: {error}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(report_json(document))
    else:
        click.echo("\n".join(report_lines(document, out)))


@main.command("serve-update")
@click.option(
    "--port", type=click.IntRange(0, 65535), required=True, help="TCP port (0: a free one)."
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_OUT / "update",
    show_default=True,
    help="The payload directory a build wrote.",
)
@click.option(
    "--host",
    default=DEFAULT_HOST,
    show_default=True,
    help="Address to listen on; VMs on QEMU's user network reach 127.0.0.1 as 10.0.2.2.",
)
def serve_update(port: int, directory: Path, host: str) -> None:
    """Serve the update payload over HTTP until interrupted.

    The first line on stdout is the payload's URL (with the port chosen when --port is 0)."""
    try:
        server = make_server(directory, port, host)
    except (ImageError, OSError) as error:
        click.echo(f"imagebuild: {error}", err=True)
        sys.exit(1)
    click.echo(f"http://{host}:{server.server_port}/", nl=True)
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
