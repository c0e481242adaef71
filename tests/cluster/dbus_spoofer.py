"""Another client on a lab machine's system bus, posing as systemd; runs inside the machine.

    python3 dbus_spoofer.py PID properties UNIT ACTIVE SUB
    python3 dbus_spoofer.py PID job-removed UNIT RESULT

Sends a signal with systemd's object path, interface, member and body, once addressed to every
bus connection of process PID (fleetd: the bus daemon delivers a signal addressed to a
connection whatever its match rules say) and once broadcast. `properties` is the unit's
PropertiesChanged with the given active and sub state; `job-removed` the Manager's JobRemoved
of the unit's running job. Any user may send signals on the system bus. Prints one JSON object
naming what it sent and to whom.
"""

from __future__ import annotations

import asyncio
import json
import sys

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from fleetd.systemd import (
    BUS_DAEMON,
    MANAGER,
    MANAGER_INTERFACE,
    MANAGER_PATH,
    PROPERTIES_INTERFACE,
    UNIT_INTERFACE,
    unit_path,
)


async def call(bus: MessageBus, route: dict[str, str], member: str, signature: str, body: list):  # type: ignore[no-untyped-def, type-arg]
    reply = await bus.call(Message(**route, member=member, signature=signature, body=body))
    assert reply.message_type == MessageType.METHOD_RETURN, (member, reply.body)
    return reply.body


async def connections_of(bus: MessageBus, pid: int) -> list[str]:
    (names,) = await call(bus, BUS_DAEMON, "ListNames", "", [])
    found = []
    for name in names:
        if name.startswith(":") and name != bus.unique_name:
            reply = await bus.call(
                Message(
                    **BUS_DAEMON, member="GetConnectionUnixProcessID", signature="s", body=[name]
                )
            )
            if reply.message_type == MessageType.METHOD_RETURN and reply.body[0] == pid:
                found.append(name)
    return found


async def running_job(bus: MessageBus, unit: str) -> tuple[int, str]:
    (path,) = await call(bus, MANAGER, "GetUnit", "s", [unit])
    route = {"destination": MANAGER["destination"], "path": path, "interface": PROPERTIES_INTERFACE}
    (job,) = await call(bus, route, "Get", "ss", [UNIT_INTERFACE, "Job"])
    job_id, job_path = job.value
    assert job_id != 0, f"{unit} has no job running"
    return job_id, job_path


async def main(pid: int, kind: str, unit: str, args: list[str]) -> None:
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    targets = await connections_of(bus, pid)
    assert targets, f"process {pid} has no connection to the system bus"
    if kind == "properties":
        active, sub = args
        path, interface, member, signature = (
            unit_path(unit),
            PROPERTIES_INTERFACE,
            "PropertiesChanged",
            "sa{sv}as",
        )
        body = [
            UNIT_INTERFACE,
            {"ActiveState": Variant("s", active), "SubState": Variant("s", sub)},
            [],
        ]
    else:
        (result,) = args
        job_id, job_path = await running_job(bus, unit)
        path, interface, member, signature = MANAGER_PATH, MANAGER_INTERFACE, "JobRemoved", "uoss"
        body = [job_id, job_path, unit, result]
    for destination in [*targets, None]:
        await bus.send(
            Message.new_signal(path, interface, member, signature, body)
            if destination is None
            else Message(
                message_type=MessageType.SIGNAL,
                destination=destination,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=body,
            )
        )
    await call(bus, BUS_DAEMON, "GetId", "", [])  # a round trip: everything sent has left
    print(
        json.dumps({"sender": bus.unique_name, "to": targets, "member": member, "body": str(body)})
    )
    bus.disconnect()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]))
