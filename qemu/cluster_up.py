"""`up`: render and check every node's config, then lay out the cluster, boot it and wait until
fleet sees every machine. Nothing boots unless every config passed its checks."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from flotilla.process import CommandError, run
from provision.checks import check_config
from provision.inventory import Inventory, plan_inventory
from provision.render import TEMPLATES, Rendered, render_cloud_config, render_ignition
from provision.values import member_values

from .cluster import Cluster, ClusterError, ClusterSpec
from .vm import VmError

ROLE = "member"
Report = Callable[[str], None]


def render_configs(
    inventory: Inventory,
    provision: str,
    ssh_keys: list[str],
    role: str = ROLE,
    templates: Path = TEMPLATES,
) -> dict[str, Rendered]:
    """Every node's config, each checked (ignition-validate, or the cloud-config validator)."""
    configs = {}
    for node in inventory.nodes:
        values = member_values(inventory, node, ssh_keys)
        if provision == "ignition":
            rendered = render_ignition(role, values, templates)
        else:
            rendered = render_cloud_config(role, values, templates)
        check_config(rendered, provision, node.name)
        configs[node.name] = rendered
    return configs


def bring_up(
    cluster: Cluster,
    spec: ClusterSpec,
    count: int,
    report: Report,
    templates: Path = TEMPLATES,
    role: str = ROLE,
) -> float:
    """Returns the seconds from the first QEMU launch to fleet listing every machine."""
    cluster.check_absent()
    with tempfile.TemporaryDirectory() as scratch:
        key = Path(scratch) / "id_ed25519"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"flotilla-{cluster.name}",
             "-f", key])  # fmt: skip
        public = key.with_suffix(".pub").read_text().strip()
        inventory = plan_inventory(cluster.name, count)
        configs = render_configs(inventory, spec.provision, [public], role, templates)
        report(f"rendered and checked {count} {spec.provision} configs")
        started = time.monotonic()
        try:
            cluster.create(spec, count, configs)
            shutil.copy2(key, cluster.key)
            shutil.copy2(key.with_suffix(".pub"), cluster.key.with_suffix(".pub"))
            boot_and_wait(cluster, inventory, started, report)
        except (ClusterError, VmError, OSError, CommandError) as error:
            raise ClusterError(
                f"{error}\nthe cluster is left as it is for a look (consoles in "
                f"{cluster.directory}); `flotilla-cluster --name {cluster.name} down` removes it"
            ) from error
    return time.monotonic() - started


def boot_and_wait(cluster: Cluster, inventory: Inventory, started: float, report: Report) -> None:
    for node in inventory.nodes:
        cluster.start(node.name)
    network = f"private network {inventory.gateway}/24 in netns {cluster.netns}"
    report(f"launched {len(inventory.nodes)} VMs ({network})")
    deadline = started + 600
    for node in inventory.nodes:
        cluster.wait_for_ssh(node.name, deadline)
        cluster.mark_provisioned(node.name)
        report(f"{node.name} answers SSH ({time.monotonic() - started:.1f}s)")
    wait_for_machines(cluster, len(inventory.nodes), deadline)


def fleetctl_argv(cluster: Cluster, node: str) -> list[str]:
    fleetctl = Path(sys.executable).with_name("fleetctl")
    return [str(fleetctl), "--driver=etcd", f"--endpoint={cluster.etcd_endpoint(node)}"]


def list_machines(cluster: Cluster, node: str) -> list[str]:
    argv = [*fleetctl_argv(cluster, node), "list-machines", "--no-legend", "--full"]
    return run(argv, timeout=30).stdout.splitlines()


def wait_for_machines(cluster: Cluster, count: int, deadline: float) -> list[str]:
    """Until fleet, asked through some running node's etcd, lists `count` machines."""
    last = "no answer yet"
    while time.monotonic() < deadline:
        for node in cluster.running_nodes():
            try:
                machines = list_machines(cluster, node)
            except (CommandError, OSError) as error:
                last = str(error)
                continue
            if len(machines) >= count:
                return machines
            last = f"{len(machines)} of {count} machines"
        time.sleep(1)
    raise ClusterError(f"fleet did not list {count} machines in time ({last})")
