"""Benchmark: a rolling update of a 3-VM cluster through the reboot lock (TCG). Every node gets
the build's payload again as the next version; their update services start at once and the
etcd lock lets one node at a time drain, reboot into the other slot, come back healthy, undrain
and release. Prints the rolling-update time, the longest time a unit ran nowhere, and what the
watcher saw (two copies at once, lock holders, nodes down, etcd write refusals).

    .venv/bin/python bench/rolling_update.py [--units 3] [--timeout 1800] [--skip-build]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
from pathlib import Path

from flotilla.process import run
from imagebuild.image import Artifacts
from imagebuild.payload import DEV_KEY_NAME, republish
from imagebuild.serve import serving
from qemu.cluster import Cluster
from qemu.cluster_checks import BIN, cluster_cli
from qemu.cluster_roll import RollReport, roll, start_sleepers

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build"
IMAGE = Artifacts.named(BUILD, "flotilla")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--skip-build", action="store_true", help="use build/ as it is")
    args = parser.parse_args()
    if not args.skip_build:
        run([BIN / "imagebuild", "build"], timeout=3600)
    version = json.loads(IMAGE.report.read_text())["version"] + ".1"
    name = "roll" + secrets.token_hex(2)
    with tempfile.TemporaryDirectory(prefix="flotilla-roll-") as scratch:
        payload = republish(IMAGE.update, BUILD / DEV_KEY_NAME, Path(scratch) / "payload", version)
        with serving(payload) as port:
            try:
                up = cluster_cli(name, "up", "--boot", "uefi", "--host-service", str(port))
                if up.returncode != 0:
                    print(up.stdout + up.stderr, file=sys.stderr)
                    return 1
                cluster = Cluster(name)
                cluster.load()
                units = start_sleepers(cluster, Path(scratch), args.units)
                report = roll(cluster, port, version, units, args.timeout)
            finally:
                cluster_cli(name, "down")
    print_report(report)
    return 1 if report.doubles else 0


def print_report(report: RollReport) -> None:
    print("\nrolling update: 3 VMs, REBOOT_STRATEGY=etcd-lock (max 1), TCG, 2 host cores")
    for line in report.lines():
        print(f"  {line}")
    print("  targets: no unit twice; never more than 1 holder; etcd keeps quorum")


if __name__ == "__main__":
    sys.exit(main())
