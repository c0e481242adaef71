"""Benchmark: the OS image. Cold and cached build time, sizes, boot time to systemd `running`
under TCG (UEFI from the disk, and direct kernel boot), and whether two cold builds from the
same inputs, SOURCE_DATE_EPOCH and update signing key give a byte-identical USR partition, the
same dm-verity root hash and hash tree. Prints its figures and the image
issue's targets.

    .venv/bin/python bench/image.py [--boots N] [--skip-cold]

Run it where the checkout's own imagebuild is imported (the repository's .venv, or
PYTHONPATH=. from a worktree): the script's directory, not the current one, leads sys.path.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from flotilla.process import run
from imagebuild.image import Artifacts, build_image, source_date_epoch
from qemu.command import VmConfig
from qemu.vm import Vm

MIB = 1024 * 1024
TARGETS = {
    "cached rebuild": "≤ 90 s",
    "usr content": "≤ 350 MiB",
    "qcow2": "≤ 250 MB",
    "direct boot": "≤ 20 s to running",
    "uefi boot": "≤ 35 s to running",
}


BOOT_KINDS = ("uefi boot", "uefi ssh login", "direct boot", "direct ssh login")


def timed_build(out: Path, cache: Path, epoch: int, key: Path) -> tuple[float, Artifacts]:
    started = time.monotonic()
    artifacts = build_image(out=out, cache_root=cache, epoch=epoch, signing_key_path=key)
    return time.monotonic() - started, artifacts


PROBE = (
    "systemctl is-system-running --wait; cut -d' ' -f1 /proc/uptime;"
    " systemctl show --property=FinishTimestampMonotonic --value"
)


def boot_seconds(config: VmConfig, key: Path) -> tuple[float, float, str]:
    """Seconds from QEMU's start until the guest reached `running` (systemd's boot-finished
    moment, placed on the host's clock through the guest's uptime), and until SSH let core in;
    and systemd-analyze's kernel + initrd + userspace split of that boot."""
    with Vm(config, Path("/var/tmp/flotilla-qemu") / config.name, identity=key) as vm:
        ssh_ready = vm.wait_for_ssh()
        state, uptime, finished_us = vm.ssh(PROBE, check=False).split()
        observed = time.monotonic() - vm.started_at
        if state != "running":
            raise SystemExit(f"{config.name}: system is {state}, not running")
        running = observed - (float(uptime) - int(finished_us) / 1e6)
        split = vm.ssh("systemd-analyze", check=False).splitlines()[0]
        return running, ssh_ready, split.removeprefix("Startup finished in ")


def boot_times(
    artifacts: Artifacts, key: Path, count: int
) -> tuple[dict[str, list[float]], dict[str, str]]:
    base = VmConfig(image=artifacts.qcow2, authorized_keys=key.with_suffix(".pub"))
    direct = {
        "kernel": artifacts.kernel,
        "initrd": artifacts.initrd,
        "append": artifacts.cmdline.read_text().strip(),
    }
    times: dict[str, list[float]] = {kind: [] for kind in BOOT_KINDS}
    splits: dict[str, str] = {}
    for _ in range(count):
        name = "bench" + secrets.token_hex(3)
        for boot, config in (
            ("uefi", replace(base, name=name)),
            ("direct", replace(base, name=name, **direct)),
        ):
            running, ssh, split = boot_seconds(config, key)
            times[f"{boot} boot"].append(running)
            times[f"{boot} ssh login"].append(ssh)
            splits.setdefault(f"{boot} systemd-analyze", split)
    return times, splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=3, help="boots of each kind (median kept)")
    parser.add_argument("--skip-cold", action="store_true", help="only the cached figures")
    options = parser.parse_args()
    epoch = source_date_epoch()
    work = Path(tempfile.mkdtemp(prefix="flotilla-bench-image-", dir="/var/tmp"))
    key = work / "id_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
    # The update signing key is an input (its public half is in /usr): the same for every build.
    signer = work / "update-signing-key"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", signer])
    figures: dict[str, str] = {}
    try:
        cache = work / "cache-1"
        if options.skip_cold:
            cache = Path("/var/cache/flotilla")
        else:
            cold, first = timed_build(work / "out-1", cache, epoch, signer)
            figures["cold build"] = f"{cold:.0f} s (empty cache: rootfs, packages, everything)"
        cached, artifacts = timed_build(work / "out-2", cache, epoch, signer)
        figures["cached rebuild"] = f"{cached:.1f} s (disk, ESP, ROOT, qcow2 remade from cache)"
        report = report_of(artifacts)
        sizes = report["sizes"]
        figures["usr content"] = f"{sizes['usr_content_bytes'] / MIB:.0f} MiB"
        figures["usr filesystem"] = f"{sizes['usr_filesystem_bytes'] / MIB:.0f} MiB (erofs lz4hc)"
        figures["qcow2"] = f"{sizes['qcow2_bytes'] / 1e6:.0f} MB"
        figures["kernel + initrd"] = (
            f"{sizes['kernel_bytes'] / MIB:.1f} + {sizes['initrd_bytes'] / MIB:.1f} MiB"
        )
        figures["packages"] = str(report["packages"])
        if not options.skip_cold:
            _, second = timed_build(work / "out-3", work / "cache-2", epoch, signer)
            one, two = report_of(first), report_of(second)
            same = one["usr_sha256"] == two["usr_sha256"]
            figures["reproducible usr"] = (
                "yes, byte-identical" if same else "NO: the USR images differ"
            )
            # The initramfs is not reproducible (dracut), so the payloads' usr entries are
            # compared, not their whole manifests.
            same_hash = one["usr_root_hash"] == two["usr_root_hash"]
            same_tree = payload_usr(first) == payload_usr(second)
            figures["reproducible verity"] = (
                "yes, same root hash, hash tree and payload usr entries"
                if same_hash and same_tree
                else f"NO: root hash {'same' if same_hash else 'differs'},"
                f" payload usr entries {'same' if same_tree else 'differ'}"
            )
        times, splits = boot_times(artifacts, key, options.boots)
        for kind, values in times.items():
            figures[kind] = (
                f"median {statistics.median(values):.1f} s "
                f"(min {min(values):.1f}, max {max(values):.1f}, {len(values)} boots)"
            )
        figures.update(splits)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, value in figures.items():
        target = f"   target {TARGETS[name]}" if name in TARGETS else ""
        print(f"{name:22} {value}{target}")


def report_of(artifacts: Artifacts) -> dict:
    return json.loads(artifacts.report.read_text())


def payload_usr(artifacts: Artifacts) -> tuple[object, object]:
    """The update manifest's entries for usr.img and usr.verity (sizes and sha256s)."""
    files = json.loads((artifacts.update / "manifest.json").read_text())["files"]
    return files["usr"], files["usr_verity"]


if __name__ == "__main__":
    main()
