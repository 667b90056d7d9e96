"""Procedural chart QA: a bar chart with 3–6 bars and a question about its values.

Question types (sampling weight): `lookup` (0.3) "What is the value of Beta?" → the value;
`max` / `min` (0.15 each) → a label; `difference` (0.2) "How much greater is Beta than
Alpha?" → a positive integer; `sum` (0.2) of two bars → an integer. Values are distinct
integers in 1–99, so every answer is unique and exact (tolerance 0).

Reference plans read only the bars the question needs, with `bar_values`:
lookup `bar_values(labels=[a])` → answer; max/min `bar_values(order="descending" /
"ascending")` → the first label; difference/sum `bar_values(labels=[a, b])` →
`calculator("41 - 23")` → answer. So the policy's work is choosing the tool and copying
arguments out of the question and values out of observations, which a ~1M-parameter policy
learns in minutes; the earlier plan (the whole table from `chart_to_table`, then a lookup
by label inside the policy) needs associative recall, which the tiny policy had not learnt
after 800 SFT steps (docs/design.md). Arguments, thinks and the answer are templates over
what the tools returned (`bindings`), never the ground truth.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from vista_jax.env.tasks.base import PlanStep, Task, register_family
from vista_jax.env.tasks.render import render_bar_chart

LABELS = (
    "Alpha", "Beta", "Gamma", "Delta", "Sigma", "Kappa", "Theta", "Omega", "Zeta", "Apple",
    "Pear", "Plum", "Lime", "Kiwi", "Oak", "Pine", "Elm", "Ash", "Red", "Blue", "Gold", "Jade",
    "Ruby", "North", "South", "East", "West", "Mars", "Nova", "Fox", "Wolf", "Bear", "Hawk",
    "Owl", "Lynx", "Iris",
)
TITLES = ("Sales", "Scores", "Votes", "Visits", "Stock", "Points", "Orders", "Budget")

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


class ChartQA:
    name = "chart_qa"
    gym_name = "ChartQA"
    tools = ("bar_values", "calculator")

    def generate(self, seed: int, split: str, difficulty: int | None = None) -> Task:
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
        plan = [PlanStep("bar_values", read_args,
                         rng.choice(THINK_READ[qtype]).format(a=a, b=b, s=sup))]
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
            final_think=final_think,
            meta={"question_type": qtype, "table": table, "title": title, "asked": [a, b]})

    def bindings(self, task: Task, results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """`v`: {label: value as written} from the first (bar_values / chart_to_table) result; `max_label`,
        `max_value`, `min_label`, `min_value`; `calc`: the calculator's value, once it ran."""
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
