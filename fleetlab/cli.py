"""`fleetlab`: drive a local cluster of systemd machines. Parsing only; the work is in Lab."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from flotilla.process import CommandError, run
from flotilla.resources import code_root
from flotilla.steps import waiting
from flotilla.tool import HELP_OPTIONS, echo_json, output_option, version_option
from imagebuild.rootfs import build_rootfs
from imagebuild.spec import SpecError

from . import cgroups, network
from .fleet import start_fleetd
from .lab import Lab, LabError, require_root
from .layout import DEFAULT_STATE_ROOT, LAB_NAME, LAB_NETNS
from .listing import format_table, machines_document

USER_ERRORS = (LabError, CommandError, SpecError, TimeoutError, RuntimeError)


def all_lab_names(state_root: Path) -> set[str]:
    """Every lab that left anything behind: a state directory, a cgroup or a namespace, each
    only if fleetlab made it (a lab's name, and for a directory the files a lab keeps), so
    that `down --all` never removes what another tool named alike."""
    names = set()
    if state_root.is_dir():
        for path in state_root.iterdir():
            made_by_a_lab = any((path / part).exists() for part in ("lab.json", "etcd", "machines"))
            if LAB_NAME.fullmatch(path.name) and path.is_dir() and made_by_a_lab:
                names.add(path.name)
    cgroup_root = cgroups.lab_cgroup_root()
    if cgroup_root.is_dir():
        names |= {
            p.name for p in cgroup_root.iterdir() if p.is_dir() and LAB_NAME.fullmatch(p.name)
        }
    for netns in network.list_netns():
        if found := LAB_NETNS.fullmatch(netns):
            names.add(found.group(1))
    return names


class RootCommand(click.Command):
    """A lab command: root only. Checked when the command runs, after click has parsed its
    arguments, so `-h` and `--help` (handled while parsing) work for anyone."""

    def invoke(self, ctx: click.Context) -> object:
        require_root()
        return super().invoke(ctx)


class LabGroup(click.Group):
    """Turns the lab's own errors into one line on stderr and exit status 1."""

    command_class = RootCommand

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort):
            raise  # click's own (after -h, or ^C at a prompt): RuntimeErrors, but not failures
        except USER_ERRORS as error:
            click.echo(f"fleetlab: {error}", err=True)
            sys.exit(1)


@click.group(cls=LabGroup, context_settings=HELP_OPTIONS)
@version_option("fleetlab")
@click.option(
    "--lab",
    "lab_name",
    envvar="FLEETLAB_LAB",
    default="default",
    show_default=True,
    help="Which lab to act on [env: FLEETLAB_LAB].",
)
@click.option(
    "--state-root",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="FLEETLAB_STATE_ROOT",
    default=DEFAULT_STATE_ROOT,
    show_default=True,
    help="Where labs keep their state [env: FLEETLAB_STATE_ROOT].",
)
@click.pass_context
def main(ctx: click.Context, lab_name: str, state_root: Path) -> None:
    """A local cluster of real systemd machines in Linux namespaces, with a real etcd.

    Every command needs root; `-h` and `--version` do not."""
    ctx.obj = Lab(lab_name, state_root)


@main.command()
@click.option("--machines", "-n", "count", type=int, default=3, show_default=True)
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for every machine to boot.",
)
@click.option(
    "--fleetd",
    "with_fleetd",
    is_flag=True,
    help="Also run fleetd on every machine (enabled: it comes back on every boot).",
)
@click.option(
    "--agent-ttl",
    type=float,
    default=10.0,
    show_default=True,
    help="fleetd's agent_ttl in seconds (with --fleetd).",
)
@click.pass_obj
def up(lab: Lab, count: int, timeout: float, with_fleetd: bool, agent_ttl: float) -> None:
    """Create the lab: a bridge, an etcd and COUNT machines booted to systemd `running`."""
    rootfs = build_rootfs()
    started = time.monotonic()
    # The machines run the host's own code: the checkout, or site-packages when installed (the
    # machines' pinned wheels come first on their path, so only our packages are taken from it).
    with waiting(f"lab {lab.name!r}: booting {count} machines (timeout {timeout:.0f}s)") as wait:
        lab.up(count, rootfs, code_root(), timeout)
        if with_fleetd:
            wait.update(f"lab {lab.name!r}: starting fleetd on {count} machines")
            start_fleetd(lab, agent_ttl)
    click.echo(
        f"lab {lab.name!r}: {count} machines up in {time.monotonic() - started:.1f}s,"
        f" etcd at {lab.layout.etcd_endpoint}"
    )
    click.echo(format_table(lab.status()))


@main.command("ls")
@output_option()
@click.pass_obj
def list_machines(lab: Lab, output: str) -> None:
    """List machines: name, machine-id, IP, systemd state, network."""
    statuses = lab.status()
    if output == "json":
        echo_json(machines_document(lab.name, statuses))
    else:
        click.echo(format_table(statuses))


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("machine")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
def exec(lab: Lab, machine: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside MACHINE (after `--`); exits with its status."""
    sys.exit(lab.exec(machine, command))


@main.command()
@click.argument("machine")
@click.pass_obj
def kill(lab: Lab, machine: str) -> None:
    """Power cut: SIGKILL the machine's PID 1 and everything with it."""
    lab.kill(machine)
    click.echo(f"{machine}: killed")


@main.command()
@click.argument("machine")
@click.pass_obj
def stop(lab: Lab, machine: str) -> None:
    """Clean poweroff of the machine."""
    lab.stop(machine)
    click.echo(f"{machine}: powered off")


@main.command()
@click.argument("machine")
@click.option("--timeout", type=float, default=60.0, show_default=True)
@click.pass_obj
def start(lab: Lab, machine: str, timeout: float) -> None:
    """Boot the machine again, with the same machine-id, hostname and IP."""
    state = lab.start(machine, timeout)
    click.echo(f"{machine}: {state}")


@main.command()
@click.argument("machine")
@click.pass_obj
def partition(lab: Lab, machine: str) -> None:
    """Cut the machine off the lab network."""
    lab.partition(machine)
    click.echo(f"{machine}: partitioned")


@main.command()
@click.argument("machine")
@click.pass_obj
def heal(lab: Lab, machine: str) -> None:
    """Reconnect a partitioned machine."""
    lab.heal(machine)
    click.echo(f"{machine}: connected")


@main.command()
@click.argument("machine")
@click.option("--unit", "-u", help="Only this unit's messages.")
@click.option("--lines", "-n", type=int, help="Only the last LINES lines.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new messages.")
@click.pass_obj
def journal(lab: Lab, machine: str, unit: str | None, lines: int | None, follow: bool) -> None:
    """Show the machine's journal (read from its disk when it is down)."""
    options = [
        *(["-u", unit] if unit else []),
        *(["-n", str(lines)] if lines else []),
        *(["-f"] if follow else []),
    ]
    sys.exit(run(lab.journal_argv(machine, options), interactive=True, check=False).returncode)


@main.command()
@click.pass_obj
def env(lab: Lab) -> None:
    """Print the environment for fleetctl on this host: eval "$(fleetlab env)"."""
    click.echo(f"export FLEETCTL_DRIVER=etcd FLEETCTL_ENDPOINT={lab.host_etcd_endpoint}")


@main.command()
@click.option("--all", "every_lab", is_flag=True, help="Remove every lab on this host.")
@click.pass_obj
def down(lab: Lab, every_lab: bool) -> None:
    """Destroy the lab: machines, etcd, network, state. Also cleans up after a crash."""
    names = all_lab_names(lab.layout.state_root) if every_lab else {lab.name}
    for name in sorted(names):
        target = Lab(name, lab.layout.state_root)
        if not target.has_leftovers():
            click.echo(f"lab {name!r} is not up; nothing to remove")
            continue
        target.down()
        click.echo(f"lab {name!r}: removed")
