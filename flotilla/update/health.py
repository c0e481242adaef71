"""Is this boot healthy enough to keep its /usr? (pure)

Asked on a boot that systemd-boot counts (a slot on trial): boot-complete.target requires
flotilla-update-health.service, and systemd-bless-boot marks the entry good only once that
target is reached. The facts are gathered by machine.py; the verdict is here.

- fleetd, if this machine runs it (enabled), is registered: its status line names this machine.
- etcd, if this machine runs a member (enabled), answers `etcdctl endpoint health`.
- No unit of the image's own (its unit file under /usr) has failed. Units a user or fleet
  brought (/etc, /run) may fail without taking the OS back.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_UNIT_DIRECTORIES = ("/usr/lib/systemd/", "/lib/systemd/")


@dataclass(frozen=True)
class HealthFacts:
    fleetd_enabled: bool
    fleetd_registered: bool
    etcd_enabled: bool
    etcd_healthy: bool
    failed_units: dict[str, str]  # unit -> its FragmentPath ("" for none)


def image_owned_failures(failed_units: dict[str, str]) -> list[str]:
    return sorted(
        unit
        for unit, fragment in failed_units.items()
        if fragment.startswith(IMAGE_UNIT_DIRECTORIES)
    )


def health_problems(facts: HealthFacts) -> list[str]:
    """What stands between this boot and being marked good (empty: nothing)."""
    problems = []
    if facts.fleetd_enabled and not facts.fleetd_registered:
        problems.append("fleetd is enabled but this machine is not registered in the cluster")
    if facts.etcd_enabled and not facts.etcd_healthy:
        problems.append("etcd is enabled but its member does not answer as healthy")
    failed = image_owned_failures(facts.failed_units)
    if failed:
        problems.append(f"units of the image failed: {', '.join(failed)}")
    return problems
