"""Typed reading of a YAML node tree that collects line-numbered findings instead of raising. (pure)

Values are read from the composed nodes, not constructed, so a scalar keeps the text it was
written with; keys are normalised (`-` -> `_`) and each node knows its line.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import ClassVar, TypeVar

import yaml

from .cloudconfig_model import Finding

TAG = "tag:yaml.org,2002:"
SCALAR_TAGS = {TAG + name for name in ("str", "int", "float", "bool")}
NULL_TAG = TAG + "null"
BOOL_TAG = TAG + "bool"
T = TypeVar("T")


def normal_key(node: yaml.Node) -> str:
    return str(node.value).replace("-", "_")


def line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class NodeReader:
    """Reads nodes as mappings, lists, strings and booleans; a wrong type is an error finding."""

    # Why a key a user may reasonably write is not accepted, by key (shown with the warning).
    hints: ClassVar[Mapping[str, str]] = {}

    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def error(self, node: yaml.Node | int, message: str) -> None:
        line = node if isinstance(node, int) else line_of(node)
        self.findings.append(Finding(line, "error", message))

    def warning(self, node: yaml.Node | int, message: str) -> None:
        line = node if isinstance(node, int) else line_of(node)
        self.findings.append(Finding(line, "warning", message))

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
        if key in self.hints:
            message += f" ({self.hints[key]})"
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
