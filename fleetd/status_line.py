"""What fleetd tells systemd about itself (sd_notify STATUS=, shown by `systemctl status
fleetd`), and how others on the machine read it without asking the API: the update agent's
health check runs where every Python process costs seconds on a busy guest."""

from __future__ import annotations

REGISTERED = "registered as"


def registered_status(machine_id: str, lease: int) -> str:
    return f"{REGISTERED} {machine_id} (lease {lease:x})"


def registered_machine(status_text: str) -> str | None:
    """The machine id a status line says fleetd registered, if it says so."""
    words = status_text.split()
    if status_text.startswith(REGISTERED + " ") and len(words) > 2:
        return words[2]
    return None
