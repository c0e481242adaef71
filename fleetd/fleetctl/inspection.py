"""fleetctl's commands that look at the cluster: cat, list-*, status, journal, ssh."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace

import click

from ..client import ClientError
from ..status import current_state, is_global
from ..unitfile import parse_unit_file
from ..unitname import mangle_name
from .completion import complete_machines, complete_units, complete_units_and_machines
from .driver import Driver
from .known_hosts import HostKeyError
from .remote import AddressError, confirm, local_machine_id, machine_address, run_on, ssh_argv
from .session import Failure, run
from .tables import select_fields, table
from .views import (
    MACHINE_FIELDS,
    UNIT_FIELDS,
    UNIT_FILE_FIELDS,
    machine_documents,
    machine_fields,
    machine_records,
    unit_documents,
    unit_file_documents,
    unit_file_records,
    unit_records,
)


@click.command()
@click.argument("units", nargs=-1, shell_complete=complete_units)
@click.option("--ssh-port", type=int, default=22, show_default=True)
@click.option("--no-block", is_flag=True, hidden=True)  # fleet's own tests pass it: ignored
@click.pass_context
def status(ctx: click.Context, units: tuple[str, ...], ssh_port: int, no_block: bool) -> None:
    """Show systemctl status of units on their machines (every machine for a global unit)."""
    exit_status = 0
    for index, unit in enumerate(units):
        if index:
            click.echo()
        command = ["systemctl", "status", "-l", mangle_name(unit)]
        exit_status = max(
            exit_status, on_unit_machines(ctx, mangle_name(unit), command, ssh_port, "loaded")
        )
    sys.exit(exit_status)


@click.command()
@click.argument("units", nargs=-1, shell_complete=complete_units)
@click.option("--lines", "-n", type=int, default=10, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new entries.")
@click.option("--output", default="short", show_default=True, help="journalctl output mode.")
@click.option("--sudo", is_flag=True, help="Run journalctl with sudo.")
@click.option("--ssh-port", type=int, default=22, show_default=True)
@click.pass_context
def journal(
    ctx: click.Context,
    units: tuple[str, ...],
    lines: int,
    follow: bool,
    output: str,
    sudo: bool,
    ssh_port: int,
) -> None:
    """Show a unit's journal from its machine (every machine for a global unit)."""
    if len(units) != 1:
        raise Failure("One unit file must be provided.")
    name = mangle_name(units[0])
    command = [
        *(["sudo"] if sudo else []),
        "journalctl",
        "--unit",
        name,
        "--no-pager",
        "-n",
        str(lines),
        "--output",
        output,
        *(["-f"] if follow else []),
    ]
    sys.exit(on_unit_machines(ctx, name, command, ssh_port, "running"))


def on_unit_machines(
    ctx: click.Context, name: str, command: list[str], ssh_port: int, wanted: str
) -> int:
    """Run command where the unit runs: its machine, or each machine of a global unit. A unit
    whose current state is inactive is refused in fleet's words: it "does not appear to be"
    `wanted` (loaded for status, running for journal)."""

    async def where(client: Driver) -> list[tuple[str, str]]:
        units = await client.units()
        if name not in units:
            raise Failure(f"Unit {name} does not exist.")
        machines = await client.machines()
        status = units[name]
        if is_global(parse_unit_file(await client.unit_file(name), name)):
            targets = sorted(status.states)
        elif current_state(status, False) != "inactive":
            targets = [status.machine] if status.machine else []
        else:
            targets = []
        if not targets:
            raise Failure(f"Unit {name} does not appear to be {wanted}.")
        return [(m, machines[m].ip if m in machines else "") for m in targets]

    ssh = replace(ctx.find_root().obj["ssh"], port=ssh_port)
    targets = run(ctx, where)
    try:  # every address and host key checked before the command runs anywhere
        remote = [machine_address(m, ip) for m, ip in targets if m != local_machine_id()]
        for address in remote:
            confirm(address, ssh)
    except (AddressError, HostKeyError) as error:
        raise Failure(str(error)) from error
    return max(run_on(machine_id, ip, command, ssh) for machine_id, ip in targets)


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("target", required=False, shell_complete=complete_units_and_machines)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--machine",
    default="",
    shell_complete=complete_machines,
    help="Machine id (or a prefix of it).",
)
@click.option("--unit", default="", shell_complete=complete_units, help="A unit: its machine.")
@click.option("--forward-agent", "-A", is_flag=True, help="Forward the SSH agent.")
@click.option("--ssh-port", type=int, default=22, show_default=True)
@click.pass_context
def ssh(
    ctx: click.Context,
    target: str | None,
    command: tuple[str, ...],
    machine: str,
    unit: str,
    forward_agent: bool,
    ssh_port: int,
) -> None:
    """Open a shell (or run COMMAND) on a machine, named by id prefix or by a unit it runs."""
    if machine and unit:
        raise Failure("Both machine and unit flags provided, please specify only one.")
    if not (machine or unit) and target is None:
        raise Failure("Provide a machine or unit.")
    if machine or unit:
        command = (target, *command) if target else command
    if command[:1] == ("--",):  # fleet trims it; ssh now gets its own `--` before the machine
        command = command[1:]
    ip = run(ctx, lambda client: ssh_address(client, target, machine, unit))
    options = replace(ctx.find_root().obj["ssh"], port=ssh_port)
    try:
        confirm(ip, options)
    except HostKeyError as error:
        raise Failure(str(error)) from error
    argv = ssh_argv(ip, command, options, tty=not command, forward_agent=forward_agent)
    sys.exit(subprocess.run(argv, check=False).returncode)


async def ssh_address(client: Driver, target: str | None, machine: str, unit: str) -> str:
    """The IP of the machine fleetctl ssh means, with fleet's errors."""
    machines = await client.machines()
    units = await client.units() if (unit or target) and not machine else {}
    by_id = (
        [m for m in machines.values() if m.id.startswith(machine or target or "\0")]
        if not unit
        else []
    )
    name = mangle_name(unit or target or "") if (unit or target) and not machine else ""
    by_unit = units.get(name)
    if by_id and by_unit is not None and not (machine or unit):
        raise Failure(
            f"Unable to proceed: ambiguous argument, both machine and unit found for {target}"
        )
    if by_unit is not None:
        if by_unit.machine is None:
            raise Failure(
                f"Unit {name} is not placed on a machine (global units have no one machine)."
            )
        found = machines.get(by_unit.machine)
    elif len(by_id) > 1:
        raise Failure("found more than one machine")
    elif by_id:
        found = by_id[0]
    else:
        raise Failure("could not find matching unit or machine")
    if found is None:
        raise Failure("Could not determine address of machine.")
    try:
        return machine_address(found.id, found.ip)
    except AddressError as error:
        raise Failure(str(error)) from error


@click.command()
@click.argument("units", nargs=-1, shell_complete=complete_units)
@click.pass_context
def cat(ctx: click.Context, units: tuple[str, ...]) -> None:
    """Print a unit file as the cluster stores it."""
    if len(units) != 1:
        raise Failure("One unit file must be provided")
    name = mangle_name(units[0])

    async def action(client: Driver) -> str:
        try:
            return await client.unit_file(name)
        except ClientError as error:
            raise Failure(f"Unit {name} not found") from error

    click.echo(run(ctx, action), nl=False)


def listing_options(
    function: Callable[..., None], fields: str, short_full: bool = True
) -> Callable[..., None]:
    full_flags = ["--full", "-l"] if short_full else ["--full"]
    function = click.option(
        *full_flags, "full", is_flag=True, help="Do not shorten ids and hashes."
    )(function)
    function = click.option("--no-legend", is_flag=True, help="Do not print a header.")(function)
    function = click.option(
        "--output",
        "-o",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="fleet's table, or one JSON document with every field, full ids and hashes "
        "(--fields, --full and --no-legend shape the table only).",
    )(function)
    return click.option("--fields", default=fields, show_default=True, help="Columns to print.")(
        function
    )


@click.command("list-units")
@click.pass_context
def list_units(ctx: click.Context, fields: str, full: bool, no_legend: bool, output: str) -> None:
    """List the units' systemd states, one row per machine running them."""
    chosen = select_fields(fields, UNIT_FIELDS)

    async def action(client: Driver) -> str:
        units, machines = await client.units(), await client.machines()
        if output == "json":
            return as_json(unit_documents(units, machines))
        return table(unit_records(units, machines, full), chosen, not no_legend)

    click.echo(run(ctx, action), nl=False)


@click.command("list-unit-files")
@click.pass_context
def list_unit_files(
    ctx: click.Context, fields: str, full: bool, no_legend: bool, output: str
) -> None:
    """List the units in the cluster with their desired and current states."""
    chosen = select_fields(fields, UNIT_FILE_FIELDS)
    if "tmachine" in chosen and output == "table":
        click.echo('WARNING: The "tmachine" field is deprecated. Use "target" instead', err=True)

    async def action(client: Driver) -> str:
        (units, texts), machines = await client.units_and_files(), await client.machines()
        files = {name: parse_unit_file(texts[name], name) for name in units}
        if output == "json":
            return as_json(unit_file_documents(units, files, machines))
        return table(unit_file_records(units, files, machines, full), chosen, not no_legend)

    click.echo(run(ctx, action), nl=False)


@click.command("list-machines")
@click.pass_context
def list_machines(
    ctx: click.Context, fields: str, full: bool, no_legend: bool, output: str
) -> None:
    """List the machines in the cluster (STATE: schedulable, draining or drained)."""
    chosen = select_fields(fields, MACHINE_FIELDS)
    given = ctx.get_parameter_source("fields") != click.core.ParameterSource.DEFAULT

    async def action(client: Driver) -> str:
        machines, states = await client.machines_and_states()
        if output == "json":
            return as_json(machine_documents(machines, states))
        columns = machine_fields(chosen, given, states)
        return table(machine_records(machines, full, states), columns, not no_legend)

    try:
        listing = run(ctx, action)
    except Failure as error:
        raise Failure(
            f"Error retrieving list of active machines from fleet API ({error})\n"
            "Possible issues:\n"
            "  etcd is unhealthy and/or lost quorum\n"
            "  connection cannot be established to any etcd servers"
        ) from error
    click.echo(listing, nl=False)


def as_json(document: object) -> str:
    return json.dumps(document, indent=2) + "\n"


listing_options(list_units, "unit,machine,active,sub")
listing_options(list_unit_files, "unit,hash,dstate,state,target", short_full=False)
listing_options(list_machines, "machine,ip,metadata")
