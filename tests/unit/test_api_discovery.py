"""The discovery document and fleet's 405 wording (pure), checked against the routes served."""

from __future__ import annotations

import asyncio
import re

import pytest

from fleetd.api import Api
from fleetd.api_discovery import discovery_document
from fleetd.api_model import method_not_allowed_message


def routes() -> set[tuple[str, str]]:
    """(method, path) of every route under /fleet/v1/, path in discovery's {name} form."""
    app = Api(None, asyncio.Event(), b"")  # type: ignore[arg-type]  # routes only: never called
    found = set()
    for route in app.app().router.routes():
        path = route.resource.canonical if route.resource else ""
        if path.startswith("/fleet/v1/") and route.method not in ("HEAD", "*"):
            found.add((route.method, re.sub(r"\{name\}", "{unitName}", path)))
    return found


def test_the_document_is_a_google_discovery_rest_description() -> None:
    document = discovery_document("1.2.3")
    assert document["kind"] == "discovery#restDescription"
    assert document["discoveryVersion"] == "v1"
    assert (document["id"], document["name"], document["version"]) == ("fleet:v1", "fleet", "v1")
    assert document["rootUrl"] == "$ENDPOINT/"
    assert document["servicePath"] == "fleet/v1/"
    assert document["baseUrl"] == "$ENDPOINT/fleet/v1/"
    assert set(document["schemas"]) >= {  # type: ignore[arg-type]
        "Unit",
        "UnitOption",
        "UnitPage",
        "UnitState",
        "UnitStatePage",
        "Machine",
        "MachinePage",
    }


def test_every_schema_reference_resolves() -> None:
    document = discovery_document("1")
    schemas = document["schemas"]
    text = repr(document)
    for ref in re.findall(r"'\$ref': '(\w+)'", text):
        assert ref in schemas, ref  # type: ignore[operator]
    for name, schema in schemas.items():  # type: ignore[union-attr]
        assert schema["id"] == name


def test_every_method_described_is_served_and_every_fleet_route_is_described() -> None:
    document = discovery_document("1")
    described = {
        (entry["httpMethod"], "/fleet/v1/" + entry["path"])
        for resource in document["resources"].values()  # type: ignore[union-attr]
        for entry in resource["methods"].values()
    }
    # Flotilla's, not fleet's
    ours = {
        ("GET", "/fleet/v1/units/{unitName}/reason"),
        ("GET", "/fleet/v1/events"),
        ("PUT", "/fleet/v1/machines/{machine}/drain"),
        ("DELETE", "/fleet/v1/machines/{machine}/drain"),
    }
    assert described == routes() - ours


def test_method_ids_name_their_resource() -> None:
    document = discovery_document("1")
    for resource, body in document["resources"].items():  # type: ignore[union-attr]
        for name, entry in body["methods"].items():
            assert entry["id"] == f"fleet.{resource}.{name}"


@pytest.mark.parametrize(
    ("allowed", "message"),
    [
        ({"GET", "HEAD"}, "only GET supported against this resource"),
        ({"PATCH", "GET", "HEAD"}, "only GET and PATCH supported against this resource"),
        (
            {"DELETE", "PUT", "GET", "HEAD"},
            "only GET, PUT and DELETE supported against this resource",
        ),
    ],
)
def test_405_messages_are_fleets(allowed: set[str], message: str) -> None:
    assert method_not_allowed_message(allowed) == message


def test_unknown_methods_go_last_in_name_order() -> None:
    assert method_not_allowed_message({"GET", "TRACE", "MOVE"}) == (
        "only GET, MOVE and TRACE supported against this resource"
    )
