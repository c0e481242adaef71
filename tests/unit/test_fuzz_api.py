"""Fuzz: API bodies and page tokens give a result or a 4xx ApiError, never another exception
(Hypothesis).

Any other exception in a handler is a 500 with aiohttp's text instead of fleet's JSON error. The
handlers validate with the pure functions tested here before they touch etcd.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Callable
from typing import TypeVar
from unittest import mock

from aiohttp import streams, web
from aiohttp.test_utils import make_mocked_request
from hypothesis import example, given
from hypothesis import strategies as st

from fleetd.api import check_desired, check_name, check_options, metadata_change, read_body
from fleetd.api_model import TOKEN_LIMIT, ApiError, decode_token, encode_token, page_of
from fleetd.unitfile import UnitFile, parse_unit_file

from .fuzzing import any_character, fuzz, json_bytes, json_values, soup

Result = TypeVar("Result")


def is_client_error(error: ApiError) -> bool:
    return 400 <= error.status < 500 and bool(error.message) and "code" in error.body()["error"]


# ---------------------------------------------------------------------------------------------
# Page tokens


_token_bytes = st.one_of(
    st.binary(max_size=6),
    st.builds(
        lambda limit, page: limit.to_bytes(2, "little") + page.to_bytes(2, "little"),
        st.sampled_from([TOKEN_LIMIT, 0, 1, 65535]),
        st.integers(0, 65535),
    ),
)
tokens = st.one_of(
    _token_bytes.map(lambda data: base64.urlsafe_b64encode(data).decode()),
    _token_bytes.map(lambda data: base64.b64encode(data).decode().rstrip("=")),
    st.integers(0, 65535).map(encode_token),
    soup(["=", "-", "_", "+", "/", "ZAAB", "AA", "%3D"], max_size=6),
)


@fuzz(400)
@given(st.lists(tokens, max_size=3))
def test_any_page_token_gives_a_page_or_a_4xx(values: list[str]) -> None:
    try:
        page = decode_token(values)
    except ApiError as error:
        assert is_client_error(error)
        return
    assert 0 <= page <= 65535
    assert page > 0 or not values


@fuzz(200)
@given(st.integers(1, 65535))
def test_a_page_token_gives_back_its_page(page: int) -> None:
    assert decode_token([encode_token(page)]) == page


@fuzz(100)
@given(st.integers(0, 3 * TOKEN_LIMIT + 1))
def test_following_next_page_tokens_visits_every_item_once(count: int) -> None:
    items, seen, page = list(range(count)), [], 0
    while True:
        body = page_of(items, page, "units")
        seen += body.get("units", [])
        if "nextPageToken" not in body:
            break
        page = decode_token([json.loads(json.dumps(body))["nextPageToken"]])
    assert seen == items


# ---------------------------------------------------------------------------------------------
# PUT /units/<name>


_unit_strings = soup(["[Service]", "ExecStart", "=", "\n", "\\", "#", " ", "]", "["], max_size=8)
_fields = st.one_of(_unit_strings, _unit_strings, json_values)
_option = st.one_of(
    st.fixed_dictionaries({"section": _fields, "name": _fields, "value": _fields}),
    st.fixed_dictionaries({}, optional={"section": _fields, "name": _fields, "value": _fields}),
    json_values,
)
_names = st.one_of(
    st.sampled_from(["web.service", "web@.service", "web@1.service", "a/b.service", ".x.service"]),
    st.text(any_character, max_size=10),
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(_names, json_values),
        "desiredState": st.one_of(st.sampled_from(["launched", "loaded", "inactive"]), json_values),
        "options": st.one_of(st.lists(_option, max_size=4), json_values),
    },
)


def expect_4xx_or_result(check: Callable[..., Result], *arguments: object) -> Result | None:
    """What `check` returns, or None when it raised ApiError with a 4xx status."""
    try:
        return check(*arguments)
    except ApiError as error:
        assert is_client_error(error)
        return None
    except web.HTTPClientError:  # aiohttp's own 4xx (a body over its size limit: 413)
        return None


@fuzz(300)
@given(_names, bodies)
@example("web.service", {"options": [{"section": "S", "name": "K", "value": "a\\"}]})
@example("web.service", {"options": [{"section": "S", "name": "K", "value": "\ud800"}]})
def test_any_unit_body_gives_a_unit_or_a_4xx(name: str, body: dict[str, object]) -> None:
    expect_4xx_or_result(check_name, name)
    expect_4xx_or_result(check_desired, body.get("desiredState"))
    unit = expect_4xx_or_result(check_options, name, body.get("options"))
    if isinstance(unit, UnitFile):
        # What is stored reads back as the same unit, with the same hash, for everyone.
        again = parse_unit_file(unit.serialize(), name)
        assert again == unit
        assert UnitFile.from_options(unit.to_options()).hash == unit.hash


_ops = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "op": st.one_of(st.sampled_from(["add", "replace", "remove", "move"]), json_values),
            "path": st.one_of(
                st.builds(
                    "/{}/metadata/{}".format,
                    soup(["/", "a", "."], max_size=3),
                    soup(["/", "k", "-", "."], max_size=3),
                ),
                json_values,
            ),
            "value": st.one_of(st.fixed_dictionaries({"value": json_values}), json_values),
        },
    ),
    json_values,
)


@fuzz(400)
@given(_ops)
def test_any_metadata_op_gives_a_change_or_a_4xx(op: object) -> None:
    change = expect_4xx_or_result(metadata_change, op)
    if change is not None:
        machine, key, value = change
        assert machine and "/" not in machine and re.fullmatch("[A-Za-z0-9_.-]+", key)
        assert isinstance(value, str)


# ---------------------------------------------------------------------------------------------
# Request bodies


def read(data: bytes, content_type: str = "application/json") -> object:
    """`read_body` on a real aiohttp request that carries `data`."""

    async def run() -> object:
        payload = streams.StreamReader(
            mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop()
        )
        payload.feed_data(data)
        payload.feed_eof()
        request = make_mocked_request(
            "PUT", "/fleet/v1/units/web.service", {"Content-Type": content_type}, payload=payload
        )
        return await read_body(request)

    return asyncio.run(run())


_json_texts = st.one_of(
    json_values.map(json_bytes),
    soup(['{"', '":', "[", "]", "{", "}", ",", "null", "1e999", "NaN", '"\\ud800"'], max_size=12)
    .filter(lambda text: text.count("[") + text.count("{") < 100)
    .map(lambda text: text.encode("utf-8", "replace")),
)


@fuzz(200)
@given(_json_texts, st.sampled_from(["application/json", "text/plain", ""]))
def test_any_utf8_request_body_decodes_or_gives_a_4xx(data: bytes, content_type: str) -> None:
    body = expect_4xx_or_result(read, data, content_type)
    assert body is None or isinstance(body, dict)


@fuzz(50)
@given(st.binary(max_size=20))
@example(b"\xff")
def test_a_request_body_that_is_not_utf8_gives_a_4xx(data: bytes) -> None:
    expect_4xx_or_result(read, data)


@fuzz(10)
@given(st.integers(0, 500_000), st.sampled_from(["[", '{"a":']))
@example(100_000, "[")
def test_a_deeply_nested_request_body_gives_a_4xx(depth: int, opening: str) -> None:
    expect_4xx_or_result(read, (opening * depth).encode())
