"""`flotilla-update`: the machine's /usr update agent (status, check, update now).

Exit status: 0 done (or, with --if-newer, nothing newer to do), 1 refused or failed (the message
says why; nothing was written unless it says so), 2 bad usage.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import click

from fleetd.config import ConfigError as FleetConfigError
from fleetd.registry import RegistryError
from flotilla.process import CommandError
from flotilla.tool import HELP_OPTIONS, echo_json, output_option, version_option

from . import agent
from .config import REBOOT_STRATEGIES, ConfigError
from .coordinator import LockLost, StillUnhealthy
from .fetch import FetchFailed
from .lock_decide import LockRefused
from .manifest import PayloadRefused
from .policy import DEFAULT_TRIES, MAX_TRIES, UpdateRefused
from .reboot import finish_coordinated_reboot, request_reboot
from .writer import WriteFailed

FAILURES = (UpdateRefused, PayloadRefused, FetchFailed, ConfigError, WriteFailed, CommandError,
            OSError, FleetConfigError, RegistryError, LockRefused, LockLost,
            StillUnhealthy)  # fmt: skip


def say(message: str) -> None:
    click.echo(message, err=True)


def guarded(work: Callable[[], Any]) -> Any:
    """Run `work`, turning the agent's refusals and failures into one line and exit status 1."""
    if os.geteuid() != 0:
        raise click.ClickException("flotilla-update needs root (the ESP and the disk): use sudo")
    try:
        return work()
    except FAILURES as error:
        refusals = UpdateRefused | PayloadRefused | LockRefused
        kind = "refused" if isinstance(error, refusals) else "failed"
        click.echo(f"flotilla-update: {kind}: {error}", err=True)
        sys.exit(1)


@click.group(context_settings=HELP_OPTIONS)
@version_option("flotilla-update")
def main() -> None:
    """Signed A/B updates of /usr: write the passive slot, boot it on trial, keep it if healthy."""


@main.command()
@output_option("text")
def status(output: str) -> None:
    """The booted slot, its version, and each slot's boot entry and state."""
    document = guarded(lambda: agent.status(agent.read_state()))
    if output == "json":
        echo_json(document)
        return
    click.echo(f"booted: USR-{document['booted_slot'].upper()}  version {document['version']}"
               f"  entry {document['boot_entry']}")  # fmt: skip
    click.echo(f"next boot: {document['next_boot']}")
    for slot, described in sorted(document["slots"].items()):
        click.echo(f"USR-{slot.upper()}: {described['version']}  {described['state']}"
                   f"  ({described['entry']})")  # fmt: skip


@main.command()
@click.option("--server", help="Payload URL (default: SERVER in /etc/flotilla/update.conf).")
def check(server: str | None) -> None:
    """Ask the server for its signed manifest and say whether it would be installed."""

    def work() -> None:
        config = agent.load_config()
        url = server or config.server
        if not url:
            raise UpdateRefused("no update server: set SERVER= in /etc/flotilla/update.conf")
        state = agent.read_state()
        manifest = agent.check(url)
        refusal = agent.offer_refusal(state, manifest)
        if refusal:
            click.echo(f"no update: {refusal}")
        else:
            click.echo(f"update available: {manifest.version} (running {state.version})")

    guarded(work)


@main.group()
def update() -> None:
    """Install an update."""


@update.command("now")
@click.option("--server", help="Payload URL (default: SERVER in /etc/flotilla/update.conf).")
@click.option("--reboot-strategy", type=click.Choice(REBOOT_STRATEGIES),
              help="After writing: reboot through the cluster's etcd lock (drained first),"
                   " reboot now, or leave the reboot to you (default: update.conf's, else"
                   " reboot).")  # fmt: skip
@click.option("--tries", type=click.IntRange(1, MAX_TRIES),
              help=f"Boots the new slot gets to prove healthy (default: update.conf's, else"
                   f" {DEFAULT_TRIES}).")  # fmt: skip
@click.option("--if-newer", is_flag=True,
              help="Nothing to do (exit 0) when no server is set or it offers nothing newer: for"
                   " the timer.")  # fmt: skip
def update_now(
    server: str | None, reboot_strategy: str | None, tries: int | None, if_newer: bool
) -> None:
    """Download, verify, write the passive slot, make it the next boot, then reboot."""

    def work() -> None:
        config = agent.load_config()
        config = replace(
            config,
            server=server or config.server,
            reboot_strategy=reboot_strategy or config.reboot_strategy,
            boot_tries=tries or config.boot_tries,
        )
        with agent.agent_lock():
            state = agent.read_state()
            if if_newer:
                if not config.server:
                    click.echo("no update server configured; nothing to do")
                    return
                refusal = agent.offer_refusal(state, agent.check(config.server))
                if refusal:
                    click.echo(f"no update: {refusal}")
                    return
            installed = agent.install_update(state, config, say)
            say(f"{installed}; reboot strategy {config.reboot_strategy}")
            click.echo(f"{installed}; {request_reboot(config, str(installed), say)}")

    guarded(work)


@main.command(hidden=True)
@click.option("--timeout", type=float, default=300, show_default=True)
@click.option("--interval", type=float, default=5, show_default=True)
def health(timeout: float, interval: float) -> None:
    """The trial boot's health check (flotilla-update-health.service)."""
    problems = guarded(lambda: agent.check_health(timeout, interval, say))
    if problems:
        click.echo("unhealthy: " + "; ".join(problems), err=True)
        sys.exit(1)
    click.echo("healthy")


@main.command("after-reboot", hidden=True)
def after_reboot() -> None:
    """After a reboot through the etcd lock (flotilla-update-after-reboot.service): once this
    boot is healthy, undrain the machine in fleet, then release its reboot lock."""
    click.echo(guarded(lambda: finish_coordinated_reboot(agent.load_config(), say)))


@main.command("end-trial", hidden=True)
def end_trial() -> None:
    """After systemd-bless-boot: drop the trial arguments from the booted entry."""
    click.echo(guarded(lambda: agent.end_trial(agent.read_state())))
