"""Server-rendered charts for the overview pages: inline SVG, no script.

Every bar carries a <title>, and each chart a summary and a table of its
values for screen readers (templates/partials/chart.html draws it).
"""

from __future__ import annotations

import math
from datetime import date


def duration_text(seconds) -> str:
    """A duration for people: '45 s', '12 min', '2 h 5 min', '3 d 4 h'; '—' when unknown."""
    if seconds is None:
        return "—"
    total = max(int(round(seconds)), 0)
    if total < 60:
        return f"{total} s"
    minutes = total // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _nice_ceiling(value: int) -> int:
    """The top of a count axis: 1, 2, 4, 5, 10, 20, 40, 50, 100... at least ``value``."""
    if value <= 1:
        return 1
    exponent = 10 ** int(math.floor(math.log10(value)))
    for step in (1, 2, 4, 5, 10):
        if step * exponent >= value:
            return step * exponent
    return 10 * exponent  # pragma: no cover - the loop always returns


def bar_chart(
    values: list[int],
    labels: list[str],
    *,
    chart_id: str,
    title: str,
    titles: list[str] | None = None,
    tick_labels: list[str] | None = None,
    tone: str = "",
    spark: bool = False,
    label_heading: str = "Day",
    value_heading: str = "Count",
    scale_to: int = 0,
) -> dict:
    """The geometry of a bar chart for templates/partials/chart.html.

    ``values`` and ``labels`` are one per bar; ``titles`` (optional) are the hover and
    screen-reader texts of each bar (default "label: value"); ``tick_labels`` the
    texts under the bars ("" for none; default every label). ``spark`` draws a tiny
    chart without axes, for a table cell. ``tone`` is a CSS modifier (e.g. "closed").
    ``label_heading`` and ``value_heading`` head the columns of the chart's data table
    (read by screen readers instead of the bars). ``scale_to``: draw as if the largest
    value were at least this, so charts shown side by side share one scale.
    """
    values = [max(int(v or 0), 0) for v in values]
    count = max(len(values), 1)
    titles = titles or [f"{label}: {value}" for label, value in zip(labels, values, strict=False)]
    if spark:
        width, height = 120, 26
        left, right, top, bottom = 0, 0, 2, 2
    else:
        width, height = 460, 170
        left, right, top, bottom = 30, 16, 18, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = _nice_ceiling(max([*values, scale_to]))
    band = plot_w / count
    bar_w = band * (0.7 if not spark else 0.75)
    base = top + plot_h
    bars = []
    for index, value in enumerate(values):
        bar_h = plot_h * value / top_value
        if spark and value == 0:
            bar_h = 1  # a hairline, so an empty day still reads as a day
        x = left + index * band
        bars.append(
            {
                "x": round(x + (band - bar_w) / 2, 2),
                "width": round(bar_w, 2),
                "y": round(base - bar_h, 2),
                "height": round(bar_h, 2),
                "value_x": round(x + band / 2, 2),
                "value_y": round(base - bar_h - 4, 2),
                "hit_x": round(x, 2),
                "hit_width": round(band, 2),
                "value": value,
                "empty": value == 0,
                "title": titles[index] if index < len(titles) else str(value),
                "label": labels[index] if index < len(labels) else "",
            }
        )
    ticks = []
    if not spark:
        texts = tick_labels if tick_labels is not None else labels
        for index, text in enumerate(texts[:count]):
            if text:
                ticks.append({"x": round(left + index * band + band / 2, 2), "text": text})
    grid = []
    if not spark:
        # Lines at 0, the top and (when it is a whole number) half-way.
        levels = {0, top_value} | ({top_value // 2} if top_value % 2 == 0 else set())
        grid = [
            {"value": level, "y": round(base - plot_h * level / top_value, 2)}
            for level in sorted(levels)
        ]
    total = sum(values)
    peak = max(values, default=0)
    if total:
        peak_label = labels[values.index(peak)] if labels else ""
        summary = f"{total} in all; the most, {peak}, on {peak_label}."
    else:
        summary = "None in this period."
    return {
        "id": chart_id,
        "title": title,
        "desc": summary,
        "width": width,
        "height": height,
        "left": left,
        "right": width - right,
        "top": top,
        "base": base,
        "plot_height": plot_h,
        "show_values": not spark and count <= 14,
        "label_heading": label_heading,
        "value_heading": value_heading,
        "tick_y": height - 7,
        "bars": bars,
        "ticks": ticks,
        "grid": grid,
        "total": total,
        "tone": tone,
        "spark": spark,
    }


def day_labels(days: list[date]) -> tuple[list[str], list[str], list[str]]:
    """Full labels ('Mon 3 Mar'), tick labels under the bars (a few), short labels."""
    count = len(days)
    every = 1 if count <= 7 else 2 if count <= 14 else 5
    full = [f"{d:%a} {d.day} {d:%b}" for d in days]
    # A week reads best by weekday, longer periods by date.
    short = [f"{d:%a} {d.day}" if count <= 7 else f"{d.day} {d:%b}" for d in days]
    # Count back from today, so the last bar (today) is always labelled.
    ticks = [text if (count - 1 - i) % every == 0 else "" for i, text in enumerate(short)]
    return full, ticks, short
