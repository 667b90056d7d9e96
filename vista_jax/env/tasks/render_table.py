"""Table images: a header row over rows of cells, drawn so that the `ocr` tool (rapidocr's
PP-OCR models) reads every cell back as one line of text, exactly.

Conventions (measured with the real `ocr` tool, see `vista_jax/env/tasks/table_reading.py`):

- one font: Pillow's bundled FreeType font (Aileron Regular, `ImageFont.load_default(size)`,
  Pillow >= 10.1 built with FreeType) at `FONT_SIZES`, black, antialiased. It ships inside
  Pillow, so the same Pillow draws the same bytes on every machine;
- one word per cell (letters, digits, `.` and `-`, no spaces), centred in its cell, so that
  each cell is one OCR line whose box centre lies near its column's centre;
- every column is at least `PAD_X` px wider than its widest text on each side: neighbouring
  cells' texts stay >= 2 * PAD_X px apart and are never read as one line;
- a style picks the rules and fills: "grid" (every cell outlined), "rules" (horizontal rules
  under the header and at top and bottom), "zebra" (alternate rows tinted, no rules). The
  header row is tinted in every style. Fills are light (every channel >= 210).

`layout_table` gives the cell rectangles, `render_table` draws them.
"""

from __future__ import annotations

import dataclasses
import functools
import string
from collections.abc import Sequence
from typing import Literal

from PIL import Image, ImageDraw, ImageFont, features

FONT_SIZES = (14, 16, 18)  # px; the family draws these only
PAD_X = 12  # px of blank space left and right of a cell's widest text
PAD_Y = 6  # px above and below a line of text in its cell
MARGIN = 10  # px of white around the table
MAX_ROWS, MAX_COLUMNS = 14, 8  # body rows, columns
MAX_SIZE = (640, 480)  # the largest image drawn, pixels
CELL_CHARS = frozenset(string.ascii_letters + string.digits + ".-")
STYLES = ("grid", "rules", "zebra")
HEADER_FILLS = ((230, 230, 230), (222, 236, 255), (226, 246, 228), (255, 246, 214))
ZEBRA_FILL = (242, 242, 242)
RULE = (150, 150, 150)  # grid and rule lines
WHITE, BLACK = (255, 255, 255), (0, 0, 0)
Style = Literal["grid", "rules", "zebra"]


@functools.cache
def table_font(size: int) -> ImageFont.FreeTypeFont:
    """The font of every table, at `size` px (one of FONT_SIZES)."""
    if size not in FONT_SIZES:
        raise ValueError(f"font size {size} is not one of {FONT_SIZES}")
    if not features.check("freetype2"):
        raise RuntimeError("render_table needs Pillow built with FreeType (its bundled font)")
    return ImageFont.load_default(size=size)


def text_width(text: str, size: int) -> int:
    """Advance width of `text` at `size`, pixels (rounded up)."""
    return -int(-table_font(size).getlength(text) // 1)


@dataclasses.dataclass(frozen=True)
class TableLayout:
    """Where a table's cells are: column and row edges in pixels (x right, y down).

    Column c spans x in [col_edges[c], col_edges[c + 1]); row 0 is the header, row r + 1
    the r-th body row, spanning y in [row_edges[r], row_edges[r + 1])."""

    col_edges: tuple[int, ...]
    row_edges: tuple[int, ...]
    size: tuple[int, int]  # (width, height) of the image
    font_size: int

    def cell_box(self, row: int, column: int) -> tuple[int, int, int, int]:
        """[x0, y0, x1, y1) of a cell; row 0 is the header."""
        return (self.col_edges[column], self.row_edges[row], self.col_edges[column + 1],
                self.row_edges[row + 1])


def _check_cells(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    if not 2 <= len(header) <= MAX_COLUMNS:
        raise ValueError(f"a table has 2..{MAX_COLUMNS} columns, got {len(header)}")
    if not 1 <= len(rows) <= MAX_ROWS:
        raise ValueError(f"a table has 1..{MAX_ROWS} body rows, got {len(rows)}")
    for r, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"row {r} has {len(row)} cells for {len(header)} columns")
    for r, row in enumerate([header, *rows]):
        for c, text in enumerate(row):
            where = "header" if r == 0 else f"row {r - 1}"
            if not isinstance(text, str) or not text:
                raise ValueError(f"{where}, column {c}: a cell is a non-empty string, got "
                                 f"{text!r}")
            bad = sorted(set(text) - CELL_CHARS)
            if bad:
                raise ValueError(f"{where}, column {c}: {text!r} has characters a cell may not "
                                 f"hold: {''.join(bad)!r} (one word of letters, digits, '.' "
                                 "and '-')")


def layout_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                 font_size: int = 16) -> TableLayout:
    """The layout `render_table` draws; ValueError for cells it does not draw or a table
    larger than MAX_SIZE."""
    _check_cells(header, rows)
    ascent, descent = table_font(font_size).getmetrics()
    row_h = ascent + descent + 2 * PAD_Y
    widths = [max(text_width(row[c], font_size) for row in [header, *rows]) + 2 * PAD_X
              for c in range(len(header))]
    col_edges = [MARGIN]
    for w in widths:
        col_edges.append(col_edges[-1] + w)
    row_edges = [MARGIN + k * row_h for k in range(len(rows) + 2)]
    size = (col_edges[-1] + MARGIN + 1, row_edges[-1] + MARGIN + 1)
    if size[0] > MAX_SIZE[0] or size[1] > MAX_SIZE[1]:
        raise ValueError(f"the table needs {size[0]}x{size[1]} px; at most "
                         f"{MAX_SIZE[0]}x{MAX_SIZE[1]} (fewer rows, columns or a smaller font)")
    return TableLayout(tuple(col_edges), tuple(row_edges), size, font_size)


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, font_size: int = 16,
                 style: Style = "grid", header_fill: tuple[int, int, int] = HEADER_FILLS[0]
                 ) -> tuple[Image.Image, TableLayout]:
    """Draws the table (header row, then `rows`) on white; returns (RGB image, layout).

    Every cell is one word (see CELL_CHARS), centred in its cell. Raises ValueError for
    cells it does not draw, an unknown style, or a table larger than MAX_SIZE.
    """
    if style not in STYLES:
        raise ValueError(f"unknown table style {style!r}; one of {', '.join(STYLES)}")
    if len(header_fill) != 3 or min(header_fill) < 210 or max(header_fill) > 255:
        raise ValueError(f"header_fill {header_fill!r}: a light (r, g, b), every channel "
                         "210..255, so black text keeps its contrast")
    layout = layout_table(header, rows, font_size)
    image = Image.new("RGB", layout.size, WHITE)
    draw = ImageDraw.Draw(image)
    xs, ys = layout.col_edges, layout.row_edges
    left, right, top, bottom = xs[0], xs[-1], ys[0], ys[-1]
    draw.rectangle([left, ys[0], right, ys[1]], fill=header_fill)
    if style == "zebra":
        for r in range(2, len(ys) - 1, 2):
            draw.rectangle([left, ys[r], right, ys[r + 1]], fill=ZEBRA_FILL)
    if style == "grid":
        for y in ys:
            draw.line([(left, y), (right, y)], fill=RULE, width=1)
        for x in xs:
            draw.line([(x, top), (x, bottom)], fill=RULE, width=1)
    elif style == "rules":
        for y in (ys[0], ys[1], ys[-1]):
            draw.line([(left, y), (right, y)], fill=RULE, width=1)
    font = table_font(font_size)
    for r, row in enumerate([header, *rows]):
        cy = (ys[r] + ys[r + 1]) / 2
        for c, text in enumerate(row):
            cx = (xs[c] + xs[c + 1]) / 2
            draw.text((round(cx), round(cy)), text, font=font, fill=BLACK, anchor="mm")
    return image, layout
