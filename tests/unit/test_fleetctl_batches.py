"""Commands on many units cost a few round trips, not one (or one reading) per unit: the API
driver's requests go a few at a time and stop cleanly at the first failure, and destroy's wait
reads the published states once per round for all its units. The real drivers against a real
cluster are in tests/cluster/test_fleetctl.py; the figures in bench/fleetctl_scale.py."""

from __future__ import annotations

import asyncio

import pytest

from fleetd.client import ClientError
from fleetd.fleetctl.api_driver import CONCURRENT_REQUESTS, ApiClient
from fleetd.fleetctl.waiting import wait_destroyed
from fleetd.model import DesiredState, UnitState
from fleetd.registry import sized_chunks
from fleetd.unitfile import parse_unit_file

SLEEPER = "[Service]\nExecStart=/bin/sleep infinity\n"


class FakeApi(ApiClient):
    """ApiClient with its HTTP exchange replaced: records each request; PUT of `failing` fails."""

    def __init__(self, failing: str = "") -> None:
        super().__init__(None, "")  # type: ignore[arg-type]
        self.failing, self.requests, self.under_way, self.most = failing, [], 0, 0

    async def request(self, method: str, path: str, body: object = None) -> object:
        self.under_way += 1
        self.most = max(self.most, self.under_way)
        await asyncio.sleep(0.001)
        self.under_way -= 1
        self.requests.append((method, path))
        if method == "PUT" and path == f"/units/{self.failing}":
            raise ClientError(f"refused {self.failing}")
        return None


async def test_many_units_go_a_bounded_few_at_a_time() -> None:
    api = FakeApi()
    names = [f"u{i}.service" for i in range(200)]
    await api.destroy(names)
    assert sorted(path for _, path in api.requests) == sorted(f"/units/{n}" for n in names)
    assert 1 < api.most <= CONCURRENT_REQUESTS


async def test_a_failed_creation_removes_exactly_the_units_it_created() -> None:
    api = FakeApi(failing="u50.service")
    unit = parse_unit_file(SLEEPER, "u.service")
    units = {f"u{i}.service": unit for i in range(200)}
    with pytest.raises(ClientError, match=r"refused u50\.service"):
        await api.create(units)
    created = {path for method, path in api.requests if method == "PUT"} - {"/units/u50.service"}
    deleted = {path for method, path in api.requests if method == "DELETE"}
    assert deleted == created
    # No request started after the failure: only the ones already under way finished.
    assert len(created) < 50 + CONCURRENT_REQUESTS


class PublishedStates:
    """A driver whose units vanish from the published states one reading after another."""

    def __init__(self, readings: list[set[str]]) -> None:
        self.readings, self.reads = readings, 0

    async def published_states(self) -> dict[str, dict[str, UnitState]]:
        names = self.readings[min(self.reads, len(self.readings) - 1)]
        self.reads += 1
        return {name: {"m1": UnitState("loaded", "active", "running", "")} for name in names}


async def test_destroy_waits_with_one_reading_per_round_for_all_units(
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = [f"u{i:04d}.service" for i in range(1000)]
    driver = PublishedStates([{names[500]}, set()])
    await wait_destroyed(driver, names, set(), 0)  # type: ignore[arg-type]
    assert driver.reads == 2
    assert capsys.readouterr().out == "".join(f"Destroyed {name}\n" for name in names)


async def test_destroy_does_not_wait_for_global_units(capsys: pytest.CaptureFixture[str]) -> None:
    driver = PublishedStates([{"g.service"}])
    await wait_destroyed(driver, ["a.service", "g.service"], {"g.service"}, 0)  # type: ignore[arg-type]
    assert driver.reads == 1
    assert capsys.readouterr().out == "Destroyed a.service\nDestroyed g.service\n"


async def test_replacing_many_units_goes_a_few_at_a_time_too() -> None:
    api = FakeApi()
    unit = parse_unit_file(SLEEPER, "u.service")
    await api.replace({f"u{i}.service": (unit, DesiredState.INACTIVE) for i in range(100)})
    assert len(api.requests) == 100 and 1 < api.most <= CONCURRENT_REQUESTS


def test_unit_bodies_are_written_in_chunks_within_etcds_request_limit() -> None:
    bodies = [(f"h{i}", "x" * 400) for i in range(10)] + [("big", "y" * 5000), ("h10", "z")]
    chunks = [list(chunk) for chunk in sized_chunks(bodies, 4, 1000)]
    assert [item for chunk in chunks for item in chunk] == bodies  # all, once, in order
    assert [len(chunk) for chunk in chunks] == [2, 2, 2, 2, 2, 1, 1]
    assert chunks[-2] == [("big", "y" * 5000)]  # larger than the limit: alone
    assert [len(chunk) for chunk in sized_chunks(bodies[:10], 4, 10**6)] == [4, 4, 2]
