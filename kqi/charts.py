"""Charts drawn on the server as inline SVG, so a page needs no script and nothing from a CDN: bars
(a sum per period, the usage page) and lines over time (the dashboard). Every text is escaped."""
from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from markupsafe import escape

LEFT, RIGHT, TOP, BOTTOM = 48, 8, 12, 28  # room for the value labels (left) and the period/time labels (below)
AXIS, GRID, INK, MUTED = "#888", "#e3e6ec", "#1d2330", "#5b6475"
TICK_HOURS = (1, 2, 3, 6, 12, 24)


def _open(width: int, height: int, label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">')


def bar_chart(bars: Sequence[tuple[str, float]], label: str, width: int = 640, height: int = 240) -> str:
    """A bar per (name, value), in the order given, scaled to the largest."""
    top = max((value for _name, value in bars), default=0.0) or 1.0
    plot_h = height - 40
    step = (width - LEFT - RIGHT) / max(1, len(bars))
    parts = [_open(width, height, label),
             f'<line x1="{LEFT}" y1="{height - BOTTOM}" x2="{width - 4}" y2="{height - BOTTOM}" stroke="{AXIS}"/>',
             f'<text x="4" y="16" font-size="11">{escape(f"{top:g}")}</text>']
    for i, (name, value) in enumerate(bars):
        bar_h = plot_h * value / top
        x = LEFT + i * step + step * 0.1
        parts.append(f'<rect x="{x:.1f}" y="{height - BOTTOM - bar_h:.1f}" width="{step * 0.8:.1f}" '
                     f'height="{bar_h:.1f}" fill="#3b7dd8"><title>{escape(name)}: {value:.2f}</title></rect>')
        parts.append(f'<text x="{x:.1f}" y="{height - 10}" font-size="10">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def nice_ceiling(value: float, whole: bool = False) -> float:
    """The smallest of 1, 2, 5 x 10^n at or above value (at least 1): a scale's top that reads well.
    `whole`: of 2, 4, 10 x 10^n instead, so that its half (the middle grid line) is a whole number too."""
    steps = (2, 4, 10) if whole else (1, 2, 5, 10)
    if value <= 1:
        return float(steps[0] if whole else 1)
    power = 10 ** math.floor(math.log10(value))
    return float(next(step * power for step in steps if step * power >= value))


def _ticks(start: datetime, end: datetime) -> list[datetime]:
    """Whole hours, about four of them across the span, on multiples of the step since midnight."""
    span_h = (end - start).total_seconds() / 3600
    step = next((h for h in TICK_HOURS if span_h / h <= 6), 24)
    tick = start.replace(minute=0, second=0, microsecond=0)
    tick += timedelta(hours=(step - tick.hour % step) % step)
    if tick < start:
        tick += timedelta(hours=step)
    found = []
    while tick <= end:
        found.append(tick)
        tick += timedelta(hours=step)
    return found


def _segments(points: Sequence[tuple[datetime, float | None]], gap: timedelta | None) -> list[list[tuple[datetime, float]]]:
    """Runs of points to join with a line: broken at a missing value, or where no point came for
    longer than `gap` (the recorder was not running; a line across would invent values)."""
    runs: list[list[tuple[datetime, float]]] = []
    previous: datetime | None = None
    for at, value in points:
        if value is None:
            previous = None
            continue
        if previous is None or (gap is not None and at - previous > gap):
            runs.append([])
        runs[-1].append((at, value))
        previous = at
    return runs


def line_chart(points: Sequence[tuple[datetime, float | None]], start: datetime, end: datetime, label: str, *,
               y_max: float | None = None, unit: str = "", gap: timedelta | None = None, counts: bool = False,
               color: str = "#3b7dd8", width: int = 640, height: int = 200) -> str:
    """A value over time from `start` to `end` (naive UTC, labelled HH:MM UTC), points in time order.
    The scale runs from 0 to y_max (default: a round number above the largest value; for `counts`,
    one whose half is whole too)."""
    values = [value for _at, value in points if value is not None]
    top = y_max if y_max is not None else nice_ceiling(max(values, default=0.0), whole=counts)
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    span = (end - start).total_seconds() or 1.0
    base = TOP + plot_h

    def x(at: datetime) -> float:
        return LEFT + plot_w * min(max((at - start).total_seconds() / span, 0.0), 1.0)

    def y(value: float) -> float:
        return base - plot_h * min(max(value / top, 0.0), 1.0)

    parts = [_open(width, height, label)]
    for fraction in (0.0, 0.5, 1.0):
        level = base - plot_h * fraction
        parts.append(f'<line x1="{LEFT}" y1="{level:.1f}" x2="{width - RIGHT}" y2="{level:.1f}" '
                     f'stroke="{AXIS if fraction == 0 else GRID}"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{level + 4:.1f}" font-size="11" text-anchor="end" fill="{MUTED}">'
                     f'{escape(f"{top * fraction:g}{unit}")}</text>')
    for tick in _ticks(start, end):
        parts.append(f'<line x1="{x(tick):.1f}" y1="{base}" x2="{x(tick):.1f}" y2="{base + 4}" stroke="{AXIS}"/>')
        parts.append(f'<text x="{x(tick):.1f}" y="{height - 8}" font-size="11" text-anchor="middle" fill="{MUTED}">'
                     f'{tick:%H:%M}</text>')
    for run in _segments(points, gap):
        line = " ".join(f"{x(at):.1f},{y(value):.1f}" for at, value in run)
        if len(run) == 1:
            parts.append(f'<circle cx="{x(run[0][0]):.1f}" cy="{y(run[0][1]):.1f}" r="2.5" fill="{color}"/>')
            continue
        area = f"{x(run[0][0]):.1f},{base} {line} {x(run[-1][0]):.1f},{base}"
        parts.append(f'<polygon points="{area}" fill="{color}" fill-opacity="0.12"/>')
        parts.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="1.5"/>')
    if not values:
        parts.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h / 2:.1f}" font-size="12" '
                     f'text-anchor="middle" fill="{MUTED}">no samples in this period</text>')
    parts.append(f'<text x="{width - RIGHT}" y="{TOP - 1}" font-size="10" text-anchor="end" fill="{MUTED}">UTC</text>')
    parts.append("</svg>")
    return "".join(parts)
