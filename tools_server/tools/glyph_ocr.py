"""Exact OCR for text drawn with Pillow's bitmap default font, and nothing else.

vista-jax's renderers (`vista_jax.env.tasks.render`) draw all text with
`PIL.ImageFont.load_default_imagefont()` at scale 1: a fixed-pitch bitmap font (every glyph
is a 6 x 11 cell, binary pixels, no anti-aliasing). Reading that font back is template
matching: render each character of `CHARSET` once, cut a line of text into 6-px cells and
give each cell the template at the smallest Hamming distance. On clean renders the distance
is 0 and the reading is exact.

Glyphs may use all 6 columns of their cell, so neighbouring glyphs can touch; cells are
therefore found from the fixed pitch (origin search over a few phases), never from blank
columns. Blank columns only split a line into *runs*; a gap of >= 6 blank columns between
runs is one space per 6 columns. It cannot read any other font, size or scale.
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CELL_W, CELL_H = 6, 11  # advance and line height of the bitmap default font, pixels
CHARSET = string.ascii_uppercase + string.ascii_lowercase + string.digits + ".-%"
# Blank columns inside one run never reach 4 (the widest gap is '.' followed by '.'); one
# space between runs leaves 5..10 blank columns, two leave 11..16, and so on.
_RUN_GAP = 4


@functools.cache
def bitmap_font() -> ImageFont.ImageFont:
    """The font this module reads (and the renderers draw with)."""
    return ImageFont.load_default_imagefont()


@functools.cache
def _templates() -> tuple[str, np.ndarray]:
    """(characters, templates [C, CELL_H, CELL_W + 1] bool).

    Template column 0 is the column *left* of the glyph's cell: many glyphs (A, B, H, m, ...)
    draw there, over the previous glyph's last column, and lose it when they start the
    string. Columns 1..6 are the cell itself.
    """
    font = bitmap_font()
    glyphs = []
    for ch in CHARSET:
        im = Image.new("1", (3 * CELL_W, CELL_H), 0)
        ImageDraw.Draw(im).text((0, 0), " " + ch, font=font, fill=1)
        full = np.array(im, dtype=bool)
        glyph = full[:, CELL_W - 1:2 * CELL_W]
        assert glyph.sum() == full.sum(), f"glyph {ch!r} reaches beyond its cell"
        glyphs.append(glyph)
    return CHARSET, np.stack(glyphs)


def render_text_mask(text: str) -> np.ndarray:
    """Ink mask [CELL_H, CELL_W * len(text)] (True = ink) of `text` drawn at the origin."""
    return _rendered(text).copy()


@functools.lru_cache(maxsize=4096)
def _rendered(text: str) -> np.ndarray:  # shared: read-only
    im = Image.new("1", (max(1, CELL_W * len(text)), CELL_H), 0)
    ImageDraw.Draw(im).text((0, 0), text, font=bitmap_font(), fill=1)
    mask = np.array(im, dtype=bool)
    mask.flags.writeable = False
    return mask


@dataclass(frozen=True)
class Reading:
    text: str
    distance: int  # pixels where the mask differs from the text re-drawn; 0 = exact match
    x0: int  # origin (left edge of the first cell) of the line, in mask columns
    y0: int  # origin (top of the cells), in mask rows


def _window(mask: np.ndarray, x0: int, y0: int, width: int) -> np.ndarray:
    """mask[y0:y0+CELL_H, x0:x0+width], blank where it sticks out of the mask."""
    h, w = mask.shape
    out = np.zeros((CELL_H, width), dtype=bool)
    ys0, ys1 = max(0, y0), min(h, y0 + CELL_H)
    xs0, xs1 = max(0, x0), min(w, x0 + width)
    if ys1 > ys0 and xs1 > xs0:
        out[ys0 - y0:ys1 - y0, xs0 - x0:xs1 - x0] = mask[ys0:ys1, xs0:xs1]
    return out


def _decode_run(mask: np.ndarray, x0: int, y0: int, n: int) -> tuple[str, int]:
    """Reads n cells with origin (x0, y0): (text, distance to the text re-drawn there)."""
    chars, templates = _templates()
    window = _window(mask, x0 - 1, y0, n * CELL_W + 1)  # one extra column on the left
    # Columns 0..4 of a cell belong to its glyph alone and tell every glyph of CHARSET
    # apart (>= 2 pixels), so cells can be matched one by one...
    cells = window[:, 1:].reshape(CELL_H, n, CELL_W).transpose(1, 0, 2)[:, :, :CELL_W - 1]
    dist = (cells[:, None] != templates[None, :, :, 1:CELL_W]).sum(axis=(2, 3))  # [n, C]
    best = dist.argmin(axis=1)
    text = "".join(chars[i] for i in best)
    # ...and the distance is then taken against the run re-drawn by Pillow, where a glyph's
    # box overwrites (not ORs) the previous glyph's last column. The run's first glyph has
    # its left overhang when the run follows a space, and loses it when it starts the string.
    after_space = _rendered(" " + text)[:, CELL_W - 1:]
    at_start = np.pad(_rendered(text), ((0, 0), (1, 0)))
    return text, int(min((after_space != window).sum(), (at_start != window).sum()))


def _read_run(mask: np.ndarray, c0: int, c1: int, r0: int, r1: int) -> Reading:
    """Reads one run of glyphs whose ink spans columns c0..c1 and rows r0..r1."""
    best: Reading | None = None
    # Ink starts in cell column 0, or 1 for '.', or -1 for a glyph with a left overhang.
    for x0 in (c0, c0 + 1, c0 - 1):
        n = (c1 - x0) // CELL_W + 1
        for y0 in range(r1 - (CELL_H - 1), r0 + 1):  # every origin keeping the ink in the cells
            text, dist = _decode_run(mask, x0, y0, n)
            if best is None or dist < best.distance:
                best = Reading(text, dist, x0, y0)
                if dist == 0:
                    return best
    assert best is not None
    return best


def read_line(mask: np.ndarray) -> Reading:
    """Reads one line of text from an ink mask [H, W] (True = ink).

    The mask must hold a single line drawn in the bitmap default font and nothing else.
    Returns the text ("" for an empty mask) and the pixel distance between the mask and the
    text re-drawn (0 = exact).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return Reading("", 0, 0, 0)
    rows = np.flatnonzero(mask.any(axis=1))
    r0, r1 = int(rows[0]), int(rows[-1])
    if r1 - r0 >= CELL_H:
        raise ValueError(f"ink spans {r1 - r0 + 1} rows; a line of this font spans <= {CELL_H}")
    breaks = np.flatnonzero(np.diff(cols) > _RUN_GAP)
    starts = np.concatenate([[cols[0]], cols[breaks + 1]])
    ends = np.concatenate([cols[breaks], [cols[-1]]])
    parts: list[str] = []
    total, first, prev_end = 0, None, None
    for c0, c1 in zip(starts.tolist(), ends.tolist()):
        if prev_end is not None:
            parts.append(" " * ((c0 - prev_end) // CELL_W))  # (blank columns + 1) // 6
        run = _read_run(mask, c0, c1, r0, r1)
        first = first or run
        parts.append(run.text)
        total += run.distance
        prev_end = c1
    assert first is not None
    return Reading("".join(parts), total, first.x0, first.y0)


def ink_mask(pixels: np.ndarray, threshold: int = 128) -> np.ndarray:
    """Dark-pixel mask of an image array ([H, W] grey or [H, W, C] colour): our text is black."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 3:
        pixels = pixels[..., :3].max(axis=-1)  # dark in every channel, so coloured bars are not ink
    return pixels < threshold
