"""Provisioning's pure parts: the inventory of a cluster and strict template rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provision.inventory import InventoryError, plan_inventory
from provision.render import RenderError, data_url, render_cloud_config, render_ignition
from provision.values import member_values


def test_an_inventory_derives_every_address_from_the_cluster_name() -> None:
    first, again = plan_inventory("demo", 3), plan_inventory("demo", 3)
    assert first == again
    assert [n.name for n in first.nodes] == ["n1", "n2", "n3"]
    assert len({n.ip for n in first.nodes}) == len({n.mac for n in first.nodes}) == 3
    assert all(n.ip.startswith(first.subnet + ".") for n in first.nodes)
    assert first.gateway == f"{first.subnet}.1"
    other = plan_inventory("other", 3)
    assert {n.mac for n in other.nodes}.isdisjoint({n.mac for n in first.nodes})


@pytest.mark.parametrize(("name", "count"), [("Demo", 3), ("a-b", 3), ("x" * 11, 3), ("ok", 0)])
def test_bad_cluster_names_and_sizes_are_refused(name: str, count: int) -> None:
    with pytest.raises(InventoryError):
        plan_inventory(name, count)


def test_an_unknown_node_names_the_known_ones() -> None:
    with pytest.raises(InventoryError, match="n1, n2"):
        plan_inventory("demo", 2).node("n9")


def test_data_urls_escape_everything_ignition_would_misread() -> None:
    assert data_url("a b\n%,#") == "data:,a%20b%0A%25%2C%23"


def values() -> dict[str, object]:
    inventory = plan_inventory("demo", 3)
    return member_values(inventory, inventory.nodes[1], ["ssh-ed25519 AAAA test"])


def test_the_member_role_renders_ignition_3_3_for_its_node() -> None:
    config = json.loads(render_ignition("member", values()).text)
    assert config["ignition"]["version"] == "3.3.0"  # Debian's validator refuses 3.4.0
    files = {f["path"]: f for f in config["storage"]["files"]}
    assert files["/etc/hostname"]["contents"]["source"] == "data:,n2%0A"
    units = {u["name"]: u for u in config["systemd"]["units"]}
    etcd = units["etcd.service"]["dropins"][0]["contents"]
    assert "ETCD_NAME=n2" in etcd and etcd.count(":2380") == 5  # 3 peers + 2 own URLs
    assert units["etcd.service"]["mask"] is False  # the image masks it until configured
    assert config["passwd"]["users"][0]["sshAuthorizedKeys"] == ["ssh-ed25519 AAAA test"]


def test_the_member_role_renders_cloud_config_too() -> None:
    text = render_cloud_config("member", values()).text
    assert text.startswith("#cloud-config\n")
    assert "hostname: n2" in text and "name: n2" in text


def test_an_undefined_variable_names_the_template_and_line(tmp_path: Path) -> None:
    (tmp_path / "r.ign.yaml.j2").write_text("ignition:\n  version: 3.3.0\n# {{ nod.name }}\n")
    with pytest.raises(RenderError, match=r"r\.ign\.yaml\.j2:3: 'nod' is undefined"):
        render_ignition("r", values(), tmp_path)


def test_a_template_syntax_error_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "r.cloud-config.j2").write_text("#cloud-config\n\n{% if %}\n")
    with pytest.raises(RenderError, match=r"r\.cloud-config\.j2:3:"):
        render_cloud_config("r", values(), tmp_path)


def test_a_missing_role_lists_the_templates_there(tmp_path: Path) -> None:
    (tmp_path / "member.ign.yaml.j2").write_text("")
    with pytest.raises(RenderError, match=r"member\.ign\.yaml\.j2"):
        render_ignition("worker", values(), tmp_path)


def test_yaml_that_does_not_parse_after_rendering_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "r.ign.yaml.j2").write_text("a: 1\nb: [\n")
    with pytest.raises(RenderError, match="rendered YAML line"):
        render_ignition("r", values(), tmp_path)
