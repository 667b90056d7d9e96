"""A small line-based language for plane figures: what diagram_to_formal emits and
geometry_solver reads.

One statement per line; `#` starts a comment; blank lines are ignored:

    point A (12, 40)          a point with coordinates (x, y)
    point P                   a point whose position is unknown (geometry_solver finds it)
    segment A B               a drawn segment
    circle O r=35             a circle about point O with radius 35
    circle O through A        a circle about point O passing through point A
    length A B = 5            a given length
    angle A B C = 60          a given angle in degrees, vertex in the middle, 0 < angle <= 180
    on C segment A B          point C lies on segment AB
    on C circle O             point C lies on the circle about O
    perpendicular A B C D     line AB is perpendicular to line CD
    parallel A B C D          line AB is parallel to line CD

Names are a letter then letters, digits, `_` or `'` (at most 16 characters). Numbers are
exact rationals: integers, decimals (12.5) or fractions (7/2), with an optional minus sign
on coordinates. Every name must be declared by a `point` line (anywhere in the text); at
most one circle per centre. `parse` reports the first problem with its line number and
what was expected; `Figure.to_text()` writes the canonical text (points, segments,
circles, then facts, in their order), and `parse(figure.to_text()) == figure`.
"""

from __future__ import annotations

import dataclasses
import re
from fractions import Fraction

MAX_CHARS = 20_000
MAX_LINES = 500
MAX_NAME = 16
MAX_NUMBER_CHARS = 40

_NAME = r"[A-Za-z][A-Za-z0-9_']*"
_NUMBER = r"-?\d+(?:\.\d+)?(?:/\d+)?"
_POINT_RE = re.compile(rf"^point\s+({_NAME})(?:\s*\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\))?$")
_CIRCLE_RE = re.compile(rf"^circle\s+({_NAME})\s+(?:r\s*=\s*({_NUMBER})|through\s+({_NAME}))$")
_VALUE_RE = re.compile(rf"^(length|angle)\s+({_NAME}(?:\s+{_NAME})*)\s*=\s*({_NUMBER})$")
_NAMES_RE = re.compile(rf"^({_NAME})(?:\s+({_NAME}))*$")

FACT_KINDS = ("length", "angle", "on_segment", "on_circle", "perpendicular", "parallel")
_SYNTAX = {
    "point": "'point NAME (X, Y)' or 'point NAME'",
    "segment": "'segment A B'",
    "circle": "'circle O r=NUMBER' or 'circle O through A'",
    "length": "'length A B = NUMBER'",
    "angle": "'angle A B C = DEGREES' (vertex in the middle)",
    "on": "'on P segment A B' or 'on P circle O'",
    "perpendicular": "'perpendicular A B C D'",
    "parallel": "'parallel A B C D'",
}


class FormalError(ValueError):
    """A figure text that does not parse or does not make sense; the message says where."""


@dataclasses.dataclass(frozen=True)
class Circle:
    centre: str
    radius: Fraction | None = None  # exactly one of radius and through is set
    through: str | None = None


@dataclasses.dataclass(frozen=True)
class Fact:
    kind: str  # one of FACT_KINDS
    names: tuple[str, ...]  # length: A B; angle: A B C; on_segment: P A B; on_circle: P O;
    #                         perpendicular / parallel: A B C D
    value: Fraction | None = None  # length, or angle in degrees


@dataclasses.dataclass
class Figure:
    points: dict[str, tuple[Fraction, Fraction] | None] = dataclasses.field(default_factory=dict)
    segments: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    circles: list[Circle] = dataclasses.field(default_factory=list)
    facts: list[Fact] = dataclasses.field(default_factory=list)

    def circle(self, centre: str) -> Circle | None:
        return next((c for c in self.circles if c.centre == centre), None)

    def to_text(self) -> str:
        """The canonical text of this figure; `parse` reads it back equal."""
        lines = []
        for name, xy in self.points.items():
            lines.append(f"point {name}" if xy is None
                         else f"point {name} ({format_number(xy[0])}, {format_number(xy[1])})")
        lines += [f"segment {a} {b}" for a, b in self.segments]
        for c in self.circles:
            lines.append(f"circle {c.centre} r={format_number(c.radius)}" if c.radius is not None
                         else f"circle {c.centre} through {c.through}")
        for f in self.facts:
            n = f.names
            if f.kind in ("length", "angle"):
                lines.append(f"{f.kind} {' '.join(n)} = {format_number(f.value)}")
            elif f.kind == "on_segment":
                lines.append(f"on {n[0]} segment {n[1]} {n[2]}")
            elif f.kind == "on_circle":
                lines.append(f"on {n[0]} circle {n[1]}")
            else:
                lines.append(f"{f.kind} {' '.join(n)}")
        return "\n".join(lines) + ("\n" if lines else "")


def format_number(x: Fraction) -> str:
    """An exact rational as an integer, a terminating decimal, or p/q."""
    x = Fraction(x)
    if x.denominator == 1:
        return str(x.numerator)
    d, twos, fives = x.denominator, 0, 0
    while d % 2 == 0:
        d, twos = d // 2, twos + 1
    while d % 5 == 0:
        d, fives = d // 5, fives + 1
    if d != 1:
        return f"{x.numerator}/{x.denominator}"
    digits = max(twos, fives)
    scaled = abs(x.numerator) * 10 ** digits // x.denominator
    whole, frac = divmod(scaled, 10 ** digits)
    return f"{'-' if x < 0 else ''}{whole}.{frac:0{digits}d}"


def _number(text: str, where: str) -> Fraction:
    if len(text) > MAX_NUMBER_CHARS:
        raise FormalError(f"{where}: the number {text[:20]}... is too long")
    num, _, den = text.partition("/")
    value = Fraction(num)  # a decimal string is read exactly
    if den:
        if int(den) == 0:
            raise FormalError(f"{where}: division by zero in {text!r}")
        value /= int(den)
    return value


def _names(text: str, count: int, where: str, expected: str, line: str) -> tuple[str, ...]:
    names = tuple(text.split())
    if len(names) != count or not _NAMES_RE.match(" ".join(names)):
        raise FormalError(f"{where}: expected {expected}, got {line!r}")
    if len(set(names)) != count:
        raise FormalError(f"{where}: the points in {line!r} must be different")
    return names


def parse(text: str) -> Figure:
    """Reads a figure; FormalError("line N: ...") on the first problem found."""
    if not isinstance(text, str):
        raise FormalError(f"a figure is text, got {type(text).__name__}")
    if len(text) > MAX_CHARS:
        raise FormalError(f"the figure has {len(text)} characters; at most {MAX_CHARS}")
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        raise FormalError(f"the figure has {len(lines)} lines; at most {MAX_LINES}")
    fig = Figure()
    uses: list[tuple[str, int]] = []  # (name, line) to check once every point is known
    declared: dict[str, int] = {}
    segments_seen: set[frozenset[str]] = set()
    on_circle: list[tuple[tuple[str, ...], int]] = []
    for lineno, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"line {lineno}"
        keyword, _, rest = line.partition(" ")
        rest = rest.strip()
        if keyword not in _SYNTAX:
            raise FormalError(f"{where}: unknown statement {keyword!r}; expected one of "
                              f"{', '.join(_SYNTAX)} (e.g. {_SYNTAX['point']})")
        expected = _SYNTAX[keyword]
        if keyword == "point":
            m = _POINT_RE.match(line)
            if not m:
                raise FormalError(f"{where}: expected {expected}, got {line!r}")
            name = m.group(1)
            _check_name(name, where)
            if name in declared:
                raise FormalError(f"{where}: point {name} is already declared on line "
                                  f"{declared[name]}")
            declared[name] = lineno
            fig.points[name] = (None if m.group(2) is None
                                else (_number(m.group(2), where), _number(m.group(3), where)))
        elif keyword == "segment":
            a, b = _names(rest, 2, where, expected, line)
            uses += [(a, lineno), (b, lineno)]
            if frozenset((a, b)) in segments_seen:
                raise FormalError(f"{where}: segment {a} {b} is already given")
            segments_seen.add(frozenset((a, b)))
            fig.segments.append((a, b))
        elif keyword == "circle":
            m = _CIRCLE_RE.match(line)
            if not m:
                raise FormalError(f"{where}: expected {expected}, got {line!r}")
            centre, radius, through = m.group(1), m.group(2), m.group(3)
            uses.append((centre, lineno))
            if fig.circle(centre) is not None:
                raise FormalError(f"{where}: a circle about {centre} is already given "
                                  "(one circle per centre point)")
            if radius is not None:
                r = _number(radius, where)
                if r <= 0:
                    raise FormalError(f"{where}: the radius must be positive, got {radius}")
                fig.circles.append(Circle(centre, radius=r))
            else:
                if through == centre:
                    raise FormalError(f"{where}: a circle about {centre} cannot pass through "
                                      f"{centre}")
                uses.append((through, lineno))
                fig.circles.append(Circle(centre, through=through))
        elif keyword in ("length", "angle"):
            m = _VALUE_RE.match(line)
            count = 2 if keyword == "length" else 3
            if not m:
                raise FormalError(f"{where}: expected {expected}, got {line!r}")
            names = _names(m.group(2), count, where, expected, line)
            value = _number(m.group(3), where)
            if keyword == "length" and value <= 0:
                raise FormalError(f"{where}: a length must be positive, got {m.group(3)}")
            if keyword == "angle" and not 0 < value <= 180:
                raise FormalError(f"{where}: an angle is in degrees, 0 < angle <= 180, "
                                  f"got {m.group(3)}")
            uses += [(n, lineno) for n in names]
            fig.facts.append(Fact(keyword, names, value))
        elif keyword == "on":
            parts = rest.split()
            if len(parts) == 4 and parts[1] == "segment":
                names = _names(" ".join((parts[0], parts[2], parts[3])), 3, where, expected, line)
                fig.facts.append(Fact("on_segment", names))
            elif len(parts) == 3 and parts[1] == "circle":
                names = _names(" ".join((parts[0], parts[2])), 2, where, expected, line)
                fig.facts.append(Fact("on_circle", names))
                on_circle.append((names, lineno))
            else:
                raise FormalError(f"{where}: expected {expected}, got {line!r}")
            uses += [(n, lineno) for n in names]
        else:  # perpendicular, parallel
            names = tuple(rest.split())
            if len(names) != 4 or not _NAMES_RE.match(rest):
                raise FormalError(f"{where}: expected {expected}, got {line!r}")
            if names[0] == names[1] or names[2] == names[3]:
                raise FormalError(f"{where}: a line needs two different points, got {rest!r}")
            uses += [(n, lineno) for n in names]
            fig.facts.append(Fact(keyword, names))
    for name, lineno in uses:
        if name not in declared:
            raise FormalError(f"line {lineno}: point {name} is not declared (add "
                              f"'point {name} (X, Y)' or 'point {name}')")
    for (p, o), lineno in on_circle:
        if fig.circle(o) is None:
            raise FormalError(f"line {lineno}: there is no circle about {o} (add "
                              f"'circle {o} r=R' or 'circle {o} through A')")
    return fig


def _check_name(name: str, where: str) -> None:
    if len(name) > MAX_NAME:
        raise FormalError(f"{where}: the name {name[:20]!r} is longer than {MAX_NAME} characters")
