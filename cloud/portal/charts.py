"""Telemetry charts drawn on the server as SVG: no chart library, nothing to download, and a
chart is there even with JavaScript off. Each chart has a text summary for screen readers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 220
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 12, 12, 28
COLOURS = ("#b3261e", "#1f5fbf", "#1b7f3b", "#8a4fbf", "#a15c00")
"""Colours of successive lines (each also named in the legend, so colour is not the only cue)."""


@dataclass(frozen=True, slots=True)
class Line:
    """One point's readings as (ms, value) pairs, with how to name it."""

    name: str
    label: str
    unit: str
    values: tuple[tuple[int, float], ...]


def lines_from(
    series: Mapping[str, Sequence[Mapping[str, Any]]], labels: Mapping[str, tuple[str, str]]
) -> list[Line]:
    """Lines from `cloud.twin.figures.timeseries` output (raw ``value`` or bucket ``avg``), for the
    points named in `labels` ({point: (label, unit)}), numeric readings only."""
    out = []
    for name, (label, unit) in labels.items():
        values = []
        for row in series.get(name, ()):
            value = row.get("avg", row.get("value"))
            if isinstance(value, int | float) and not isinstance(value, bool):
                values.append((int(row["ts"]), float(value)))
        out.append(Line(name, label, unit, tuple(values)))
    return out


def chart_svg(title: str, lines: Sequence[Line], since_ms: int, until_ms: int, when: Any) -> Markup:
    """An SVG line chart of `lines` over [since_ms, until_ms); `when` formats axis times."""
    drawn = [line for line in lines if line.values]
    if not drawn or until_ms <= since_ms:
        return Markup('<p class="muted">No readings in this range.</p>')
    # fit the time axis to the data: a boiler heard from only for the last ten minutes of a
    # day gets ten minutes of chart, not a day with a line squeezed into its right edge
    since_ms = max(since_ms, min(ts for line in drawn for ts, _ in line.values))
    if until_ms <= since_ms:
        until_ms = since_ms + 1
    lo = min(v for line in drawn for _, v in line.values)
    hi = max(v for line in drawn for _, v in line.values)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    inner_w = WIDTH - PAD_LEFT - PAD_RIGHT
    inner_h = HEIGHT - PAD_TOP - PAD_BOTTOM

    def x(ts: int) -> float:
        return PAD_LEFT + inner_w * (ts - since_ms) / (until_ms - since_ms)

    def y(value: float) -> float:
        return PAD_TOP + inner_h * (1 - (value - lo) / (hi - lo))

    unit = drawn[0].unit
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" preserveAspectRatio="none">',
        f'<rect x="{PAD_LEFT}" y="{PAD_TOP}" width="{inner_w}" height="{inner_h}" '
        'fill="none" stroke="#ccc"/>',
    ]
    for index, line in enumerate(drawn):
        colour = COLOURS[index % len(COLOURS)]
        points = " ".join(f"{x(ts):.1f},{y(v):.1f}" for ts, v in line.values)
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}" '
            f'data-point="{escape(line.name)}"/>'
        )
    parts.append("</svg>")
    # axis text in HTML, not in the stretched SVG, so that it stays readable on a phone
    axis = (
        '<div class="chart-axis">'
        f'<span class="axis-y">{escape(f"{lo:.1f}")}\N{EN DASH}{escape(f"{hi:.1f}")} '
        f"{escape(unit)}</span>"
        f'<span class="axis-x"><time>{escape(when(since_ms))}</time> \N{EN DASH} '
        f"<time>{escape(when(until_ms))}</time></span></div>"
    )
    legend = "".join(
        f'<li><span class="swatch" style="background:{COLOURS[i % len(COLOURS)]}"></span>'
        f"{escape(line.label)}: {_summary(line)}</li>"
        for i, line in enumerate(drawn)
    )
    return Markup("".join(parts) + axis + f'<ul class="legend">{legend}</ul>')


def _summary(line: Line) -> str:
    values = [v for _, v in line.values]
    latest = values[-1]
    return (
        f"latest {latest:.1f} {escape(line.unit)}, "
        f"range {min(values):.1f}\N{EN DASH}{max(values):.1f} {escape(line.unit)} "
        f"({len(values):,} reading{'' if len(values) == 1 else 's'})"
    )
