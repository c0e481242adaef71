"""Every etcd key fleetd uses, under one configurable prefix, each with exactly one writer role.

    unit/<sha1>                canonical unit text     client: create-if-absent (content-addressed)
    job/<unit>                 {"hash", "desired"}     client
    placement/<unit>           machine id              engine: create-if-absent, delete-if-value
    assigned/<machine>/<unit>  {"hash", "desired"}     engine
    reason/<unit>              why it is not placed    engine
    engine/leader              machine id              engine: create-if-absent    (machine lease)
    machine/<machine>          {"id", "ip", ...}       that machine's fleetd      (machine lease)
    member/<machine>           {"ip"}                  engine; the machine deletes it on leave
    cluster/peer-key           HMAC key (hex)          the first fleetd: create-if-absent
    metadata/<machine>/<key>   value ("" = removed)    API PATCH /machines (overrides fleet.conf)
    drain/<machine>            {"since": unix time}    client: fleetctl drain / the API (no lease:
                                                       the mark outlives the machine's reboots)
    state/<unit>/<machine>     {"load", "active", ...} that machine's agent       (machine lease)
    events/<machine>/<id>      one event (events.py)   that machine's event recorder (events lease)

Every engine write also compares the leader key, so a deposed leader writes nothing. A machine's
one lease carries its presence, its unit states and its leadership: they vanish together.
ARCHITECTURE.md has the full table.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "/_coreos.com/fleet/"


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/") or not self.prefix.endswith("/"):
            raise ValueError(f"etcd_key_prefix must start and end with '/', not {self.prefix!r}")

    def _key(self, *parts: str) -> bytes:
        return (self.prefix + "/".join(parts)).encode()

    # prefixes for ranged reads and watches
    @property
    def units(self) -> bytes:
        return self._key("unit", "")

    @property
    def jobs(self) -> bytes:
        return self._key("job", "")

    @property
    def placements(self) -> bytes:
        return self._key("placement", "")

    @property
    def assignments(self) -> bytes:
        return self._key("assigned", "")

    def assigned_to(self, machine: str) -> bytes:
        return self._key("assigned", machine, "")

    @property
    def reasons(self) -> bytes:
        return self._key("reason", "")

    @property
    def machines(self) -> bytes:
        return self._key("machine", "")

    @property
    def members(self) -> bytes:
        return self._key("member", "")

    def member(self, machine: str) -> bytes:
        return self._key("member", machine)

    @property
    def metadata(self) -> bytes:
        return self._key("metadata", "")

    def machine_metadata(self, machine: str, key: str) -> bytes:
        return self._key("metadata", machine, key)

    @property
    def states(self) -> bytes:
        return self._key("state", "")

    @property
    def drains(self) -> bytes:
        return self._key("drain", "")

    def drain(self, machine: str) -> bytes:
        return self._key("drain", machine)

    # single keys
    def unit_body(self, unit_hash: str) -> bytes:
        return self._key("unit", unit_hash)

    def job(self, unit: str) -> bytes:
        return self._key("job", unit)

    def placement(self, unit: str) -> bytes:
        return self._key("placement", unit)

    def assignment(self, machine: str, unit: str) -> bytes:
        return self._key("assigned", machine, unit)

    def reason(self, unit: str) -> bytes:
        return self._key("reason", unit)

    def machine(self, machine: str) -> bytes:
        return self._key("machine", machine)

    def state(self, unit: str, machine: str) -> bytes:
        return self._key("state", unit, machine)

    @property
    def events(self) -> bytes:
        return self._key("events", "")

    def events_of(self, machine: str) -> bytes:
        return self._key("events", machine, "")

    def event(self, machine: str, event_id: str) -> bytes:
        return self._key("events", machine, event_id)

    @property
    def peer_key(self) -> bytes:
        return self._key("cluster", "peer-key")

    @property
    def leader(self) -> bytes:
        return self._key("engine", "leader")

    def name_under(self, prefix: bytes, key: bytes) -> str:
        """The part of `key` after `prefix` (a unit name, a machine id, or `unit/machine`)."""
        return key[len(prefix) :].decode()
