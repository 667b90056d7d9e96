"""Chart tools: read the data behind charts drawn in vista-jax's own style.

The classical readers read pixels, nothing else, and hold only for charts drawn by
`vista_jax.env.tasks.render` (`render_bar_chart`, `render_grouped_bar_chart`,
`render_line_chart`, `render_pie_chart`), saved losslessly:

- axes: the y axis is the longest black column, the x axis the longest black row right of
  it; the y ticks' numbers are read with glyph OCR and fitted against their pixel rows (the
  value scale), the category labels under the x axis with glyph OCR;
- legend: squares of one palette colour with white all round, each with a name to its
  right (glyph OCR);
- bars: solid rectangles of one colour standing on the x axis; a bar's top row is its value;
- line points: filled dots (5x5 core of one colour), one per series at each label; the
  dot's centre row is its value;
- pies: a disc of coloured wedges (no axes); each wedge's share is the fraction of angles
  around the centre where it is the majority colour, rounded to a whole percent.

`chart_type` names which of these a chart is from that evidence. `chart_to_table` also has a
model-backed backend (`backend="hf"`: a Pix2Struct / DePlot checkpoint, see
`tools_server.tools.hf_backends`) for charts in other styles.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Annotated, Any, Literal

import numpy as np
from PIL import Image, ImageDraw
from pydantic import Field

from tools_server.registry import (EXECUTION_FAILED, INVALID_ARGUMENT, Tool, ToolArguments,
                                   ToolContext, ToolError, ToolOutput)
from tools_server.images import per_image
from tools_server.tools import glyph_ocr, hf_backends
from tools_server.tools.perception import ImageId

_DARK, _LIGHT = 100, 200  # channel thresholds: black is max < _DARK, white is min > _LIGHT
_MIN_AXIS_PX = 40  # shortest axis line we accept, pixels
_TICK_LEN = 4  # tick marks reach this far left of the y axis
_INT_RE = re.compile(r"^-?\d+$")
# Mirrors of vista_jax.env.tasks.render (a test keeps them in step).
SWATCH = 8  # render.SWATCH: side of a legend swatch
MARKER_RADIUS = 3  # render.MARKER_RADIUS
PALETTE_NAMES = {  # render.PALETTE -> render.COLOUR_NAMES
    (31, 119, 180): "blue", (255, 127, 14): "orange", (44, 160, 44): "green",
    (214, 39, 40): "red", (148, 103, 189): "purple", (140, 86, 75): "brown",
    (227, 119, 194): "pink", (188, 189, 34): "olive", (23, 190, 207): "cyan",
}
CHART_TYPES = ("bar", "grouped_bar", "line", "pie")
SINGLE_SERIES = "value"  # name of the one series of a chart without a legend
_CORE = 5  # side of the square of one colour that fits inside a marker dot, not in a line
_PIE_ANGLES = 3600  # angle samples around a pie (0.1 degree apart)
_MAX_PIXELS = 4_000_000  # larger images are not ours, and would cost ~1 GB of masks


class ChartReadError(ValueError):
    """The image is not a chart in our style (or this part of it cannot be read)."""


@dataclasses.dataclass(frozen=True)
class BarChart:
    labels: list[str]
    values: list[int]
    axis_x: int  # y-axis column, pixels
    axis_y: int  # x-axis row, pixels
    ticks: list[tuple[int, int]]  # (value, pixel row)


@dataclasses.dataclass(frozen=True)
class _Masks:
    rgb: np.ndarray  # [H, W, 3] uint8
    black: np.ndarray  # [H, W] bool
    ink: np.ndarray  # [H, W] bool: glyph_ocr.ink_mask
    white: np.ndarray  # [H, W] bool
    coloured: np.ndarray  # [H, W] bool: neither black nor white (palette colours)
    packed: np.ndarray  # [H, W] int32: r << 16 | g << 8 | b, one compare per colour test


def _masks(image: Image.Image) -> _Masks:
    rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))  # [H, W, 3] uint8
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    # (np.maximum beats .max(axis=-1) over a 3-wide axis by ~25x)
    darkest = np.maximum(np.maximum(r, g), b)  # a pixel is as dark as its brightest channel
    black = darkest < _DARK
    white = np.minimum(np.minimum(r, g), b) > _LIGHT
    packed = (r.astype(np.int32) << 16) | (g.astype(np.int32) << 8) | b
    return _Masks(rgb, black, darkest < 128, white, ~black & ~white, packed)


def _pack(colour: tuple[int, int, int]) -> int:
    return (colour[0] << 16) | (colour[1] << 8) | colour[2]


def _unpack(key: int) -> tuple[int, int, int]:
    return (key >> 16) & 255, (key >> 8) & 255, key & 255


def _runs(mask: np.ndarray, min_gap: int = 1) -> list[tuple[int, int]]:
    """Inclusive [start, end] index runs of True in a 1-D mask, merging gaps < min_gap."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > min_gap)
    starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    ends = np.concatenate([idx[breaks], [idx[-1]]])
    return list(zip(starts.tolist(), ends.tolist()))


def _window_sums(mask: np.ndarray, k: int) -> np.ndarray:
    """[H-k+1, W-k+1]: True pixels of `mask` [H, W] in each k x k window (by its top-left)."""
    h, w = mask.shape
    if h < k or w < k:
        return np.zeros((0, 0), dtype=np.int64)
    ii = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return ii[k:, k:] - ii[:-k, k:] - ii[k:, :-k] + ii[:-k, :-k]


# --- value axes ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ValueAxes:
    """The axes of a bar / grouped-bar / line chart, read from pixels."""
    axis_x: int  # y-axis column
    axis_y: int  # x-axis row
    y_top: int  # top row of the y-axis line
    x_end: int  # last column of the x-axis line
    ticks: list[tuple[int, int]]  # (value, pixel row), top to bottom
    slope: float  # rows per unit (negative: values grow upwards)
    intercept: float  # row of value 0
    labels: list[tuple[float, str]]  # (centre column of the label's ink, text), left to right

    def value(self, row: float) -> int:
        return int(round((row - self.intercept) / self.slope))

    def label_index(self, column: float, what: str) -> int:
        """The label whose slot holds `column`; ChartReadError when none is near."""
        centres = np.array([c for c, _ in self.labels])
        half_slot = (np.diff(centres).min() / 2) if len(centres) > 1 else self.x_end
        i = int(np.abs(centres - column).argmin())
        if abs(centres[i] - column) > half_slot:
            raise ChartReadError(f"{what} at x={column:.0f} has no category label under it")
        return i


def _axes_and_ticks(m: _Masks) -> tuple[int, int, list[tuple[int, int]], float, float]:
    """(axis_x, axis_y, ticks, slope, intercept) of a chart with black axes and numbered y ticks."""
    height = m.black.shape[0]
    black, ink = m.black, m.ink
    # Axes: the y axis is the column with the most black; the x axis the row with the most
    # black right of it.
    axis_x = int(black.sum(axis=0).argmax())
    axis_y = int(black[:, axis_x:].sum(axis=1).argmax())
    if (black[:, axis_x].sum() < _MIN_AXIS_PX or black[axis_y, axis_x:].sum() < _MIN_AXIS_PX
            or axis_x < _TICK_LEN + 2 or axis_y >= height - 2):
        raise ChartReadError("no chart axes found (expected black x and y axes)")

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
    return axis_x, axis_y, ticks, float(slope), float(intercept)


def _x_labels(m: _Masks, axis_x: int, axis_y: int, x_end: int | None = None
              ) -> list[tuple[float, str]]:
    """Category labels under the x axis, right of the y axis (up to column x_end)."""
    strip = m.ink[axis_y + 1:axis_y + 1 + 2 * glyph_ocr.CELL_H, axis_x + 1:x_end]
    labels: list[tuple[float, str]] = []
    # Labels are >= 6 blank columns apart; glyphs inside a word at most 4 ('..').
    for c0, c1 in _runs(strip.any(axis=0), min_gap=5):
        lo = max(0, c0 - 2)
        reading = glyph_ocr.read_line(strip[:, lo:c1 + 2])
        labels.append((axis_x + 1 + (c0 + c1) / 2, reading.text))
    if not labels:
        raise ChartReadError("no category labels found under the x axis")
    return labels


def _bar_runs(m: _Masks, axis_x: int, axis_y: int, slope: float, intercept: float
              ) -> list[tuple[int, int, int, tuple[int, int, int]]]:
    """(x0, x1, top, colour) of each run of one colour in the row just above the x axis."""
    rgb, width = m.rgb, m.rgb.shape[1]
    row = axis_y - 1
    coloured = ~m.black[row] & ~m.white[row]
    coloured[:axis_x + 1] = False
    runs = []
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
        runs.append((x, end, top, tuple(int(c) for c in colour)))
        x = end + 1
    return runs


def read_bar_chart(image: Image.Image) -> BarChart:
    """A single-series bar chart's labels and values (what chart_to_table and bar_values say)."""
    m = _masks(image)
    axis_x, axis_y, ticks, slope, intercept = _axes_and_ticks(m)
    bars = [((x0 + x1) / 2, int(round((top - intercept) / slope)))
            for x0, x1, top, _ in _bar_runs(m, axis_x, axis_y, slope, intercept)]
    labels = _x_labels(m, axis_x, axis_y)

    # Each bar belongs to the nearest label; a label with no bar above it has value 0.
    values = [0] * len(labels)
    centres = np.array([c for c, _ in labels])
    half_slot = (np.diff(centres).min() / 2) if len(centres) > 1 else m.rgb.shape[1]
    for cx, value in bars:
        i = int(np.abs(centres - cx).argmin())
        if abs(centres[i] - cx) > half_slot:
            raise ChartReadError(f"a bar at x={cx:.0f} has no category label under it")
        values[i] = value
    return BarChart([t for _, t in labels], values, axis_x, axis_y, ticks)


def read_value_axes(m: _Masks) -> ValueAxes:
    axis_x, axis_y, ticks, slope, intercept = _axes_and_ticks(m)
    col = np.flatnonzero(m.black[:axis_y + 1, axis_x])
    y_top = int(col[0])
    row = np.flatnonzero(m.black[axis_y, axis_x:])
    x_end = axis_x + int(row[-1])
    labels = _x_labels(m, axis_x, axis_y, x_end + 1)
    return ValueAxes(axis_x, axis_y, y_top, x_end, ticks, slope, intercept, labels)


# --- legend --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LegendEntry:
    name: str
    colour: tuple[int, int, int]
    box: tuple[int, int, int, int]  # swatch [x0, y0, x1, y1], x1 / y1 exclusive

    @property
    def colour_name(self) -> str:
        return PALETTE_NAMES.get(self.colour, "other")

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.colour)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "colour": self.colour_name, "hex": self.hex,
                "box": list(self.box)}


def read_legend(m: _Masks) -> list[LegendEntry]:
    """Legend entries top to bottom: SWATCH-square swatches of one colour, white all round,
    each with its name (glyph OCR) to the right. [] when the image has none."""
    s = SWATCH
    full = _window_sums(m.coloured, s) == s * s  # [H-s+1, W-s+1] by top-left
    ringed = _window_sums(~m.white, s + 2) == s * s  # [H-s-1, W-s-1]: nothing else around
    if ringed.size == 0:
        return []
    ys, xs = np.nonzero(full[1:1 + ringed.shape[0], 1:1 + ringed.shape[1]] & ringed)
    entries = []
    for y, x in zip((ys + 1).tolist(), (xs + 1).tolist()):
        patch = m.packed[y:y + s, x:x + s]
        if not (patch == patch[0, 0]).all():
            continue
        # The name's cell spans rows y-2 .. y+8 (render._draw_legend); it is the last thing
        # in its rows, so the window runs to the right edge.
        window = m.ink[max(0, y - 2):y + 9, x + s + 1:]
        name = glyph_ocr.read_line(window).text.strip()
        if name:
            entries.append(LegendEntry(name, _unpack(int(patch[0, 0])), (x, y, x + s, y + s)))
    return entries


# --- chart analysis ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Series:
    name: str
    colour: tuple[int, int, int] | None  # None for the bars of a single-series bar chart
    values: list[int]
    points: list[tuple[int, int]] | None = None  # line charts: each dot's centre (x, y)


@dataclasses.dataclass(frozen=True)
class ChartReading:
    chart_type: str  # one of CHART_TYPES
    labels: list[str]  # categories (x labels, or pie wedges in legend order)
    series: list[Series]  # bar / line without a legend / pie: one series
    axes: ValueAxes | None  # None for pies
    legend: list[LegendEntry]
    evidence: dict[str, Any]


def _colour_name(colour: tuple[int, int, int] | None) -> str | None:
    return None if colour is None else PALETTE_NAMES.get(colour, "other")


def _is_bar(m: _Masks, x0: int, x1: int, top: int, axis_y: int,
            colour: tuple[int, int, int]) -> bool:
    """A solid rectangle [x0..x1] x [top..axis_y-1] of `colour` standing on the black axis,
    with no pixel of its colour in the ring around it (dots and lines touch theirs)."""
    key, w = _pack(colour), m.packed.shape[1]
    if not (m.packed[top:axis_y, x0:x1 + 1] == key).all() or not m.black[axis_y, x0:x1 + 1].all():
        return False
    r0, c0, c1 = max(0, top - 1), max(0, x0 - 1), min(w, x1 + 2)
    return int((m.packed[r0:axis_y, c0:c1] == key).sum()) == (x1 - x0 + 1) * (axis_y - top)


@functools.cache
def _disc_offsets() -> tuple[np.ndarray, np.ndarray]:
    """(dy, dx) of the pixels of a marker dot as Pillow draws it (render_line_chart)."""
    r = MARKER_RADIUS
    im = Image.new("1", (2 * r + 1, 2 * r + 1), 0)
    ImageDraw.Draw(im).ellipse([0, 0, 2 * r, 2 * r], fill=1)
    dy, dx = np.nonzero(np.array(im, dtype=bool))
    return dy - r, dx - r


def _markers(m: _Masks, colour: tuple[int, int, int], axes: ValueAxes) -> list[tuple[int, int]]:
    """Centres (x, y) of the marker dots of one colour in the plot, left to right.

    A dot holds a 5x5 core of its colour, which 1-px lines never do; lines of its series
    meeting at a peak can complete a second core beside it, so each group of cores keeps
    the one whose whole dot is in the colour.
    """
    y0 = max(0, axes.y_top - MARKER_RADIUS - 1)
    y1 = min(m.rgb.shape[0], axes.axis_y + MARKER_RADIUS + 2)
    x0, x1 = axes.axis_x + 1, axes.x_end + 1
    mask = m.packed[y0:y1, x0:x1] == _pack(colour)  # [h, w]
    full = _window_sums(mask, _CORE) == _CORE * _CORE
    ys, xs = np.nonzero(full)
    clusters: list[list[tuple[int, int]]] = []
    for x, y in zip((xs + _CORE // 2).tolist(), (ys + _CORE // 2).tolist()):
        for cluster in clusters:
            if abs(cluster[0][0] - x) <= MARKER_RADIUS and abs(cluster[0][1] - y) <= MARKER_RADIUS:
                cluster.append((x, y))
                break
        else:
            clusters.append([(x, y)])
    dy, dx = _disc_offsets()
    h, w = mask.shape
    centres = []
    for cluster in clusters:
        fits = [(x, y) for x, y in cluster
                if MARKER_RADIUS <= x < w - MARKER_RADIUS and MARKER_RADIUS <= y < h - MARKER_RADIUS
                and mask[y + dy, x + dx].all()]
        if len(fits) != 1:
            raise ChartReadError(f"{_colour_name(colour)} marks near ({x0 + cluster[0][0]}, "
                                 f"{y0 + cluster[0][1]}) are not a marker dot")
        centres.append((x0 + fits[0][0], y0 + fits[0][1]))
    return sorted(centres)


def _plot_colours(m: _Masks, axes: ValueAxes) -> dict[tuple[int, int, int], int]:
    """Pixel count of each colour inside the plot area (markers may overhang the x axis)."""
    y1 = min(m.rgb.shape[0], axes.axis_y + MARKER_RADIUS + 1)
    region = np.s_[axes.y_top:y1, axes.axis_x + 1:axes.x_end + 1]
    keys, counts = np.unique(m.packed[region][m.coloured[region]], return_counts=True)
    return {_unpack(k): n for k, n in zip(keys.tolist(), counts.tolist())}


def _read_axes_chart(m: _Masks, axes: ValueAxes, legend: list[LegendEntry]) -> ChartReading:
    labels = [t for _, t in axes.labels]
    runs = _bar_runs(m, axes.axis_x, axes.axis_y, axes.slope, axes.intercept)
    colours = _plot_colours(m, axes)
    legend_colours = {e.colour: e for e in legend}
    evidence: dict[str, Any] = {"axes": True, "numbered_ticks": len(axes.ticks),
                                "x_labels": len(labels), "legend_entries": len(legend),
                                "bars": 0, "marker_series": 0, "wedges": 0}

    bars = [r for r in runs if _is_bar(m, *r[:3], axes.axis_y, r[3])]
    bar_area = sum((x1 - x0 + 1) * (axes.axis_y - top) for x0, x1, top, _ in bars)
    if bars and len(bars) == len(runs) and bar_area == sum(colours.values()):
        evidence["bars"] = len(bars)
        if not legend:  # one series: bar_values' reading, so the two tools always agree
            values = [0] * len(labels)
            for x0, x1, top, _ in bars:
                values[axes.label_index((x0 + x1) / 2, "a bar")] = axes.value(top)
            return ChartReading("bar", labels, [Series(SINGLE_SERIES, None, values)], axes,
                                legend, evidence)
        table = {e.colour: [0] * len(labels) for e in legend}
        for x0, x1, top, colour in bars:
            if colour not in table:
                raise ChartReadError(f"a bar's colour {colour} is not in the legend")
            table[colour][axes.label_index((x0 + x1) / 2, "a bar")] = axes.value(top)
        return ChartReading("grouped_bar", labels,
                            [Series(e.name, e.colour, table[e.colour]) for e in legend],
                            axes, legend, evidence)

    if not colours:  # empty plot: every bar is 0 (a line chart always has its dots)
        kind = "grouped_bar" if legend else "bar"
        series = ([Series(e.name, e.colour, [0] * len(labels)) for e in legend] if legend
                  else [Series(SINGLE_SERIES, None, [0] * len(labels))])
        return ChartReading(kind, labels, series, axes, legend, evidence)

    if legend:
        stray = set(colours) - set(legend_colours)
        if stray:
            raise ChartReadError(f"plot colours {sorted(stray)} are not in the legend")
        wanted = [(e.name, e.colour) for e in legend]
    elif len(colours) == 1:
        wanted = [(SINGLE_SERIES, next(iter(colours)))]
    else:
        raise ChartReadError(f"{len(colours)} colours in the plot but no legend, and the marks "
                             "are not bars standing on the x axis")
    series = []
    for name, colour in wanted:
        dots = _markers(m, colour, axes)
        values: list[int | None] = [None] * len(labels)
        points: list[tuple[int, int] | None] = [None] * len(labels)
        for x, y in dots:
            i = axes.label_index(x, f"a {_colour_name(colour)} dot")
            if values[i] is not None:
                raise ChartReadError(f"two {_colour_name(colour)} dots above label {labels[i]!r}")
            values[i], points[i] = axes.value(y), (x, y)
        missing = [labels[i] for i, v in enumerate(values) if v is None]
        if missing:
            raise ChartReadError(f"series {name!r} ({_colour_name(colour)}) has no marker dot "
                                 f"above {', '.join(missing)}: not a line chart (nor bars "
                                 "standing on the x axis)")
        series.append(Series(name, colour, [int(v) for v in values if v is not None],
                             [p for p in points if p is not None]))
    evidence["marker_series"] = len(series)
    return ChartReading("line", labels, series, axes, legend, evidence)


def _read_pie(m: _Masks, legend: list[LegendEntry]) -> ChartReading:
    """A pie: a disc of wedges whose colours are the legend's; shares in whole percents."""
    coloured = m.coloured.copy()
    for e in legend:
        x0, y0, x1, y1 = e.box
        coloured[y0:y1, x0:x1] = False
    ys, xs = np.nonzero(coloured)
    if ys.size == 0:
        raise ChartReadError("no axes and no coloured pie")
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    radius = (x1 - x0) / 2
    area = np.pi * radius ** 2
    if (radius < 20 or abs((y1 - y0) - (x1 - x0)) > 1 or abs(ys.size - area) > 0.02 * area
            or np.hypot(xs - cx, ys - cy).max() > radius + 1):
        raise ChartReadError("no axes, and the coloured pixels do not form one disc (a pie)")
    # [R, A] samples on circles from 0.3 R to 0.9 R, angles clockwise from 12 o'clock
    theta = (np.arange(_PIE_ANGLES) + 0.5) * (2 * np.pi / _PIE_ANGLES)
    radii = np.arange(0.3 * radius, 0.9 * radius, 1.0)
    px = np.rint(cx + radii[:, None] * np.sin(theta)[None]).astype(int)
    py = np.rint(cy - radii[:, None] * np.cos(theta)[None]).astype(int)
    packed = m.packed[py, px]  # [R, A]
    legend_keys = np.array([_pack(e.colour) for e in legend])
    votes = (packed[None] == legend_keys[:, None, None]).sum(axis=1)  # [E, A]
    if (votes.sum(axis=0) < 0.9 * radii.size).any():
        raise ChartReadError("the pie holds colours that are not in its legend")
    owner = votes.argmax(axis=0)  # [A]: the legend entry owning each angle
    # Wedge geometry: each colour holds one arc of angles.
    changes = int((owner != np.roll(owner, 1)).sum())
    present = np.unique(owner)
    if changes != (len(present) if len(present) > 1 else 0):
        raise ChartReadError("the pie's colours are not contiguous wedges")
    counts = np.bincount(owner, minlength=len(legend))
    percents = [int(round(100 * n / _PIE_ANGLES)) for n in counts.tolist()]
    evidence = {"axes": False, "legend_entries": len(legend), "wedges": len(present),
                "pie_radius": float(radius), "pie_centre": [float(cx), float(cy)]}
    return ChartReading("pie", [e.name for e in legend],
                        [Series("percent", None, percents)], None, legend, evidence)


@per_image
def analyse_chart(image: Image.Image) -> ChartReading:
    """Type, labels, series and legend of a chart in our style; ChartReadError otherwise."""
    if image.width * image.height > _MAX_PIXELS:
        raise ChartReadError(f"the image is {image.width}x{image.height}; our charts are at most "
                             f"{_MAX_PIXELS} pixels")
    m = _masks(image)
    legend = read_legend(m)
    try:
        axes = read_value_axes(m)
    except ChartReadError as exc:
        if not legend:
            raise ChartReadError(f"{exc}; and no legend, so not a pie either") from None
        return _read_pie(m, legend)
    return _read_axes_chart(m, axes, legend)


def read_chart_argument(ctx: ToolContext, image_id: str) -> BarChart:
    """The bar chart in argument `image`, or an invalid_argument error saying why it is not one."""
    chart = analyse_argument(ctx, image_id)
    if chart.chart_type != "bar":
        raise ToolError(INVALID_ARGUMENT, f"argument 'image': this is a {_type_words(chart)}, not "
                        "a single-series bar chart; use chart_to_table"
                        + (" or line_points" if chart.chart_type == "line" else ""))
    return _as_bar_chart(chart)


def _as_bar_chart(chart: ChartReading) -> BarChart:
    """The analysis of a "bar" chart as read_bar_chart gives it (tested to agree)."""
    assert chart.axes is not None
    return BarChart(chart.labels, chart.series[0].values, chart.axes.axis_x, chart.axes.axis_y,
                    chart.axes.ticks)


def analyse_argument(ctx: ToolContext, image_id: str) -> ChartReading:
    try:
        return analyse_chart(ctx.image(image_id))
    except ChartReadError as exc:
        raise ToolError(INVALID_ARGUMENT,
                        f"argument 'image': not a chart in our style: {exc}") from None


def _type_words(chart: ChartReading) -> str:
    return {"bar": "bar chart", "grouped_bar": "grouped bar chart", "line": "line chart",
            "pie": "pie chart"}[chart.chart_type]


# --- tables --------------------------------------------------------------------------------

def table_output(rows: list[tuple[str, Any]]) -> ToolOutput:
    """`label | value` lines, with the same rows as data."""
    text = "\n".join(f"{label} | {value}" for label, value in rows)
    return ToolOutput(text, [], {"labels": [r[0] for r in rows], "values": [r[1] for r in rows]})


def series_table_output(labels: list[str], columns: dict[str, list[Any]],
                        extra: dict[str, Any] | None = None) -> ToolOutput:
    """One column: `label | value` lines (table_output). Several: a `label | A | B` header,
    then one `label | a | b` line per label; data {"labels", "series": {name: values}}."""
    if len(columns) == 1:
        out = table_output(list(zip(labels, next(iter(columns.values())))))
    else:
        lines = [" | ".join(["label", *columns])]
        lines += [" | ".join([label, *(str(col[i]) for col in columns.values())])
                  for i, label in enumerate(labels)]
        out = ToolOutput("\n".join(lines), [], {"labels": list(labels),
                                                 "series": {k: list(v) for k, v in columns.items()}})
    out.data.update(extra or {})
    return out


def _classical_table(chart: ChartReading) -> ToolOutput:
    if chart.chart_type == "bar":  # the exact output the env's expert and tasks parse
        return table_output(list(zip(chart.labels, chart.series[0].values)))
    extra: dict[str, Any] = {"chart_type": chart.chart_type}
    if chart.chart_type == "pie":
        extra["unit"] = "percent"
    return series_table_output(chart.labels, {s.name: s.values for s in chart.series}, extra)


class ChartToTable(Tool):
    """Reads a chart's data table: one `label | value` line per bar, point or wedge, left to right.

    Bar and single-line charts: `label | value` lines. Grouped bar and multi-line charts: a
    header `label | series1 | series2 ...`, then one line per x label. Pie charts: one
    `label | percent` line per wedge (whole percents). The default classical backend handles
    only charts drawn in vista-jax's own rendered style (black axes, numbered y ticks, flat
    palette colours, bitmap-font text) and returns an invalid_argument error on anything
    else; values are read at the chart's precision (integers).
    """

    name = "chart_to_table"
    family = "chart"
    # Set per instance: with backend="hf", run_batch does one batched generate on the worker
    # pool; the classical reader (a few ms of numpy) runs in the front.
    model_backed = False

    class Arguments(ToolArguments):
        image: ImageId

    def __init__(self, backend: str = "classical", model_path: str | None = None,
                 max_new_tokens: int = 256, device: str = "cpu"):
        if backend not in ("classical", "hf"):
            raise ValueError(f"chart_to_table option 'backend' must be 'classical' or 'hf', "
                             f"got {backend!r}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
                or not 1 <= max_new_tokens <= 4096:
            raise ValueError(f"chart_to_table option 'max_new_tokens' must be an integer in "
                             f"1..4096, got {max_new_tokens!r}")
        self.backend = backend
        self.model_backed = backend == "hf"
        self.max_new_tokens = max_new_tokens
        self._model = None
        if backend == "hf":
            if not model_path:
                raise ValueError("chart_to_table option 'model_path' (a local Pix2Struct / DePlot "
                                 "checkpoint directory) is required with backend='hf'")
            # torch and the weights load on the first call, in the worker that serves it
            self._model = hf_backends.pix2struct_chart_reader(model_path, device=device)
        elif model_path is not None:
            raise ValueError("chart_to_table option 'model_path' is only used with backend='hf'")

    def load(self) -> None:
        if self._model is not None:
            self._model._loaded()

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        if self._model is not None:
            (result,) = self.run_batch([(args, ctx)])
            if isinstance(result, ToolError):
                raise result
            return result
        return _classical_table(analyse_argument(ctx, args.image))

    def run_batch(self, calls: list[tuple[ToolArguments, ToolContext]]
                  ) -> list[ToolOutput | ToolError]:
        if self._model is None:
            return super().run_batch(calls)
        results: list[ToolOutput | ToolError | None] = [None] * len(calls)
        images, slots = [], []
        for i, (args, ctx) in enumerate(calls):
            try:
                images.append(ctx.image(args.image))  # type: ignore[attr-defined]
                slots.append(i)
            except ToolError as exc:
                results[i] = exc
        if images:
            try:
                texts = self._model.generate(images, self.max_new_tokens)
            except Exception as exc:  # noqa: BLE001 - a model failure fails these calls, not the server
                texts = [ToolError(EXECUTION_FAILED, f"chart model failed: {exc}") for _ in images]
            for i, text in zip(slots, texts):
                if isinstance(text, ToolError):
                    results[i] = text
                    continue
                try:
                    table = hf_backends.parse_deplot_table(text)
                except ValueError as exc:
                    results[i] = ToolError(EXECUTION_FAILED,
                                           f"chart model output is not a table ({exc}): {text[:200]!r}")
                    continue
                extra = {"title": table.title} if table.title else {}
                results[i] = series_table_output(table.labels, table.columns, extra)
        return results  # type: ignore[return-value]


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
    "descending" (largest first) or "ascending" (smallest first). Handles only single-series
    bar charts drawn in vista-jax's own rendered style, like chart_to_table.
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


# --- chart structure -----------------------------------------------------------------------

class ChartType(Tool):
    """Says which kind of chart an image is: bar, grouped_bar, line or pie.

    From pixel evidence: black axes with numbered ticks (not on pies), solid bars standing on
    the x axis (one per label, or one per series per label with a legend), marker dots joined
    by lines, a disc of coloured wedges; `data.evidence` lists the counts found. Handles only
    charts drawn in vista-jax's own rendered style; any other image (a photo, a diagram, a
    blank page) is an invalid_argument error saying it is not a chart in our style.
    """

    name = "chart_type"
    family = "chart"

    class Arguments(ToolArguments):
        image: ImageId

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        chart = analyse_argument(ctx, args.image)
        if chart.chart_type == "pie":
            detail = f"{len(chart.labels)} wedges"
        else:
            named = " (legend)" if chart.legend else ""
            detail = (f"{len(chart.series)} series{named}, {len(chart.labels)} x labels")
        return ToolOutput(f"{chart.chart_type} ({_type_words(chart)}: {detail})", [],
                          {"chart_type": chart.chart_type, "evidence": chart.evidence})


class ReadAxes(Tool):
    """Reads the axes of a bar, grouped bar or line chart: y ticks, x labels, positions.

    Gives each numbered y tick (value, pixel row), each x category label (text, pixel column
    of its centre), the pixel column of the y axis and row of the x axis, the value range
    and the scale (pixels per unit). Handles only charts drawn in vista-jax's own rendered
    style; pie charts (no axes) and other images are invalid_argument errors.
    """

    name = "read_axes"
    family = "chart"

    class Arguments(ToolArguments):
        image: ImageId

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        chart = analyse_argument(ctx, args.image)
        ax = chart.axes
        if ax is None:
            raise ToolError(INVALID_ARGUMENT, "argument 'image': this is a pie chart; it has no axes")
        lo, hi = min(v for v, _ in ax.ticks), max(v for v, _ in ax.ticks)
        scale = -ax.slope
        ticks = ", ".join(f"{v} at row {r}" for v, r in ax.ticks)
        labels = ", ".join(f"{t} at column {round(c)}" for c, t in ax.labels)
        text = (f"y axis: column {ax.axis_x}, rows {ax.y_top}..{ax.axis_y}; ticks {ticks}; "
                f"values {lo}..{hi} ({scale:.3g} px per unit)\n"
                f"x axis: row {ax.axis_y}, columns {ax.axis_x}..{ax.x_end}; labels {labels}")
        data = {"chart_type": chart.chart_type,
                "y_axis": {"column": ax.axis_x, "top_row": ax.y_top, "bottom_row": ax.axis_y},
                "x_axis": {"row": ax.axis_y, "left_column": ax.axis_x, "right_column": ax.x_end},
                "ticks": [{"value": v, "row": r} for v, r in ax.ticks],
                "labels": [{"text": t, "column": int(round(c))} for c, t in ax.labels],
                "value_range": [lo, hi], "pixels_per_unit": round(scale, 4)}
        return ToolOutput(text, [], data)


class ReadLegend(Tool):
    """Reads a chart's legend: each entry's series name, colour (name and hex) and swatch box.

    Entries come top to bottom; the box is the swatch's [x0, y0, x1, y1] in pixels (x1, y1
    exclusive). A chart without a legend (a single-series bar or line chart) gives
    "no legend" and no entries. Handles only charts drawn in vista-jax's own rendered style;
    other images are invalid_argument errors.
    """

    name = "read_legend"
    family = "chart"

    class Arguments(ToolArguments):
        image: ImageId

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        chart = analyse_argument(ctx, args.image)
        entries = [e.as_dict() for e in chart.legend]
        if not entries:
            text = f"no legend (this {_type_words(chart)} has a single series)"
        else:
            text = "\n".join(f"{e['name']}: {e['colour']} {e['hex']}, box {e['box']}"
                             for e in entries)
        return ToolOutput(text, [], {"chart_type": chart.chart_type, "entries": entries})


class LinePoints(Tool):
    """Reads the data points of a line chart: each series' value at each x label.

    Finds each series' marker dots and maps their pixel rows to values through the numbered
    y ticks (exact integers on our charts). `series` picks one series by its legend name
    (case-insensitive); omit it for all. A line chart without a legend has one series,
    named "value". Handles only line charts drawn in vista-jax's own rendered style; other
    charts and images are invalid_argument errors.
    """

    name = "line_points"
    family = "chart"

    class Arguments(ToolArguments):
        image: ImageId
        series: Annotated[str | None, Field(
            default=None, min_length=1, max_length=64,
            description="legend name of the one series to read; omit for every series")] = None

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        chart = analyse_argument(ctx, args.image)
        if chart.chart_type != "line":
            raise ToolError(INVALID_ARGUMENT, f"argument 'image': this is a {_type_words(chart)}, "
                            "not a line chart; use chart_to_table")
        series = chart.series
        if args.series is not None:
            series = [s for s in series if s.name.casefold() == args.series.casefold()]
            if not series:
                names = ", ".join(s.name for s in chart.series)
                raise ToolError(INVALID_ARGUMENT, f"argument 'series': no series named "
                                f"{args.series!r}; the chart's series are {names}"
                                + ("" if chart.legend else " (it has no legend)"))
        lines, out = [], []
        for s in series:
            lines.append(f"{s.name}: " + ", ".join(f"{label} {v}" for label, v in
                                                  zip(chart.labels, s.values)))
            out.append({"name": s.name, "colour": _colour_name(s.colour),
                        "hex": "#{:02x}{:02x}{:02x}".format(*s.colour) if s.colour else None,
                        "values": list(s.values),
                        "points": [{"label": label, "value": v, "x": p[0], "y": p[1]}
                                   for label, v, p in zip(chart.labels, s.values, s.points or [])]})
        return ToolOutput("\n".join(lines), [], {"labels": chart.labels, "series": out})
