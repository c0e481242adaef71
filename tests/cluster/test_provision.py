"""Configs are checked before any VM boots: the real ignition-validate and the cloud-config
validator gate `flotilla-cluster up`, whose bad inputs leave nothing behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provision.checks import ConfigRejected, check_config
from provision.ignition import IgnitionRejected
from provision.inventory import plan_inventory
from provision.render import TEMPLATES, Rendered
from qemu.cluster_network import netns_exists, netns_name
from qemu.cluster_up import render_configs

pytestmark = pytest.mark.cluster
CLUSTER_CLI = str(Path(sys.executable).with_name("flotilla-cluster"))
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGFrZWtleWZvcnRlc3RzMDEyMzQ1Njc4OTAxMjM0 t"


@pytest.mark.parametrize("provision", ["ignition", "cloud-config"])
def test_every_node_config_of_the_member_role_passes_the_real_checks(provision: str) -> None:
    configs = render_configs(plan_inventory("check", 3), provision, [KEY])
    assert sorted(configs) == ["n1", "n2", "n3"]


def test_ignition_validate_rejection_carries_its_report() -> None:
    config = {"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "etc/x"}]}}
    rendered = Rendered(Path("/t/r.ign.yaml.j2"), json.dumps(config))
    with pytest.raises(IgnitionRejected, match=r"r\.ign\.yaml\.j2.*\n.*path not absolute"):
        check_config(rendered, "ignition", "n1")


def test_ignition_spec_3_4_is_refused_by_debians_validator() -> None:
    rendered = Rendered(Path("/t/r.ign.yaml.j2"), json.dumps({"ignition": {"version": "3.4.0"}}))
    with pytest.raises(IgnitionRejected, match="unsupported config version"):
        check_config(rendered, "ignition", "n1")


def test_a_cloud_config_finding_stops_it() -> None:
    rendered = Rendered(Path("/t/r.cloud-config.j2"), "#cloud-config\nhostname: [a]\nbogus: 1\n")
    with pytest.raises(ConfigRejected, match=r"line 2: error.*\n.*line 3: warning"):
        check_config(rendered, "cloud-config", "n1")


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """`up` checks the image's files exist before anything else; content is never read here."""
    directory = tmp_path / "image"
    directory.mkdir()
    for suffix in ("qcow2", "vmlinuz", "initrd", "cmdline"):
        (directory / f"flotilla.{suffix}").write_text("x\n")
    return directory


def broken_templates(tmp_path: Path, name: str, old: str, new: str) -> Path:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    path = templates / name
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return templates


def up(tmp_path: Path, image_dir: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLUSTER_CLI, "--name", name, "--state-dir", str(tmp_path / "state"), "up",
         "--image-dir", str(image_dir), *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def assert_nothing_left(tmp_path: Path, name: str) -> None:
    assert not (tmp_path / "state" / name).exists()
    assert not netns_exists(netns_name(name))
    qemus = subprocess.run(["pgrep", "-f", str(tmp_path / "state")], capture_output=True)
    assert qemus.returncode == 1, "a QEMU of the refused cluster runs"


BAD_TEMPLATES = [
    # (template, old, new, provision, what the message must say)
    ("member.ign.yaml.j2", "path: /etc/hostname", "path: etc/hostname", "ignition",
     r"member\.ign\.yaml\.j2 \(rendered for n1\): ignition-validate rejected it:\n"
     r"error at \$\.storage\.files\.0\.path.*path not absolute"),
    ("member.ign.yaml.j2", "{{ node.name }}", "{{ node.nme }}", "ignition",
     r"member\.ign\.yaml\.j2:\d+: .*has no attribute 'nme'"),
    ("member.ign.yaml.j2", "version: 3.3.0", "version: 3.4.0", "ignition",
     "unsupported config version"),
    ("member.cloud-config.j2", "hostname: {{ node.name }}", "hostname: [x]", "cloud-config",
     r"line 2: error: .*hostname"),
    ("member.cloud-config.j2", "write_files:", "unheard_of: 1\nwrite_files:", "cloud-config",
     r"line 4: warning: .*unheard_of"),
    ("member.cloud-config.j2", "path: /etc/hosts", "path: /usr/lib/x", "cloud-config",
     r"line \d+: error: .*/usr"),
]  # fmt: skip


@pytest.mark.parametrize(("template", "old", "new", "provision", "message"), BAD_TEMPLATES)
def test_a_bad_config_stops_up_before_any_vm_boots(
    tmp_path: Path, image_dir: Path, template: str, old: str, new: str, provision: str,
    message: str,
) -> None:  # fmt: skip
    templates = broken_templates(tmp_path, template, old, new)
    name = f"bad{os.getpid() % 10000}"
    result = up(tmp_path, image_dir, name, "--provision", provision, "--templates", str(templates))
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("flotilla-cluster: ")
    assert str(templates / template) in result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert_nothing_left(tmp_path, name)


def test_a_second_up_is_refused_with_the_way_to_the_first(tmp_path: Path, image_dir: Path) -> None:
    existing = tmp_path / "state" / "twice"
    existing.mkdir(parents=True)
    (existing / "cluster.json").write_text("{}")
    result = up(tmp_path, image_dir, "twice")
    assert result.returncode == 1
    assert "already exists" in result.stderr
    assert "--name twice ls" in result.stderr and "--name twice down" in result.stderr
    assert (existing / "cluster.json").read_text() == "{}"  # the first one is untouched


def test_up_without_an_image_says_how_to_build_it(tmp_path: Path) -> None:
    result = up(tmp_path, tmp_path / "nowhere", "noimage")
    assert result.returncode == 1
    assert "build the image first (`make image`)" in result.stderr


def test_down_of_a_cluster_that_is_not_there_succeeds(tmp_path: Path) -> None:
    result = subprocess.run(
        [CLUSTER_CLI, "--name", "gone", "--state-dir", str(tmp_path), "down"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
