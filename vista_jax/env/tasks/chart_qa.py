"""Procedural chart QA at three levels: bar charts (1), line and pie charts (2), multi-series
line, grouped-bar and larger pie charts (3), each with a question about the chart's data.

Level 1 (unchanged since the tiny CPU run was tuned on it; `generate(seed, split, 1)` is
the task this module produced before it had levels, for every seed; with no level given a
seed draws its own, so configs/tiny_cpu.py fixes env.difficulty = 1): a bar chart with 3–6
bars. Question
types (sampling weight): `lookup` (0.3) "What is the value of Beta?" → the value; `max` /
`min` (0.15 each) → a label; `difference` (0.2) "How much greater is Beta than Alpha?" →
a positive integer; `sum` (0.2) of two bars → an integer. Values are distinct integers in
1–99, so every answer is unique and exact (tolerance 0). Plans read only the bars the
question needs, with `bar_values`: lookup `bar_values(labels=[a])` → answer; max/min
`bar_values(order="descending" / "ascending")` → the first label; difference/sum
`bar_values(labels=[a, b])` → `calculator("41 - 23")` → answer. So the policy's work is
choosing the tool and copying arguments out of the question and values out of
observations, which a ~1M-parameter policy learns in minutes; the earlier plan (the whole
table from `chart_to_table`, then a lookup by label inside the policy) needs associative
recall, which the tiny policy had not learnt after 800 SFT steps (docs/design.md).
`chart_to_table(img)` (the whole table) is the reading step's `alternative` for E4 (an
annotation added with the levels; the calls, thinks and answers are unchanged).

Level 2: a single-series line chart (5–7 points over a run of months, years, weekdays or
weeks; values 5–95) or a pie (3–4 wedges, each >= 5 %). Kinds:
- `line_lookup` "What is the value at Mar?": `line_points` → the value;
- `line_trend` "Did the value increase or decrease from Feb to May?": `line_points` →
  `calculator("v[May] - v[Feb]")` → "increase" / "decrease" by the sign of the result;
- `line_change` "By how much did the value rise from Feb to May?": `line_points` →
  `calculator` → the (positive) change;
- `pie_lookup` "What percentage does Oak have?": `chart_to_table` → the share;
- `pie_max` "Which category has the largest share?" (largest >= 3 points ahead):
  `chart_to_table` → the label;
- `pie_larger` "Which is larger, Oak or Elm?" (>= 3 points apart): `chart_to_table` → the
  label whose share the tool read larger;
- `pie_compare` "How many percentage points larger is Oak than Elm?": `chart_to_table` →
  `calculator("v[Oak] - v[Elm]")`;
- `pie_sum` "What percentage do Oak and Elm make up together?": `chart_to_table` →
  `calculator("v[Oak] + v[Elm]")`.

Level 3: a line chart with 2–3 named series (4–6 points, values 2–98, series >= 6 apart at
every label so that no dot hides another), a grouped bar chart (2–3 series, 3–4 quarters,
years or months, values 1–99) or a pie of 5–6 wedges (each >= 4 %). Kinds (line or grouped bars unless
said):
- `series_lookup` "What is North's value for Mar?": line `line_points(series=North)`, bars
  `chart_to_table` → the value;
- `series_compare` "For Mar, how much higher is North than South?": `chart_to_table` →
  `calculator` → the difference;
- `series_mean` "What is the average of North across all months?": line
  `line_points(series=North)`, bars `chart_to_table` → `statistics(values)` → the mean;
- `series_total` "What is the total of all series for Mar?": `chart_to_table` →
  `calculator("a + b + c")` (the sum expression built from the tool's row) → the total;
- `line_largest_rise` (line) "In which month did North rise the most over the month
  before?" (a unique largest rise, > 0): `line_points(series=North)` → the later label of
  the steepest rise, found from the values the tool read;
- `colour_lookup` "What is the value of the orange line at Mar?": `read_legend` (colour →
  series name) → line `line_points(series=<name>)`, bars `chart_to_table` → the value;
- `pie_total` (pie) "What percentage do Oak, Pine and Elm make up together?":
  `chart_to_table` → `calculator` → the sum.

Answers. Every argument, think and answer is a template over what the tools returned
(`bindings`), never the generator's ground truth. Every `line_points` step has
`chart_to_table` (which reads the same values and more) as its E4 alternative. Numbers are exact (tolerance 0) where
the reader is exact (bars, line dots: integers read through the numbered ticks), within
one percentage point for pie answers (the reader rounds each wedge's angle share to a whole
percent; tolerance 1/answer), and within 1e-4 relative for means (the tools print six
significant digits). Text answers are labels, series names and "increase"/"decrease".

Synthetic only: the images are vista-jax's own renderers (`tasks.render`, 320x240), which
the classical chart readers read back exactly; the value ranges, label vocabularies (<= 5
characters), series counts and gaps above are chosen so that they always do: the classical
reader read every one of the 4,000 level-2/3 charts of train seeds 0-1,999 exactly (1,337
pies, 1,899 line charts, 764 grouped bar charts). Charts in other styles need the `hf`
chart_to_table backend and are not generated here.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

from vista_jax.env.tasks.base import (PlanStep, Task, check_difficulty, draw_difficulty,
                                      register_family)
from vista_jax.env.tasks.render import (COLOUR_NAMES, PALETTE, render_bar_chart,
                                        render_grouped_bar_chart, render_line_chart,
                                        render_pie_chart)

LABELS = (
    "Alpha", "Beta", "Gamma", "Delta", "Sigma", "Kappa", "Theta", "Omega", "Zeta", "Apple",
    "Pear", "Plum", "Lime", "Kiwi", "Oak", "Pine", "Elm", "Ash", "Red", "Blue", "Gold", "Jade",
    "Ruby", "North", "South", "East", "West", "Mars", "Nova", "Fox", "Wolf", "Bear", "Hawk",
    "Owl", "Lynx", "Iris",
)
TITLES = ("Sales", "Scores", "Votes", "Visits", "Stock", "Points", "Orders", "Budget")

# --- level 1: bar charts (kept exactly as before levels existed) ---------------------------

QUESTION_TYPES = ("lookup", "max", "min", "difference", "sum")
QUESTION_WEIGHTS = (0.3, 0.15, 0.15, 0.2, 0.2)

QUESTIONS = {
    "lookup": ("What is the value of {a}?", "What value does the {a} bar show?",
               "How large is {a}?"),
    "max": ("Which category has the highest value?", "Which bar is the tallest?",
            "Which label has the largest value?"),
    "min": ("Which category has the lowest value?", "Which bar is the shortest?",
            "Which label has the smallest value?"),
    "difference": ("How much greater is {a} than {b}?", "What is the difference between {a} "
                   "and {b}?", "By how much does {a} exceed {b}?"),
    "sum": ("What is the sum of {a} and {b}?", "What is the total of {a} and {b}?",
            "What do {a} and {b} add up to?"),
}

# Expert think phrasings, one picked per step by the task seed. Short on purpose: a tiny
# policy's turn budget is a few dozen tokens. `{a}`/`{b}` are filled at generation time,
# `{{…}}` fields later from the tool results (see `bindings`).
# For max/min the think restates the question's superlative ({s}: the word of SUPERLATIVES
# found in the question) and then the order, so the order follows from a word just written
# instead of one far back in the question (with a shared "Rank the bars." the tiny policy
# always chose "descending").
SUPERLATIVES = {"max": ("highest", "tallest", "largest"), "min": ("lowest", "shortest", "smallest")}
THINK_READ = {
    "lookup": ("I need the value of {a}.", "Read the {a} bar.", "Look up {a}."),
    "max": ("The {s} bar: sort descending.", "Find the {s}, sort descending.",
            "I want the {s}: sort descending."),
    "min": ("The {s} bar: sort ascending.", "Find the {s}, sort ascending.",
            "I want the {s}: sort ascending."),
    "difference": ("Read {a} and {b}.", "I need the values of {a} and {b}.", "Look up both bars."),
    "sum": ("Read {a} and {b}.", "I need the values of {a} and {b}.", "Look up both bars."),
}
THINK_CALC = {
    "difference": ("{a} is {{v[{a}]}}, {b} is {{v[{b}]}}. Subtract.",
                   "Compute {{v[{a}]}} - {{v[{b}]}}.", "Take the difference."),
    "sum": ("{a} is {{v[{a}]}}, {b} is {{v[{b}]}}. Add.",
            "Compute {{v[{a}]}} + {{v[{b}]}}.", "Add the two values."),
}
THINK_FINAL = {
    "lookup": ("The table shows {a} = {{v[{a}]}}.", "{a} has value {{v[{a}]}}."),
    "max": ("{{max_label}} is highest at {{max_value}}.", "The largest is {{max_label}}."),
    "min": ("{{min_label}} is lowest at {{min_value}}.", "The smallest is {{min_label}}."),
    "difference": ("{{v[{a}]}} - {{v[{b}]}} = {{calc}}.", "The difference is {{calc}}."),
    "sum": ("{{v[{a}]}} + {{v[{b}]}} = {{calc}}.", "The total is {{calc}}."),
}
ANSWER_TEMPLATE = {"lookup": "{{v[{a}]}}", "max": "{{max_label}}", "min": "{{min_label}}",
                   "difference": "{{calc}}", "sum": "{{calc}}"}

# --- levels 2 and 3 -----------------------------------------------------------------------

# Ordered x-axis vocabularies of line charts: (words, the unit a question names).
X_AXES = (
    (("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
     "month"),
    (tuple(str(y) for y in range(2013, 2025)), "year"),
    (("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"), "day"),
    (tuple(f"W{i}" for i in range(1, 10)), "week"),
)
# Category vocabularies of grouped bar charts; a chart uses 3-4 of one, in this order.
GROUP_AXES = (("Q1", "Q2", "Q3", "Q4"), ("2021", "2022", "2023", "2024"),
              ("Jan", "Feb", "Mar", "Apr", "May"))
# Series names: no colour words, so that "the orange line" never reads as a name.
SERIES_NAMES = ("North", "South", "East", "West", "Alpha", "Beta", "Gamma", "Delta", "Sigma",
                "Kappa", "Jade", "Oak", "Pine", "Fox", "Wolf", "Hawk", "Owl", "Lynx")
PIE_TITLES = ("Share", "Market", "Votes", "Budget", "Survey", "Usage")
LINE_MIN_GAP = 6  # value units between two series at one label: their dots never overlap
PIE_SLACK = 1  # percentage points a pie answer may be off (the reader rounds each wedge)
MEAN_TOLERANCE = 1e-4  # relative: the tools print six significant digits

LEVEL_TYPES = {
    2: ("line_lookup", "line_trend", "line_change", "pie_lookup", "pie_max", "pie_larger",
        "pie_compare", "pie_sum"),
    3: ("series_lookup", "series_compare", "series_mean", "series_total", "line_largest_rise",
        "colour_lookup", "pie_total"),
}
LEVEL_WEIGHTS = {
    2: (0.16, 0.14, 0.14, 0.12, 0.11, 0.11, 0.11, 0.11),
    3: (0.16, 0.16, 0.15, 0.14, 0.13, 0.13, 0.13),
}


def format_number(x: Any) -> str:
    """`41.0` -> "41", `2.5` -> "2.5": how the expert writes numbers it read."""
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:g}"


def parse_table_text(text: str) -> dict[str, float]:
    """`Label | value` lines (chart_to_table's text) -> {label: value}; skips other lines."""
    table = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 2:
            try:
                table[parts[0]] = float(parts[1])
            except ValueError:
                continue
    return table


class Labels(dict):
    """A {label: value} binding that `str.format` can index with a label of digits
    ("{v[2019]}" looks up the int 2019, which maps to the label "2019")."""

    def __missing__(self, key: Any) -> Any:
        if isinstance(key, int) and str(key) in self:
            return self[str(key)]
        raise KeyError(key)


class NumberList(list):
    """A plan argument that fills into a list of numbers, e.g. `statistics(values=...)`.

    `fill_template` formats each item and rebuilds a list as `type(template)(items)`, so a
    NumberList's filled items arrive here as text: each is split at commas and parsed
    ("10, 40, 25" from a `vals` binding gives three numbers). Items with unfilled
    `{fields}` (the template itself) are kept as they are. Unparseable text raises
    ValueError, which the expert reports as an unreadable result.
    """

    def __init__(self, items: Sequence[Any] = ()):
        out: list[Any] = []
        for item in items:
            if isinstance(item, str) and "{" not in item:
                for part in item.split(","):
                    x = float(part)
                    out.append(int(x) if x.is_integer() else x)
            else:
                out.append(item)
        super().__init__(out)


def chart_series(result: Mapping[str, Any]) -> dict[str, dict[str, float]] | None:
    """The series a chart reading holds, {name: {label: value}}, or None if `result` is not a
    successful chart reading. chart_to_table / bar_values of one series (and its
    `label | value` text) give one series named "value", as line_points names it."""
    if not result.get("ok"):
        return None
    data = result.get("data") or {}
    labels = data.get("labels")
    series = data.get("series")
    if labels is not None and isinstance(series, list):  # line_points
        return {s["name"]: dict(zip(labels, map(float, s["values"]))) for s in series}
    if labels is not None and isinstance(series, Mapping):  # chart_to_table, several series
        return {name: dict(zip(labels, map(float, values))) for name, values in series.items()}
    if labels is not None and data.get("values") is not None:  # bar_values, chart_to_table
        return {"value": dict(zip(labels, map(float, data["values"])))}
    if not data and result.get("text"):
        table = parse_table_text(result["text"])
        return {"value": table} if table else None
    return None


def result_bindings(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Template variables from a plan's tool results, whichever reader produced them.

    `t` {series: {label: value text}} merged over every chart reading; `v` the one series
    when a single one was read; `vals` {series: "a, b, c"} (for a NumberList); `col`
    {label: "a + b + c"} across series; `max_label`/`max_value`/`min_label`/`min_value`
    of `v`; `rise` / `rise_by` {series: later label / size of its largest rise over the
    label before}; `colour` {colour name: series} from read_legend and `by_colour`
    {colour: {label: value}}; `calc` the last calculator value and `calcs` all of them;
    `trend` "increase"/"decrease"/"no change" by the last calculator value's sign; `stat`
    {name: value} of the last statistics result and `stats` all of them; `sol` {variable:
    value} from solve_equation; `n` the counts of count_objects / detect_objects in order.
    """
    out: dict[str, Any] = {}
    table: dict[str, dict[str, float]] = {}
    colours: dict[str, str] = {}
    calcs: list[float] = []
    stats: list[dict[str, str]] = []
    counts: list[str] = []
    for r in results:
        if not r.get("ok"):
            continue
        data = r.get("data") or {}
        if "entries" in data:  # read_legend
            colours.update({e["colour"]: e["name"] for e in data["entries"]})
        elif "solutions" in data:  # solve_equation
            if data["solutions"]:
                out["sol"] = Labels({k: format_number(s["value"])
                                     for k, s in data["solutions"][0].items()})
        elif "mean" in data and "count" in data:  # statistics
            stats.append(Labels({k: format_number(x) for k, x in data.items()
                                 if isinstance(x, (int, float))}))
        elif "objects" in data:  # count_objects / detect_objects
            counts.append(str(data.get("count", len(data["objects"]))))
        elif "value" in data:  # calculator (chart readings have "values", never "value")
            calcs.append(float(data["value"]))
        else:
            series = chart_series(r)
            if series:
                table.update(series)
    if table:
        out["t"] = Labels({name: Labels({k: format_number(x) for k, x in s.items()})
                           for name, s in table.items()})
        out["vals"] = Labels({name: ", ".join(format_number(x) for x in s.values())
                              for name, s in table.items()})
        labels = list(next(iter(table.values())))
        out["col"] = Labels({label: " + ".join(format_number(s[label]) for s in table.values()
                                               if label in s) for label in labels})
        rise, rise_by = Labels(), Labels()
        for name, s in table.items():
            steps = [(b - a, lb) for (la, a), (lb, b) in zip(s.items(), list(s.items())[1:])]
            if steps:
                by, label = max(steps, key=lambda d: d[0])
                rise[name], rise_by[name] = label, format_number(by)
        out["rise"], out["rise_by"] = rise, rise_by
        if len(table) == 1:
            single = next(iter(table.values()))
            out["v"] = next(iter(out["t"].values()))
            for kind, pick in (("max", max), ("min", min)):
                label = pick(single, key=single.__getitem__)
                out[f"{kind}_label"], out[f"{kind}_value"] = label, out["v"][label]
    if colours:
        out["colour"] = Labels(colours)
        if "t" in out:
            out["by_colour"] = Labels({c: out["t"][name] for c, name in colours.items()
                                       if name in out["t"]})
    if calcs:
        out["calcs"] = [format_number(x) for x in calcs]
        out["calc"] = out["calcs"][-1]
        last = calcs[-1]
        out["trend"] = "increase" if last > 0 else "decrease" if last < 0 else "no change"
    if stats:
        out["stats"], out["stat"] = stats, stats[-1]
    if counts:
        out["n"] = counts
    return out


def render_colour_names(seed: int, n: int) -> list[str]:
    """The colour names `render.*_chart(seed=seed)` gives its n series, in series order
    (mirrors the renderers' `random.Random(seed).sample(PALETTE, n)`)."""
    return [COLOUR_NAMES[PALETTE.index(c)] for c in random.Random(seed).sample(PALETTE, n)]


# --- chart data ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Chart:
    """What a level-2/3 task draws: kind "line" | "grouped_bar" | "pie", its labels (x
    labels, or pie wedges), {series name: values} ("value" for one unnamed series)."""
    kind: str
    labels: tuple[str, ...]
    series: dict[str, tuple[int, ...]]
    title: str | None
    unit: str = ""  # line charts: what one x label is ("month", "year", ...)

    def value(self, label: str, name: str = "value") -> int:
        return self.series[name][self.labels.index(label)]

    def render(self, seed: int):
        if self.kind == "pie":
            return render_pie_chart(self.labels, self.series["value"], title=self.title,
                                    seed=seed)
        draw = render_line_chart if self.kind == "line" else render_grouped_bar_chart
        return draw(self.labels, {k: list(v) for k, v in self.series.items()},
                    title=self.title, seed=seed)


def line_chart(rng: random.Random, n_series: int, n_points: tuple[int, int],
               accept: Callable[[Chart], bool] = lambda c: True) -> Chart:
    """A line chart over a run of one X_AXES vocabulary; with several series their values
    at each label are >= LINE_MIN_GAP apart. Redraws until `accept(chart)`."""
    for _ in range(1000):
        words, unit = rng.choice(X_AXES)
        n = rng.randint(*n_points)
        start = rng.randint(0, len(words) - n)
        labels = tuple(words[start:start + n])
        if n_series == 1:
            names = ["value"]
            columns = [[rng.randint(5, 95)] for _ in labels]
        else:
            names = rng.sample(SERIES_NAMES, n_series)
            columns = []
            for _ in labels:
                while True:
                    col = [rng.randint(2, 98) for _ in names]
                    ordered = sorted(col)
                    if all(b - a >= LINE_MIN_GAP for a, b in zip(ordered, ordered[1:])):
                        break
                columns.append(col)
        series = {name: tuple(col[j] for col in columns) for j, name in enumerate(names)}
        title = rng.choice(TITLES) if rng.random() < 0.5 else None
        chart = Chart("line", labels, series, title, unit)
        if accept(chart):
            return chart
    raise RuntimeError("no acceptable line chart in 1000 draws")  # a bug in `accept`


def grouped_chart(rng: random.Random, n_series: int,
                  accept: Callable[[Chart], bool] = lambda c: True) -> Chart:
    for _ in range(1000):
        axis = rng.choice(GROUP_AXES)
        labels = tuple(sorted(rng.sample(axis, rng.randint(3, 4)), key=axis.index))
        names = rng.sample(SERIES_NAMES, n_series)
        series = {name: tuple(rng.randint(1, 99) for _ in labels) for name in names}
        title = rng.choice(TITLES) if rng.random() < 0.5 else None
        chart = Chart("grouped_bar", labels, series, title)
        if accept(chart):
            return chart
    raise RuntimeError("no acceptable grouped bar chart in 1000 draws")


def pie_chart(rng: random.Random, n_wedges: tuple[int, int], min_share: int,
              accept: Callable[[Chart], bool] = lambda c: True) -> Chart:
    for _ in range(1000):
        n = rng.randint(*n_wedges)
        cuts = sorted(rng.sample(range(1, 100), n - 1))
        shares = tuple(b - a for a, b in zip((0, *cuts), (*cuts, 100)))
        if min(shares) < min_share:
            continue
        labels = tuple(rng.sample(LABELS, n))
        title = rng.choice(PIE_TITLES) if rng.random() < 0.5 else None
        chart = Chart("pie", labels, {"value": shares}, title)
        if accept(chart):
            return chart
    raise RuntimeError("no acceptable pie in 1000 draws")


def _pie_tolerance(answer: int) -> float:
    """Relative tolerance that accepts a pie answer within PIE_SLACK percentage points."""
    return (PIE_SLACK + 1e-9) / abs(answer)


# --- level 2/3 question kinds --------------------------------------------------------------

@dataclasses.dataclass
class _Spec:
    question: str
    chart: Chart
    answer: Any
    plan: list[PlanStep]
    answer_template: str
    final_think: str
    answer_type: str = "number"
    tolerance: float = 0.0
    asked: tuple[str, ...] = ()


def _pick(rng: random.Random, options: Sequence[str], **fmt: Any) -> str:
    return rng.choice(options).format(**fmt)


def _table_step(think: str) -> PlanStep:
    return PlanStep("chart_to_table", {"image": "img_0"}, think)


TABLE_ALT = (PlanStep("chart_to_table", {"image": "img_0"}, ""),)


def _line_read(think: str, series: str | None = None) -> PlanStep:
    """line_points of one series (or all); chart_to_table reads the same and more."""
    args: dict[str, Any] = {"image": "img_0"}
    if series is not None:
        args["series"] = series
    return PlanStep("line_points", args, think, alternatives=TABLE_ALT)


def _calc(expression: str, think: str) -> PlanStep:
    return PlanStep("calculator", {"expression": expression}, think)


def _line_lookup(rng: random.Random) -> _Spec:
    chart = line_chart(rng, 1, (5, 7))
    x = rng.choice(chart.labels)
    q = _pick(rng, ("What is the value at {x}?", "What value does the line show for {x}?",
                    "How high is the line at {x}?"), x=x)
    read = _line_read(_pick(rng, ("Read the line's points.", "I need the point at {x}.",
                                  "Read the values of the line."), x=x))
    final = _pick(rng, ("At {x} the line is at {{v[{x}]}}.", "{x} reads {{v[{x}]}}."), x=x)
    return _Spec(q, chart, chart.value(x), [read], f"{{v[{x}]}}", final, asked=(x,))


def _two_points(rng: random.Random, chart: Chart) -> tuple[str, str]:
    """Two distinct x labels in chart order whose values differ."""
    while True:
        i, j = sorted(rng.sample(range(len(chart.labels)), 2))
        a, b = chart.labels[i], chart.labels[j]
        if chart.value(a) != chart.value(b):
            return a, b


def _line_trend(rng: random.Random) -> _Spec:
    chart = line_chart(rng, 1, (5, 7), lambda c: len(set(c.series["value"])) > 1)
    a, b = _two_points(rng, chart)
    q = _pick(rng, ("Did the value increase or decrease from {a} to {b}?",
                    "Between {a} and {b}, did the value increase or decrease?",
                    "From {a} to {b}, does the line increase or decrease?"), a=a, b=b)
    plan = [_line_read(_pick(rng, ("Read {a} and {b} on the line.", "I need the points.",
                                   "Read the line."), a=a, b=b)),
            _calc(f"{{v[{b}]}} - {{v[{a}]}}",
                  _pick(rng, ("{b} minus {a}.", "Compute {{v[{b}]}} - {{v[{a}]}}.",
                              "Take the change."), a=a, b=b))]
    final = _pick(rng, ("The change is {{calc}}: {{trend}}.", "{{calc}} means {{trend}}."))
    answer = "increase" if chart.value(b) > chart.value(a) else "decrease"
    return _Spec(q, chart, answer, plan, "{trend}", final, answer_type="text", asked=(a, b))


def _line_change(rng: random.Random) -> _Spec:
    chart = line_chart(rng, 1, (5, 7), lambda c: len(set(c.series["value"])) > 1)
    a, b = _two_points(rng, chart)
    rise = chart.value(b) > chart.value(a)
    verb = "rise" if rise else "fall"
    q = _pick(rng, ("By how much did the value {verb} from {a} to {b}?",
                    "How much did the line {verb} between {a} and {b}?",
                    "From {a} to {b}, how far did the value {verb}?"), a=a, b=b, verb=verb)
    hi, lo = (b, a) if rise else (a, b)
    plan = [_line_read(_pick(rng, ("Read {a} and {b} on the line.", "I need the points.",
                                   "Read the line."), a=a, b=b)),
            _calc(f"{{v[{hi}]}} - {{v[{lo}]}}",
                  _pick(rng, ("Compute {{v[{hi}]}} - {{v[{lo}]}}.", "Subtract {lo} from {hi}.",
                              "Take the difference."), hi=hi, lo=lo))]
    final = _pick(rng, ("It {verb}s by {{calc}}.", "The change is {{calc}}."), verb=verb)
    answer = abs(chart.value(b) - chart.value(a))
    return _Spec(q, chart, answer, plan, "{calc}", final, asked=(a, b))


def _pie_read(rng: random.Random, phrasings: Sequence[str], **fmt: Any) -> PlanStep:
    return _table_step(_pick(rng, phrasings, **fmt))


def _pie_lookup(rng: random.Random) -> _Spec:
    chart = pie_chart(rng, (3, 4), 5)
    a = rng.choice(chart.labels)
    q = _pick(rng, ("What percentage does {a} have?", "What share of the pie is {a}?",
                    "How many percent is {a}?"), a=a)
    read = _pie_read(rng, ("Read the pie's shares.", "I need the share of {a}.",
                           "Read the wedges."), a=a)
    final = _pick(rng, ("{a} is {{v[{a}]}} percent.", "The pie shows {a} = {{v[{a}]}}."), a=a)
    value = chart.value(a)
    return _Spec(q, chart, value, [read], f"{{v[{a}]}}", final,
                 tolerance=_pie_tolerance(value), asked=(a,))


def _pie_max(rng: random.Random) -> _Spec:
    def clear_winner(c: Chart) -> bool:
        top = sorted(c.series["value"], reverse=True)
        return top[0] - top[1] >= 3
    chart = pie_chart(rng, (3, 4), 5, clear_winner)
    q = _pick(rng, ("Which category has the largest share?", "Which wedge is the biggest?",
                    "Which label takes up most of the pie?"))
    read = _pie_read(rng, ("Read all shares.", "Find the largest wedge.", "Read the pie."))
    final = _pick(rng, ("{{max_label}} is largest at {{max_value}}.",
                        "The biggest is {{max_label}}."))
    answer = max(chart.labels, key=chart.value)
    return _Spec(q, chart, answer, [read], "{max_label}", final, answer_type="text")


def _apart_pair(rng: random.Random, chart: Chart, gap: int) -> tuple[str, str] | None:
    """Two labels (larger first) whose values are >= gap apart, or None."""
    pairs = [(a, b) for a in chart.labels for b in chart.labels
             if chart.value(a) - chart.value(b) >= gap]
    return rng.choice(pairs) if pairs else None


def _pie_pair(rng: random.Random) -> tuple[Chart, str, str]:
    chart = pie_chart(rng, (3, 4), 5, lambda c: max(c.series["value"]) - min(c.series["value"])
                      >= 3)
    a, b = _apart_pair(rng, chart, 3)
    return chart, a, b


def _pie_larger(rng: random.Random) -> _Spec:
    chart, big, small = _pie_pair(rng)
    a, b = rng.sample((big, small), 2)  # the question names them in either order
    q = _pick(rng, ("Which is larger, {a} or {b}?", "Which has the bigger share: {a} or {b}?",
                    "Is {a} or {b} the larger wedge?"), a=a, b=b)
    read = _pie_read(rng, ("Read the shares of {a} and {b}.", "Compare {a} and {b}.",
                           "Read the pie."), a=a, b=b)
    final = _pick(rng, ("{a} is {{v[{a}]}}, {b} is {{v[{b}]}}.",
                        "{{larger}} has the larger share."), a=a, b=b)
    return _Spec(q, chart, big, [read], "{larger}", final, answer_type="text", asked=(a, b))


def _pie_compare(rng: random.Random) -> _Spec:
    chart, a, b = _pie_pair(rng)
    q = _pick(rng, ("How many percentage points larger is {a} than {b}?",
                    "By how many points does {a} exceed {b}?",
                    "How much bigger is the share of {a} than that of {b}?"), a=a, b=b)
    plan = [_pie_read(rng, ("Read {a} and {b}.", "I need both shares.", "Read the pie."),
                      a=a, b=b),
            _calc(f"{{v[{a}]}} - {{v[{b}]}}",
                  _pick(rng, ("Compute {{v[{a}]}} - {{v[{b}]}}.", "Subtract the shares."),
                        a=a, b=b))]
    final = _pick(rng, ("{{v[{a}]}} - {{v[{b}]}} = {{calc}}.", "The gap is {{calc}}."), a=a, b=b)
    answer = chart.value(a) - chart.value(b)
    return _Spec(q, chart, answer, plan, "{calc}", final, tolerance=_pie_tolerance(answer),
                 asked=(a, b))


def _pie_sum(rng: random.Random) -> _Spec:
    chart = pie_chart(rng, (3, 4), 5)
    a, b = rng.sample(chart.labels, 2)
    q = _pick(rng, ("What percentage do {a} and {b} make up together?",
                    "What is the combined share of {a} and {b}?",
                    "How many percent are {a} and {b} together?"), a=a, b=b)
    plan = [_pie_read(rng, ("Read {a} and {b}.", "I need both shares.", "Read the pie."),
                      a=a, b=b),
            _calc(f"{{v[{a}]}} + {{v[{b}]}}",
                  _pick(rng, ("Compute {{v[{a}]}} + {{v[{b}]}}.", "Add the shares."), a=a, b=b))]
    final = _pick(rng, ("{{v[{a}]}} + {{v[{b}]}} = {{calc}}.", "Together {{calc}}."), a=a, b=b)
    answer = chart.value(a) + chart.value(b)
    return _Spec(q, chart, answer, plan, "{calc}", final, tolerance=_pie_tolerance(answer),
                 asked=(a, b))


def _series_chart(rng: random.Random, accept: Callable[[Chart], bool] = lambda c: True
                  ) -> Chart:
    """A level-3 chart with 2-3 named series: a line chart or grouped bars, evenly."""
    n = rng.randint(2, 3)
    if rng.random() < 0.5:
        return line_chart(rng, n, (4, 6), accept)
    return grouped_chart(rng, n, accept)


def _series_read(rng: random.Random, chart: Chart, name: str) -> PlanStep:
    """One series: line_points(series=name) on a line chart, chart_to_table on bars."""
    think = _pick(rng, ("Read the {s} series.", "I need {s}'s values.", "Read {s}."), s=name)
    if chart.kind == "line":
        return PlanStep("line_points", {"image": "img_0", "series": name}, think,
                        alternatives=TABLE_ALT)
    return _table_step(think)


def _series_lookup(rng: random.Random) -> _Spec:
    chart = _series_chart(rng)
    s = rng.choice(list(chart.series))
    x = rng.choice(chart.labels)
    q = _pick(rng, ("What is {s}'s value for {x}?", "What value does {s} have at {x}?",
                    "How high is {s} at {x}?"), s=s, x=x)
    final = _pick(rng, ("{s} at {x} is {{t[{s}][{x}]}}.", "The chart gives {{t[{s}][{x}]}}."),
                  s=s, x=x)
    return _Spec(q, chart, chart.value(x, s), [_series_read(rng, chart, s)],
                 f"{{t[{s}][{x}]}}", final, asked=(s, x))


def _series_compare(rng: random.Random) -> _Spec:
    while True:
        chart = _series_chart(rng)
        x = rng.choice(chart.labels)
        s1, s2 = rng.sample(list(chart.series), 2)
        a, b = (s1, s2) if chart.value(x, s1) >= chart.value(x, s2) else (s2, s1)
        if chart.value(x, a) != chart.value(x, b):  # grouped bars may tie: redraw
            break
    q = _pick(rng, ("For {x}, how much higher is {a} than {b}?",
                    "At {x}, by how much does {a} exceed {b}?",
                    "How much larger is {a} than {b} at {x}?"), a=a, b=b, x=x)
    plan = [_table_step(_pick(rng, ("Read the table.", "I need {a} and {b} at {x}.",
                                    "Read all series."), a=a, b=b, x=x)),
            _calc(f"{{t[{a}][{x}]}} - {{t[{b}][{x}]}}",
                  _pick(rng, ("Compute {{t[{a}][{x}]}} - {{t[{b}][{x}]}}.",
                              "Subtract {b} from {a}."), a=a, b=b, x=x))]
    final = _pick(rng, ("{a} leads by {{calc}}.", "The difference is {{calc}}."), a=a)
    return _Spec(q, chart, chart.value(x, a) - chart.value(x, b), plan, "{calc}", final,
                 asked=(a, b, x))


def _series_mean(rng: random.Random) -> _Spec:
    chart = _series_chart(rng)
    s = rng.choice(list(chart.series))
    over = f"{chart.unit}s" if chart.kind == "line" else "groups"
    q = _pick(rng, ("What is the average of {s} across all {over}?",
                    "What is {s}'s mean value?", "On average, how high is {s}?"), s=s, over=over)
    plan = [_series_read(rng, chart, s),
            PlanStep("statistics", {"values": NumberList([f"{{vals[{s}]}}"])},
                     _pick(rng, ("Average {s}'s values.", "Take the mean.",
                                 "Statistics of {s}."), s=s))]
    final = _pick(rng, ("The mean is {{stat[mean]}}.", "{s} averages {{stat[mean]}}."), s=s)
    mean = Fraction(sum(chart.series[s]), len(chart.labels))
    return _Spec(q, chart, format_number(float(mean)), plan, "{stat[mean]}", final,
                 tolerance=MEAN_TOLERANCE, asked=(s,))


def _series_total(rng: random.Random) -> _Spec:
    chart = _series_chart(rng)
    x = rng.choice(chart.labels)
    q = _pick(rng, ("What is the total of all series for {x}?",
                    "What do all the series add up to at {x}?",
                    "What is the sum of every series at {x}?"), x=x)
    plan = [_table_step(_pick(rng, ("Read the table.", "I need every series at {x}.",
                                    "Read all series."), x=x)),
            _calc(f"{{col[{x}]}}", _pick(rng, ("Add the {x} row.", "Sum them.",
                                               "Add up {x}."), x=x))]
    final = _pick(rng, ("{{col[{x}]}} = {{calc}}.", "The total is {{calc}}."), x=x)
    total = sum(chart.value(x, s) for s in chart.series)
    return _Spec(q, chart, total, plan, "{calc}", final, asked=(x,))


def _largest_rise(chart: Chart, name: str) -> tuple[str, int] | None:
    """(later label, rise) of the series' unique largest rise between neighbours, or None."""
    values = chart.series[name]
    steps = sorted(((b - a, chart.labels[i + 1]) for i, (a, b) in
                    enumerate(zip(values, values[1:]))), reverse=True)
    if steps[0][0] <= 0 or (len(steps) > 1 and steps[1][0] == steps[0][0]):
        return None
    return steps[0][1], steps[0][0]


def _line_largest_rise(rng: random.Random) -> _Spec:
    n = rng.randint(2, 3)
    chart = line_chart(rng, n, (4, 6), lambda c: any(_largest_rise(c, s) for s in c.series))
    s = rng.choice([s for s in chart.series if _largest_rise(chart, s)])
    label, _ = _largest_rise(chart, s)
    u = chart.unit
    q = _pick(rng, ("In which {u} did {s} rise the most over the {u} before?",
                    "Which {u} shows {s}'s largest rise from the previous {u}?",
                    "For {s}, which {u} has the biggest rise since the {u} before?"), u=u, s=s)
    read = PlanStep("line_points", {"image": "img_0", "series": s},
                    _pick(rng, ("Read {s}'s points.", "I need {s}'s values.", "Read {s}."),
                          s=s), alternatives=TABLE_ALT)
    final = _pick(rng, ("{s} rises most, by {{rise_by[{s}]}}, into {{rise[{s}]}}.",
                        "The biggest rise ends at {{rise[{s}]}}."), s=s)
    return _Spec(q, chart, label, [read], f"{{rise[{s}]}}", final, answer_type="text",
                 asked=(s,))


def _colour_lookup(rng: random.Random, seed: int) -> _Spec:
    chart = _series_chart(rng)
    names = list(chart.series)
    colours = render_colour_names(seed, len(names))
    j = rng.randrange(len(names))
    c, s, x = colours[j], names[j], rng.choice(chart.labels)
    mark = "line" if chart.kind == "line" else "bars"
    q = _pick(rng, ("What is the value of the {c} {m} at {x}?",
                    "What do the {c} {m} show for {x}?" if mark == "bars" else
                    "What does the {c} {m} show for {x}?",
                    "At {x}, how high is the {c} {m}?"), c=c, m=mark, x=x)
    legend = PlanStep("read_legend", {"image": "img_0"},
                      _pick(rng, ("Which series is {c}?", "Check the legend for {c}.",
                                  "Read the legend."), c=c))
    think = _pick(rng, ("{c} is {{colour[{c}]}}. Read it.", "Read {{colour[{c}]}}."), c=c)
    if chart.kind == "line":
        read = PlanStep("line_points", {"image": "img_0", "series": f"{{colour[{c}]}}"},
                        think, alternatives=TABLE_ALT)
    else:
        read = _table_step(think)
    final = _pick(rng, ("The {c} {m}: {{by_colour[{c}][{x}]}}.",
                        "{{colour[{c}]}} at {x} is {{by_colour[{c}][{x}]}}."), c=c, m=mark, x=x)
    return _Spec(q, chart, chart.value(x, s), [legend, read], f"{{by_colour[{c}][{x}]}}",
                 final, asked=(c, x))


def _pie_total(rng: random.Random) -> _Spec:
    chart = pie_chart(rng, (5, 6), 4)
    a, b, c = rng.sample(chart.labels, 3)
    q = _pick(rng, ("What percentage do {a}, {b} and {c} make up together?",
                    "What is the combined share of {a}, {b} and {c}?",
                    "How many percent are {a}, {b} and {c} in total?"), a=a, b=b, c=c)
    plan = [_pie_read(rng, ("Read {a}, {b} and {c}.", "I need three shares.",
                            "Read the pie."), a=a, b=b, c=c),
            _calc(f"{{v[{a}]}} + {{v[{b}]}} + {{v[{c}]}}",
                  _pick(rng, ("Add the three shares.", "Sum {a}, {b} and {c}."), a=a, b=b, c=c))]
    final = _pick(rng, ("Together {{calc}} percent.", "The three make {{calc}}."))
    answer = sum(chart.value(k) for k in (a, b, c))
    return _Spec(q, chart, answer, plan, "{calc}", final, tolerance=_pie_tolerance(answer),
                 asked=(a, b, c))


KINDS: dict[str, Callable[..., _Spec]] = {
    "line_lookup": _line_lookup, "line_trend": _line_trend, "line_change": _line_change,
    "pie_lookup": _pie_lookup, "pie_max": _pie_max, "pie_larger": _pie_larger,
    "pie_compare": _pie_compare, "pie_sum": _pie_sum,
    "series_lookup": _series_lookup, "series_compare": _series_compare,
    "series_mean": _series_mean, "series_total": _series_total,
    "line_largest_rise": _line_largest_rise, "pie_total": _pie_total,
}


class ChartQA:
    name = "chart_qa"
    gym_name = "ChartQA"
    tools = ("bar_values", "calculator", "chart_to_table", "line_points", "read_legend",
             "statistics")

    def generate(self, seed: int, split: str, difficulty: int | None = None) -> Task:
        check_difficulty(difficulty)
        level = draw_difficulty(seed) if difficulty is None else difficulty
        if level == 1:
            return self._generate_bars(seed, split)
        rng = random.Random(f"{self.name}/{seed}/{level}")
        qtype = rng.choices(LEVEL_TYPES[level], weights=LEVEL_WEIGHTS[level])[0]
        spec = (_colour_lookup(rng, seed) if qtype == "colour_lookup" else KINDS[qtype](rng))
        chart = spec.chart
        return Task(
            task_id=f"{self.name}/{split}/{seed}", family=self.name, seed=seed, split=split,
            question=spec.question, images=(chart.render(seed),),
            answer=spec.answer if isinstance(spec.answer, str) else str(spec.answer),
            answer_type=spec.answer_type, tolerance=spec.tolerance,
            reference_plan=tuple(spec.plan), answer_template=spec.answer_template,
            final_think=spec.final_think, difficulty=level,
            meta={"question_type": qtype, "chart_type": chart.kind, "labels": list(chart.labels),
                  "series": {k: list(v) for k, v in chart.series.items()},
                  "title": chart.title, "asked": list(spec.asked)})

    def _generate_bars(self, seed: int, split: str) -> Task:
        """Level 1, exactly as before levels existed (same RNG draws, text and image)."""
        rng = random.Random(seed)
        n = rng.randint(3, 6)
        labels = rng.sample(LABELS, n)
        values = rng.sample(range(1, 100), n)
        title = rng.choice(TITLES) if rng.random() < 0.5 else None
        table = dict(zip(labels, values))
        qtype = rng.choices(QUESTION_TYPES, weights=QUESTION_WEIGHTS)[0]
        a, b = rng.sample(labels, 2)
        if qtype == "difference" and table[a] < table[b]:
            a, b = b, a  # "how much greater is a than b" always has a positive answer
        answer = {
            "lookup": table[a],
            "max": max(labels, key=table.__getitem__),
            "min": min(labels, key=table.__getitem__),
            "difference": table[a] - table[b],
            "sum": table[a] + table[b],
        }[qtype]
        question = rng.choice(QUESTIONS[qtype]).format(a=a, b=b)
        sup = next((w for w in SUPERLATIVES.get(qtype, ()) if w in question), "")

        read_args: dict[str, Any] = {"image": "img_0"}
        if qtype in ("max", "min"):
            read_args["order"] = "descending" if qtype == "max" else "ascending"
        else:
            read_args["labels"] = [a] if qtype == "lookup" else [a, b]
        # The whole table holds the same bars (E4 counts it as this step).
        plan = [PlanStep("bar_values", read_args,
                         rng.choice(THINK_READ[qtype]).format(a=a, b=b, s=sup),
                         alternatives=TABLE_ALT)]
        if qtype in ("difference", "sum"):
            op = "-" if qtype == "difference" else "+"
            plan.append(PlanStep("calculator", {"expression": f"{{v[{a}]}} {op} {{v[{b}]}}"},
                                 rng.choice(THINK_CALC[qtype]).format(a=a, b=b)))
        final_think = rng.choice(THINK_FINAL[qtype]).format(a=a, b=b)

        image = render_bar_chart(labels, values, title=title, seed=seed)
        return Task(
            task_id=f"{self.name}/{split}/{seed}", family=self.name, seed=seed, split=split,
            question=question, images=(image,), answer=str(answer),
            answer_type="text" if qtype in ("max", "min") else "number", tolerance=0.0,
            reference_plan=tuple(plan), answer_template=ANSWER_TEMPLATE[qtype].format(a=a, b=b),
            final_think=final_think, difficulty=1,
            meta={"question_type": qtype, "chart_type": "bar", "table": table, "title": title,
                  "asked": [a, b]})

    def bindings(self, task: Task, results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Level 1: `v` {label: value as written} from the first (bar_values /
        chart_to_table) result; `max_label`, `max_value`, `min_label`, `min_value`; `calc`:
        the calculator's value, once it ran. Levels 2-3: `result_bindings` of all results,
        plus `larger` (pie_larger: the asked label the tool read larger)."""
        if task.meta.get("question_type") in QUESTION_TYPES:
            return _bar_bindings(results)
        out = result_bindings(results)
        asked = task.meta.get("asked") or []
        if task.meta.get("question_type") == "pie_larger" and "v" in out and len(asked) == 2:
            a, b = asked
            if a in out["v"] and b in out["v"]:
                out["larger"] = a if float(out["v"][a]) > float(out["v"][b]) else b
        return out


def _bar_bindings(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if results:
        data = results[0].get("data") or {}
        if data.get("labels") is not None and data.get("values") is not None:
            table = dict(zip(data["labels"], map(float, data["values"])))
        else:
            table = parse_table_text(results[0].get("text", ""))
        if table:
            out["v"] = {k: format_number(x) for k, x in table.items()}
            for kind, pick in (("max", max), ("min", min)):
                label = pick(table, key=table.__getitem__)
                out[f"{kind}_label"], out[f"{kind}_value"] = label, out["v"][label]
    if len(results) > 1 and results[1].get("ok"):
        value = (results[1].get("data") or {}).get("value", results[1].get("text"))
        out["calc"] = format_number(value)
    return out


CHART_QA = register_family(ChartQA())
