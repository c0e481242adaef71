"""The lab's root-only rule names the lab's own table and exactly its forwarded port."""

from __future__ import annotations

from fleetlab.firewall import root_only_rules, table


def test_the_rule_rejects_other_users_on_the_labs_port_only() -> None:
    rules = root_only_rules("lab1", 40123)
    assert rules.startswith(f"table inet {table('lab1')} {{")
    assert "hook output" in rules and "policy accept" in rules
    assert "ip daddr 127.0.0.1 tcp dport 40123 meta skuid != 0 reject" in rules
