"""`fleetctl events`: the cluster's event history, or its live tail with --follow.

Imports beyond click stay inside the command, so fleetctl's other commands do not pay for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from .driver import Driver


@click.command()
@click.option("--unit", default=None, help="Only events of this unit.")
@click.option(
    "--machine", default=None, help="Only events naming this machine (an id or its beginning)."
)
@click.option("--since", default=None, help="Only events this recent: 90s, 10m, 2h, 1h30m.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they happen.")
@click.option(
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="A table, or one JSON object per line.",
)
@click.pass_context
def events(
    ctx: click.Context,
    unit: str | None,
    machine: str | None,
    since: str | None,
    follow: bool,
    output: str,
) -> None:
    """Show the cluster's events (units placed, moved, started; machines; fencing), oldest
    first."""
    import sys
    from datetime import UTC, datetime

    from ..events import parse_since
    from ..unitname import mangle_name
    from .events_view import COLUMNS, event_row, event_table, fixed_line, json_line
    from .session import Failure, run

    try:
        after = parse_since(since, datetime.now(UTC)) if since is not None else None
    except ValueError as error:
        raise Failure(str(error)) from error
    unit = mangle_name(unit) if unit is not None else None

    async def show(driver: Driver) -> None:
        found = await driver.events(unit, machine, after)
        if not found:
            await check_filters(driver, unit, machine)
        if not follow:
            lines = [json_line(event) + "\n" for event in found]
            click.echo(event_table(found) if output == "table" else "".join(lines), nl=False)
            return
        if output == "table":
            click.echo(fixed_line(COLUMNS))
        async for event in driver.follow_events(unit, machine, after):
            click.echo(json_line(event) if output == "json" else fixed_line(event_row(event)))
            sys.stdout.flush()

    try:
        run(ctx, show)
    except KeyboardInterrupt:  # the way out of --follow
        sys.exit(130)


async def check_filters(driver: Driver, unit: str | None, machine: str | None) -> None:
    """No event matched: say so when a filter names nothing the cluster knows (a typo), rather
    than print an empty history."""
    from .session import Failure

    if unit is not None and unit not in await driver.jobs():
        raise Failure(f"unknown unit {unit}: the cluster has no such unit and no event names it")
    if machine is not None and not any(m.startswith(machine) for m in await driver.machines()):
        raise Failure(
            f"unknown machine {machine}: no machine's id begins with it and no event names it"
        )
