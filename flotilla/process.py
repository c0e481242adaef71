"""The one place where host tools are run.

Every external command goes through `run` (argv as a list, explicit environment, stdin from
/dev/null) so failures always name the command, its exit status and the tail of its stderr.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


class CommandError(RuntimeError):
    """An external command failed; carries what a user needs to see why."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        message = f"`{shlex.join(self.argv)}` failed with exit status {returncode}"
        super().__init__(f"{message}: {tail}" if tail else message)


def command_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment: nothing is inherited from the caller by accident."""
    env = dict(BASE_ENV)
    if "TERM" in os.environ:
        env["TERM"] = os.environ["TERM"]
    env.update(extra or {})
    return env


def run(
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    check: bool = True,
    capture: bool = True,
    interactive: bool = False,
    cwd: Path | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv to completion; raise CommandError on a non-zero exit when `check`.

    `interactive` hands the caller's terminal (stdin, stdout, stderr) to the command.
    """
    capture = capture and not interactive
    args = [os.fspath(a) for a in argv]
    log.debug("+ %s", shlex.join(args))
    try:
        result = subprocess.run(
            args,
            env=command_env(env),
            input=input,
            stdin=None if input is not None or interactive else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            text=True,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as error:
        raise CommandError(args, 127, f"{args[0]}: command not found") from error
    if check and result.returncode != 0:
        raise CommandError(args, result.returncode, result.stderr or "")
    return result


def output(argv: Sequence[str | Path], **kwargs: object) -> str:
    """Run argv and return its standard output."""
    return run(argv, **kwargs).stdout  # type: ignore[arg-type]


def spawn_detached(argv: Sequence[str | Path], *, cgroup: Path, log_file: Path) -> None:
    """Start argv in a session of its own, already inside `cgroup`, owned by init.

    The process is moved into the cgroup before it execs, so it (and everything it forks) can be
    found and killed through the cgroup; `setsid --fork` reparents it to init, so no caller ever
    has to reap it and a crashed caller leaves no zombie.
    """
    script = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
    args = ["setsid", "--fork", "sh", "-c", script, os.fspath(cgroup), *map(os.fspath, argv)]
    log.debug("+ %s &", shlex.join(args))
    with open(log_file, "ab") as out:
        subprocess.run(
            args, env=command_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=True
        )
    # setsid returns before its child has joined the cgroup; callers check the cgroup next.
    procs = cgroup / "cgroup.procs"
    deadline = time.monotonic() + 5
    while not procs.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.005)
