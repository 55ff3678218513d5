"""Geometry for the inline SVG charts: computed here, drawn by the templates, no JS library."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from capi_destinations.reports import HourCounts

CHART_WIDTH = 480
CHART_HEIGHT = 120
# The bars' share of their hour's slot; the rest is the gap between bars.
BAR_SHARE = 0.7
# Stacked bottom to top, each with its CSS class (the colour) and its word.
SERIES = (
    ("delivered", "Delivered"),
    ("failed", "Failed"),
    ("rejected", "Rejected"),
    ("pending", "Pending"),
)


@dataclass(frozen=True)
class Segment:
    series: str
    label: str
    count: int
    y: float
    height: float


@dataclass(frozen=True)
class Bar:
    hour: datetime
    x: float
    width: float
    segments: tuple[Segment, ...]
    total: int
    # A time label under every sixth bar keeps the axis readable.
    axis_label: str

    @property
    def title(self) -> str:
        """The hover text: the hour and every count in words."""
        counts = ", ".join(f"{segment.count} {segment.label.lower()}" for segment in self.segments)
        return f"{self.hour:%H:00} UTC: {counts or 'no events'}"


@dataclass(frozen=True)
class HourlyChart:
    width: int
    height: int
    bars: tuple[Bar, ...]
    peak: int

    @property
    def is_empty(self) -> bool:
        return self.peak == 0


def stacked_hourly_chart(
    hours: Sequence[HourCounts], *, width: int = CHART_WIDTH, height: int = CHART_HEIGHT
) -> HourlyChart:
    """Stacked bars (delivered / failed / rejected / pending), scaled to the busiest hour."""
    peak = max((hour.total for hour in hours), default=0)
    slot = width / max(len(hours), 1)
    bar_width = round(slot * BAR_SHARE, 2)
    bars = []
    for index, hour in enumerate(hours):
        segments = []
        top = float(height)
        for series, label in SERIES:
            count = getattr(hour, series)
            if not count:
                continue
            segment_height = round(height * count / peak, 2) if peak else 0.0
            top -= segment_height
            segments.append(
                Segment(
                    series=series, label=label, count=count, y=round(top, 2), height=segment_height
                )
            )
        bars.append(
            Bar(
                hour=hour.hour,
                x=round(index * slot + (slot - bar_width) / 2, 2),
                width=bar_width,
                segments=tuple(segments),
                total=hour.total,
                axis_label=f"{hour.hour:%H:00}" if index % 6 == 0 else "",
            )
        )
    return HourlyChart(width=width, height=height, bars=tuple(bars), peak=peak)


# Meta's guidance: 7 is the working threshold, below 5 attribution suffers (USERS.md).
MATCH_QUALITY_GUIDES = ((7.0, "7 good"), (5.0, "5 weak"))
# The guides' labels sit right of the plotted hours, in a margin of their own, so no hour's dot
# hides them; the chart is tall enough that the two guides are farther apart than a label
# (11 units) is tall.
SPARKLINE_HEIGHT = 80
SPARKLINE_LABEL_MARGIN = 52


@dataclass(frozen=True)
class Sparkline:
    width: int
    height: int
    points: str
    latest: float | None
    dots: tuple[tuple[float, float, str], ...]
    guides: tuple[tuple[float, str], ...] = ()

    @property
    def label_x(self) -> float:
        """Where the guides' labels start: just right of the last hour."""
        return self.width + 6

    @property
    def view_width(self) -> int:
        """The drawing's width with the labels' margin."""
        return self.width + SPARKLINE_LABEL_MARGIN


def match_quality_sparkline(
    series: Sequence[tuple[datetime, float | None]],
    *,
    width: int = CHART_WIDTH,
    height: int = SPARKLINE_HEIGHT,
    maximum: float = 10.0,
) -> Sparkline:
    """A polyline of hourly match-quality averages on a fixed 0-10 scale (gaps skipped)."""
    slot = width / max(len(series), 1)
    dots = []
    for index, (hour, value) in enumerate(series):
        if value is None:
            continue
        x = round(index * slot + slot / 2, 2)
        y = round(height - height * min(value, maximum) / maximum, 2)
        dots.append((x, y, f"{hour:%H:00} UTC: {value}"))
    latest = next((value for _, value in reversed(series) if value is not None), None)
    return Sparkline(
        width=width,
        height=height,
        points=" ".join(f"{x},{y}" for x, y, _ in dots),
        latest=latest,
        dots=tuple(dots),
        guides=tuple(
            (round(height - height * value / maximum, 2), label)
            for value, label in MATCH_QUALITY_GUIDES
        ),
    )
