"""What the fuzz suites (tests/unit/test_fuzz_*.py) share: their budget and their raw material.

Each suite gets `fuzz(n)`: n examples and no deadline, so that a slow core makes a run longer,
never flaky. The whole fuzz set stays well under a minute on two slow cores. For a longer hunt,
scale every budget at once: `FLOTILLA_FUZZ_SCALE=50 pytest tests/unit -k fuzz`.

A bug a suite has found in a module another change owns is pinned with `@example` (so the
suite fails the same way on every run) and marked `xfail(strict=True)` until that change
fixes it; the marker then has to go, because an unexpected pass fails the run.
"""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SCALE = float(os.environ.get("FLOTILLA_FUZZ_SCALE", "1"))


def fuzz(max_examples: int) -> settings:
    """The budget of one fuzz test: `max_examples` (times FLOTILLA_FUZZ_SCALE), no deadline."""
    return settings(
        max_examples=max(1, round(max_examples * SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        print_blob=True,
    )


# Every code point, lone surrogates included: text from JSON ("\ud800") can hold them.
any_character = st.characters(codec=None, categories=None, exclude_categories=())
# Characters that break naive parsers: NUL, line and paragraph separators that str.splitlines()
# splits on, Go's and Python's differing whitespace, a BOM, a combining mark, an emoji.
AWKWARD = ["\x00", "\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\u2028", "\u3000", "\ufeff"]
AWKWARD += ["\u0301", "é", "☃", "\U0001f600", "\ud800"]


def soup(tokens: list[str], max_size: int = 30) -> st.SearchStrategy[str]:
    """Text made of `tokens` (the syntax the parser under test cares about) and stray characters."""
    piece = st.one_of(
        st.sampled_from(tokens),
        st.sampled_from(AWKWARD),
        st.text(any_character, max_size=3),
    )
    return st.lists(piece, max_size=max_size).map("".join)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(any_character, max_size=8),
)
# What json.loads can return (no NaN: it would make equality checks useless).
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(any_character, max_size=6), inner, max_size=4),
    ),
    max_leaves=12,
)


def json_bytes(value: object) -> bytes:
    """`value` as a JSON document, as a client could send it (lone surrogates as \\u escapes)."""
    return json.dumps(value).encode()
