"""The timeline SVG writer: well-formed SVG, one bar per run, a double run banded in red."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from flotilla.timeline_svg import (
    Mark,
    Span,
    double_runs,
    page,
    render_timeline,
    rows_of,
    tick_step,
)
from tests.test_tooling import io_imports

SVG = "{http://www.w3.org/2000/svg}"
REPO = Path(__file__).resolve().parents[2]


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def classed(root: ET.Element, name: str) -> list[ET.Element]:
    return [e for e in root.iter() if e.get("class") == name]


def test_a_failover_is_two_runs_in_one_row_with_a_gap_and_its_marks() -> None:
    spans = [Span("web.service", "m1", 0, 10), Span("web.service", "m2", 14, None)]
    marks = [Mark(10, "kill m1"), Mark(13, "lease expired", "lease"), Mark(14, "started", "start")]
    root = parse(render_timeline(spans, marks, title="failover", start=0, end=20))
    runs = classed(root, "run")
    assert [r.get("data-machine") for r in runs] == ["m1", "m2"]
    assert runs[0].get("y") == runs[1].get("y")  # one row: no double run
    first_end = float(runs[0].get("x")) + float(runs[0].get("width"))
    assert float(runs[1].get("x")) > first_end + 50  # the 4 s gap is visible
    assert not classed(root, "double-run")
    assert [m.get("data-kind") for m in classed(root, "mark")] == ["fault", "lease", "start"]


def test_a_double_run_gets_a_second_row_and_a_red_band() -> None:
    spans = [Span("db.service", "m1", 0, 12), Span("db.service", "m3", 9, 20)]
    root = parse(render_timeline(spans, [], title="chaos", start=0, end=20))
    runs = classed(root, "run")
    assert runs[0].get("y") != runs[1].get("y")
    (band,) = classed(root, "double-run")
    assert "from 9.00s to 12.00s" in band.find(f"{SVG}title").text


def test_user_text_is_escaped() -> None:
    spans = [Span('<x"&>.service', "m1", 0, 1)]
    svg = render_timeline(spans, [Mark(0.5, "<b>")], title="a & b", start=0, end=1)
    root = parse(svg)  # well-formed: every name and label was escaped
    assert root.find(f"{SVG}title").text == "a & b"


@pytest.mark.parametrize(
    ("spans", "expected"),
    [
        ([Span("u", "a", 0, 5), Span("u", "b", 5, 9)], []),  # back to back: a move, no overlap
        ([Span("u", "a", 0, None), Span("u", "b", 3, 4)], [("u", 3, 4)]),
        ([Span("u", "a", 0, 5), Span("v", "b", 1, 4)], []),  # two units, two lanes
        ([Span("u", "a", 0, 3), Span("u", "a", 2, 6)], []),  # one machine: a restart, not twice
    ],
)
def test_double_runs(spans: list[Span], expected: list[tuple[str, float, float]]) -> None:
    assert double_runs(spans, 10) == expected


def test_rows_reuse_the_first_free_row() -> None:
    spans = [Span("u", "a", 0, 5), Span("u", "b", 2, 3), Span("u", "c", 4, 8), Span("u", "d", 6, 9)]
    assert rows_of(spans, 10) == [0, 1, 1, 0]


@pytest.mark.parametrize(
    ("duration", "width", "step"), [(20, 800, 2), (600, 800, 100), (3, 960, 0.5), (1, 100, 1)]
)
def test_tick_steps_are_round(duration: float, width: float, step: float) -> None:
    assert tick_step(duration, width) == pytest.approx(step)


def test_a_page_holds_every_picture() -> None:
    svg = render_timeline([Span("u", "m1", 0, 1)], [], title="t", start=0, end=1)
    assert page("failover", [svg, svg]).count("<svg") == 2


def test_the_writer_is_pure() -> None:
    assert io_imports(REPO / "flotilla/timeline_svg.py", REPO) == []
