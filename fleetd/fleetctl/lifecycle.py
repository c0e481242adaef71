"""fleetctl's commands that change units: submit, load, start, stop, unload, destroy, restart,
with fleet's lazy creation, --replace and waiting."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import click

from ..client import ClientError, template_of
from ..model import DesiredState
from ..status import current_state, is_global
from ..unitfile import parse_unit_file
from ..unitname import mangle_name
from .session import POLL_SECONDS, ROUND_SECONDS, Driver, Failure, T, run
from .views import (
    legend_of,
)

# -- creating units: fleet's lazy creation from the registry, files and templates --------------


def local_files(arguments: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Mangled unit names, and the unit files found next to them on disk (with templates)."""
    names, files = [], {}
    for argument in arguments:
        name = mangle_name(argument)
        names.append(name)
        path = Path(argument)
        if (text := read_unit_file(path)) is not None:
            files[name] = text
        template = template_of(name)  # a bad name is refused when it is created, not here
        if template and (text := read_unit_file(path.parent / template)) is not None:
            files.setdefault(template, text)
    return names, files


def read_unit_file(path: Path) -> str | None:
    """The file's text; None when there is no such file (or no file can have that name, as
    one longer than the file system allows: the name's own check then says what is wrong)."""
    try:
        if not path.is_file():
            return None
        return path.read_text()
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            return None
        raise Failure(f"cannot read {path}: {error.strerror}") from error


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
            await creating(client.replace(name, unit, jobs[name].desired))
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


@click.command()
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


@click.command()
@click.argument("units", nargs=-1)
@block_options
@click.option("--replace", is_flag=True, help="Replace units whose local file differs.")
@click.pass_context
def load(
    ctx: click.Context, units: tuple[str, ...], no_block: bool, block_attempts: int, replace: bool
) -> None:
    """Schedule units onto machines without starting them."""
    activate(ctx, units, DesiredState.LOADED, "loaded", "load", no_block, block_attempts, replace)


@click.command()
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


@click.command()
@click.argument("units", nargs=-1)
@block_options
@click.pass_context
def stop(ctx: click.Context, units: tuple[str, ...], no_block: bool, block_attempts: int) -> None:
    """Stop units (they stay loaded on their machine)."""

    async def inactive(client: Driver) -> list[str]:
        statuses = await client.units()
        names = [mangle_name(unit) for unit in units]
        return [n for n in names if n in statuses and statuses[n].desired == DesiredState.INACTIVE]

    for name in run(ctx, inactive):
        raise Failure(f"Unable to stop unit {name} in state inactive")
    known = change(ctx, units, DesiredState.LOADED, "loaded", "stop", no_block, block_attempts)
    if known:
        click.echo(f"Successfully stopped units {format_list(known)}.", err=True)


@click.command()
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


@click.command()
@click.argument("units", nargs=-1)
@click.pass_context
def destroy(ctx: click.Context, units: tuple[str, ...]) -> None:
    """Remove units from the cluster."""
    known = known_units(ctx, units)
    if known:
        run(ctx, lambda client: client.destroy(known))
    for name in known:
        click.echo(f"Destroyed {name}")


@click.command()
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
