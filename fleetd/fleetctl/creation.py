"""fleet's lazy creation, in one place: which units submit, load and start create or replace,
decided from the cluster's units (read once by the command) and the local files (read through
an injected reader, so the decision is tested without a disk).

For each argument, in fleet's order:
1. a unit of that name in the registry is used as it is (a local file that differs is warned
   about, or with --replace taken instead, in the desired states fleet allows);
2. else the local file of that name;
3. else, for an instance (`foo@bar.service`), its template from the registry,
4. else its template file beside the argument on disk;
5. else an error naming what was looked for.
Every unit is parsed and checked before anything is written.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..client import ClientError, check_unit, not_found_message, template_of
from ..model import DesiredState, JobRecord
from ..unitfile import UnitFile
from ..unitname import mangle_name

# The desired states in which --replace may replace a unit, per command (as fleet's).
REPLACEABLE = {
    "submit": {DesiredState.INACTIVE},
    "load": {DesiredState.INACTIVE, DesiredState.LOADED},
    "start": {DesiredState.INACTIVE, DesiredState.LOADED, DesiredState.LAUNCHED},
}

Reader = Callable[[Path], "str | None"]


class ReadError(Exception):
    """A local unit file exists but cannot be read; the message names it."""


@dataclass(frozen=True)
class Argument:
    name: str  # the unit name (mangled as fleet mangles it)
    path: Path  # where its local file would be


@dataclass
class Creation:
    """What lazy creation decided: units to create, units to replace, and what to tell."""

    new: dict[str, UnitFile] = field(default_factory=dict)
    replaced: dict[str, UnitFile] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # stdout, as fleet prints them
    warnings: list[str] = field(default_factory=list)  # stderr


def arguments_of(units: Sequence[str]) -> list[Argument]:
    """Each argument's unit name and local path: fleet appends `.service` to the path too, so
    `fleetctl start hello` reads ./hello.service."""
    found: dict[str, Argument] = {}
    for unit in units:
        name = mangle_name(unit)
        found.setdefault(name, Argument(name, Path(unit).parent / name if name else Path(unit)))
    return list(found.values())


def plan_creation(
    arguments: Sequence[Argument],
    jobs: Mapping[str, JobRecord],
    registry_files: Mapping[str, str],
    command: str,
    replace: bool,
    read: Reader,
) -> Creation:
    """Decide, for every argument, whether its unit is used, created or replaced; ClientError
    (with fleet's words) for the first one that cannot be found or is not a valid unit."""
    creation = Creation()
    for argument in arguments:
        if argument.name in jobs:
            compare_with_registry(argument, jobs[argument.name], command, replace, read, creation)
        elif (text := read(argument.path)) is not None:
            creation.new[argument.name] = check_unit(argument.name, text)
        else:
            text = template_text(argument, registry_files, read)
            if text is None:
                raise ClientError(not_found_message(argument.name))
            creation.new[argument.name] = check_unit(argument.name, text)
    return creation


def template_text(
    argument: Argument, registry_files: Mapping[str, str], read: Reader
) -> str | None:
    """An instance's template: the registry's copy first, then the file beside the argument."""
    template = template_of(argument.name)
    if template is None:
        return None
    if template in registry_files:
        return registry_files[template]
    return read(argument.path.parent / template)


def compare_with_registry(
    argument: Argument,
    job: JobRecord,
    command: str,
    replace: bool,
    read: Reader,
    creation: Creation,
) -> None:
    """A unit the registry has: keep it, or (--replace) take the local file instead."""
    name, what = argument.name, "unit file"
    text = read(argument.path)
    if text is None and (template := template_of(name)) is not None:
        text, what = read(argument.path.parent / template), "template unit file"
    if text is None:
        return  # nothing local to compare with: the registry's unit is used
    try:
        unit = check_unit(name, text)
    except ClientError:
        if replace:
            raise
        return  # fleet compares only files it can parse; the registry's unit is used
    if unit.hash == job.hash:
        if replace:
            creation.notes.append(f"Found same Unit({name}) in Registry, nothing to do")
    elif not replace:
        creation.warnings.append(
            f"WARNING: Unit {name} in registry differs from local {what} {argument.path}."
            " Add --replace to override."
        )
    elif job.desired not in REPLACEABLE[command]:
        creation.warnings.append(
            f"Warning: can not replace Unit({name}) in state '{job.desired.value}',"
            " use the appropriate command"
        )
    else:
        creation.replaced[name] = unit


def read_unit_file(path: Path) -> str | None:
    """The file's text; None when there is no such file (or no file can have that name, as
    one longer than the file system allows: the name's own check then says what is wrong)."""
    try:
        if not path.is_file():
            return None
        return path.read_text()
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            return None
        raise ReadError(f"cannot read {path}: {error.strerror}") from error
