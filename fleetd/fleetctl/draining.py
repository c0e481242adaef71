"""fleetctl drain and undrain: mark a machine so that the engine moves its units elsewhere, one
at a time, and takes it as a candidate again afterwards.

`drain` checks before it writes (an unknown or ambiguous machine, a unit no other machine can
take: refused, nothing written), then waits as `start` does until every unit it moves is
running on its new machine, printing each move.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping

import click

from ..client import ClientError
from ..drain_state import DRAINED, SCHEDULABLE
from ..model import DesiredState, Machine, UnitStatus
from ..status import current_state
from .completion import complete_machines
from .driver import Driver
from .session import POLL_SECONDS, Failure, run
from .views import legend_of
from .waiting import deadline_of, past


def resolve_machine(machines: Collection[str], given: str) -> str | None:
    """The machine a full id or a unique prefix names, as `fleetctl ssh` finds it; None when
    none does, Failure when several do."""
    if given in machines:
        return given
    found = sorted(machine for machine in machines if given and machine.startswith(given))
    if len(found) > 1:
        raise Failure(f"Machine {given} is ambiguous: it begins {', '.join(found)}")
    return found[0] if found else None


@click.command()
@click.argument("machine", shell_complete=complete_machines)
@click.option(
    "--force",
    is_flag=True,
    help="Drain even if a unit on the machine can run on no other machine; it stays there.",
)
@click.option("--no-block", is_flag=True, help="Do not wait for the units to move.")
@click.option(
    "--block-attempts",
    type=int,
    default=0,
    show_default=True,
    help="Rounds of 2 s to wait (0: until done).",
)
@click.pass_context
def drain(
    ctx: click.Context, machine: str, force: bool, no_block: bool, block_attempts: int
) -> None:
    """Mark MACHINE unschedulable and move its units elsewhere, one at a time (global units
    stay). MACHINE is a machine id or a unique prefix of one."""

    async def action(driver: Driver) -> None:
        machines = await driver.machines()
        machine_id = resolve_machine(machines, machine)
        if machine_id is None:
            raise Failure(f"Machine {machine} not found")
        units = await driver.units()
        try:
            outcome = await driver.drain(machine_id, force)
        except ClientError as error:
            raise Failure(f"Error draining machine: {error}") from error
        legend = legend_of(machine_id, machines, False)
        marked = "marked for draining" if outcome.new else "already marked for draining"
        click.echo(f"Machine {legend} {marked}")
        for unit, why in sorted(outcome.stays.items()):
            click.echo(f"Unit {unit} stays on {legend}: {why}")
        if no_block:
            return
        moving = [n for n, s in units.items() if s.machine == machine_id and n not in outcome.stays]
        await wait_drained(driver, machine_id, moving, block_attempts)

    run(ctx, action)


async def wait_drained(driver: Driver, machine: str, names: Collection[str], attempts: int) -> None:
    """Wait until each unit that was on `machine` runs on another one (loaded units: is loaded
    there), printing each move. A unit the engine finds no machine for once the machine is
    drained stays; the wait then fails, naming it."""
    deadline = deadline_of(attempts)
    pending, stuck = set(names), []
    while pending:
        (units, (machines, states)) = (await driver.units(), await driver.machines_and_states())
        for name in sorted(pending):
            status = units.get(name)
            if status is None or status.desired == DesiredState.INACTIVE:
                pending.discard(name)  # destroyed or unloaded meanwhile: nothing to move
            elif moved(status, machine):
                pending.discard(name)
                assert status.machine is not None
                click.echo(f"Unit {name} moved to {legend_of(status.machine, machines, False)}")
            elif status.machine == machine and states.get(machine) in (DRAINED, SCHEDULABLE):
                pending.discard(name)  # the engine gave up on it, or the mark went
                stuck.append(name)
        if pending and past(deadline):
            raise Failure(
                f"Error waiting for drain: timed out; still on machine {machine}: "
                + ", ".join(sorted(pending))
            )
        if pending:
            await asyncio.sleep(POLL_SECONDS)
    if stuck:
        reasons = await driver.reasons(stuck)
        raise Failure(
            f"Error waiting for drain: still on machine {machine}: "
            + "; ".join(f"{name} ({reasons.get(name, 'no reason given')})" for name in stuck)
        )


def moved(status: UnitStatus, machine: str) -> bool:
    """Placed on another machine, and as far there as it is wanted (launched or loaded), and
    no longer running on the machine it left."""
    if status.machine in (None, machine) or machine in status.active_on():
        return False
    return current_state(status, False) == wanted_state(status.desired)


def wanted_state(desired: DesiredState) -> str:
    return "launched" if desired == DesiredState.LAUNCHED else "loaded"


@click.command()
@click.argument("machine", shell_complete=complete_machines)
@click.pass_context
def undrain(ctx: click.Context, machine: str) -> None:
    """Make MACHINE schedulable again (its old units are not moved back)."""

    async def action(driver: Driver) -> None:
        machines = await driver.machines()
        # Not up: maybe the mark of a machine that is away (a reboot), named by its full id.
        machine_id = resolve_machine(machines, machine) or machine
        if await driver.undrain(machine_id):
            click.echo(f"Machine {shown(machine_id, machines)} undrained")
        elif machine_id in machines:
            click.echo(f"Machine {shown(machine_id, machines)} is not drained")
        else:
            raise Failure(f"Machine {machine} not found")

    run(ctx, action)


def shown(machine: str, machines: Mapping[str, Machine]) -> str:
    return legend_of(machine, machines, False) if machine in machines else machine
