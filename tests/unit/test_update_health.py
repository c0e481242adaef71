"""The trial boot's health verdict: fleetd and etcd only if this machine runs them, and only the
image's own units count as failures."""

from __future__ import annotations

from flotilla.update.health import HealthFacts, health_problems

HEALTHY = HealthFacts(True, True, True, True, {})


def test_a_healthy_machine_has_no_problems() -> None:
    assert health_problems(HEALTHY) == []
    assert health_problems(HealthFacts(False, False, False, False, {})) == []


def test_fleetd_and_etcd_count_only_when_enabled() -> None:
    problems = health_problems(HealthFacts(True, False, True, False, {}))
    assert [p.split()[0] for p in problems] == ["fleetd", "etcd"]


def test_only_units_the_image_ships_count() -> None:
    failed = {
        "web.service": "/run/fleetd/units/web.service",
        "mine.service": "/etc/systemd/system/mine.service",
        "etcd.service": "/lib/systemd/system/etcd.service",
        "flotilla-ssh-keys.service": "/usr/lib/systemd/system/flotilla-ssh-keys.service",
    }
    facts = HealthFacts(False, False, False, False, failed)
    assert health_problems(facts) == [
        "units of the image failed: etcd.service, flotilla-ssh-keys.service"
    ]
