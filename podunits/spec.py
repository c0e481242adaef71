"""Container specs: a few lines of YAML about one service, checked into a ContainerSpec. (pure)

Every mistake is reported as `path:line: key: message` (flotilla/manifest.py keeps the lines).
The values are kept literal here; quoting and escaping for systemd happen when rendering. Which
values may hold specifiers (`%H`) is decided here and documented in units/README.md.
The `x-fleet` key (where fleet may place the unit) is read in podunits/placement.py.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from fleetd.unitname import UnitNameError, check_unit_name
from flotilla.manifest import Location, Manifest, ManifestError, load_manifest

from .fields import check_keys, check_specifiers, optional, text_of, typed, value_of
from .placement import FleetOptions, read_placement

KEYS = ("name", "template", "description", "image", "command", "entrypoint", "ports")
KEYS += ("environment", "volumes", "restart", "stop_timeout", "hostname", "network", "x-fleet")
RESTART_VALUES = ("no", "always", "on-success", "on-failure", "on-abnormal", "on-abort")
RESTART_VALUES += ("on-watchdog",)
DEFAULT_RESTART = "always"
DEFAULT_STOP_TIMEOUT = 10
# `bridge` is podman's default network; a named network would have to exist on every machine.
NETWORKS = ("bridge", "host", "none")
PROTOCOLS = ("tcp", "udp")
VOLUME_OPTIONS = ("ro", "rw", "z", "Z")
# podman's rule for container names; the unit name doubles as the container name.
CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HOSTNAME_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# systemd 252's specifiers (systemd.unit(5)); `%%` is a literal percent sign.
SYSTEMD_SPECIFIERS = frozenset("aAbBCdEfgGhHiIjJlLmMnNopPqsStTuUvVwWyY%")
# systemd takes a unit file line with any of these for invalid UTF-8 and ignores it, escaped
# or not: NUL, surrogates, and the Unicode noncharacters.
_NONCHARACTERS = "".join(chr(p + c) for p in range(0, 0x110000, 0x10000) for c in (0xFFFE, 0xFFFF))
UNWRITABLE = re.compile(f"[\0\ud800-\udfff\ufdd0-\ufdef{_NONCHARACTERS}]")

# The image reference grammar of github.com/distribution/reference (IPv6 domains left out).
_DOMAIN = re.compile(
    r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
)
_DOMAIN_PORT = re.compile(rf"(?:{_DOMAIN.pattern})(:[0-9]+)?")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")


@dataclass(frozen=True)
class PortMapping:
    host: int
    container: int
    protocol: str = "tcp"


@dataclass(frozen=True)
class VolumeMount:
    host: str
    container: str
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class ContainerSpec:
    """One container service. `name` has no '@' or suffix; `image` is fully qualified.

    Values are literal, except environment values (systemd specifiers, `%%` for a percent) and
    [X-Fleet] values (fleet's `%n %N %p %i`).
    """

    source: Path
    name: str
    is_template: bool
    description: str
    image: str
    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    ports: tuple[PortMapping, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    volumes: tuple[VolumeMount, ...] = ()
    restart: str = DEFAULT_RESTART
    stop_timeout: int = DEFAULT_STOP_TIMEOUT
    hostname: str | None = None
    network: str | None = None
    fleet: FleetOptions = field(default_factory=FleetOptions)
    lines: dict[Location, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def unit_name(self) -> str:
        return f"{self.name}{'@' if self.is_template else ''}.service"

    def error(self, location: Location, message: str) -> ManifestError:
        """An error about this spec that names its file and the line of `location`."""
        return Manifest(self.source, {}, self.lines).error(location, message)


def load_spec(path: Path, known_images: Collection[str] | None = None) -> ContainerSpec:
    """Read and check the spec at `path`; see parse_spec."""
    return parse_spec(load_manifest(path), known_images)


def parse_spec(manifest: Manifest, known_images: Collection[str] | None = None) -> ContainerSpec:
    """Check a spec and return it; raise ManifestError naming the file, line and key.

    `known_images` are the images the machines hold (nothing is ever pulled; names as
    normalize_image takes them); None skips that check.
    """
    check_keys(manifest, (), manifest.data, KEYS)
    name, is_template = _read_name(manifest)
    image = _read_image(manifest, known_images)
    return ContainerSpec(
        source=manifest.path,
        name=name,
        is_template=is_template,
        description=_read_description(manifest, name, image),
        image=image,
        command=_read_words(manifest, "command") or (),
        entrypoint=_read_words(manifest, "entrypoint"),
        ports=_read_ports(manifest),
        environment=_read_environment(manifest),
        volumes=_read_volumes(manifest),
        restart=_read_restart(manifest),
        stop_timeout=_read_stop_timeout(manifest),
        hostname=_read_hostname(manifest),
        network=_read_choice(manifest, "network", NETWORKS),
        fleet=read_placement(manifest),
        lines=dict(manifest.lines),
    )


def normalize_image(reference: str) -> str:
    """The fully qualified form podman lists: `busybox` -> `localhost/busybox:latest`.

    A name without a registry is local (podman names images it built or loaded `localhost/`),
    and a missing tag is `latest` unless a digest pins the image. Raises ValueError.
    """
    name, at, digest = reference.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise ValueError(f"{reference!r}: {digest!r} is not a digest (like sha256:<hex>)")
    head, slash, last = name.rpartition("/")
    repository, colon, tag = last.partition(":")
    if colon and not _TAG.fullmatch(tag):
        raise ValueError(f"{reference!r}: {tag!r} is not a tag")
    components = [*head.split("/"), repository] if slash else [repository]
    domain = "localhost"
    if len(components) > 1 and (
        components[0] == "localhost" or any(c in components[0] for c in ".:")
    ):
        domain = components.pop(0)
    if not _DOMAIN_PORT.fullmatch(domain):
        raise ValueError(f"{reference!r}: {domain!r} is not a registry name")
    if not all(_PATH_COMPONENT.fullmatch(part) for part in components):
        raise ValueError(f"{reference!r}: use lower-case letters, digits, '.', '_', '-' and '/'")
    suffix = f":{tag or 'latest'}" if colon or not at else ""
    return f"{domain}/{'/'.join(components)}{suffix}{at}{digest}"


def _read_name(manifest: Manifest) -> tuple[str, bool]:
    # Without `name`, the file names the unit: web@.yaml -> web@.service.
    where: Location = ("name",) if "name" in manifest.data else ()
    raw = typed(manifest, where, value_of(manifest, "name", manifest.path.stem), str)
    flag = optional(manifest, ("template",), value_of(manifest, "template"), bool)
    if flag is False and raw.endswith("@"):
        raise manifest.error(("template",), f"false, but the name {raw!r} ends in '@'")
    if raw.endswith(".service"):
        raise manifest.error(where, f"{raw!r}: write the name without '.service'")
    stem = raw.removesuffix("@")
    if "@" in stem:
        hint = f"name the template ({stem.partition('@')[0]}@) and start instances with fleetctl"
        raise manifest.error(where, f"{raw!r} is an instance: {hint}")
    is_template = raw.endswith("@") or bool(flag)
    # The file name stands in for a missing `name`, so say where a bad one came from.
    origin = "" if where else f" (from the file name {manifest.path.name!r}; or set name:)"
    try:
        check_unit_name(f"{stem}{'@' if is_template else ''}.service")
    except UnitNameError as error:
        raise manifest.error(where, f"{error}{origin}") from error
    if not CONTAINER_NAME.fullmatch(stem):
        rule = "use letters, digits, '_', '.' and '-', starting with a letter or digit"
        raise manifest.error(where, f"{stem!r} also names the container: {rule}{origin}")
    return stem, is_template


def _read_image(manifest: Manifest, known_images: Collection[str] | None) -> str:
    if "image" not in manifest.data:
        raise manifest.error((), "missing key 'image': the container image to run (like busybox)")
    raw = typed(manifest, ("image",), manifest.data["image"], str)
    try:
        image = normalize_image(raw)
    except ValueError as error:
        raise manifest.error(("image",), str(error)) from error
    if known_images is None:
        return image
    known = sorted(map(normalize_image, known_images))
    if image not in known:
        reason = f"{image} is not in the machines' image store, and nothing is pulled"
        hint = "bake it into the OS image (container_images in imagebuild/image.yaml)"
        raise manifest.error(("image",), f"{reason} (known: {', '.join(known) or 'none'}); {hint}")
    return image


def _read_description(manifest: Manifest, name: str, image: str) -> str:
    default = f"{name}: podman container from {image}"
    text = typed(manifest, ("description",), value_of(manifest, "description", default), str)
    # One line, and no trailing backslash, which would continue it onto the next unit line.
    if not text.isprintable() or text.rstrip().endswith("\\"):
        raise manifest.error(("description",), "must be one line of printable text")
    return text.strip()


def _read_words(manifest: Manifest, key: str) -> tuple[str, ...] | None:
    """A list of arguments, or a string split like a shell would split it."""
    if key not in manifest.data:
        return None
    value = manifest.data[key]
    if isinstance(value, str):
        try:
            words = shlex.split(value)
        except ValueError as error:
            raise manifest.error((key,), f"cannot split {value!r} like a shell: {error}") from error
    elif isinstance(value, list):
        words = [text_of(manifest, (key, index), item) for index, item in enumerate(value)]
    else:
        raise manifest.error((key,), "must be a string or a list of strings")
    for word in words:
        _check_writable(manifest, (key,), word)
    return tuple(words)


def _read_ports(manifest: Manifest) -> tuple[PortMapping, ...]:
    ports: dict[tuple[int, str], PortMapping] = {}
    items = typed(manifest, ("ports",), value_of(manifest, "ports", []), list)
    for index, item in enumerate(items):
        where = ("ports", index)
        if isinstance(item, str):
            port = _port_from_string(manifest, where, item)
        elif isinstance(item, dict):
            port = _port_from_mapping(manifest, where, item)
        else:
            # YAML 1.1 reads an unquoted 22:22 as the base-60 number 1342.
            reason = 'write a port as a quoted string ("8080:80", "53/udp") or a mapping'
            raise manifest.error(where, f"{reason} {{host, container, protocol}}")
        if (port.host, port.protocol) in ports:
            raise manifest.error(where, f"host port {port.host}/{port.protocol} is published twice")
        ports[port.host, port.protocol] = port
    if ports and manifest.data.get("network") == "host":
        raise manifest.error(
            ("ports",), "with network: host the container uses the machine's ports"
        )
    return tuple(ports.values())


def _port_from_string(manifest: Manifest, where: Location, text: str) -> PortMapping:
    # A lone port is published on the same host port: a random one could not be found in a cluster.
    match = re.fullmatch(r"(?:([^:/]*):)?([^:/]*)(?:/(.*))?", text)
    if not match:
        raise manifest.error(where, f"{text!r}: write host:container[/tcp|/udp] or a port")
    container = _port_number(manifest, where, match[2])
    host = _port_number(manifest, where, match[1]) if match[1] is not None else container
    return PortMapping(host, container, _protocol(manifest, where, match[3] or "tcp"))


def _port_from_mapping(
    manifest: Manifest, where: Location, raw: dict[object, object]
) -> PortMapping:
    check_keys(manifest, where, raw, ("host", "container", "protocol"))
    if "container" not in raw:
        raise manifest.error(where, "missing key 'container': the port inside the container")
    container = _port_number(manifest, (*where, "container"), raw["container"])
    host = _port_number(manifest, (*where, "host"), raw.get("host", container))
    protocol = typed(manifest, (*where, "protocol"), raw.get("protocol", "tcp"), str)
    return PortMapping(host, container, _protocol(manifest, (*where, "protocol"), protocol))


def _port_number(manifest: Manifest, where: Location, value: object) -> int:
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise manifest.error(where, f"{value!r} is not a port number (1-65535)")
    return int(text)


def _protocol(manifest: Manifest, where: Location, protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise manifest.error(where, f"unknown protocol {protocol!r} (known: tcp, udp)")
    return protocol


def _read_environment(manifest: Manifest) -> tuple[tuple[str, str], ...]:
    raw = typed(manifest, ("environment",), value_of(manifest, "environment", {}), dict)
    variables = []
    for name, value in raw.items():
        where = ("environment", str(name))
        if not (isinstance(name, str) and ENV_NAME.fullmatch(name)):
            reason = "letters, digits and '_', not starting with a digit"
            raise manifest.error(where, f"{name!r} is not a variable name ({reason})")
        # Numbers are fine; booleans are YAML 1.1 guessing (yes, off), so they must be quoted.
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise manifest.error(where, "must be a string or an integer (quote it)")
        _check_writable(manifest, where, str(value))
        check_specifiers(manifest, where, str(value), SYSTEMD_SPECIFIERS)
        variables.append((name, str(value)))
    return tuple(variables)


def _read_volumes(manifest: Manifest) -> tuple[VolumeMount, ...]:
    volumes: dict[str, VolumeMount] = {}
    items = typed(manifest, ("volumes",), value_of(manifest, "volumes", []), list)
    for index, item in enumerate(items):
        where = ("volumes", index)
        parts = typed(manifest, where, item, str).split(":")
        _check_writable(manifest, where, item)
        if len(parts) not in (2, 3):
            raise manifest.error(where, f"{item!r}: write /host/path:/container/path[:options]")
        for path, side in zip(parts[:2], ("host", "container"), strict=False):
            if not path.startswith("/"):
                raise manifest.error(where, f"the {side} path {path!r} must be absolute")
        options = tuple(parts[2].split(",")) if len(parts) == 3 else ()
        _check_volume_options(manifest, where, options)
        if parts[1] in volumes:
            raise manifest.error(where, f"{parts[1]} is mounted twice")
        volumes[parts[1]] = VolumeMount(parts[0], parts[1], options)
    return tuple(volumes.values())


def _check_volume_options(manifest: Manifest, where: Location, options: tuple[str, ...]) -> None:
    for option in options:
        if option not in VOLUME_OPTIONS:
            raise manifest.error(where, f"unknown volume option {option!r} (known: ro, rw, z, Z)")
    if {"ro", "rw"} <= set(options) or {"z", "Z"} <= set(options):
        raise manifest.error(where, "ro/rw and z/Z each take one choice")


def _read_restart(manifest: Manifest) -> str:
    value = value_of(manifest, "restart", DEFAULT_RESTART)
    # YAML 1.1 reads a bare `no` as false.
    return _choice(manifest, ("restart",), "no" if value is False else value, RESTART_VALUES)


def _read_stop_timeout(manifest: Manifest) -> int:
    default = DEFAULT_STOP_TIMEOUT
    value = typed(manifest, ("stop_timeout",), value_of(manifest, "stop_timeout", default), int)
    if value < 0:
        raise manifest.error(("stop_timeout",), "must be a number of seconds, 0 or more")
    return value


def _read_hostname(manifest: Manifest) -> str | None:
    value = optional(manifest, ("hostname",), value_of(manifest, "hostname"), str)
    if value is not None and not (
        len(value) <= 253 and all(HOSTNAME_LABEL.fullmatch(label) for label in value.split("."))
    ):
        raise manifest.error(("hostname",), f"{value!r} is not a host name (RFC 1123)")
    return value


def _read_choice(manifest: Manifest, key: str, choices: tuple[str, ...]) -> str | None:
    value = value_of(manifest, key)
    return None if value is None else _choice(manifest, (key,), value, choices)


def _check_writable(manifest: Manifest, where: Location, text: str) -> None:
    if match := UNWRITABLE.search(text):
        reason = "a unit file cannot hold (NUL, or a Unicode noncharacter)"
        raise manifest.error(where, f"{text!r} holds {match[0]!r}, which {reason}")


def _choice(manifest: Manifest, where: Location, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise manifest.error(where, f"{value!r} is not one of: {', '.join(choices)}")
    return value  # type: ignore[return-value]
