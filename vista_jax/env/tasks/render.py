"""Renderers for procedural visual tasks: bar charts and labelled-point geometry diagrams.

These define "vista-jax's own style", which the tool server's chart and diagram tools
(`tools_server/tools/chart.py`, `diagram.py`) read back exactly from the pixels:

- all text in Pillow's bitmap default font (`ImageFont.load_default_imagefont()`, scale 1,
  binary pixels), black on white;
- bar charts: black 1-px axes, y ticks at a round step with integer labels, one solid bar
  per category in a distinct palette colour, the category label centred under its bar;
- diagrams: black 1-px segments, filled black dots of radius `POINT_RADIUS`, each with a
  one-letter uppercase label on a white box diagonal to the dot (see `label_origin`).

Save the images losslessly (PNG): the readers rely on exact colours.
"""

from __future__ import annotations

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
