"""The QEMU command line flotilla-qemu builds (pure: no QEMU started)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from qemu.command import (
    ConfigError,
    Forward,
    PrivateNic,
    RunFiles,
    VmConfig,
    parse_host_forwards,
    qemu_argv,
)

FILES = RunFiles(Path("/run/vm"))
BASE = VmConfig(image=Path("/images/flotilla.qcow2"), name="t1")


def option_values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == option]


def test_defaults_are_tcg_uefi_a_private_overlay_and_loopback_ssh() -> None:
    argv = qemu_argv(BASE, FILES)
    assert option_values(argv, "-machine") == ["q35,accel=tcg"]
    assert "-cpu" not in argv and "-enable-kvm" not in argv
    drives = option_values(argv, "-drive")
    assert any("if=pflash" in d and "readonly=on" in d and "OVMF_CODE" in d for d in drives)
    assert any("if=pflash" in d and "file=/run/vm/efi-vars.fd" in d for d in drives)
    assert "if=none,id=disk0,format=qcow2,file=/run/vm/disk.qcow2" in drives
    assert not any("flotilla.qcow2" in d for d in drives)  # the image itself is never opened rw
    (netdev,) = option_values(argv, "-netdev")
    assert "restrict=on" in netdev
    assert "hostfwd=tcp:127.0.0.1:0-:22" in netdev
    assert option_values(argv, "-serial") == ["chardev:console"]
    # append=on: a cluster node boots again into the same run directory and keeps every boot
    console = "file,id=console,path=/run/vm/console.log,append=on"
    assert console in option_values(argv, "-chardev")
    assert option_values(argv, "-qmp") == ["unix:/run/vm/qmp.sock,server=on,wait=off"]


def test_kvm_only_on_request() -> None:
    argv = qemu_argv(replace(BASE, kvm=True), FILES)
    assert option_values(argv, "-machine") == ["q35,accel=kvm"]
    assert option_values(argv, "-cpu") == ["host"]


def test_direct_kernel_boot_skips_the_firmware() -> None:
    config = replace(
        BASE, kernel=Path("/b/vmlinuz"), initrd=Path("/b/initrd"), append="root=PARTUUID=x"
    )
    argv = qemu_argv(config, FILES)
    assert option_values(argv, "-kernel") == ["/b/vmlinuz"]
    assert option_values(argv, "-initrd") == ["/b/initrd"]
    assert option_values(argv, "-append") == ["root=PARTUUID=x"]
    assert not any("pflash" in d for d in option_values(argv, "-drive"))


def test_a_direct_kernel_boot_with_ignition_is_a_first_boot() -> None:
    """The disk's boot entry carries ignition.firstboot; a direct boot gets it from the
    launcher, only when a config is handed in (a later boot of the same disk gets none)."""
    kernel = {"kernel": Path("/b/vmlinuz"), "append": "root=PARTUUID=x"}
    with_config = qemu_argv(replace(BASE, **kernel, ignition=Path("/c/config.ign")), FILES)
    assert option_values(with_config, "-append") == ["root=PARTUUID=x ignition.firstboot"]
    without = qemu_argv(replace(BASE, **kernel), FILES)
    assert option_values(without, "-append") == ["root=PARTUUID=x"]
    already = replace(BASE, kernel=Path("/b/vmlinuz"), append="x ignition.firstboot")
    assert option_values(qemu_argv(replace(already, ignition=Path("/c")), FILES), "-append") == [
        "x ignition.firstboot"
    ]


def test_a_private_nic_is_a_tap_fd_with_its_mac() -> None:
    argv = qemu_argv(replace(BASE, private_nic=PrivateNic(fd=7, mac="52:54:00:00:00:01")), FILES)
    assert "tap,id=private,fd=7,vhost=off" in option_values(argv, "-netdev")
    assert "virtio-net-pci,netdev=private,mac=52:54:00:00:00:01,romfile=" in option_values(
        argv, "-device"
    )


def test_flatcar_flags_map_to_qemu_options() -> None:
    config = replace(
        BASE,
        ignition=Path("/c/config.ign"),
        authorized_keys=Path("/c/keys"),
        user_data=Path("/c/user-data"),
        disks=("/d/extra.img,serial=secondary",),
        disk_options="serial=primary",
        ssh_port=2222,
        forwards=(Forward(8080, 80), Forward(0, 443)),
        memory_mib=1024,
        cpus=1,
        extra_args=("-display", "curses"),
    )
    argv = qemu_argv(config, FILES)
    assert option_values(argv, "-fw_cfg") == [
        "name=opt/com.coreos/config,file=/c/config.ign",
        "name=opt/org.flotilla/authorized_keys,file=/c/keys",
    ]
    assert "mount_tag=config-2" in " ".join(option_values(argv, "-device"))
    assert "path=/run/vm/config-drive" in option_values(argv, "-fsdev")[0]
    assert "if=none,id=disk1,file=/d/extra.img" in option_values(argv, "-drive")
    assert "virtio-blk-pci,drive=disk1,serial=secondary" in option_values(argv, "-device")
    assert any(d.endswith(",serial=primary") for d in option_values(argv, "-device"))
    (netdev,) = option_values(argv, "-netdev")
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in netdev
    assert "hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:127.0.0.1:0-:443" in netdev
    assert option_values(argv, "-m") == ["1024"] and option_values(argv, "-smp") == ["1"]
    assert argv[-2:] == ["-display", "curses"]


def test_outbound_lifts_the_restriction() -> None:
    (netdev,) = option_values(qemu_argv(replace(BASE, outbound=True), FILES), "-netdev")
    assert "restrict" not in netdev


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"user_data": Path("u"), "config_drive": Path("c")}, "both make the config drive"),
        ({"initrd": Path("i")}, "needs -K"),
        ({"kvm": True, "safe": True}, "TCG only"),
        ({"disk_options": "bootindex=2"}, "may not set bootindex="),
        ({"disk_options": "serial=x,drive=y"}, "may not set drive="),
        ({"memory_mib": 64}, "too little"),
    ],
)
def test_bad_combinations_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        qemu_argv(replace(BASE, **changes), FILES)


def test_host_forwards_are_read_from_info_usernet() -> None:
    usernet = (
        "Hub -1 (eth0):\r\n"
        "  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n"
        "  TCP[HOST_FORWARD]  13       127.0.0.1 36357       10.0.2.15    22     0     0\r\n"
        "  TCP[HOST_FORWARD]  14       127.0.0.1  8080       10.0.2.15    80     0     0\r\n"
        "  UDP[236 sec]       20        10.0.2.15   68       10.0.2.2    67     0     0\r\n"
    )
    assert parse_host_forwards(usernet) == {22: 36357, 80: 8080}
