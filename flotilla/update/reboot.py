"""After a slot is written: the one place that decides how the machine gets into it (I/O).

Strategies: `reboot` reboots now; `off` leaves it to the operator (and says so in
/run/reboot-required, as Flatcar does); `etcd-lock` reboots through the cluster's reboot
coordinator (coordinator.py): in the maintenance window, with a slot of the etcd semaphore,
after fleet drained the machine. The coordinator's concretes (etcd, fleet's etcd driver, the
record, the reboot) are wired here, for both its halves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from fleetd.registry import RegistryError
from flotilla.process import run

from . import agent, machine
from .config import UpdateConfig
from .coordinator import Settings, Unanswered, after_reboot, reboot_with_lock
from .fleet import DrainFailed, FleetOverEtcd
from .holding import HoldRecord
from .lock import RebootLock, etcd_target

REBOOT_REQUIRED = Path("/run/reboot-required")
BLESS_TIMEOUT = 600.0  # seconds: the trial's health check has 300, and the boot before it


Say = Callable[[str], None]


def reboot_now(reason: str, config: UpdateConfig | None = None, say: Say | None = None) -> str:
    REBOOT_REQUIRED.write_text(reason + "\n")
    # --no-block: the job is queued and this command returns; systemd stops us with the rest.
    run(["systemctl", "reboot", "--no-block"])
    return "rebooting now"


def leave_it(reason: str, config: UpdateConfig | None = None, say: Say | None = None) -> str:
    REBOOT_REQUIRED.write_text(reason + "\n")
    return f"reboot strategy off: reboot when it suits ({REBOOT_REQUIRED} says one is due)"


class Patient:
    """`target` as the coordinator sees it: each of its calls that fails with one of `errors`
    (etcd's, or a drain fleet did not finish) raises Unanswered, which the coordinator asks again
    for a while (coordinator.patiently) instead of giving up at once."""

    def __init__(self, target: object, errors: tuple[type[Exception], ...]) -> None:
        self.target = target
        self.errors = errors

    def __getattr__(self, name: str) -> Callable[..., object]:
        method = getattr(self.target, name)

        async def call(*args: object, **kwargs: object) -> object:
            try:
                return await method(*args, **kwargs)
            except self.errors as error:
                raise Unanswered(str(error)) from error

        return call


def patient_lock(lock: RebootLock) -> Patient:
    return Patient(lock, (RegistryError,))


# etcd not answering, or a drain fleet did not finish (a unit not yet placed elsewhere)
FLEET_ERRORS = (RegistryError, DrainFailed)


def patient_fleet() -> Patient:
    return Patient(FleetOverEtcd(), FLEET_ERRORS)


def coordinator_settings(config: UpdateConfig) -> Settings:
    return Settings(
        machine=machine.MACHINE_ID.read_text().strip(),
        ttl=config.reboot_lock_ttl.total_seconds(),
        window=config.reboot_window,
        drain=machine.unit_enabled("fleetd.service"),
    )


def reboot_through_lock(reason: str, config: UpdateConfig, say: Say) -> str:
    REBOOT_REQUIRED.write_text(reason + "\n")
    settings = coordinator_settings(config)

    def reboot() -> None:
        reboot_now(reason)

    async def coordinate() -> str:
        async with RebootLock.open(etcd_target(config.etcd_endpoints)) as lock:
            return await reboot_with_lock(
                settings, patient_lock(lock), patient_fleet(), HoldRecord(), reboot, say
            )  # type: ignore[arg-type]

    return asyncio.run(coordinate())


STRATEGIES: dict[str, Callable[[str, UpdateConfig, Say], str]] = {
    "etcd-lock": reboot_through_lock,
    "reboot": reboot_now,
    "off": leave_it,
}


def request_reboot(config: UpdateConfig, reason: str, say: Say) -> str:
    """Hand the reboot to config's strategy; returns what it did, for the user."""
    return STRATEGIES[config.reboot_strategy](reason, config, say)


def boot_health(timeout: float, interval: float, say: Say) -> list[str]:
    """After a coordinated reboot: a boot on trial must first be marked good (its own health
    check, then systemd-bless-boot); any boot must then pass the health check, which on an
    uncounted boot (fallen back to the old slot) nobody else runs. The problems (none: healthy)."""
    deadline = time.monotonic() + BLESS_TIMEOUT
    # Any counter, +0 included: systemd-boot counts a try before it boots, so the last try of
    # a trial boots as `+0-N` and is still waiting for its verdict.
    while (entry := agent.read_state().booted_entry) is not None and entry.tries_left is not None:
        if time.monotonic() >= deadline:
            return [f"{entry.file_name} is still on trial: this boot was not marked good"]
        say(f"waiting for {entry.file_name} to be marked good")
        time.sleep(interval)
    return agent.check_health(timeout, interval, say)


def finish_coordinated_reboot(config: UpdateConfig, say: Say) -> str:
    """The post-boot step (flotilla-update-after-reboot.service)."""
    record = HoldRecord()
    if record.load() is None:
        return "this machine holds no reboot lock; nothing to do"
    settings = coordinator_settings(config)

    async def finish() -> str:
        async with RebootLock.open(etcd_target(config.etcd_endpoints)) as lock:
            healthy = lambda: asyncio.to_thread(boot_health, 300.0, 5.0, say)  # noqa: E731
            return await after_reboot(
                settings, patient_lock(lock), patient_fleet(), record, healthy, say
            )  # type: ignore[arg-type]

    return asyncio.run(finish())
