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
    """Read a YAML mapping and the line of each of its values; ManifestError names the file."""
    node, data = read_yaml(path)
    if not isinstance(node, yaml.MappingNode) or not isinstance(data, dict):
        raise ManifestError(f"{path}:1: expected a mapping of settings at the top level")
    lines: dict[Location, int] = {}
    _record_lines(node, (), lines, set())
    return Manifest(path, data, lines)


def read_yaml(path: Path) -> tuple[yaml.Node | None, object]:
    """Parse a YAML file once into its node tree (which knows lines) and its data.

    Whatever the file holds, the only error is ManifestError naming the file.
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(f"{path}: cannot read manifest: {error}") from error
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters already
        try:
            node = loader.get_single_node()
            data = None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except RecursionError as error:
        raise ManifestError(f"{path}: cannot read manifest: it is nested too deeply") from error
    except Exception as error:
        # Besides yaml.YAMLError, PyYAML's constructors fail on a bad tagged scalar with what
        # Python gives them: ValueError (`!!int x`), IndexError (`!!float ''`), AttributeError
        # (`!!timestamp x`). Parsing has no side effects, so each is only a bad manifest.
        raise ManifestError(f"{path}: cannot read manifest: {error}") from error
    return node, data


def _record_lines(
    node: yaml.Node, location: Location, lines: dict[Location, int], seen: set[int]
) -> None:
    lines[location] = node.start_mark.line + 1
    # An alias is the node of its anchor again: walking it once bounds the work by the size of
    # the file (a node may even contain itself), and its values keep the anchor's lines.
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                child = (*location, key_node.value)
                _record_lines(value_node, child, lines, seen)
                lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*location, index), lines, seen)
