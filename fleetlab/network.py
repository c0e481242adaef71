"""The lab network: a bridge in a namespace of its own, one veth per machine, no route out.

Machine namespaces are named (`ip netns add`) rather than created by `unshare --net`, so a
machine's address survives its death and `start` brings it back on the same IP.
"""

from __future__ import annotations

from flotilla.process import output, run

from .layout import BRIDGE, PREFIX_LENGTH, LabLayout, MachineLayout


def ip(*args: str, netns: str | None = None) -> str:
    return output(["ip", *(["-n", netns] if netns else []), *args])


def list_netns() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def netns_path(netns: str) -> str:
    return f"/run/netns/{netns}"


def create_lab_network(lab: LabLayout) -> None:
    run(["ip", "netns", "add", lab.netns])
    ip("link", "set", "lo", "up", netns=lab.netns)
    ip("link", "add", BRIDGE, "type", "bridge", netns=lab.netns)
    ip("addr", "add", f"{lab.gateway_ip}/{PREFIX_LENGTH}", "dev", BRIDGE, netns=lab.netns)
    ip("link", "set", BRIDGE, "up", netns=lab.netns)


def create_machine_network(lab: LabLayout, machine: MachineLayout) -> None:
    run(["ip", "netns", "add", machine.netns])
    ip("link", "set", "lo", "up", netns=machine.netns)
    ip(
        "link",
        "add",
        machine.bridge_port,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        machine.netns,
        netns=lab.netns,
    )
    ip("link", "set", machine.bridge_port, "master", BRIDGE, "up", netns=lab.netns)
    ip("addr", "add", f"{machine.ip}/{PREFIX_LENGTH}", "dev", "eth0", netns=machine.netns)
    ip("link", "set", "eth0", "up", netns=machine.netns)


def set_connected(lab: LabLayout, machine: MachineLayout, connected: bool) -> None:
    """Cut or restore a machine's link from the bridge side, where the machine cannot undo it."""
    ip("link", "set", machine.bridge_port, "up" if connected else "down", netns=lab.netns)


def set_powered(machine: MachineLayout, powered: bool) -> None:
    """The machine's own interface: down while the machine is killed, so it stops answering."""
    ip("link", "set", "eth0", "up" if powered else "down", netns=machine.netns)


def set_route_blocked(machine: MachineLayout, address: str, blocked: bool) -> None:
    """Drop the machine's traffic to one address and nothing else, as when one path of the
    network breaks: a blackhole route in the machine's namespace."""
    action = "add" if blocked else "del"
    ip("route", action, "blackhole", f"{address}/32", netns=machine.netns)


def is_connected(lab: LabLayout, machine: MachineLayout) -> bool:
    flags = ip("-o", "link", "show", machine.bridge_port, netns=lab.netns).split("<", 1)[1]
    return "UP" in flags.split(">", 1)[0].split(",")


def delete_lab_namespaces(lab: LabLayout) -> None:
    """Delete the lab's namespaces; veths and the bridge go with them."""
    for netns in list_netns():
        if lab.owns_netns(netns):
            run(["ip", "netns", "delete", netns])
