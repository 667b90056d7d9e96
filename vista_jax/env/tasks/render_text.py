"""Renderer for text images: labels, signs, posters, price lists, boards with an equation.

The images of the OCR and math-word families, read back by the tool server's `ocr` tool
(rapidocr's PP-OCR models). Conventions, chosen so that OCR reads every line exactly:

- one font: Pillow's bundled FreeType font (Aileron Regular, `ImageFont.load_default(size)`,
  Pillow >= 10.1 built with FreeType), antialiased. It ships inside Pillow, so the same
  Pillow draws the same bytes on every machine (system fonts such as DejaVu may be absent);
- sizes `MIN_SIZE`..`MAX_SIZE` px. Measured with the real `ocr` tool: from 10 px up words,
  codes, prices and equations read exactly (up to spaces around operators); at 6-9 px digits
  are misread (9 -> 0, 6 -> 5), and a nearest-neighbour zoom does not help (it adds no
  detail), so nothing smaller than 12 px is drawn;
- no '1' right after a digit or a point (`misread_prone`): Aileron's narrow '1' sits in a
  full-width digit cell, and OCR put a space before it in 3 of 1,200 such lines at 20-22 px
  ("213" -> "2 13", "721x" -> "72 1x"); a leading '1' ("15", "1.25") read right;
- lines may be drawn `crisp` (no antialiasing: every ink pixel exactly its colour);
- characters: letters, digits, space and `CHARSET`'s punctuation; no currency signs (OCR
  glues "$" to the word before it, "Pear$1.75", and a "$" misread as a digit would change
  the price);
- text colours: `TEXT_COLORS` (the scene palette's strong colours, exact values, so
  `dominant_colors` names them as the scene tools do); panel fills: `PANEL_FILLS` (light
  tints) or white;
- layout: rectangular panels (optionally filled and outlined), each a column of lines; a line
  may carry a second text flush right on the same row (a price list's price). Lines and
  panels never overlap.

Vocabulary is the families' business (`ocr_text`, `math_word`): they avoid glyphs this font
draws alike (I/l/1, O/0).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import string
from collections.abc import Sequence
from typing import Literal

from PIL import Image, ImageDraw, ImageFont, features

from vista_jax.env.tasks.render_scene import COLORS

RGB = tuple[int, int, int]
MIN_SIZE, MAX_SIZE = 12, 48  # font sizes drawn, pixels
PUNCTUATION = " .,:;-+=()/^%'!?#&*"
CHARSET = frozenset(string.ascii_letters + string.digits + PUNCTUATION)
WHITE, BLACK = (255, 255, 255), (0, 0, 0)
# Text colours by name: the scene palette's colours that stay legible on white.
TEXT_COLORS: dict[str, RGB] = {name: COLORS[name] for name in
                               ("black", "red", "blue", "green", "orange", "purple", "brown")}
# Light panel fills: every channel >= 200, so dark text keeps its contrast.
PANEL_FILLS: dict[str, RGB] = {
    "white": WHITE, "cream": (255, 246, 214), "mint": (226, 246, 228),
    "sky": (222, 236, 255), "blush": (255, 228, 232), "lilac": (238, 228, 250),
}
Align = Literal["left", "center", "right"]
_INNER_ONE = re.compile(r"[0-9.]1")


def misread_prone(text: str) -> bool:
    """Whether `text` has a '1' right after a digit or a point, which OCR may split off
    ("213" -> "2 13"); the families draw no such text."""
    return _INNER_ONE.search(text) is not None


@functools.cache
def font(size: int) -> ImageFont.FreeTypeFont:
    """The font every text image uses, at `size` px."""
    if not features.check("freetype2"):
        raise RuntimeError("render_text needs Pillow built with FreeType (its bundled font)")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"font size {size} outside {MIN_SIZE}..{MAX_SIZE} px")
    return ImageFont.load_default(size=size)


def line_height(size: int) -> int:
    """Ascent + descent of the font at `size`: the height a line of text takes."""
    ascent, descent = font(size).getmetrics()
    return ascent + descent


def text_width(text: str, size: int) -> int:
    """Advance width of `text` at `size`, pixels (rounded up)."""
    return -int(-font(size).getlength(text) // 1)


def _check_text(text: str, what: str) -> None:
    if not text or not text.strip():
        raise ValueError(f"{what}: empty text")
    bad = sorted(set(text) - CHARSET)
    if bad:
        raise ValueError(f"{what}: {text!r} has characters the renderer does not draw: "
                         f"{''.join(bad)!r} (allowed: letters, digits and {PUNCTUATION!r})")


def _rgb(color: str | RGB, what: str, palette: dict[str, RGB]) -> RGB:
    if isinstance(color, str):
        if color not in palette:
            raise ValueError(f"{what}: unknown colour {color!r}; one of {', '.join(palette)}")
        return palette[color]
    if len(color) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in color):
        raise ValueError(f"{what}: colour {color!r} is not an (r, g, b) of integers 0..255")
    return tuple(color)


@dataclasses.dataclass(frozen=True)
class TextLine:
    """One row of a panel: `text` aligned left/center/right, and optionally `right`, a
    second text flush right on the same row (same size and colour). `crisp` draws without
    antialiasing, so that every ink pixel has exactly the line's colour (what
    `dominant_colors` needs to name a small word's colour; antialiased edges of 12-16 px
    text outnumber its core)."""

    text: str
    size: int = 18
    color: str | RGB = "black"
    align: Align = "left"
    right: str | None = None
    crisp: bool = False

    def width(self, gap: int) -> int:
        """Pixels the row needs: the text, plus `gap` and the right text when there is one."""
        w = text_width(self.text, self.size)
        return w if self.right is None else w + gap + text_width(self.right, self.size)


@dataclasses.dataclass(frozen=True)
class Panel:
    """A rectangle [x0, y0, x1, y1) (exclusive ends) holding a column of lines, top to
    bottom, `padding` px inside its edge; `fill` None leaves the canvas showing."""

    box: tuple[int, int, int, int]
    lines: tuple[TextLine, ...]
    fill: str | RGB | None = None
    outline: str | RGB | None = None
    padding: int = 8
    spacing: float = 0.5  # blank space between lines, in units of the larger line's size
    valign: Literal["top", "center"] = "top"

    def content_height(self) -> int:
        h = sum(line_height(ln.size) for ln in self.lines)
        return h + sum(round(self.spacing * max(a.size, b.size))
                       for a, b in zip(self.lines, self.lines[1:]))


@dataclasses.dataclass(frozen=True)
class PlacedText:
    """A text drawn: its string, size, colour and ink box [x0, y0, x1, y1) in the image."""

    text: str
    size: int
    color: RGB
    box: tuple[int, int, int, int]


def panel_size(lines: Sequence[TextLine], *, padding: int = 8, spacing: float = 0.5,
               gap: int = 24) -> tuple[int, int]:
    """The smallest (width, height) of a panel that holds `lines`."""
    probe = Panel((0, 0, 1, 1), tuple(lines), padding=padding, spacing=spacing)
    return (max(ln.width(gap) for ln in lines) + 2 * padding,
            probe.content_height() + 2 * padding)


def render_text_image(panels: Sequence[Panel], size: tuple[int, int] = (320, 240), *,
                      background: str | RGB = "white", gap: int = 24
                      ) -> tuple[Image.Image, list[PlacedText]]:
    """Draws the panels on a `background` canvas of `size`: (RGB image, every text drawn
    with its ink box, in drawing order: panels in order, lines top to bottom, a row's left
    text before its right text).

    `gap`: the least space between a row's text and its right text. Raises ValueError for
    text the renderer does not draw, an unknown colour, a panel outside the canvas or
    overlapping another, or lines that do not fit their panel.
    """
    width, height = size
    canvas_rgb = _rgb(background, "background", PANEL_FILLS)
    for i, p in enumerate(panels):
        x0, y0, x1, y1 = p.box
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ValueError(f"panel {i}: box {list(p.box)} is not inside the canvas "
                             f"{width}x{height}")
        for j in range(i):
            q = panels[j].box
            if x0 < q[2] and q[0] < x1 and y0 < q[3] and q[1] < y1:
                raise ValueError(f"panels {j} and {i} overlap")
        if not p.lines:
            raise ValueError(f"panel {i}: no lines")
        for k, ln in enumerate(p.lines):
            _check_text(ln.text, f"panel {i} line {k}")
            if ln.right is not None:
                _check_text(ln.right, f"panel {i} line {k} (right text)")
            font(ln.size)  # validates the size
            need = ln.width(gap) + 2 * p.padding
            if need > x1 - x0:
                raise ValueError(f"panel {i} line {k} {ln.text!r}: needs {need} px of width, "
                                 f"the panel has {x1 - x0}")
        if p.content_height() + 2 * p.padding > y1 - y0:
            raise ValueError(f"panel {i}: its lines need {p.content_height() + 2 * p.padding} "
                             f"px of height, the panel has {y1 - y0}")

    image = Image.new("RGB", size, canvas_rgb)
    draw = ImageDraw.Draw(image)
    placed: list[PlacedText] = []
    for i, p in enumerate(panels):
        x0, y0, x1, y1 = p.box
        if p.fill is not None or p.outline is not None:
            draw.rectangle([x0, y0, x1 - 1, y1 - 1],
                           fill=None if p.fill is None else _rgb(p.fill, f"panel {i} fill",
                                                                 PANEL_FILLS),
                           outline=None if p.outline is None else _rgb(
                               p.outline, f"panel {i} outline", TEXT_COLORS))
        y = y0 + p.padding
        if p.valign == "center":
            y += (y1 - y0 - 2 * p.padding - p.content_height()) // 2
        for k, ln in enumerate(p.lines):
            rgb = _rgb(ln.color, f"panel {i} line {k} colour", TEXT_COLORS)
            w = text_width(ln.text, ln.size)
            if ln.right is not None or ln.align == "left":
                x = x0 + p.padding
            elif ln.align == "center":
                x = x0 + (x1 - x0 - w) // 2
            else:
                x = x1 - p.padding - w
            draw.fontmode = "1" if ln.crisp else "L"
            placed.append(_draw(draw, (x, y), ln.text, ln.size, rgb))
            if ln.right is not None:
                xr = x1 - p.padding - text_width(ln.right, ln.size)
                placed.append(_draw(draw, (xr, y), ln.right, ln.size, rgb))
            if k + 1 < len(p.lines):
                y += line_height(ln.size) + round(p.spacing * max(ln.size, p.lines[k + 1].size))
    return image, placed


def _draw(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, size: int,
          rgb: RGB) -> PlacedText:
    f = font(size)
    draw.text(xy, text, font=f, fill=rgb)
    l, t, r, b = draw.textbbox(xy, text, font=f)
    return PlacedText(text, size, rgb, (int(l), int(t), int(r), int(b)))

