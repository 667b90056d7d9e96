"""Procedural multi-step problems: each needs tools of two tool families (perception, chart,
math), read then compute; some levels add a third (meta["tool_families"] lists them).

Question kinds (equally likely), with the plan at each level (2–4 tool calls):

- `chart_statistics` (chart + math): a statistic of the values a chart reader returns.
  1. a bar chart of 3–5 bars, "What is the average / median / range / total of the
     values?": `chart_to_table` → `statistics(values)` → the statistic;
  2. a line chart of 5–7 points, the same statistics and the population standard
     deviation: `line_points` → `statistics` → the statistic;
  3. a line chart with two named series over 4–5 labels, "How much larger is the average
     of North than that of South?": `line_points` → `statistics(North)` →
     `statistics(South)` → `calculator("m1 - m2")`.
- `chart_equation` (chart + math): a bar's or point's value is a linear expression in
  unknowns; solve for them.
  1. "The Beta bar shows 3x + 5. What is x?": `bar_values(labels=[Beta])` →
     `solve_equation("3x + 5 = 41")` → x;
  2. two bars, "Alpha is 2x + y and Beta is x - y. What is y?": `bar_values([Alpha, Beta])`
     → `solve_equation([...])` → the unknown asked;
  3. two points of a line chart, "... What is x times y?" (or x + y): `line_points` →
     `solve_equation` → `calculator("x * y")`.
  Unknowns are integers 1–12 (the generator picks them and derives the values drawn).
- `scene_arithmetic` (perception + math): count shapes in a scene of flat shapes
  (`render_scene`), then score them.
  1. "Each star is worth 3 points. How many points are the stars worth?":
     `count_objects("stars")` → `calculator("4 * 3")`;
  2. two colours with two prices: `count_objects("red shapes")` →
     `count_objects("blue shapes")` → `calculator("2 * 4 + 3 * 7")`;
  3. three shapes, two worth points and one costing points: three `count_objects` →
     `calculator("a * 5 + b * 3 - c * 2")`.
  `detect_objects` with the same query is each count's alternative.
- `crop_chart` (perception + chart, and math at levels 2–3): two charts side by side on
  one 640x240 image; the chart readers misread the pair (the first chart's scale is applied
  to both), so the plan crops one 320x240 chart first.
  1. two bar charts over the same labels, "In the right chart, what is the value of
     Beta?": `crop(img_0, [320, 0, 640, 240])` → `bar_values(img_1, labels=[Beta])`;
  2. the same, "how much greater is Beta than Alpha" in one chart: `crop` →
     `bar_values(img_1, [Beta, Alpha])` → `calculator`;
  3. a bar chart and a line chart over the same months, "What is the average of the line
     chart?": `crop(<the line chart's half>)` → `line_points(img_1)` → `statistics`.

Answers are templates over the tools' results (`chart_qa.result_bindings`), never the
generator's ground truth: exact numbers (tolerance 0) except means and standard deviations
(1e-4 relative: the tools print six significant digits).

Synthetic only: charts come from `tasks.render` (in the ranges `chart_qa` documents, which
the classical chart readers read back exactly), scenes from `tasks.render_scene` (shapes of
side 20–36 px, at least 4 px apart, which the classical scene reader counts exactly: no
count was off in the 900 expert runs of train seeds 0–299 at each level). Real photographs
or charts would need the model-backed tool backends.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from PIL import Image

from vista_jax.env.tasks.base import (PlanStep, Task, check_difficulty, draw_difficulty,
                                      register_family)
from vista_jax.env.tasks.chart_qa import (LABELS, MEAN_TOLERANCE, TITLES, X_AXES, Chart,
                                          NumberList, format_number, line_chart,
                                          result_bindings)
from vista_jax.env.tasks.render import render_bar_chart, render_line_chart
from vista_jax.env.tasks.render_scene import COLORS, SHAPES, place_objects, render_scene

QUESTION_TYPES = ("chart_statistics", "chart_equation", "scene_arithmetic", "crop_chart")
# The tool server's family of each tool the plans call (a test keeps them in step).
TOOL_FAMILY = {"bar_values": "chart", "chart_to_table": "chart", "line_points": "chart",
               "calculator": "math", "statistics": "math", "solve_equation": "math",
               "count_objects": "perception", "detect_objects": "perception",
               "crop": "perception"}
PANEL = (320, 240)  # one chart of a crop_chart image; the pair is 640x240
SCENE_SIZE = (320, 240)
SCENE_SIDES = (20, 36)  # shape cell sides, pixels

# statistic -> (phrasings of it, key in the statistics tool's data)
STATS = {
    "mean": (("average", "mean"), "mean"),
    "median": (("median",), "median"),
    "range": (("range (largest minus smallest)",), "range"),
    "sum": (("total", "sum"), "sum"),
    "std": (("population standard deviation",), "std"),
}
TABLE_ALT = (PlanStep("chart_to_table", {"image": "img_0"}, ""),)


def _pick(rng: random.Random, options: Sequence[str], **fmt: Any) -> str:
    return rng.choice(options).format(**fmt)


def _statistic(values: Sequence[int], stat: str) -> Fraction | float:
    vals = sorted(Fraction(v) for v in values)
    n = len(vals)
    if stat == "mean":
        return sum(vals) / n
    if stat == "median":
        return vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2
    if stat == "range":
        return vals[-1] - vals[0]
    if stat == "sum":
        return sum(vals)
    mean = sum(vals) / n
    return float(sum((v - mean) ** 2 for v in vals) / n) ** 0.5


def _bar_data(rng: random.Random, n: int) -> tuple[list[str], list[int], str | None]:
    labels = rng.sample(LABELS, n)
    values = rng.sample(range(1, 100), n)
    title = rng.choice(TITLES) if rng.random() < 0.5 else None
    return labels, values, title


def _linear(coeffs: Sequence[int], names: str = "xy") -> str:
    """[2, -1] -> "2x - y"; [3] -> "3x"."""
    out = ""
    for c, v in zip(coeffs, names):
        mag = "" if abs(c) == 1 else str(abs(c))
        if not out:
            out = f"{'-' if c < 0 else ''}{mag}{v}"
        else:
            out += f" {'-' if c < 0 else '+'} {mag}{v}"
    return out


class MultiStep:
    name = "multi_step"
    gym_name = "MultiStep"
    tools = ("bar_values", "calculator", "chart_to_table", "count_objects", "crop",
             "detect_objects", "line_points", "solve_equation", "statistics")

    def generate(self, seed: int, split: str, difficulty: int | None = None) -> Task:
        check_difficulty(difficulty)
        level = draw_difficulty(seed) if difficulty is None else difficulty
        rng = random.Random(f"{self.name}/{seed}/{level}")
        qtype = rng.choice(QUESTION_TYPES)
        build = {"chart_statistics": self._chart_statistics,
                 "chart_equation": self._chart_equation,
                 "scene_arithmetic": self._scene_arithmetic,
                 "crop_chart": self._crop_chart}[qtype]
        spec = build(rng, level, seed)
        answer, plan = spec.pop("answer"), spec.pop("plan")
        return Task(
            task_id=f"{self.name}/{split}/{seed}", family=self.name, seed=seed, split=split,
            question=spec.pop("question"), images=(spec.pop("image"),),
            answer=answer if isinstance(answer, str) else format_number(answer),
            answer_type="number", tolerance=spec.pop("tolerance", 0.0),
            reference_plan=tuple(plan), answer_template=spec.pop("template"),
            final_think=spec.pop("final"), difficulty=level,
            meta={"question_type": qtype, **spec,
                  "tool_families": sorted({TOOL_FAMILY[p.tool] for p in plan})})

    def bindings(self, task: Task, results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """`chart_qa.result_bindings`: chart tables (`v`, `t`, `vals`), statistics (`stat`,
        `stats`), solutions (`sol`), counts (`n`), calculator values (`calc`)."""
        return result_bindings(results)

    # --- chart + math: statistics --------------------------------------------------------

    def _chart_statistics(self, rng: random.Random, level: int, seed: int) -> dict[str, Any]:
        if level == 3:
            return self._mean_gap(rng, seed)
        stat = rng.choice(("mean", "median", "range", "sum") + (("std",) if level == 2 else ()))
        words, key = STATS[stat]
        word = rng.choice(words)
        if level == 1:
            labels, values, title = _bar_data(rng, rng.randint(3, 5))
            image = render_bar_chart(labels, values, title=title, seed=seed)
            what = "bars"
            read = PlanStep("chart_to_table", {"image": "img_0"},
                            _pick(rng, ("Read all the bars.", "I need every value.",
                                        "Read the chart.")))
        else:
            chart = line_chart(rng, 1, (5, 7))
            labels, values = list(chart.labels), list(chart.series["value"])
            image = chart.render(seed)
            what = "points"
            read = PlanStep("line_points", {"image": "img_0"},
                            _pick(rng, ("Read the line's points.", "I need every point.",
                                        "Read the line.")), alternatives=TABLE_ALT)
        q = _pick(rng, ("What is the {w} of the values in the chart?",
                        "Compute the {w} of all the {what}.",
                        "What is the {w} of the chart's {what}?"), w=word, what=what)
        stats = PlanStep("statistics", {"values": NumberList(["{vals[value]}"])},
                         _pick(rng, ("Now the {w}.", "Statistics of the values.",
                                     "Compute the {w}."), w=word.split(" (")[0]))
        final = _pick(rng, ("The {w} is {{stat[{k}]}}.", "It is {{stat[{k}]}}."),
                      w=word.split(" (")[0], k=key)
        answer = _statistic(values, stat)
        exact = stat in ("range", "sum", "median")  # a median of integers ends in .0 or .5
        return {"question": q, "image": image, "answer": float(answer), "plan": [read, stats],
                "template": f"{{stat[{key}]}}", "final": final,
                "tolerance": 0.0 if exact else MEAN_TOLERANCE, "statistic": stat,
                "labels": labels, "values": values}

    def _mean_gap(self, rng: random.Random, seed: int) -> dict[str, Any]:
        """Two series over 4-5 labels (so means are exact decimals), different means."""
        def distinct_means(c: Chart) -> bool:
            a, b = c.series.values()
            return sum(a) != sum(b)
        chart = line_chart(rng, 2, (4, 5), distinct_means)
        s1, s2 = chart.series
        hi, lo = (s1, s2) if sum(chart.series[s1]) > sum(chart.series[s2]) else (s2, s1)
        q = _pick(rng, ("How much larger is the average of {a} than that of {b}?",
                        "By how much does {a}'s mean exceed {b}'s mean?",
                        "What is {a}'s average minus {b}'s average?"), a=hi, b=lo)
        plan = [PlanStep("line_points", {"image": "img_0"},
                         _pick(rng, ("Read both series.", "I need {a} and {b}.",
                                     "Read the lines."), a=hi, b=lo), alternatives=TABLE_ALT),
                PlanStep("statistics", {"values": NumberList([f"{{vals[{hi}]}}"])},
                         _pick(rng, ("Mean of {a}.", "Average {a} first."), a=hi)),
                PlanStep("statistics", {"values": NumberList([f"{{vals[{lo}]}}"])},
                         _pick(rng, ("Mean of {b}.", "Now average {b}."), b=lo)),
                PlanStep("calculator", {"expression": "{stats[0][mean]} - {stats[1][mean]}"},
                         _pick(rng, ("Subtract the means.",
                                     "Compute {{stats[0][mean]}} - {{stats[1][mean]}}.")))]
        final = _pick(rng, ("{a} is higher by {{calc}}.", "The gap is {{calc}}."), a=hi)
        n = len(chart.labels)
        answer = Fraction(sum(chart.series[hi]) - sum(chart.series[lo]), n)
        return {"question": q, "image": chart.render(seed), "answer": float(answer),
                "plan": plan, "template": "{calc}", "final": final, "tolerance": MEAN_TOLERANCE,
                "statistic": "mean_gap", "labels": list(chart.labels),
                "series": {k: list(v) for k, v in chart.series.items()}}

    # --- chart + math: equations ---------------------------------------------------------

    def _chart_equation(self, rng: random.Random, level: int, seed: int) -> dict[str, Any]:
        if level == 1:
            while True:
                x, p, c = rng.randint(2, 12), rng.randint(2, 6), rng.randint(1, 15)
                if p * x + c <= 99:
                    break
            labels, values, title = _bar_data(rng, rng.randint(3, 5))
            a = rng.choice(labels)
            values[labels.index(a)] = p * x + c
            expr = f"{_linear([p])} + {c}"
            q = _pick(rng, ("The {a} bar shows {e}. What is x?",
                            "If the value of {a} equals {e}, what is x?",
                            "{a} is {e} in the chart. Solve for x."), a=a, e=expr)
            plan = [PlanStep("bar_values", {"image": "img_0", "labels": [a]},
                             _pick(rng, ("Read {a}.", "I need the value of {a}."), a=a),
                             alternatives=TABLE_ALT),
                    PlanStep("solve_equation", {"equations": f"{expr} = {{v[{a}]}}"},
                             _pick(rng, ("Solve {e} = {{v[{a}]}}.", "Set up the equation."),
                                   e=expr, a=a))]
            final = _pick(rng, ("x = {{sol[x]}}.", "So x is {{sol[x]}}."))
            return {"question": q, "image": render_bar_chart(labels, values, title=title,
                                                             seed=seed),
                    "answer": x, "plan": plan, "template": "{sol[x]}", "final": final,
                    "labels": labels, "values": values, "unknowns": {"x": x}}

        # two values, two unknowns: rows of integer coefficients with a non-zero determinant
        while True:
            x, y = rng.randint(1, 12), rng.randint(1, 12)
            rows = [(rng.randint(1, 3), rng.choice((-3, -2, -1, 1, 2, 3))) for _ in range(2)]
            (p1, q1), (p2, q2) = rows
            vals = [p * x + q * y for p, q in rows]
            lo, hi = (1, 99) if level == 2 else (5, 95)
            if p1 * q2 - p2 * q1 != 0 and all(lo <= v <= hi for v in vals) and vals[0] != vals[1]:
                break
        exprs = [_linear(r) for r in rows]
        if level == 2:
            labels, values, title = _bar_data(rng, rng.randint(3, 5))
            a, b = rng.sample(labels, 2)
            values[labels.index(a)], values[labels.index(b)] = vals
            image = render_bar_chart(labels, values, title=title, seed=seed)
            ask = rng.choice("xy")
            q = _pick(rng, ("{a} is {e1} and {b} is {e2}. What is {u}?",
                            "The {a} bar shows {e1} and the {b} bar {e2}. Find {u}.",
                            "If {a} = {e1} and {b} = {e2}, what is {u}?"),
                      a=a, b=b, e1=exprs[0], e2=exprs[1], u=ask)
            plan = [PlanStep("bar_values", {"image": "img_0", "labels": [a, b]},
                             _pick(rng, ("Read {a} and {b}.", "I need both bars."), a=a, b=b),
                             alternatives=TABLE_ALT),
                    PlanStep("solve_equation", {"equations": [f"{exprs[0]} = {{v[{a}]}}",
                                                              f"{exprs[1]} = {{v[{b}]}}"]},
                             _pick(rng, ("Solve the system.", "Two equations, two unknowns.")))]
            final = _pick(rng, ("{u} = {{sol[{u}]}}.", "So {u} is {{sol[{u}]}}."), u=ask)
            return {"question": q, "image": image, "answer": x if ask == "x" else y,
                    "plan": plan, "template": f"{{sol[{ask}]}}", "final": final,
                    "labels": labels, "values": values, "unknowns": {"x": x, "y": y}}

        base = line_chart(rng, 1, (5, 7))
        i, j = sorted(rng.sample(range(len(base.labels)), 2))
        points = list(base.series["value"])
        points[i], points[j] = vals
        chart = Chart("line", base.labels, {"value": tuple(points)}, base.title, base.unit)
        a, b = chart.labels[i], chart.labels[j]
        op, word = rng.choice((("*", "x times y"), ("+", "x plus y")))
        q = _pick(rng, ("At {a} the line is {e1}, at {b} it is {e2}. What is {w}?",
                        "The point at {a} equals {e1} and the one at {b} equals {e2}. Find {w}.",
                        "If {a} = {e1} and {b} = {e2} on the line, what is {w}?"),
                  a=a, b=b, e1=exprs[0], e2=exprs[1], w=word)
        plan = [PlanStep("line_points", {"image": "img_0"},
                         _pick(rng, ("Read {a} and {b}.", "I need the points."), a=a, b=b),
                         alternatives=TABLE_ALT),
                PlanStep("solve_equation",
                         {"equations": [f"{exprs[0]} = {{v[{a}]}}", f"{exprs[1]} = {{v[{b}]}}"]},
                         _pick(rng, ("Solve for x and y.", "Two equations, two unknowns."))),
                PlanStep("calculator", {"expression": f"{{sol[x]}} {op} {{sol[y]}}"},
                         _pick(rng, ("x = {{sol[x]}}, y = {{sol[y]}}. Combine.",
                                     "Now {w}."), w=word))]
        final = _pick(rng, ("{w} = {{calc}}.", "The result is {{calc}}."), w=word)
        return {"question": q, "image": chart.render(seed), "answer": x * y if op == "*" else x + y,
                "plan": plan, "template": "{calc}", "final": final,
                "labels": list(chart.labels), "values": points, "unknowns": {"x": x, "y": y}}

    # --- perception + math: counting -----------------------------------------------------

    def _scene_arithmetic(self, rng: random.Random, level: int, seed: int) -> dict[str, Any]:
        colors = list(COLORS)
        if level == 1:  # one shape, counted and priced
            shape = rng.choice(SHAPES)
            k = rng.randint(1, 5)
            names, words = [f"{shape}s"], [shape]
            targets = [(shape, rng.choice(colors)) for _ in range(k)]
            others = [s for s in SHAPES if s != shape]
            distractors = [(rng.choice(others), rng.choice(colors))
                           for _ in range(rng.randint(2, 5))]
            counts = [k]
        elif level == 2:  # two colours of any shape
            c1, c2 = rng.sample(colors, 2)
            counts = [rng.randint(1, 4), rng.randint(1, 4)]
            names, words = [f"{c1} shapes", f"{c2} shapes"], [c1, c2]
            targets = [(rng.choice(SHAPES), c) for c, k in zip((c1, c2), counts)
                       for _ in range(k)]
            rest = [c for c in colors if c not in (c1, c2)]
            distractors = [(rng.choice(SHAPES), rng.choice(rest))
                           for _ in range(rng.randint(1, 3))]
        else:  # three shapes, the third costing points; a fourth shape as distractor
            *words, other = rng.sample(SHAPES, 4)
            counts = [rng.randint(1, 4) for _ in words]
            names = [f"{w}s" for w in words]
            targets = [(w, rng.choice(colors)) for w, k in zip(words, counts) for _ in range(k)]
            distractors = [(other, rng.choice(colors)) for _ in range(rng.randint(0, 2))]
        items = targets + distractors
        rng.shuffle(items)
        specs = [(shape, color, rng.randint(*SCENE_SIDES)) for shape, color in items]
        objects = place_objects(specs, rng, SCENE_SIZE)
        image = render_scene(objects, SCENE_SIZE)

        prices = [rng.randint(2, 9) for _ in names]
        count_steps = [PlanStep(
            "count_objects", {"image": "img_0", "query": query},
            _pick(rng, ("Count the {q}.", "How many {q}?", "I need the number of {q}."), q=query),
            alternatives=(PlanStep("detect_objects", {"image": "img_0", "query": query}, ""),))
            for query in names]
        if level == 1:
            q = _pick(rng, ("Each {one} is worth {p} points. How many points are the {many} "
                            "worth?",
                            "A single {one} scores {p}. What do all the {many} score together?",
                            "If every {one} costs {p} coins, what do the {many} cost in total?"),
                      one=words[0], many=names[0], p=prices[0])
            expr = f"{{n[0]}} * {prices[0]}"
            answer = counts[0] * prices[0]
        elif level == 2:
            q = _pick(rng, ("Each {c1} shape scores {p1} and each {c2} shape {p2}. What is the "
                            "total score?",
                            "{C1} shapes are worth {p1} points each and {c2} shapes {p2} each. "
                            "How many points in all?",
                            "Score {p1} per {c1} shape and {p2} per {c2} shape. What is the "
                            "total?"),
                      c1=words[0], c2=words[1], C1=words[0].capitalize(), p1=prices[0],
                      p2=prices[1])
            expr = f"{{n[0]}} * {prices[0]} + {{n[1]}} * {prices[1]}"
            answer = counts[0] * prices[0] + counts[1] * prices[1]
        else:
            q = _pick(rng, ("{G1} score {p1} each and {g2} {p2} each, but each {s3} costs {p3}. "
                            "What is the final score?",
                            "Add {p1} for every {s1} and {p2} for every {s2}, then take away "
                            "{p3} for every {s3}. What is the result?",
                            "{G1} are worth {p1}, {g2} {p2}, and {g3} count {p3} against. "
                            "What is the net score?"),
                      G1=names[0].capitalize(), g2=names[1], g3=names[2], s1=words[0],
                      s2=words[1], s3=words[2], p1=prices[0], p2=prices[1], p3=prices[2])
            expr = f"{{n[0]}} * {prices[0]} + {{n[1]}} * {prices[1]} - {{n[2]}} * {prices[2]}"
            answer = counts[0] * prices[0] + counts[1] * prices[1] - counts[2] * prices[2]
        calc = PlanStep("calculator", {"expression": expr},
                        _pick(rng, ("Now the score.", "Multiply and add.", "Compute the total.")))
        final = _pick(rng, ("The score is {{calc}}.", "That makes {{calc}}."))
        return {"question": q, "image": image, "answer": answer, "plan": [*count_steps, calc],
                "template": "{calc}", "final": final, "queries": names, "counts": counts,
                "prices": prices, "objects": [o.to_dict() for o in objects]}

    # --- perception + chart: crop one chart of two ---------------------------------------

    def _crop_chart(self, rng: random.Random, level: int, seed: int) -> dict[str, Any]:
        w, h = PANEL
        side = rng.choice(("left", "right"))
        box = [0, 0, w, h] if side == "left" else [w, 0, 2 * w, h]
        crop_think = _pick(rng, ("Crop the {s} chart.", "Take the {s} half.",
                                 "Cut out the {s} chart."), s=side)
        if level < 3:
            n = rng.randint(3, 5)
            labels = rng.sample(LABELS, n)
            panels = {s: rng.sample(range(1, 100), n) for s in ("left", "right")}
            values = panels[side]
            left = render_bar_chart(labels, panels["left"], seed=seed)
            right = render_bar_chart(labels, panels["right"], seed=seed + 1)
            crop = PlanStep("crop", {"image": "img_0", "box": box}, crop_think)
            alt = (PlanStep("chart_to_table", {"image": "img_1"}, ""),)
            if level == 1:
                a = rng.choice(labels)
                q = _pick(rng, ("Two bar charts are shown. In the {s} chart, what is the value "
                                "of {a}?",
                                "What value does {a} have in the {s} chart?",
                                "In the {s} chart, how large is {a}?"), s=side, a=a)
                plan = [crop, PlanStep("bar_values", {"image": "img_1", "labels": [a]},
                                       _pick(rng, ("Read {a}.", "Now {a}'s bar."), a=a),
                                       alternatives=alt)]
                template, answer = f"{{v[{a}]}}", values[labels.index(a)]
                final = _pick(rng, ("{a} is {{v[{a}]}} there.", "It shows {{v[{a}]}}."), a=a)
            else:
                a, b = rng.sample(labels, 2)
                if values[labels.index(a)] < values[labels.index(b)]:
                    a, b = b, a
                q = _pick(rng, ("In the {s} chart, how much greater is {a} than {b}?",
                                "By how much does {a} exceed {b} in the {s} chart?",
                                "Two bar charts: in the {s} one, what is {a} minus {b}?"),
                          s=side, a=a, b=b)
                plan = [crop,
                        PlanStep("bar_values", {"image": "img_1", "labels": [a, b]},
                                 _pick(rng, ("Read {a} and {b}.", "Both bars."), a=a, b=b),
                                 alternatives=alt),
                        PlanStep("calculator", {"expression": f"{{v[{a}]}} - {{v[{b}]}}"},
                                 _pick(rng, ("Subtract.", "Compute {{v[{a}]}} - {{v[{b}]}}."),
                                       a=a, b=b))]
                template = "{calc}"
                answer = values[labels.index(a)] - values[labels.index(b)]
                final = _pick(rng, ("The difference is {{calc}}.", "{a} - {b} = {{calc}}."),
                              a=a, b=b)
            tolerance = 0.0
            meta = {"side": side, "labels": labels, "panels": panels}
        else:
            words, unit = X_AXES[0]
            n = rng.randint(4, 6)
            start = rng.randint(0, len(words) - n)
            labels = list(words[start:start + n])
            line_vals = [rng.randint(5, 95) for _ in labels]
            bar_vals = [rng.randint(5, 95) for _ in labels]
            line_im = render_line_chart(labels, {"value": line_vals}, seed=seed)
            bar_im = render_bar_chart(labels, bar_vals, seed=seed + 1)
            left, right = (line_im, bar_im) if side == "left" else (bar_im, line_im)
            q = _pick(rng, ("One chart is a line chart. What is the average of its values?",
                            "What is the mean of the line chart's points?",
                            "Find the average value in the line chart."))
            plan = [PlanStep("crop", {"image": "img_0", "box": box},
                             _pick(rng, ("The line chart is on the {s}. Crop it.",
                                         "Crop the {s} chart: it is the line."), s=side)),
                    PlanStep("line_points", {"image": "img_1"},
                             _pick(rng, ("Read its points.", "Read the line.")),
                             alternatives=(PlanStep("chart_to_table", {"image": "img_1"}, ""),)),
                    PlanStep("statistics", {"values": NumberList(["{vals[value]}"])},
                             _pick(rng, ("Average them.", "Take the mean.")))]
            template = "{stat[mean]}"
            answer = float(Fraction(sum(line_vals), n))
            final = _pick(rng, ("The mean is {{stat[mean]}}.", "It averages {{stat[mean]}}."))
            tolerance = MEAN_TOLERANCE
            meta = {"side": side, "labels": labels, "line": line_vals, "bars": bar_vals}
        image = Image.new("RGB", (2 * w, h), (255, 255, 255))
        image.paste(left, (0, 0))
        image.paste(right, (w, 0))
        return {"question": q, "image": image, "answer": answer, "plan": plan,
                "template": template, "final": final, "tolerance": tolerance, **meta}


MULTI_STEP = register_family(MultiStep())
