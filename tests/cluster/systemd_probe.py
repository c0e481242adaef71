"""Drives fleetd.systemd against a lab machine's real systemd; runs inside the machine.

    python3 systemd_probe.py COMMAND ARGS...

Prints one JSON object: {"result": ..., "calls": {method: count}} and exits 0, or
{"error": ..., "error_name": ..., "calls": ...} and exits 1 on a SystemdError. `calls` counts the
D-Bus method calls the command made after connecting. `watch` prints one JSON line per state it
is given ({"unit", "state", "time"}) before its final object.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from fleetd.systemd import Systemd, SystemdError, UnitState, unit_name, unit_path

Command = Callable[[Systemd, argparse.Namespace], Awaitable[Any]]


def emit(value: dict[str, Any]) -> None:
    print(json.dumps(value), flush=True)


def state_json(state: UnitState) -> dict[str, str]:
    return dataclasses.asdict(state)


async def link(systemd: Systemd, args: argparse.Namespace) -> None:
    await systemd.link_unit_files(args.units)


async def enable(systemd: Systemd, args: argparse.Namespace) -> None:
    await systemd.enable_unit_files(args.units)


async def disable(systemd: Systemd, args: argparse.Namespace) -> None:
    await systemd.disable_unit_files(args.units)


async def reload(systemd: Systemd, args: argparse.Namespace) -> None:
    await systemd.reload()


async def start(systemd: Systemd, args: argparse.Namespace) -> None:
    await systemd.start_unit(args.unit)


async def stop(systemd: Systemd, args: argparse.Namespace) -> dict[str, Any]:
    """Stop, then read the state at once: what a caller of stop_unit sees when it returns."""
    began = time.monotonic()
    await systemd.stop_unit(args.unit, timeout=args.timeout)
    elapsed = time.monotonic() - began
    states = await systemd.unit_states([args.unit])
    return {"elapsed": elapsed, "state": state_json(states[args.unit])}


async def kill(systemd: Systemd, args: argparse.Namespace) -> None:
    await systemd.kill_unit(args.unit, args.signal)


async def reset_failed(systemd: Systemd, args: argparse.Namespace) -> None:
    await systemd.reset_failed_unit(args.unit)


async def states(systemd: Systemd, args: argparse.Namespace) -> dict[str, Any]:
    found = await systemd.unit_states(args.units)
    return {name: state_json(state) for name, state in found.items()}


async def watch(systemd: Systemd, args: argparse.Namespace) -> int:
    """Print each (unit, state) watch_states yields, until `count` of them or `seconds` passed."""
    seen = 0
    try:
        async with asyncio.timeout(args.seconds):
            async for name, state in systemd.watch_states(lambda: args.units):
                emit({"unit": name, "state": state_json(state), "time": time.time()})
                seen += 1
                if seen == args.count:
                    break
    except TimeoutError:
        pass
    return seen


async def paths(systemd: Systemd, args: argparse.Namespace) -> dict[str, Any]:
    """Object paths as this module escapes them, and the names read back from them."""
    return {
        name: {"path": unit_path(name), "back": unit_name(unit_path(name))} for name in args.units
    }


def count_calls(systemd: Systemd) -> Counter[str]:
    """Count the D-Bus method calls the command makes (instrumentation, not a fake)."""
    calls: Counter[str] = Counter()
    call = systemd._call

    async def counted(member: str, *args: Any, **kwargs: Any) -> Any:
        calls[member] += 1
        return await call(member, *args, **kwargs)

    systemd._call = counted  # type: ignore[method-assign]
    return calls


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(description=__doc__)
    commands = top.add_subparsers(required=True)
    for name, command in [("link", link), ("enable", enable), ("disable", disable)]:
        sub = commands.add_parser(name)
        sub.add_argument("units", nargs="+")
        sub.set_defaults(command=command)
    for name, command in [("states", states), ("paths", paths)]:
        sub = commands.add_parser(name)
        sub.add_argument("units", nargs="*")
        sub.set_defaults(command=command)
    for name, command in [("start", start), ("reset-failed", reset_failed)]:
        sub = commands.add_parser(name)
        sub.add_argument("unit")
        sub.set_defaults(command=command)
    commands.add_parser("reload").set_defaults(command=reload)
    sub = commands.add_parser("stop")
    sub.add_argument("unit")
    sub.add_argument("--timeout", type=float, default=30.0)
    sub.set_defaults(command=stop)
    sub = commands.add_parser("kill")
    sub.add_argument("unit")
    sub.add_argument("--signal", type=int, default=9)
    sub.set_defaults(command=kill)
    sub = commands.add_parser("watch")
    sub.add_argument("units", nargs="+")
    sub.add_argument("--count", type=int, default=0, help="stop after this many states (0: never)")
    sub.add_argument("--seconds", type=float, default=30.0)
    sub.set_defaults(command=watch)
    return top


async def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    command: Command = args.command
    async with await Systemd.connect() as systemd:
        calls = count_calls(systemd)
        try:
            result = await command(systemd, args)
        except SystemdError as error:
            emit({"error": str(error), "error_name": error.error_name, "calls": calls})
            return 1
    emit({"result": result, "calls": calls})
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
