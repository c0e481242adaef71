"""Shell completion of unit and machine names (click's `shell_complete` on the arguments).

The names come from the cluster through the driver the root flags choose, with a short request
timeout. Completion must never get in the shell's way: any failure (no fleetd, no etcd, a bad
flag) completes nothing, and a `--tunnel` completes nothing either (an SSH handshake per TAB is
slow, and a host-key question on stdin would hang the shell).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import click
from click.shell_completion import CompletionItem

if TYPE_CHECKING:
    from .driver import Driver

TIMEOUT_SECONDS = 1.0


def matching(names: Iterable[str], incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(name) for name in sorted(names) if name.startswith(incomplete)]


def cluster_names(
    ctx: click.Context, read: Callable[[Driver], Awaitable[Iterable[str]]]
) -> list[str]:
    """Names read from the cluster, or none at all when it cannot be read quickly."""
    from .session import root_options, run_options

    try:
        options = dict(root_options(ctx))
        if options["tunnel"]:
            return []
        options["timeout"] = min(options["timeout"], TIMEOUT_SECONDS)

        async def names(driver: Driver) -> list[str]:
            return list(await read(driver))

        return run_options(options, names)
    except Exception:  # whatever went wrong, the shell gets no names
        return []


async def unit_names(driver: Driver) -> Iterable[str]:
    return (await driver.jobs()).keys()


async def machine_ids(driver: Driver) -> Iterable[str]:
    return (await driver.machines()).keys()


async def units_and_machines(driver: Driver) -> Iterable[str]:
    return [*(await driver.jobs()), *(await driver.machines())]


def complete_units(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Units the cluster has."""
    return matching(cluster_names(ctx, unit_names), incomplete)


def complete_units_or_files(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Units the cluster has, and local unit files (submit, load, start create from them)."""
    return [*complete_units(ctx, param, incomplete), CompletionItem(incomplete, type="file")]


def complete_machines(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Machine ids."""
    return matching(cluster_names(ctx, machine_ids), incomplete)


def complete_units_and_machines(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """`fleetctl ssh`'s target: a machine id or a unit."""
    return matching(cluster_names(ctx, units_and_machines), incomplete)
