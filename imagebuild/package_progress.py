"""How far a package step got, read from the tree's own dpkg database while apt or mmdebstrap
runs: what `imagebuild build --verbose` shows beside the step's spinner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

DPKG_STATUS = "var/lib/dpkg/status"


def count_installed(status_text: str) -> int:
    """Packages dpkg's status file lists as fully installed (pure)."""
    return sum(1 for line in status_text.splitlines() if line == "Status: install ok installed")


def installed_note(root: Path) -> Callable[[], str]:
    """A detail for `flotilla.steps.step`: "N packages installed" in the tree at `root`,
    re-read only when dpkg has rewritten its status file (the spinner asks many times a second)."""
    status = root / DPKG_STATUS
    seen: dict[str, object] = {"mtime": None, "note": ""}

    def note() -> str:
        try:
            mtime = status.stat().st_mtime_ns
        except FileNotFoundError:
            return "starting"
        if mtime != seen["mtime"]:
            seen["mtime"], seen["note"] = mtime, f"{count_installed(status.read_text())} installed"
        return str(seen["note"])

    return note
