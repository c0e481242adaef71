"""`flotilla-cluster`: a cluster of VMs from the image (argument parsing and printing only)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from flotilla.process import CommandError
from flotilla.steps import waiting
from flotilla.tool import HELP_OPTIONS, echo_json, output_option, version_option
from provision.inventory import InventoryError
from provision.render import TEMPLATES, RenderError

from .cluster import STATE_ROOT, Cluster, ClusterError, ClusterSpec
from .cluster_listing import NodeRow, format_nodes, nodes_document
from .cluster_up import ROLE, bring_up, fleetctl_argv
from .command import DEFAULT_IMAGE_DIR
from .vm import VmError

EXIT_FAILED = 1
USER_ERRORS = (ClusterError, InventoryError, RenderError, ValueError, VmError, CommandError)


class ClusterGroup(click.Group):
    """Every command's expected failures become one line on stderr and exit 1."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except USER_ERRORS as error:
            click.echo(f"flotilla-cluster: {error}", err=True)
            sys.exit(EXIT_FAILED)


@click.group(cls=ClusterGroup, context_settings=HELP_OPTIONS)
@version_option("flotilla-cluster")
@click.option("--name", default="flotilla", show_default=True, help="Which cluster.")
@click.option("--state-dir", type=click.Path(path_type=Path), default=STATE_ROOT, hidden=True)
@click.pass_context
def main(ctx: click.Context, name: str, state_dir: Path) -> None:
    """A cluster of Flotilla VMs under QEMU: provisioned on first boot, on a private network,
    running etcd and fleet."""
    ctx.obj = Cluster(name, state_dir)


def loaded(ctx: click.Context) -> Cluster:
    cluster: Cluster = ctx.obj
    cluster.load()
    return cluster


@main.command()
@click.option("--nodes", "count", default=3, show_default=True, help="How many VMs.")
@click.option(
    "--provision",
    type=click.Choice(["ignition", "cloud-config"]),
    default="ignition",
    show_default=True,
    help="Ignition on the first boot, or cloud-config from a config-2 drive on every boot.",
)
@click.option(
    "--image-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_IMAGE_DIR,
    show_default=True,
    help="Where imagebuild wrote flotilla.qcow2, its kernel and initramfs.",
)
@click.option("--memory", "memory_mib", default=1024, show_default=True, help="MiB per VM.")
@click.option("--cpus", default=1, show_default=True, help="vCPUs per VM.")
@click.option("--publish", multiple=True, type=int, default=(8080,), show_default=True,
              help="Guest port forwarded to 127.0.0.1 on every node (repeatable).")  # fmt: skip
@click.option("--boot", type=click.Choice(["direct", "uefi"]), default="direct", show_default=True,
              help="direct: QEMU loads the build's kernel (fastest; /usr stays slot A);"
                   " uefi: the firmware boots the disk's entries (A/B updates).")  # fmt: skip
@click.option("--host-service", "host_services", multiple=True, type=click.IntRange(1, 65535),
              help="A port of the host's 127.0.0.1 the nodes reach as 10.0.2.100:PORT, such as"
                   " `imagebuild serve-update` (repeatable).")  # fmt: skip
@click.option(
    "--templates",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=TEMPLATES,
    help="Where the role templates are [default: flotilla's own, data/cloud-config].",
)
@click.option("--role", default=ROLE, show_default=True, help="Which role's template.")
@click.pass_context
def up(
    ctx: click.Context,
    count: int,
    provision: str,
    image_dir: Path,
    memory_mib: int,
    cpus: int,
    publish: tuple[int, ...],
    boot: str,
    host_services: tuple[int, ...],
    templates: Path,
    role: str,
) -> None:
    """Render and check every node's config, boot the VMs, wait until fleet lists them all."""
    cluster: Cluster = ctx.obj
    spec = cluster_spec(image_dir, provision, memory_mib, cpus, publish, host_services, boot)
    started = time.monotonic()
    # The steps are printed as they happen; on a terminal a spinner below them counts the
    # seconds of the wait that follows each one.
    with waiting(f"{cluster.name}: bringing up {count} VMs") as wait:

        def report(line: str) -> None:
            wait.echo(f"[{time.monotonic() - started:6.1f}s] {line}")

        seconds = bring_up(cluster, spec, count, report, templates, role)
    elapsed = time.monotonic() - started
    click.echo(f"[{elapsed:6.1f}s] fleet lists {count} machines, {seconds:.1f}s after launch")
    print_nodes(cluster)
    print_hints(cluster)


def cluster_spec(
    image_dir: Path,
    provision: str,
    memory_mib: int,
    cpus: int,
    publish: tuple[int, ...],
    host_services: tuple[int, ...] = (),
    boot: str = "direct",
) -> ClusterSpec:
    image, kernel, initrd, cmdline = (
        image_dir / f"flotilla.{suffix}" for suffix in ("qcow2", "vmlinuz", "initrd", "cmdline")
    )
    for path in (image, kernel, initrd, cmdline):
        if not path.is_file():
            raise ClusterError(f"no {path}: build the image first (`make image`)")
    return ClusterSpec(
        image=image.resolve(),
        kernel=kernel.resolve(),
        initrd=initrd.resolve(),
        cmdline=cmdline.read_text().strip(),
        provision=provision,
        memory_mib=memory_mib,
        cpus=cpus,
        publish=publish,
        host_services=host_services,
        boot=boot,
    )


@main.command(name="ls")
@output_option()
@click.pass_context
def list_nodes(ctx: click.Context, output: str) -> None:
    """The nodes: state, QEMU pid, private IP and the host ports that reach them."""
    cluster = loaded(ctx)
    if output == "json":
        echo_json(nodes_document(cluster.name, cluster.spec.publish, node_rows(cluster)))
    else:
        print_nodes(cluster)


def node_rows(cluster: Cluster) -> list[NodeRow]:
    return [
        NodeRow(node.name, node.ip, cluster.pid(node.name), cluster.records[node.name].ports)
        for node in cluster.inventory.nodes
    ]


def print_nodes(cluster: Cluster) -> None:
    click.echo("\n".join(format_nodes(cluster.spec.publish, node_rows(cluster))))


def print_hints(cluster: Cluster) -> None:
    option = f"--name {cluster.name} " if cluster.name != "flotilla" else ""
    click.echo(f'fleetctl:  eval "$(flotilla-cluster {option}env)"; fleetctl list-machines')
    click.echo(f"ssh:       flotilla-cluster {option}ssh n1")
    click.echo(f"remove:    flotilla-cluster {option}down")


@main.command()
@click.pass_context
def env(ctx: click.Context) -> None:
    """Shell exports for fleetctl on the host (through the first running node's etcd)."""
    cluster = loaded(ctx)
    running = cluster.running_nodes()
    if not running:
        raise ClusterError(f"no node of {cluster.name} is running")
    endpoint = cluster.etcd_endpoint(running[0])
    click.echo(f"export FLEETCTL_DRIVER=etcd FLEETCTL_ENDPOINT={endpoint}")


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def ssh(ctx: click.Context, node: str, command: tuple[str, ...]) -> None:
    """Log in to NODE as core (or run COMMAND there)."""
    argv = loaded(ctx).ssh_argv(node)
    os.execvp(argv[0], [*argv, *command])


@main.command()
@click.argument("node")
@click.pass_context
def kill(ctx: click.Context, node: str) -> None:
    """SIGKILL NODE's QEMU: a crash."""
    loaded(ctx).kill(node)
    click.echo(f"{node}: killed")


@main.command()
@click.argument("node")
@click.pass_context
def stop(ctx: click.Context, node: str) -> None:
    """Shut NODE down cleanly (ACPI power button; SIGKILL after 90 s)."""
    clean = loaded(ctx).stop(node)
    click.echo(f"{node}: " + ("stopped" if clean else "did not power off in time: killed"))


@main.command()
@click.argument("node")
@click.option("--wait/--no-wait", default=True, help="Wait until NODE answers SSH.")
@click.pass_context
def start(ctx: click.Context, node: str, wait: bool) -> None:
    """Boot NODE again: same disk, same machine id, same address."""
    cluster = loaded(ctx)
    started = time.monotonic()
    cluster.start(node)
    if wait:
        cluster.wait_for_ssh(node, started + 300)
        cluster.mark_provisioned(node)
    click.echo(f"{node}: started ({time.monotonic() - started:.1f}s)")


@main.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Remove the cluster: every VM, its network namespace, taps, sockets and files."""
    cluster: Cluster = ctx.obj
    cluster.down()
    click.echo(f"{cluster.name}: removed")


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def fleetctl(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Run fleetctl against the cluster (through the first running node's etcd)."""
    cluster = loaded(ctx)
    running = cluster.running_nodes()
    if not running:
        raise ClusterError(f"no node of {cluster.name} is running")
    argv = fleetctl_argv(cluster, running[0])
    os.execv(argv[0], [*argv, *args])
