"""`flotilla-qemu`: boot the image in one QEMU VM, with the flags of Flatcar's
flatcar_production_qemu.sh (-i -u -c -a -d -D -p -f -I -M -K -r -s -v -R -W) and more."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import click

from flotilla.process import CommandError, run
from flotilla.steps import waiting
from flotilla.tool import HELP_OPTIONS, echo_json, output_option, version_option

from .command import DEFAULT_IMAGE_DIR, OVMF_CODE, OVMF_VARS, ConfigError, Forward, VmConfig
from .rundir import RunDirError, claim_run_dir
from .summary import VmSummary, summary_document, summary_lines
from .vm import Vm, VmError

DEFAULT_IMAGE = DEFAULT_IMAGE_DIR / "flotilla.qcow2"
RUN_ROOT = Path("/var/tmp/flotilla-qemu")
EXIT_QEMU_FAILED = 1
EXIT_GUEST_FAILED = 3
FILE = click.Path(path_type=Path, exists=True, dir_okay=False)


def parse_forward(_: object, __: object, values: tuple[str, ...]) -> tuple[Forward, ...]:
    forwards = []
    for value in values:
        host, _, guest = value.partition(":")
        if not (host.isdigit() and guest.isdigit()):
            raise click.BadParameter(f"{value!r} is not HOST:GUEST (HOST 0 picks a free port)")
        forwards.append(Forward(int(host), int(guest)))
    return tuple(forwards)


@click.command(context_settings=HELP_OPTIONS)
@version_option("flotilla-qemu")
@click.option(
    "-i",
    "--ignition-config",
    "ignition",
    type=FILE,
    help="Ignition config, passed as fw_cfg opt/com.coreos/config.",
)
@click.option("-u", "--user-data", type=FILE, help="cloud-config or script, on a config-2 drive.")
@click.option("-c", "--config-drive", type=FILE, help="A ready config drive image (ISO or FAT).")
@click.option(
    "-a",
    "--authorized-keys",
    type=FILE,
    help="SSH public keys for the core user [default: ssh-add -L and ~/.ssh/id_*.pub].",
)
@click.option(
    "-d",
    "--disk",
    "disks",
    multiple=True,
    metavar="DISK[,OPTS]",
    help="Extra virtio disk (repeatable); OPTS go to its virtio-blk-pci device.",
)
@click.option(
    "-D", "--image-disk-opts", default="", help="Extra virtio-blk-pci options, main disk."
)
@click.option(
    "-p",
    "--ssh-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Host port for the guest's SSH on 127.0.0.1; 0 picks a free one.",
)
@click.option(
    "-f",
    "--forward-port",
    "forwards",
    multiple=True,
    callback=parse_forward,
    metavar="HOST:GUEST",
    help="Extra TCP forward from 127.0.0.1 (repeatable).",
)
@click.option(
    "-I",
    "--image-file",
    "image",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_IMAGE,
    show_default=True,
    help="Disk image (never modified).",
)
@click.option("-M", "--memory", type=int, default=2048, show_default=True, help="Memory, MiB.")
@click.option("-K", "--kernel-file", "kernel", type=FILE, help="Boot this kernel directly.")
@click.option("-r", "--initrd-file", "initrd", type=FILE, help="Initramfs for -K.")
@click.option("--append", help="Kernel command line for -K [default: the .cmdline next to it].")
@click.option(
    "-s",
    "--safe",
    is_flag=True,
    help="Safe settings (Flatcar's -s): TCG and the default CPU, which is already the default.",
)
@click.option("-v", "--verbose", is_flag=True, help="Print the QEMU command line.")
@click.option(
    "-R", "--pflash-ro", type=FILE, default=OVMF_CODE, show_default=True, help="UEFI firmware code."
)
@click.option(
    "-W",
    "--pflash-rw",
    type=FILE,
    default=OVMF_VARS,
    show_default=True,
    help="UEFI variables template (copied per run).",
)
@click.option("--kvm", is_flag=True, help="Use KVM (hangs on some hosts; TCG is the default).")
@click.option("--cpus", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option("--name", default="flotilla", show_default=True, help="VM name (and run dir).")
@click.option("--disk-size", help="Grow the run's disk to this size (e.g. 20G); ROOT follows.")
@click.option("--wait", is_flag=True, help="Wait until SSH answers and print how long it took.")
@click.option("--wait-timeout", type=float, default=300, show_default=True)
@output_option("text")
@click.option(
    "--outbound",
    is_flag=True,
    help="Let the guest reach networks beyond the host (off: forwards only).",
)
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help=f"Overlay, console log, QMP socket [default: {RUN_ROOT}/NAME].",
)
@click.argument("qemu_args", nargs=-1, type=click.UNPROCESSED)
def main(**options: object) -> None:
    """Boot the Flotilla image in QEMU. Arguments after `--` go to QEMU unchanged."""
    try:
        config, run_dir = make_config(options)
        sys.exit(
            run_vm(
                config,
                run_dir,
                bool(options["wait"]),
                float(options["wait_timeout"]),
                bool(options["verbose"]),
                options["output"] == "json",
            )
        )
    except (ConfigError, VmError, CommandError) as error:
        click.echo(f"flotilla-qemu: {error}", err=True)
        sys.exit(EXIT_QEMU_FAILED if not isinstance(error, ConfigError) else 2)


def make_config(options: dict) -> tuple[VmConfig, Path]:
    image: Path = options["image"]
    if not image.is_file():
        raise ConfigError(f"no disk image at {image}: run `imagebuild build` or pass -I FILE")
    name = str(options["name"])
    run_dir = options["run_dir"] or RUN_ROOT / name
    try:
        claim_run_dir(run_dir)
    except RunDirError as error:
        raise ConfigError(str(error)) from error
    check_not_running(run_dir, name)
    keys = options["authorized_keys"]
    if not (keys or options["user_data"] or options["config_drive"]):
        keys = collect_default_keys(run_dir)
    append = options["append"]
    kernel = options["kernel"]
    if kernel and append is None:
        cmdline = kernel.with_suffix(".cmdline")
        if not cmdline.is_file():
            raise ConfigError(f"-K {kernel}: pass --append (no {cmdline.name} next to the kernel)")
        append = cmdline.read_text().strip()
    config = VmConfig(
        image=image,
        name=name,
        memory_mib=int(options["memory"]),
        cpus=int(options["cpus"]),
        kvm=bool(options["kvm"]),
        safe=bool(options["safe"]),
        kernel=kernel,
        initrd=options["initrd"],
        append=append,
        firmware_code=options["pflash_ro"],
        firmware_vars=options["pflash_rw"],
        ssh_port=int(options["ssh_port"]),
        forwards=options["forwards"],
        ignition=options["ignition"],
        user_data=options["user_data"],
        config_drive=options["config_drive"],
        authorized_keys=keys,
        disks=tuple(options["disks"]),
        disk_options=str(options["image_disk_opts"]),
        disk_size=options["disk_size"],
        outbound=bool(options["outbound"]),
        extra_args=tuple(options["qemu_args"]),
    )
    return config, run_dir


def check_not_running(run_dir: Path, name: str) -> None:
    pid_file = run_dir / "qemu.pid"
    try:
        pid = int(pid_file.read_text().strip())
        Path(f"/proc/{pid}").stat()
    except (OSError, ValueError):
        return
    raise ConfigError(f"a VM named {name!r} is already running (QEMU pid {pid}); pick --name")


def collect_default_keys(run_dir: Path) -> Path | None:
    """Like Flatcar's launcher: the agent's keys plus ~/.ssh/id_*.pub."""
    agent = os.environ.get("SSH_AUTH_SOCK")
    keys = run(["ssh-add", "-L"], env={"SSH_AUTH_SOCK": agent}, check=False).stdout if agent else ""
    keys = "".join(line + "\n" for line in keys.splitlines() if line.startswith(("ssh-", "ecdsa-")))
    for public in sorted(Path.home().glob(".ssh/id_*.pub")):
        keys += public.read_text()
    if not keys:
        click.echo(
            "flotilla-qemu: no SSH keys found (ssh-add -L, ~/.ssh/id_*.pub); pass -a FILE", err=True
        )
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "authorized_keys"
    path.write_text(keys)
    return path


def run_vm(
    config: VmConfig,
    run_dir: Path,
    wait: bool,
    wait_timeout: float,
    verbose: bool,
    as_json: bool = False,
) -> int:
    """Boot, describe (once SSH answers, with --wait), then stay until QEMU ends or a signal.
    As JSON, stdout carries only the one document; the spinner and errors go to stderr."""
    vm = Vm(config, run_dir)
    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with vm:
        summary = summarize(vm)
        if not as_json:
            click.echo("\n".join(summary_lines(summary, verbose)))
            sys.stdout.flush()
        seconds = None
        if wait:
            try:
                with waiting(f"{config.name}: waiting for SSH on 127.0.0.1:{vm.ssh_port}"):
                    seconds = vm.wait_for_ssh(wait_timeout)
            except VmError as error:
                click.echo(f"flotilla-qemu: {error}; console: {vm.files.console}", err=True)
                return EXIT_GUEST_FAILED
            if not as_json:
                click.echo(f"ssh answers after {seconds:.1f}s")
        if as_json:
            echo_json(summary_document(summary, seconds))
        sys.stdout.flush()
        while not stop and vm.alive():
            time.sleep(0.2)
        status = vm.process.poll() if vm.process else None
    if status not in (None, 0):
        click.echo(f"flotilla-qemu: QEMU exited with status {status}:\n{vm.qemu_log()}", err=True)
        return EXIT_QEMU_FAILED
    return 0


def summarize(vm: Vm) -> VmSummary:
    return VmSummary(
        name=vm.config.name,
        kvm=vm.config.kvm,
        direct_kernel=vm.config.direct_kernel,
        run_dir=vm.files.directory,
        console=vm.files.console,
        qmp=vm.files.qmp,
        pid=vm.process.pid if vm.process else None,
        ports=dict(vm.ports),
        command=tuple(vm.command),
    )
