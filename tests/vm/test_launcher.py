"""`flotilla-qemu` as a user runs it: options, the printed ssh command, loopback-only forwards,
an untouched image, exit statuses, and what is left after it stops."""

from __future__ import annotations

import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.process import run
from imagebuild.image import Artifacts
from qemu.vm import SSH_OPTIONS

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / ".venv/bin/flotilla-qemu"
RUN_ROOT = Path("/var/tmp/flotilla-qemu")

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]


def launch(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [LAUNCHER, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def read_until(process: subprocess.Popen[str], pattern: str, timeout: float) -> list[str]:
    """stdout lines up to and including the first matching `pattern` (a reader thread, so a
    silent launcher cannot block the test past `timeout`)."""
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stdout], daemon=True
    ).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            seen.append(lines.get(timeout=left))
        except queue.Empty:
            break
        if re.search(pattern, seen[-1]):
            return seen
    raise AssertionError(f"no {pattern!r} within {timeout}s in {seen}")


def test_options_that_cannot_go_together_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "user-data"
    config.write_text("#cloud-config\n")
    result = subprocess.run(
        [LAUNCHER, "-u", config, "-c", config], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "both make the config drive" in result.stderr
    missing = subprocess.run(
        [LAUNCHER, "-I", tmp_path / "nope.qcow2"], capture_output=True, text=True, check=False
    )
    assert missing.returncode == 2
    assert "no disk image at" in missing.stderr


@pytest.fixture
def name() -> Iterator[str]:
    """A VM name; its run directory (the logs the launcher keeps) goes after the test."""
    name = f"cli{os.getpid()}{secrets.token_hex(2)}"
    yield name
    shutil.rmtree(RUN_ROOT / name, ignore_errors=True)


def test_boots_waits_for_ssh_and_leaves_only_logs(
    image: Artifacts, ssh_key: Path, name: str
) -> None:
    before = image.qcow2.stat().st_mtime_ns, image.qcow2.stat().st_size
    process = launch(
        "-K", image.kernel, "-r", image.initrd, "-a", ssh_key.with_suffix(".pub"),
        "-f", "0:8080", "--wait", "--name", name,
    )  # fmt: skip
    try:
        lines = read_until(process, r"ssh answers after", timeout=240)
        text = "".join(lines)
        port = int(re.search(r"ssh -p (\d+) core@127\.0\.0\.1", text)[1])
        forward = int(re.search(r"forward  127\.0\.0\.1:(\d+) -> 8080", text)[1])
        listening = run(["ss", "--listening", "--numeric", "--tcp", "--no-header"]).stdout
        for bound in (port, forward):
            local = [line.split()[3] for line in listening.splitlines() if f":{bound} " in line]
            assert local == [f"127.0.0.1:{bound}"]
        ssh = ["ssh", "-i", ssh_key, *SSH_OPTIONS, "-p", str(port), "core@127.0.0.1"]
        assert run([*ssh, "cat /etc/os-release"]).stdout.count("ID=flotilla") == 1
        # The serial console is /dev/console: the login prompt (with /etc/issue) reaches the log.
        console = RUN_ROOT / name / "console.log"
        deadline = time.monotonic() + 30
        while "Flotilla" not in console.read_text(errors="replace"):
            assert time.monotonic() < deadline, "no login prompt on the serial console"
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGTERM)
        status = process.wait(60)
    assert status == 0
    left = sorted(p.name for p in (RUN_ROOT / name).iterdir())
    assert left == ["console.log", "qemu.log"]
    assert (image.qcow2.stat().st_mtime_ns, image.qcow2.stat().st_size) == before


def test_a_guest_that_never_answers_exits_3(image: Artifacts, ssh_key: Path, name: str) -> None:
    # A kernel command line with no root: the guest can never come up.
    result = subprocess.run(
        [
            LAUNCHER, "-K", image.kernel, "-r", image.initrd, "--append", "console=ttyS0 panic=-1",
            "-a", ssh_key.with_suffix(".pub"), "--wait", "--wait-timeout", "8", "--name", name,
        ],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "no SSH within 8" in result.stderr
