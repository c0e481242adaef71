"""Writing a file whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

PARTIAL_SUFFIX = ".partial"  # a file being written: never a unit type, so never a unit file


def write_atomically(path: Path, text: str) -> None:
    """Readers (systemd, fleetctl, an editor) see the old file or the new one, never half of one.

    The partial file beside it is named ".<random>.partial": short, so any name up to the file
    system's NAME_MAX still fits, and never taken for a unit file when a crash leaves it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, partial = tempfile.mkstemp(prefix=".", suffix=PARTIAL_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
