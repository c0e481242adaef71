"""What a VM is (VmConfig) and the QEMU command line for it (pure).

The choices follow Flatcar's flatcar_production_qemu.sh where it got them right (virtio disk and
NIC, virtio-rng, fw_cfg for Ignition, a 9p config drive) and differ where it did not: TCG unless
KVM is asked for, forwards bound to 127.0.0.1, the console in a file, a QMP socket, a throw-away
overlay instead of the image itself, and no route out of the VM unless asked (restrict=on).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# Where `imagebuild build` writes by default: relative to the current directory, like it.
DEFAULT_IMAGE_DIR = Path("build")
# Debian's Ignition reads only the CoreOS name (Flatcar's reads org.flatcar-linux too).
IGNITION_FW_CFG = "opt/com.coreos/config"
SSH_KEYS_FW_CFG = "opt/org.flotilla/authorized_keys"
CONFIG_DRIVE_TAG = "config-2"
# Where the guest finds the host's services (host_services) on QEMU's user network. Not
# 10.0.2.2: libslirp refuses a guestfwd rule on its own host address, and a restrict=on network
# lets the guest reach only guestfwd rules' address and port.
HOST_SERVICES_ADDRESS = "10.0.2.100"
# A guestfwd command, run by QEMU (sh -c) for each TCP connection from the guest, its stdin and
# stdout being that connection: joined here to the same port on the host's loopback.
_BRIDGE = """
import socket, sys, threading
peer = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def back():
    while data := peer.recv(65536):
        sys.stdout.buffer.write(data); sys.stdout.buffer.flush()
threading.Thread(target=back, daemon=False).start()
while data := sys.stdin.buffer.read1(65536):
    peer.sendall(data)
peer.shutdown(socket.SHUT_WR)
"""
BRIDGE_CODE = base64.b64encode(_BRIDGE.encode()).decode()
# Debian's Ignition runs only when the kernel command line says this is the first boot. A disk
# boot gets it from the image's boot entry (dropped after the first boot); a direct kernel boot
# gets it from here whenever an Ignition config is handed in.
IGNITION_FIRST_BOOT = "ignition.firstboot"


@dataclass(frozen=True)
class Forward:
    host: int  # 0: QEMU picks a free port, read back over QMP
    guest: int


@dataclass(frozen=True)
class PrivateNic:
    """A second NIC on a cluster's private network: a tap device QEMU gets as an open fd."""

    fd: int
    mac: str


@dataclass(frozen=True)
class VmConfig:
    image: Path
    name: str = "flotilla"
    memory_mib: int = 2048
    cpus: int = 2
    kvm: bool = False
    safe: bool = False
    kernel: Path | None = None
    initrd: Path | None = None
    append: str | None = None
    firmware_code: Path = OVMF_CODE
    firmware_vars: Path = OVMF_VARS
    ssh_port: int = 0
    forwards: tuple[Forward, ...] = ()
    # Ports of the host's loopback the guest may reach as 10.0.2.100:PORT even with restrict=on
    # (an update server, say); nothing else of the host or beyond becomes reachable.
    host_services: tuple[int, ...] = ()
    ignition: Path | None = None
    user_data: Path | None = None
    config_drive: Path | None = None
    authorized_keys: Path | None = None
    disks: tuple[str, ...] = ()
    disk_options: str = ""
    disk_size: str | None = None
    outbound: bool = False
    private_nic: PrivateNic | None = None
    extra_args: tuple[str, ...] = field(default=())

    @property
    def direct_kernel(self) -> bool:
        return self.kernel is not None


@dataclass(frozen=True)
class RunFiles:
    """The per-run files, all inside one run directory."""

    directory: Path

    @property
    def overlay(self) -> Path:
        return self.directory / "disk.qcow2"

    @property
    def console(self) -> Path:
        return self.directory / "console.log"

    @property
    def qmp(self) -> Path:
        return self.directory / "qmp.sock"

    @property
    def vars(self) -> Path:
        return self.directory / "efi-vars.fd"

    @property
    def config_drive(self) -> Path:
        return self.directory / "config-drive"

    @property
    def pid(self) -> Path:
        return self.directory / "qemu.pid"


class ConfigError(ValueError):
    """The VM cannot be started as asked; the message says which option is wrong."""


def check_config(config: VmConfig) -> None:
    if config.user_data and config.config_drive:
        raise ConfigError("-u/--user-data and -c/--config-drive both make the config drive")
    if config.initrd and not config.kernel:
        raise ConfigError("-r/--initrd-file needs -K/--kernel-file")
    if config.kvm and config.safe:
        raise ConfigError("-s/--safe means TCG only; it cannot be combined with --kvm")
    for option in config.disk_options.split(","):
        if option.split("=")[0] in ("drive", "bootindex"):
            raise ConfigError(f"-D/--image-disk-opts may not set {option.split('=')[0]}=")
    if config.memory_mib < 256:
        raise ConfigError(f"-M/--memory {config.memory_mib} MiB is too little (256 at least)")


def qemu_argv(config: VmConfig, files: RunFiles) -> list[str]:
    check_config(config)
    argv = ["qemu-system-x86_64", "-name", config.name, "-nodefaults", "-display", "none"]
    argv += machine_args(config)
    argv += ["-m", str(config.memory_mib), "-smp", str(config.cpus)]
    # append=on: a node of a cluster boots again into the same run directory; keep every boot.
    console = f"file,id=console,path={files.console},append=on"
    argv += ["-chardev", console, "-serial", "chardev:console"]
    argv += ["-qmp", f"unix:{files.qmp},server=on,wait=off"]
    argv += ["-pidfile", str(files.pid)]
    argv += ["-object", "rng-random,filename=/dev/urandom,id=rng0"]
    argv += ["-device", "virtio-rng-pci,rng=rng0"]
    argv += boot_args(config, files)
    argv += disk_args(config, files)
    argv += network_args(config)
    argv += provisioning_args(config, files)
    return argv + list(config.extra_args)


def machine_args(config: VmConfig) -> list[str]:
    if config.kvm:
        return ["-machine", "q35,accel=kvm", "-cpu", "host"]
    return ["-machine", "q35,accel=tcg"]


def boot_args(config: VmConfig, files: RunFiles) -> list[str]:
    if config.direct_kernel:
        args = ["-kernel", str(config.kernel)]
        if config.initrd:
            args += ["-initrd", str(config.initrd)]
        append = config.append or ""
        if config.ignition and IGNITION_FIRST_BOOT not in append.split():
            append = f"{append} {IGNITION_FIRST_BOOT}".strip()
        if append:
            args += ["-append", append]
        return args
    return [
        "-drive",
        f"if=pflash,format=raw,unit=0,readonly=on,file={config.firmware_code}",
        "-drive",
        f"if=pflash,format=raw,unit=1,file={files.vars}",
    ]


def disk_args(config: VmConfig, files: RunFiles) -> list[str]:
    device = "virtio-blk-pci,drive=disk0,bootindex=1,serial=primary-disk"
    if config.disk_options:
        device += f",{config.disk_options}"
    args = ["-drive", f"if=none,id=disk0,format=qcow2,file={files.overlay}", "-device", device]
    for index, spec in enumerate(config.disks, start=1):
        path, _, options = spec.partition(",")
        args += ["-drive", f"if=none,id=disk{index},file={path}"]
        args += [
            "-device",
            f"virtio-blk-pci,drive=disk{index}" + (f",{options}" if options else ""),
        ]
    return args


def network_args(config: VmConfig) -> list[str]:
    forwards = [Forward(config.ssh_port, 22), *config.forwards]
    netdev = f"user,id=eth0,hostname={config.name}"
    if not config.outbound:
        netdev += ",restrict=on"  # forwards still work; nothing leaves the host
    netdev += "".join(f",hostfwd=tcp:127.0.0.1:{f.host}-:{f.guest}" for f in forwards)
    netdev += "".join(f",guestfwd={host_service(port)}" for port in config.host_services)
    # romfile=: no iPXE option ROM; the firmware boots from disk faster without it.
    args = ["-netdev", netdev, "-device", "virtio-net-pci,netdev=eth0,romfile="]
    if config.private_nic:
        nic = config.private_nic
        args += ["-netdev", f"tap,id=private,fd={nic.fd},vhost=off"]
        args += ["-device", f"virtio-net-pci,netdev=private,mac={nic.mac},romfile="]
    return args


def host_service(port: int) -> str:
    """A guestfwd rule for 10.0.2.100:PORT -> 127.0.0.1:PORT (commas doubled: QEMU's escape)."""
    command = (
        f"/usr/bin/python3 -c 'import base64; exec(base64.b64decode(\"{BRIDGE_CODE}\"))' {port}"
    )
    return f"tcp:{HOST_SERVICES_ADDRESS}:{port}-cmd:{command}".replace(",", ",,")


def provisioning_args(config: VmConfig, files: RunFiles) -> list[str]:
    args = []
    if config.ignition:
        args += ["-fw_cfg", f"name={IGNITION_FW_CFG},file={config.ignition}"]
    if config.authorized_keys:
        args += ["-fw_cfg", f"name={SSH_KEYS_FW_CFG},file={config.authorized_keys}"]
    if config.user_data:
        args += [
            "-fsdev",
            f"local,id=conf,security_model=none,readonly=on,path={files.config_drive}",
            "-device",
            f"virtio-9p-pci,fsdev=conf,mount_tag={CONFIG_DRIVE_TAG}",
        ]
    if config.config_drive:
        args += ["-drive", f"if=virtio,format=raw,readonly=on,file={config.config_drive}"]
    return args


def parse_host_forwards(usernet: str) -> dict[int, int]:
    """Guest port -> host port, from the monitor's `info usernet` table."""
    forwards = {}
    for line in usernet.splitlines():
        fields = line.split()
        if fields and fields[0] == "TCP[HOST_FORWARD]" and len(fields) >= 6:
            forwards[int(fields[5])] = int(fields[3])
    return forwards
