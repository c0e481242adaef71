"""`make demo`: the product's story on VMs. Three VMs from the image, provisioned by Ignition,
form an etcd + fleet cluster; a container unit from a five-line spec serves a page; its VM is
killed and the unit moves. The cluster stays up afterwards.

    python -m qemu.demo [--name demo] [--image-dir build]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from .cluster import Cluster
from .cluster_checks import (
    DEMO_SPEC,
    DEMO_UNIT,
    cluster_cli,
    fleetctl,
    render_demo_unit,
    wait_for_page,
)
from .cluster_up import wait_for_machines
from .command import DEFAULT_IMAGE_DIR

STARTED = time.monotonic()


def say(line: str, since: float | None = None) -> None:
    took = f" ({time.monotonic() - since:.1f}s)" if since is not None else ""
    print(f"[{time.monotonic() - STARTED:6.1f}s] {line}{took}", flush=True)


def show(text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"          {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="demo")
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGE_DIR)
    args = parser.parse_args()
    cluster = boot(args.name, args.image_dir)
    home = start_demo_unit(cluster)
    fail_over(cluster, home)
    print_way_in(cluster)


def boot(name: str, image_dir: Path) -> Cluster:
    since = time.monotonic()
    say(f"boot 3 VMs as cluster {name!r} (Ignition on first boot; etcd and fleetd on each)")
    result = cluster_cli(name, "up", "--image-dir", str(image_dir))
    show(result.stdout)
    if result.returncode != 0:
        sys.exit(f"flotilla-cluster up failed:\n{result.stderr}")
    say("cluster up", since)
    cluster = Cluster(name)
    cluster.load()
    since = time.monotonic()
    say("fleetctl list-machines, from the host")
    show(fleetctl(cluster, "list-machines"))
    say("listed", since)
    return cluster


def start_demo_unit(cluster: Cluster) -> str:
    since = time.monotonic()
    say(f"render {DEMO_SPEC.name} (flotilla's example spec) with flotilla-unit; start it")
    show(DEMO_SPEC.read_text())
    with tempfile.TemporaryDirectory() as scratch:
        fleetctl(cluster, "start", str(render_demo_unit(Path(scratch))), timeout=180)
    home, page = wait_for_page(cluster, cluster.running_nodes(), time.monotonic() + 180)
    show(fleetctl(cluster, "list-units"))
    say(f"the page answers from {home}: {page.strip()!r}", since)
    return home


def fail_over(cluster: Cluster, home: str) -> None:
    since = time.monotonic()
    say(f"kill {home} (SIGKILL of its QEMU: a crash)")
    cluster_cli(cluster.name, "kill", home)
    survivors = [node for node in cluster.running_nodes() if node != home]
    new_home, page = wait_for_page(cluster, survivors, time.monotonic() + 180)
    say(f"the page answers again from {new_home}: {page.strip()!r}", since)
    show(fleetctl(cluster, "list-units"))
    since = time.monotonic()
    say(f"start {home} again: same disk, same machine id")
    cluster_cli(cluster.name, "start", home)
    wait_for_machines(cluster, len(cluster.inventory.nodes), time.monotonic() + 180)
    show(fleetctl(cluster, "list-machines"))
    say(f"{home} is back; {DEMO_UNIT} stays on {new_home}", since)


def print_way_in(cluster: Cluster) -> None:
    name = f"--name {cluster.name}"
    print(f"""
The cluster {cluster.name!r} stays up. From here:
  eval "$(.venv/bin/flotilla-cluster {name} env)"; .venv/bin/fleetctl list-units
  .venv/bin/flotilla-cluster {name} ls | ssh n1 | kill n2 | stop n2 | start n2
  .venv/bin/flotilla-cluster {name} down        # removes VMs, network and files""")


if __name__ == "__main__":
    main()
