"""The chaos bench's picture: runs from the sampler, faults across the lanes, unit operations
as ticks in their lane, and a double run as a red band."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from fleetlab.chaos import Event, Run, timeline


def test_the_chaos_picture_shows_runs_faults_and_a_double_run() -> None:
    runs = [
        Run("m1", "chaos-10.service", 101.0, 105.0),
        Run("m2", "chaos-10.service", 104.0, None),  # a double run from 104 to 105
        Run("m3", "chaos-2.service", 102.0, None),
    ]
    moments = [
        (100.5, Event("unit-start", "chaos-2.service")),
        (103.0, Event("partition", "m1")),
        (106.0, Event("heal", "m1")),
        (106.5, Event("pause", "ttl")),
    ]
    root = ET.fromstring(timeline(runs, moments, 100.0, 110.0, "chaos seed 1"))
    marks = [e for e in root.iter() if e.get("class") == "mark"]
    assert [m.get("data-kind") for m in marks] == ["start", "fault", "repair"]
    labels = [t.text for m in marks for t in m.iter("{http://www.w3.org/2000/svg}text")]
    assert labels == ["partition m1", "heal m1"]
    assert len([e for e in root.iter() if e.get("class") == "double-run"]) == 1
    lanes = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text") if "chaos-" in t.text]
    assert lanes[:2] == ["chaos-2.service", "chaos-10.service"]  # by number, not by text
