"""The model of a checked cloud-config, and the findings about it. (pure)"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .cloudconfig_schema import NETWORK_UNIT_TYPES

Level = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    line: int
    level: Level
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.level}: {self.message}"


@dataclass(frozen=True)
class User:
    name: str
    line: int = 1
    passwd: str | None = None
    groups: tuple[str, ...] = ()
    ssh_authorized_keys: tuple[str, ...] = ()
    homedir: str | None = None
    shell: str | None = None
    system: bool = False
    primary_group: str | None = None
    gecos: str | None = None
    no_create_home: bool = False


@dataclass(frozen=True)
class WriteFile:
    path: str
    content: bytes  # already decoded from its `encoding`
    permissions: int = 0o644
    owner: str | None = None  # chown(1)'s "user", "user:group" or "user:"
    line: int = 1


@dataclass(frozen=True)
class DropIn:
    name: str
    content: str


@dataclass(frozen=True)
class Unit:
    name: str
    line: int = 1
    content: str | None = None
    enable: bool = False
    runtime: bool = False
    mask: bool | None = None  # None: not said; False asks for an unmask
    command: str | None = None
    drop_ins: tuple[DropIn, ...] = ()

    @property
    def is_network(self) -> bool:
        return self.name.endswith(tuple(f".{kind}" for kind in NETWORK_UNIT_TYPES))


@dataclass(frozen=True)
class CloudConfig:
    hostname: str | None = None
    users: tuple[User, ...] = ()
    ssh_authorized_keys: tuple[str, ...] = ()
    write_files: tuple[WriteFile, ...] = ()
    manage_etc_hosts: str | None = None
    units: tuple[Unit, ...] = ()
    etcd2: tuple[tuple[str, str], ...] = ()  # (ETCD_* variable, value), in file order
    fleet: tuple[tuple[str, str], ...] = ()  # (FLEET_* variable, value)
    update: tuple[tuple[str, str], ...] = ()  # update.conf's (KEY, value): coreos.update, locksmith
    # The line of each top-level key, for findings about the machine when it is applied.
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Parsed:
    config: CloudConfig
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.level == "error")
