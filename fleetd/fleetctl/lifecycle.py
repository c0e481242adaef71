"""fleetctl's commands that change units: submit, load, start, stop, unload, destroy, restart,
with fleet's lazy creation (creation.py), --replace and waiting (waiting.py).

Each command reads what it decides from once (the units, their files), checks everything,
then writes; only the waiting polls.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable, Collection, Sequence

import click

from ..client import ClientError
from ..model import DesiredState, UnitStatus
from ..status import current_state, is_global
from ..unitfile import parse_unit_file
from ..unitname import mangle_name
from .completion import complete_units, complete_units_or_files
from .creation import ReadError, arguments_of, plan_creation, read_unit_file
from .driver import Driver
from .session import Failure, T, run
from .waiting import report_and_wait, wait_destroyed, wait_for, wait_restarted_everywhere

log = logging.getLogger("fleetctl")
SIGN_WARNING = "WARNING: The signed/verified units feature is DEPRECATED and cannot be used."


async def creating(creation: Awaitable[T]) -> T:
    try:
        return await creation
    except (ClientError, ReadError) as error:
        raise Failure(f"Error creating units: {error}") from error


def global_units(files: dict[str, str], names: Sequence[str]) -> set[str]:
    """The global ones among `names` (a file that no longer parses counts as not global)."""
    found = set()
    for name in names:
        try:
            if name in files and is_global(parse_unit_file(files[name], name)):
                found.add(name)
        except ValueError:
            continue
    return found


async def create_units(
    driver: Driver,
    units: tuple[str, ...],
    command: str,
    replace: str | None,
    attempts: int,
) -> tuple[list[str], dict[str, DesiredState], set[str]]:
    """fleet's lazy creation, then its `Unit <n> inactive` line for each unit created or (fleet
    style) replaced. The unit names, each one's desired state now, and the global ones."""
    arguments = arguments_of(units)
    jobs, files = await driver.jobs_and_files()
    try:
        plan = plan_creation(arguments, jobs, files, command, replace is not None, read_unit_file)
    except (ClientError, ReadError) as error:
        raise Failure(f"Error creating units: {error}") from error
    for note in plan.notes:
        click.echo(note)
    for warning in plan.warnings:
        click.echo(warning, err=True)
    if plan.new:
        await creating(driver.create(plan.new))
    for name in plan.new:
        click.echo(f"Unit {name} inactive")
    desired = {name: job.desired for name, job in jobs.items()}
    desired.update(dict.fromkeys(plan.new, DesiredState.INACTIVE))
    names = [argument.name for argument in arguments]
    globals_ = global_units(files, names) | {
        n for n, unit in {**plan.new, **plan.replaced}.items() if is_global(unit)
    }
    for name in plan.replaced:
        # fleet's replace is a new unit under the old name: back to inactive, unscheduled,
        # placed again by the engine (maybe elsewhere). --replace-in-place keeps it where it is.
        keep = replace == "in-place"
        desired[name] = desired[name] if keep else DesiredState.INACTIVE
    if plan.replaced:
        replaced = {name: (unit, desired[name]) for name, unit in plan.replaced.items()}
        await creating(driver.replace(replaced))
    if replace != "in-place" and plan.replaced:
        local = [name for name in plan.replaced if name not in globals_]
        await wait_for(driver, local, "inactive", attempts)
        for name in plan.replaced:
            if name in globals_:
                click.echo(f"Unit {name} inactive")
    return names, desired, globals_


def refuse_signing(sign: bool) -> None:
    """fleet dropped signed units; asking for them is refused before anything is done."""
    if sign:
        click.echo(SIGN_WARNING, err=True)
        sys.exit(2)


def replace_mode(replace: bool, replace_in_place: bool) -> str | None:
    return "in-place" if replace_in_place else "fleet" if replace else None


def creation_options(function: Callable[..., None]) -> Callable[..., None]:
    function = click.option(
        "--sign", is_flag=True, help="DEPRECATED - this option cannot be used."
    )(function)
    function = click.option(
        "--replace-in-place",
        is_flag=True,
        help="Replace units whose local file differs without unscheduling them: the unit "
        "keeps its machine and desired state, and its machine reloads the new file.",
    )(function)
    return click.option(
        "--replace",
        is_flag=True,
        help="Replace units whose local file differs, as fleet does: the unit goes back to "
        "inactive and is placed again (maybe on another machine).",
    )(function)


def block_options(function: Callable[..., None]) -> Callable[..., None]:
    function = click.option("--no-block", is_flag=True, help="Do not wait for the units.")(function)
    return click.option(
        "--block-attempts",
        type=int,
        default=0,
        show_default=True,
        help="Rounds of 2 s to wait (0: until done).",
    )(function)


# -- submit, load, start ------------------------------------------------------------------------


@click.command()
@click.argument("units", nargs=-1, shell_complete=complete_units_or_files)
@creation_options
@click.pass_context
def submit(
    ctx: click.Context,
    units: tuple[str, ...],
    replace: bool,
    replace_in_place: bool,
    sign: bool,
) -> None:
    """Upload units to the cluster without starting them."""
    refuse_signing(sign)
    if not units:
        click.echo("No units given", err=True)
        return

    async def action(driver: Driver) -> None:
        mode = replace_mode(replace, replace_in_place)
        await create_units(driver, units, "submit", mode, 0)

    run(ctx, action)


def activate(
    ctx: click.Context,
    units: tuple[str, ...],
    target: DesiredState,
    verb: str,
    no_block: bool,
    attempts: int,
    replace: str | None,
) -> None:
    if not units:
        click.echo("No units given", err=True)
        return

    async def action(driver: Driver) -> None:
        names, desired, globals_ = await create_units(driver, units, verb, replace, attempts)
        triggered = []
        for name in names:
            if desired[name] == target:  # fleet: nothing to do, said in its debug log
                log.debug("Unit(%s) already %s, skipping.", name, target.value)
            else:
                triggered.append(name)
        if triggered:
            await driver.set_desired(triggered, target)
        await report_and_wait(driver, triggered, globals_, target.value, verb, no_block, attempts)

    run(ctx, action)


@click.command()
@click.argument("units", nargs=-1, shell_complete=complete_units_or_files)
@block_options
@creation_options
@click.pass_context
def load(
    ctx: click.Context,
    units: tuple[str, ...],
    no_block: bool,
    block_attempts: int,
    replace: bool,
    replace_in_place: bool,
    sign: bool,
) -> None:
    """Schedule units onto machines without starting them."""
    refuse_signing(sign)
    mode = replace_mode(replace, replace_in_place)
    activate(ctx, units, DesiredState.LOADED, "load", no_block, block_attempts, mode)


@click.command()
@click.argument("units", nargs=-1, shell_complete=complete_units_or_files)
@block_options
@creation_options
@click.pass_context
def start(
    ctx: click.Context,
    units: tuple[str, ...],
    no_block: bool,
    block_attempts: int,
    replace: bool,
    replace_in_place: bool,
    sign: bool,
) -> None:
    """Schedule and start units."""
    refuse_signing(sign)
    mode = replace_mode(replace, replace_in_place)
    activate(ctx, units, DesiredState.LAUNCHED, "start", no_block, block_attempts, mode)


# -- stop, unload, destroy, restart -------------------------------------------------------------


class NotFound(Exception):
    """None of the named units is in the registry (fleet says so and exits 0)."""


def known_names(units: tuple[str, ...], present: Collection[str]) -> list[str]:
    """The named units the registry has, each once (fleet skips the others silently)."""
    names = list(dict.fromkeys(mangle_name(unit) for unit in units))
    known = [name for name in names if name in present]
    if not known:
        raise NotFound
    return known


def run_on_known(ctx: click.Context, action: Callable[[Driver], Awaitable[None]]) -> None:
    try:
        run(ctx, action)
    except NotFound:
        click.echo("Units not found in registry", err=True)


async def change_state(
    driver: Driver,
    units: tuple[str, ...],
    target: DesiredState,
    verb: str,
    no_block: bool,
    attempts: int,
) -> list[str]:
    """stop and unload, decided from each unit's current state as fleet decides: a unit already
    there is skipped (not waited for, nothing printed); the units waited for are returned.

    Unlike fleet, a skipped unit whose desired state differs still gets the target written: a
    unit `start`ed but not yet placed would otherwise stay wanted after an `unload`."""
    statuses, files = await driver.units_and_files()  # one reading decides everything
    known = known_names(units, statuses)
    globals_ = global_units(files, known)
    already = {
        DesiredState.LOADED: "loaded",
        DesiredState.INACTIVE: "inactive",
    }[target]
    waiting = []
    for name in known:
        state = current_state(statuses[name], False)
        if name in globals_:
            continue
        if target == DesiredState.LOADED and state == "inactive":
            raise Failure(f"Unable to stop unit {name} in state inactive")
        if state == already:
            log.debug("Unit(%s) already %s, skipping.", name, already)
        else:
            waiting.append(name)
    to_set = [name for name in known if statuses[name].desired != target]
    if to_set:
        await driver.set_desired(to_set, target)
    triggered = waiting + [name for name in known if name in globals_]
    await report_and_wait(driver, triggered, globals_, already, verb, no_block, attempts)
    return waiting


@click.command()
@click.argument("units", nargs=-1, shell_complete=complete_units)
@block_options
@click.pass_context
def stop(ctx: click.Context, units: tuple[str, ...], no_block: bool, block_attempts: int) -> None:
    """Stop units (they stay loaded on their machine)."""
    if not units:
        click.echo("No units given", err=True)
        return

    async def action(driver: Driver) -> None:
        stopped = await change_state(
            driver, units, DesiredState.LOADED, "stop", no_block, block_attempts
        )
        click.echo(f"Successfully stopped units {format_list(stopped)}.", err=True)

    run_on_known(ctx, action)


@click.command()
@click.argument("units", nargs=-1, shell_complete=complete_units)
@block_options
@click.pass_context
def unload(ctx: click.Context, units: tuple[str, ...], no_block: bool, block_attempts: int) -> None:
    """Unschedule units (stopping them)."""
    if not units:
        click.echo("No units given", err=True)
        return

    async def action(driver: Driver) -> None:
        unloaded = await change_state(
            driver, units, DesiredState.INACTIVE, "unload", no_block, block_attempts
        )
        click.echo(f"Successfully unloaded units {format_list(unloaded)}.", err=True)

    run_on_known(ctx, action)


@click.command()
@click.argument("units", nargs=-1, shell_complete=complete_units)
@click.option(
    "--block-attempts",
    type=int,
    default=0,
    show_default=True,
    help="Rounds of 2 s to wait for the units' machines to unload them (0: until done).",
)
@click.option("--no-block", is_flag=True, help="Do not wait until the units are gone.")
@click.pass_context
def destroy(
    ctx: click.Context, units: tuple[str, ...], block_attempts: int, no_block: bool
) -> None:
    """Remove units from the cluster (waiting until no machine has them loaded)."""
    if not units:
        click.echo("No units given", err=True)
        return

    async def action(driver: Driver) -> None:
        jobs, files = await driver.jobs_and_files()
        known = known_names(units, jobs)
        globals_ = global_units(files, known)
        await driver.destroy(known)
        if no_block:
            for name in known:
                click.echo(f"Destroyed {name}")
            return
        # Global units are not waited for (as in fleet): every machine unloads its own copy.
        await wait_destroyed(driver, known, globals_, block_attempts)

    run_on_known(ctx, action)


@click.command()
@click.argument("units", nargs=-1, shell_complete=complete_units)
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

    async def action(driver: Driver) -> None:
        statuses, files = await driver.units_and_files()
        known = known_names(units, statuses)
        globals_ = global_units(files, known)
        for name in known:
            if name in globals_:
                await restart_global(driver, name, block_attempts)
                continue
            state = current_state(statuses[name], False)
            if state == "inactive":
                click.echo(f"Unable to restart unit {name} in state inactive", err=True)
                continue
            if state == "launched":
                await driver.set_desired([name], DesiredState.LOADED)
                await wait_for(driver, [name], "loaded", block_attempts)
            await driver.set_desired([name], DesiredState.LAUNCHED)
            await wait_for(driver, [name], "launched", block_attempts)

    if units:
        run_on_known(ctx, action)


async def restart_global(driver: Driver, name: str, attempts: int) -> None:
    """fleet's restart did nothing for global units; here: stopped everywhere, then started."""
    await driver.set_desired([name], DesiredState.LOADED)

    def stopped(status: UnitStatus) -> bool:
        return not status.active_on()

    def started(status: UnitStatus) -> bool:
        return bool(status.states) and len(status.active_on()) == len(status.states)

    await wait_restarted_everywhere(driver, name, stopped, attempts, quiet=True)
    await driver.set_desired([name], DesiredState.LAUNCHED)
    await wait_restarted_everywhere(driver, name, started, attempts, quiet=False)


def format_list(names: list[str]) -> str:
    return "[" + " ".join(names) + "]"
