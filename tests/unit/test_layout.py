"""Lab names, machine names and addresses are derived, validated and never collide."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetlab.layout import LabLayout, LayoutError, check_lab_name, machine_names

LAB = LabLayout("demo", Path("/var/lib/fleetlab"), Path("/sys/fs/cgroup/fleetlab"))


def test_machines_get_consecutive_addresses_after_the_gateway() -> None:
    assert [LAB.machine(name).ip for name in machine_names(3)] == [
        "10.77.0.11",
        "10.77.0.12",
        "10.77.0.13",
    ]
    assert LAB.gateway_ip == "10.77.0.1"
    assert LAB.etcd_endpoint == "http://10.77.0.1:2379"


def test_every_name_of_a_machine_is_derived_from_the_lab_and_machine() -> None:
    machine = LAB.machine("m2")
    assert machine.netns == "fl-demo-m2"
    assert machine.cgroup == Path("/sys/fs/cgroup/fleetlab/demo/machines/m2")
    assert machine.upper == Path("/var/lib/fleetlab/demo/machines/m2/upper")
    assert LAB.owns_netns("fl-demo") and LAB.owns_netns("fl-demo-m2")
    assert not LAB.owns_netns("fl-demo2") and not LAB.owns_netns("fl-demo2-m1")


@pytest.mark.parametrize("name", ["", "Demo", "a-b", "1lab", "../etc", "abcdefghijk"])
def test_lab_names_that_could_clash_or_escape_are_refused(name: str) -> None:
    with pytest.raises(LayoutError):
        check_lab_name(name)


@pytest.mark.parametrize("name", ["m0", "m65", "x1", "m1/../../etc", "m01"])
def test_bad_machine_names_are_refused(name: str) -> None:
    with pytest.raises(LayoutError):
        LAB.machine(name)
