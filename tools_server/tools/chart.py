"""Chart tools: read the data behind a bar chart drawn in vista-jax's own style.

`read_bar_chart` reads pixels, nothing else: it finds the axes (the longest black column and
row), the y-axis ticks and their numbers (glyph OCR), fits the pixel row of each tick
against its number, finds the bars as runs of one colour just above the x axis, converts
each bar's top row to a value, and reads the category labels under the axis (glyph OCR).
It holds only for charts drawn by `vista_jax.env.tasks.render.render_bar_chart` (saved
losslessly); a model-backed reader for arbitrary charts is a separate, later tool.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Any, Literal

import numpy as np
from PIL import Image
from pydantic import Field

from tools_server.registry import (INVALID_ARGUMENT, Tool, ToolArguments, ToolContext, ToolError,
                                   ToolOutput)
from tools_server.tools import glyph_ocr
from tools_server.tools.perception import ImageId

_DARK, _LIGHT = 100, 200  # channel thresholds: black is max < _DARK, white is min > _LIGHT
_MIN_AXIS_PX = 40  # shortest axis line we accept, pixels
_TICK_LEN = 4  # tick marks reach this far left of the y axis
_INT_RE = re.compile(r"^-?\d+$")


class ChartReadError(ValueError):
    """The image is not a bar chart in our style (or this part of it cannot be read)."""


@dataclasses.dataclass(frozen=True)
class BarChart:
    labels: list[str]
    values: list[int]
    axis_x: int  # y-axis column, pixels
    axis_y: int  # x-axis row, pixels
    ticks: list[tuple[int, int]]  # (value, pixel row)


def _runs(mask: np.ndarray, min_gap: int = 1) -> list[tuple[int, int]]:
    """Inclusive [start, end] index runs of True in a 1-D mask, merging gaps < min_gap."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > min_gap)
    starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    ends = np.concatenate([idx[breaks], [idx[-1]]])
    return list(zip(starts.tolist(), ends.tolist()))


def read_bar_chart(image: Image.Image) -> BarChart:
    rgb = np.asarray(image.convert("RGB"))  # [H, W, 3] uint8
    height, width = rgb.shape[:2]
    darkest = rgb.max(axis=-1)  # a pixel is as dark as its brightest channel
    black = darkest < _DARK
    ink = darkest < 128  # glyph_ocr.ink_mask, from the same reduction
    white = rgb.min(axis=-1) > _LIGHT

    # Axes: the y axis is the column with the most black; the x axis the row with the most
    # black right of it.
    axis_x = int(black.sum(axis=0).argmax())
    axis_y = int(black[:, axis_x:].sum(axis=1).argmax())
    if (black[:, axis_x].sum() < _MIN_AXIS_PX or black[axis_y, axis_x:].sum() < _MIN_AXIS_PX
            or axis_x < _TICK_LEN + 2 or axis_y >= height - 2):
        raise ChartReadError("no chart axes found (expected a vertical bar chart with black axes)")

    # Y ticks: short black marks left of the axis; each one's number sits left of it.
    tick_rows = np.flatnonzero(black[:axis_y + 1, axis_x - _TICK_LEN:axis_x].all(axis=1))
    ticks: list[tuple[int, int]] = []
    for row in tick_rows.tolist():
        window = ink[max(0, row - 5):row + 6, :axis_x - _TICK_LEN - 1]
        text = glyph_ocr.read_line(window).text
        if _INT_RE.match(text):
            ticks.append((int(text), row))
    if len(ticks) < 2:
        raise ChartReadError(f"found {len(ticks)} numbered y-axis ticks; "
                             "need at least 2 to calibrate")
    values_t = np.array([t[0] for t in ticks], dtype=np.float64)
    rows_t = np.array([t[1] for t in ticks], dtype=np.float64)
    slope, intercept = np.polyfit(values_t, rows_t, 1)  # row = intercept + slope * value
    if slope >= 0 or np.abs(intercept + slope * values_t - rows_t).max() > 1.5:
        raise ChartReadError("y-axis tick numbers do not lie on a straight increasing scale")

    # Bars: runs of one colour (neither black nor white) in the row just above the x axis.
    row = axis_y - 1
    coloured = ~black[row] & ~white[row]
    coloured[:axis_x + 1] = False
    bars: list[tuple[float, int]] = []  # (centre column, value)
    x = 0
    while x < width:
        if not coloured[x]:
            x += 1
            continue
        colour = rgb[row, x]
        end = x
        while end + 1 < width and coloured[end + 1] and (rgb[row, end + 1] == colour).all():
            end += 1
        centre = (x + end) // 2
        same = (rgb[:axis_y, centre] == colour).all(axis=-1)
        top = axis_y - 1
        while top - 1 >= 0 and same[top - 1]:
            top -= 1
        bars.append(((x + end) / 2, int(round((top - intercept) / slope))))
        x = end + 1

    # Category labels: words below the x axis, right of the y axis.
    strip = ink[axis_y + 1:axis_y + 1 + 2 * glyph_ocr.CELL_H, axis_x + 1:]
    labels: list[tuple[float, str]] = []
    # Labels are >= 6 blank columns apart; glyphs inside a word at most 4 ('..').
    for c0, c1 in _runs(strip.any(axis=0), min_gap=5):
        lo = max(0, c0 - 2)
        reading = glyph_ocr.read_line(strip[:, lo:c1 + 2])
        labels.append((axis_x + 1 + (c0 + c1) / 2, reading.text))
    if not labels:
        raise ChartReadError("no category labels found under the x axis")

    # Each bar belongs to the nearest label; a label with no bar above it has value 0.
    values = [0] * len(labels)
    centres = np.array([c for c, _ in labels])
    half_slot = (np.diff(centres).min() / 2) if len(centres) > 1 else width
    for cx, value in bars:
        i = int(np.abs(centres - cx).argmin())
        if abs(centres[i] - cx) > half_slot:
            raise ChartReadError(f"a bar at x={cx:.0f} has no category label under it")
        values[i] = value
    return BarChart([t for _, t in labels], values, axis_x, axis_y, ticks)


def read_chart_argument(ctx: ToolContext, image_id: str) -> BarChart:
    """The chart in argument `image`, or an invalid_argument error saying why it is not one."""
    try:
        return read_bar_chart(ctx.image(image_id))
    except ChartReadError as exc:
        raise ToolError(INVALID_ARGUMENT, f"argument 'image': cannot read a bar chart: {exc}") from None


def table_output(rows: list[tuple[str, Any]]) -> ToolOutput:
    """`label | value` lines, with the same rows as data."""
    text = "\n".join(f"{label} | {value}" for label, value in rows)
    return ToolOutput(text, [], {"labels": [r[0] for r in rows], "values": [r[1] for r in rows]})


class ChartToTable(Tool):
    """Reads a vertical bar chart: its data table, one `label | value` line per bar, left to right.

    Handles only bar charts drawn in vista-jax's own rendered style (black axes, numbered
    y ticks, solid coloured bars, bitmap-font labels); other charts return an
    invalid_argument error. Values are read at the chart's precision (integers).
    """

    name = "chart_to_table"
    family = "chart"

    class Arguments(ToolArguments):
        image: ImageId

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        chart = read_chart_argument(ctx, args.image)
        return table_output(list(zip(chart.labels, chart.values)))


def select_bars(labels: list[str], values: list, wanted: list[str] | None = None,
                order: str = "chart") -> list[tuple[str, Any]]:
    """bar_values' selection on a read chart: (label, value) rows for the `wanted` labels
    (case-insensitive, in the order asked; all when None), sorted by `order` (stable)."""
    rows = list(zip(labels, values))
    if wanted is not None:
        by_key = {label.casefold(): (label, value) for label, value in rows}
        missing = [q for q in wanted if q.casefold() not in by_key]
        if missing:
            raise ToolError(INVALID_ARGUMENT,
                            f"argument 'labels': no bar labelled {', '.join(map(repr, missing))}; "
                            f"the chart's labels are {', '.join(labels)}")
        rows = [by_key[q.casefold()] for q in wanted]
    if order != "chart":
        rows = sorted(rows, key=lambda r: r[1], reverse=order == "descending")
    return rows


class BarValues(Tool):
    """Reads chosen bars of a vertical bar chart: one `label | value` line per bar.

    `labels` picks bars by their category label, in the order given (case-insensitive);
    omit it for every bar. `order` sorts the lines: "chart" (as given, or left to right),
    "descending" (largest first) or "ascending" (smallest first). Handles only bar charts
    drawn in vista-jax's own rendered style, like chart_to_table.
    """

    name = "bar_values"
    family = "chart"

    class Arguments(ToolArguments):
        image: ImageId
        labels: Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]] | None, Field(
            default=None, min_length=1, max_length=32,
            description="category labels of the bars to read, in the order wanted; "
                        "omit for every bar")] = None
        order: Literal["chart", "descending", "ascending"] = Field(
            default="chart", description="chart: as given (or left to right); descending: "
                                         "largest value first; ascending: smallest first")

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        chart = read_chart_argument(ctx, args.image)
        return table_output(select_bars(chart.labels, chart.values, args.labels, args.order))
