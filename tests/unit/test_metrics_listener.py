"""metrics_listen: the /healthz verdict, the two paths served, everything else refused, and the
setting's parsing."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fleetd.config import ConfigError, load_config
from fleetd.metrics_listener import Health, make_app, verdict

HEALTHY = Health(registered=True, fenced=False, last_pass_error="")


@pytest.mark.parametrize(
    ("health", "status", "why"),
    [
        (HEALTHY, 200, "ok"),
        (Health(False, False, ""), 503, "not registered"),
        (Health(True, True, ""), 503, "fenced"),
        (Health(True, False, None), 503, "no reconcile pass yet"),
        (Health(True, False, "etcd timed out"), 503, "failed: etcd timed out"),
    ],
)
def test_healthz_verdict(health: Health, status: int, why: str) -> None:
    found_status, reason = verdict(health)
    assert found_status == status and why in reason


async def test_only_metrics_and_healthz_are_served_and_only_read() -> None:
    scrapes: list[bool] = []
    health = [HEALTHY]

    async def refresh() -> None:
        scrapes.append(True)

    async with TestClient(TestServer(make_app(refresh, lambda: health[0]))) as client:
        metrics = await client.get("/metrics")
        text = await metrics.text()
        assert metrics.status == 200 and scrapes == [True]
        assert "fleet_engine_reconcile_count_total" in text  # fleetd's own registry
        assert "process_resident_memory_bytes" in text and "python_info" in text
        assert (await client.get("/healthz")).status == 200
        health[0] = Health(True, False, "systemd went away")
        unhealthy = await client.get("/healthz")
        assert unhealthy.status == 503 and "systemd went away" in await unhealthy.text()
        for path in ("/", "/fleet/v1/units", "/metrics/../fleet/v1/machines", "/healthz/x"):
            assert (await client.get(path)).status == 404, path
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            assert (await client.request(method, "/metrics")).status == 405


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:9100", "127.0.0.1:9100"), ("[::1]:9100", "[::1]:9100"), ("", "")],
)
def test_metrics_listen_setting(value: str, expected: str) -> None:
    config, _ = load_config({}, {"FLEET_METRICS_LISTEN": value}, {})
    assert config.metrics_listen == expected


@pytest.mark.parametrize("value", ["9100", "host:", ":9100", "host:70000", "host:x"])
def test_a_bad_metrics_listen_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="metrics_listen"):
        load_config({}, {}, {"metrics_listen": value})


def test_metrics_listen_is_off_by_default() -> None:
    assert load_config({}, {}, {})[0].metrics_listen == ""
