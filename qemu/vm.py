"""One QEMU virtual machine: started, reached over SSH, stopped, always cleaned up.

The only module that starts QEMU. The golden image is never written: each run boots a qcow2
overlay in its own run directory, which goes away with the VM (the console log is kept).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from qemu.qmp.legacy import QEMUMonitorProtocol

from flotilla.process import CommandError, run

from .command import RunFiles, VmConfig, parse_host_forwards, qemu_argv
from .rundir import RunDirError, claim_run_dir

SSH_OPTIONS = [
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "BatchMode=yes",
    "-o", "LogLevel=ERROR",
    "-o", "ConnectTimeout=5",
    # A guest that rebooted under a session never closes it: QEMU's user network keeps the
    # host side open, and without keepalives ssh waited minutes (a command that reboots the
    # guest took 4-5 minutes to return). 30 s of silence is long enough for a starved guest.
    "-o", "ServerAliveInterval=5",
    "-o", "ServerAliveCountMax=6",
]  # fmt: skip


class VmError(RuntimeError):
    """QEMU failed, or the guest did not do what was waited for."""


class Vm:
    """`with Vm(config, run_dir) as vm:` boots; leaving the block stops QEMU and cleans up."""

    def __init__(self, config: VmConfig, run_dir: Path, identity: Path | None = None) -> None:
        self.config = config
        self.files = RunFiles(run_dir)
        self.identity = identity  # private key for ssh(); the public half went in with -a
        self.process: subprocess.Popen[bytes] | None = None
        self.ports: dict[int, int] = {}
        self.started_at = 0.0
        self.command: list[str] = []

    def __enter__(self) -> Vm:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # lifecycle

    def start(self) -> None:
        prepare_run_dir(self.config, self.files)
        argv = self.command = qemu_argv(self.config, self.files)
        self.started_at = time.monotonic()
        # QEMU's stdout/stderr go to a file in the run dir: its own errors, not the guest's.
        with open(self.files.directory / "qemu.log", "wb") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        try:
            self.ports = self._read_forwards()
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10) -> None:
        """Ask QEMU to quit (the guest is not shut down: the overlay is thrown away anyway)."""
        if self.process and self.process.poll() is None:
            # a monitor that does not answer: SIGKILL below
            with contextlib.suppress(Exception):
                monitor_command(self.files, "quit")
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        cleanup_run_dir(self.files)

    # state

    @property
    def ssh_port(self) -> int:
        return self.ports[22]

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def console_text(self) -> str:
        try:
            return self.files.console.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def qemu_log(self) -> str:
        path = self.files.directory / "qemu.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # guest access

    def ssh_argv(self, user: str = "core") -> list[str]:
        return ssh_command(self.ssh_port, self.identity, user)

    def ssh(self, command: str, *, check: bool = True, timeout: float = 120) -> str:
        """Run a shell command as core in the guest; return its stdout."""
        try:
            result = run([*self.ssh_argv(), command], check=check, timeout=timeout)
        except subprocess.TimeoutExpired as error:
            raise VmError(f"{self.config.name}: `{command}` took over {timeout}s") from error
        return result.stdout

    def wait_for_ssh(self, timeout: float = 180) -> float:
        """Block until the guest's sshd answers (and, with an identity, runs a command as core);
        return seconds since QEMU started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise VmError(f"{self.config.name}: QEMU exited\n{self.qemu_log()}")
            if ssh_banner(self.ssh_port) and self._ssh_works():
                return time.monotonic() - self.started_at
            time.sleep(0.5)
        raise VmError(f"{self.config.name}: no SSH within {timeout}s")

    def _ssh_works(self) -> bool:
        if self.identity is None:
            return True
        try:
            self.ssh("true", timeout=15)
        except (CommandError, VmError):
            return False
        return True

    def boot_id(self) -> str:
        return self.ssh("cat /proc/sys/kernel/random/boot_id").strip()

    def reboot(self, timeout: float = 180) -> float:
        """Reboot the guest and wait for SSH in the new boot; return the seconds it took."""
        before = self.boot_id()
        started = time.monotonic()
        self.ssh("sudo systemctl reboot", check=False, timeout=30)
        deadline = started + timeout
        while time.monotonic() < deadline:
            time.sleep(1)
            try:
                if self.boot_id() != before:
                    return time.monotonic() - started
            except (CommandError, VmError):
                if not self.alive():
                    raise VmError(f"{self.config.name}: QEMU exited during reboot") from None
        raise VmError(f"{self.config.name}: did not come back within {timeout}s of a reboot")

    # internals

    def _read_forwards(self, timeout: float = 30) -> dict[int, int]:
        return read_forwards(self.config.name, self.files, self.alive, self.qemu_log, timeout)


def read_forwards(
    name: str,
    files: RunFiles,
    alive: Callable[[], bool],
    qemu_log: Callable[[], str],
    timeout: float = 30,
) -> dict[int, int]:
    """Ports QEMU bound on 127.0.0.1 (port 0 asks it for a free one), by guest port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise VmError(f"{name}: QEMU exited\n{qemu_log()}")
        if files.qmp.exists():
            text = monitor_command(
                files, "human-monitor-command", **{"command-line": "info usernet"}
            )
            return parse_host_forwards(str(text))
        time.sleep(0.05)
    raise VmError(f"{name}: no QMP socket after {timeout}s")


def monitor_command(files: RunFiles, command: str, **arguments: object) -> object:
    monitor = QEMUMonitorProtocol(str(files.qmp))
    monitor.connect()
    try:
        return monitor.cmd(command, **arguments)
    finally:
        monitor.close()


def launch_detached(config: VmConfig, files: RunFiles, pass_fds: tuple[int, ...] = ()) -> int:
    """Start QEMU as a daemon that outlives this process (a node of a cluster); return its pid.

    -daemonize: QEMU forks once it is set up and the first process exits, so the VM is not our
    child (no zombie to reap after a kill) and errors before that point still reach qemu.log."""
    argv = [*qemu_argv(config, files), "-daemonize"]
    with open(files.directory / "qemu.log", "ab") as log:
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                pass_fds=pass_fds, check=False)  # fmt: skip
    if result.returncode != 0:
        log_text = (files.directory / "qemu.log").read_text(errors="replace")
        raise VmError(f"{config.name}: QEMU failed to start (exit {result.returncode})\n{log_text}")
    return int(files.pid.read_text().strip())


def ssh_command(port: int, identity: Path | None, user: str = "core") -> list[str]:
    identity_args = ["-i", str(identity)] if identity else []
    return ["ssh", *identity_args, *SSH_OPTIONS, "-p", str(port), f"{user}@127.0.0.1"]


def ssh_banner(port: int) -> bool:
    """Whether an SSH server greets on 127.0.0.1:port. QEMU accepts the TCP connection itself
    and closes it when the guest does not answer, so only the banner tells."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            return connection.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def prepare_run_dir(config: VmConfig, files: RunFiles) -> None:
    try:
        claim_run_dir(files.directory)
    except RunDirError as error:
        raise VmError(str(error)) from error
    for stale in (files.qmp, files.overlay, files.pid, files.console):
        stale.unlink(missing_ok=True)
    create_overlay(config.image, files.overlay, config.disk_size)
    if not config.direct_kernel:
        shutil.copyfile(config.firmware_vars, files.vars)
    if config.user_data:
        fill_config_drive(config.user_data, files)


def create_overlay(image: Path, overlay: Path, size: str | None = None) -> None:
    """A throw-away qcow2 over the image: the image itself is never written."""
    grow = [size] if size else []
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image.resolve(),
         "-o", "lazy_refcounts=on", overlay, *grow])  # fmt: skip


def fill_config_drive(user_data: Path, files: RunFiles) -> None:
    """The config-2 share's content, where coreos-cloudinit's dialect looks for user-data."""
    target = files.config_drive / "openstack/latest/user_data"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(user_data, target)


def cleanup_run_dir(files: RunFiles) -> None:
    """Remove what the run made, except the console and QEMU logs."""
    for path in (files.overlay, files.vars, files.qmp, files.pid):
        path.unlink(missing_ok=True)
    if files.config_drive.exists():
        shutil.rmtree(files.config_drive)
