"""`flotilla-lockctl`: the cluster's reboot lock by hand, as locksmithctl did (status, lock,
unlock, set-max).

A tool of its own, not under `flotilla-update`: that one is a machine's agent (root, its disk
and ESP), while the lock is the cluster's, read and changed from any machine or an operator's
workstation that reaches etcd, without root.

Exit status: 0 done, 1 refused or failed (the message says why; nothing was changed),
2 bad usage.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click

from fleetd.config import ConfigError as FleetConfigError
from fleetd.registry import RegistryError
from flotilla.tool import HELP_OPTIONS, echo_json, output_option, version_option

from . import agent, machine
from .config import ConfigError
from .coordinator import Clock
from .lock import RebootLock, etcd_target
from .lock_decide import LockRefused, Semaphore, describe_holder, describe_lease

T = TypeVar("T")


def this_machine() -> str:
    try:
        return machine.MACHINE_ID.read_text().strip()
    except OSError as error:
        raise LockRefused(f"cannot tell this machine's id ({error}); name the MACHINE") from None


def with_lock(context: click.Context, work: Callable[[RebootLock], Awaitable[T]]) -> T:
    """Open the lock where the options say, run `work`, and turn every refusal or failure into
    one line and exit status 1."""
    endpoint, fleet_conf = context.obj

    async def run() -> T:
        config = agent.load_config()
        target = etcd_target(endpoint or config.etcd_endpoints, Path(fleet_conf))
        async with RebootLock.open(target) as lock:
            return await work(lock)

    try:
        return asyncio.run(run())
    except LockRefused as error:
        click.echo(f"flotilla-lockctl: refused: {error}", err=True)
    except (RegistryError, ConfigError, FleetConfigError, ValueError, OSError) as error:
        click.echo(f"flotilla-lockctl: failed: {error}", err=True)
    sys.exit(1)


@click.group(context_settings=HELP_OPTIONS)
@version_option("flotilla-lockctl")
@click.option(
    "--endpoint",
    "endpoints",
    multiple=True,
    help="etcd client URL (repeat, or comma-separate; default: ETCD_ENDPOINTS in"
    " /etc/flotilla/update.conf, else fleet.conf's etcd_servers).",
)
@click.option(
    "--fleet-config",
    default="/etc/fleet/fleet.conf",
    show_default=True,
    help="fleet.conf whose etcd settings (servers, user, TLS files) to use.",
)
@click.pass_context
def main(context: click.Context, endpoints: tuple[str, ...], fleet_config: str) -> None:
    """The cluster's reboot lock: a semaphore in etcd that machines take before they reboot."""
    split = tuple(item for value in endpoints for item in value.split(",") if item.strip())
    context.obj = (split, fleet_config)


@main.command()
@output_option("table")
@click.pass_context
def status(context: click.Context, output: str) -> None:
    """The max and each holder: its machine, since when, and its lease."""

    async def read(lock: RebootLock) -> tuple[Semaphore, list[tuple[int, int] | None]]:
        semaphore = await lock.read()
        leases = [await lock.seconds_left(h.lease) if h.lease else None for h in semaphore.holders]
        return semaphore, leases

    semaphore, leases = with_lock(context, read)
    if output == "json":
        echo_json(status_document(semaphore, leases))
        return
    click.echo(f"max: {semaphore.max}  held: {len(semaphore.holders)}")
    for holder, left in zip(semaphore.holders, leases, strict=True):
        since = holder.since or "an unknown time"
        click.echo(f"{holder.machine}  since {since}  {describe_lease(holder, left)}")


def status_document(semaphore: Semaphore, leases: list[tuple[int, int] | None]) -> dict:
    return {
        "max": semaphore.max,
        "holders": [
            {
                "machine": holder.machine,
                "since": holder.since,
                "lease": f"{holder.lease:x}" if holder.lease else None,
                "lease_seconds_left": left[0] if left else None,
                "lease_granted_seconds": left[1] if left else None,
            }
            for holder, left in zip(semaphore.holders, leases, strict=True)
        ],
    }


@main.command()
@click.argument("machine_id", metavar="[MACHINE]", required=False)
@click.pass_context
def lock(context: click.Context, machine_id: str | None) -> None:
    """Take a slot for this machine (or MACHINE) until `unlock`: no lease, so it outlives this
    command; the machine's own coordinated reboot then goes ahead under it."""
    target = machine_id or this_machine()
    now = Clock().stamp()

    async def take(lock: RebootLock) -> str:
        decision = await lock.try_acquire(target, 0, now)
        if decision.action == "full":
            raise LockRefused(decision.reason)
        if decision.action == "already held" and decision.holder is not None:
            return f"{target} already holds the reboot lock: {describe_holder(decision.holder)}"
        return f"locked the reboot lock for {target}"

    click.echo(with_lock(context, take))


@main.command()
@click.argument("machine_id", metavar="[MACHINE]", required=False)
@click.pass_context
def unlock(context: click.Context, machine_id: str | None) -> None:
    """Release this machine's slot, or MACHINE's: an operator's override of a dead or stuck
    holder (its lease is revoked, and its coordinator finds the hold gone)."""
    target = machine_id or this_machine()

    async def release(lock: RebootLock) -> str:
        ended = await lock.unlock(target)
        return f"unlocked the reboot lock of {target} (held since {ended.since})"

    click.echo(with_lock(context, release))


def whole_number_of_machines(context: click.Context, parameter: object, text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise click.BadParameter(f"N is how many machines may reboot at once: a whole number of"
                                 f" at least 1, not {text!r}")  # fmt: skip
    return int(text)


@main.command("set-max")
@click.argument("maximum", metavar="N", callback=whole_number_of_machines)
@click.pass_context
def set_max(context: click.Context, maximum: int) -> None:
    """How many machines may hold the lock (reboot) at once."""

    async def store(lock: RebootLock) -> str:
        previous = await lock.set_max(maximum)
        held = len((await lock.read()).holders)
        note = f"; {held} hold it now, no new holder until fewer" if held > maximum else ""
        return f"max {previous} -> {maximum}{note}"

    click.echo(with_lock(context, store))


if __name__ == "__main__":
    main()
