"""`flotilla-unit`: container specs -> unit files for `fleetctl submit`.

Every spec is checked and rendered before anything is written, so one bad spec among several
leaves the output directory as it was.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import click

from flotilla.files import write_atomically
from flotilla.manifest import ManifestError
from flotilla.tool import HELP_OPTIONS, version_option

from .render import RenderedUnit, render_unit
from .spec import load_spec
from .store import default_images_file, known_images

EXIT_BAD_SPEC = 1
SPEC = click.Path(path_type=Path, dir_okay=False)


@click.group(context_settings=HELP_OPTIONS)
@version_option("flotilla-unit")
def main() -> None:
    """Podman container units from short YAML specs (see flotilla/data/units/README.md)."""


def image_options(command: Callable[..., None]) -> Callable[..., None]:
    """--images-from and --no-image-check: which images a spec may name."""
    command = click.option(
        "--no-image-check", is_flag=True, help="Accept any image name (nothing is checked)."
    )(command)
    return click.option(
        "--images-from",
        type=click.Path(path_type=Path, exists=True, dir_okay=False),
        default=None,
        help="The images the machines hold: a YAML file with container_images: (as"
        " imagebuild/image.yaml), or one name a line [default: the machine's"
        " /usr/share/flotilla/container-images.txt, else imagebuild/image.yaml].",
    )(command)


@main.command()
@click.argument("specs", nargs=-1, required=True, type=SPEC)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Write NAME.service files here and print their paths [default: stdout, one spec only].",
)
@image_options
def render(
    specs: tuple[Path, ...], output: Path | None, images_from: Path | None, no_image_check: bool
) -> None:
    """Render each SPEC to a unit file; write nothing unless every spec is good."""
    if output is None and len(specs) > 1:
        raise click.UsageError("give -o DIR to render more than one spec")
    units = render_all(specs, image_list(images_from, no_image_check))
    if output is None:
        click.echo(units[0].text, nl=False)
        return
    for unit in units:
        path = output / unit.name
        write_atomically(path, unit.text)
        click.echo(path)


@main.command()
@click.argument("specs", nargs=-1, required=True, type=SPEC)
@image_options
def check(specs: tuple[Path, ...], images_from: Path | None, no_image_check: bool) -> None:
    """Check each SPEC (and that fleet accepts its unit) without writing anything."""
    units = render_all(specs, image_list(images_from, no_image_check))
    for spec, unit in zip(specs, units, strict=True):
        click.echo(f"{spec}: {unit.name} ok")


def image_list(images_from: Path | None, no_image_check: bool) -> tuple[str, ...] | None:
    """The images a spec may name, or None to accept any."""
    if no_image_check:
        if images_from is not None:
            raise click.UsageError("--images-from and --no-image-check exclude each other")
        return None
    try:
        return known_images(images_from or default_images_file())
    except ManifestError as error:
        fail([str(error)])


def render_all(specs: tuple[Path, ...], images: tuple[str, ...] | None) -> list[RenderedUnit]:
    """Every spec rendered, in order; or every error printed and exit 1."""
    units: list[RenderedUnit] = []
    errors: list[str] = []
    sources: dict[str, Path] = {}
    for path in specs:
        try:
            spec = load_spec(path, images)
            unit = render_unit(spec)
        except ManifestError as error:
            errors.append(str(error))
            continue
        if unit.name in sources:
            reason = f"{unit.name} is also rendered from {sources[unit.name]}"
            errors.append(str(spec.error(("name",), reason)))
        sources.setdefault(unit.name, path)
        units.append(unit)
    if errors:
        fail(errors)
    return units


def fail(errors: list[str]) -> NoReturn:
    for error in errors:
        click.echo(error, err=True)
    sys.exit(EXIT_BAD_SPEC)
