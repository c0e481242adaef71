"""fleetd's configuration: one table of settings drives fleet.conf, FLEET_* variables and flags.

Precedence, lowest first: built-in defaults, the config file, FLEET_<NAME> environment
variables, command-line flags. Option names are fleet's where fleet has the option.

An existing fleet.conf must keep working (fleet ignores keys it does not know): the keys fleet
has and Flotilla does not act on are accepted with a warning that they do nothing, and an
unknown key (in the file, or an unknown FLEET_* variable) is a warning naming where it is. A bad
value of a setting fleetd uses is still an error: running with a default the user did not
choose would be worse than not starting.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from .metadata_match import METADATA_KEY

DEFAULT_CONFIG_FILE = Path("/etc/fleet/fleet.conf")
DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# systemd's unit search paths (`systemd-analyze unit-paths`, system and user managers): the agent
# takes every unit file in units_directory for one it wrote, and unloads and deletes the ones
# the cluster did not assign, so it must never be pointed at (or into) one of these.
SYSTEMD_UNIT_DIRECTORIES = (
    "/etc/systemd/system",
    "/etc/systemd/system.control",
    "/etc/systemd/system.attached",
    "/etc/systemd/user",
    "/run/systemd/system",
    "/run/systemd/system.control",
    "/run/systemd/system.attached",
    "/run/systemd/transient",
    "/run/systemd/generator",
    "/run/systemd/generator.early",
    "/run/systemd/generator.late",
    "/run/systemd/user",
    "/lib/systemd/system",
    "/lib/systemd/user",
    "/usr/lib/systemd/system",
    "/usr/local/lib/systemd/system",
)
READ_ONLY_TREE = "/usr"  # the machines' /usr is a read-only erofs image


class ConfigError(ValueError):
    """A setting has a value fleetd cannot use; the message names the setting and its source."""


MAX_DURATION = 86400.0  # a day: no interval or TTL of fleetd is longer


def parse_duration(text: str) -> float:
    """Go-style durations ("10s", "1m30s", "500ms") or plain seconds ("2.5")."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        parts = DURATION_PART.findall(text)
        if not parts or "".join(a + b for a, b in parts) != text:
            raise ValueError(f"invalid duration {text!r} (use e.g. 10s, 1m30s, 500ms)") from None
        seconds = sum(float(amount) * DURATION_UNITS[unit] for amount, unit in parts)
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_DURATION:
        raise ValueError(f"duration must be positive and at most a day, not {text!r}")
    return seconds


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "t", "true", "yes", "on"):
        return True
    if lowered in ("0", "f", "false", "no", "off", ""):
        return False
    raise ValueError(f"invalid boolean {text!r} (use true or false)")


def parse_list(text: str) -> tuple[str, ...]:
    """fleet accepts a JSON list (["http://a:2379"]) or a comma-separated string."""
    text = text.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as error:
            raise ValueError(f"invalid list {text[:80]!r}: {error}") from None
        if not isinstance(items, list):
            raise ValueError(f"invalid list {text[:80]!r}")
    else:
        items = text.split(",")
    values = tuple(str(item).strip() for item in items if str(item).strip())
    if not values:
        raise ValueError("the list is empty")
    return values


def parse_metadata(text: str) -> tuple[tuple[str, str], ...]:
    """`k=v,k2=v2`, optionally quoted; the last duplicate wins, as in fleet."""
    pairs: dict[str, str] = {}
    for item in text.strip().strip('"').split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not METADATA_KEY.fullmatch(key) or not value:
            raise ValueError(f"invalid metadata entry {item.strip()!r} (use key=value)")
        pairs[key] = value
    return tuple(pairs.items())


def parse_port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(f"invalid port {text!r}")
    return port


def parse_nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must not be negative, not {text!r}")
    return value


def parse_text(text: str) -> str:
    return text.strip()


def parse_ip(text: str) -> str:
    """An IPv4 or IPv6 address, or "" (detect it): fleetctl passes it to ssh."""
    text = text.strip()
    if text:
        ipaddress.ip_address(text)  # ValueError names the value
    return text


def listen_address(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets) -> (host, port); ValueError names the fault."""
    host, sep, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, not {text.strip()!r}")
    return host, parse_port(port)


def parse_listen(text: str) -> str:
    """HOST:PORT, or "" (off)."""
    text = text.strip()
    if text:
        listen_address(text)
    return text


def parse_units_directory(text: str) -> str:
    """An absolute directory of fleetd's own; see check_units_directory."""
    text = text.strip()
    check_units_directory(text)
    return text


def check_units_directory(path: str) -> None:
    """Refuse a units_directory fleetd cannot own: systemd's unit directories (and what is
    below or above them), and the read-only /usr. The path is checked as written and with
    symbolic links resolved."""
    if not os.path.isabs(path):
        raise ValueError(f"must be an absolute path, not {path!r}")
    for candidate in dict.fromkeys([os.path.normpath(path), os.path.realpath(path)]):
        if within(candidate, READ_ONLY_TREE):
            raise ValueError(
                f"{path} is under {READ_ONLY_TREE}, which is read-only on Flotilla machines"
                " (and holds systemd's own units); use a directory of fleetd's own, such as"
                " /run/fleet/units/"
            )
        for directory in SYSTEMD_UNIT_DIRECTORIES:
            if candidate == directory:
                relation = "is"
            elif within(candidate, directory):
                relation = "is inside"
            elif within(directory, candidate):
                relation = "contains"
            else:
                continue
            raise ValueError(
                f"{path} {relation} systemd's own unit directory {directory}; fleetd takes"
                " every unit file in units_directory for one it wrote (and deletes those the"
                " cluster did not assign), so it needs a directory of its own, such as"
                " /run/fleet/units/"
            )


def within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def parse_prefix(text: str) -> str:
    text = text.strip()
    if not text.startswith("/"):
        raise ValueError(f"must start with '/', not {text!r}")
    return text if text.endswith("/") else text + "/"


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[str], object]
    help: str


SETTINGS = (
    Setting("verbosity", parse_nonnegative_int, "log level: 0 info, 1 and more debug"),
    Setting("etcd_servers", parse_list, "etcd client URLs (JSON list or comma-separated)"),
    Setting("etcd_key_prefix", parse_prefix, "prefix of every fleet key in etcd"),
    Setting("etcd_request_timeout", parse_duration, "timeout of one etcd request"),
    Setting("etcd_username", parse_text, "etcd user (with etcd_password)"),
    Setting("etcd_password", parse_text, "etcd password (fleet.conf or FLEET_ETCD_PASSWORD only)"),
    Setting("etcd_cafile", parse_text, "CA that etcd's certificate must chain to (https://)"),
    Setting("etcd_certfile", parse_text, "client certificate for etcd (https://)"),
    Setting("etcd_keyfile", parse_text, "client key for etcd (https://)"),
    Setting("public_ip", parse_ip, "IP other machines and fleetctl reach this machine on"),
    Setting("metadata", parse_metadata, "this machine's metadata: key=value,key2=value2"),
    Setting("agent_ttl", parse_duration, "lease TTL: how long a silent machine stays registered"),
    Setting("engine_reconcile_interval", parse_duration, "seconds between full engine passes"),
    Setting("agent_reconcile_interval", parse_duration, "seconds between full agent passes"),
    Setting("disable_engine", parse_bool, "never lead the engine"),
    Setting("units_directory", parse_units_directory, "where the agent writes unit files"),
    Setting("fencing", parse_bool, "stop units when this machine alone is cut off from etcd"),
    Setting("peer_port", parse_port, "UDP port peers ask each other about etcd on"),
    Setting("machine_id_file", parse_text, "where the machine id is read from"),
    Setting("api_listen", parse_text, "also serve the API on HOST:PORT over TLS (off if empty)"),
    Setting("api_tls_cert", parse_text, "the API's TLS certificate (with api_listen)"),
    Setting("api_tls_key", parse_text, "the API's TLS key (with api_listen)"),
    Setting("api_tls_client_ca", parse_text, "CA that client certificates must chain to"),
    Setting(
        "metrics_listen",
        parse_listen,
        "also serve /metrics and /healthz (only) on HOST:PORT in plain HTTP (off if empty)",
    ),
    Setting(
        "api_insecure_tcp",
        parse_bool,
        "serve the API on TCP (api_listen, fleet.socket) without TLS: anyone reaching the port"
        " can run commands on every machine",
    ),
    Setting("events_limit", parse_nonnegative_int, "events this machine keeps in etcd (0: none)"),
    Setting("events_max_age", parse_duration, "how long events are kept (up to 1.25 times)"),
)
SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}


@dataclass(frozen=True)
class CompatibilityKey:
    """A fleet.conf key of fleet's that Flotilla accepts and ignores (with a warning)."""

    name: str
    help: str  # what it did in fleet, and why it does nothing here


# fleet's own loader never refuses a value of these (its config library drops a value the flag
# cannot parse and keeps the default), so fleetd does not check their values either: a fleet.conf
# fleet started with must start fleetd too.
COMPATIBILITY_KEYS = (
    CompatibilityKey("token_limit", "fleet's API page size; the API pages by 100, fleet's default"),
    CompatibilityKey("disable_watches", "fleet's polling-only mode; fleetd always watches etcd"),
    CompatibilityKey("enable_grpc", "fleet's gRPC registry on the leader; fleetd uses etcd"),
    CompatibilityKey("verify_units", "deprecated and ignored by fleet already"),
    CompatibilityKey("authorized_keys_file", "deprecated and ignored by fleet already"),
    CompatibilityKey("systemd_user", "fleet's user systemd instance; fleetd uses the system one"),
)
COMPATIBILITY_KEYS_BY_NAME = {key.name: key for key in COMPATIBILITY_KEYS}
ENVIRONMENT_PREFIX = "FLEET_"


@dataclass(frozen=True)
class Config:
    verbosity: int = 0
    etcd_servers: tuple[str, ...] = ("http://127.0.0.1:2379",)
    etcd_key_prefix: str = "/_coreos.com/fleet/"
    etcd_request_timeout: float = 1.0
    etcd_username: str = ""
    etcd_password: str = field(default="", repr=False)  # never in a log line
    etcd_cafile: str = ""
    etcd_certfile: str = ""
    etcd_keyfile: str = ""
    public_ip: str = ""
    metadata: tuple[tuple[str, str], ...] = field(default=())
    agent_ttl: float = 10.0
    engine_reconcile_interval: float = 2.0
    agent_reconcile_interval: float = 5.0
    disable_engine: bool = False
    units_directory: str = "/run/fleet/units/"
    fencing: bool = True
    peer_port: int = 7007
    machine_id_file: str = "/etc/machine-id"
    api_listen: str = ""
    api_tls_cert: str = ""
    api_tls_key: str = ""
    api_tls_client_ca: str = ""
    api_insecure_tcp: bool = False
    metrics_listen: str = ""
    events_limit: int = 1000
    events_max_age: float = 86400.0


def read_config_file(path: Path) -> dict[str, tuple[str, str]]:
    """fleet.conf: `key=value` lines at top level, # comments; -> name: (raw value, where)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not UTF-8 text: {error.reason}") from error
    found: dict[str, tuple[str, str]] = {}
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        name, sep, value = stripped.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"{path}:{number}: expected key=value, got {stripped!r}")
        found[name.strip()] = (unquote(value.strip()), f"{path}:{number}")
    return found


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"' and value.count('"') == 2:
        return value[1:-1]
    return value


def load_config(
    file_values: Mapping[str, tuple[str, str]],
    environ: Mapping[str, str],
    flags: Mapping[str, str],
) -> tuple[Config, list[str]]:
    """Merge the three sources over the defaults: the config and the warnings to log (one per
    key: a compatibility-only key, or an unknown one, named where its winning value came from).
    A bad value of a setting is a ConfigError, and so is an unknown flag (argparse lets none
    through)."""
    raw: dict[str, tuple[str, str]] = dict(file_values)
    raw.update(environment_values(environ))
    warnings = [unknown_variable_warning(variable) for variable in unknown_variables(environ)]
    if "etcd_password" in flags:
        # Every user can read a process's arguments (ps, /proc/PID/cmdline).
        raise ConfigError(
            "flag --etcd_password: a password on the command line is visible to every user;"
            " put it in fleet.conf (mode 0600) or FLEET_ETCD_PASSWORD"
        )
    for name in flags:
        if name not in SETTINGS_BY_NAME and name not in COMPATIBILITY_KEYS_BY_NAME:
            raise ConfigError(f"flag --{name}: unknown option {name!r}")
    raw.update({name: (value, f"flag --{name}") for name, value in flags.items()})
    values: dict[str, object] = {}
    for name, (text, where) in raw.items():
        setting = SETTINGS_BY_NAME.get(name)
        if setting is None:
            warnings.append(ignored_key_warning(name, where))
            continue
        try:
            values[name] = setting.parse(text)
        except ValueError as error:
            raise ConfigError(f"{where}: {name}: {error}") from error
    config = Config(**values)  # type: ignore[arg-type]
    check_config(config)
    return config, warnings


def environment_values(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """The FLEET_<NAME> variables of known keys, as name: (value, where). An empty variable
    counts as unset, as in fleet, so `Environment=FLEET_X=` in a drop-in clears an inherited one."""
    found: dict[str, tuple[str, str]] = {}
    for name in [*SETTINGS_BY_NAME, *COMPATIBILITY_KEYS_BY_NAME]:
        if environ.get(variable := ENVIRONMENT_PREFIX + name.upper()):
            found[name] = (environ[variable], f"environment variable {variable}")
    return found


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """FLEET_* variables that name no key (fleet reads only FLEET_<NAME> in upper case)."""
    known = {ENVIRONMENT_PREFIX + name.upper() for name in SETTINGS_BY_NAME}
    known |= {ENVIRONMENT_PREFIX + name.upper() for name in COMPATIBILITY_KEYS_BY_NAME}
    return sorted(v for v in environ if v.startswith(ENVIRONMENT_PREFIX) and v not in known)


def ignored_key_warning(name: str, where: str) -> str:
    """The warning for a key fleetd ignores: one of fleet's it does not act on, or a typo."""
    if name in COMPATIBILITY_KEYS_BY_NAME:
        return (
            f"{where}: {name} is accepted for compatibility with fleet and has no effect"
            f" ({COMPATIBILITY_KEYS_BY_NAME[name].help})"
        )
    close = closest_setting(name)
    return f"{where}: unknown key {name!r}, ignored" + (f"; did you mean {close}?" if close else "")


def unknown_variable_warning(variable: str) -> str:
    close = closest_setting(variable.removeprefix(ENVIRONMENT_PREFIX))
    hint = f"; did you mean {ENVIRONMENT_PREFIX}{close.upper()}?" if close else ""
    return f"environment variable {variable}: no such key, ignored{hint}"


def closest_setting(name: str) -> str | None:
    found = difflib.get_close_matches(name.strip().lower(), SETTINGS_BY_NAME, n=1)
    return found[0] if found else None


def check_config(config: Config) -> None:
    from .etcdclient import parse_endpoints  # grpc is heavy to import; only fleetd needs it

    try:
        parse_endpoints(config.etcd_servers)
    except ValueError as error:
        raise ConfigError(f"etcd_servers: {error}") from error
    if bool(config.etcd_certfile) != bool(config.etcd_keyfile):
        raise ConfigError("etcd_certfile and etcd_keyfile go together (a client certificate)")
    for name in ("etcd_cafile", "etcd_certfile", "etcd_keyfile"):
        path = getattr(config, name)
        if path and not Path(path).is_file():
            raise ConfigError(f"{name}: no such file {path!r}")
    if config.agent_ttl < 1:
        raise ConfigError(f"agent_ttl: must be at least 1s, not {config.agent_ttl}s")
    tls = (config.api_tls_cert, config.api_tls_key, config.api_tls_client_ca)
    if config.api_listen and not all(tls) and (any(tls) or not config.api_insecure_tcp):
        raise ConfigError(
            "api_listen: a TCP API needs api_tls_cert, api_tls_key and "
            "api_tls_client_ca (clients must present certificates), or, without any of them,"
            " api_insecure_tcp=true to accept the risk"
        )
    if config.api_listen and ":" not in config.api_listen:
        raise ConfigError(f"api_listen: expected HOST:PORT, not {config.api_listen!r}")


def default_text(setting: Setting) -> str:
    """A setting's built-in default as one would write it in fleet.conf ("" when empty)."""
    value = getattr(Config(), setting.name)
    if isinstance(value, bool):
        return str(value).lower()
    if setting.parse is parse_duration:
        return f"{value:g}s"
    if setting.parse is parse_metadata:
        return ",".join(f"{key}={text}" for key, text in value)
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def setting_names() -> list[str]:
    return [f.name for f in fields(Config)]
