"""The event history on a real etcd: the recorder's bounds, a restart, the reader, the API's
GET /fleet/v1/events (pages, refusals, server-sent events) and both fleetctl drivers' methods."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fleetd.api import Api
from fleetd.client import FleetClient
from fleetd.events import MACHINE_JOINED, UNIT_MOVED, UNIT_PLACED, Draft, EventFilter, decode_page
from fleetd.events_store import EventReader, EventRecorder
from fleetd.fleetctl.api_driver import ApiClient
from fleetd.fleetctl.etcd_driver import EtcdDriver
from fleetd.keys import Keys
from fleetd.registry import Registry
from fleetlab.etcd import EtcdServer

pytestmark = pytest.mark.cluster
M1, M2 = "a" * 32, "b" * 32


@pytest.fixture
async def registry(etcd: EtcdServer) -> AsyncIterator[Registry]:
    async with Registry.open(etcd.endpoint, Keys(), timeout=5.0) as opened:
        yield opened


def placed(unit: str, machine: str = M1) -> Draft:
    return Draft(UNIT_PLACED, unit, machine, None, machine, "least loaded")


async def stored_events(registry: Registry, machine: str) -> int:
    return sum(len(decode_page(raw)) for _, raw in await registry.event_pages(machine))


async def test_a_writer_keeps_its_limit_across_restarts(registry: Registry) -> None:
    recorder = EventRecorder(registry, M1, limit=30)
    for number in range(75):
        recorder.record(placed(f"u{number}.service"))
    await recorder.flush()  # pages of 30, 30, 15: the oldest pages go
    assert await stored_events(registry, M1) == 15
    # A restarted fleetd: a new recorder learns what the old one stored, and keeps the limit.
    again = EventRecorder(registry, M1, limit=30)
    for batch in (range(75, 85), range(85, 95)):
        for number in batch:
            again.record(placed(f"u{number}.service"))
        await again.flush()
    assert await stored_events(registry, M1) == 20  # 15 + 10 + 10 > 30: the page of 15 went
    assert len(await registry.event_ids(M1)) == 2  # a page per write: few keys
    events, _ = await EventReader(registry).read(EventFilter())
    assert [e.unit for e in events] == [f"u{n}.service" for n in range(75, 95)]
    # Each event lives under a lease of its own writer, not the machine's: bounded by age.
    raw = await registry.client.get_prefix(registry.keys.events_of(M1))
    leases = {kv.lease for kv in raw.kvs}
    assert leases and 0 not in leases
    for lease in leases:
        info = await registry.client.get_lease_info(lease)
        assert 24 * 3600 < info.TTL <= 1.25 * 24 * 3600


async def test_record_never_waits_and_drops_the_oldest_when_the_queue_is_full(
    registry: Registry,
) -> None:
    recorder = EventRecorder(registry, M1, queue_limit=5)
    for number in range(8):
        recorder.record(placed(f"u{number}.service"))
    assert recorder.dropped == 3
    await recorder.flush()
    events, _ = await EventReader(registry).read(EventFilter())
    assert [e.unit for e in events] == [f"u{n}.service" for n in range(3, 8)]


async def test_readers_merge_writers_in_time_order_and_follow_new_events(
    registry: Registry,
) -> None:
    first, second = EventRecorder(registry, M1), EventRecorder(registry, M2)
    first.record(placed("one.service"))
    second.record(Draft(MACHINE_JOINED, None, M2, None, None, "registered"))
    await asyncio.sleep(0.01)
    first.record(Draft(UNIT_MOVED, "one.service", M2, M1, M2, "machine aaaaaaaa went away"))
    await second.flush()
    await first.flush()
    reader = EventReader(registry)
    events, revision = await reader.read(EventFilter())
    assert [e.kind for e in events] == [UNIT_PLACED, MACHINE_JOINED, UNIT_MOVED]
    assert [e.kind for e in (await reader.read(EventFilter(machine="bbbb")))[0]] == [
        MACHINE_JOINED,
        UNIT_MOVED,
    ]
    following = reader.follow(EventFilter(unit="two.service"), revision)
    first.record(placed("other.service"))
    first.record(placed("two.service"))
    await first.flush()
    event = await asyncio.wait_for(anext(following), 5)
    assert (event.unit, event.kind) == ("two.service", UNIT_PLACED)
    await following.aclose()


@pytest.fixture
async def api(registry: Registry) -> AsyncIterator[TestClient]:
    registered = asyncio.Event()
    registered.set()
    app = Api(FleetClient(registry), registered, registry.keys.leader, EventReader(registry))
    async with TestClient(TestServer(app.app())) as client:
        yield client


async def test_the_api_pages_the_history_oldest_first(registry: Registry, api: TestClient) -> None:
    recorder = EventRecorder(registry, M1)
    for number in range(25):
        recorder.record(placed(f"u{number:02d}.service"))
    await recorder.flush()
    units, token = [], ""
    while True:
        query = {"pageSize": "10", **({"nextPageToken": token} if token else {})}
        response = await api.get("/fleet/v1/events", params=query)
        assert response.status == 200
        body = await response.json()
        units += [event["unit"] for event in body["events"]]
        token = body.get("nextPageToken", "")
        if not token:
            break
    assert units == [f"u{n:02d}.service" for n in range(25)]
    one = (await (await api.get("/fleet/v1/events", params={"unit": "u03.service"})).json())[
        "events"
    ]
    assert len(one) == 1
    assert set(one[0]) == {"id", "time", "kind", "unit", "machine", "from", "to", "reason"}
    assert one[0]["time"].endswith("Z") and len(one[0]["time"]) == len("2026-01-02T15:04:05.000Z")
    later = datetime.now(UTC) + timedelta(hours=1)
    empty = await api.get("/fleet/v1/events", params={"since": later.isoformat()})
    assert (await empty.json()) == {"events": []}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"pageSize": "1001"}, "pageSize must be between 1 and 1000"),
        ({"pageSize": "lots"}, "pageSize must be a whole number"),
        ({"since": "yesterday"}, "invalid time 'yesterday'"),
        ({"since": "2026-01-02T15:04:05"}, "give a zone"),
        ({"nextPageToken": "!!"}, "invalid page token"),
    ],
)
async def test_the_api_refuses_bad_queries_with_fleets_error_shape(
    api: TestClient, query: dict[str, str], message: str
) -> None:
    response = await api.get("/fleet/v1/events", params=query)
    assert response.status == 400
    body = await response.json()
    assert body["error"]["code"] == 400 and message in body["error"]["message"]


async def test_the_api_streams_new_events_as_server_sent_events(
    registry: Registry, api: TestClient
) -> None:
    recorder = EventRecorder(registry, M1)
    recorder.record(placed("old.service"))
    await recorder.flush()
    response = await api.get("/fleet/v1/events", params={"watch": "true", "machine": M1[:8]})
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    await asyncio.sleep(0.2)  # the stream's watch is in place
    recorder.record(placed("new.service"))
    await recorder.flush()
    line = await asyncio.wait_for(response.content.readline(), 5)
    assert line.startswith(b"data: ")
    assert json.loads(line[len(b"data: ") :])["unit"] == "new.service"  # not the old one
    response.close()


async def test_both_drivers_read_and_follow_the_same_history(
    registry: Registry, api: TestClient
) -> None:
    recorder = EventRecorder(registry, M1)
    recorder.record(placed("a.service"))
    recorder.record(placed("b.service", M2))
    await recorder.flush()
    base = str(api.make_url("/"))
    async with ApiClient.open(base, 5.0) as through_api:
        drivers = {"etcd": EtcdDriver(registry), "API": through_api}
        for driver in drivers.values():
            assert [e["unit"] for e in await driver.events(None, None, None)] == [
                "a.service",
                "b.service",
            ]
            assert [e["unit"] for e in await driver.events(None, M2[:6], None)] == ["b.service"]
        for name, driver in drivers.items():
            unit = f"{name}.service"
            recorder.record(placed(unit))
            await recorder.flush()
            since = datetime.now(UTC) - timedelta(minutes=1)
            following = driver.follow_events(unit, None, since)
            first = await asyncio.wait_for(anext(following), 5)  # the past, since `since`
            assert (first["unit"], first["machine"]) == (unit, M1)
            recorder.record(placed(unit, M2))
            await recorder.flush()
            second = await asyncio.wait_for(anext(following), 5)
            assert (second["unit"], second["machine"]) == (unit, M2)
            await following.aclose()
