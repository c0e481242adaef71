"""Timelines as static SVG: per lane (a unit), where it ran over time, and the moments that
explain it (a kill, a partition, a lease expiry). Shared by the benchmarks' pictures and the
dashboard's failover pictures; pure (text in, text out), no plotting library.

A lane that ran on two machines at once gets a second row for the overlapping run and a red
band over the overlap, so a double run shows at a glance; a gap is an empty stretch of lane.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

LABEL_WIDTH = 170  # the lane names on the left
ROW_HEIGHT = 18
LANE_GAP = 8
HEADER = 24  # the title
MARK_LABEL_ROWS = 3  # mark labels are staggered over this many rows so neighbours stay legible
MARK_LABEL_HEIGHT = 12
AXIS_HEIGHT = 22
LEGEND_HEIGHT = 22
# Machines get these colours in order of first appearance (colour-blind friendly, Okabe-Ito).
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000")
MARK_COLOURS = {
    "fault": "#d00",  # kill, stop, partition, etcd down
    "repair": "#080",  # heal, start
    "lease": "#a0a",  # a lease expired
    "schedule": "#333",  # the engine rescheduled
    "start": "#0072b2",  # systemd started the unit
}
DOUBLE_RUN = "#f00"
END_TEXT = '<text text-anchor="end" dx="-4" x='  # a mark near the right edge: its label to the left


@dataclass(frozen=True)
class Span:
    """One run of a unit (the lane) on one machine; `end` None: still running at the end."""

    lane: str
    machine: str
    start: float  # seconds, on whatever clock every span and mark of one picture shares
    end: float | None = None


@dataclass(frozen=True)
class Mark:
    """A moment worth a vertical line: across every lane, or in `lane` only."""

    at: float
    label: str
    kind: str = "fault"  # a key of MARK_COLOURS
    lane: str | None = None


def rows_of(spans: Sequence[Span], end: float) -> list[int]:
    """The row inside its lane for each span: the first row free when it starts (row 0 unless
    the lane ran twice at once)."""
    rows = [0] * len(spans)
    busy_until: dict[str, list[float]] = {}
    for index in sorted(range(len(spans)), key=lambda i: (spans[i].start, spans[i].machine)):
        span = spans[index]
        lane_rows = busy_until.setdefault(span.lane, [])
        row = next((r for r, until in enumerate(lane_rows) if until <= span.start), len(lane_rows))
        if row == len(lane_rows):
            lane_rows.append(0.0)
        lane_rows[row] = end if span.end is None else span.end
        rows[index] = row
    return rows


def double_runs(spans: Sequence[Span], end: float) -> list[tuple[str, float, float]]:
    """(lane, from, to) for every stretch where one lane ran on two machines at once."""
    found = []
    by_lane: dict[str, list[Span]] = {}
    for span in spans:
        by_lane.setdefault(span.lane, []).append(span)
    for lane, lane_spans in by_lane.items():
        ordered = sorted(lane_spans, key=lambda s: s.start)
        for i, first in enumerate(ordered):
            for second in ordered[i + 1 :]:
                first_end = end if first.end is None else first.end
                second_end = end if second.end is None else second.end
                if second.machine != first.machine and second.start < first_end:
                    found.append((lane, second.start, min(first_end, second_end)))
    return found


def tick_step(duration: float, width: float) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving a tick about every 80 pixels."""
    wanted = max(duration, 1e-9) * 80 / max(width, 1)
    power = 10 ** math.floor(math.log10(wanted))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= wanted)


def render_timeline(
    spans: Sequence[Span],
    marks: Sequence[Mark],
    *,
    title: str,
    start: float,
    end: float,
    lanes: Sequence[str] | None = None,
    width: int = 960,
    origin: float | None = None,
) -> str:
    """The SVG document. Times on the axis count from `origin` (default `start`); `lanes`
    fixes the order of the lanes (default: by first run)."""
    end = max(end, start + 1e-3)
    origin = start if origin is None else origin
    order = list(lanes) if lanes is not None else list(dict.fromkeys(s.lane for s in spans))
    rows = rows_of(spans, end)
    lane_rows = {lane: 1 for lane in order}
    for span, row in zip(spans, rows, strict=True):
        lane_rows[span.lane] = max(lane_rows.get(span.lane, 1), row + 1)
    order += [lane for lane in lane_rows if lane not in order]
    plot = max(width - LABEL_WIDTH - 10, 100)

    def x(at: float) -> float:
        return LABEL_WIDTH + (min(max(at, start), end) - start) / (end - start) * plot

    top = HEADER + MARK_LABEL_ROWS * MARK_LABEL_HEIGHT + 4
    lane_top, y = {}, top
    for lane in order:
        lane_top[lane] = y
        y += lane_rows[lane] * ROW_HEIGHT + LANE_GAP
    plot_bottom = y
    height = plot_bottom + AXIS_HEIGHT + LEGEND_HEIGHT
    colours = machine_colours(spans)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f"<title>{text(title)}</title>",
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="4" y="16" font-size="13" font-weight="bold">{text(title)}</text>',
    ]
    for lane in order:
        height_of_lane = lane_rows[lane] * ROW_HEIGHT
        parts.append(
            f'<rect x="{LABEL_WIDTH}" y="{lane_top[lane]}" width="{plot}" height="{height_of_lane}"'
            ' fill="#f4f4f4"/>'
            f'<text x="4" y="{lane_top[lane] + 13}">{text(shorten(lane, 26))}</text>'
        )
    for span, row in zip(spans, rows, strict=True):
        left, right = x(span.start), x(end if span.end is None else span.end)
        y0 = lane_top[span.lane] + row * ROW_HEIGHT + 2
        parts.append(
            f'<rect class="run" x="{left:.1f}" y="{y0}" width="{max(right - left, 1):.1f}"'
            f' height="{ROW_HEIGHT - 4}" fill="{colours[span.machine]}"'
            f' data-machine="{text(span.machine)}"><title>{text(span.lane)} on'
            f" {text(span.machine)}: {span.start - origin:.2f}s to "
            f"{'the end' if span.end is None else f'{span.end - origin:.2f}s'}</title></rect>"
        )
        if right - left > 7 * len(span.machine):
            parts.append(
                f'<text x="{left + 3:.1f}" y="{y0 + 11}" fill="#fff">{text(span.machine)}</text>'
            )
    for lane, first, last in double_runs(spans, end):
        lane_height = lane_rows[lane] * ROW_HEIGHT
        parts.append(
            f'<rect class="double-run" x="{x(first):.1f}" y="{lane_top[lane]}"'
            f' width="{max(x(last) - x(first), 2):.1f}" height="{lane_height}" fill="{DOUBLE_RUN}"'
            f' fill-opacity="0.35" stroke="{DOUBLE_RUN}"><title>{text(lane)} ran twice'
            f" from {first - origin:.2f}s to {last - origin:.2f}s</title></rect>"
        )
    labelled = 0  # labels take turns on the rows above the lanes
    for mark in sorted(marks, key=lambda m: m.at):
        line = mark_svg(mark, labelled, x(mark.at), lane_top, lane_rows, top, plot_bottom)
        parts.append(line if x(mark.at) < width - 140 else line.replace("<text x=", END_TEXT))
        labelled += bool(mark.label)
    parts.append(axis_svg(start, end, origin, x, plot, plot_bottom))
    parts.append(legend_svg(colours, plot_bottom + AXIS_HEIGHT + 14))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def mark_svg(
    mark: Mark,
    index: int,
    at: float,
    lane_top: dict[str, int],
    lane_rows: dict[str, int],
    top: int,
    bottom: int,
) -> str:
    colour = MARK_COLOURS.get(mark.kind, "#555")
    if mark.lane is not None and mark.lane in lane_top:
        y0, y1 = lane_top[mark.lane], lane_top[mark.lane] + lane_rows[mark.lane] * ROW_HEIGHT
    else:
        y0, y1 = top, bottom
    label_y = HEADER + (index % MARK_LABEL_ROWS + 1) * MARK_LABEL_HEIGHT
    if not mark.label:  # a tick in its lane only (a unit started or stopped, say)
        return (
            f'<g class="mark" data-kind="{text(mark.kind)}"><line x1="{at:.1f}" x2="{at:.1f}"'
            f' y1="{y0}" y2="{y1}" stroke="{colour}" stroke-width="1"/></g>'
        )
    return (
        f'<g class="mark" data-kind="{text(mark.kind)}"><line x1="{at:.1f}" x2="{at:.1f}"'
        f' y1="{y0}" y2="{y1}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="4 2"/>'
        f'<line x1="{at:.1f}" x2="{at:.1f}" y1="{label_y + 2}" y2="{y0}" stroke="{colour}"'
        f' stroke-width="0.5"/><text x="{at + 2:.1f}" y="{label_y}" fill="{colour}">'
        f"{text(mark.label)}</text></g>"
    )


def axis_svg(
    start: float, end: float, origin: float, x: Callable[[float], float], plot: int, bottom: int
) -> str:
    step = tick_step(end - start, plot)
    parts = [
        f'<line x1="{LABEL_WIDTH}" x2="{LABEL_WIDTH + plot}" y1="{bottom}" y2="{bottom}"'
        ' stroke="#000"/>'
    ]
    tick = math.ceil((start - origin) / step) * step
    while origin + tick <= end + 1e-9:
        at = x(origin + tick)
        parts.append(
            f'<line x1="{at:.1f}" x2="{at:.1f}" y1="{bottom}" y2="{bottom + 4}" stroke="#000"/>'
            f'<text x="{at:.1f}" y="{bottom + 15}" text-anchor="middle">{tick:g}s</text>'
        )
        tick += step
    return "".join(parts)


def legend_svg(colours: dict[str, str], y: int) -> str:
    parts, left = [], LABEL_WIDTH
    for machine, colour in colours.items():
        parts.append(
            f'<rect x="{left}" y="{y - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{left + 14}" y="{y}">{text(machine)}</text>'
        )
        left += 24 + 7 * len(machine)
    parts.append(
        f'<rect x="{left}" y="{y - 9}" width="10" height="10" fill="{DOUBLE_RUN}"'
        f' fill-opacity="0.35"/><text x="{left + 14}" y="{y}">ran twice</text>'
    )
    return "".join(parts)


def machine_colours(spans: Sequence[Span]) -> dict[str, str]:
    machines = sorted({span.machine for span in spans})
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(machines)}


def shorten(name: str, limit: int) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def text(value: str) -> str:
    """Text and attribute values escaped for XML (names come from users' unit files)."""
    return html.escape(value, quote=True)


def page(title: str, pictures: Sequence[str]) -> str:
    """An HTML page holding several pictures (one per TTL, say), for a browser."""
    body = "\n".join(f"<figure>{svg}</figure>" for svg in pictures)
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{text(title)}</title></head>'
        f"<body>\n<h1>{text(title)}</h1>\n{body}\n</body></html>\n"
    )
