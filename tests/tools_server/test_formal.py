"""The formal figure language: parse, canonical text, round trips, errors with line numbers."""

import random
from fractions import Fraction

import pytest

from tools_server.tools import formal
from tools_server.tools.formal import Circle, Fact, Figure, FormalError, parse

EXAMPLE = """\
# a right triangle with its circumcircle
point A (0, 0)
point B (4, 0)
point C (0, 3/2)     # a fraction
point D (-1.25, 2.5)
point O
segment A B
segment B C
circle O r=5
circle A through B
length A B = 4
angle B A C = 90
on D segment A B
on C circle O
perpendicular A B A C
parallel A B C D
"""


def test_parse_reads_every_statement():
    fig = parse(EXAMPLE)
    assert fig.points == {"A": (0, 0), "B": (4, 0), "C": (0, Fraction(3, 2)),
                          "D": (Fraction(-5, 4), Fraction(5, 2)), "O": None}
    assert fig.segments == [("A", "B"), ("B", "C")]
    assert fig.circles == [Circle("O", radius=Fraction(5)), Circle("A", through="B")]
    assert fig.facts == [Fact("length", ("A", "B"), Fraction(4)),
                         Fact("angle", ("B", "A", "C"), Fraction(90)),
                         Fact("on_segment", ("D", "A", "B")), Fact("on_circle", ("C", "O")),
                         Fact("perpendicular", ("A", "B", "A", "C")),
                         Fact("parallel", ("A", "B", "C", "D"))]
    assert fig.circle("O").radius == 5 and fig.circle("B") is None


def test_canonical_text_round_trips():
    fig = parse(EXAMPLE)
    text = fig.to_text()
    assert "point C (0, 1.5)" in text and "# " not in text  # exact decimal, comments dropped
    assert parse(text) == fig
    assert parse(text).to_text() == text


@pytest.mark.parametrize("value, text", [
    (Fraction(3), "3"), (Fraction(-7, 2), "-3.5"), (Fraction(1, 3), "1/3"),
    (Fraction(-2, 3), "-2/3"), (Fraction(1, 8), "0.125"), (Fraction(0), "0"),
    (Fraction(-1, 20), "-0.05"), (Fraction(123456789, 1000), "123456.789"),
])
def test_numbers_are_written_exactly(value, text):
    assert formal.format_number(value) == text
    assert parse(f"point A ({text}, 0)").points["A"][0] == value


def _random_figure(rng: random.Random) -> Figure:
    names = rng.sample(["A", "B", "C", "D", "E", "P1", "Q_2", "O'", "c1"], rng.randint(2, 9))
    fig = Figure()
    for n in names:
        fig.points[n] = None if rng.random() < 0.3 else (
            Fraction(rng.randint(-500, 500), rng.choice([1, 2, 3, 4, 10, 7])),
            Fraction(rng.randint(-500, 500), rng.choice([1, 5, 8])))
    pairs = [(a, b) for a in names for b in names if a < b]
    fig.segments = rng.sample(pairs, rng.randint(0, min(4, len(pairs))))
    for centre in rng.sample(names, rng.randint(0, 2)):
        if rng.random() < 0.5:
            fig.circles.append(Circle(centre, radius=Fraction(rng.randint(1, 99), rng.randint(1, 4))))
        else:
            fig.circles.append(Circle(centre, through=rng.choice([n for n in names if n != centre])))
    for _ in range(rng.randint(0, 5)):
        kind = rng.choice(formal.FACT_KINDS)
        if kind == "length":
            fig.facts.append(Fact(kind, tuple(rng.sample(names, 2)), Fraction(rng.randint(1, 50), 4)))
        elif kind == "angle" and len(names) >= 3:
            fig.facts.append(Fact(kind, tuple(rng.sample(names, 3)), Fraction(rng.randint(1, 180))))
        elif kind == "on_segment" and len(names) >= 3:
            fig.facts.append(Fact(kind, tuple(rng.sample(names, 3))))
        elif kind == "on_circle" and fig.circles:
            c = rng.choice(fig.circles).centre
            fig.facts.append(Fact(kind, (rng.choice([n for n in names if n != c]), c)))
        elif kind in ("perpendicular", "parallel"):
            fig.facts.append(Fact(kind, tuple(rng.sample(names, 2) + rng.sample(names, 2))))
    return fig


def test_random_figures_round_trip():
    rng = random.Random(0)
    for _ in range(300):
        fig = _random_figure(rng)
        text = fig.to_text()
        assert parse(text) == fig, text
        assert parse(text).to_text() == text


def test_whitespace_comments_and_blank_lines_are_free():
    fig = parse("\n   point A(1,2)   # first\n\npoint  B  ( -3 , 4/6 )\nsegment   A   B\n"
                "circle A r = 2\nlength A B=5\n# the end")
    assert fig.points == {"A": (1, 2), "B": (-3, Fraction(2, 3))}
    assert fig.segments == [("A", "B")] and fig.circles == [Circle("A", radius=Fraction(2))]
    assert fig.facts == [Fact("length", ("A", "B"), Fraction(5))]
    assert parse("") == Figure() and Figure().to_text() == ""


@pytest.mark.parametrize("text, line, fragment", [
    ("poin A (1, 2)", 1, "unknown statement 'poin'"),
    ("point A 1 2", 1, "expected 'point NAME (X, Y)'"),
    ("point A (1, 2)\npoint A (3, 4)", 2, "already declared on line 1"),
    ("point A\n\nsegment A B", 3, "point B is not declared"),
    ("point A\npoint B\nsegment A B\nsegment B A", 4, "already given"),
    ("point A\nsegment A A", 2, "must be different"),
    ("point A\npoint B\npoint C\nangle A B C = 190", 4, "0 < angle <= 180"),
    ("point A\npoint B\npoint C\nangle A B C = 0", 4, "0 < angle <= 180"),
    ("point A\npoint B\nangle A B = 30", 3, "expected 'angle A B C = DEGREES'"),
    ("point A\npoint B\nlength A B = -2", 3, "must be positive"),
    ("point A\npoint B\nlength A B = x", 3, "expected 'length A B = NUMBER'"),
    ("point A\ncircle A r=0", 2, "radius must be positive"),
    ("point A\ncircle A 35", 2, "expected 'circle O r=NUMBER'"),
    ("point A\ncircle A through A", 2, "cannot pass through"),
    ("point A\npoint B\ncircle A r=1\ncircle A through B", 4, "already given"),
    ("point A\npoint B\non A circle B", 3, "no circle about B"),
    ("point A\npoint B\non A line B", 3, "expected 'on P segment A B'"),
    ("point A\npoint B\nperpendicular A B A", 3, "expected 'perpendicular A B C D'"),
    ("point A\npoint B\nparallel A A B B", 3, "two different points"),
    ("point A (1/0, 2)", 1, "division by zero"),
    ("point abcdefghijklmnopq", 1, "longer than 16"),
    ("point 1A (0, 0)", 1, "expected 'point NAME (X, Y)'"),
])
def test_errors_name_the_line_and_what_was_expected(text, line, fragment):
    with pytest.raises(FormalError) as info:
        parse(text)
    assert str(info.value).startswith(f"line {line}: "), str(info.value)
    assert fragment in str(info.value)


def test_size_limits():
    with pytest.raises(FormalError, match="characters"):
        parse("#" * (formal.MAX_CHARS + 1))
    with pytest.raises(FormalError, match="lines"):
        parse("\n" * (formal.MAX_LINES + 1))
    with pytest.raises(FormalError, match="too long"):
        parse("point A (" + "1" * 50 + ", 0)")
    with pytest.raises(FormalError, match="text"):
        parse(None)
