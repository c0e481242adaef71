"""Waiting as fleetctl waits: poll until units reach a state, printing fleet's line for each
as it gets there. "Block attempts" N means N rounds of 2 s; 0 means until done."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Sequence

import click

from ..model import UnitStatus
from ..status import current_state
from .driver import Driver
from .session import POLL_SECONDS, ROUND_SECONDS, Failure
from .views import legend_of


def deadline_of(attempts: int) -> float | None:
    return time.monotonic() + attempts * ROUND_SECONDS if attempts > 0 else None


def past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


async def wait_for(driver: Driver, names: Sequence[str], target: str, attempts: int) -> None:
    """Wait until each unit's current state is `target`, printing fleet's line for each; fail
    with the engine's reason when a unit cannot be placed (fleet hung here forever)."""
    if not names:
        return
    machines = await driver.machines()
    pending = set(names)
    deadline = deadline_of(attempts)
    while pending:
        units = await driver.units()
        for name in sorted(pending):
            status = units.get(name)
            if status is None:
                raise Failure(f"Error waiting for units: unit {name} was destroyed meanwhile")
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
            if past(deadline):
                raise Failure(
                    f"Error waiting for units: timed out waiting for unit "
                    f"{sorted(pending)[0]} to report state {target}"
                )
            await asyncio.sleep(POLL_SECONDS)


async def report_and_wait(
    driver: Driver,
    names: Sequence[str],
    global_units: Collection[str],
    target: str,
    verb: str,
    no_block: bool,
    attempts: int,
) -> None:
    """After a desired state was set: global units never block (fleet's "Triggered global
    unit" line), the others are waited for unless --no-block."""
    local = [name for name in names if name not in global_units]
    if no_block:
        for name in local:
            click.echo(f"Triggered unit {name} {verb}")
    for name in names:
        if name in global_units:
            click.echo(f"Triggered global unit {name} {verb}")
    if not no_block:
        await wait_for(driver, local, target, attempts)


async def wait_destroyed(
    driver: Driver, names: Sequence[str], global_units: Collection[str], attempts: int
) -> None:
    """After a destroy: wait, in order, until no machine publishes a state for each unit (its
    machine stopped and unloaded it), printing `Destroyed <n>` for each. One reading of the
    states per round serves every unit (a reading per unit made 1,000 units take 40 s)."""
    deadline = deadline_of(attempts)
    done = 0
    while names:
        published = await driver.published_states()
        done = destroyed_prefix(names, done, global_units, published)
        if done == len(names):
            return
        if past(deadline):
            raise Failure(
                f"Error waiting for units: timed out waiting for unit {names[done]} to be unloaded"
            )
        await asyncio.sleep(POLL_SECONDS)


def destroyed_prefix(
    names: Sequence[str], done: int, global_units: Collection[str], published: Collection[str]
) -> int:
    """Print `Destroyed <n>` for the units after the first `done` that are gone, in order, up to
    the first one still published; how many are done now. Global units are not waited for."""
    while done < len(names) and (names[done] in global_units or names[done] not in published):
        click.echo(f"Destroyed {names[done]}")
        done += 1
    return done


async def wait_restarted_everywhere(
    driver: Driver,
    name: str,
    condition: Callable[[UnitStatus], bool],
    attempts: int,
    quiet: bool,
) -> None:
    """A global unit's restart: wait until `condition` holds for it, then (unless quiet) print
    where it runs."""
    deadline = deadline_of(attempts)
    while not condition((units := await driver.units())[name]):
        if past(deadline):
            raise Failure(f"Error waiting for units: timed out restarting global unit {name}")
        await asyncio.sleep(POLL_SECONDS)
    if not quiet:
        machines = await driver.machines()
        for machine_id in units[name].active_on():
            click.echo(f"Unit {name} launched on {legend_of(machine_id, machines, False)}")
