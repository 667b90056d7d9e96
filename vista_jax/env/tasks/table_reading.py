"""Procedural table reading: a rendered table (a header row over labelled rows of numbers and
words) and a question about its cells.

Question types, each at every level (the level sets the table's size and the steps):

- `lookup`: a cell by row label and column ("What is Anna's Math?"); level 3 also asks a
  word cell or the other way round ("Which Name has a Math of 57?"). Plan: `ocr` -> answer.
- `column_aggregate`: level 1 a column's sum, level 2 its mean, level 3 its mean or range
  (largest minus smallest). Plan: `ocr` -> `calculator("41 + 23 + 17")` -> answer.
- `row_aggregate`: the sum of a row's values in 2 (level 1) or 3 (level 2) named columns,
  their mean over 3-4 columns at level 3. Plan: `ocr` -> `calculator` -> answer.
- `argmax`: which row has the highest / lowest value of a column. Level 1: `ocr` -> the
  label; level 2: `ocr` -> `calculator("max(41, 23, 17)")` -> the row holding that value;
  level 3: another column of that row ("What is the Art of the Name with the highest
  Math?").
- `compare`: level 1 which of two rows has more of a column (`ocr` -> a label) or by how
  much (`ocr` -> `calculator("a - b")`); level 2 the difference of two cells in different
  rows and columns; level 3 by how much one column's total exceeds another's
  (`calculator("(a + b + c) - (d + e + f)")`).

Sizes: level 1 three rows and two number columns (values 1-99), level 2 four or five rows
and three number columns (values 10-999), an optional word column; level 3 six or seven
rows, three or four number columns and a word column. Values in a column are distinct, so
every largest / smallest is unique.

The expert reads the whole table with one `ocr` call; `bindings` rebuild the table from the
returned lines and boxes (`parse_ocr_table`: lines grouped into rows by their vertical
centres, the top row is the header, each other line goes to the header cell whose centre
is nearest), so every answer comes from what OCR read, never from the generator.

The vocabulary is what the `ocr` tool reads exactly: every word below, at every font size
and style of `render_table`, was read back in a sweep of 135 tables (4,275 cells); words it
misread were dropped ("Ivan" as "lvan"; "Corner", misread once in that sweep, and "Bern",
for the same r-n pair that PP-OCR can take for m). Numbers are integers 1-999, which read
exactly at every size.

Measured with the real tools (`python -m vista_jax.env.tasks.table_reading 150 [split]`):
the expert verifies on 450 of 450 tasks of train and of val, every type at every level.
OCR takes 0.5-3 s a table on a busy 2-core machine, so a batch of many OCR calls can
outlast the tool service's default 10 s per-call deadline: play experts in small batches
or with a longer `ServerConfig.call_timeout_s`.
"""

from __future__ import annotations

import dataclasses
import random
import statistics
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from vista_jax.env.tasks.base import (PlanStep, Task, check_difficulty, draw_difficulty,
                                      pick_question_type, register_family)
from vista_jax.env.tasks.render_table import FONT_SIZES, HEADER_FILLS, STYLES, render_table

QUESTION_TYPES = ("lookup", "column_aggregate", "row_aggregate", "argmax", "compare")
REPEATING_TOLERANCE = 1e-6  # relative, for means that are no terminating decimal


@dataclasses.dataclass(frozen=True)
class Theme:
    label: str  # header of the first column, e.g. "Name"
    labels: tuple[str, ...]  # row labels
    columns: tuple[str, ...]  # number columns
    word_column: str  # header of the word column
    words: tuple[str, ...]  # its values
    row_noun: str  # "student", "city", ...


PEOPLE = ("Anna", "Ben", "Carmen", "Dave", "Emma", "Frank", "Grace", "Hugo", "Jack", "Kate",
          "Maria", "Nora", "Oscar", "Paul", "Rosa", "Sam", "Tara", "Victor", "Wendy", "Zack",
          "Bella", "Chris", "Diego", "Felix", "Gina", "Henry", "Julia", "Mark", "Nina",
          "Omar", "Peter", "Quinn", "Ruth", "Simon", "Tom", "Uma", "Vera", "Yara")
THEMES = (
    Theme("Name", PEOPLE, ("Math", "Art", "Music", "Science", "History", "Reading"),
          "Club", ("Chess", "Drama", "Choir", "Robots", "Tennis", "Dance", "Film"), "student"),
    Theme("City", ("Paris", "Rome", "Berlin", "Madrid", "Vienna", "Prague", "Oslo", "Dublin",
                   "Athens", "Warsaw", "Lisbon", "Zurich", "Munich", "Tokyo", "Seoul", "Cairo",
                   "Quito", "Denver", "Austin", "Boston", "Dallas", "Sydney", "Delhi", "Riga",
                   "Turin", "Lyon", "Porto"),
          ("Rain", "Sun", "Wind", "Snow", "Fog", "Storms"), "Region",
          ("North", "South", "East", "West", "Coast", "Inland"), "city"),
    Theme("Store", ("Alpha", "Beta", "Gamma", "Delta", "Sigma", "Kappa", "Omega", "Zeta",
                    "Theta", "Nova", "Orbit", "Summit", "Harbor", "Market"),
          ("Apples", "Pears", "Plums", "Figs", "Limes", "Kiwis", "Grapes", "Melons"),
          "Manager", PEOPLE, "store"),
    Theme("Team", ("Lions", "Tigers", "Bears", "Hawks", "Wolves", "Eagles", "Sharks", "Foxes",
                   "Bulls", "Jets", "Kings", "Owls", "Rams", "Suns"),
          ("Wins", "Losses", "Draws", "Goals", "Points", "Games"), "Coach", PEOPLE, "team"),
)

# level -> (rows, number columns, value range, word column probability)
LEVELS = {1: ((3, 3), (2, 2), (1, 99), 0.0), 2: ((4, 5), (3, 3), (10, 999), 0.5),
          3: ((6, 7), (3, 4), (10, 999), 1.0)}

THINK_OCR = ("Read the table.", "OCR the whole table.", "Read every cell first.",
             "Read the table's text.")


@dataclasses.dataclass
class _Table:
    theme: Theme
    header: list[str]
    labels: list[str]
    numbers: list[str]  # number columns, in header order
    word: str | None  # the word column, if any
    cells: dict[str, dict[str, str]]  # label -> column -> text

    def value(self, label: str, column: str) -> int:
        return int(self.cells[label][column])

    def column(self, column: str) -> list[int]:
        return [self.value(r, column) for r in self.labels]


def _make_table(rng: random.Random, level: int) -> _Table:
    (r0, r1), (c0, c1), (lo, hi), p_word = LEVELS[level]
    theme = rng.choice(THEMES)
    labels = rng.sample(theme.labels, rng.randint(r0, r1))
    numbers = rng.sample(theme.columns, rng.randint(c0, c1))
    word = theme.word_column if rng.random() < p_word else None
    header = [theme.label, *numbers]
    if word is not None:
        header.insert(rng.randint(1, len(header)), word)
    cells: dict[str, dict[str, str]] = {label: {theme.label: label} for label in labels}
    for column in numbers:
        for label, v in zip(labels, rng.sample(range(lo, hi + 1), len(labels))):
            cells[label][column] = str(v)
    if word is not None:
        for label in labels:
            cells[label][word] = rng.choice([w for w in theme.words if w not in labels])
    return _Table(theme, header, labels, numbers, word, cells)


# --- numbers ---------------------------------------------------------------------------------

def format_value(x: float) -> str:
    """How the expert writes a number: integers bare, else 10 significant digits."""
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else f"{x:.10g}"


def _answer_of(q: Fraction) -> tuple[str, float]:
    """(gold text, tolerance) of an exact rational: exact for terminating decimals."""
    d = q.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d == 1:
        return format_value(float(q)), 0.0
    return format_value(float(q)), REPEATING_TOLERANCE


# --- reading OCR back into a table ----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ReadTable:
    """A table as OCR read it: the header and each body row's cells by header text."""

    header: tuple[str, ...]
    rows: tuple[dict[str, str], ...]  # column header -> cell text; the first column names a row

    def by_label(self) -> dict[str, dict[str, str]]:
        first = self.header[0]
        return {row[first]: row for row in self.rows if first in row}


def parse_ocr_table(lines: Sequence[Mapping[str, Any]]) -> ReadTable:
    """Rebuilds a table from OCR lines (`{"text", "box": [x0, y0, x1, y1]}`): lines whose
    vertical centres lie within half a line height of a row's first line form a row, the top
    row is the header, and every other line belongs to the header cell whose horizontal
    centre is nearest. ValueError when there is no header or two lines of a row fall under
    one column. Works for tables laid out as `render_table` draws them (centred cells)."""
    items = []
    for ln in lines:
        x0, y0, x1, y1 = ln["box"]
        items.append(((y0 + y1) / 2, (x0 + x1) / 2, y1 - y0, str(ln["text"]).strip()))
    if not items:
        raise ValueError("no text lines to read a table from")
    height = statistics.median(h for _, _, h, _ in items)
    rows: list[list[tuple[float, float, float, str]]] = []
    for item in sorted(items):
        if rows and item[0] - rows[-1][0][0] <= height / 2:
            rows[-1].append(item)
        else:
            rows.append([item])
    header_items = sorted(rows[0], key=lambda it: it[1])
    header = tuple(it[3] for it in header_items)
    if len(header) < 2 or len(set(header)) != len(header):
        raise ValueError(f"no header row of distinct column names: {list(header)}")
    centres = [it[1] for it in header_items]
    body = []
    for row in rows[1:]:
        cells: dict[str, str] = {}
        for _, xc, _, text in row:
            k = min(range(len(centres)), key=lambda i: abs(centres[i] - xc))
            if header[k] in cells:
                raise ValueError(f"two cells under column {header[k]!r}: "
                                 f"{cells[header[k]]!r} and {text!r}")
            cells[header[k]] = text
        body.append(cells)
    return ReadTable(header, tuple(body))


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


# --- question builders -----------------------------------------------------------------------

@dataclasses.dataclass
class _Spec:
    question: str
    answer: str
    answer_type: str
    tolerance: float
    plan: list[PlanStep]
    answer_template: str
    final_think: str
    meta: dict[str, Any]


def _ocr_step(rng: random.Random) -> PlanStep:
    return PlanStep("ocr", {"image": "img_0"}, rng.choice(THINK_OCR), key_args=("image",))


def _calc_step(expression: str, think: str) -> PlanStep:
    return PlanStep("calculator", {"expression": expression}, think, key_args=("expression",))


def _lookup(rng: random.Random, t: _Table, level: int) -> _Spec:
    noun = t.theme.label
    if level == 3 and rng.random() < 0.5:
        # the other way round: which row holds a given value
        column = rng.choice(t.numbers)
        row = rng.choice(t.labels)
        value = t.cells[row][column]
        question = rng.choice((f"Which {noun} has a {column} of {value}?",
                               f"Which {t.theme.row_noun} has {column} equal to {value}?",
                               f"Find the {noun} whose {column} is {value}."))
        return _Spec(question, row, "text", 0.0, [_ocr_step(rng)], "{found}",
                     rng.choice((f"{column} {value} is in the row of {{found}}.",
                                 "That row is {found}.")),
                     {"column": column, "value": value})
    row = rng.choice(t.labels)
    column = t.word if (t.word is not None and level == 3) else rng.choice(t.numbers)
    gold = t.cells[row][column]
    question = rng.choice((f"What {column} value does {row} have?", f"What is {row}'s {column}?",
                           f"In the table, what {column} does {row} have?",
                           f"Find the {column} value for {row}."))
    return _Spec(question, gold, "number" if column in t.numbers else "text", 0.0,
                 [_ocr_step(rng)], f"{{v[{row}][{column}]}}",
                 rng.choice((f"{row}'s {column} is {{v[{row}][{column}]}}.",
                             f"The cell reads {{v[{row}][{column}]}}.",
                             f"Row {row}, column {column}: {{v[{row}][{column}]}}.")),
                 {"row": row, "column": column})


def _column_aggregate(rng: random.Random, t: _Table, level: int) -> _Spec:
    column = rng.choice(t.numbers)
    values = t.column(column)
    kind = "sum" if level == 1 else rng.choice(("mean", "sum") if level == 2 else ("mean", "range"))
    if kind == "sum":
        gold, tol = str(sum(values)), 0.0
        question = rng.choice((f"What is the total {column} of all rows?",
                               f"What is the sum of the {column} column?",
                               f"Add up the {column} column. What is the total?"))
        expr, think = f"{{col_sum[{column}]}}", rng.choice((f"Add the {column} column.",
                                                            f"Sum every {column} value."))
    elif kind == "mean":
        gold, tol = _answer_of(Fraction(sum(values), len(values)))
        question = rng.choice((f"What is the average {column}?",
                               f"What is the mean of the {column} column?",
                               f"Average the {column} values. What do you get?"))
        expr = f"({{col_sum[{column}]}}) / {{n_rows}}"
        think = rng.choice((f"Sum {column} and divide by the row count.",
                            f"Mean of the {column} column."))
    else:
        gold, tol = str(max(values) - min(values)), 0.0
        question = rng.choice((f"What is the range of the {column} column (largest minus "
                               "smallest)?",
                               f"How far apart are the largest and smallest {column} values?",
                               f"What is the difference between the highest and lowest "
                               f"{column}?"))
        expr = f"max({{col_list[{column}]}}) - min({{col_list[{column}]}})"
        think = rng.choice(("Largest minus smallest.", f"Take max minus min of {column}."))
    return _Spec(question, gold, "number", tol, [_ocr_step(rng), _calc_step(expr, think)],
                 "{calc}", rng.choice((f"The {kind} is {{calc}}.", "That gives {calc}.",
                                       "The result is {calc}.")),
                 {"column": column, "kind": kind})


def _row_aggregate(rng: random.Random, t: _Table, level: int) -> _Spec:
    row = rng.choice(t.labels)
    k = level + 1 if level < 3 else rng.randint(3, len(t.numbers))
    columns = rng.sample(t.numbers, k)
    values = [t.value(row, c) for c in columns]
    named = ", ".join(columns[:-1]) + " and " + columns[-1]
    terms = " + ".join(f"{{v[{row}][{c}]}}" for c in columns)
    if level < 3:
        gold, tol = str(sum(values)), 0.0
        question = rng.choice((f"What is the sum of {row}'s {named}?",
                               f"What do {row}'s {named} add up to?",
                               f"What is {row}'s total of {named}?"))
        expr, kind = terms, "sum"
        think = rng.choice((f"Add {row}'s {k} values.", f"Sum the {row} row's cells."))
    else:
        gold, tol = _answer_of(Fraction(sum(values), k))
        question = rng.choice((f"What is the average of {row}'s {named}?",
                               f"What is the mean of {row}'s {named}?"))
        expr, kind = f"({terms}) / {k}", "mean"
        think = rng.choice((f"Average {row}'s {k} values.", f"Mean of the {row} row's cells."))
    return _Spec(question, gold, "number", tol, [_ocr_step(rng), _calc_step(expr, think)],
                 "{calc}", rng.choice((f"The {kind} is {{calc}}.", f"{row}: {{calc}}.",
                                       "That gives {calc}.")),
                 {"row": row, "asked_columns": columns, "kind": kind})


def _argmax(rng: random.Random, t: _Table, level: int) -> _Spec:
    column = rng.choice(t.numbers)
    pick = rng.choice(("max", "min"))
    values = t.column(column)
    best = t.labels[values.index(max(values) if pick == "max" else min(values))]
    word = rng.choice(("highest", "largest", "most") if pick == "max"
                      else ("lowest", "smallest", "least"))
    noun = t.theme.label
    meta = {"column": column, "pick": pick}
    if level == 1:
        question = rng.choice((f"Which {noun} has the {word} {column}?",
                               f"Which {t.theme.row_noun} has the {word} {column} value?"))
        return _Spec(question, best, "text", 0.0, [_ocr_step(rng)], f"{{{pick}_row[{column}]}}",
                     rng.choice((f"{{{pick}_row[{column}]}} has the {word} {column}.",
                                 f"The {word} {column} is {{{pick}_row[{column}]}}'s.")), meta)
    plan = [_ocr_step(rng), _calc_step(f"{pick}({{col_list[{column}]}})",
                                       rng.choice((f"Find the {word} {column}.",
                                                   f"Take the {pick} of {column}.")))]
    if level == 2:
        question = rng.choice((f"Which {noun} has the {word} {column}?",
                               f"Which {t.theme.row_noun} has the {word} {column} value?"))
        return _Spec(question, best, "text", 0.0, plan, "{hit}",
                     rng.choice((f"{column} {{calc}} belongs to {{hit}}.",
                                 "{hit} has {calc}.")), meta)
    other = rng.choice([c for c in t.header[1:] if c != column])
    gold = t.cells[best][other]
    question = rng.choice((f"What is the {other} of the {noun} with the {word} {column}?",
                           f"The {t.theme.row_noun} with the {word} {column}: what is its "
                           f"{other}?"))
    meta["other"] = other
    return _Spec(question, gold, "number" if other in t.numbers else "text", 0.0, plan,
                 f"{{hit_row[{other}]}}",
                 rng.choice((f"{{hit}} has {column} {{calc}}; its {other} is {{hit_row[{other}]}}.",
                             f"{{hit}}'s {other} is {{hit_row[{other}]}}.")), meta)


def _compare(rng: random.Random, t: _Table, level: int) -> _Spec:
    if level == 3:
        c1, c2 = rng.sample(t.numbers, 2)
        if sum(t.column(c1)) < sum(t.column(c2)):
            c1, c2 = c2, c1
        gold = str(sum(t.column(c1)) - sum(t.column(c2)))
        question = rng.choice((f"By how much does the total {c1} exceed the total {c2}?",
                               f"How much larger is the sum of {c1} than the sum of {c2}?"))
        expr = f"({{col_sum[{c1}]}}) - ({{col_sum[{c2}]}})"
        think = rng.choice((f"Total {c1} minus total {c2}.", "Subtract the column totals."))
        return _Spec(question, gold, "number", 0.0, [_ocr_step(rng), _calc_step(expr, think)],
                     "{calc}",
                     rng.choice(("The difference is {calc}.", "It exceeds it by {calc}.")),
                     {"asked_columns": [c1, c2]})
    r1, r2 = rng.sample(t.labels, 2)
    c1 = rng.choice(t.numbers)
    c2 = c1 if level == 1 else rng.choice([c for c in t.numbers if c != c1])
    if t.value(r1, c1) < t.value(r2, c2):
        r1, r2, c1, c2 = r2, r1, c2, c1
    meta = {"asked_rows": [r1, r2], "asked_columns": [c1, c2]}
    if level == 1 and rng.random() < 0.5:
        a, b = (r1, r2) if rng.random() < 0.5 else (r2, r1)
        question = rng.choice((f"Who has more {c1}, {a} or {b}?",
                               f"Which is larger: {a}'s {c1} or {b}'s {c1}? Answer with the "
                               f"{t.theme.label}."))
        meta["asked_rows"] = [a, b]
        return _Spec(question, r1, "text", 0.0, [_ocr_step(rng)], "{more}",
                     rng.choice((f"{a} {{v[{a}][{c1}]}}, {b} {{v[{b}][{c1}]}}.",
                                 "{more} has more.")), meta)
    gold = str(t.value(r1, c1) - t.value(r2, c2))
    if c1 == c2:
        question = rng.choice((f"How much greater is {r1}'s {c1} than {r2}'s?",
                               f"By how much does {r1}'s {c1} exceed {r2}'s {c1}?"))
    else:
        question = rng.choice((f"How much greater is {r1}'s {c1} than {r2}'s {c2}?",
                               f"By how much does {r1}'s {c1} exceed {r2}'s {c2}?"))
    expr = f"{{v[{r1}][{c1}]}} - {{v[{r2}][{c2}]}}"
    return _Spec(question, gold, "number", 0.0,
                 [_ocr_step(rng), _calc_step(expr, rng.choice(("Subtract the two cells.",
                                                               "Take the difference.")))],
                 "{calc}", rng.choice(("The difference is {calc}.", "It is {calc} more.")), meta)


_BUILDERS = {"lookup": _lookup, "column_aggregate": _column_aggregate,
             "row_aggregate": _row_aggregate, "argmax": _argmax, "compare": _compare}


class TableReadingFamily:
    """Table reading questions (see the module docstring)."""

    name = "table_reading"
    gym_name = "TableReading"
    tools = ("ocr", "calculator")

    def generate(self, seed: int, split: str, difficulty: int | None = None,
                 question_type: str | None = None) -> Task:
        """The task for `seed`; `question_type` (one of QUESTION_TYPES) fixes the type
        instead of drawing it from the seed (for tests and balanced sampling)."""
        check_difficulty(difficulty)
        level = difficulty if difficulty is not None else draw_difficulty(seed)
        rng = random.Random(f"table_reading/{seed}")
        qtype = pick_question_type(rng, QUESTION_TYPES, question_type)
        table = _make_table(rng, level)
        spec = _BUILDERS[qtype](rng, table, level)
        rows = [[table.cells[label][c] for c in table.header] for label in table.labels]
        font_size, style = rng.choice(FONT_SIZES), rng.choice(STYLES)
        image, _ = render_table(table.header, rows, font_size=font_size, style=style,
                                     header_fill=rng.choice(HEADER_FILLS))
        return Task(
            task_id=f"{self.name}/{split}/{seed}", family=self.name, seed=seed, split=split,
            question=spec.question, images=(image,), answer=spec.answer,
            answer_type=spec.answer_type, tolerance=spec.tolerance,
            reference_plan=tuple(spec.plan), answer_template=spec.answer_template,
            final_think=spec.final_think, difficulty=level,
            meta={"question_type": qtype, "header": table.header, "rows": rows,
                  "font_size": font_size, "style": style, **spec.meta})

    def bindings(self, task: Task, results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """From the `ocr` result (the first step): `v` {row label: {column: text}}, `n_rows`,
        per number column `col_list` ("41, 23, 17"), `col_sum` ("41 + 23 + 17"), `max_row` /
        `min_row` (the label of its largest / smallest value); for the question's cells (its
        meta), `found` (the row holding the asked value) and `more` (which of the two asked
        rows has more); from a `calculator` result: `calc`, and `hit` / `hit_row` (the row
        whose value in the asked column equals it, and that row's cells)."""
        out: dict[str, Any] = {}
        if not results or not results[0].get("ok"):
            return out
        try:
            table = parse_ocr_table((results[0].get("data") or {}).get("lines", []))
        except ValueError:
            return out  # unreadable as a table: the plan stops at its first missing binding
        v = table.by_label()
        labels = list(v)
        out["v"], out["n_rows"] = v, str(len(labels))
        columns = [c for c in table.header[1:]
                   if labels and all(_number(v[r].get(c, "")) is not None for r in labels)]
        out["col_list"] = {c: ", ".join(v[r][c] for r in labels) for c in columns}
        out["col_sum"] = {c: " + ".join(v[r][c] for r in labels) for c in columns}
        out["max_row"] = {c: max(labels, key=lambda r: _number(v[r][c])) for c in columns}
        out["min_row"] = {c: min(labels, key=lambda r: _number(v[r][c])) for c in columns}
        meta = task.meta
        if "value" in meta:  # which row holds meta["value"] in meta["column"]
            found = [r for r in labels if v[r].get(meta["column"]) == meta["value"]]
            if len(found) == 1:
                out["found"] = found[0]
        if meta.get("question_type") == "compare" and "asked_rows" in meta:
            (a, b), c = meta["asked_rows"], meta["asked_columns"][0]
            if a in v and b in v and c in columns:
                out["more"] = a if _number(v[a][c]) > _number(v[b][c]) else b
        if len(results) > 1 and results[1].get("ok"):
            value = (results[1].get("data") or {}).get("value")
            if value is not None:
                out["calc"] = format_value(value)
                column = task.meta.get("column")
                if task.meta.get("question_type") == "argmax" and column in columns:
                    hits = [r for r in labels if _number(v[r][column]) == float(value)]
                    if len(hits) == 1:
                        out["hit"], out["hit_row"] = hits[0], v[hits[0]]
        return out


TABLE_READING = register_family(TableReadingFamily())


if __name__ == "__main__":  # python -m vista_jax.env.tasks.table_reading [per level] [split]
    import sys

    from vista_jax.env.tasks.geometry import print_pass_rates

    print_pass_rates("table_reading", int(sys.argv[1]) if len(sys.argv) > 1 else 100,
                     sys.argv[2] if len(sys.argv) > 2 else "train")
