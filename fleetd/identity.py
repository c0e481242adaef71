"""Who this machine is: its machine id, the IP peers reach it on, its metadata."""

from __future__ import annotations

import json
from pathlib import Path

from flotilla.process import output

from .config import Config, ConfigError
from .model import Machine


def read_machine_id(path: Path) -> str:
    try:
        machine_id = path.read_text().strip()
    except OSError as error:
        raise ConfigError(f"cannot read the machine id from {path}: {error.strerror}") from error
    if len(machine_id) != 32 or not all(c in "0123456789abcdef" for c in machine_id):
        raise ConfigError(f"{path} does not hold a machine id (32 hex digits)")
    return machine_id


def detect_public_ip() -> str:
    """The first global IPv4 address, preferring the interface of the default route (as fleet)."""
    routes = json.loads(output(["ip", "-j", "-4", "route", "show", "default"]) or "[]")
    preferred = {route.get("dev") for route in routes}
    addresses = json.loads(output(["ip", "-j", "-4", "addr", "show", "scope", "global"]) or "[]")
    candidates = [
        (interface["ifname"] not in preferred, info["local"])
        for interface in addresses
        for info in interface.get("addr_info", [])
        if info.get("family") == "inet"
    ]
    if not candidates:
        raise ConfigError("no global IPv4 address to publish; set public_ip in fleet.conf")
    return min(candidates)[1]


def this_machine(config: Config) -> Machine:
    machine_id = read_machine_id(Path(config.machine_id_file))
    ip = config.public_ip or detect_public_ip()
    return Machine(machine_id, ip, dict(config.metadata))
