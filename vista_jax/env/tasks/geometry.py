"""Procedural geometry: lengths, angles, areas, perimeters and circles in a labelled diagram.

Every question type comes at every level; the level sets how much the question gives and
how many steps the answer takes:

- level 1 reads the picture: a length or angle measured in pixels / degrees
  (`measure_length`, `measure_angle`), a circle's radius (`detect_circles`), a triangle's or
  quadrilateral's area or perimeter in pixels (`diagram_to_formal` -> `geometry_solver` on
  the pixel coordinates), the longest / shortest side of a triangle (three measurements);
- level 2 gives facts: a right triangle with two sides given ("angle ABC = 90°, AB = 6,
  BC = 8") -> a third side, its area or perimeter (`diagram_to_formal` -> `geometry_solver`
  with the facts added, `use_coordinates=false`); a missing angle from the angle sum
  (`calculator`); a circle's circumference or area in pixels (`detect_circles` ->
  `calculator`); the largest / smallest angle of a triangle (three measurements);
- level 3 gives more facts: a triangle from two sides and the included angle (60° or 120°)
  or from three sides -> a side, an angle, the area or perimeter, exactly ("2*sqrt(13) + 14");
  a right triangle inscribed in a circle on its diameter -> the circle's radius, diameter,
  circumference or area ("25*pi/4"); the longest / shortest side or largest / smallest angle
  of a quadrilateral (four measurements).

Answers: pixel measurements within a relative 1% (points are read to the pixel, so the tools
are exact up to the 2 decimals they print; 2% for circles, whose radius is fitted to the
ring); facts-based values exactly (tolerance 0 for terminating decimals, `expression` with
sympy equivalence otherwise; an angle without a closed form within 1e-4).

Diagrams are drawn by `render_geometry` in vista-jax's style (random ones by
`random_geometry`); facts-based triangles are drawn to the facts' shape, rotated, mirrored
and scaled at random, so they look right but are not to scale. What the generator avoids,
to keep the readers and the solver exact and fast (the solver stops at 2 s):
no vertex angle below 20°; no exact right angle in the pixels where the facts have none
(`diagram_to_formal` would report it as a fact); only 60°, 90° and 120° as given angles
(with 45° or 135° the solver took up to 1.2 s; two angles and a side timed out, so the
angle sum goes to the calculator); the inscribed right triangle has unequal legs and its
right angle exact in the pixels (without the `perpendicular` fact that gives, solving took
up to 0.7 s, and equal legs timed out).

Measured with the real tools (`python -m vista_jax.env.tasks.geometry 400 [split]`): the
expert verifies on 1,200 of 1,200 tasks of train and of val, every type at every level.
"""

from __future__ import annotations

import dataclasses
import math
import random
import string
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import sympy
from PIL import Image

from vista_jax.env.tasks.base import (PlanStep, Task, check_difficulty, draw_difficulty,
                                      pick_question_type, register_family)
from vista_jax.env.tasks.render_geometry import Geometry, random_geometry, render_geometry

QUESTION_TYPES = ("length", "angle", "area", "perimeter", "circle", "largest")
SIZE = (320, 240)  # image size, pixels
PIXEL_TOLERANCE = 0.01  # relative, measurements between labelled points
CIRCLE_TOLERANCE = 0.02  # relative, measurements of a fitted circle
APPROX_TOLERANCE = 1e-4  # relative, solver values without a closed form (decimals)
MIN_ANGLE = 20.0  # degrees, at every vertex of a facts-based triangle
MIN_POINT_GAP = 40.0  # px between any two labelled points of a facts-based figure
MARGIN_LARGEST = 0.05  # the largest / smallest of a comparison beats the next by 5%
_MAX_TRIES = 500

# Triangles given by three sides with a 60, 90 or 120 degree angle: (p, q, r) with the
# angle between p and q, r opposite it; every angle >= 20 degrees.
SSS_TRIANGLES = {
    60: ((5, 8, 7), (3, 8, 7), (8, 15, 13), (7, 15, 13), (16, 21, 19), (10, 16, 14)),
    90: ((3, 4, 5), (6, 8, 10), (5, 12, 13), (8, 15, 17), (9, 12, 15), (20, 21, 29)),
    120: ((3, 5, 7), (7, 8, 13), (6, 10, 14)),
}

# --- phrasings (one picked per task by its seed) -------------------------------------------

Q_PIXEL = {
    "length": ("How long is segment {s}, in pixels?", "What is the length of {s} in pixels?",
               "Measure segment {s}. How many pixels long is it?"),
    "angle": ("What is the measure of angle {a}, in degrees?", "How many degrees is angle {a}?",
              "Measure angle {a} in the diagram (degrees)."),
    "area": ("What is the area of {poly} {n}, in square pixels?",
             "How many square pixels does {poly} {n} cover?",
             "Find the area of {poly} {n} in the diagram, in square pixels."),
    "perimeter": ("What is the perimeter of {poly} {n}, in pixels?",
                  "How long is the perimeter of {poly} {n} in pixels?",
                  "Find the perimeter of {poly} {n} in the diagram, in pixels."),
    "radius": ("What is the radius of the circle, in pixels?",
               "How many pixels is the circle's radius?",
               "Find the radius of the circle in pixels."),
}
NOT_TO_SCALE = ("The figure is not drawn to scale.", "The diagram is not to scale.", "")
THINK_FORMAL = ("Read the figure first.", "Get the figure as text.",
                "Turn the diagram into a figure.")
THINK_SOLVE = ("Add the given facts and solve for {q}.", "Add the facts, then ask for {q}.",
               "Solve for {q} with the facts.")
THINK_SOLVE_PIXELS = ("Compute {q} from the coordinates.", "Ask the solver for {q}.",
                      "Solve for {q} in pixels.")
THINK_MEASURE = {
    "length": ("Measure {s}.", "Measure segment {s}.", "I need the length of {s}."),
    "angle": ("Measure angle {a}.", "I need angle {a}.", "Measure the angle at {v}."),
}
THINK_CIRCLE = ("Find the circle.", "Detect the circle.", "Locate the circle and its radius.")


@dataclasses.dataclass
class _Spec:
    """What a question-type builder makes: everything of a Task but its ids."""

    image: Image.Image
    question: str
    answer: str
    answer_type: str
    tolerance: float
    plan: list[PlanStep]
    answer_template: str
    final_think: str
    meta: dict[str, Any]
    choices: tuple[str, ...] | None = None


# --- numbers ---------------------------------------------------------------------------------

def format_value(x: float) -> str:
    """How the expert writes a number a tool returned: integers bare, else 10 significant
    digits."""
    x = float(x)
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.10g}"


def _terminating(q: Fraction) -> bool:
    d = q.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def exact_answer(value: Any) -> tuple[str, str, float]:
    """(gold text, answer type, tolerance) of an exact sympy value: a terminating decimal is
    a number (exact), anything else an expression (verified by sympy equivalence)."""
    value = sympy.simplify(value)
    if value.is_Rational:
        q = Fraction(int(value.p), int(value.q))
        if _terminating(q):
            return format_value(float(q)), "number", 0.0
    return str(value), "expression", 0.0


_COS = {60: sympy.Rational(1, 2), 90: sympy.Integer(0), 120: sympy.Rational(-1, 2)}
_SIN = {60: sympy.sqrt(3) / 2, 90: sympy.Integer(1), 120: sympy.sqrt(3) / 2}
_NICE_ANGLES = {Fraction(1, 2): 60, Fraction(0): 90, Fraction(-1, 2): 120}  # cosine -> degrees


# --- drawing facts-based figures -------------------------------------------------------------

def _vertex_angle(p, q, r) -> float:
    """Angle pqr in degrees."""
    u, v = (p[0] - q[0], p[1] - q[1]), (r[0] - q[0], r[1] - q[1])
    return math.degrees(math.atan2(abs(u[0] * v[1] - u[1] * v[0]), u[0] * v[0] + u[1] * v[1]))


def _place(rng: random.Random, shape: Mapping[str, tuple[float, float]],
           segments: Sequence[tuple[str, str]],
           right_angles: Sequence[tuple[str, str, str]] = ()) -> dict[str, tuple[int, int]] | None:
    """Pixel positions for an abstract figure: rotated, maybe mirrored, scaled to 55-90% of
    the frame and shifted at random; None when the result would not read back cleanly.

    `right_angles` (u, v, w): angles at v that the facts make 90 degrees (any other angle
    between drawn segments must not be exactly 90 in integer pixels: `diagram_to_formal`
    would report it as a fact).
    """
    phi = rng.uniform(0, 2 * math.pi)
    flip = rng.choice((1, -1))
    c, s = math.cos(phi), math.sin(phi)
    turned = {n: (x * c - flip * y * s, x * s + flip * y * c) for n, (x, y) in shape.items()}
    xs = [p[0] for p in turned.values()]
    ys = [p[1] for p in turned.values()]
    margin = 22
    room_w, room_h = SIZE[0] - 2 * margin, SIZE[1] - 2 * margin
    span_w, span_h = max(xs) - min(xs), max(ys) - min(ys)
    scale = min(room_w / max(span_w, 1e-9), room_h / max(span_h, 1e-9)) * rng.uniform(0.55, 0.9)
    ox = margin + rng.uniform(0, room_w - span_w * scale) - min(xs) * scale
    oy = margin + rng.uniform(0, room_h - span_h * scale) - min(ys) * scale
    pts = {n: (round(ox + x * scale), round(oy + y * scale)) for n, (x, y) in turned.items()}
    names = list(pts)
    if any(math.dist(pts[a], pts[b]) < MIN_POINT_GAP
           for i, a in enumerate(names) for b in names[i + 1:]):
        return None
    right = {(u, v, w) for u, v, w in right_angles} | {(w, v, u) for u, v, w in right_angles}
    for (a, b) in segments:  # no accidental exact right angle between two drawn segments
        for (c2, d) in segments:
            shared = {a, b} & {c2, d}
            if (a, b) >= (c2, d) or len(shared) != 1:
                continue
            v = shared.pop()
            u, w = ({a, b} - {v}).pop(), ({c2, d} - {v}).pop()
            dot = ((pts[u][0] - pts[v][0]) * (pts[w][0] - pts[v][0])
                   + (pts[u][1] - pts[v][1]) * (pts[w][1] - pts[v][1]))
            if dot == 0 and (u, v, w) not in right:
                return None
    return pts


def _draw(rng: random.Random, shape, segments, **checks
          ) -> tuple[Image.Image, dict[str, tuple[int, int]]]:
    for _ in range(_MAX_TRIES):
        pts = _place(rng, shape, segments, **checks)
        if pts is None:
            continue
        try:
            image = render_geometry(pts, segments, (), SIZE)
        except ValueError:
            continue
        return image, pts
    raise RuntimeError(f"no clean drawing of {sorted(shape)} in {_MAX_TRIES} tries")


def _triangle_shape(p: float, q: float, angle_deg: float) -> list[tuple[float, float]]:
    """Vertices (apex, end of p, end of q): sides p and q meet at the apex at `angle_deg`."""
    t = math.radians(angle_deg)
    return [(0.0, 0.0), (p, 0.0), (q * math.cos(t), q * math.sin(t))]


def _angles_ok(pts: Sequence[tuple[float, float]]) -> bool:
    n = len(pts)
    return all(_vertex_angle(pts[i - 1], pts[i], pts[(i + 1) % n]) >= MIN_ANGLE for i in range(n))


def _labels(rng: random.Random, n: int) -> list[str]:
    return rng.sample(string.ascii_uppercase, n)


# --- plans -----------------------------------------------------------------------------------

def _formal_step(rng: random.Random) -> PlanStep:
    return PlanStep("diagram_to_formal", {"image": "img_0"}, rng.choice(THINK_FORMAL),
                    key_args=("image",))


def _solver_step(rng: random.Random, query: str, facts: Sequence[str], what: str) -> PlanStep:
    if facts:
        return PlanStep("geometry_solver",
                        {"figure": "{figure}\n" + "\n".join(facts), "query": query,
                         "use_coordinates": False},
                        rng.choice(THINK_SOLVE).format(q=what),
                        key_args=("query", "use_coordinates"))
    return PlanStep("geometry_solver", {"figure": "{figure}", "query": query},
                    rng.choice(THINK_SOLVE_PIXELS).format(q=what), key_args=("query",))


def _length_step(rng: random.Random, a: str, b: str, think: str | None = None) -> PlanStep:
    think = think or rng.choice(THINK_MEASURE["length"]).format(s=a + b)
    return PlanStep("measure_length", {"image": "img_0", "point_a": a, "point_b": b}, think,
                    key_args=("image", "point_a", "point_b"),
                    alternatives=(PlanStep("measure_length",
                                           {"image": "img_0", "point_a": b, "point_b": a}, "",
                                           key_args=("image", "point_a", "point_b")),))


def _angle_step(rng: random.Random, a: str, v: str, c: str, think: str | None = None) -> PlanStep:
    think = think or rng.choice(THINK_MEASURE["angle"]).format(a=a + v + c, v=v)
    keys = ("image", "point_a", "vertex", "point_c")
    return PlanStep("measure_angle", {"image": "img_0", "point_a": a, "vertex": v, "point_c": c},
                    think, key_args=keys,
                    alternatives=(PlanStep("measure_angle", {"image": "img_0", "point_a": c,
                                                             "vertex": v, "point_c": a}, "",
                                           key_args=keys),))


def _fact_question(rng: random.Random, figure: str, facts_text: Sequence[str], ask: str) -> str:
    given = ", ".join(facts_text[:-1]) + " and " + facts_text[-1] if len(facts_text) > 1 \
        else facts_text[0]
    note = rng.choice(NOT_TO_SCALE)
    return " ".join(x for x in (f"In {figure}, {given}.", ask, note) if x)


def _solved_answer(gold: Any, rng: random.Random, what: str) -> dict[str, Any]:
    """Answer fields of a facts-based question whose gold is the exact sympy value `gold`."""
    text, kind, tol = exact_answer(gold)
    template = "{solved}" if kind == "expression" else "{solved_num}"
    finals = (f"{what} is {template}.", f"So {what} = {template}.", f"The solver gives {template}.")
    return {"answer": text, "answer_type": kind, "tolerance": tol, "answer_template": template,
            "final_think": rng.choice(finals)}


# --- level 1: the picture --------------------------------------------------------------------

_POLYGON_KINDS = ("triangle", "right_triangle", "triangle_circumcircle", "triangle_incircle",
                  "triangle_median", "quadrilateral")
_CIRCLE_KINDS = ("triangle_circumcircle", "triangle_incircle", "circle_chords")


def _polygon(g: Geometry) -> list[str]:
    """The triangle's or quadrilateral's vertices, in order around it."""
    names = list(g.points)
    if g.kind == "quadrilateral":
        return names[:4]
    return names[:3]  # random_geometry lists a triangle's vertices first


def _pixel_length(rng: random.Random, level: int) -> _Spec:
    image, g = random_geometry(rng, rng.choice(("triangle", "right_triangle", "quadrilateral",
                                                "triangle_median", "circle_chords")), SIZE)
    a, b = rng.choice(g.segments)
    if rng.random() < 0.5:
        a, b = b, a
    d = math.dist(g.points[a], g.points[b])
    return _Spec(image, rng.choice(Q_PIXEL["length"]).format(s=a + b), f"{d:.2f}", "number",
                 PIXEL_TOLERANCE, [_length_step(rng, a, b)], "{m0}",
                 rng.choice(("{a}{b} is {{m0}} px.", "The length is {{m0}} px.",
                             "{a}{b} measures {{m0}} pixels.")).format(a=a, b=b),
                 {"kind": g.kind, "asked": [a, b], "points": g.points})


def _pixel_angle(rng: random.Random, level: int) -> _Spec:
    image, g = random_geometry(rng, rng.choice(("triangle", "right_triangle", "quadrilateral")),
                               SIZE)
    poly = _polygon(g)
    i = rng.randrange(len(poly))
    a, v, c = poly[i - 1], poly[i], poly[(i + 1) % len(poly)]
    if rng.random() < 0.5:
        a, c = c, a
    deg = _vertex_angle(g.points[a], g.points[v], g.points[c])
    return _Spec(image, rng.choice(Q_PIXEL["angle"]).format(a=a + v + c), f"{deg:.2f}", "number",
                 PIXEL_TOLERANCE, [_angle_step(rng, a, v, c)], "{m0}",
                 rng.choice(("Angle {n} is {{m0}} degrees.", "It measures {{m0}} degrees.",
                             "{n} = {{m0}} degrees.")).format(n=a + v + c),
                 {"kind": g.kind, "asked": [a, v, c], "points": g.points})


def _shoelace(pts: Sequence[tuple[int, int]]) -> Fraction:
    n = len(pts)
    twice = sum(pts[i][0] * pts[(i + 1) % n][1] - pts[(i + 1) % n][0] * pts[i][1]
                for i in range(n))
    return Fraction(abs(twice), 2)


def _pixel_polygon(rng: random.Random, level: int, what: str) -> _Spec:
    image, g = random_geometry(rng, rng.choice(_POLYGON_KINDS), SIZE)
    poly = _polygon(g)
    pts = [g.points[n] for n in poly]
    k = rng.randrange(len(poly))
    poly = poly[k:] + poly[:k]  # any start, same order around
    if rng.random() < 0.5:
        poly = poly[::-1]
    if what == "area":
        value = float(_shoelace(pts))
    else:
        value = sum(math.dist(pts[i], pts[(i + 1) % len(pts)]) for i in range(len(pts)))
    name = "".join(poly)
    shape = "triangle" if len(poly) == 3 else "quadrilateral"
    query = f"{what} {' '.join(poly)}"
    plan = [_formal_step(rng), _solver_step(rng, query, (), f"the {what} of {name}")]
    final = rng.choice((f"The {what} is {{solved_num}}.", f"{name} has {what} {{solved_num}}.",
                        "The solver gives {solved_num}."))
    return _Spec(image, rng.choice(Q_PIXEL[what]).format(poly=shape, n=name),
                 f"{value:.2f}", "number", PIXEL_TOLERANCE, plan, "{solved_num}",
                 final, {"kind": g.kind, "asked": poly, "points": g.points})


def _pixel_circle(rng: random.Random, level: int) -> _Spec:
    image, g = random_geometry(rng, rng.choice(_CIRCLE_KINDS), SIZE)
    circle = g.circles[0]
    plan = [PlanStep("detect_circles", {"image": "img_0"}, rng.choice(THINK_CIRCLE),
                     key_args=("image",))]
    if level == 1:
        return _Spec(image, rng.choice(Q_PIXEL["radius"]), str(circle.radius), "number",
                     CIRCLE_TOLERANCE, plan, "{r}",
                     rng.choice(("The radius is {r} px.", "Radius {r} pixels.",
                                 "The circle's radius is {r}.")),
                     {"kind": g.kind, "asked": "radius", "radius": circle.radius})
    what = rng.choice(("circumference", "area", "diameter"))
    r = circle.radius
    gold = {"circumference": 2 * math.pi * r, "area": math.pi * r * r, "diameter": 2 * r}[what]
    expr = {"circumference": "2 * pi * {r}", "area": "pi * {r}^2", "diameter": "2 * {r}"}[what]
    unit = "square pixels" if what == "area" else "pixels"
    questions = (f"What is the {what} of the circle, in {unit}?",
                 f"Find the circle's {what} in {unit}.",
                 f"How large is the {what} of the circle ({unit})?")
    calc_think = {"circumference": "Circumference is 2 pi r.", "area": "Area is pi r squared.",
                  "diameter": "Diameter is twice the radius."}[what]
    plan.append(PlanStep("calculator", {"expression": expr}, calc_think, key_args=("expression",)))
    return _Spec(image, rng.choice(questions), f"{gold:.2f}", "number",
                 CIRCLE_TOLERANCE, plan, "{calc}",
                 rng.choice((f"The {what} is {{calc}}.", "So it is {calc}.",
                             f"{what.capitalize()} = {{calc}}.")),
                 {"kind": g.kind, "asked": what, "radius": r})


# --- comparisons (choice) --------------------------------------------------------------------

def _largest(rng: random.Random, level: int) -> _Spec:
    for _ in range(_MAX_TRIES):
        kind = "quadrilateral" if level == 3 else rng.choice(("triangle", "right_triangle"))
        image, g = random_geometry(rng, kind, SIZE)
        poly = _polygon(g)
        n = len(poly)
        measure = {1: "side", 2: "angle"}.get(level) or rng.choice(("side", "angle"))
        pick = rng.choice(("max", "min"))
        if measure == "side":
            items = [(poly[i], poly[(i + 1) % n]) for i in range(n)]
            values = [math.dist(g.points[a], g.points[b]) for a, b in items]
            names = [a + b for a, b in items]
        else:
            items = [(poly[i - 1], poly[i], poly[(i + 1) % n]) for i in range(n)]
            values = [_vertex_angle(*(g.points[p] for p in t)) for t in items]
            names = [f"angle {''.join(t)}" for t in items]
        ranked = sorted(values, reverse=(pick == "max"))
        if abs(ranked[0] - ranked[1]) < MARGIN_LARGEST * max(ranked[0], ranked[1]):
            continue  # too close to call by eye or by a rounding of the tools
        break
    else:
        raise RuntimeError("no comparison with a clear winner")
    order = list(range(n))
    rng.shuffle(order)
    choices = tuple(names[i] for i in order)
    letters = string.ascii_uppercase[:n]
    best = (max if pick == "max" else min)(order, key=lambda i: values[i])
    answer = letters[order.index(best)]
    shape = "triangle" if n == 3 else "quadrilateral"
    word = {("side", "max"): "longest", ("side", "min"): "shortest",
            ("angle", "max"): "largest", ("angle", "min"): "smallest"}[(measure, pick)]
    options = "  ".join(f"({l}) {c}" for l, c in zip(letters, choices))
    fig = "".join(poly)
    question = rng.choice((f"Which {measure} of {shape} {fig} is the {word}? {options}",
                           f"In {shape} {fig}, which {measure} is {word}? Options: {options}",
                           f"Choose the {word} {measure} of {shape} {fig}: {options}"))
    plan = []
    for k, i in enumerate(order):
        if measure == "side":
            a, b = items[i]
            plan.append(_length_step(rng, a, b, f"({letters[k]}) {a}{b}."))
        else:
            a, v, c = items[i]
            plan.append(_angle_step(rng, a, v, c, f"({letters[k]}) angle at {v}."))
    plan[0] = dataclasses.replace(plan[0], think=rng.choice(
        (f"Measure each {measure}. ", f"Compare the {measure}s. ", "")) + plan[0].think)
    final = rng.choice((f"The {word} is ({{best}}) at {{best_value}}.",
                        f"({{best}}) is the {word}.", f"{{best_value}} is the {word}: ({{best}})."))
    return _Spec(image, question, answer, "choice", 0.0, plan, "{best}", final,
                 {"kind": g.kind, "pick": pick, "measure": measure, "values":
                  [values[i] for i in order]}, choices=choices)


# --- levels 2 and 3: facts -------------------------------------------------------------------

def _fact_triangle(rng: random.Random, level: int, want: str) -> _Spec:
    """A triangle given by facts; `want` one of length, area, perimeter, angle. Level 2: a
    right triangle with two sides given; level 3: two sides and the included 60 or 120
    degree angle, or three sides."""
    a, b, c = _labels(rng, 3)  # b: the vertex of the given (or right) angle; BA = p, BC = q
    if level == 2 or want not in ("angle", "area") or rng.random() < 0.5:
        sss = want == "angle"
    else:
        sss = True
    if level == 2:
        angle = 90
        if want == "length" and rng.random() < 0.5:  # the hypotenuse and a leg: find BC
            p, q, h = rng.choice(SSS_TRIANGLES[90])
            if rng.random() < 0.5:
                p, q = q, p
            facts = [("length", (a, c), h), ("length", (b, a), p)]
            target, third = (b, c), sympy.Integer(q)
        else:
            p, q = _two_sides(rng, angle)
            facts = [("length", (b, a), p), ("length", (b, c), q)]
            target, third = (a, c), sympy.sqrt(p * p + q * q)
        facts.append(("angle", (a, b, c), 90))
    elif sss:
        angle = rng.choice((60, 90, 120)) if want == "angle" else rng.choice((60, 120))
        p, q, r = rng.choice(SSS_TRIANGLES[angle])
        if rng.random() < 0.5:
            p, q = q, p
        facts = [("length", (b, a), p), ("length", (b, c), q), ("length", (a, c), r)]
        target, third = (a, c), sympy.Integer(r)
    else:
        angle = rng.choice((60, 120))
        p, q = _two_sides(rng, angle)
        facts = [("length", (b, a), p), ("length", (b, c), q), ("angle", (a, b, c), angle)]
        target, third = (a, c), sympy.sqrt(p * p + q * q - 2 * p * q * _COS[angle])
    if level == 3:
        rng.shuffle(facts)
    shape = dict(zip((b, a, c), _triangle_shape(p, q, angle)))
    image, pts = _draw(rng, shape, [(a, b), (b, c), (a, c)],
                       right_angles=[(a, b, c)] if angle == 90 else [])
    tri = a + b + c
    given = [f"{n[0]}{n[1]} = {v}" if kind == "length" else f"angle {''.join(n)} = {v}°"
             for kind, n, v in facts]
    formal_facts = [f"{kind} {' '.join(n)} = {v}" for kind, n, v in facts]
    side_p, side_q = sympy.Integer(p), sympy.Integer(q)
    if want == "length":
        x, y = target
        query, what, gold = f"length {x} {y}", f"{x}{y}", third
        ask = rng.choice((f"How long is {x}{y}?", f"Find the length of {x}{y}.",
                          f"What is {x}{y}?"))
    elif want == "area":
        query, what = f"area {a} {b} {c}", f"the area of {tri}"
        gold = side_p * side_q * _SIN[angle] / 2
        ask = rng.choice((f"What is the area of triangle {tri}?",
                          f"Find the area of triangle {tri}.",
                          f"How large is the area of {tri}?"))
    elif want == "perimeter":
        query, what = f"perimeter {a} {b} {c}", f"the perimeter of {tri}"
        gold = side_p + side_q + sympy.sqrt(p * p + q * q - 2 * p * q * _COS[angle])
        ask = rng.choice((f"What is the perimeter of triangle {tri}?",
                          f"Find the perimeter of triangle {tri}.",
                          f"How long is the perimeter of {tri}?"))
    else:  # angle, from three sides
        vertex = rng.choice((b, b, a, c))
        u, w = rng.sample([n for n in (a, b, c) if n != vertex], 2)
        query, what = f"angle {u} {vertex} {w}", f"angle {u}{vertex}{w}"
        ask = rng.choice((f"Find angle {u}{vertex}{w} in degrees.",
                          f"What is the measure of angle {u}{vertex}{w}?",
                          f"How many degrees is angle {u}{vertex}{w}?"))
        side = {frozenset(n): v for _, n, v in facts}
        s1, s2 = side[frozenset((u, vertex))], side[frozenset((w, vertex))]
        opp = side[frozenset((u, w))]
        cos = Fraction(s1 * s1 + s2 * s2 - opp * opp, 2 * s1 * s2)
        gold = _NICE_ANGLES.get(cos)
        if gold is None:
            gold = math.degrees(math.acos(float(cos)))
    plan = [_formal_step(rng), _solver_step(rng, query, formal_facts, what)]
    if isinstance(gold, float):  # an angle with no closed form: the solver's decimal
        fields = {"answer": format_value(gold), "answer_type": "number",
                  "tolerance": APPROX_TOLERANCE, "answer_template": "{solved_num}",
                  "final_think": rng.choice((f"{what} is {{solved_num}} degrees.",
                                             "It is {solved_num} degrees."))}
    else:
        fields = _solved_answer(sympy.sympify(gold), rng, what)
    question = _fact_question(rng, f"triangle {tri}", given, ask)
    return _Spec(image, question, plan=plan, meta={"facts": formal_facts, "points": pts,
                                                   "asked": query}, **fields)


def _two_sides(rng: random.Random, angle: int) -> tuple[int, int]:
    """Two integer sides 3..12 that make every angle of the triangle >= MIN_ANGLE."""
    while True:
        p, q = rng.randint(3, 12), rng.randint(3, 12)
        if _angles_ok(_triangle_shape(p, q, angle)):
            return p, q


def _angle_sum(rng: random.Random, level: int) -> _Spec:
    """Level 2 angle: the third angle of a triangle, or a base angle of an isosceles one."""
    a, b, c = _labels(rng, 3)
    if rng.random() < 0.5:
        for _ in range(_MAX_TRIES):
            x, y = rng.randrange(30, 95, 5), rng.randrange(30, 95, 5)
            if 180 - x - y >= 25:
                break
        z = 180 - x - y
        # angle at b is x, at c is y, asked: at a
        shape_angles = {b: x, c: y}
        facts = [f"angle {a}{b}{c} = {x}°", f"angle {b}{c}{a} = {y}°"]
        ask = rng.choice((f"Find angle {b}{a}{c}.", f"What is angle {b}{a}{c} in degrees?",
                          f"How many degrees is angle {b}{a}{c}?"))
        expr = f"180 - {x} - {y}"
        think = rng.choice(("Angles of a triangle sum to 180.", "Subtract from 180.",
                            "The three angles add up to 180."))
        gold = z
        figure = f"triangle {a}{b}{c}"
        rights = [(a, b, c)] if x == 90 else ([(b, c, a)] if y == 90 else [])
    else:
        apex = rng.randrange(30, 112, 2)
        base = (180 - apex) // 2
        shape_angles = {b: base, c: base}
        facts = [f"{a}{b} = {a}{c}", f"angle {b}{a}{c} = {apex}°"]
        ask = rng.choice((f"Find angle {a}{b}{c}.", f"What is angle {a}{b}{c} in degrees?",
                          f"How many degrees is angle {a}{b}{c}?"))
        expr = f"(180 - {apex}) / 2"
        think = rng.choice(("The base angles are equal.", "Halve what is left of 180.",
                            "Isosceles: equal base angles."))
        gold = base
        figure = f"isosceles triangle {a}{b}{c}"
        rights = []
    tb, tc = math.radians(shape_angles[b]), math.radians(shape_angles[c])
    # b at the origin, c at (1, 0), a where the rays at b and c meet
    k = math.sin(tc) / math.sin(tb + tc)
    shape = {b: (0.0, 0.0), c: (1.0, 0.0), a: (k * math.cos(tb), k * math.sin(tb))}
    image, pts = _draw(rng, shape, [(a, b), (b, c), (a, c)], right_angles=rights)
    plan = [PlanStep("calculator", {"expression": expr}, think, key_args=("expression",))]
    question = _fact_question(rng, figure, facts, ask)
    return _Spec(image, question, str(gold), "number", 0.0, plan, "{calc}",
                 rng.choice(("The angle is {calc} degrees.", "It is {calc} degrees.",
                             "So {calc} degrees.")),
                 {"facts": facts, "points": pts, "asked": expr})


def _inscribed_circle(rng: random.Random, level: int) -> _Spec:
    """Level 3 circle: a right triangle ACB on a diameter AB of the circle about O, its legs
    AC and BC given. The right angle at C is exact in the pixels (integer legs
    g * (m, n) and k * (-n, m)), so `diagram_to_formal` reports it: without it the solver
    took up to 0.7 s, and timed out (2 s) on equal legs, which are never asked."""
    a, b, c, o = _labels(rng, 4)
    while True:
        p, q = rng.randint(3, 12), rng.randint(3, 12)  # AC = p, BC = q
        if p != q and max(p, q) / min(p, q) <= 2:  # short chords hug their arc
            break
    image = pts = None
    for _ in range(_MAX_TRIES):
        m, n = rng.randint(-6, 6), rng.randint(-6, 6)
        unit = math.hypot(m, n)
        if unit < 2:
            continue
        diameter_px = rng.uniform(100, min(SIZE) - 40)
        hyp = math.hypot(p, q)
        g = max(1, round(diameter_px * p / hyp / unit))
        k = max(1, round(diameter_px * q / hyp / unit)) * rng.choice((1, -1))
        fixed = next(((g + dg, k + dk) for dg in (0, 1, -1) for dk in (0, 1, -1)
                      if ((g + dg) * m - (k + dk) * n) % 2 == 0
                      and ((g + dg) * n + (k + dk) * m) % 2 == 0 and g + dg > 0 and k + dk != 0),
                     None)
        if fixed is None:
            continue
        g, k = fixed
        ca, cb = (g * m, g * n), (-k * n, k * m)  # C->A and C->B, perpendicular exactly
        if abs(abs(k) / g - q / p) > 0.2 * q / p:
            continue  # too far from the facts' shape
        rel = {c: (0, 0), a: ca, b: cb, o: ((ca[0] + cb[0]) // 2, (ca[1] + cb[1]) // 2)}
        radius = math.dist(rel[o], rel[a])
        lo_x = max(math.ceil(radius - rel[o][0]), 20 - min(v[0] for v in rel.values()))
        hi_x = min(math.floor(SIZE[0] - 1 - radius - rel[o][0]),
                   SIZE[0] - 20 - max(v[0] for v in rel.values()))
        lo_y = max(math.ceil(radius - rel[o][1]), 20 - min(v[1] for v in rel.values()))
        hi_y = min(math.floor(SIZE[1] - 1 - radius - rel[o][1]),
                   SIZE[1] - 20 - max(v[1] for v in rel.values()))
        if lo_x > hi_x or lo_y > hi_y:
            continue
        cx, cy = rng.randint(lo_x, hi_x), rng.randint(lo_y, hi_y)
        cand = {name: (cx + x, cy + y) for name, (x, y) in rel.items()}
        names = list(cand)
        if any(math.dist(cand[u], cand[v]) < MIN_POINT_GAP
               for i, u in enumerate(names) for v in names[i + 1:]):
            continue
        try:
            image = render_geometry(cand, [(a, b), (a, c), (b, c)], [(o, a)], SIZE)
        except ValueError:
            continue
        pts = cand
        break
    if image is None:
        raise RuntimeError(f"no clean inscribed right triangle in {_MAX_TRIES} tries")
    what = rng.choice(("radius", "diameter", "circumference", "area"))
    r = sympy.sqrt(p * p + q * q) / 2
    gold = {"radius": r, "diameter": 2 * r, "circumference": 2 * sympy.pi * r,
            "area": sympy.pi * r ** 2}[what]
    facts = [("length", (a, c), p), ("length", (b, c), q)]
    rng.shuffle(facts)
    formal_facts = [f"length {x} {y} = {v}" for _, (x, y), v in facts]
    given = [f"{x}{y} = {v}" for _, (x, y), v in facts]
    ask = rng.choice((f"What is the {what} of the circle?", f"Find the circle's {what}.",
                      f"How large is the {what} of the circle?"))
    figure = f"the circle about {o}, {a}{b} is a diameter, {c} lies on the circle"
    plan = [_formal_step(rng), _solver_step(rng, f"{what} {o}", formal_facts, f"the {what}")]
    fields = _solved_answer(gold, rng, f"the {what}")
    question = _fact_question(rng, figure, given, ask)
    return _Spec(image, question, plan=plan, meta={"facts": formal_facts, "points": pts,
                                                   "asked": f"{what} {o}"}, **fields)


# --- the family ------------------------------------------------------------------------------

def _build(rng: random.Random, qtype: str, level: int) -> _Spec:
    if qtype in ("length", "area", "perimeter"):
        if level == 1:
            if qtype == "length":
                return _pixel_length(rng, level)
            return _pixel_polygon(rng, level, qtype)
        return _fact_triangle(rng, level, qtype)
    if qtype == "angle":
        if level == 1:
            return _pixel_angle(rng, level)
        if level == 2:
            return _angle_sum(rng, level)
        return _fact_triangle(rng, level, "angle")
    if qtype == "circle":
        return _pixel_circle(rng, level) if level < 3 else _inscribed_circle(rng, level)
    if qtype == "largest":
        return _largest(rng, level)
    raise ValueError(f"unknown question type {qtype!r}; one of {QUESTION_TYPES}")


class GeometryFamily:
    """Geometry questions on labelled diagrams (see the module docstring)."""

    name = "geometry"
    gym_name = "Geometry"
    tools = ("measure_length", "measure_angle", "detect_circles", "diagram_to_formal",
             "geometry_solver", "calculator")

    def generate(self, seed: int, split: str, difficulty: int | None = None,
                 question_type: str | None = None) -> Task:
        """The task for `seed`; `question_type` (one of QUESTION_TYPES) fixes the type
        instead of drawing it from the seed (for tests and balanced sampling)."""
        check_difficulty(difficulty)
        level = difficulty if difficulty is not None else draw_difficulty(seed)
        rng = random.Random(f"geometry/{seed}")
        qtype = pick_question_type(rng, QUESTION_TYPES, question_type)
        spec = _build(rng, qtype, level)
        return Task(
            task_id=f"{self.name}/{split}/{seed}", family=self.name, seed=seed, split=split,
            question=spec.question, images=(spec.image,), answer=spec.answer,
            answer_type=spec.answer_type, tolerance=spec.tolerance, choices=spec.choices,
            reference_plan=tuple(spec.plan), answer_template=spec.answer_template,
            final_think=spec.final_think, difficulty=level,
            meta={"question_type": qtype, **spec.meta})

    def bindings(self, task: Task, results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """From the results so far, by the tool of each plan step: `m{i}` (a measured length
        or angle, step i), `figure` (diagram_to_formal's text), `r` (the radius of the first
        circle found), `solved` / `solved_num` (geometry_solver's exact form / decimal),
        `calc` (the calculator's value); for a choice, `best` (the letter of the largest or
        smallest measurement) and `best_value`."""
        out: dict[str, Any] = {}
        measured: list[float] = []
        for i, (step, res) in enumerate(zip(task.reference_plan, results)):
            if not res.get("ok"):
                continue
            data = res.get("data") or {}
            if step.tool in ("measure_length", "measure_angle"):
                value = data.get("length" if step.tool == "measure_length" else "degrees")
                if isinstance(value, (int, float)):
                    out[f"m{i}"] = format_value(value)
                    measured.append(float(value))
            elif step.tool == "diagram_to_formal":
                out["figure"] = res.get("text", "")
            elif step.tool == "detect_circles" and data.get("circles"):
                out["r"] = format_value(data["circles"][0]["radius"])
            elif step.tool == "geometry_solver" and data.get("status") == "determined":
                if data.get("value") is not None:
                    out["solved_num"] = out["solved"] = format_value(data["value"])
                if data.get("exact") is not None:
                    out["solved"] = data["exact"]
            elif step.tool == "calculator" and data.get("value") is not None:
                out["calc"] = format_value(data["value"])
        if task.choices and len(measured) == len(task.choices):
            pick = max if task.meta.get("pick", "max") == "max" else min
            k = pick(range(len(measured)), key=measured.__getitem__)
            out["best"] = string.ascii_uppercase[k]
            out["best_value"] = format_value(measured[k])
        return out


GEOMETRY = register_family(GeometryFamily())


def expert_pass_rates(family: str, n_per_level: int, split: str = "train",
                      batch_size: int = 8) -> dict[str, Any]:
    """Plays the reference plans of tasks 0..n_per_level-1 of `split` at each level against
    the real tools (in process); pass rates by level, by question type and by both."""
    import collections

    from tools_server.app import ServerConfig
    from tools_server.inprocess import InProcessToolClient
    from vista_jax.env.expert import generate_expert_dataset
    from vista_jax.env.tasks.base import make_tasks

    # a generous per-call deadline: a batch of OCR calls on a busy 2-core box outlasts 10 s
    client = InProcessToolClient(config=ServerConfig(call_timeout_s=600.0))
    groups: dict[str, list[bool]] = collections.defaultdict(list)
    failures: collections.Counter = collections.Counter()
    failed = []
    try:
        for level in (1, 2, 3):
            tasks = make_tasks(family, split, n_per_level, difficulty=level)
            records, stats = generate_expert_dataset(
                family, split, n_per_level, client, filter_correct=False,
                batch_size=batch_size, difficulty=level)
            failures.update(stats["failures"])
            for task, rec in zip(tasks, records):
                assert rec["task_id"] == task.task_id
                qtype = task.meta["question_type"]
                for key in (f"level {level}", qtype, f"{qtype} @ {level}"):
                    groups[key].append(rec["verified"])
                if not rec["verified"]:
                    failed.append((task.task_id, task.question, task.answer, rec["answer"]))
    finally:
        client.close()
    n = 3 * n_per_level
    return {"n": n, "pass_rate": (n - len(failed)) / n, "failures": dict(failures),
            "groups": {k: (sum(v), len(v)) for k, v in sorted(groups.items())},
            "failed": failed}


def print_pass_rates(family: str, n_per_level: int, split: str = "train") -> None:
    result = expert_pass_rates(family, n_per_level, split)
    print(f"{family}: {result['n']} tasks, expert pass rate {result['pass_rate']:.4f}, "
          f"failures {result['failures']}")
    for key, (ok, n) in result["groups"].items():
        print(f"  {key:24s} {ok:4d}/{n:<4d} {ok / n:.4f}")
    for failed in result["failed"]:
        print("  FAILED", *failed, sep=" | ")


if __name__ == "__main__":  # python -m vista_jax.env.tasks.geometry [per level] [split]
    import sys

    print_pass_rates("geometry", int(sys.argv[1]) if len(sys.argv) > 1 else 100,
                     sys.argv[2] if len(sys.argv) > 2 else "train")
