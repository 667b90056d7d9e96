"""Procedural counting and spatial questions about scenes of flat-coloured shapes.

Scenes come from `render_scene` (shapes of `SHAPES` in colours of `COLORS` on white, no
antialiasing), the images the classical `detect_objects` / `count_objects` reader and
`dominant_colors` read exactly; this family is only meaningful on those synthetic scenes.

Question types (sampling weight) and reference plans:
- `count` (0.25) "How many red circles are there?" -> `count_objects(query)` -> the count;
  at level 3 "... in the left half?" -> `count_objects(query, box=<that half>)`;
- `compare` (0.15) "Are there more red circles or blue squares?" (choice: A / B, and from
  level 2 C "the same number") -> two `count_objects` -> the letter;
- `total` (0.15) "How many red circles and blue squares are there in total?" -> two
  `count_objects` -> `calculator("a + b")` -> the sum;
- `relation` (0.15) "Is the blue square left of the green triangle?" -> `detect_objects`
  of both -> "yes" / "no" from their box centres;
- `extreme` (0.15) "Which object is the left-most?" -> `detect_objects("all objects")` ->
  the label ("blue square") of the box with the extreme centre;
- `dominant_color` (0.15) "Which colour covers the most area?" -> `dominant_colors(k=8)` ->
  the first colour's name.

Difficulty: level 1 has 3-6 large shapes (side 28-44) in 4 colours and 3 shapes, and counts
by colour or by shape alone; level 2 has 6-10 shapes (side 20-36) in all colours and
shapes, counted by colour and shape, with look-alike distractors (same colour or same
shape); level 3 has 10-15 shapes (side 16-30) on a 400x300 canvas and counts in a half.

Generator constraints (so that every question has one right answer the tools can find):
objects named by a relation question are the only ones of their colour and shape, and
their boxes are apart along the asked axis; an extreme object's centre leads the next by at
least 12 px; the dominant colour covers at least 1.3x the area of the next, and a scene
asked about colours has at most 8 colours (so `dominant_colors` with k=8 counts them
exactly); level-3 half questions place no shape across the dividing line. Answers are
templated from the tool results (`bindings`), never from the generator's ground truth.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from vista_jax.env.tasks.base import (PlanStep, Task, check_difficulty, draw_difficulty,
                                      register_family)
from vista_jax.env.tasks.render_scene import (COLORS, SHAPES, SceneObject, place_objects,
                                              render_scene, shape_mask)

QUESTION_TYPES = ("count", "compare", "total", "relation", "extreme", "dominant_color")
QUESTION_WEIGHTS = (0.25, 0.15, 0.15, 0.15, 0.15, 0.15)

CANVAS = {1: (320, 240), 2: (320, 240), 3: (400, 300)}
N_OBJECTS = {1: (3, 6), 2: (6, 10), 3: (10, 15)}
SIDES = {1: (28, 44), 2: (20, 36), 3: (16, 30)}
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles",
          "diamond": "diamonds", "star": "stars"}
SAME = "the same number"
RELATIONS = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}
EXTREMES = {  # name -> (axis, sign: -1 smallest centre, 1 largest), question phrasings
    "left": (0, -1, ("Which object is the left-most?", "Which shape is furthest to the left?")),
    "right": (0, 1, ("Which object is the right-most?", "Which shape is furthest to the right?")),
    "top": (1, -1, ("Which object is the top-most?", "Which shape is highest in the picture?")),
    "bottom": (1, 1, ("Which object is the bottom-most?", "Which shape is lowest in the picture?")),
}
ALL_QUERY = "all objects"
EXTREME_GAP = 12  # px the extreme centre leads the next one by
DOMINANCE = 1.3  # area ratio of the dominant colour over the next

QUESTIONS = {
    "count": ("How many {q} are there?", "Count the {q}.", "How many {q} can you see?"),
    "count_region": ("How many {q} are in the {half} half?", "Count the {q} in the {half} half.",
                     "How many {q} does the {half} half contain?"),
    "compare": ("Are there more {a} or {b}?", "Which are more numerous: {a} or {b}?",
                "Which is there more of, {a} or {b}?"),
    "total": ("How many {a} and {b} are there in total?", "What is the total number of {a} "
              "and {b}?", "Count the {a} and the {b} together."),
    "relation": ("Is the {p} {rel} the {q}?", "Is the {p} located {rel} the {q}?",
                 "Does the {p} lie {rel} the {q}?"),
    "dominant_color": ("Which colour covers the most area?", "What colour has the most pixels?",
                       "Which colour dominates the picture by area?"),
}
THINK_COUNT = ("Count the {q}.", "I need the number of {q}.", "How many {q}? Count them.")
THINK_COUNT_REGION = ("Count the {q} in the {half} half only.", "Only the {half} half: count "
                      "the {q}.")
THINK_SECOND = ("Now count the {q}.", "Next, the {q}.", "Then count the {q}.")
THINK_ADD = ("{{n_a}} + {{n_b}}: add them.", "Add {{n_a}} and {{n_b}}.", "Sum the two counts.")
THINK_DETECT = ("Find the {p} and the {q}.", "Locate both shapes.", "Where are the {p} and "
                "the {q}?")
THINK_ALL = ("Find every object.", "Locate all the shapes.", "Detect all objects.")
THINK_COLORS = ("Measure the colours' areas.", "Which colours cover the most?",
                "Get the dominant colours.")
THINK_FINAL = {
    "count": ("There are {{n_a}}.", "The count is {{n_a}}."),
    "compare": ("{a}: {{n_a}}, {b}: {{n_b}}.", "{{n_a}} versus {{n_b}}."),
    "total": ("{{n_a}} + {{n_b}} = {{calc}}.", "Together {{calc}}."),
    "relation": ("Centres: {p} {{p_center}}, {q} {{q_center}}.", "So the answer is {{yes_no}}."),
    "extreme": ("The {side}-most is the {{label}}.", "It is the {{label}}."),
    "dominant_color": ("{{color}} covers {{share}}.", "The largest share is {{color}}."),
}
ANSWER_TEMPLATE = {"count": "{n_a}", "compare": "{letter}", "total": "{calc}",
                   "relation": "{yes_no}", "extreme": "{label}", "dominant_color": "{color}"}


def _phrase(color: str | None, shape: str | None) -> str:
    """"red circles", "circles", "red objects"."""
    return f"{color + ' ' if color else ''}{PLURAL[shape] if shape else 'objects'}"


def _matches(query: tuple[str | None, str | None], color: str, shape: str) -> bool:
    return query[0] in (None, color) and query[1] in (None, shape)


def _center(box: Sequence[int]) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def _area(objects: Sequence[SceneObject]) -> dict[str, int]:
    """Pixels of each colour in a scene (shapes never overlap)."""
    area: dict[str, int] = {}
    for o in objects:
        area[o.color] = area.get(o.color, 0) + int(shape_mask(o.shape, o.box[2] - o.box[0]).sum())
    return area


class _Palette:
    """The colours and shapes a level draws from."""

    def __init__(self, rng: random.Random, level: int):
        self.colors = rng.sample(list(COLORS), 4) if level == 1 else list(COLORS)
        self.shapes = rng.sample(list(SHAPES), 3) if level == 1 else list(SHAPES)

    def query(self, rng: random.Random, level: int) -> tuple[str | None, str | None]:
        """A count query: colour or shape alone at level 1, both from level 2."""
        if level == 1:
            return (rng.choice(self.colors), None) if rng.random() < 0.5 else \
                (None, rng.choice(self.shapes))
        return rng.choice(self.colors), rng.choice(self.shapes)

    def instance(self, rng: random.Random, query: tuple[str | None, str | None]
                 ) -> tuple[str, str]:
        """A (colour, shape) the query matches (random where it names none)."""
        return query[0] or rng.choice(self.colors), query[1] or rng.choice(self.shapes)

    def distractor(self, rng: random.Random, avoid: Sequence[tuple[str | None, str | None]],
                   level: int, near: tuple[str | None, str | None] | None = None
                   ) -> tuple[str, str]:
        """A (colour, shape) matching none of `avoid`; from level 2, often sharing the colour
        or the shape of `near` (a look-alike)."""
        for _ in range(200):
            color, shape = rng.choice(self.colors), rng.choice(self.shapes)
            if near is not None and level >= 2 and rng.random() < 0.5:
                if near[0] and rng.random() < 0.5:
                    color = near[0]
                elif near[1]:
                    shape = near[1]
            if not any(_matches(q, color, shape) for q in avoid):
                return color, shape
        raise ValueError(f"no colour and shape avoids {avoid}")


def _layout(rng: random.Random, pairs: Sequence[tuple[str, str]], level: int,
            size: tuple[int, int], split: str | None = None,
            sides_of: Sequence[str] | None = None) -> list[SceneObject]:
    """Places (colour, shape) pairs at random sizes. With `split` ("left", "right", "top",
    "bottom" halves), `sides_of[i]` says which half object i goes in; no object crosses the
    dividing line (2 px clear of it)."""
    lo, hi = SIDES[level]
    specs = [(shape, color, rng.randint(lo, hi)) for color, shape in pairs]
    if split is None:
        return place_objects(specs, rng, size)
    w, h = size
    horizontal = split in ("left", "right")
    halves = {"left": (0, 0, w // 2 - 2, h), "right": (w // 2 + 2, 0, w, h),
              "top": (0, 0, w, h // 2 - 2), "bottom": (0, h // 2 + 2, w, h)}
    names = ("left", "right") if horizontal else ("top", "bottom")
    objects: list[SceneObject | None] = [None] * len(specs)
    for half in names:
        x0, y0, x1, y1 = halves[half]
        idx = [i for i, s in enumerate(sides_of) if s == half]
        placed = place_objects([specs[i] for i in idx], rng, (x1 - x0, y1 - y0))
        for i, o in zip(idx, placed):
            b = o.box
            objects[i] = SceneObject(o.shape, o.color, (b[0] + x0, b[1] + y0, b[2] + x0, b[3] + y0))
    return objects


class Counting:
    name = "counting"
    gym_name = "Counting"
    tools = ("count_objects", "detect_objects", "dominant_colors", "calculator")

    def generate(self, seed: int, split: str, difficulty: int | None = None) -> Task:
        check_difficulty(difficulty)
        level = draw_difficulty(seed) if difficulty is None else difficulty
        rng = random.Random(f"counting/{seed}/{level}")
        qtype = rng.choices(QUESTION_TYPES, weights=QUESTION_WEIGHTS)[0]
        for _ in range(100):  # rejection sampling of scenes; deterministic by the rng
            built = getattr(self, f"_{qtype}")(rng, level)
            if built is not None:
                break
        else:
            raise RuntimeError(f"counting: no {qtype} scene for seed {seed} (level {level})")
        objects, question, plan, final, answer, facts = built
        size = CANVAS[level]
        image = render_scene(objects, size)
        choices = facts.pop("choices", None)
        answer_type = {"count": "number", "total": "number", "compare": "choice"}.get(qtype, "text")
        return Task(
            task_id=f"{self.name}/{split}/{seed}", family=self.name, seed=seed, split=split,
            question=question, images=(image,), answer=str(answer), answer_type=answer_type,
            choices=choices, reference_plan=tuple(plan),
            answer_template=ANSWER_TEMPLATE[qtype], final_think=final, difficulty=level,
            meta={"question_type": qtype, "level": level, "objects": [o.to_dict() for o in objects],
                  **facts})

    # --- question types: each returns (objects, question, plan, final think, answer, facts)
    # or None to draw again.

    def _n_objects(self, rng: random.Random, level: int) -> int:
        return rng.randint(*N_OBJECTS[level])

    def _count(self, rng, level):
        pal = _Palette(rng, level)
        q = pal.query(rng, level)
        n = self._n_objects(rng, level)
        k = rng.randint(1, min(n - 1, 2 + level))
        pairs = [pal.instance(rng, q) for _ in range(k)]
        pairs += [pal.distractor(rng, [q], level, near=q) for _ in range(n - k)]
        rng.shuffle(pairs)
        phrase = _phrase(*q)
        args: dict[str, Any] = {"image": "img_0", "query": phrase}
        facts: dict[str, Any] = {"query": phrase}
        if level == 3:
            half = rng.choice(("left", "right", "top", "bottom"))
            other = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}[half]
            sides_of = [rng.choice((half, other)) for _ in pairs]
            inside = sum(1 for p, s in zip(pairs, sides_of) if s == half and _matches(q, *p))
            if inside == 0:
                return None
            objects = _layout(rng, pairs, level, CANVAS[level], split=half, sides_of=sides_of)
            w, h = CANVAS[level]
            box = {"left": [0, 0, w // 2, h], "right": [w // 2, 0, w, h],
                   "top": [0, 0, w, h // 2], "bottom": [0, h // 2, w, h]}[half]
            args["box"] = box
            question = rng.choice(QUESTIONS["count_region"]).format(q=phrase, half=half)
            think = rng.choice(THINK_COUNT_REGION).format(q=phrase, half=half)
            answer = inside
            facts.update(half=half, box=box)
        else:
            objects = _layout(rng, pairs, level, CANVAS[level])
            question = rng.choice(QUESTIONS["count"]).format(q=phrase)
            think = rng.choice(THINK_COUNT).format(q=phrase)
            answer = k
        plan = [PlanStep("count_objects", args, think, key_args=("image", "query", "box"))]
        facts["roles"] = ["count:a"]
        return objects, question, plan, rng.choice(THINK_FINAL["count"]), answer, facts

    def _two_queries(self, rng, level, pal):
        """Two disjoint count queries (no object matches both)."""
        for _ in range(50):
            a, b = pal.query(rng, level), pal.query(rng, level)
            if level == 1 and (a[0] is None) != (b[0] is None):
                continue  # "red objects" and "circles" overlap: keep both by colour or by shape
            overlap = ((a[0] is None or b[0] is None or a[0] == b[0])
                       and (a[1] is None or b[1] is None or a[1] == b[1]))
            if not overlap:
                return a, b
        return None

    def _counted_scene(self, rng, level, counts_of):
        pal = _Palette(rng, level)
        qs = self._two_queries(rng, level, pal)
        if qs is None:
            return None
        a, b = qs
        na, nb = counts_of(rng)
        pairs = [pal.instance(rng, a) for _ in range(na)] + [pal.instance(rng, b) for _ in range(nb)]
        n = max(self._n_objects(rng, level), na + nb + 1)
        pairs += [pal.distractor(rng, [a, b], level, near=rng.choice((a, b)))
                  for _ in range(n - na - nb)]
        rng.shuffle(pairs)
        objects = _layout(rng, pairs, level, CANVAS[level])
        return objects, _phrase(*a), _phrase(*b), na, nb

    def _count_steps(self, rng, pa, pb):
        return [PlanStep("count_objects", {"image": "img_0", "query": pa},
                         rng.choice(THINK_COUNT).format(q=pa), key_args=("image", "query", "box")),
                PlanStep("count_objects", {"image": "img_0", "query": pb},
                         rng.choice(THINK_SECOND).format(q=pb), key_args=("image", "query", "box"))]

    def _compare(self, rng, level):
        hi = 2 + level

        def counts(r):
            if level >= 2 and r.random() < 0.2:
                n = r.randint(1, hi)
                return n, n
            return tuple(r.sample(range(1, hi + 1), 2))

        built = self._counted_scene(rng, level, counts)
        if built is None:
            return None
        objects, pa, pb, na, nb = built
        choices = (pa, pb, SAME) if level >= 2 else (pa, pb)
        answer = "A" if na > nb else "B" if nb > na else "C"
        question = rng.choice(QUESTIONS["compare"]).format(a=pa, b=pb)
        question += " " + " ".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(choices))
        plan = self._count_steps(rng, pa, pb)
        final = rng.choice(THINK_FINAL["compare"]).format(a=pa, b=pb)
        return objects, question, plan, final, answer, {
            "queries": [pa, pb], "counts": [na, nb], "choices": choices,
            "roles": ["count:a", "count:b"]}

    def _total(self, rng, level):
        hi = 2 + level
        built = self._counted_scene(rng, level, lambda r: (r.randint(1, hi), r.randint(1, hi)))
        if built is None:
            return None
        objects, pa, pb, na, nb = built
        plan = self._count_steps(rng, pa, pb)
        plan.append(PlanStep("calculator", {"expression": "{n_a} + {n_b}"},
                             rng.choice(THINK_ADD)))
        question = rng.choice(QUESTIONS["total"]).format(a=pa, b=pb)
        return objects, question, plan, rng.choice(THINK_FINAL["total"]), na + nb, {
            "queries": [pa, pb], "counts": [na, nb], "roles": ["count:a", "count:b", "calc"]}

    def _relation(self, rng, level):
        pal = _Palette(rng, level)
        p = (rng.choice(pal.colors), rng.choice(pal.shapes))
        q = (rng.choice(pal.colors), rng.choice(pal.shapes))
        if p == q:
            return None
        n = self._n_objects(rng, level)
        pairs = [p, q] + [pal.distractor(rng, [p, q], level, near=rng.choice((p, q)))
                          for _ in range(n - 2)]
        objects = _layout(rng, pairs, level, CANVAS[level])
        rel = rng.choice(sorted(RELATIONS))
        axis, sign = RELATIONS[rel]
        bp, bq = objects[0].box, objects[1].box
        if not (bp[axis + 2] <= bq[axis] or bq[axis + 2] <= bp[axis]):
            return None  # overlapping along the axis: "left of" would be unclear
        holds = (_center(bp)[axis] - _center(bq)[axis]) * sign > 0
        lp, lq = f"{p[0]} {p[1]}", f"{q[0]} {q[1]}"
        order = list(range(len(objects)))
        rng.shuffle(order)
        objects = [objects[i] for i in order]
        question = rng.choice(QUESTIONS["relation"]).format(p=lp, q=lq, rel=rel)
        query = f"{lp}, {lq}"
        alt = PlanStep("detect_objects", {"image": "img_0", "query": ALL_QUERY}, "",
                       key_args=("image", "query", "box"))
        plan = [PlanStep("detect_objects", {"image": "img_0", "query": query},
                         rng.choice(THINK_DETECT).format(p=lp, q=lq),
                         key_args=("image", "query", "box"), alternatives=(alt,))]
        final = rng.choice(THINK_FINAL["relation"]).format(p=lp, q=lq)
        return objects, question, plan, final, "yes" if holds else "no", {
            "relation": rel, "pair": [lp, lq], "roles": ["detect"]}

    def _extreme(self, rng, level):
        pal = _Palette(rng, level)
        n = self._n_objects(rng, level)
        pairs = [(rng.choice(pal.colors), rng.choice(pal.shapes)) for _ in range(n)]
        objects = _layout(rng, pairs, level, CANVAS[level])
        side = rng.choice(sorted(EXTREMES))
        axis, sign, phrasings = EXTREMES[side]
        ranked = sorted(objects, key=lambda o: -sign * _center(o.box)[axis])
        if len(ranked) > 1 and abs(_center(ranked[0].box)[axis]
                                   - _center(ranked[1].box)[axis]) < EXTREME_GAP:
            return None
        best = ranked[0]
        same = tuple(PlanStep("detect_objects", {"image": "img_0", "query": q}, "",
                              key_args=("image", "query", "box"))
                     for q in ("objects", "shapes", "all shapes"))
        plan = [PlanStep("detect_objects", {"image": "img_0", "query": ALL_QUERY},
                         rng.choice(THINK_ALL), key_args=("image", "query", "box"),
                         alternatives=same)]
        final = rng.choice(THINK_FINAL["extreme"]).format(side=side)
        return objects, rng.choice(phrasings), plan, final, f"{best.color} {best.shape}", {
            "side": side, "roles": ["detect"]}

    def _dominant_color(self, rng, level):
        pal = _Palette(rng, level)
        n = self._n_objects(rng, level)
        colors = rng.sample(pal.colors, min(len(pal.colors), 8))
        lead = colors[0]
        # the leading colour gets extra (and larger) objects so that it usually dominates
        pairs = [(lead, rng.choice(pal.shapes)) for _ in range(max(2, n // 3))]
        pairs += [(rng.choice(colors[1:]), rng.choice(pal.shapes)) for _ in range(n - len(pairs))]
        objects = _layout(rng, pairs, level, CANVAS[level])
        area = sorted(_area(objects).items(), key=lambda kv: -kv[1])
        if len(area) > 1 and area[0][1] < DOMINANCE * area[1][1]:
            return None
        plan = [PlanStep("dominant_colors", {"image": "img_0", "k": 8}, rng.choice(THINK_COLORS),
                         key_args=("image", "box"))]
        question = rng.choice(QUESTIONS["dominant_color"])
        return objects, question, plan, rng.choice(THINK_FINAL["dominant_color"]), area[0][0], {
            "areas": dict(area), "roles": ["colors"]}

    # --- bindings ------------------------------------------------------------------------

    def bindings(self, task: Task, results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """From the results so far: `n_a`, `n_b` (counts), `letter` (compare), `calc`;
        `p_center`, `q_center`, `yes_no` (relation, from the two boxes detect_objects gave);
        `label` (extreme); `color`, `share` (dominant_color). Values the results do not
        give (a named object not found, a tie without a "same" choice) are left out."""
        out: dict[str, Any] = {}
        for role, result in zip(task.meta["roles"], results):
            if not result.get("ok"):
                continue
            data = result.get("data") or {}
            if role in ("count:a", "count:b") and data.get("count") is not None:
                out["n_" + role[-1]] = str(int(data["count"]))
            elif role == "calc" and data.get("value") is not None:
                value = float(data["value"])
                out["calc"] = str(int(value)) if value.is_integer() else f"{value:g}"
            elif role == "detect":
                out.update(_detect_bindings(task, data.get("objects") or []))
            elif role == "colors" and data.get("colors"):
                top = data["colors"][0]
                out["color"], out["share"] = top["name"], f"{100 * float(top['share']):.0f}%"
        if task.meta["question_type"] == "compare" and "n_a" in out and "n_b" in out:
            na, nb = int(out["n_a"]), int(out["n_b"])
            if na != nb:
                out["letter"] = "A" if na > nb else "B"
            elif task.choices and len(task.choices) > 2:
                out["letter"] = "C"
        return out


def _detect_bindings(task: Task, objects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    labelled = [(str(o.get("label", "")), _center(o["box"])) for o in objects if "box" in o]
    if task.meta["question_type"] == "extreme":
        if not labelled:
            return {}
        axis, sign, _ = EXTREMES[task.meta["side"]]
        label, _ = max(labelled, key=lambda lc: sign * lc[1][axis])
        return {"label": label}
    lp, lq = task.meta["pair"]
    found = {}
    for label, center in labelled:
        if label in (lp, lq) and label not in found:
            found[label] = center
    if len(found) < 2:
        return {}
    axis, sign = RELATIONS[task.meta["relation"]]
    cp, cq = found[lp], found[lq]
    return {"p_center": f"({cp[0]:g}, {cp[1]:g})", "q_center": f"({cq[0]:g}, {cq[1]:g})",
            "yes_no": "yes" if (cp[axis] - cq[axis]) * sign > 0 else "no"}


COUNTING = register_family(Counting())
