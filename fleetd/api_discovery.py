"""The discovery document served at GET /fleet/v1/discovery (pure).

fleet described its API v1 in Google's API discovery format (a "discovery#restDescription"),
from which its Go client was generated; tools made for fleet read it. This one is written from
the API fleetd serves: the same resources, methods, query parameters and entity schemas, and,
like fleet's, a `rootUrl` of `$ENDPOINT/` that a client replaces with the URL it uses.
"""

from __future__ import annotations

from collections.abc import Mapping

ROOT_URL = "$ENDPOINT/"
SERVICE_PATH = "fleet/v1/"


def string(description: str, enum: tuple[str, ...] = ()) -> dict[str, object]:
    schema: dict[str, object] = {"type": "string", "description": description}
    if enum:
        schema["enum"] = list(enum)
    return schema


def array_of(ref: str) -> dict[str, object]:
    return {"type": "array", "items": {"$ref": ref}}


def page(key: str, ref: str) -> dict[str, object]:
    return {
        "id": f"{ref}Page",
        "type": "object",
        "properties": {
            key: array_of(ref),
            "nextPageToken": string("token of the next page; absent on the last one"),
        },
    }


STATES = ("inactive", "loaded", "launched")
SCHEMAS: dict[str, dict[str, object]] = {
    "UnitOption": {
        "id": "UnitOption",
        "type": "object",
        "properties": {
            "section": string("unit file section, e.g. Service or X-Fleet"),
            "name": string("option name, e.g. ExecStart"),
            "value": string("option value"),
        },
    },
    "Unit": {
        "id": "Unit",
        "type": "object",
        "properties": {
            "name": string("unit name, e.g. web.service"),
            "options": array_of("UnitOption"),
            "desiredState": string("the state the cluster should bring the unit to", STATES),
            "currentState": string("the state the unit has reached", STATES),
            "machineID": string("the machine the unit is scheduled to (none for global units)"),
        },
    },
    "UnitPage": page("units", "Unit"),
    "UnitState": {
        "id": "UnitState",
        "type": "object",
        "properties": {
            "name": string("unit name"),
            "hash": string("SHA1 of the unit file the machine runs"),
            "machineID": string("the machine reporting this state"),
            "systemdLoadState": string("systemd's LoadState"),
            "systemdActiveState": string("systemd's ActiveState"),
            "systemdSubState": string("systemd's SubState"),
        },
    },
    "UnitStatePage": page("states", "UnitState"),
    "Machine": {
        "id": "Machine",
        "type": "object",
        "properties": {
            "id": string("machine ID"),
            "primaryIP": string("the IP address other machines and fleetctl use"),
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "state": string("drain state", ("schedulable", "draining", "drained")),
        },
    },
    "MachinePage": page("machines", "Machine"),
    "MachineOperation": {
        "id": "MachineOperation",
        "type": "object",
        "properties": {
            "op": string("what to do with the metadata key", ("add", "remove", "replace")),
            "path": string("/<machineID>/metadata/<key>"),
            "value": {
                "type": "object",
                "properties": {"value": string("the metadata value (add and replace)")},
            },
        },
    },
}

PAGE_TOKEN = {"nextPageToken": {"type": "string", "location": "query"}}
UNIT_NAME = {"unitName": {"type": "string", "location": "path", "required": True}}


def method(
    resource: str,
    name: str,
    http_method: str,
    path: str,
    parameters: Mapping[str, Mapping[str, object]] | None = None,
    request: str = "",
    response: str = "",
    description: str = "",
) -> dict[str, object]:
    entry: dict[str, object] = {
        "id": f"fleet.{resource}.{name}",
        "path": path,
        "httpMethod": http_method,
        "description": description,
    }
    if parameters:
        entry["parameters"] = dict(parameters)
        entry["parameterOrder"] = [k for k, v in parameters.items() if v.get("required")]
    if request:
        entry["request"] = {"$ref": request}
    if response:
        entry["response"] = {"$ref": response}
    return entry


RESOURCES = {
    "Machines": {
        "methods": {
            "List": method(
                "Machines",
                "List",
                "GET",
                "machines",
                PAGE_TOKEN,
                response="MachinePage",
                description="The machines in the cluster.",
            ),
            "Patch": method(
                "Machines",
                "Patch",
                "PATCH",
                "machines",
                request="MachineOperation",
                description="Set or remove machine metadata (a JSON list of operations).",
            ),
        }
    },
    "Units": {
        "methods": {
            "List": method(
                "Units",
                "List",
                "GET",
                "units",
                PAGE_TOKEN,
                response="UnitPage",
                description="Every unit in the cluster.",
            ),
            "Get": method(
                "Units",
                "Get",
                "GET",
                "units/{unitName}",
                UNIT_NAME,
                response="Unit",
                description="One unit.",
            ),
            "Set": method(
                "Units",
                "Set",
                "PUT",
                "units/{unitName}",
                UNIT_NAME,
                request="Unit",
                description="Create a unit, replace its file, or change its desired state.",
            ),
            "Delete": method(
                "Units",
                "Delete",
                "DELETE",
                "units/{unitName}",
                UNIT_NAME,
                description="Destroy a unit.",
            ),
        }
    },
    "UnitState": {
        "methods": {
            "List": method(
                "UnitState",
                "List",
                "GET",
                "state",
                {
                    **PAGE_TOKEN,
                    "machineID": {"type": "string", "location": "query", "repeated": True},
                    "unitName": {"type": "string", "location": "query", "repeated": True},
                },
                response="UnitStatePage",
                description="systemd's view of the units, per machine.",
            ),
            "Get": method(
                "UnitState",
                "Get",
                "GET",
                "state/{unitName}",
                UNIT_NAME,
                response="UnitState",
                description="The first state reported for one unit.",
            ),
        }
    },
}


def discovery_document(version: str) -> dict[str, object]:
    return {
        "kind": "discovery#restDescription",
        "discoveryVersion": "v1",
        "id": "fleet:v1",
        "name": "fleet",
        "version": "v1",
        "revision": version,
        "title": "fleet API",
        "description": "Schedule systemd units on a cluster of machines (Flotilla's fleetd).",
        "protocol": "rest",
        "rootUrl": ROOT_URL,
        "servicePath": SERVICE_PATH,
        "basePath": "/" + SERVICE_PATH,
        "baseUrl": ROOT_URL + SERVICE_PATH,
        "parameters": {
            "alt": {
                "type": "string",
                "location": "query",
                "default": "json",
                "enum": ["json"],
                "description": "response format (JSON only)",
            }
        },
        "schemas": SCHEMAS,
        "resources": RESOURCES,
    }
