"""ContainerSpec -> the text of a systemd unit running the container with podman.

The unit comes from the jinja2 template flotilla/data/units/container.service.j2; this module
only supplies the escaping filters and then parses the result the way fleet will, so a unit that
renders is a unit `fleetctl submit` accepts.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

import jinja2

from fleetd.unitfile import UnitFileError, parse_unit_file, requirements
from fleetd.unitname import parse_unit_name
from flotilla.manifest import Location, ManifestError
from flotilla.resources import data_path

from .spec import ContainerSpec

# Package data of flotilla: in the checkout, in site-packages, and under /usr/lib/flotilla/src on
# a machine alike.
UNITS_DIR = data_path("units")
TEMPLATE = "container.service.j2"
# Arguments made only of these need no quotes in ExecStart (after `%` and `$` are doubled).
PLAIN_ARGUMENT = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
# Inside double quotes systemd reads C escapes (`\"`, `\\`, `\n`, `\x1b`, ...).
C_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


class RenderError(ManifestError):
    """The rendered unit is one fleet would refuse; the message names the spec file and line."""

    @classmethod
    def about(cls, spec: ContainerSpec, location: Location, reason: str) -> RenderError:
        return cls(str(spec.error(location, reason)))


@dataclass(frozen=True)
class RenderedUnit:
    name: str  # web.service, web@.service
    text: str


def render_unit(spec: ContainerSpec) -> RenderedUnit:
    """Render `spec` and check that fleet's parser and its [X-Fleet] rules accept the result."""
    text = _template().render(
        spec=spec, fleet=spec.fleet, entrypoint=entrypoint_argument(spec.entrypoint)
    )
    check_fleet_accepts(spec, text)
    return RenderedUnit(spec.unit_name, text)


def check_fleet_accepts(spec: ContainerSpec, text: str) -> None:
    """Raise RenderError unless fleet would take `text` as the unit `spec.unit_name`."""
    try:
        unit = parse_unit_file(text, spec.unit_name)
    except UnitFileError as error:
        # Only a value can break the file (a line over 2047 bytes): say which unit, and how.
        raise RenderError.about(spec, (), f"the rendered unit is refused: {error}") from error
    try:
        requirements(unit, parse_unit_name(spec.unit_name))
    except UnitFileError as error:
        raise RenderError.about(spec, ("x-fleet",), error.reason) from error


def exec_argument(value: str, specifiers: bool = False) -> str:
    """`value` as one argument of an Exec*= line, arriving at the process exactly as given.

    systemd first expands `%` specifiers over the whole line, then splits it into words
    (double quotes group, with C escapes inside), then expands `$VAR` in each word. So `$`
    always becomes `$$`, and `%` becomes `%%` unless `specifiers` lets `%H` through.
    """
    if not specifiers:
        value = value.replace("%", "%%")
    value = value.replace("$", "$$")
    if PLAIN_ARGUMENT.fullmatch(value):
        return value
    return '"' + "".join(_c_escape(character) for character in value) + '"'


def _c_escape(character: str) -> str:
    if character in C_ESCAPES:
        return C_ESCAPES[character]
    if character.isprintable():
        return character
    code = ord(character)
    # systemd reads \xNN as a raw byte, so only ASCII may use it; \u and \U are code points.
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def unit_text(value: str) -> str:
    """`value` as a plain setting (Description=): literal, so `%` is doubled."""
    return value.replace("%", "%%")


def entrypoint_argument(entrypoint: tuple[str, ...] | None) -> str | None:
    """podman's --entrypoint: one word as it is, several as a JSON array, none as ""."""
    if entrypoint is None:
        return None
    if len(entrypoint) == 1:
        return entrypoint[0]
    return json.dumps(list(entrypoint)) if entrypoint else ""


@functools.cache
def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(UNITS_DIR),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["arg"] = exec_argument
    environment.filters["text"] = unit_text
    return environment.get_template(TEMPLATE)
