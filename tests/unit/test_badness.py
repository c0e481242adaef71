"""The console badness scan finds the lines of a broken boot and nothing in a clean one."""

from __future__ import annotations

import pytest

from qemu.badness import BADNESS_PATTERNS, Finding, format_findings, scan_console

ESC = "\x1b"
FAILED = f"[{ESC}[0;1;31mFAILED{ESC}[0m]"
OK = f"[{ESC}[0;32m  OK  {ESC}[0m]"
DEPEND = f"[{ESC}[0;1;33mDEPEND{ESC}[0m]"

CLEAN_DEBIAN_BOOT = f"""\
[    0.000000] Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) (gcc-12 \
(Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) \
#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)
[    0.000000] Command line: BOOT_IMAGE=/boot/vmlinuz-6.1.0-18-amd64 root=UUID=2b3c ro console=ttyS0
[    0.000000] BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable
[    0.004000] ACPI: Early table checksum verification disabled
[    0.412345] Freeing SMP alternatives memory: 44K
[    0.987654] ata2.00: ATAPI: QEMU DVD-ROM, 2.5+, max UDMA/100
[    1.023456] sr 1:0:0:0: [sr0] scsi3-mmc drive: 4x/4x cd/rw xa/form2 tray
[    1.234567] EXT4-fs (vda1): mounted filesystem 2b3c with ordered data mode. Quota mode: none.
[    1.345678] erofs: (device vda3): mounted with root inode @ nid 36.
[    1.456789] device-mapper: verity: sha256 using implementation "sha256-generic"
[    1.567890] systemd[1]: systemd 252.22-1~deb12u1 running in system mode (+PAM +AUDIT +SELINUX)
[    1.600000] systemd[1]: Detected virtualization qemu.
[    1.700000] systemd[1]: Hostname set to <localhost>.
{OK} Started systemd-journald.service - Journal Service.{ESC}[K\r
{OK} Finished systemd-fsck-root.service - File System Check on Root Device.\r
         Starting systemd-remount-fs.service - Remount Root and Kernel File Systems...\r
{OK} Finished systemd-remount-fs.service - Remount Root and Kernel File Systems.\r
{OK} Reached target local-fs.target - Local File Systems.\r
{OK} Started getty@tty1.service - Getty on tty1.\r
{OK} Reached target multi-user.target - Multi-User System.\r
         Starting systemd-update-utmp-runlevel.service - Record Runlevel Change in UTMP...\r
\r
Debian GNU/Linux 12 localhost ttyS0\r
\r
localhost login: \r
"""


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        (
            "[   12.345678] Kernel panic - not syncing: VFS: Unable to mount root fs on "
            "unknown-block(0,0)",
            "kernel panic",
        ),
        (
            "[    3.100000] Kernel panic - not syncing: Attempted to kill init! "
            "exitcode=0x0000000b",
            "kernel panic",
        ),
        ("[   20.000001] Oops: 0000 [#1] PREEMPT SMP NOPTI", "oops"),
        ("[   20.000001] Internal error: Oops: 96000004 [#1] SMP", "oops"),
        (
            "[    5.555555] WARNING: CPU: 1 PID: 214 at drivers/gpu/drm/drm_gem.c:1095 "
            "drm_gem_object_release+0x3a/0x40",
            "kernel warning",
        ),
        (
            "[   48.123456] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [swapper/0:1]",
            "soft lockup",
        ),
        ("Press Enter for emergency shell or wait 5 minutes for reboot.", "emergency shell"),
        ("         Starting Emergency Shell...", "emergency shell"),
        (
            'You are in emergency mode. After logging in, type "journalctl -xb" to view',
            "emergency shell",
        ),
        ("[    9.000000] systemd[1]: Entering emergency mode.", "emergency shell"),
        (
            "[   30.111111] blk_update_request: I/O error, dev vda, sector 2048 op 0x0:(READ) "
            "flags 0x0 phys_seg 1 prio class 0",
            "I/O error",
        ),
        (
            "[   30.222222] Buffer I/O error on dev vda9, logical block 0, async page read",
            "I/O error",
        ),
        ("[   31.000000] sd 0:0:0:0: rejecting I/O to offline device", "I/O error"),
        (
            "[   40.000000] EXT4-fs error (device vda9): ext4_find_entry:1455: inode #2: "
            "comm systemd: reading directory lblock 0",
            "ext4 error",
        ),
        (
            "[   40.100000] EXT4-fs (vda9): Delayed block allocation failed for inode 131 at "
            "logical offset 0 with max blocks 1 with error 5",
            "ext4 error",
        ),
        ("[   40.200000] EXT4-fs (vda9): Remounting filesystem read-only", "ext4 error"),
        (
            "[   40.300000] EXT4-fs error (device vda9) in ext4_reserve_inode_write:5712: "
            "IO failure",
            "ext4 error",
        ),
        ("[   40.400000] EXT4-fs (vda9): Aborting journal on device vda9-8.", "ext4 error"),
        ("/dev/vda9: UNEXPECTED INCONSISTENCY; RUN fsck MANUALLY.", "ext4 error"),
        (
            "[    2.000000] erofs: (device vda3): z_erofs_lz4_decompress_mem: failed to "
            "decompress -12 in[4096, 0] out[8192]",
            "erofs error",
        ),
        (
            "[    2.100000] erofs: (device dm-0): erofs_read_inode: corrupted inode @ nid 1234",
            "erofs error",
        ),
        (
            "[    2.200000] erofs: (device loop0): z_erofs_decompress_pcluster: "
            "Read error -5 on pcluster 17",
            "erofs error",
        ),
        (
            "[   15.000000] device-mapper: verity: 253:0: data block 12345 is corrupted",
            "dm-verity corruption",
        ),
        (
            "[   15.100000] device-mapper: verity: 253:0: metadata block 7 is corrupted",
            "dm-verity corruption",
        ),
        (
            "[   10.000000] systemd[1]: Failed to isolate default target: Unit not found.",
            "systemd failure",
        ),
        ("[   10.100000] systemd[1]: Freezing execution.", "systemd failure"),
        (
            "[    1.900000] systemd[1]: local-fs.target: Found ordering cycle on var.mount/start",
            "systemd failure",
        ),
        (
            "[   60.000000] fleetd[812]: segfault at 0 ip 000055d5 sp 00007ffd error 4 in fleetd",
            "segfault",
        ),
        ("[   61.000000] fleetd[812]: SIGSEGV: segmentation violation", "segfault"),
        (
            "[   62.000000] systemd[1]: fleetd.service: Main process exited, code=dumped, "
            "status=11/SEGV",
            "segfault",
        ),
        ("Segmentation fault (core dumped)", "segfault"),
        (
            "flotilla: IGNITION FAILED (ignition-files.service): provisioning stopped, this boot "
            "will not continue.",
            "ignition failure",
        ),
        (
            "[    9.000000] ignition[402]: CRITICAL : Ignition failed: failed to create files",
            "ignition failure",
        ),
    ],
)
def test_each_kind_of_badness_is_found(line: str, pattern: str) -> None:
    assert scan_console(line) == [Finding(1, pattern, line)]


@pytest.mark.parametrize(
    ("raw", "pattern", "seen"),
    [
        (
            f"{FAILED} Failed to start {ESC}[0;1;39metcd-member.service{ESC}[0m - etcd.\r",
            "systemd failure",
            "[FAILED] Failed to start etcd-member.service - etcd.",
        ),
        (
            f"{DEPEND} Dependency failed for {ESC}[0;1;39mlocal-fs.target{ESC}[0m - "
            "Local File Systems.\r",
            "systemd failure",
            "[DEPEND] Dependency failed for local-fs.target - Local File Systems.",
        ),
        (
            f"         Starting {ESC}[0;1;39memergency.service{ESC}[0m - Emergency Shell...",
            "emergency shell",
            "         Starting emergency.service - Emergency Shell...",
        ),
        (
            # A colour code in the middle of the phrase must not hide it.
            f"Kernel panic - {ESC}[1mnot syncing{ESC}[0m: Fatal exception{ESC}[?25h{ESC}[K",
            "kernel panic",
            "Kernel panic - not syncing: Fatal exception",
        ),
    ],
)
def test_colour_codes_and_carriage_returns_are_stripped(raw: str, pattern: str, seen: str) -> None:
    assert scan_console(raw) == [Finding(1, pattern, seen)]


@pytest.mark.parametrize(
    "line",
    [
        "[    1.023456] sr 1:0:0:0: [sr0] tag#0 FAILED Result: hostbyte=DID_OK",
        "[    1.100000] blk_update_request: I/O error, dev sr0, sector 0 op 0x0:(READ)",
        "[    1.200000] Buffer I/O error on dev sr0, logical block 0, async page read",
        "[    1.300000] sr 1:0:0:0: rejecting I/O to offline device [sr0]",
    ],
)
def test_io_errors_on_the_cdrom_are_ignored(line: str) -> None:
    assert scan_console(line) == []


@pytest.mark.parametrize(
    "line",
    [
        'Traceback (most recent call last):\n  File "/usr/bin/fleetctl", line 8',
        "[    0.300000] Whoops: this is not an oops",
        "[    1.000000] WARNING: CPU: feature flag missing",
        "[    2.000000] erofs: (device vda3): mounted with root inode @ nid 36.",
        "[    3.000000] systemd[1]: Started systemd-journald.service - Journal Service.",
        "Starting emergency-prep.service",
    ],
)
def test_near_misses_are_not_badness(line: str) -> None:
    assert scan_console(line) == []


def test_a_clean_debian_boot_has_no_findings() -> None:
    assert scan_console(CLEAN_DEBIAN_BOOT) == []


def test_findings_carry_one_based_line_numbers_in_log_order() -> None:
    log = CLEAN_DEBIAN_BOOT + f"{FAILED} Failed to start foo.service - Foo.\r\n" + "Oops: 0002\n"
    first = len(CLEAN_DEBIAN_BOOT.split("\n"))

    assert scan_console(log) == [
        Finding(first, "systemd failure", "[FAILED] Failed to start foo.service - Foo."),
        Finding(first + 1, "oops", "Oops: 0002"),
    ]


def test_the_first_line_is_line_one_and_bare_carriage_returns_do_not_shift_numbers() -> None:
    log = "Kernel panic - not syncing: x\rprogress\r\nok\nFreezing execution.\n"

    assert [f.line_number for f in scan_console(log)] == [1, 3]
    assert scan_console(log)[0].line == "Kernel panic - not syncing: xprogress"


def test_a_line_is_reported_once_under_the_most_specific_name() -> None:
    line = "EXT4-fs error (device vda9): ext4_read_block_bitmap: I/O error, Failed to start"

    assert scan_console(line) == [Finding(1, "ext4 error", line)]


def test_allowed_lines_are_skipped_and_others_still_found() -> None:
    log = "\n".join(
        [
            f"{FAILED} Failed to start flaky.service - Flaky.",
            f"{FAILED} Failed to start etcd.service - etcd.",
            "[    5.0] WARNING: CPU: 0 PID: 1 at kernel/known.c:1 known_warning+0x1/0x2",
        ]
    )

    findings = scan_console(log, allow=[r"flaky\.service", r"at kernel/known\.c"])

    assert findings == [
        Finding(2, "systemd failure", "[FAILED] Failed to start etcd.service - etcd.")
    ]


def test_allow_regexes_match_the_line_without_colour_codes() -> None:
    log = f"{FAILED} Failed to start {ESC}[0;1;39mflaky.service{ESC}[0m."

    assert scan_console(log, allow=[r"\] Failed to start flaky\.service"]) == []


def test_an_invalid_allow_regex_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match=r"invalid allow pattern '\(unclosed'"):
        scan_console("ok", allow=["(unclosed"])


def test_format_findings_gives_one_readable_line_each() -> None:
    findings = [
        Finding(312, "systemd failure", "[FAILED] Failed to start foo.service - Foo.  "),
        Finding(400, "kernel panic", "[   12.0] Kernel panic - not syncing: Fatal exception"),
    ]

    assert format_findings(findings) == (
        "console line 312: systemd failure: [FAILED] Failed to start foo.service - Foo.\n"
        "console line 400: kernel panic: [   12.0] Kernel panic - not syncing: Fatal exception"
    )
    assert format_findings([]) == ""


def test_pattern_names_are_unique() -> None:
    names = [name for name, _ in BADNESS_PATTERNS]

    assert len(names) == len(set(names))
