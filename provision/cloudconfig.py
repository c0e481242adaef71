"""The coreos-cloudinit cloud-config dialect: checked line by line, read into a frozen model. (pure)

`parse_cloud_config(data)` never raises on bad input: it returns every finding (printed as
`line N: error: ...`, like `coreos-cloudinit -validate`) and the model of whatever was valid.
Unknown keys are warnings, because coreos-cloudinit ignored them silently for years and a typo
such as a top-level `units:` left machines unconfigured; wrong types and values are errors, and a
config with any error must not be applied. Keys may be written with `-` or `_`.

Scalars are read from their YAML source text, not through YAML 1.1's typing: `permissions: 0644`
stays "0644" (not the integer 420) and etcd's `proxy: off` stays "off" (not false).

What each key accepts is in cloudconfig_schema.py, the model in cloudconfig_model.py, and the
typed reading of YAML nodes in cloudconfig_yaml.py; this module walks a document through them.
"""

from __future__ import annotations

import dataclasses
import gzip
import posixpath
import re
import zlib

import yaml

from flotilla.update.config import ConfigError, parse_config

from .cloudconfig_model import CloudConfig, DropIn, Finding, Parsed, Unit, User, WriteFile
from .cloudconfig_schema import (
    COMMANDS,
    COREOS_KEYS,
    DROP_IN_KEYS,
    DROP_IN_NAME,
    ENCODINGS,
    ETCD_FLAGS,
    ETCD_PROXY_VALUES,
    FILE_KEYS,
    FLEET_SETTINGS,
    HEADER,
    HOSTNAME,
    IGNORED_UPDATE_KEYS,
    NOT_HERE,
    OWNER,
    PERMISSIONS,
    TOP_KEYS,
    UNIT_COMMANDS,
    UNIT_KEYS,
    UNIT_NAME,
    UPDATE_CONF_KEYS,
    USER_KEYS,
    USER_NAME,
    WINDOW_KEYS,
    decode_content,
    is_under_usr,
)
from .cloudconfig_yaml import BOOL_TAG, NULL_TAG, NodeReader, line_of, normal_key

# The model is read from here too: `from provision.cloudconfig import CloudConfig, Finding`.
__all__ = ["CloudConfig", "DropIn", "Finding", "Parsed", "Unit", "User", "WriteFile"]
__all__ += ["parse_cloud_config"]


def parse_cloud_config(data: bytes | str) -> Parsed:
    """Check user-data and read it; gzip-compressed user-data is recognised by its magic."""
    reader = Reader()
    text = reader.decode(data)
    config = reader.document(text) if text is not None else None
    findings = sorted(reader.findings, key=lambda finding: finding.line)
    return Parsed(config or CloudConfig(), tuple(findings))


class Reader(NodeReader):
    """Walks the YAML node tree, collecting findings and building the model of what is valid."""

    hints = NOT_HERE

    # -- the document ---------------------------------------------------------------------

    def decode(self, data: bytes | str) -> str | None:
        if isinstance(data, bytes) and data.startswith(b"\x1f\x8b"):
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as error:
                self.error(1, f"user-data looks gzip-compressed but cannot be read: {error}")
                return None
        if isinstance(data, bytes):
            try:
                data = data.decode()
            except UnicodeDecodeError as error:
                self.error(1, f"user-data is not UTF-8 text: {error}")
                return None
        return data

    def document(self, text: str) -> CloudConfig | None:
        if not text.strip():
            return None  # empty user-data: nothing to do, nothing wrong
        if not self.check_header(text):
            return None
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            self.error(mark.line + 1 if mark else 1, f"invalid YAML: {error.problem}")
            return None
        except yaml.YAMLError as error:
            self.error(1, f"invalid YAML: {error}")
            return None
        if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == NULL_TAG):
            return CloudConfig()
        fields = self.mapping(root, "cloud-config", TOP_KEYS)
        if fields is None:
            return None
        lines = {normal_key(key): line_of(key) for key, _ in root.value}  # type: ignore[union-attr]
        return dataclasses.replace(self.top_level(fields), lines=lines)

    def check_header(self, text: str) -> bool:
        first = text.splitlines()[0].rstrip()
        if first == HEADER:
            return True
        if first.startswith("#!"):
            self.error(
                1,
                "scripts (#!) are not supported, only #cloud-config:"
                " run commands from a unit in coreos.units",
            )
        elif text.lstrip().startswith("{") and "ignition" in text:
            self.error(
                1,
                "this is an Ignition config: Ignition applies it at first boot,"
                " not flotilla-cloudinit",
            )
        else:
            self.error(1, f'must begin with "{HEADER}" on its first line')
        return False

    def top_level(self, fields: dict[str, yaml.Node]) -> CloudConfig:
        coreos_node = fields.get("coreos")
        coreos: dict[str, yaml.Node] = {}
        if coreos_node is not None and coreos_node.tag != NULL_TAG:
            coreos = self.mapping(coreos_node, "coreos", COREOS_KEYS) or {}
        get = fields.get
        return CloudConfig(
            hostname=self.hostname(get("hostname")),
            users=tuple(self.items(get("users"), "users", self.user)),
            ssh_authorized_keys=self.strings(get("ssh_authorized_keys"), "ssh_authorized_keys"),
            write_files=tuple(self.items(get("write_files"), "write_files", self.write_file)),
            manage_etc_hosts=self.etc_hosts(get("manage_etc_hosts")),
            units=tuple(self.items(coreos.get("units"), "coreos.units", self.unit)),
            etcd2=self.etcd2(coreos.get("etcd2")),
            fleet=self.fleet(coreos.get("fleet")),
            update=self.update_conf(
                coreos.get("update"),
                coreos.get("locksmith"),
                "etcd2" in coreos or "fleet" in coreos,
            ),
        )

    # -- sections -------------------------------------------------------------------------

    def hostname(self, node: yaml.Node | None) -> str | None:
        name = self.text(node, "hostname")
        if name is not None and not HOSTNAME.match(name):
            self.error(node, f"invalid hostname {name!r} (letters, digits and '-', dot-separated)")
            return None
        return name

    def etc_hosts(self, node: yaml.Node | None) -> str | None:
        value = self.text(node, "manage_etc_hosts")
        if value is not None and value != "localhost":
            self.error(node, f'invalid value {value!r} for "manage_etc_hosts" (only "localhost")')
            return None
        return value

    def user(self, node: yaml.Node) -> User | None:
        fields = self.mapping(node, "users item", USER_KEYS)
        if fields is None:
            return None
        name = self.text(fields.get("name"), "name")
        if name is None:
            self.error(node, 'a user needs a "name"')
            return None
        if not USER_NAME.match(name):
            self.error(fields["name"], f"invalid user name {name!r}")
            return None
        return User(
            name=name,
            line=line_of(node),
            passwd=self.text(fields.get("passwd"), "passwd"),
            groups=self.strings(fields.get("groups"), "groups"),
            ssh_authorized_keys=self.strings(
                fields.get("ssh_authorized_keys"), "ssh_authorized_keys"
            ),
            homedir=self.text(fields.get("homedir"), "homedir"),
            shell=self.text(fields.get("shell"), "shell"),
            system=bool(self.boolean(fields.get("system"), "system")),
            primary_group=self.text(fields.get("primary_group"), "primary_group"),
            gecos=self.text(fields.get("gecos"), "gecos"),
            no_create_home=bool(self.boolean(fields.get("no_create_home"), "no_create_home")),
        )

    def write_file(self, node: yaml.Node) -> WriteFile | None:
        fields = self.mapping(node, "write_files item", FILE_KEYS)
        if fields is None:
            return None
        path = self.file_path(node, fields.get("path"))
        content = self.file_content(fields)
        permissions = self.text(fields.get("permissions"), "permissions") or "0644"
        if not PERMISSIONS.match(permissions):
            self.error(
                fields["permissions"],
                f'invalid permissions {permissions!r} (an octal string like "0644")',
            )
            return None
        owner = self.text(fields.get("owner"), "owner")
        if owner is not None and not OWNER.match(owner):
            self.error(fields["owner"], f'invalid owner {owner!r} (use "user" or "user:group")')
            return None
        if path is None or content is None:
            return None
        return WriteFile(path, content, int(permissions, 8), owner, line_of(node))

    def file_path(self, item: yaml.Node, node: yaml.Node | None) -> str | None:
        path = self.text(node, "path")
        if path is None:
            self.error(item, 'a file needs a "path"')
        elif not path.startswith("/"):
            self.error(node, f"path {path!r} must be absolute")
        elif is_under_usr(path):
            self.error(node, f"{path}: file cannot be written to a read-only filesystem (/usr)")
        else:
            return posixpath.normpath(path)
        return None

    def file_content(self, fields: dict[str, yaml.Node]) -> bytes | None:
        content = self.text(fields.get("content"), "content") or ""
        encoding = self.text(fields.get("encoding"), "encoding") or ""
        if encoding not in ENCODINGS:
            choices = ", ".join(name for name in ENCODINGS if name)
            self.error(fields["encoding"], f"invalid encoding {encoding!r} (one of {choices})")
            return None
        try:
            return decode_content(content, encoding)
        except ValueError as error:
            self.error(
                fields.get("content") or fields["encoding"],
                f'content cannot be decoded as "{encoding}": {error}',
            )
            return None

    def unit(self, node: yaml.Node) -> Unit | None:
        fields = self.mapping(node, "coreos.units item", UNIT_KEYS)
        if fields is None:
            return None
        name = self.text(fields.get("name"), "name")
        if name is None:
            self.error(node, 'a unit needs a "name"')
            return None
        if not UNIT_NAME.match(name):
            self.error(fields["name"], f"invalid unit name {name!r}")
            return None
        command = self.text(fields.get("command"), "command")
        if command is not None and command not in UNIT_COMMANDS:
            self.error(
                fields["command"],
                f"invalid command {command!r} (one of {COMMANDS.replace(' ', ', ')})",
            )
            return None
        unit = Unit(
            name=name,
            line=line_of(node),
            content=self.text(fields.get("content"), "content"),
            enable=bool(self.boolean(fields.get("enable"), "enable")),
            runtime=bool(self.boolean(fields.get("runtime"), "runtime")),
            mask=self.boolean(fields.get("mask"), "mask"),
            command=command,
            drop_ins=tuple(self.items(fields.get("drop_ins"), "drop_ins", self.drop_in)),
        )
        return self.check_unit(unit, fields)

    def check_unit(self, unit: Unit, fields: dict[str, yaml.Node]) -> Unit | None:
        if unit.mask and unit.content is not None:
            self.error(fields["mask"], f"{unit.name}: a masked unit cannot have content")
            return None
        if unit.is_network:
            for key in ("enable", "mask", "command"):
                if key in fields:
                    self.warning(
                        fields[key], f'{unit.name}: "{key}" does nothing for network units; ignored'
                    )
            return Unit(
                unit.name, unit.line, unit.content, runtime=unit.runtime, drop_ins=unit.drop_ins
            )
        return unit

    def drop_in(self, node: yaml.Node) -> DropIn | None:
        fields = self.mapping(node, "drop_ins item", DROP_IN_KEYS)
        if fields is None:
            return None
        name = self.text(fields.get("name"), "name")
        if name is None:
            self.error(node, 'a drop-in needs a "name"')
            return None
        if not DROP_IN_NAME.match(name):
            self.error(
                fields["name"], f"invalid drop-in name {name!r} (systemd reads only NAME.conf)"
            )
            return None
        return DropIn(name, self.text(fields.get("content"), "content") or "")

    def etcd2(self, node: yaml.Node | None) -> tuple[tuple[str, str], ...]:
        settings = []
        for key, value_node, value in self.scalar_settings(node, "coreos.etcd2"):
            if key not in ETCD_FLAGS:
                self.warning(value_node, f'coreos.etcd2: "{key}" is not an etcd 3.4 flag; ignored')
                continue
            if key == "proxy" and value not in ETCD_PROXY_VALUES:
                self.error(value_node, f"invalid value {value!r} for proxy (on, off or readonly)")
                continue
            if value_node.tag == BOOL_TAG and key != "proxy":
                value = str(yaml.constructor.SafeConstructor.bool_values[value.lower()]).lower()
            settings.append((f"ETCD_{key.upper()}", value))
        return tuple(settings)

    def fleet(self, node: yaml.Node | None) -> tuple[tuple[str, str], ...]:
        settings = []
        for key, value_node, value in self.scalar_settings(node, "coreos.fleet"):
            setting = FLEET_SETTINGS.get(key)
            if setting is None:
                self.warning(value_node, f'coreos.fleet: fleetd has no setting "{key}"; ignored')
                continue
            try:
                setting.parse(value)  # fleetd refuses to start on a bad value: say so now
            except ValueError as error:
                self.error(value_node, f"coreos.fleet: {key}: {error}")
                continue
            settings.append((f"FLEET_{key.upper()}", value))
        return tuple(settings)

    def update_conf(
        self, update: yaml.Node | None, locksmith: yaml.Node | None, clustered: bool
    ) -> tuple[tuple[str, str], ...]:
        """coreos.update and coreos.locksmith as update.conf's lines, each value checked as the
        update agent will check it. `clustered`: the config runs etcd or fleet here, which is
        what locksmith's "best-effort" strategy asked of a machine before taking the lock."""
        lines: list[tuple[str, str]] = []
        window: dict[str, yaml.Node] = {}
        for section, node in (("update", update), ("locksmith", locksmith)):
            for key, value_node, value in self.scalar_settings(node, f"coreos.{section}"):
                name = f"coreos.{section}.{key}"
                if (section, key) in IGNORED_UPDATE_KEYS:
                    why = IGNORED_UPDATE_KEYS[(section, key)]
                    self.warning(value_node, f"{name}: ignored ({why})")
                    continue
                conf_key = UPDATE_CONF_KEYS.get((section, key))
                if conf_key is None:
                    self.warning(value_node, f'coreos.{section}: no setting "{key}"; ignored')
                    continue
                if conf_key == "REBOOT_STRATEGY" and value == "best-effort":
                    value = "etcd-lock" if clustered else "reboot"
                    runs = "etcd or fleet" if clustered else "neither etcd nor fleet"
                    self.warning(
                        value_node, f'{name}: "best-effort" is taken as "{value}" (it runs {runs})'
                    )
                if conf_key in WINDOW_KEYS:
                    window[conf_key] = value_node  # checked as a pair below
                elif not self.update_value_ok(value_node, name, f"{conf_key}={value}"):
                    continue
                lines.append((conf_key, value))
        if window:
            pair = "\n".join(f"{k}={v}" for k, v in lines if k in WINDOW_KEYS)
            first = next(iter(window.values()))
            if not self.update_value_ok(first, "coreos.locksmith", pair):
                lines = [(k, v) for k, v in lines if k not in WINDOW_KEYS]
        return tuple(lines)

    def update_value_ok(self, node: yaml.Node, name: str, text: str) -> bool:
        try:
            parse_config(text, name)
        except ConfigError as error:
            self.error(node, re.sub(rf"^{re.escape(name)}:\d+: ", f"{name}: ", str(error)))
            return False
        return True

    def scalar_settings(
        self, node: yaml.Node | None, name: str
    ) -> list[tuple[str, yaml.Node, str]]:
        """(key, value node, value text) of a flat map of settings that become variables."""
        if node is None or node.tag == NULL_TAG:
            return []
        found = []
        for key, value_node in (self.mapping(node, name, None) or {}).items():
            value = self.text(value_node, f"{name}.{key}")
            if value is not None and "\n" in value:
                self.error(value_node, f"{name}.{key}: a setting must be on one line")
            elif value is not None:
                found.append((key, value_node, value))
        return found
