"""The coreos-cloudinit cloud-config dialect: checked line by line, read into a frozen model. (pure)

`parse_cloud_config(data)` never raises on bad input: it returns every finding (printed as
`line N: error: ...`, like `coreos-cloudinit -validate`) and the model of whatever was valid.
Unknown keys are warnings, because coreos-cloudinit ignored them silently for years and a typo
such as a top-level `units:` left machines unconfigured; wrong types and values are errors, and a
config with any error must not be applied. Keys may be written with `-` or `_`.

Scalars are read from their YAML source text, not through YAML 1.1's typing: `permissions: 0644`
stays "0644" (not the integer 420) and etcd's `proxy: off` stays "off" (not false).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import difflib
import gzip
import posixpath
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import yaml

from fleetd.config import SETTINGS_BY_NAME as FLEET_SETTINGS

HEADER = "#cloud-config"
TAG = "tag:yaml.org,2002:"
SCALAR_TAGS = {TAG + name for name in ("str", "int", "float", "bool")}
NULL_TAG = TAG + "null"
BOOL_TAG = TAG + "bool"

# The keys each mapping accepts (after `-` -> `_`).
USER_FIELDS = "name passwd groups ssh_authorized_keys homedir shell system primary_group gecos"
USER_KEYS = frozenset(f"{USER_FIELDS} no_create_home".split())
FILE_KEYS = frozenset({"path", "content", "encoding", "permissions", "owner"})
UNIT_KEYS = frozenset({"name", "content", "enable", "runtime", "mask", "command", "drop_ins"})
DROP_IN_KEYS = frozenset({"name", "content"})
TOP_KEYS = frozenset(
    {"hostname", "users", "ssh_authorized_keys", "write_files", "manage_etc_hosts", "coreos"}
)
COREOS_KEYS = frozenset({"units", "etcd2", "fleet"})
# Why a key a user may reasonably write is not applied (shown with the warning).
NOT_HERE = {
    "units": "did you mean coreos.units?",
    "etcd2": "did you mean coreos.etcd2?",
    "fleet": "did you mean coreos.fleet?",
    "write_files": "write_files goes at the top level, not under coreos",
    "etcd": "etcd 0.4's settings are not supported; use coreos.etcd2",
    "flannel": "Flotilla ships no flannel",
    "locksmith": "Flotilla ships no locksmithd",
    "update": "Flotilla ships no update-engine",
    "oem": "the OEM partition carries oem-release on Flotilla",
    "runcmd": "a cloud-init key: run commands from a unit in coreos.units",
    "bootcmd": "a cloud-init key: run commands from a unit in coreos.units",
    "packages": "a cloud-init key: Flotilla has no package manager",
    "no_user_group": "not supported by flotilla-cloudinit",
    "no_log_init": "not supported by flotilla-cloudinit",
    "coreos_ssh_import_github": "deprecated in coreos-cloudinit and not supported",
    "coreos_ssh_import_github_users": "deprecated in coreos-cloudinit and not supported",
    "coreos_ssh_import_url": "deprecated in coreos-cloudinit and not supported",
}

COMMANDS = "start stop restart reload try-restart reload-or-restart reload-or-try-restart"
UNIT_COMMANDS = frozenset(COMMANDS.split())
UNIT_TYPES = "service socket timer path mount automount swap target slice device scope"
NETWORK_UNIT_TYPES = ("network", "netdev", "link")
UNIT_SUFFIXES = "|".join([*UNIT_TYPES.split(), *NETWORK_UNIT_TYPES])
UNIT_NAME = re.compile(rf"[A-Za-z0-9:_\\-][A-Za-z0-9:_.\\@-]*\.({UNIT_SUFFIXES})\Z")
DROP_IN_NAME = re.compile(r"[A-Za-z0-9:_@-][A-Za-z0-9:_.@-]*\.conf\Z")
HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\Z")
USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\Z")
OWNER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(:([A-Za-z0-9_][A-Za-z0-9_.-]*)?)?\Z")
PERMISSIONS = re.compile(r"0?[0-7]{3,4}\Z")
ENCODINGS = {
    "": (),
    "b64": ("base64",),
    "base64": ("base64",),
    "gz": ("gzip",),
    "gzip": ("gzip",),
    **{f"{gz}+{b64}": ("base64", "gzip") for gz in ("gz", "gzip") for b64 in ("b64", "base64")},
}
# etcd 3.4's flags (`etcd --help` of Debian 12's etcd-server), as ETCD_* variables name them.
ETCD_FLAG_NAMES = """advertise_client_urls auth_token auth_token_ttl auto_compaction_mode
    auto_compaction_retention auto_tls backend_batch_interval backend_batch_limit bcrypt_cost
    cert_file cipher_suites client_cert_allowed_hostname client_cert_auth client_crl_file cors
    data_dir debug discovery discovery_fallback discovery_proxy discovery_srv discovery_srv_name
    election_timeout enable_pprof enable_v2 experimental_backend_bbolt_freelist_type
    experimental_compaction_batch_limit experimental_corrupt_check_time
    experimental_enable_lease_checkpoint experimental_enable_v2v3
    experimental_initial_corrupt_check experimental_peer_skip_client_san_verification
    experimental_warning_apply_duration experimental_watch_progress_notify_interval
    force_new_cluster grpc_keepalive_interval grpc_keepalive_min_time grpc_keepalive_timeout
    heartbeat_interval host_whitelist initial_advertise_peer_urls initial_cluster
    initial_cluster_state initial_cluster_token initial_election_tick_advance key_file
    listen_client_urls listen_metrics_urls listen_peer_urls log_level log_outputs
    log_package_levels logger max_concurrent_streams max_request_bytes max_snapshots max_txn_ops
    max_wals metrics name peer_auto_tls peer_cert_allowed_cn peer_cert_allowed_hostname
    peer_cert_file peer_client_cert_auth peer_crl_file peer_key_file peer_trusted_ca_file
    pre_vote proxy proxy_dial_timeout proxy_failure_wait proxy_read_timeout
    proxy_refresh_interval proxy_write_timeout quota_backend_bytes snapshot_count
    strict_reconfig_check trusted_ca_file wal_dir"""
ETCD_FLAGS = frozenset(ETCD_FLAG_NAMES.split())
ETCD_PROXY_VALUES = ("on", "off", "readonly")

Level = Literal["error", "warning"]
T = TypeVar("T")


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
    # The line of each top-level key, for findings about the machine when it is applied.
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Parsed:
    config: CloudConfig
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.level == "error")


def parse_cloud_config(data: bytes | str) -> Parsed:
    """Check user-data and read it; gzip-compressed user-data is recognised by its magic."""
    reader = Reader()
    text = reader.decode(data)
    config = reader.document(text) if text is not None else None
    findings = sorted(reader.findings, key=lambda finding: finding.line)
    return Parsed(config or CloudConfig(), tuple(findings))


def decode_content(content: str, encoding: str) -> bytes:
    """write_files content as bytes; ValueError when it is not in its `encoding`."""
    data = content.encode()
    for step in ENCODINGS[encoding]:
        if step == "base64":
            try:
                data = base64.b64decode(b"".join(data.split()), validate=True)
            except binascii.Error as error:
                raise ValueError(str(error)) from None
        else:
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as error:
                raise ValueError(str(error)) from None
    return data


def is_under_usr(path: str) -> bool:
    normal = "/" + posixpath.normpath(path).lstrip("/")
    return normal == "/usr" or normal.startswith("/usr/")


def normal_key(node: yaml.Node) -> str:
    return str(node.value).replace("-", "_")


def line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class Reader:
    """Walks the YAML node tree, collecting findings and building the model of what is valid."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def error(self, node: yaml.Node | int, message: str) -> None:
        line = node if isinstance(node, int) else line_of(node)
        self.findings.append(Finding(line, "error", message))

    def warning(self, node: yaml.Node | int, message: str) -> None:
        line = node if isinstance(node, int) else line_of(node)
        self.findings.append(Finding(line, "warning", message))

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
        )

    # -- types ----------------------------------------------------------------------------

    def mapping(
        self, node: yaml.Node, name: str, known: frozenset[str] | None
    ) -> dict[str, yaml.Node] | None:
        """The fields of a mapping node; unknown keys (when `known` is given) are warned about."""
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f'incorrect type for "{name}" (want a mapping)')
            return None
        fields: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = normal_key(key_node)
            if key in fields:
                self.warning(
                    key_node, f'duplicate key "{key_node.value}" in "{name}": the last one counts'
                )
            if known is None or key in known:
                fields[key] = value_node
            else:
                self.unknown_key(key_node, key, known)
        return fields

    def unknown_key(self, key_node: yaml.Node, key: str, known: frozenset[str]) -> None:
        message = f'unrecognized key "{key_node.value}"'
        if key in NOT_HERE:
            message += f" ({NOT_HERE[key]})"
        elif close := difflib.get_close_matches(key, sorted(known), n=1):
            message += f' (did you mean "{close[0]}"?)'
        self.warning(key_node, message + "; ignored")

    def items(
        self, node: yaml.Node | None, name: str, read: Callable[[yaml.Node], T | None]
    ) -> list[T]:
        if node is None or node.tag == NULL_TAG:
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, f'incorrect type for "{name}" (want a list)')
            return []
        return [item for item in map(read, node.value) if item is not None]

    def text(self, node: yaml.Node | None, name: str) -> str | None:
        """A string; numbers and booleans are taken as they are written (coreos-cloudinit too)."""
        if node is None or node.tag == NULL_TAG:
            return None
        if isinstance(node, yaml.ScalarNode) and node.tag in SCALAR_TAGS:
            return node.value
        self.error(node, f'incorrect type for "{name}" (want a string)')
        return None

    def boolean(self, node: yaml.Node | None, name: str) -> bool | None:
        if node is None or node.tag == NULL_TAG:
            return None
        if isinstance(node, yaml.ScalarNode) and node.tag == BOOL_TAG:
            return yaml.constructor.SafeConstructor.bool_values[node.value.lower()]
        self.error(node, f'incorrect type for "{name}" (want true or false)')
        return None

    def strings(self, node: yaml.Node | None, name: str) -> tuple[str, ...]:
        values = self.items(node, name, lambda item: self.text(item, f"{name} item"))
        return tuple(values)

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
