"""The update agent's settings: /etc/flotilla/update.conf, in Flatcar's update.conf style (pure).

    # where payloads come from: a directory URL holding manifest.json and its files
    SERVER=http://10.0.2.100:8470/
    REBOOT_STRATEGY=reboot
    BOOT_TRIES=3

Lines are KEY=VALUE; blank lines and lines starting with # are skipped. Ignition or
cloud-config writes the file; a missing file means no update source (the timer does nothing).
An unknown key or a bad value is an error naming the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import PurePath

from .policy import DEFAULT_TRIES, MAX_TRIES

CONFIG_PATH = PurePath("/etc/flotilla/update.conf")
# `reboot`: reboot as soon as the new slot is written. `off`: write it and leave the reboot to
# someone else (/run/reboot-required says one is due). The cluster coordinator (an etcd lock,
# drain first) will be a third strategy, `etcd-lock`, behind the same hook (reboot.py).
REBOOT_STRATEGIES = ("reboot", "off")


class ConfigError(ValueError):
    """update.conf cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class UpdateConfig:
    server: str | None = None
    reboot_strategy: str = "reboot"
    boot_tries: int = DEFAULT_TRIES


def parse_config(text: str, source: str = str(CONFIG_PATH)) -> UpdateConfig:
    config = UpdateConfig()
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
        else:
            raise ConfigError(f"{where}: unknown key {key!r} (SERVER, REBOOT_STRATEGY, BOOT_TRIES)")
    return config


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
