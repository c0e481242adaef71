"""The rootfs manifest: a YAML file read into a frozen, validated dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from flotilla.manifest import ManifestError, read_yaml

DEFAULT_SPEC = Path(__file__).with_name("rootfs.yaml")


class SpecError(ManifestError):
    """The manifest is wrong; the message names the file and the key."""


@dataclass(frozen=True)
class RootfsSpec:
    suite: str
    variant: str
    sources: tuple[str, ...]
    packages: tuple[str, ...]
    python_packages: tuple[str, ...] = ()
    path_exclude: tuple[str, ...] = ()
    masked_units: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def load_spec(path: Path = DEFAULT_SPEC) -> RootfsSpec:
    """Read and check a manifest: unknown keys, missing keys and wrong types are errors."""
    try:
        _, raw = read_yaml(path)
    except ManifestError as error:
        raise SpecError(str(error)) from error
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping of settings at the top level")
    fields = {f.name: f for f in dataclasses.fields(RootfsSpec)}
    # Keys can be numbers or null as well as text; key=str orders them all.
    unknown = sorted(set(raw) - set(fields), key=str)
    if unknown:
        raise SpecError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(fields)})")
    values: dict[str, object] = {}
    for name, field in fields.items():
        if name not in raw:
            if field.default is dataclasses.MISSING:
                raise SpecError(f"{path}: missing key {name!r}")
            continue
        values[name] = _check_type(path, name, raw[name], is_list=field.type.startswith("tuple"))
    return RootfsSpec(**values)  # type: ignore[arg-type]


def _check_type(path: Path, name: str, value: object, *, is_list: bool) -> object:
    if not is_list:
        if not isinstance(value, str):
            raise SpecError(f"{path}: {name!r} must be a string, not {type(value).__name__}")
        return value
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SpecError(f"{path}: {name!r} must be a list of strings")
    return tuple(value)
