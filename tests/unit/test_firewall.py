"""The root-only rule names its own table and exactly the forwarded ports."""

from __future__ import annotations

from fleetlab.layout import LabLayout
from flotilla.firewall import root_only_rules


def test_the_rule_rejects_other_users_on_the_given_ports_only() -> None:
    rules = root_only_rules("fleetlab_lab1", [40123, 40001])
    assert rules.startswith("table inet fleetlab_lab1\ndelete table inet fleetlab_lab1\n")
    assert "hook output" in rules and "policy accept" in rules
    assert "ip daddr 127.0.0.1 tcp dport { 40001, 40123 } meta skuid != 0 reject" in rules


def test_no_ports_leaves_an_empty_table() -> None:
    assert "dport" not in root_only_rules("t", [])


def test_a_labs_table_is_its_own() -> None:
    assert LabLayout("lab1", "/x", "/y").firewall_table == "fleetlab_lab1"  # type: ignore[arg-type]
