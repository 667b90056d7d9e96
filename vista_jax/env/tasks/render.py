"""Renderers for procedural visual tasks: charts and labelled-point geometry diagrams.

These define "vista-jax's own style", which the tool server's chart and diagram tools
(`tools_server/tools/chart.py`, `diagram.py`) read back exactly from the pixels:

- all text in Pillow's bitmap default font (`ImageFont.load_default_imagefont()`, scale 1,
  binary pixels), black on white;
- bar charts: black 1-px axes, y ticks at a round step with integer labels, one solid bar
  per category in a distinct palette colour, the category label centred under its bar;
- line, grouped-bar and pie charts (`render_line_chart`, `render_grouped_bar_chart`,
  `render_pie_chart`): the same axes and ticks; series in flat palette colours (no
  anti-aliasing), line points as filled dots; a legend column at the right of swatch
  squares with white all round and the series names beside them;
- diagrams: black 1-px segments, filled black dots of radius `POINT_RADIUS`, each with a
  one-letter uppercase label on a white box diagonal to the dot (see `label_origin`).

Save the images losslessly (PNG): the readers rely on exact colours.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

GLYPH_W, GLYPH_H = 6, 11  # advance and line height of the bitmap default font, pixels
# Characters the tools' OCR reads (tools_server/tools/glyph_ocr.py CHARSET).
LABEL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-%")
# Matplotlib's tab10 without its grey: saturated, far from black and from white.
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207),
)
WHITE, BLACK = (255, 255, 255), (0, 0, 0)
MAX_VALUE = 100  # bar values are integers in 0..MAX_VALUE
_TICK_STEPS = (1, 2, 5, 10, 20, 25, 50)
_MIN_TICK_SPACING = 14  # pixels between tick labels, so that each reads on its own
_TICK_LEN = 4  # tick mark length left of the y axis, pixels


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default_imagefont()


def _tick_step(vmax: int, plot_h: int) -> tuple[int, int]:
    """(step, n_steps): the smallest round step giving <= 6 steps spaced >= 14 px apart."""
    for step in _TICK_STEPS:
        n = max(1, math.ceil(vmax / step))
        if n <= 6 and plot_h // n >= _MIN_TICK_SPACING:
            return step, n
    raise ValueError(f"plot area of {plot_h} px is too short for values up to {vmax}")


def render_bar_chart(labels: Sequence[str], values: Sequence[int], *, title: str | None = None,
                     size: tuple[int, int] = (320, 240), seed: int = 0) -> Image.Image:
    """Draws a vertical bar chart in vista-jax's style; returns an RGB image of `size`.

    `values` are integers in 0..100 (a 0 is drawn as no bar above its label; the reader
    still reports it). `labels` are 1..n words without spaces made of letters, digits and
    ".-%" (what the tools' OCR reads), each narrower than its bar's slot. `seed` picks the
    bar colours. Raises ValueError for inputs the chart tools could not read back exactly.
    """
    labels, values = list(labels), list(values)
    if not 1 <= len(labels) <= len(PALETTE) or len(labels) != len(values):
        raise ValueError(f"need 1..{len(PALETTE)} labels and as many values, "
                         f"got {len(labels)} labels and {len(values)} values")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_VALUE:
            raise ValueError(f"values must be integers in 0..{MAX_VALUE}, got {v!r}")
    for label in labels:
        if not label or not set(label) <= LABEL_CHARS:
            raise ValueError(f"label {label!r} must be a non-empty word of letters, digits "
                             "and '.-%'")
    width, height = size
    font = _font()

    top = 12 + (GLYPH_H + 5 if title else 0)  # room for the top tick label (and the title)
    axis_y = height - 22  # x axis row; category labels go below it
    left = 8 + GLYPH_W * len(str(MAX_VALUE)) + _TICK_LEN + 3  # y axis column
    right = width - 10
    avail = axis_y - top
    vmax = max(max(values), 1)
    step, n_steps = _tick_step(vmax, avail)
    plot_h = (avail // n_steps) * n_steps  # a multiple of n_steps: tick rows are exact
    y_max = step * n_steps
    scale = plot_h / y_max  # pixels per unit
    slot_w = (right - left - 1) / len(labels)
    for label in labels:
        if GLYPH_W * len(label) > slot_w - 8:  # >= 6 blank columns between neighbouring labels
            raise ValueError(f"label {label!r} is wider than its slot ({slot_w:.0f} px) "
                             f"at size {size}")

    image = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(image)
    if title:
        tw = font.getlength(title)
        draw.text((round((width - tw) / 2), 3), title, font=font, fill=BLACK)
    draw.line([(left, axis_y - plot_h - 4), (left, axis_y)], fill=BLACK, width=1)
    draw.line([(left, axis_y), (right, axis_y)], fill=BLACK, width=1)
    for k in range(n_steps + 1):
        row = axis_y - round(k * step * scale)
        draw.line([(left - _TICK_LEN, row), (left - 1, row)], fill=BLACK, width=1)
        text = str(k * step)
        # Right-aligned 3 px left of the tick, its digits (glyph rows 2..8) centred on it.
        draw.text((left - _TICK_LEN - 3 - GLYPH_W * len(text), row - 5), text, font=font,
                  fill=BLACK)

    colours = random.Random(seed).sample(PALETTE, len(labels))
    bar_w = max(3, round(slot_w * 0.6))
    for i, (label, value, colour) in enumerate(zip(labels, values, colours)):
        cx = left + 1 + slot_w * (i + 0.5)
        x0 = round(cx - bar_w / 2)
        bar_h = math.floor(value * scale + 0.5)
        if bar_h > 0:
            draw.rectangle([x0, axis_y - bar_h, x0 + bar_w - 1, axis_y - 1], fill=colour)
        draw.text((round(cx - GLYPH_W * len(label) / 2), axis_y + 5), label, font=font, fill=BLACK)
    return image


POINT_RADIUS = 4  # dot radius, pixels
# White box behind a label, relative to its glyph origin (x0, y0, x1, y1 inclusive).
_LABEL_BOX = (-1, 2, 6, 10)


def label_origin(x: int, y: int, size: tuple[int, int]) -> tuple[int, int]:
    """Glyph origin of the label of a dot at (x, y): the first of NE, NW, SE, SW whose box fits.

    The choice depends only on the position and the image size, so a reader can repeat it
    (tools_server/tools/diagram.py does; keep the two in step).
    """
    r = POINT_RADIUS
    width, height = size
    for ox, oy in ((x + r + 2, y - r - 9), (x - r - 2 - GLYPH_W, y - r - 9),
                   (x + r + 2, y + r - 2), (x - r - 2 - GLYPH_W, y + r - 2)):
        bx0, by0, bx1, by1 = _label_box(ox, oy)
        if bx0 >= 0 and by0 >= 0 and bx1 < width and by1 < height:
            return ox, oy
    raise ValueError(f"no room for the label of the point at {(x, y)} in an image of size {size}")


def _label_box(ox: int, oy: int, margin: int = 0) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = _LABEL_BOX
    return ox + x0 - margin, oy + y0 - margin, ox + x1 + margin, oy + y1 + margin


def _boxes_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def render_points_diagram(points: Mapping[str, tuple[int, int]],
                          segments: Sequence[tuple[str, str]] = (),
                          size: tuple[int, int] = (320, 240)) -> Image.Image:
    """Draws labelled points (and segments between them) in vista-jax's style; RGB image.

    `points` maps one uppercase letter to integer pixel coordinates (x right, y down).
    Raises ValueError when a point or label would leave the image, or when a dot or label
    box would touch another point's dot or label box (the reader needs them apart).
    """
    width, height = size
    r = POINT_RADIUS
    pts: dict[str, tuple[int, int]] = {}
    boxes = []
    for name, (x, y) in points.items():
        if len(name) != 1 or not "A" <= name <= "Z":
            raise ValueError(f"point labels must be one uppercase letter, got {name!r}")
        x, y = int(round(x)), int(round(y))
        if not (r + 1 <= x < width - r - 1 and r + 1 <= y < height - r - 1):
            raise ValueError(f"point {name} at {(x, y)} is too close to the border of {size}")
        ox, oy = label_origin(x, y, size)
        dot = (x - r - 1, y - r - 1, x + r + 1, y + r + 1)
        label = _label_box(ox, oy, margin=1)
        for other, (odot, olabel) in boxes:
            if any(_boxes_overlap(a, b) for a in (dot, label) for b in (odot, olabel)):
                raise ValueError(f"points {other} and {name} are too close to label apart")
        boxes.append((name, (dot, label)))
        pts[name] = (x, y)
    for a, b in segments:
        if a not in pts or b not in pts:
            raise ValueError(f"segment {a}{b} names a point that is not in {sorted(pts)}")

    image = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(image)
    font = _font()
    for a, b in segments:
        draw.line([pts[a], pts[b]], fill=BLACK, width=1)
    for name, (x, y) in pts.items():
        ox, oy = label_origin(x, y, size)
        draw.rectangle(_label_box(ox, oy), fill=WHITE)
        draw.text((ox, oy), name, font=font, fill=BLACK)
    for x, y in pts.values():
        draw.ellipse([x - r, y - r, x + r, y + r], fill=BLACK)
    return image


# --- line, grouped-bar and pie charts ------------------------------------------------------
# Same conventions as render_bar_chart (font, axes, ticks, palette), plus a legend column at
# the right: one entry per series, a SWATCH x SWATCH square of the series colour with white
# all round it, its name 4 px to the right. The chart tools find legends by those squares.

COLOUR_NAMES = ("blue", "orange", "green", "red", "purple", "brown", "pink", "olive", "cyan")
MARKER_RADIUS = 3  # line-chart marker dots, pixels
SWATCH = 8  # side of a legend swatch, pixels
_LEGEND_PITCH = 14  # rows from one legend entry to the next
_LEGEND_GAP = 4  # columns between a swatch and its name
_MIN_PIE_RADIUS = 40  # smaller pies cannot be read back to a whole percent


def _check_words(kind: str, words: Sequence[str]) -> None:
    """Words the tools' OCR reads back: letters, digits and '.-%', no spaces, distinct."""
    for word in words:
        if not isinstance(word, str) or not word or not set(word) <= LABEL_CHARS:
            raise ValueError(f"{kind} {word!r} must be a non-empty word of letters, digits "
                             "and '.-%'")
    folded = [w.casefold() for w in words]
    if len(set(folded)) != len(folded):
        raise ValueError(f"{kind}s must be distinct (case-insensitively), got {list(words)}")


def _check_ints(kind: str, values: Sequence[int], lo: int, hi: int) -> None:
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"{kind} must be integers in {lo}..{hi}, got {v!r}")


def _legend_width(names: Sequence[str]) -> int:
    return SWATCH + _LEGEND_GAP + GLYPH_W * max(len(n) for n in names)


def _draw_legend(draw: ImageDraw.ImageDraw, names: Sequence[str],
                 colours: Sequence[tuple[int, int, int]], x: int, y: int) -> None:
    """Entries top-down from (x, y): swatch, then the name with its capitals level with it."""
    for i, (name, colour) in enumerate(zip(names, colours)):
        sy = y + i * _LEGEND_PITCH
        draw.rectangle([x, sy, x + SWATCH - 1, sy + SWATCH - 1], fill=colour)
        draw.text((x + SWATCH + _LEGEND_GAP, sy - 2), name, font=_font(), fill=BLACK)


def _draw_title(draw: ImageDraw.ImageDraw, title: str | None, width: int) -> None:
    if title:
        tw = _font().getlength(title)
        draw.text((round((width - tw) / 2), 3), title, font=_font(), fill=BLACK)


@dataclasses.dataclass(frozen=True)
class _ValueAxes:
    """Layout of a chart with a value (y) axis, as render_bar_chart lays it out."""
    left: int  # y-axis column
    right: int  # last x-axis column
    axis_y: int  # x-axis row
    step: int
    n_steps: int
    plot_h: int
    slot_w: float  # width of one category's slot

    @property
    def scale(self) -> float:  # pixels per unit
        return self.plot_h / (self.step * self.n_steps)

    def row(self, value: int) -> int:
        return self.axis_y - math.floor(value * self.scale + 0.5)

    def centre(self, i: int) -> float:
        return self.left + 1 + self.slot_w * (i + 0.5)


def _value_axes(labels: Sequence[str], vmax: int, size: tuple[int, int], title: str | None,
                legend: Sequence[str] | None) -> _ValueAxes:
    width, height = size
    top = 12 + (GLYPH_H + 5 if title else 0)
    axis_y = height - 22
    left = 8 + GLYPH_W * len(str(MAX_VALUE)) + _TICK_LEN + 3
    right = width - 10
    if legend:
        right = width - 6 - _legend_width(legend) - 12
        if top + _LEGEND_PITCH * len(legend) > axis_y:
            raise ValueError(f"{len(legend)} legend entries do not fit above the x axis at "
                             f"size {size}")
    if right - left < 40:
        raise ValueError(f"no room for the plot at size {size} (legend too wide?)")
    step, n_steps = _tick_step(max(vmax, 1), axis_y - top)
    plot_h = ((axis_y - top) // n_steps) * n_steps
    if plot_h < step * n_steps:  # below 1 px per unit two values would share a pixel row
        raise ValueError(f"plot area of {plot_h} px is too short to tell values apart")
    slot_w = (right - left - 1) / len(labels)
    for label in labels:
        if GLYPH_W * len(label) > slot_w - 8:  # >= 6 blank columns between neighbouring labels
            raise ValueError(f"label {label!r} is wider than its slot ({slot_w:.0f} px) "
                             f"at size {size}")
    return _ValueAxes(left, right, axis_y, step, n_steps, plot_h, slot_w)


def _draw_value_axes(draw: ImageDraw.ImageDraw, ax: _ValueAxes, labels: Sequence[str]) -> None:
    """Axes, ticks, tick numbers and category labels exactly as render_bar_chart draws them."""
    font = _font()
    draw.line([(ax.left, ax.axis_y - ax.plot_h - 4), (ax.left, ax.axis_y)], fill=BLACK, width=1)
    draw.line([(ax.left, ax.axis_y), (ax.right, ax.axis_y)], fill=BLACK, width=1)
    for k in range(ax.n_steps + 1):
        row = ax.row(k * ax.step)
        draw.line([(ax.left - _TICK_LEN, row), (ax.left - 1, row)], fill=BLACK, width=1)
        text = str(k * ax.step)
        draw.text((ax.left - _TICK_LEN - 3 - GLYPH_W * len(text), row - 5), text, font=font,
                  fill=BLACK)
    for i, label in enumerate(labels):
        draw.text((round(ax.centre(i) - GLYPH_W * len(label) / 2), ax.axis_y + 5), label,
                  font=font, fill=BLACK)


def _series_table(labels: Sequence[str], series: Mapping[str, Sequence[int]], min_series: int
                  ) -> tuple[list[str], list[str], list[list[int]]]:
    labels, names = list(labels), list(series)
    rows = [list(v) for v in series.values()]
    if not 2 <= len(labels) <= 12:
        raise ValueError(f"need 2..12 labels, got {len(labels)}")
    if not min_series <= len(names) <= len(PALETTE):
        raise ValueError(f"need {min_series}..{len(PALETTE)} series, got {len(names)}")
    _check_words("label", labels)
    _check_words("series name", names)
    for name, values in zip(names, rows):
        if len(values) != len(labels):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(labels)} labels")
        _check_ints("values", values, 0, MAX_VALUE)
    return labels, names, rows


def render_line_chart(labels: Sequence[str], series: Mapping[str, Sequence[int]], *,
                      title: str | None = None, size: tuple[int, int] = (320, 240),
                      seed: int = 0) -> Image.Image:
    """Draws one or more line series over categorical x labels in vista-jax's style; RGB image.

    `series` maps a name to one integer in 0..100 per label. Each series is a 1-px polyline
    with a filled dot of radius MARKER_RADIUS at each data point, in its own palette colour
    (picked by `seed`); 2+ series get a legend. Lines pass under the x axis, dots over it.
    Raises ValueError for inputs the chart tools could not read back exactly, including two
    series' dots at one label closer than 2 * MARKER_RADIUS + 2 rows (one would hide the other).
    """
    labels, names, rows = _series_table(labels, series, 1)
    legend = names if len(names) > 1 else None
    ax = _value_axes(labels, max(max(r) for r in rows), size, title, legend)
    xs = [round(ax.centre(i)) for i in range(len(labels))]
    ys = [[ax.row(v) for v in values] for values in rows]
    for i, label in enumerate(labels):
        col = sorted((y[i], name) for y, name in zip(ys, names))
        for (ya, a), (yb, b) in zip(col, col[1:]):
            if yb - ya < 2 * MARKER_RADIUS + 2:
                raise ValueError(f"at label {label!r} the dots of series {a!r} and {b!r} are "
                                 f"{yb - ya} px apart; values too close to draw apart")
    colours = random.Random(seed).sample(PALETTE, len(names))

    image = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(image)
    _draw_title(draw, title, size[0])
    for y, colour in zip(ys, colours):
        draw.line(list(zip(xs, y)), fill=colour, width=1)
    _draw_value_axes(draw, ax, labels)  # over the lines: a run of zeros must not hide the axis
    r = MARKER_RADIUS
    for y, colour in zip(ys, colours):
        for x, yy in zip(xs, y):
            draw.ellipse([x - r, yy - r, x + r, yy + r], fill=colour)
    if legend:
        _draw_legend(draw, names, colours, ax.right + 12, 12 + (GLYPH_H + 5 if title else 0))
    return image


def render_grouped_bar_chart(labels: Sequence[str], series: Mapping[str, Sequence[int]], *,
                             title: str | None = None, size: tuple[int, int] = (320, 240),
                             seed: int = 0) -> Image.Image:
    """Draws grouped vertical bars in vista-jax's style, with a legend; RGB image.

    `series` maps 2..9 names to one integer in 0..100 per label; each label's slot holds one
    bar per series, side by side in series order, each series in its own palette colour
    (picked by `seed`). A 0 is drawn as no bar. Raises ValueError for inputs the chart tools
    could not read back exactly (bars narrower than 3 px, labels wider than their slots).
    """
    labels, names, rows = _series_table(labels, series, 2)
    ax = _value_axes(labels, max(max(r) for r in rows), size, title, names)
    bar_w = math.floor(ax.slot_w * 0.8 / len(names))
    if bar_w < 3:
        raise ValueError(f"{len(names)} bars per group would be {bar_w} px wide at size {size}")
    colours = random.Random(seed).sample(PALETTE, len(names))

    image = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(image)
    _draw_title(draw, title, size[0])
    _draw_value_axes(draw, ax, labels)
    for i in range(len(labels)):
        x0 = round(ax.centre(i) - len(names) * bar_w / 2)
        for j, (values, colour) in enumerate(zip(rows, colours)):
            bar_h = ax.axis_y - ax.row(values[i])
            if bar_h > 0:
                bx = x0 + j * bar_w
                draw.rectangle([bx, ax.axis_y - bar_h, bx + bar_w - 1, ax.axis_y - 1], fill=colour)
    _draw_legend(draw, names, colours, ax.right + 12, 12 + (GLYPH_H + 5 if title else 0))
    return image


def render_pie_chart(labels: Sequence[str], values: Sequence[int], *, title: str | None = None,
                     size: tuple[int, int] = (320, 240), seed: int = 0) -> Image.Image:
    """Draws a pie in vista-jax's style, with a legend; RGB image.

    `values` are whole percents (integers >= 1 summing to 100), one wedge per label, drawn
    clockwise from 12 o'clock in label order, each in its own palette colour (picked by
    `seed`); the legend lists the labels in the same order. Raises ValueError for inputs the
    chart tools could not read back exactly (shares not whole percents, a pie under
    `_MIN_PIE_RADIUS` px).
    """
    labels, values = list(labels), list(values)
    if not 1 <= len(labels) <= len(PALETTE) or len(labels) != len(values):
        raise ValueError(f"need 1..{len(PALETTE)} labels and as many values, "
                         f"got {len(labels)} labels and {len(values)} values")
    _check_words("label", labels)
    _check_ints("values", values, 1, 100)
    if sum(values) != 100:
        raise ValueError(f"pie values are percents and must sum to 100, got {sum(values)}")
    width, height = size
    top = 12 + (GLYPH_H + 5 if title else 0)
    legend_x = width - 6 - _legend_width(labels)
    if top + _LEGEND_PITCH * len(labels) > height - 8:
        raise ValueError(f"{len(labels)} legend entries do not fit at size {size}")
    area_w, area_h = legend_x - 12 - 8, height - 8 - top
    radius = min(area_w, area_h) // 2 - 1
    if radius < _MIN_PIE_RADIUS:
        raise ValueError(f"a pie of radius {radius} px at size {size} is too small to read back")
    cx, cy = 8 + area_w // 2, top + area_h // 2
    colours = random.Random(seed).sample(PALETTE, len(labels))

    image = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(image)
    _draw_title(draw, title, width)
    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    start = -90.0  # Pillow's angles run clockwise from 3 o'clock
    for value, colour in zip(values, colours):
        end = start + 3.6 * value
        draw.pieslice(box, start, end, fill=colour)
        start = end
    _draw_legend(draw, labels, colours, legend_x, top)
    return image
