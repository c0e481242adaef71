"""`flotilla-cloudinit`: check a cloud-config (`--validate`) or apply it to this machine.

Findings are printed as coreos-cloudinit prints them (`line N: error: message`). `--validate`
exits 1 on any finding, warnings included, as `coreos-cloudinit -validate` does. Applying refuses
a config with any error before the first write, prints warnings and goes on.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from pathlib import Path

import click

from flotilla.process import CommandError
from flotilla.tool import HELP_OPTIONS, version_option

from .cloudconfig import Finding, parse_cloud_config
from .cloudconfig_apply import execute, read_machine
from .cloudconfig_plan import plan_apply

USER_DATA = Path("openstack/latest/user_data")  # inside a config drive
EXIT_OK, EXIT_FAILED = 0, 1


def print_findings(source: Path, findings: Iterable[Finding], err: bool) -> None:
    for finding in findings:
        click.echo(f"{source}: {finding}" if err else str(finding), err=err)


def read_source(from_file: Path | None, from_configdrive: Path | None) -> Path | None:
    """The user-data file to read; None when a config drive carries none (nothing to do)."""
    if from_file is not None:
        return from_file
    assert from_configdrive is not None
    path = from_configdrive / USER_DATA
    return path if path.is_file() else None


def apply_user_data(source: Path, data: bytes, root: Path) -> int:
    parsed = parse_cloud_config(data)
    print_findings(source, parsed.findings, err=True)
    if parsed.errors:
        click.echo(f"{source}: not applied: fix the errors above", err=True)
        return EXIT_FAILED
    plan = plan_apply(parsed.config, read_machine(root))
    print_findings(source, plan.findings, err=True)
    if plan.errors:
        click.echo(f"{source}: not applied: this machine cannot take it as it is", err=True)
        return EXIT_FAILED
    try:
        execute(plan.actions, root)
    except (CommandError, OSError, KeyError) as error:
        click.echo(f"{source}: applying failed: {error}", err=True)
        return EXIT_FAILED
    return EXIT_OK


@click.command(context_settings=HELP_OPTIONS)
@version_option("flotilla-cloudinit")
@click.option(
    "--from-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Read user-data from this file.",
)
@click.option(
    "--from-configdrive",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Read DIR/openstack/latest/user_data from a mounted config drive (none: nothing to do).",
)
@click.option("--validate", is_flag=True, help="Only check: print findings, exit 1 on any.")
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/"),
    show_default=True,
    hidden=True,  # for tests: files go under it, commands still run on this machine
)
def main(from_file: Path | None, from_configdrive: Path | None, validate: bool, root: Path) -> None:
    """Check or apply a coreos-cloudinit cloud-config."""
    if (from_file is None) == (from_configdrive is None):
        raise click.UsageError("give exactly one of --from-file and --from-configdrive")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    source = read_source(from_file, from_configdrive)
    if source is None:
        sys.exit(EXIT_OK)
    data = source.read_bytes()
    if validate:
        findings = parse_cloud_config(data).findings
        print_findings(source, findings, err=False)
        sys.exit(EXIT_FAILED if findings else EXIT_OK)
    sys.exit(apply_user_data(source, data, root))


if __name__ == "__main__":
    main()
