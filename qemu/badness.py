"""Console badness: the lines of a VM's console log that show a broken boot, as kola looks for them.

Pure. `scan_console` takes the log as text and returns one `Finding` per bad line; a test fails
on any finding it does not expect, and names expected ones in `allow`. Python tracebacks are
deliberately not badness: tools on the image may print them and recover.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# CSI sequences: systemd colours its status words on the console ("[\x1b[0;1;31mFAILED\x1b[0m]").
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# Checked in this order; a line is reported once, under the first name that matches, so the
# specific kinds come before the generic ones (an EXT4-fs error line often says "I/O error" too).
BADNESS_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(regex))
    for name, regex in (
        ("kernel panic", r"Kernel panic - not syncing"),
        # The initramfs's banner (flotilla-ignition) and Ignition's own critical line.
        ("ignition failure", r"IGNITION FAILED|Ignition failed:|ignition\[\d+\]: CRITICAL"),
        ("oops", r"\bOops:"),
        ("kernel warning", r"WARNING: CPU: \d+ PID: \d+ at"),
        ("soft lockup", r"BUG: soft lockup"),
        # systemd >= 250 names the unit first: "Starting emergency.service - Emergency Shell...".
        (
            "emergency shell",
            r"Press Enter for emergency shell|Starting (?:emergency\.service - )?Emergency Shell"
            r"|You are in emergency mode|Entering emergency mode",
        ),
        (
            "ext4 error",
            r"EXT4-fs error|Delayed block allocation failed|Remounting filesystem read-only"
            r"|Aborting journal|UNEXPECTED INCONSISTENCY; RUN fsck MANUALLY",
        ),
        (
            "erofs error",
            r"erofs: \(device [^)]+\): .*\b(?i:corrupt(?:ed|ion)?|error|failed)\b",
        ),
        # "metadata block N is corrupted" matches too, as it should.
        ("dm-verity corruption", r"data block \d+ is corrupted"),
        # The CD-ROM drive has no medium, and the kernel says so with I/O errors on sr0.
        ("I/O error", r"^(?!.*\bsr0\b).*(?:I/O error|rejecting I/O to offline device)"),
        (
            "systemd failure",
            r"Failed to start|Dependency failed for|Failed to isolate default target"
            r"|Freezing execution|Found ordering cycle",
        ),
        # systemd reports a crashed service as "status=11/SEGV", without the word SIGSEGV.
        ("segfault", r"segfault at|SIGSEGV|=11/SEGV\b|core dumped"),
    )
)


@dataclass(frozen=True)
class Finding:
    """One bad console line."""

    line_number: int  # 1-based line in the log
    pattern: str  # a name from BADNESS_PATTERNS, e.g. "kernel panic"
    line: str  # the log line without ANSI escape sequences and carriage returns


def clean_line(line: str) -> str:
    """The line as a person reads it: ANSI escape sequences and carriage returns removed."""
    return ANSI_ESCAPE.sub("", line).replace("\r", "")


def compile_allow(allow: Iterable[str]) -> list[re.Pattern[str]]:
    """The allow-list regexes compiled; a bad one raises ValueError naming it."""
    compiled = []
    for regex in allow:
        try:
            compiled.append(re.compile(regex))
        except re.error as error:
            raise ValueError(f"invalid allow pattern {regex!r}: {error}") from error
    return compiled


def match_badness(line: str) -> str | None:
    """The name of the first badness pattern found in a cleaned line, or None."""
    for name, pattern in BADNESS_PATTERNS:
        if pattern.search(line):
            return name
    return None


def scan_console(text: str, allow: Sequence[str] = ()) -> list[Finding]:
    """Every line matching a badness pattern, except those matching a regex in `allow`.

    Lines are split on "\\n" only and numbered from 1, so a stray "\\r" (serial consoles send
    "\\r\\n", progress output sends bare "\\r") never shifts the numbers. Patterns and allow
    regexes are searched (not anchored) in the cleaned line; findings are in log order.
    """
    allowed = compile_allow(allow)
    findings = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = clean_line(raw)
        name = match_badness(line)
        if name is None or any(regex.search(line) for regex in allowed):
            continue
        findings.append(Finding(line_number=number, pattern=name, line=line))
    return findings


def format_findings(findings: Iterable[Finding]) -> str:
    """One line per finding, e.g. "console line 312: systemd failure: Failed to start foo".

    Returns "" when there are no findings.
    """
    return "\n".join(
        f"console line {finding.line_number}: {finding.pattern}: {finding.line.strip()}"
        for finding in findings
    )
