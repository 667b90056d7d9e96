"""Glyph OCR reads back exactly what the bitmap default font draws."""

import random

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tools_server.tools import glyph_ocr


def _draw(text: str, origin=(7, 5), size=(140, 24)) -> np.ndarray:
    image = Image.new("RGB", size, (255, 255, 255))
    ImageDraw.Draw(image).text(origin, text, font=glyph_ocr.bitmap_font(), fill=(0, 0, 0))
    return glyph_ocr.ink_mask(np.asarray(image))


@pytest.mark.parametrize("ch", list(glyph_ocr.CHARSET))
def test_every_glyph_alone_and_between_neighbours(ch):
    for text in (ch, f"A{ch}H", f"{ch}{ch}{ch}", f"m {ch}"):
        reading = glyph_ocr.read_line(_draw(text))
        assert (reading.text, reading.distance) == (text, 0)


def test_random_strings_read_back_exactly():
    rng = random.Random(0)
    alphabet = glyph_ocr.CHARSET + "  "
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 16))).strip() or "x"
        origin = (rng.randint(0, 20), rng.randint(0, 10))
        reading = glyph_ocr.read_line(_draw(text, origin))
        assert (reading.text, reading.distance) == (text, 0), (text, origin)


def test_touching_glyphs_are_split_by_pitch_not_gaps():
    # 'H' and 'W' use the last column of their cell and neighbours overhang into it.
    reading = glyph_ocr.read_line(_draw("HWHMNW"))
    assert reading.text == "HWHMNW" and reading.distance == 0


def test_empty_and_unreadable_input():
    assert glyph_ocr.read_line(np.zeros((11, 30), bool)).text == ""
    noise = np.random.default_rng(0).random((11, 30)) < 0.5
    assert glyph_ocr.read_line(noise).distance > 0  # garbage is never an exact reading
    with pytest.raises(ValueError):
        glyph_ocr.read_line(np.ones((20, 5), bool))  # taller than one line
