"""Reading a YAML manifest while remembering where each value came from.

Errors about a manifest should point at its line; plain `yaml.safe_load` forgets positions, so
this composes the node tree and records the line of every mapping key and list item.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

Location = tuple[str | int, ...]


class ManifestError(ValueError):
    """The manifest is wrong; the message names the file, the line and the key."""


@dataclass(frozen=True)
class Manifest:
    path: Path
    data: dict[str, object]
    lines: dict[Location, int]

    def line(self, location: Location) -> int:
        """The line of `location`, or of its closest recorded parent (1-based)."""
        while location not in self.lines and location:
            location = location[:-1]
        return self.lines.get(location, 1)

    def error(self, location: Location, message: str) -> ManifestError:
        where = ".".join(str(part) for part in location) or "(top level)"
        return ManifestError(f"{self.path}:{self.line(location)}: {where}: {message}")


def load_manifest(path: Path) -> Manifest:
    try:
        node = yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError) as error:
        raise ManifestError(f"{path}: cannot read manifest: {error}") from error
    if not isinstance(node, yaml.MappingNode):
        raise ManifestError(f"{path}:1: expected a mapping of settings at the top level")
    lines: dict[Location, int] = {}
    _record_lines(node, (), lines)
    data = yaml.safe_load(path.read_text())
    return Manifest(path, data, lines)


def _record_lines(node: yaml.Node, location: Location, lines: dict[Location, int]) -> None:
    lines[location] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*location, key_node.value)
            _record_lines(value_node, child, lines)
            lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*location, index), lines)
