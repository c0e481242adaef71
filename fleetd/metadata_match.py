"""MachineMetadata expressions: `key=value`, `key!=value` and the numeric `key<n`, `key<=n`,
`key>n`, `key>=n`, parsed into a typed value and checked against a machine's metadata. (pure)

fleet only knew `key=value` (operators were proposed in its PR #1296 and never merged). Its
rules still hold for that form: exact string equality, several values for one key are ORed.
Every other expression must hold on its own, so `disk>=100` with `disk<=500` is a range and
`region!=east` with `region!=west` excludes both.

Choices where fleet says nothing:
- `key!=value` holds on a machine without the key (it does not have that value).
- The numeric operators compare numbers written as `-?digits[.digits]`, exactly (Decimal):
  a machine whose value is missing or not such a number does not match, and the reason says so.
  `=` and `!=` compare text, as fleet did: `disk=100` does not match a machine's `100.0`.
- Where fleet silently ignored a token it could not read (`disk=`, `=ssd`, `a=b=c`, `ssd`),
  the unit is refused, with the position of the problem: a constraint that is dropped
  unnoticed lets the unit run anywhere.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum

# The keys a machine's metadata can have (fleet.conf and the API's PATCH both refuse others).
KEY_CHARACTERS = "letters, digits, '_', '.' and '-'"
METADATA_KEY = re.compile(r"[A-Za-z0-9_.-]+")
NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
# These would make an expression ambiguous (`a=<3`, `a==b`), so no value may contain them.
RESERVED = "=<>"


class Operator(Enum):
    EQUAL = "="
    NOT_EQUAL = "!="
    LESS = "<"
    LESS_OR_EQUAL = "<="
    GREATER = ">"
    GREATER_OR_EQUAL = ">="

    @property
    def is_numeric(self) -> bool:
        return self not in (Operator.EQUAL, Operator.NOT_EQUAL)


# Longest first, so that `<=` is not read as `<` followed by a value starting with '='.
_OPERATORS = sorted(Operator, key=lambda op: -len(op.value))
_COMPARE: dict[Operator, Callable[[Decimal, Decimal], bool]] = {
    Operator.LESS: operator.lt,
    Operator.LESS_OR_EQUAL: operator.le,
    Operator.GREATER: operator.gt,
    Operator.GREATER_OR_EQUAL: operator.ge,
}


class MetadataExpressionError(ValueError):
    """An expression that cannot be read; `position` is the 1-based character at fault
    (one past the end when something is missing there)."""

    def __init__(self, expression: str, position: int, reason: str) -> None:
        super().__init__(f"character {position}: {reason}")
        self.expression = expression
        self.position = position
        self.reason = reason


@dataclass(frozen=True)
class MetadataExpression:
    """One `key<op>value`; `value` is kept as written, so the text reads back the same."""

    key: str
    operator: Operator
    value: str

    def __str__(self) -> str:
        return f"{self.key}{self.operator.value}{self.value}"

    @property
    def threshold(self) -> Decimal:
        """The number a numeric operator compares with (only for those)."""
        return Decimal(self.value)

    def mismatch(self, metadata: Mapping[str, str]) -> str | None:
        """None when `metadata` satisfies this expression, else what the machine has instead."""
        have = metadata.get(self.key)
        if self.operator is Operator.NOT_EQUAL:
            return None if have != self.value else f"has {self.key}={have}"
        if have is None:
            return f"has no {self.key}"
        if self.operator is Operator.EQUAL:
            return None if have == self.value else f"has {self.key}={have}"
        if not NUMBER.fullmatch(have):
            return f"has {self.key}={have}, not a number"
        if _COMPARE[self.operator](Decimal(have), self.threshold):
            return None
        return f"has {self.key}={have}"


def parse_expression(text: str) -> MetadataExpression:
    """Read one expression; MetadataExpressionError names the character at fault."""
    key = METADATA_KEY.match(text)
    if key is None:
        what = f"unexpected {text[0]!r}" if text else "the expression is empty"
        reason = f"{what}: it must start with a key ({KEY_CHARACTERS})"
        raise MetadataExpressionError(text, 1, reason)
    at = key.end()
    found = next((op for op in _OPERATORS if text.startswith(op.value, at)), None)
    if found is None:
        what = f"unexpected {text[at]!r}" if at < len(text) else "nothing"
        operators = ", ".join(op.value for op in Operator)
        reason = f"{what} after the key {key.group()!r}: expected an operator ({operators})"
        raise MetadataExpressionError(text, at + 1, reason)
    value_at = at + len(found.value)
    _check_value(text, value_at, found)
    return MetadataExpression(key.group(), found, text[value_at:])


def _check_value(text: str, at: int, found: Operator) -> None:
    value = text[at:]
    kind = "a number" if found.is_numeric else "a value"
    if not value:
        raise MetadataExpressionError(text, at + 1, f"{kind} must follow {found.value!r}")
    reserved = next((i for i, c in enumerate(value) if c in RESERVED), None)
    if reserved is not None:
        reason = f"unexpected {value[reserved]!r}: a value cannot contain '=', '<' or '>'"
        raise MetadataExpressionError(text, at + reserved + 1, reason)
    if value != value.strip():
        blank = at + 1 if value[0].isspace() else len(text)
        raise MetadataExpressionError(text, blank, "a value cannot start or end with whitespace")
    if found.is_numeric and not NUMBER.fullmatch(value):
        reason = f"{value!r} is not a number ({found.value} compares numbers such as 100 or 2.5)"
        raise MetadataExpressionError(text, at + 1, reason)


@dataclass(frozen=True)
class MetadataClause:
    """Expressions on one key of which any may hold: fleet's `key=a` `key=b` (ORed), or a
    single expression of any other kind."""

    key: str
    alternatives: tuple[MetadataExpression, ...]

    def __str__(self) -> str:
        first = self.alternatives[0]
        values = "|".join(alternative.value for alternative in self.alternatives)
        return f"{self.key}{first.operator.value}{values}"

    @property
    def is_numeric(self) -> bool:
        return self.alternatives[0].operator.is_numeric

    def mismatch(self, metadata: Mapping[str, str]) -> str | None:
        """None when any alternative holds on `metadata`, else what the machine has instead."""
        found = [alternative.mismatch(metadata) for alternative in self.alternatives]
        return None if None in found else found[0]


def clauses(expressions: Iterable[MetadataExpression]) -> tuple[MetadataClause, ...]:
    """Group expressions as fleet did: `=` on one key ORed, everything else on its own; all
    clauses must hold. Sorted by key and text, without duplicates."""
    equal: dict[str, set[MetadataExpression]] = {}
    single: set[MetadataClause] = set()
    for expression in expressions:
        if expression.operator is Operator.EQUAL:
            equal.setdefault(expression.key, set()).add(expression)
        else:
            single.add(MetadataClause(expression.key, (expression,)))
    grouped = {
        MetadataClause(key, tuple(sorted(found, key=lambda e: e.value)))
        for key, found in equal.items()
    }
    return tuple(sorted(grouped | single, key=lambda clause: (clause.key, str(clause))))


def first_mismatch(
    required: Iterable[MetadataClause], metadata: Mapping[str, str]
) -> tuple[MetadataClause, str] | None:
    """The first clause `metadata` does not satisfy and what the machine has instead."""
    for clause in required:
        if (why := clause.mismatch(metadata)) is not None:
            return clause, why
    return None
