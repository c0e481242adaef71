"""MachineMetadata expressions: parsing, their text form, and how they judge a machine."""

from __future__ import annotations

import operator
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetd.metadata_match import (
    MetadataExpression,
    MetadataExpressionError,
    Operator,
    clauses,
    parse_expression,
)

from .fuzzing import any_character, fuzz

KEY_ALPHABET = "abcxyzABZ019_.-"
keys = st.text(KEY_ALPHABET, min_size=1, max_size=8)
# Text values: anything but the reserved characters, not starting or ending with whitespace.
text_values = st.text(
    any_character.filter(lambda c: c not in "=<>" and not ("\ud800" <= c <= "\udfff")),
    min_size=1,
    max_size=8,
).filter(lambda value: value == value.strip())
numbers = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=4).map(lambda d: format(d, "f")),
)
NUMERIC = [op for op in Operator if op.is_numeric]
COMPARE: dict[Operator, Callable[[Fraction, Fraction], bool]] = {
    Operator.LESS: operator.lt,
    Operator.LESS_OR_EQUAL: operator.le,
    Operator.GREATER: operator.gt,
    Operator.GREATER_OR_EQUAL: operator.ge,
}


@st.composite
def expressions(draw: st.DrawFn) -> MetadataExpression:
    op = draw(st.sampled_from(Operator))
    value = draw(numbers if op.is_numeric else text_values)
    return MetadataExpression(draw(keys), op, value)


@fuzz(300)
@given(expressions())
def test_every_valid_expression_reads_back_from_its_text(expression: MetadataExpression) -> None:
    assert parse_expression(str(expression)) == expression


@fuzz(300)
@given(keys, st.sampled_from(NUMERIC), numbers, numbers)
def test_numeric_operators_compare_like_python(
    key: str, op: Operator, have: str, threshold: str
) -> None:
    expression = parse_expression(f"{key}{op.value}{threshold}")
    # Fraction reads the decimal text exactly and on its own, so it is an independent oracle.
    expected = COMPARE[op](Fraction(have), Fraction(threshold))
    assert (expression.mismatch({key: have}) is None) is expected


@fuzz(300)
@given(st.text(max_size=12))
def test_any_text_parses_or_says_where_it_fails(text: str) -> None:
    try:
        expression = parse_expression(text)
    except MetadataExpressionError as error:
        assert 1 <= error.position <= len(text) + 1
        assert str(error).startswith(f"character {error.position}: ")
        return
    assert str(expression) == text


@pytest.mark.parametrize(
    ("text", "key", "op", "value"),
    [
        ("region=us-east-1", "region", Operator.EQUAL, "us-east-1"),
        ("region!=east", "region", Operator.NOT_EQUAL, "east"),
        ("disk<10", "disk", Operator.LESS, "10"),
        ("disk<=10.5", "disk", Operator.LESS_OR_EQUAL, "10.5"),
        ("disk>-3", "disk", Operator.GREATER, "-3"),
        ("disk>=0", "disk", Operator.GREATER_OR_EQUAL, "0"),
        ("a.b_c-d=x y", "a.b_c-d", Operator.EQUAL, "x y"),
    ],
)
def test_each_operator_parses(text: str, key: str, op: Operator, value: str) -> None:
    assert parse_expression(text) == MetadataExpression(key, op, value)


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ("disk>=", 7, "a number must follow '>='"),
        (">=5", 1, "unexpected '>': it must start with a key"),
        ("ram<=abc", 6, "'abc' is not a number"),
        ("a<<3", 3, "unexpected '<': a value cannot contain '=', '<' or '>'"),
        ("a==b", 3, "unexpected '='"),
        ("disk", 5, "nothing after the key 'disk': expected an operator"),
        ("disk=>5", 6, "unexpected '>'"),
        ("disk>5.", 6, "'5.' is not a number"),
        ("disk>.5", 6, "'.5' is not a number"),
        ("disk> 5", 6, "a value cannot start or end with whitespace"),
        ("a=b ", 4, "a value cannot start or end with whitespace"),
        ("", 1, "the expression is empty"),
    ],
)
def test_malformed_expressions_say_where(text: str, position: int, reason: str) -> None:
    with pytest.raises(MetadataExpressionError) as caught:
        parse_expression(text)
    assert caught.value.position == position
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    ("text", "metadata", "mismatch"),
    [
        ("region=eu", {"region": "eu"}, None),
        ("region=eu", {"region": "EU"}, "has region=EU"),
        ("region=eu", {}, "has no region"),
        ("region!=east", {"region": "west"}, None),
        ("region!=east", {}, None),  # it does not have that value
        ("region!=east", {"region": "east"}, "has region=east"),
        ("disk>=100", {"disk": "100"}, None),
        ("disk>=100", {"disk": "100.000"}, None),
        ("disk>=100", {"disk": "99.9"}, "has disk=99.9"),
        ("disk>=100", {}, "has no disk"),
        ("disk>=100", {"disk": "big"}, "has disk=big, not a number"),
        ("disk<0.1", {"disk": "-5"}, None),
        ("disk=100", {"disk": "100.0"}, "has disk=100.0"),  # `=` compares text, as fleet did
    ],
)
def test_an_expression_judges_a_machine(
    text: str, metadata: dict[str, str], mismatch: str | None
) -> None:
    assert parse_expression(text).mismatch(metadata) == mismatch


def test_equality_on_one_key_is_ored_and_everything_else_anded() -> None:
    found = clauses(
        parse_expression(text)
        for text in ["region=us", "disk>=100", "region=eu", "disk<=500", "region=us"]
    )
    assert [str(clause) for clause in found] == ["disk<=500", "disk>=100", "region=eu|us"]
    region = found[2]
    assert region.mismatch({"region": "us"}) is None
    assert region.mismatch({"region": "asia"}) == "has region=asia"


def test_thresholds_are_exact_decimals() -> None:
    assert parse_expression("x<=0.3").threshold == Decimal("0.3")
    assert parse_expression("x<=0.3").mismatch({"x": "0.30000000000000001"}) == (
        "has x=0.30000000000000001"
    )
