"""The real `ignition-validate` (Debian's package `ignition`) as the gate before any boot."""

from __future__ import annotations

import tempfile

from flotilla.process import run

from .render import Rendered

VALIDATOR = "ignition-validate"


class IgnitionRejected(ValueError):
    """ignition-validate refused a rendered config; the message carries its report."""


def validate_ignition(config: Rendered, node: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".ign", prefix=f"{node}-") as handle:
        handle.write(config.text)
        handle.flush()
        result = run([VALIDATOR, handle.name], check=False)
    if result.returncode != 0:
        report = (result.stdout + result.stderr).strip()
        raise IgnitionRejected(
            f"{config.template} (rendered for {node}): ignition-validate rejected it:\n{report}"
        )
    if result.stdout.strip():  # warnings only: still a finding an author should see
        raise IgnitionRejected(
            f"{config.template} (rendered for {node}): ignition-validate warns:\n"
            f"{result.stdout.strip()}"
        )
