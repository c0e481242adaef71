"""fleetd's status line, as systemd shows it and the update agent's health check reads it."""

from __future__ import annotations

from fleetd.status_line import registered_machine, registered_status


def test_a_registered_status_names_its_machine() -> None:
    line = registered_status("4f5626eeddc649cfa5fd2ec3ae4d1abe", 0x1667A2301BA90941)
    assert line == "registered as 4f5626eeddc649cfa5fd2ec3ae4d1abe (lease 1667a2301ba90941)"
    assert registered_machine(line) == "4f5626eeddc649cfa5fd2ec3ae4d1abe"


def test_any_other_status_names_no_machine() -> None:
    for other in ("", "registered as", "starting", "lease lost; registered as x"):
        assert registered_machine(other) is None
