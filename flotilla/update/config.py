"""The update agent's settings: /etc/flotilla/update.conf, in Flatcar's update.conf style (pure).

    # where payloads come from: a directory URL holding manifest.json and its files
    SERVER=http://10.0.2.100:8470/
    REBOOT_STRATEGY=etcd-lock
    BOOT_TRIES=3
    # etcd-lock only: the cluster's etcd (default: fleet.conf's etcd_servers), how long the
    # lock outlives a machine that stops renewing it, and when reboots may happen
    ETCD_ENDPOINTS=http://10.0.0.11:2379,http://10.0.0.12:2379
    REBOOT_LOCK_TTL=10m
    REBOOT_WINDOW_START=Thu 04:00
    REBOOT_WINDOW_LENGTH=1h30m

Lines are KEY=VALUE; blank lines and lines starting with # are skipped. Ignition or
cloud-config writes the file; a missing file means no update source (the timer does nothing).
An unknown key or a bad value is an error naming the file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import PurePath

from .policy import DEFAULT_TRIES, MAX_TRIES
from .window import MaintenanceWindow, format_duration, parse_duration, parse_start, window

CONFIG_PATH = PurePath("/etc/flotilla/update.conf")
# `reboot`: reboot as soon as the new slot is written. `off`: write it and leave the reboot to
# someone else (/run/reboot-required says one is due). `etcd-lock`: the cluster's reboot
# coordinator (coordinator.py): in the window, take a slot of the etcd semaphore, drain, reboot.
REBOOT_STRATEGIES = ("etcd-lock", "reboot", "off")
KEYS = ("SERVER", "REBOOT_STRATEGY", "BOOT_TRIES", "ETCD_ENDPOINTS", "REBOOT_LOCK_TTL",
        "REBOOT_WINDOW_START", "REBOOT_WINDOW_LENGTH")  # fmt: skip
# Longer than a reboot: shutdown, firmware, and the boot up to etcd and the post-boot step,
# which renews it again. A lease that ran out while the machine was down frees its slot for
# the next machine, so it errs long: a dead machine holds the rollout up for this long.
DEFAULT_LOCK_TTL = timedelta(minutes=10)
MIN_LOCK_TTL = timedelta(seconds=10)
MAX_LOCK_TTL = timedelta(days=1)
# An etcd client URL, or a bare HOST:PORT (fleetd.etcdclient parses them for real).
ENDPOINT = re.compile(r"^(?:https?://)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?/?$")


class ConfigError(ValueError):
    """update.conf cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class UpdateConfig:
    server: str | None = None
    reboot_strategy: str = "reboot"
    boot_tries: int = DEFAULT_TRIES
    etcd_endpoints: tuple[str, ...] = ()  # empty: fleet.conf's etcd_servers (or its default)
    reboot_lock_ttl: timedelta = DEFAULT_LOCK_TTL
    reboot_window: MaintenanceWindow | None = None  # None: any time


def parse_config(text: str, source: str = str(CONFIG_PATH)) -> UpdateConfig:
    config = UpdateConfig()
    window_lines: dict[str, tuple[str, str]] = {}  # the window's two keys: value, where
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.partition("=")
        key, value = key.strip(), value.strip().strip('"')
        where = f"{source}:{number}"
        if not equals:
            raise ConfigError(f"{where}: expected KEY=VALUE, found {line!r}")
        if key == "SERVER":
            config = replace(config, server=check_server(value, where))
        elif key == "REBOOT_STRATEGY":
            config = replace(config, reboot_strategy=check_strategy(value, where))
        elif key == "BOOT_TRIES":
            config = replace(config, boot_tries=check_tries(value, where))
        elif key == "ETCD_ENDPOINTS":
            config = replace(config, etcd_endpoints=check_endpoints(value, where))
        elif key == "REBOOT_LOCK_TTL":
            config = replace(config, reboot_lock_ttl=check_lock_ttl(value, where))
        elif key in ("REBOOT_WINDOW_START", "REBOOT_WINDOW_LENGTH"):
            window_lines[key] = (value, where)
        else:
            raise ConfigError(f"{where}: unknown key {key!r} ({', '.join(KEYS)})")
    return replace(config, reboot_window=check_window(window_lines))


def check_server(value: str, where: str) -> str | None:
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: SERVER must be an http:// or https:// URL, not {value!r}")
    return value


def check_strategy(value: str, where: str) -> str:
    if value not in REBOOT_STRATEGIES:
        choices = ", ".join(REBOOT_STRATEGIES)
        raise ConfigError(f"{where}: REBOOT_STRATEGY {value!r} is not one of {choices}")
    return value


def check_tries(value: str, where: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_TRIES:
        raise ConfigError(f"{where}: BOOT_TRIES must be a number from 1 to {MAX_TRIES}")
    return int(value)


def check_endpoints(value: str, where: str) -> tuple[str, ...]:
    endpoints = tuple(item.strip() for item in value.split(",") if item.strip())
    bad = [item for item in endpoints if not ENDPOINT.match(item)]
    if not endpoints or bad:
        raise ConfigError(f"{where}: ETCD_ENDPOINTS must be etcd client URLs, comma-separated"
                          f" (http://HOST:PORT), not {(bad or [value])[0]!r}")  # fmt: skip
    if len({item.startswith("https://") for item in endpoints}) > 1:
        raise ConfigError(f"{where}: ETCD_ENDPOINTS mixes http:// and https://; use one scheme")
    return endpoints


def check_lock_ttl(value: str, where: str) -> timedelta:
    try:
        ttl = parse_duration(value)
    except ValueError as error:
        raise ConfigError(f"{where}: REBOOT_LOCK_TTL: {error}") from None
    if not MIN_LOCK_TTL <= ttl <= MAX_LOCK_TTL:
        raise ConfigError(f"{where}: REBOOT_LOCK_TTL must be from {format_duration(MIN_LOCK_TTL)}"
                          f" to {format_duration(MAX_LOCK_TTL)}, not {value!r}")  # fmt: skip
    return ttl


def check_window(lines: dict[str, tuple[str, str]]) -> MaintenanceWindow | None:
    """Both window keys or neither: a start without a length (or the reverse) is a mistake."""
    if not lines:
        return None
    start, length = lines.get("REBOOT_WINDOW_START"), lines.get("REBOOT_WINDOW_LENGTH")
    if start is None or length is None:
        present, missing = ("REBOOT_WINDOW_START", "REBOOT_WINDOW_LENGTH")[:: 1 if start else -1]
        raise ConfigError(f"{lines[present][1]}: {present} needs {missing} too (the window is"
                          " a start and a length, as in REBOOT_WINDOW_START=Thu 04:00 and"
                          " REBOOT_WINDOW_LENGTH=1h30m)")  # fmt: skip
    try:
        parse_start(start[0])
    except ValueError as error:
        raise ConfigError(f"{start[1]}: REBOOT_WINDOW_START: {error}") from None
    try:
        return window(start[0], length[0])
    except ValueError as error:
        raise ConfigError(f"{length[1]}: REBOOT_WINDOW_LENGTH: {error}") from None
