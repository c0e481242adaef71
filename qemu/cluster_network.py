"""A VM cluster's private network: a bridge and one tap per node, all inside a network namespace
the cluster owns, with no route out (kola's `-p qemu` platform does the same).

QEMU itself runs in the host's namespace, so its user-mode forwards bind the host's loopback;
it reaches the bridge through a tap fd opened inside the cluster's namespace and handed over.
Deleting the namespace removes the bridge and every tap with it.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading

from flotilla.netns import enter_netns
from flotilla.process import output, run

BRIDGE = "br0"
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def netns_name(cluster: str) -> str:
    return f"flc-{cluster}"


def tap_name(node: str) -> str:
    return f"tap-{node}"


def ip(netns: str, *args: str) -> str:
    return output(["ip", "-n", netns, *args])


def netns_exists(netns: str) -> bool:
    return os.path.exists(f"/run/netns/{netns}")


def create_network(netns: str, gateway: str, prefix: int, nodes: list[str]) -> None:
    run(["ip", "netns", "add", netns])
    ip(netns, "link", "set", "lo", "up")
    ip(netns, "link", "add", BRIDGE, "type", "bridge")
    ip(netns, "addr", "add", f"{gateway}/{prefix}", "dev", BRIDGE)
    ip(netns, "link", "set", BRIDGE, "up")
    for node in nodes:
        ip(netns, "tuntap", "add", "dev", tap_name(node), "mode", "tap")
        ip(netns, "link", "set", tap_name(node), "master", BRIDGE, "up")


def delete_network(netns: str) -> None:
    if netns_exists(netns):
        run(["ip", "netns", "delete", netns])


def open_tap(netns: str, node: str) -> int:
    """An fd on the node's tap, opened inside the cluster's namespace (where the tap lives).

    setns() changes only the calling thread's namespace, so a short-lived thread enters it and
    the rest of the process never leaves the host's namespace."""
    result: dict[str, int | BaseException] = {}

    def attach() -> None:
        try:
            enter_netns(f"/run/netns/{netns}")
            fd = os.open("/dev/net/tun", os.O_RDWR)
            try:
                request = struct.pack("16sH", tap_name(node).encode(), IFF_TAP | IFF_NO_PI)
                fcntl.ioctl(fd, TUNSETIFF, request)
            except BaseException:
                os.close(fd)  # an open tun fd would keep the namespace alive after its delete
                raise
            result["fd"] = fd
        except BaseException as error:  # handed to the caller's thread below
            result["error"] = error

    thread = threading.Thread(target=attach, name=f"tap-{node}")
    thread.start()
    thread.join()
    if "error" in result:
        raise OSError(f"cannot open tap {tap_name(node)} in {netns}: {result['error']}")
    fd = result["fd"]
    assert isinstance(fd, int)
    return fd
