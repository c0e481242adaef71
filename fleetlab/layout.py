"""Where each piece of a lab lives: names of namespaces, cgroups, directories and addresses.

Pure: every name is derived from the lab's name, so `down` can find a crashed lab's leftovers
without any state file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

LAB_NAME = re.compile(r"[a-z][a-z0-9]{0,9}")
LAB_NETNS = re.compile(r"fl-([a-z][a-z0-9]{0,9})(?:-m[0-9]+)?")  # a lab's and its machines'
MACHINE_NAME = re.compile(r"m([1-9][0-9]?)")
MAX_MACHINES = 64
SUBNET_PREFIX = "10.77.0"
PREFIX_LENGTH = 24
BRIDGE = "br0"
ETCD_CLIENT_PORT = 2379
DEFAULT_STATE_ROOT = Path("/var/lib/fleetlab")


class LayoutError(ValueError):
    """A lab or machine name that cannot be used."""


def check_lab_name(name: str) -> str:
    if not LAB_NAME.fullmatch(name):
        raise LayoutError(
            f"invalid lab name {name!r}: use 1-10 lowercase letters and digits,"
            " starting with a letter"
        )
    return name


def machine_names(count: int) -> list[str]:
    return [f"m{i}" for i in range(1, count + 1)]


def machine_index(name: str) -> int:
    match = MACHINE_NAME.fullmatch(name)
    if not match or int(match.group(1)) > MAX_MACHINES:
        raise LayoutError(f"invalid machine name {name!r}: machines are named m1..m{MAX_MACHINES}")
    return int(match.group(1))


@dataclass(frozen=True)
class MachineLayout:
    lab: str
    name: str
    directory: Path
    cgroup: Path

    @property
    def netns(self) -> str:
        return f"fl-{self.lab}-{self.name}"

    @property
    def ip(self) -> str:
        return f"{SUBNET_PREFIX}.{10 + machine_index(self.name)}"

    @property
    def bridge_port(self) -> str:
        """The machine's veth end on the lab bridge (inside the lab's namespace)."""
        return self.name

    @property
    def upper(self) -> Path:
        return self.directory / "upper"

    @property
    def work(self) -> Path:
        return self.directory / "work"

    @property
    def root(self) -> Path:
        return self.directory / "root"

    @property
    def console_log(self) -> Path:
        return self.directory / "console.log"


@dataclass(frozen=True)
class LabLayout:
    name: str
    state_root: Path
    cgroup_root: Path

    @property
    def state_dir(self) -> Path:
        return self.state_root / self.name

    @property
    def state_file(self) -> Path:
        return self.state_dir / "lab.json"

    @property
    def netns(self) -> str:
        """The namespace holding the bridge and etcd; it has no route anywhere."""
        return f"fl-{self.name}"

    def owns_netns(self, netns: str) -> bool:
        found = LAB_NETNS.fullmatch(netns)
        return found is not None and found.group(1) == self.name

    @property
    def cgroup(self) -> Path:
        return self.cgroup_root / self.name

    @property
    def firewall_table(self) -> str:
        """The nftables table that keeps the forwarded etcd port root's (flotilla.firewall);
        lab names are [a-z][a-z0-9]*, a valid nft identifier as they are."""
        return f"fleetlab_{self.name}"

    @property
    def gateway_ip(self) -> str:
        return f"{SUBNET_PREFIX}.1"

    @property
    def etcd_dir(self) -> Path:
        return self.state_dir / "etcd"

    @property
    def etcd_cgroup(self) -> Path:
        return self.cgroup / "etcd"

    @property
    def forward_cgroup(self) -> Path:
        return self.cgroup / "forward"

    @property
    def etcd_endpoint(self) -> str:
        return f"http://{self.gateway_ip}:{ETCD_CLIENT_PORT}"

    def machine(self, name: str) -> MachineLayout:
        machine_index(name)
        return MachineLayout(
            lab=self.name,
            name=name,
            directory=self.state_dir / "machines" / name,
            cgroup=self.cgroup / "machines" / name,
        )
