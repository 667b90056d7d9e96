"""Geometry diagrams in vista-jax's style: labelled points, segments and circles.

Extends `render.render_points_diagram` (same dots, bitmap-font labels on white boxes placed
by `render.label_origin`) with circle outlines, so `tools_server/tools/diagram.py` reads
these diagrams exactly too. Drawing order: segments and circles (black, 1 px), then the
label boxes (white, they hide any line under them), the labels, then the dots on top.

- Segments join two labelled points (PIL's 1-px line: every pixel within 0.5 px of the
  ideal segment).
- A circle is `(centre, radius)`: `centre` is a point label (its dot is drawn) or integer
  pixel coordinates `(x, y)` (no dot: an unmarked centre); `radius` is an integer number
  of pixels or a point label the circle passes through (radius = that distance, rounded).
  The outline is PIL's 1-px ellipse: every pixel within 0.5 px of the ideal circle.

`random_geometry(rng, kind)` makes tasks: triangles (plain, right, with a circumcircle,
incircle or median), convex quadrilaterals and circles with chords, with the ground truth.
Save the images losslessly (PNG).
"""

from __future__ import annotations

import dataclasses
import math
import random
import string
from collections.abc import Mapping, Sequence
from typing import Union

import numpy as np
from PIL import Image, ImageDraw

from vista_jax.env.tasks import render
from vista_jax.env.tasks.render import BLACK, POINT_RADIUS, WHITE

MIN_CIRCLE_RADIUS = 10  # px; smaller rings crowd their own centre dot
LINE_WIDTH = 1  # px, segments and circle outlines
MIN_VISIBLE_SEGMENT_PX = 10  # a segment's pixels outside dots and label boxes
MIN_VISIBLE_CIRCLE = 0.5  # share of a circle's pixels outside dots and label boxes

CircleCentre = Union[str, tuple[int, int]]
CircleSpec = tuple[CircleCentre, Union[int, str]]


@dataclasses.dataclass(frozen=True)
class DrawnCircle:
    centre: tuple[int, int]  # pixels
    radius: int  # pixels
    label: str | None  # the centre's label, None for an unmarked centre


@dataclasses.dataclass(frozen=True)
class Geometry:
    """What a geometry diagram shows, in pixels (x right, y down)."""

    kind: str
    points: dict[str, tuple[int, int]]
    segments: list[tuple[str, str]]  # as drawn, each pair sorted
    circles: list[DrawnCircle]


def _check_points(points: Mapping[str, tuple[int, int]], size: tuple[int, int]
                  ) -> dict[str, tuple[int, int]]:
    """Points as render_points_diagram accepts them: labels and dots inside, apart."""
    width, height = size
    r = POINT_RADIUS
    pts: dict[str, tuple[int, int]] = {}
    boxes = []
    for name, xy in points.items():
        if not isinstance(name, str) or len(name) != 1 or not "A" <= name <= "Z":
            raise ValueError(f"point labels must be one uppercase letter, got {name!r}")
        x, y = _int_pair(xy, f"point {name}")
        if not (r + 1 <= x < width - r - 1 and r + 1 <= y < height - r - 1):
            raise ValueError(f"point {name} at {(x, y)} is too close to the border of {size}")
        ox, oy = render.label_origin(x, y, size)
        dot = (x - r - 1, y - r - 1, x + r + 1, y + r + 1)
        label = render._label_box(ox, oy, margin=1)
        for other, (odot, olabel) in boxes:
            if any(render._boxes_overlap(a, b) for a in (dot, label) for b in (odot, olabel)):
                raise ValueError(f"points {other} and {name} are too close to label apart")
        boxes.append((name, (dot, label)))
        pts[name] = (x, y)
    return pts


def _int_pair(xy, what: str) -> tuple[int, int]:
    try:
        x, y = xy
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected (x, y), got {xy!r}") from None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in (x, y)):
        raise ValueError(f"{what}: coordinates must be finite numbers, got {xy!r}")
    return int(round(x)), int(round(y))


def resolve_circles(points: Mapping[str, tuple[int, int]], circles: Sequence[CircleSpec],
                    size: tuple[int, int]) -> list[DrawnCircle]:
    """The circles as drawn (integer centre and radius); ValueError for a bad spec."""
    width, height = size
    out: list[DrawnCircle] = []
    for spec in circles:
        try:
            centre, radius = spec
        except (TypeError, ValueError):
            raise ValueError(f"circle: expected (centre, radius or point), got {spec!r}") from None
        if isinstance(centre, str):
            if centre not in points:
                raise ValueError(f"circle centre {centre!r} is not a point of {sorted(points)}")
            cx, cy = points[centre]
            label = centre
        else:
            cx, cy = _int_pair(centre, "circle centre")
            label = None
        if isinstance(radius, str):
            if radius not in points:
                raise ValueError(f"circle through {radius!r}: not a point of {sorted(points)}")
            if radius == label:
                raise ValueError(f"circle centred at {label} cannot pass through {label}")
            px, py = points[radius]
            r = int(round(math.hypot(px - cx, py - cy)))
        elif isinstance(radius, int) and not isinstance(radius, bool):
            r = radius
        else:
            raise ValueError(f"circle radius must be an integer (pixels) or a point label, "
                             f"got {radius!r}")
        if r < MIN_CIRCLE_RADIUS:
            raise ValueError(f"circle radius {r} px is below the minimum {MIN_CIRCLE_RADIUS}")
        if not (cx - r >= 0 and cy - r >= 0 and cx + r < width and cy + r < height):
            raise ValueError(f"circle at {(cx, cy)} with radius {r} leaves the image {size}")
        circle = DrawnCircle((cx, cy), r, label)
        if any(c.centre == circle.centre and c.radius == r for c in out):
            raise ValueError(f"circle at {(cx, cy)} with radius {r} is given twice")
        out.append(circle)
    return out


def _check_segments(points: Mapping[str, tuple[int, int]], segments: Sequence[tuple[str, str]]
                    ) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for seg in segments:
        try:
            a, b = seg
        except (TypeError, ValueError):
            raise ValueError(f"segment: expected (label, label), got {seg!r}") from None
        if a not in points or b not in points:
            raise ValueError(f"segment {a}{b} names a point that is not in {sorted(points)}")
        if a == b or points[a] == points[b]:
            raise ValueError(f"segment {a}{b} has no length")
        pair = (min(a, b), max(a, b))
        if pair not in seen:
            seen.append(pair)
    return seen


def render_geometry(points: Mapping[str, tuple[int, int]],
                    segments: Sequence[tuple[str, str]] = (),
                    circles: Sequence[CircleSpec] = (),
                    size: tuple[int, int] = (320, 240)) -> Image.Image:
    """Draws labelled points, segments and circles in vista-jax's style; an RGB image.

    `points` maps one uppercase letter to pixel coordinates (rounded to integers);
    `segments` are pairs of labels; `circles` are `(centre label or (x, y), radius in
    integer px or the label of a point on it)`. Raises ValueError for anything the diagram
    tools could not read back: points or labels too close, leaving the image, unknown
    labels, zero-length segments, circles below MIN_CIRCLE_RADIUS or leaving the image,
    segments or circles mostly hidden by dots and labels (MIN_VISIBLE_SEGMENT_PX,
    MIN_VISIBLE_CIRCLE).
    """
    width, height = size
    pts = _check_points(points, size)
    segs = _check_segments(pts, segments)
    rings = resolve_circles(pts, circles, size)
    hidden = _hidden_mask(pts, size)
    for a, b in segs:  # the reader judges a segment by what shows between dots and labels
        _, count = _visible_fraction(hidden, lambda d: d.line([pts[a], pts[b]], fill=1))
        if count < MIN_VISIBLE_SEGMENT_PX:
            raise ValueError(f"segment {a}{b} shows {count} px outside the dots and labels; "
                             f"at least {MIN_VISIBLE_SEGMENT_PX} are needed")
    for c in rings:
        (cx, cy), r = c.centre, c.radius
        frac, _ = _visible_fraction(
            hidden, lambda d: d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1))
        if frac < MIN_VISIBLE_CIRCLE:
            raise ValueError(f"the circle at {(cx, cy)} with radius {r} is {frac:.0%} hidden "
                             f"by dots and labels; at least {MIN_VISIBLE_CIRCLE:.0%} must show")

    image = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(image)
    for a, b in segs:
        draw.line([pts[a], pts[b]], fill=BLACK, width=LINE_WIDTH)
    for c in rings:
        (cx, cy), r = c.centre, c.radius
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=BLACK, width=LINE_WIDTH)
    font = render._font()
    for name, (x, y) in pts.items():
        ox, oy = render.label_origin(x, y, size)
        draw.rectangle(render._label_box(ox, oy), fill=WHITE)
        draw.text((ox, oy), name, font=font, fill=BLACK)
    r = POINT_RADIUS
    for x, y in pts.values():
        draw.ellipse([x - r, y - r, x + r, y + r], fill=BLACK)
    return image


def point_segment_distance(p: tuple[float, float], a: tuple[float, float],
                           b: tuple[float, float]) -> tuple[float, float]:
    """(distance from p to segment ab, position t in [0, 1] of the nearest point)."""
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    t = ((p[0] - ax) * dx + (p[1] - ay) * dy) / (dx * dx + dy * dy)
    t = min(1.0, max(0.0, t))
    return math.hypot(p[0] - ax - t * dx, p[1] - ay - t * dy), t


ON_SEGMENT_PX = 1.5  # a labelled point this close to a segment's interior lies on it


def elementary_segments(points: Mapping[str, tuple[int, int]],
                        segments: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drawn segments split at the labelled points on them (within ON_SEGMENT_PX), sorted.

    Pixels cannot tell "AB drawn with M on it" from "AM and MB drawn": this is the form
    `detect_lines` reports.
    """
    out: set[tuple[str, str]] = set()
    for a, b in segments:
        pa, pb = points[a], points[b]
        inner = []
        for name, p in points.items():
            if name in (a, b):
                continue
            d, t = point_segment_distance(p, pa, pb)
            if d <= ON_SEGMENT_PX and 0.0 < t < 1.0:
                inner.append((t, name))
        chain = [a] + [n for _, n in sorted(inner)] + [b]
        out.update((min(u, v), max(u, v)) for u, v in zip(chain, chain[1:]))
    return sorted(out)


# ---------------------------------------------------------------- random tasks

KINDS = ("triangle", "right_triangle", "triangle_circumcircle", "triangle_incircle",
         "triangle_median", "quadrilateral", "circle_chords")
_CLEARANCE_PX = 8  # a point not on a segment stays this far from it
_MIN_SAGITTA = 3  # px between a chord's middle and its arc
_MIN_ANGLE = 25.0  # degrees, at every polygon vertex
_MAX_TRIES = 2000


def _angle(p, q, r) -> float:
    """Angle pqr in degrees."""
    a = math.atan2(p[1] - q[1], p[0] - q[0]) - math.atan2(r[1] - q[1], r[0] - q[0])
    a = abs(math.degrees(a)) % 360
    return 360 - a if a > 180 else a


def _polygon_ok(pts: list[tuple[int, int]], min_side: float = 45) -> bool:
    n = len(pts)
    for i in range(n):
        p, q, r = pts[i - 1], pts[i], pts[(i + 1) % n]
        if math.dist(p, q) < min_side or _angle(p, q, r) < _MIN_ANGLE:
            return False
    return True


def _in_frame(xy: tuple[float, float], size: tuple[int, int], margin: int = 14) -> bool:
    return margin <= xy[0] < size[0] - margin and margin <= xy[1] < size[1] - margin


def _on_circle(c: tuple[float, float], r: float, angle: float) -> tuple[int, int]:
    return round(c[0] + r * math.cos(angle)), round(c[1] + r * math.sin(angle))


def _spread_angles(rng: random.Random, n: int, min_gap: float) -> list[float]:
    """n angles (radians, increasing) at least min_gap radians apart around the circle."""
    while True:
        angles = sorted(rng.uniform(0, 2 * math.pi) for _ in range(n))
        gaps = [b - a for a, b in zip(angles, angles[1:])] + [angles[0] + 2 * math.pi - angles[-1]]
        if min(gaps) >= min_gap:
            return angles


def _draft(kind: str, rng: random.Random, size: tuple[int, int]):
    """One candidate (points, segments, circles, names of points meant to lie on segments),
    or None. Labels are the first letters of `names`, shuffled later."""
    w, h = size
    if kind in ("triangle", "triangle_median"):
        pts = [(rng.randint(14, w - 15), rng.randint(14, h - 15)) for _ in range(3)]
        if not _polygon_ok(pts, 60):
            return None
        segs = [(0, 1), (1, 2), (2, 0)]
        if kind == "triangle":
            return pts, segs, [], []
        mid = (round((pts[1][0] + pts[2][0]) / 2), round((pts[1][1] + pts[2][1]) / 2))
        return pts + [mid], segs + [(0, 3)], [], [3]
    if kind == "right_triangle":
        a = (rng.randint(14, w - 15), rng.randint(14, h - 15))
        a0, b0 = rng.randint(-6, 6), rng.randint(-6, 6)
        unit = math.hypot(a0, b0)
        if unit == 0 or math.ceil(50 / unit) > 160 // unit:
            return None
        g = rng.randint(math.ceil(50 / unit), int(160 // unit))
        n = rng.randint(math.ceil(50 / unit), int(160 // unit)) * rng.choice((-1, 1))
        u, v = (g * a0, g * b0), (-b0 * n, a0 * n)  # u . v == 0 exactly
        pts = [a, (a[0] + u[0], a[1] + u[1]), (a[0] + v[0], a[1] + v[1])]
        if not all(_in_frame(p, size) for p in pts) or not _polygon_ok(pts, 50):
            return None
        return pts, [(0, 1), (1, 2), (2, 0)], [], []
    if kind == "triangle_circumcircle":
        r = rng.randint(40, min(w, h) // 2 - 15)
        c = (rng.randint(r + 14, w - r - 15), rng.randint(r + 14, h - r - 15))
        pts = [_on_circle(c, r, t) for t in _spread_angles(rng, 3, math.radians(70))]
        if not all(_in_frame(p, size) for p in pts) or not _polygon_ok(pts, 50):
            return None
        marked = rng.random() < 0.5
        circle = (3, r) if marked else (c, r)
        return pts + ([c] if marked else []), [(0, 1), (1, 2), (2, 0)], [circle], []
    if kind == "triangle_incircle":
        r = rng.randint(18, 40)
        c = (rng.randint(r + 30, w - r - 31), rng.randint(r + 30, h - r - 31))
        while True:
            phi = sorted(rng.uniform(0, 2 * math.pi) for _ in range(3))
            gaps = [b - a for a, b in zip(phi, phi[1:])] + [phi[0] + 2 * math.pi - phi[-1]]
            if all(math.radians(95) <= g <= math.radians(150) for g in gaps):
                break
        pts = []
        for i in range(3):  # vertex where the tangents at phi[i] and phi[i+1] meet
            p1, p2 = phi[i], phi[(i + 1) % 3]
            k = r / math.cos((p2 - p1) / 2)
            pts.append((round(c[0] + k * math.cos((p1 + p2) / 2)),
                        round(c[1] + k * math.sin((p1 + p2) / 2))))
        if not all(_in_frame(p, size) for p in pts) or not _polygon_ok(pts, 50):
            return None
        marked = rng.random() < 0.5
        circle = (3, r) if marked else (c, r)
        return pts + ([c] if marked else []), [(0, 1), (1, 2), (2, 0)], [circle], []
    if kind == "quadrilateral":
        c = (w / 2 + rng.uniform(-30, 30), h / 2 + rng.uniform(-20, 20))
        angles = _spread_angles(rng, 4, math.radians(55))
        pts = [_on_circle(c, rng.uniform(60, min(w, h) / 2 - 10), t) for t in angles]
        if not all(_in_frame(p, size) for p in pts) or not _polygon_ok(pts, 45):
            return None
        segs = [(0, 1), (1, 2), (2, 3), (3, 0)]
        if rng.random() < 0.5:
            segs.append(rng.choice([(0, 2), (1, 3)]))
        return pts, segs, [], []
    if kind == "circle_chords":
        r = rng.randint(45, min(w, h) // 2 - 15)
        c = (rng.randint(r + 14, w - r - 15), rng.randint(r + 14, h - r - 15))
        n = rng.randint(3, 5)
        angles = _spread_angles(rng, n, math.radians(40))
        pts = [_on_circle(c, r, t) for t in angles]
        segs = [(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < 0.4]
        on = []
        marked = rng.random() < 0.7
        centre_index = n
        if marked and rng.random() < 0.5:  # a diameter: the centre lies on a chord
            i = rng.randrange(n)
            far = (2 * c[0] - pts[i][0], 2 * c[1] - pts[i][1])  # exactly antipodal
            if min(math.dist(far, p) for p in pts) < 30:
                return None
            pts.append(far)
            segs.append((i, len(pts) - 1))
            centre_index = len(pts)
            on = [centre_index]
        if len(segs) < 2:
            return None
        circle = (centre_index, r) if marked else (c, r)
        return pts + ([c] if marked else []), segs, [circle], on
    raise ValueError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")


def _hidden_mask(points: Mapping[str, tuple[int, int]], size: tuple[int, int]) -> Image.Image:
    """Pixels that dots and label boxes cover (with a 1-2 px margin): lines there are hidden."""
    hidden = Image.new("1", size, 0)
    draw = ImageDraw.Draw(hidden)
    r = POINT_RADIUS + 2
    for x, y in points.values():
        draw.ellipse([x - r, y - r, x + r, y + r], fill=1)
        draw.rectangle(render._label_box(*render.label_origin(x, y, size), margin=1), fill=1)
    return hidden


def _visible_fraction(hidden: Image.Image, draw_fn) -> tuple[float, int]:
    """(fraction, count) of a shape's pixels outside the hidden mask."""
    shape = Image.new("1", hidden.size, 0)
    draw_fn(ImageDraw.Draw(shape))
    drawn = np.asarray(shape, dtype=bool)  # [H, W]
    visible = int((drawn & ~np.asarray(hidden, dtype=bool)).sum())
    return visible / max(int(drawn.sum()), 1), visible


def _clean(points: dict[str, tuple[int, int]], segments: list[tuple[str, str]],
           circles: list[DrawnCircle], on_segment: set[str], size: tuple[int, int]) -> bool:
    """True when the figure reads unambiguously: points off a segment keep _CLEARANCE_PX
    from it, points meant to lie on one are within 1 px, chords bulge _MIN_SAGITTA px from
    their arcs, and at least 60% of every segment and circle shows outside the dots and
    label boxes."""
    for a, b in segments:
        for name, p in points.items():
            if name in (a, b):
                continue
            d, t = point_segment_distance(p, points[a], points[b])
            if name in on_segment and d <= 1.0 and 0 < t < 1:
                continue
            if d < _CLEARANCE_PX:
                return False
    for c in circles:  # a chord must bulge away from its arc, or it reads as the arc
        for a, b in segments:
            on = [abs(math.dist(points[n], c.centre) - c.radius) <= 1.0 for n in (a, b)]
            if all(on) and c.radius - _line_distance(c.centre, points[a], points[b]) < _MIN_SAGITTA:
                return False
    hidden = _hidden_mask(points, size)
    for a, b in segments:
        frac, count = _visible_fraction(hidden, lambda d: d.line([points[a], points[b]], fill=1))
        if frac < 0.6 or count < 12:
            return False
    for c in circles:
        (cx, cy), r = c.centre, c.radius
        frac, _ = _visible_fraction(
            hidden, lambda d: d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1))
        if frac < 0.6:
            return False
        if c.label is None and any(math.dist(c.centre, p) < 12 for p in points.values()):
            return False  # an unmarked centre stays clear of the dots
    return True


def _line_distance(p, a, b) -> float:
    """Distance from p to the line through a and b."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    return abs(dx * (p[1] - a[1]) - dy * (p[0] - a[0])) / math.hypot(dx, dy)


def random_geometry(rng: random.Random, kind: str | None = None,
                    size: tuple[int, int] = (320, 240)) -> tuple[Image.Image, Geometry]:
    """A random clean diagram of `kind` (one of KINDS; None picks one) and its ground truth.

    Points get distinct random labels. Points on segments (a median's foot, the centre on
    a diameter) lie within 1 px of them; every other point keeps 8 px from every segment;
    a chord's middle is >= 3 px from its arc; at least 60% of every segment and circle
    shows outside the dots and label boxes.
    """
    kind = kind if kind is not None else rng.choice(KINDS)
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    for _ in range(_MAX_TRIES):
        draft = _draft(kind, rng, size)
        if draft is None:
            continue
        pts, segs, circles, on = draft
        names = rng.sample(string.ascii_uppercase, len(pts))
        points = {n: (int(x), int(y)) for n, (x, y) in zip(names, pts)}
        segments = sorted({tuple(sorted((names[i], names[j]))) for i, j in segs})
        specs = [(names[c] if isinstance(c, int) else c, r) for c, r in circles]
        try:
            image = render_geometry(points, segments, specs, size)
        except ValueError:
            continue
        drawn = resolve_circles(points, specs, size)
        if not _clean(points, segments, drawn, {names[i] for i in on}, size):
            continue
        return image, Geometry(kind, points, segments, drawn)
    raise RuntimeError(f"no clean {kind} diagram in {_MAX_TRIES} tries at size {size}")
