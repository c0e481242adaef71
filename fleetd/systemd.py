"""The only module of fleetd that talks to systemd: D-Bus calls to PID 1's manager (dbus-fast).

Every call goes to the manager object on the system bus and every failure comes out as a
`SystemdError`. A unit that systemd does not know is an answer (load state "not-found"), not an
error.

Signals: `Systemd.connect` adds two match rules (the manager's own signals, and PropertiesChanged
of the Unit interface on unit objects) and calls Manager.Subscribe, without which systemd emits no
unit or job signals at all. One message handler fans the matching signals out to a queue per
listener: `stop_unit` waits on its job's JobRemoved, `watch_states` turns them into unit states.

Only signals sent by systemd itself count. Match rules filter broadcasts, but any client on the
bus may send a signal addressed to fleetd's connection, with systemd's path and interface; the
bus daemon delivers it whatever the rules say, and only the sender field (which the daemon sets,
so it cannot be forged) tells it apart. The handler therefore drops every signal whose sender is
not the unique name that owns org.freedesktop.systemd1: asked with GetNameOwner at connect, and
followed through the bus daemon's NameOwnerChanged when systemd re-executes and reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from dbus_fast import BusType, DBusFastError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

log = logging.getLogger(__name__)

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_INTERFACE = "org.freedesktop.systemd1.Manager"
UNIT_INTERFACE = "org.freedesktop.systemd1.Unit"
PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"
UNIT_PATH_PREFIX = "/org/freedesktop/systemd1/unit/"

NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
NO_SUCH_PROCESS = "org.freedesktop.systemd1.NoSuchProcess"
FILE_NOT_FOUND = "org.freedesktop.DBus.Error.FileNotFound"

# Where a method call goes: systemd's manager object, or (for AddMatch) the bus daemon itself.
MANAGER = {"destination": SYSTEMD, "path": MANAGER_PATH, "interface": MANAGER_INTERFACE}
BUS_DAEMON_NAME = "org.freedesktop.DBus"  # the sender of the bus daemon's own signals
BUS_DAEMON = {
    "destination": BUS_DAEMON_NAME,
    "path": "/org/freedesktop/DBus",
    "interface": BUS_DAEMON_NAME,
}
# The manager signals this module listens to (of many: JobNew, UnitFilesChanged, ...).
MANAGER_SIGNALS = frozenset({"JobRemoved", "UnitNew", "UnitRemoved", "Reloading"})
OWNER_RULE = (
    f"type='signal',sender='{BUS_DAEMON_NAME}',interface='{BUS_DAEMON_NAME}',"
    f"member='NameOwnerChanged',arg0='{SYSTEMD}'"
)
MATCH_RULES = (
    f"type='signal',sender='{SYSTEMD}',path='{MANAGER_PATH}',interface='{MANAGER_INTERFACE}'",
    f"type='signal',sender='{SYSTEMD}',interface='{PROPERTIES_INTERFACE}',"
    f"member='PropertiesChanged',arg0='{UNIT_INTERFACE}',path_namespace='{MANAGER_PATH}/unit'",
)


@dataclass(frozen=True)
class UnitState:
    """What systemd says about one unit."""

    load_state: str  # "loaded", "not-found", "masked", "error", ...
    active_state: str  # "active", "inactive", "failed", "activating", "deactivating", ...
    sub_state: str  # type-specific: "running", "dead", "exited", "failed", ...


class SystemdError(Exception):
    """A call to systemd failed. `error_name` is the D-Bus error name when systemd sent one."""

    def __init__(self, message: str, error_name: str | None = None) -> None:
        super().__init__(message)
        self.error_name = error_name


def unit_path(name: str) -> str:
    """The D-Bus object path of a unit, escaped as systemd does: every byte but [A-Za-z0-9] as _xx
    (a leading digit too), so "web-1@a.service" is .../unit/web_2d1_40a_2eservice."""
    label = "".join(
        chr(byte) if _is_plain(byte, first=index == 0) else f"_{byte:02x}"
        for index, byte in enumerate(name.encode())
    )
    return UNIT_PATH_PREFIX + label


def _is_plain(byte: int, first: bool) -> bool:
    char = chr(byte)
    return char.isascii() and (char.isalpha() or (char.isdigit() and not first))


def unit_name(path: str) -> str | None:
    """The unit name of a unit object path; None for a path that is not a unit object."""
    label = path.removeprefix(UNIT_PATH_PREFIX)
    if label == path or not label:
        return None
    decoded = bytearray()
    index = 0
    try:
        while index < len(label):
            if label[index] == "_":
                decoded.append(int(label[index + 1 : index + 3], 16))
                index += 3
            else:
                decoded += label[index].encode()
                index += 1
    except ValueError:
        return None
    return decoded.decode(errors="replace")


@dataclass
class _Watch:
    """What one `watch_states` knows: the states it gave out, the load states it read."""

    given: dict[str, UnitState] = field(default_factory=dict)
    load_states: dict[str, str] = field(default_factory=dict)

    def read(self, states: dict[str, UnitState]) -> list[tuple[str, UnitState]]:
        """Take a full read of the watched units; units no longer watched are forgotten."""
        self.given = {name: state for name, state in self.given.items() if name in states}
        self.load_states = {name: state.load_state for name, state in states.items()}
        return list(states.items())

    def news(self, states: list[tuple[str, UnitState]]) -> list[tuple[str, UnitState]]:
        """The states that differ from the last one given out for their unit."""
        changed = [(name, state) for name, state in states if self.given.get(name) != state]
        self.given.update(changed)
        return changed


class Systemd:
    """A connection to the system manager (PID 1) over the system bus.

    Use `await Systemd.connect()` (or `async with await Systemd.connect() as systemd`); `close`
    ends the connection, after which every listener (`stop_unit`, `watch_states`) raises.
    """

    def __init__(self, bus: MessageBus, call_timeout: float) -> None:
        self._bus = bus
        self._call_timeout = call_timeout
        self._listeners: set[asyncio.Queue[Message | None]] = set()
        self._systemd_name: str | None = None  # the unique bus name systemd has now
        bus.add_message_handler(self._dispatch)
        self._disconnect = asyncio.ensure_future(bus.wait_for_disconnect())
        self._disconnect.add_done_callback(self._on_disconnect)

    @classmethod
    async def connect(cls, call_timeout: float = 60.0) -> Systemd:
        """Connect to the system bus and subscribe to systemd's signals.

        `call_timeout` bounds every method call (a daemon-reload included).
        """
        try:
            bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        except (DBusFastError, OSError, EOFError) as error:
            raise SystemdError(f"cannot connect to the system D-Bus: {error}") from error
        systemd = cls(bus, call_timeout)
        try:
            # Follow the owner first, so that no change of owner falls between asking and
            # following.
            await systemd._call("AddMatch", "s", [OWNER_RULE], route=BUS_DAEMON)
            (systemd._systemd_name,) = await systemd._call(
                "GetNameOwner", "s", [SYSTEMD], route=BUS_DAEMON
            )
            for rule in MATCH_RULES:
                await systemd._call("AddMatch", "s", [rule], route=BUS_DAEMON)
            await systemd._call("Subscribe")
        except SystemdError:
            await systemd.close()
            raise
        return systemd

    @property
    def connected(self) -> bool:
        """False once the D-Bus connection is gone; it is not re-established."""
        return self._bus.connected

    async def close(self) -> None:
        """Disconnect from the bus (systemd drops the subscription with the connection)."""
        if self._bus.connected:
            self._bus.disconnect()
        await asyncio.wait([self._disconnect])

    async def __aenter__(self) -> Systemd:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # --- unit files -------------------------------------------------------------------------

    async def link_unit_files(self, paths: Sequence[str]) -> None:
        """Link unit files (absolute paths) into /run/systemd/system: `linked-runtime`.

        An existing link or file of the same name is replaced (force). Takes effect for units not
        loaded yet at once, for loaded units after `reload`.
        """
        if paths:
            changes = await self._call("LinkUnitFiles", "asbb", [list(paths), True, True])
            log.debug("linked %s: %s", paths, changes[0])

    async def enable_unit_files(self, paths_or_names: Sequence[str]) -> None:
        """Enable units for this boot only (runtime, force): the symlinks their [Install] asks for.

        A unit without an [Install] section is left as it is. Call `reload` afterwards.
        """
        if paths_or_names:
            body = [list(paths_or_names), True, True]
            _, changes = await self._call("EnableUnitFiles", "asbb", body)
            log.debug("enabled %s: %s", paths_or_names, changes)

    async def disable_unit_files(self, names: Sequence[str]) -> None:
        """Remove the runtime symlinks of units: their [Install] links and `link_unit_files` links.

        Call `reload` afterwards. Disabling a unit that is not enabled or linked does nothing.
        """
        if names:
            changes = await self._call("DisableUnitFiles", "asb", [list(names), True])
            log.debug("disabled %s: %s", names, changes[0])

    async def unit_file_state(self, name: str) -> str | None:
        """What systemd's unit files say of `name` ("enabled", "static", "alias", "masked",
        "linked-runtime", "transient", ...), or None when no unit directory has a file of that
        name. A name systemd finds invalid raises SystemdError."""
        try:
            (state,) = await self._call("GetUnitFileState", "s", [name])
        except SystemdError as error:
            if error.error_name in (FILE_NOT_FOUND, NO_SUCH_UNIT):
                return None
            raise
        return str(state)

    async def reload(self) -> None:
        """daemon-reload; returns once systemd has finished reloading (it replies only then)."""
        await self._call("Reload")

    # --- units ------------------------------------------------------------------------------

    async def start_unit(self, name: str) -> None:
        """Queue a start job (mode "replace") and return without waiting for it.

        Raises SystemdError when systemd refuses the job, e.g. for a unit it cannot find.
        """
        await self._call("StartUnit", "ss", [name, "replace"])

    async def stop_unit(self, name: str, timeout: float = 90.0) -> None:
        """Stop a unit (mode "replace") and return once the stop job has finished.

        Raises SystemdError when the job's result is not "done" or it takes longer than `timeout`
        seconds (the job then keeps running in systemd). A unit systemd does not know is stopped.
        """
        with self._signals() as signals:
            try:
                (job,) = await self._call("StopUnit", "ss", [name, "replace"])
            except SystemdError as error:
                if error.error_name == NO_SUCH_UNIT:
                    return
                raise
            result = await self._job_result(signals, job, timeout, f"stopping {name}")
        if result != "done":
            raise SystemdError(
                f"stopping {name} ended with job result {result!r};"
                f" see `journalctl -u {name}` on this machine"
            )

    async def kill_unit(self, name: str, signal: int = 9) -> None:
        """Send `signal` to every process of the unit (who="all").

        A unit that is not loaded or has no processes is left alone.
        """
        try:
            await self._call("KillUnit", "ssi", [name, "all", signal])
        except SystemdError as error:
            if error.error_name not in (NO_SUCH_UNIT, NO_SUCH_PROCESS):
                raise

    async def reset_failed_unit(self, name: str) -> None:
        """Clear a unit's failed state; a unit that is not failed or not loaded is left alone."""
        try:
            await self._call("ResetFailedUnit", "s", [name])
        except SystemdError as error:
            if error.error_name != NO_SUCH_UNIT:
                raise

    async def unit_states(self, names: Collection[str]) -> dict[str, UnitState]:
        """The state of each named unit, in one ListUnitsByNames call.

        A unit systemd cannot find is in the result with load state "not-found"; a name that is
        not a valid unit name is left out; an alias is answered under the name of its unit.
        """
        if not names:
            return {}
        (units,) = await self._call("ListUnitsByNames", "as", [list(names)])
        return {unit[0]: UnitState(unit[2], unit[3], unit[4]) for unit in units}

    async def watch_states(
        self, names: Callable[[], Collection[str]]
    ) -> AsyncIterator[tuple[str, UnitState]]:
        """Yield (unit name, state) for the units in `names()`: first the current state of each,
        then every change systemd signals, never the same state of a unit twice in a row.

        `names` is called for each signal, so the set of watched units can change while watching.
        Active and sub states come from the units' PropertiesChanged signals (systemd emits them
        only for units in memory); the load state is read once per unit and again after every
        daemon-reload, which is when it can change. Raises SystemdError when the connection is lost.
        """
        watch = _Watch()
        with self._signals() as signals:
            states = watch.read(await self.unit_states(list(names())))
            while True:
                for name, state in watch.news(states):
                    yield name, state
                message = await self._next_signal(signals)
                states = await self._states_after(message, names, watch)

    # --- signals ----------------------------------------------------------------------------

    async def _states_after(
        self, message: Message, names: Callable[[], Collection[str]], watch: _Watch
    ) -> list[tuple[str, UnitState]]:
        """The unit states one signal tells of, for the units in `names()`."""
        if message.member == "PropertiesChanged":
            name = unit_name(message.path)
            if name is None or name not in names():
                return []
            changed = message.body[1]
            return [(name, await self._state_from_properties(name, changed, watch.load_states))]
        if message.member in ("UnitNew", "UnitRemoved"):
            # Any client's query loads and unloads an inactive unit (UnitNew + UnitRemoved, no
            # PropertiesChanged); reading the state here would load it again, in an endless loop.
            # Only forget the load state, so that the next PropertiesChanged reads it afresh.
            watch.load_states.pop(message.body[0], None)
            return []
        if message.member == "Reloading" and not message.body[0]:
            return watch.read(await self.unit_states(list(names())))
        return []

    async def _state_from_properties(
        self, name: str, changed: dict[str, Variant], load_states: dict[str, str]
    ) -> UnitState:
        """A unit's state from its PropertiesChanged, which never carries LoadState."""
        active, sub = changed.get("ActiveState"), changed.get("SubState")
        # A unit read while it had no file yet is "not-found"; linking its file and starting it
        # loads it without a daemon-reload, and no signal says so: read it again.
        if active is None or sub is None or load_states.get(name, "not-found") == "not-found":
            state = (await self.unit_states([name]))[name]
            load_states[name] = state.load_state
            if active is None or sub is None:
                return state
        return UnitState(load_states[name], active.value, sub.value)

    async def _job_result(
        self, signals: asyncio.Queue[Message | None], job: str, timeout: float, what: str
    ) -> str:
        """Wait for the JobRemoved of `job`; its result ("done", "failed", "canceled", ...)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = await self._next_signal(signals)
                    if message.member == "JobRemoved" and message.body[1] == job:
                        return str(message.body[3])
        except TimeoutError as error:
            raise SystemdError(f"{what}: job {job} did not finish within {timeout} s") from error

    @contextlib.contextmanager
    def _signals(self) -> Iterator[asyncio.Queue[Message | None]]:
        """A queue that receives every signal from now until the block ends."""
        if not self._bus.connected:
            raise SystemdError("not connected to systemd: the D-Bus connection is closed")
        queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            yield queue
        finally:
            self._listeners.discard(queue)

    async def _next_signal(self, signals: asyncio.Queue[Message | None]) -> Message:
        message = await signals.get()
        if message is None:
            raise SystemdError("the D-Bus connection to systemd was closed or lost")
        return message

    def _dispatch(self, message: Message) -> None:
        """dbus-fast's handler for every incoming message: hand systemd's signals on, and only
        those that systemd sent."""
        if message.message_type != MessageType.SIGNAL:
            return
        if message.sender == BUS_DAEMON_NAME and message.member == "NameOwnerChanged":
            self._follow_owner(message)
            return
        if message.sender is None or message.sender != self._systemd_name:
            if message.interface in (MANAGER_INTERFACE, PROPERTIES_INTERFACE):
                log.debug("ignoring a %s signal from %s", message.member, message.sender)
            return
        wanted = (message.interface == MANAGER_INTERFACE and message.member in MANAGER_SIGNALS) or (
            message.interface == PROPERTIES_INTERFACE and message.body[0] == UNIT_INTERFACE
        )
        if wanted:
            for queue in self._listeners:
                queue.put_nowait(message)

    def _follow_owner(self, message: Message) -> None:
        """NameOwnerChanged(name, old owner, new owner): systemd re-executed (or left)."""
        name, _, new_owner = message.body
        if name == SYSTEMD and new_owner != self._systemd_name:
            log.info("systemd's bus name is now %s (was %s)", new_owner or "-", self._systemd_name)
            self._systemd_name = new_owner or None

    def _on_disconnect(self, task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.warning("D-Bus connection to systemd lost: %r", task.exception())
        for queue in self._listeners:
            queue.put_nowait(None)

    # --- calls ------------------------------------------------------------------------------

    async def _call(
        self,
        member: str,
        signature: str = "",
        body: Sequence[Any] = (),
        route: Mapping[str, str] = MANAGER,
    ) -> list[Any]:
        """Call a method of systemd's manager (or of another `route`); the reply's body."""
        what = f"{member}({', '.join(map(repr, body))})"
        if not self._bus.connected:
            raise SystemdError(f"{what}: not connected to systemd (the D-Bus connection is closed)")
        message = Message(**route, member=member, signature=signature, body=list(body))
        try:
            async with asyncio.timeout(self._call_timeout):
                reply = await self._bus.call(message)
        except TimeoutError as error:
            raise SystemdError(f"{what}: no reply within {self._call_timeout} s") from error
        except (DBusFastError, OSError, EOFError) as error:
            raise SystemdError(f"{what}: D-Bus connection failed: {error}") from error
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body else "no message"
            raise SystemdError(f"{what} failed: {text} ({reply.error_name})", reply.error_name)
        return list(reply.body)
