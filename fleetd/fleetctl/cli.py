"""fleetctl: argument parsing and output. The work is done by a driver: fleet's HTTP API
(`--driver=API`, the default, api_driver.ApiClient) or etcd directly (`--driver=etcd`,
fleetd.client.FleetClient); both offer the same operations.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import click

from .. import __version__ as VERSION
from ..client import ClientError, FleetClient
from ..keys import DEFAULT_PREFIX, Keys
from ..model import DesiredState
from ..registry import Registry, RegistryError
from ..status import current_state, is_global
from ..unitfile import parse_unit_file
from ..unitname import mangle_name, parse_unit_name
from .api_driver import ApiClient, ApiUnavailable
from .remote import SshOptions, run_on
from .tables import FieldError, select_fields, table
from .views import (
    MACHINE_FIELDS,
    UNIT_FIELDS,
    UNIT_FILE_FIELDS,
    legend_of,
    machine_records,
    unit_file_records,
    unit_records,
)

T = TypeVar("T")
POLL_SECONDS = 0.25
DEFAULT_ENDPOINTS = {"API": "unix:///var/run/fleet.sock", "etcd": "http://127.0.0.1:2379"}
Driver = FleetClient | ApiClient  # the same operations, over etcd or over fleet's API
ROUND_SECONDS = 2.0


class Failure(Exception):
    """A command failed; the message is what fleetctl prints, exit status 1."""


def run(ctx: click.Context, action: Callable[[Driver], Awaitable[T]]) -> T:
    """Run `action` with the driver the global options chose; its errors become one line."""
    options = ctx.find_root().obj
    endpoint = options["endpoint"] or DEFAULT_ENDPOINTS[options["driver"]]

    async def with_driver() -> T:
        if options["driver"] == "etcd":
            registry = Registry.open(
                endpoint.split(",")[0], Keys(options["prefix"]), options["timeout"]
            )
            async with registry as opened:
                return await action(FleetClient(opened))
        async with ApiClient.open(endpoint, options["timeout"]) as api:
            return await action(api)

    try:
        return asyncio.run(with_driver())
    except RegistryError as error:
        raise Failure(f"error talking to etcd at {endpoint} (is etcd up?): {error}") from error
    except ApiUnavailable as error:
        raise Failure(
            f"error talking to fleet at {endpoint} (is fleetd running?): {error}"
        ) from error
    except ClientError as error:
        raise Failure(str(error)) from error
    except ValueError as error:  # a malformed endpoint
        raise Failure(str(error)) from error


class FleetctlGroup(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (Failure, FieldError) as error:
            click.echo(str(error), err=True)
            sys.exit(1)


@click.group(cls=FleetctlGroup, context_settings={"auto_envvar_prefix": "FLEETCTL"})
@click.option(
    "--endpoint",
    default=None,
    help="fleet's API [unix:///var/run/fleet.sock] or, with --driver=etcd, etcd URLs "
    "[http://127.0.0.1:2379].",
)
@click.option("--driver", type=click.Choice(["API", "etcd"]), default="API", show_default=True)
@click.option("--request-timeout", type=float, default=3.0, show_default=True)
@click.option("--ssh-username", default="core", show_default=True)
@click.option("--ssh-timeout", type=float, default=10.0, show_default=True)
@click.option("--strict-host-key-checking", type=bool, default=True, show_default=True)
@click.option("--known-hosts-file", default="~/.fleetctl/known_hosts", show_default=True)
@click.option("--etcd-key-prefix", default=DEFAULT_PREFIX, show_default=True)
@click.version_option(VERSION, "--version", "-v", message="fleetctl version %(version)s")
@click.pass_context
def main(
    ctx: click.Context,
    endpoint: str | None,
    driver: str,
    request_timeout: float,
    ssh_username: str,
    ssh_timeout: float,
    strict_host_key_checking: bool,
    known_hosts_file: str,
    etcd_key_prefix: str,
) -> None:
    """fleetctl: control a Flotilla (fleet) cluster."""
    ssh = SshOptions(ssh_username, 22, strict_host_key_checking, known_hosts_file, ssh_timeout)
    ctx.obj = {
        "endpoint": endpoint,
        "driver": driver,
        "timeout": request_timeout,
        "prefix": etcd_key_prefix,
        "ssh": ssh,
    }


@main.command()
@click.argument("units", nargs=-1)
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
        exit_status = max(exit_status, on_unit_machines(ctx, mangle_name(unit), command, ssh_port))
    sys.exit(exit_status)


@main.command()
@click.argument("units", nargs=-1)
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
    sys.exit(on_unit_machines(ctx, name, command, ssh_port))


def on_unit_machines(ctx: click.Context, name: str, command: list[str], ssh_port: int) -> int:
    """Run command where the unit runs: its machine, or each machine of a global unit."""

    async def where(client: Driver) -> list[tuple[str, str]]:
        units = await client.units()
        if name not in units:
            raise Failure(f"Unit {name} does not exist.")
        machines = await client.machines()
        status = units[name]
        if is_global(parse_unit_file(await client.unit_file(name), name)):
            targets = sorted(status.states)
        else:
            targets = [status.machine] if status.machine else []
        if not targets:
            raise Failure(f"Unit {name} does not appear to be loaded.")
        return [(m, machines[m].ip if m in machines else "") for m in targets]

    ssh = replace(ctx.find_root().obj["ssh"], port=ssh_port)
    return max(run_on(machine_id, ip, command, ssh) for machine_id, ip in run(ctx, where))


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"fleetctl version {VERSION}")


# -- creating units: fleet's lazy creation from the registry, files and templates --------------


def local_files(arguments: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Mangled unit names, and the unit files found next to them on disk (with templates)."""
    names, files = [], {}
    for argument in arguments:
        name = mangle_name(argument)
        names.append(name)
        path = Path(argument)
        if path.is_file():
            files[name] = path.read_text()
        template = parse_unit_name(name).template if "@" in name else None
        if template and (path.parent / template).is_file():
            files.setdefault(template, (path.parent / template).read_text())
    return names, files


# Which desired states `--replace` may replace a unit in, per command (as fleet).
REPLACEABLE = {
    "submit": {DesiredState.INACTIVE},
    "load": {DesiredState.INACTIVE, DesiredState.LOADED},
    "start": {DesiredState.INACTIVE, DesiredState.LOADED, DesiredState.LAUNCHED},
}


async def compare_with_registry(
    client: Driver, files: dict[str, str], replace: bool, command: str
) -> dict[str, str]:
    """Local files of units the registry lacks. A unit the registry has with another body is
    used as the registry has it (with a warning) or, with --replace, replaced by the file."""
    jobs = await client.jobs()
    new = {}
    for name, text in files.items():
        if name not in jobs:
            new[name] = text
            continue
        unit = parse_unit_file(text, name)
        if unit.hash == jobs[name].hash:
            if replace:
                click.echo(f"Found same Unit({name}) in Registry, nothing to do", err=True)
        elif not replace:
            click.echo(
                f"WARNING: Unit {name} in registry differs from local unit file {name}."
                " Add --replace to override.",
                err=True,
            )
        elif jobs[name].desired not in REPLACEABLE[command]:
            click.echo(
                f"Warning: can not replace Unit({name}) in state '{jobs[name].desired}',"
                " use the appropriate command",
                err=True,
            )
        else:
            # Replaced in place: the agent unloads the old file and loads the new one.
            await client.replace(name, unit, jobs[name].desired)
    return new


async def creating(creation: Awaitable[T]) -> T:
    try:
        return await creation
    except ClientError as error:
        raise Failure(f"Error creating units: {error}") from error


# -- waiting ----------------------------------------------------------------------------------


async def wait_for(client: Driver, names: list[str], target: str, attempts: int) -> None:
    """Wait until each unit reaches `target`, printing fleet's lines; fail with the engine's
    reason when a unit cannot be placed (fleet hung here forever)."""
    machines = await client.machines()
    pending = set(names)
    rounds = 0
    while pending:
        units = await client.units()
        for name in sorted(pending):
            status = units[name]
            if status.reason and status.machine is None and target != "inactive":
                raise Failure(
                    f"Error waiting for units: unit {name} cannot be placed: {status.reason}"
                )
            if current_state(status, False) == target:
                pending.discard(name)
                where = (
                    f" on {legend_of(status.machine, machines, False)}" if status.machine else ""
                )
                click.echo(f"Unit {name} {target}{where}")
        if pending:
            await asyncio.sleep(POLL_SECONDS)
            rounds += 1
            if attempts > 0 and rounds * POLL_SECONDS >= attempts * ROUND_SECONDS:
                raise Failure(
                    f"Error waiting for units: timed out waiting for unit "
                    f"{sorted(pending)[0]} to report state {target}"
                )


async def split_global(client: Driver, names: list[str]) -> tuple[list[str], list[str]]:
    """(non-global, global) units; every unit file in one read, not one read per unit."""
    texts = await client.unit_files()
    global_units = {n for n in names if n in texts and is_global(parse_unit_file(texts[n], n))}
    return [n for n in names if n not in global_units], [n for n in names if n in global_units]


def block_options(function: Callable[..., None]) -> Callable[..., None]:
    function = click.option("--no-block", is_flag=True, help="Do not wait for the units.")(function)
    return click.option(
        "--block-attempts",
        type=int,
        default=0,
        show_default=True,
        help="Rounds of 2 s to wait (0: until done).",
    )(function)


async def set_and_wait(
    client: Driver, names: list[str], target: str, verb: str, no_block: bool, attempts: int
) -> None:
    local, globals_ = await split_global(client, names)
    if no_block:
        for name in local:
            click.echo(f"Triggered unit {name} {verb}")
    for name in globals_:
        click.echo(f"Triggered global unit {name} {verb}")
    if not no_block:
        await wait_for(client, local, target, attempts)


# -- commands ---------------------------------------------------------------------------------


@main.command()
@click.argument("units", nargs=-1)
@click.option("--replace", is_flag=True, help="Replace units whose local file differs.")
@click.pass_context
def submit(ctx: click.Context, units: tuple[str, ...], replace: bool) -> None:
    """Upload units to the cluster without starting them."""
    if not units:
        click.echo("No units given", err=True)
        return
    names, files = local_files(units)

    async def action(client: Driver) -> list[str]:
        new = await compare_with_registry(client, files, replace, "submit")
        created = await creating(client.create(names, new, DesiredState.INACTIVE))
        return [name for name in names if name in created]

    for name in run(ctx, action):
        click.echo(f"Unit {name} inactive")


def activate(
    ctx: click.Context,
    units: tuple[str, ...],
    desired: DesiredState,
    target: str,
    verb: str,
    no_block: bool,
    attempts: int,
    replace: bool,
) -> None:
    if not units:
        click.echo("No units given", err=True)
        return
    names, files = local_files(units)

    async def action(client: Driver) -> None:
        new = await compare_with_registry(client, files, replace, verb)
        await creating(client.create(names, new, DesiredState.INACTIVE))
        await client.set_desired(names, desired)
        await set_and_wait(client, names, target, verb, no_block, attempts)

    run(ctx, action)


@main.command()
@click.argument("units", nargs=-1)
@block_options
@click.option("--replace", is_flag=True, help="Replace units whose local file differs.")
@click.pass_context
def load(
    ctx: click.Context, units: tuple[str, ...], no_block: bool, block_attempts: int, replace: bool
) -> None:
    """Schedule units onto machines without starting them."""
    activate(ctx, units, DesiredState.LOADED, "loaded", "load", no_block, block_attempts, replace)


@main.command()
@click.argument("units", nargs=-1)
@block_options
@click.option("--replace", is_flag=True, help="Replace units whose local file differs.")
@click.pass_context
def start(
    ctx: click.Context, units: tuple[str, ...], no_block: bool, block_attempts: int, replace: bool
) -> None:
    """Schedule and start units."""
    activate(
        ctx, units, DesiredState.LAUNCHED, "launched", "start", no_block, block_attempts, replace
    )


def known_units(ctx: click.Context, units: tuple[str, ...]) -> list[str]:
    """The named units the registry has (fleet skips the others silently)."""
    names = [mangle_name(unit) for unit in units]

    async def action(client: Driver) -> list[str]:
        jobs = await client.jobs()
        return [name for name in names if name in jobs]

    known = run(ctx, action)
    if not known:
        click.echo("Units not found in registry", err=True)
    return known


def change(
    ctx: click.Context,
    units: tuple[str, ...],
    desired: DesiredState,
    target: str,
    verb: str,
    no_block: bool,
    attempts: int,
) -> list[str]:
    known = known_units(ctx, units)
    if known:

        async def action(client: Driver) -> None:
            await client.set_desired(known, desired)
            await set_and_wait(client, known, target, verb, no_block, attempts)

        run(ctx, action)
    return known


@main.command()
@click.argument("units", nargs=-1)
@block_options
@click.pass_context
def stop(ctx: click.Context, units: tuple[str, ...], no_block: bool, block_attempts: int) -> None:
    """Stop units (they stay loaded on their machine)."""
    known = change(ctx, units, DesiredState.LOADED, "loaded", "stop", no_block, block_attempts)
    if known:
        click.echo(f"Successfully stopped units {format_list(known)}.", err=True)


@main.command()
@click.argument("units", nargs=-1)
@block_options
@click.pass_context
def unload(ctx: click.Context, units: tuple[str, ...], no_block: bool, block_attempts: int) -> None:
    """Unschedule units (stopping them)."""
    known = change(
        ctx, units, DesiredState.INACTIVE, "inactive", "unload", no_block, block_attempts
    )
    if known:
        click.echo(f"Successfully unloaded units {format_list(known)}.", err=True)


@main.command()
@click.argument("units", nargs=-1)
@click.pass_context
def destroy(ctx: click.Context, units: tuple[str, ...]) -> None:
    """Remove units from the cluster."""
    known = known_units(ctx, units)
    if known:
        run(ctx, lambda client: client.destroy(known))
    for name in known:
        click.echo(f"Destroyed {name}")


@main.command()
@click.argument("units", nargs=-1)
@click.option(
    "--block-attempts",
    type=int,
    default=0,
    show_default=True,
    help="Rounds of 2 s to wait (0: until done).",
)
@click.pass_context
def restart(ctx: click.Context, units: tuple[str, ...], block_attempts: int) -> None:
    """Stop and start units again; global units on every machine that runs them."""
    known = known_units(ctx, units)

    async def action(client: Driver) -> None:
        statuses = await client.units()
        local, globals_ = await split_global(client, known)
        for name in local:
            state = current_state(statuses[name], False)
            if state == "inactive":
                click.echo(f"Unable to restart unit {name} in state inactive", err=True)
                continue
            if state == "launched":
                await client.set_desired([name], DesiredState.LOADED)
                await wait_for(client, [name], "loaded", block_attempts)
            await client.set_desired([name], DesiredState.LAUNCHED)
            await wait_for(client, [name], "launched", block_attempts)
        for name in globals_:
            await restart_global(client, name, block_attempts)

    if known:
        run(ctx, action)


async def restart_global(client: Driver, name: str, attempts: int) -> None:
    """fleet's restart did nothing for global units; here: stopped everywhere, then started."""
    await client.set_desired([name], DesiredState.LOADED)
    await client.wait_until(lambda u: not u[name].active_on(), attempts * ROUND_SECONDS or 3600)
    await client.set_desired([name], DesiredState.LAUNCHED)
    units = await client.wait_until(
        lambda u: bool(u[name].states) and len(u[name].active_on()) == len(u[name].states),
        attempts * ROUND_SECONDS or 3600,
    )
    machines = await client.machines()
    for machine_id in units[name].active_on():
        click.echo(f"Unit {name} launched on {legend_of(machine_id, machines, False)}")


def format_list(names: list[str]) -> str:
    return "[" + " ".join(names) + "]"


@main.command()
@click.argument("units", nargs=-1)
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
    return click.option("--fields", default=fields, show_default=True, help="Columns to print.")(
        function
    )


@main.command("list-units")
@click.pass_context
def list_units(ctx: click.Context, fields: str, full: bool, no_legend: bool) -> None:
    """List the units' systemd states, one row per machine running them."""
    chosen = select_fields(fields, UNIT_FIELDS)

    async def action(client: Driver) -> str:
        units, machines = await client.units(), await client.machines()
        return table(unit_records(units, machines, full), chosen, not no_legend)

    click.echo(run(ctx, action), nl=False)


@main.command("list-unit-files")
@click.pass_context
def list_unit_files(ctx: click.Context, fields: str, full: bool, no_legend: bool) -> None:
    """List the units in the cluster with their desired and current states."""
    chosen = select_fields(fields, UNIT_FILE_FIELDS)
    if "tmachine" in chosen:
        click.echo('WARNING: The "tmachine" field is deprecated. Use "target" instead', err=True)

    async def action(client: Driver) -> str:
        units, machines = await client.units(), await client.machines()
        texts = await client.unit_files()
        files = {name: parse_unit_file(texts[name], name) for name in units}
        return table(unit_file_records(units, files, machines, full), chosen, not no_legend)

    click.echo(run(ctx, action), nl=False)


@main.command("list-machines")
@click.pass_context
def list_machines(ctx: click.Context, fields: str, full: bool, no_legend: bool) -> None:
    """List the machines in the cluster."""
    chosen = select_fields(fields, MACHINE_FIELDS)

    async def action(client: Driver) -> str:
        return table(machine_records(await client.machines(), full), chosen, not no_legend)

    click.echo(run(ctx, action), nl=False)


listing_options(list_units, "unit,machine,active,sub")
listing_options(list_unit_files, "unit,hash,dstate,state,target", short_full=False)
listing_options(list_machines, "machine,ip,metadata")
