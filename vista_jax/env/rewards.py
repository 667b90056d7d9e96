"""Answer verifiers and the episode reward R_correct + R_format + R_rep.

The reward is sparse and terminal: the env gives it on the step that ends the episode and 0
on every other step. `total = correct_weight * correct + format + repetition`; the weights
live in `RewardConfig` (filled from `config.reward`). Keep the penalties small beside the
correctness weight (see LEARNING_NOTES: |p| ≤ 0.2). `reward_details` returns the same
numbers plus the rule behind each one, for logs; `verify_details` does so for one answer.

R_correct ∈ {0, 1}: the final answer verifies against the task (`verify`), by answer type.
Every type first unwraps `\\boxed{…}` (the last one) and a leading answer phrase ("The
answer is", "Answer:", "Final answer =").

- number — relaxed accuracy as ChartQA reports it (Masry et al. 2022, §5.1, after Methani
  et al. 2020): a number is right when |pred − gold| ≤ tol·|gold|. The task's `tolerance`
  is tol (0 = exact up to 1e-9 relative float round-off); `verify(..., relaxed=True)` widens
  it to ChartQA's 5%. The reference code is pix2struct's `relaxed_correctness`
  (google-research/pix2struct, pix2struct/metrics.py, which evaluation harnesses copy; the
  ChartQA repository ships no scorer). Where we differ, on purpose:
    * pix2struct float()s the whole string; we read the one number a short answer states:
      "1,234" (thousands groups of 3 only), "-3.5", "−3.5", "+2", ".5", "1e3", "1.2×10^3",
      "3/4", mixed "2 1/2" (= 2.5), "\\frac{3}{4}", currency before it ("$4.50", "-$3",
      "€2") and anything after it ("12 cm", "45°", "12 %", "3 million" = 3: ChartQA's
      gold is the number as the chart prints it, so scale words are units, not factors).
      "The answer is 42." is 42, but text naming two different numbers ("between 40 and
      45", "2019: 42", "40-45", "3:45") or a digit we cannot place ("x2", "Q3 42") states
      no single number and never verifies. Without any digit, English number words are
      read: "twelve", "twenty-one", "one hundred and five", "minus three", "two thousand".
    * "12%" is 12 (the % is a unit, as in ChartQAPro's evaluate_predictions.py, which
      strips it), not pix2struct's 0.12. Both agree when both sides carry the % or neither
      does; pix2struct would also accept "12%" for a gold "0.12", which we do not.
    * gold 0: pix2struct falls back to exact string match ("0.0" ≠ "0"), ChartQAPro to
      pred == 0; we compare |pred| ≤ tol (the relative tolerance read as absolute), so
      "0.0" verifies and tolerance 0 stays exact.
    * years: pix2struct has no exception (2015 ± 5% spans two centuries); ChartQAPro
      matches years exactly where its data flags them. We follow pix2struct unless the
      task flags its answer as a year (`task.meta["answer_is_year"]`, set by dataset
      adapters), which makes the match exact even when relaxed.
    * NaN and ±inf (an overflowing "1e999") never verify; a gold answer that is not one
      finite number is a task bug and raises ValueError naming the task.
  A number answer must be a number: an unevaluated expression is not the result ("41 -
  23" is two numbers; "sqrt(2)", "2*pi", "x + 3" put math notation around one), so the
  policy cannot skip the calculator. Unit powers are units ("12 cm^2", "12 cm2").
- text — exact match after `normalize_text` (the SQuAD v1.1 evaluation's normalisation,
  Rajpurkar et al. 2016, adapted): Unicode NFKD with accents dropped, case folded,
  apostrophes and abbreviation dots deleted ("U.S." = "us", "don't" = "dont"), decimal
  points and thousands commas inside numbers kept as numbers ("3.5", "1,000" = "1000"), other
  punctuation to spaces, whitespace collapsed, and ONE leading article dropped ("the blue
  bar" = "blue bar"); unlike SQuAD, articles inside the text are kept and a capital "A"
  before a capitalised word is a label, not an article ("A B" ≠ "B"). When the gold is
  yes or no, "true"/"false" count as yes/no and the answer must hold exactly one polarity
  ("Yes, it is." verifies, "yes and no" does not). No containment: "Beta is the highest"
  is not "Beta" (containment would reward listing every label).
- choice — the gold is a letter of `task.choices`. Accepted: the letter ("B", "b", "(B)",
  "[B]", "B.", "B)", "Option B", "Choice (B)", "The answer is B."), the option's text
  (normalised as for text; a numeric option also by value: "15.0" is option "15"), or
  both ("B. Green", "(B) Green"), which must then name the same option. A letter past the
  last option never verifies, nor does a letter whose text names another option.
- expression — sympy equivalence, decided in a worker PROCESS under a timeout, because
  sympy can run for minutes ("9^9^9^9", simplify of a huge expression) inside C-level
  loops that no signal interrupts.
    1. Cheap path, in this process: identical after normalisation (LaTeX converted, spaces
       dropped, ** = ^), or both plain numeric literals compared numerically.
    2. The cache: an LRU of verdicts keyed by (answer, gold, tolerance), timeouts
       included, so a GRPO group of identical pathological answers costs one timeout.
    3. Parsing, in the worker: sympy's parser (`stringify_expr` with the standard
       transformations plus implicit multiplication/application and ^ as power, then
       `eval_expr`: the two steps of `parse_expr`), behind two safety layers — the text
       may hold only letters, digits, spaces and + - * / ^ ( ) . , = ! and no "__",
       "lambda", "import", "exec", "eval" or attribute access; the generated Python is
       checked node by node (arithmetic, numbers, whitelisted sympy names, plain calls of
       them; no attributes, subscripts, keywords, lambdas, strings except symbol names)
       and evaluated with empty builtins.
    4. Equivalence: a numeric probe at 6 random points in [0.5, 2.5] refutes a wrong
       answer at once; `simplify(a - b) == 0` (given half the budget, interrupted by
       SIGALRM in the worker) proves equality; when simplify is inconclusive but every
       probe agreed, the answer is accepted (numeric fallback; the probes are positive,
       so identities of the positive reals hold: log(xy) = log x + log y, |x| = x).
       Constants compare numerically with the task's tolerance (1e-9 when 0). An equation
       "x = 3" is compared by its other side with a gold "3" when one side is a lone
       symbol; two equations are equivalent when lhs − rhs of one is a nonzero constant
       multiple of the other's ("2y = 4x + 2" ~ "y = 2x + 1"). Tuples ("(1, 2)") compare
       item by item. "e" is Euler's number; "i" and "I" are plain symbols (our tasks are
       real).
    5. Simplest form, for tasks that ask for one (`task.meta["simplest_form"]`, set by
       math_word's "Simplify the expression" tasks): an equivalent answer that names some
       symbol more often, or writes more numeric literals, than the gold's expanded form
       is not simplified ("2x + 3x + 1" and "3(x + 4) - x" are refused for "5x + 1" and
       "2x + 12"; "1 + 5*x" passes). Checked on the text before the worker runs.
  LaTeX accepted: \\frac \\dfrac \\tfrac (\\frac12 too), \\sqrt{x}, \\sqrt[n]{x}, \\pi and
  the Greek letters, \\cdot \\times \\div, ^{...}, _{...}, \\left( \\right) and
  \\left| \\right| (Abs), \\sin \\ln ..., \\operatorname{} \\text{} \\mathrm{}, $ and \\( \\)
  delimiters; other commands (\\infty, \\int) are not verified.
  The pool (`ExpressionPool`) is small and persistent: `workers` processes started on first
  use, each a fresh interpreter (fork+exec: never a bare fork of the parent, which runs JAX
  threads) that imports this package and sympy, not the parent's __main__, with its address
  space limited to what the imports mapped plus `memory_limit_mb` (1 GiB): a runaway answer
  meets MemoryError, not the host's memory.
  A worker past the timeout is killed (SIGKILL) and a fresh one takes its slot on the next
  call, as does one found dead. A timeout, a crash, or an answer that does not parse is
  "not verified"; `expression_stats()` counts requests, timeouts, deaths and replacements.
  Configure with `configure_expression_verifier`; RewardConfig.expression_timeout_s (2 s)
  is the budget of each check made by the reward.

R_format ∈ {0, -format_penalty}: penalised once if any turn was invalid (E1: no action,
several actions, bad JSON, bad envelope, unclosed tag), any turn had text outside the
protocol tags (`ParsedTurn.well_formed` False), or the episode ended without an answer.

R_rep ∈ {0, -repetition_penalty}: penalised once if the same tool call (same name and same
arguments, in any key order) was made twice in the episode, or a turn's think or answer
text is degenerate: some run of `DEGENERATE_NGRAM` words occurs more than
`DEGENERATE_REPEATS` times in it.
"""

from __future__ import annotations

import ast
import atexit
import collections
import contextlib
import dataclasses
import functools
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import unicodedata
from collections.abc import Sequence
from typing import Any

from vista_jax.protocol import ParsedTurn

DEGENERATE_NGRAM = 4  # words per n-gram checked for degenerate repetition
DEGENERATE_REPEATS = 2  # an n-gram may occur this often in one turn's text; more is degenerate
RELAXED_TOLERANCE = 0.05  # ChartQA's relaxed accuracy: 5% relative error on numbers
EXACT_RTOL = 1e-9  # "exact" numbers still forgive float round-off of this relative size
MAX_EXPRESSION_CHARS = 1000  # longer expression answers are not parsed (not verified)
NUMERIC_PROBES = 6  # random points at which expressions are compared numerically


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    correct_weight: float = 1.0  # weight of R_correct (0/1)
    format_penalty: float = 0.1  # subtracted once for any malformed turn or no answer
    repetition_penalty: float = 0.1  # subtracted once for repeated tool calls or degenerate text
    expression_timeout_s: float = 2.0  # seconds sympy may spend verifying one expression answer

    def __post_init__(self):
        for name in ("correct_weight", "format_penalty", "repetition_penalty"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"RewardConfig.{name}={value!r}: must be a finite number ≥ 0 "
                                 "(penalties are subtracted)")
        t = self.expression_timeout_s
        if not (isinstance(t, (int, float)) and t > 0 and math.isfinite(t)):
            raise ValueError(f"RewardConfig.expression_timeout_s={t!r}: must be a positive number")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether an answer verified, the rule that decided (a stable code for counting:
    "number_match", "number_ambiguous", "choice_letter", "expression_timeout", ...), and a
    human-readable detail for logs."""

    ok: bool
    rule: str
    detail: str = ""

    def __bool__(self) -> bool:
        return self.ok


# --- answer text: phrases, boxes, normalisation -----------------------------------------

_ANSWER_PHRASE_RE = re.compile(
    r"^\s*(?:(?:so|thus|therefore|hence)\s*,?\s+)?(?:(?:the|my)\s+)?(?:final\s+|correct\s+)?"
    r"answer\b\s*(?:is\b\s*:?|:|=)?\s*(?=\S)", re.IGNORECASE)
_BOXED = "\\boxed{"


def _brace_group(text: str, start: int) -> tuple[str, int] | None:
    """The text inside the brace group opening at `text[start] == "{"`, and the index after
    its closing brace; None when it never closes."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
    return None


def strip_answer_phrase(text: str) -> str:
    """The answer proper: the content of the last `\\boxed{…}` if any, without a leading
    "The answer is" / "Answer:" phrase, stripped."""
    i = text.rfind(_BOXED)
    if i >= 0:
        group = _brace_group(text, i + len(_BOXED) - 1)
        if group is not None:
            text = group[0]
    return _ANSWER_PHRASE_RE.sub("", text, count=1).strip()


_ARTICLES = frozenset({"a", "an", "the"})


def normalize_text(text: str) -> str:
    """Case-, accent-, punctuation- and whitespace-insensitive form of `text`, one leading
    article dropped (see the module docstring for the exact rules)."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    words = text.split()
    if (len(words) > 1 and words[0].lower() in _ARTICLES
            and not (words[0] == "A" and words[1][:1].isupper())):
        words = words[1:]  # "the blue bar" -> "blue bar"; "A B" (two labels) stays
    text = " ".join(words).casefold()
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # thousands separators: 1,000 -> 1000
    text = re.sub(r"['\u2019`]", "", text)  # don't -> dont
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", "", text)  # U.S. -> us, "beta." -> beta; keeps 3.5
    text = re.sub(r"[^\w.\s]|_", " ", text)
    return " ".join(text.split())


_YES, _NO = frozenset({"yes", "true"}), frozenset({"no", "false"})


def _yes_no(words: Sequence[str]) -> str | None:
    """"yes" or "no" when the words hold exactly one polarity (true/false count)."""
    polarity = {"yes" for w in words if w in _YES} | {"no" for w in words if w in _NO}
    return polarity.pop() if len(polarity) == 1 else None


# --- numbers -------------------------------------------------------------------------------

_NUMBER_RE = re.compile(r"""
    (?<![\w.])(?<!\w[-+/])                     # not inside a word, a number, "x-3", "x/2"
    (?P<sign1>[-+])? (?:(?P<cur>[$€£¥])\s?)? (?P<sign2>[-+])?
    (?:
        (?P<whole>\d+)\s+(?P<mn>\d+)/(?P<md>\d+)            # mixed number 2 1/2
      | (?P<fn>\d+)/(?P<fd>\d+)                             # fraction 3/4
      | (?P<dec>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?\.?|\.\d+)
        (?:[eE](?P<exp>[-+]?\d+))?                          # 1,234.5  .5  1e3  42.
    )
    (?:\s*[x×*]\s*10\s*\^\s*\{?(?P<pow10>[-+]?\d+)\}?)?    # 1.2 × 10^3
    (?![\d/]|,\d|\.\d|[eE][-+]?\d)                         # no more number follows
    """, re.VERBOSE)

_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate(
    "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if w != "_"}
_SCALES = {"thousand": 10 ** 3, "million": 10 ** 6, "billion": 10 ** 9}
_NEGATORS = frozenset({"minus", "negative"})


def _clean_number_text(text: str) -> str:
    text = strip_answer_phrase(text)
    text = text.replace("\u2212", "-").replace("\u2013", "-").replace("\u00a0", " ")
    text = text.replace("\\%", "%").replace("\\$", "$").replace("{,}", ",").replace("\\,", "")
    text = re.sub(r"\\[dt]?frac\{\s*(\d+)\s*\}\{\s*(\d+)\s*\}", r"\1/\2", text)
    text = re.sub(r"\\(?:text|mathrm|mbox)\{([^{}]*)\}", r" \1", text)
    return text


def _number_value(m: re.Match) -> float:
    if m.group("whole") is not None:
        d = int(m.group("md"))
        value = int(m.group("whole")) + (int(m.group("mn")) / d if d else math.inf)
    elif m.group("fn") is not None:
        d = int(m.group("fd"))
        value = int(m.group("fn")) / d if d else math.nan
    else:
        try:
            value = float(m.group("dec").rstrip(".").replace(",", "") + (
                f"e{m.group('exp')}" if m.group("exp") else ""))
        except OverflowError:
            value = math.inf
    if m.group("pow10") is not None:
        try:
            value *= 10.0 ** int(m.group("pow10"))
        except OverflowError:
            value = math.inf
    if "-" in ((m.group("sign1") or "") + (m.group("sign2") or "")):
        value = -value
    return value


def _word_numbers(text: str) -> list[float]:
    """Values of the runs of English number words in `text` ("twelve", "twenty-one", "one
    hundred and five", "two thousand", "minus three"); "five six" is two runs."""
    values: list[float] = []
    total = current = 0
    last = None  # kind of the previous number word in the run; None outside a run
    negative = False

    def flush():
        nonlocal total, current, last, negative
        if last is not None:
            values.append(float(-(total + current) if negative else total + current))
        total = current = 0
        last, negative = None, False

    previous = None
    for word in re.findall(r"[a-z]+", text.lower()):
        previous, word = word, ("" if (previous, word) == ("no", "one") else word)
        if word in _UNITS or word in _TENS:
            value = _UNITS.get(word, _TENS.get(word))
            joins = (last in ("hundred", "scale")
                     or (last == "tens" and word in _UNITS and 1 <= value <= 9))
            if last is not None and not joins:
                flush()
            current += value
            last = "tens" if word in _TENS else "unit"
        elif word == "hundred" and last in ("unit", "tens") and 0 < current < 100:
            current *= 100
            last = "hundred"
        elif word in _SCALES and last in ("unit", "tens", "hundred") and current > 0:
            total += current * _SCALES[word]
            current = 0
            last = "scale"
        elif word == "and" and last in ("hundred", "scale"):
            continue
        elif word in _NEGATORS:
            flush()
            negative = True
        else:
            flush()
    flush()
    return values


# Math notation left outside the numbers makes a "number" an expression ("sqrt(2)", "2*pi",
# "x + 3"), which a number answer must not be.
_MATH_NOTATION_RE = re.compile(
    r"[*^\u221a\u221b\u03c0+]|(?:^|\s)-(?:\s|$)|\\(?:sqrt|pi|frac)|[A-Za-z]\("
    r"|\b(?:sqrt|cbrt|log|ln|exp|sin|cos|tan|pi)\b")
# "cm^2", "m3", "ft^{2}": a unit's power, not a second number.
_UNIT_POWER_RE = re.compile(
    r"\b(mm|cm|dm|km|m|in|ft|yd|units?)\s*(?:\^\s*\{?[23]\}?|[23])(?![\d.])")


def find_numbers(text: str) -> tuple[list[float], str | None]:
    """All numbers the answer text states (see `parse_number`), and why it is not a plain
    number statement, if it is not: "stray digit" (a digit outside every number: "x2",
    "40-45") or "math notation" ("sqrt(2)", "2*pi", "x + 3")."""
    text = _UNIT_POWER_RE.sub(r"\1", _clean_number_text(text))
    matches = list(_NUMBER_RE.finditer(text))
    rest = _NUMBER_RE.sub(" ", text)
    if re.search(r"\d", rest):
        return [_number_value(m) for m in matches], "stray digit"
    if matches and _MATH_NOTATION_RE.search(rest):
        return [_number_value(m) for m in matches], "math notation"
    if not matches:
        return _word_numbers(text), None
    return [_number_value(m) for m in matches], None


def _single_number(text: str) -> tuple[float | None, str, str]:
    """(value, rule, why): the one number `text` states, or None with the rule that failed."""
    values, problem = find_numbers(text)
    if not values:
        return None, "number_missing", "no number"
    if problem == "math notation":
        return None, "number_not_literal", "math notation around the number: an expression"
    distinct = {"nan" if math.isnan(v) else v for v in values}
    if problem or len(distinct) > 1:
        return None, "number_ambiguous", problem or f"{len(distinct)} different numbers"
    return values[0], "", ""


def parse_number(text: str) -> float | None:
    """The one number the answer text states ("18", "18.0 units", "1,200", "-3.5e2",
    "$4.50", "12%", "3/4", "2 1/2", "The answer is 42.", "twelve"); None when it states
    none, two different ones, has a digit outside any number, or wraps it in math notation
    ("sqrt(2)"). May be ±inf or NaN ("1e999", "1/0"), which never verify."""
    if not isinstance(text, str):
        raise TypeError(f"parse_number expects a str, got {type(text).__name__}")
    return _single_number(text)[0]


def numbers_match(pred: float, gold: float, tolerance: float) -> bool:
    """|pred - gold| ≤ tolerance·|gold| (tolerance 0: exact up to EXACT_RTOL); gold 0 reads
    the tolerance as absolute. NaN and inf never match."""
    if not (math.isfinite(pred) and math.isfinite(gold)):
        return False
    if gold == 0:
        return abs(pred) <= max(tolerance, EXACT_RTOL)
    return abs(pred - gold) <= max(tolerance, EXACT_RTOL) * abs(gold)


def _gold_number(task: Any) -> float:
    gold = parse_number(task.answer)
    if gold is None or not math.isfinite(gold):
        raise ValueError(f"task {getattr(task, 'task_id', '?')!r}: number answer "
                         f"{task.answer!r} is not one finite number")
    return gold


def _verify_number(pred: str, task: Any, relaxed: bool) -> Verdict:
    gold = _gold_number(task)
    got, rule, why = _single_number(pred)
    if got is None:
        return Verdict(False, rule, f"{why} in {pred[:80]!r}")
    if not math.isfinite(got):
        return Verdict(False, "number_nonfinite", f"{pred[:80]!r} is {got}")
    tol = max(task.tolerance, RELAXED_TOLERANCE) if relaxed else task.tolerance
    year = bool((getattr(task, "meta", None) or {}).get("answer_is_year"))
    if year:
        tol = 0.0
    ok = numbers_match(got, gold, tol)
    how = "year, exact" if year else ("exact" if tol == 0 else f"tolerance {tol:g}")
    return Verdict(ok, "number_match" if ok else "number_mismatch",
                   f"{got:g} vs gold {gold:g} ({how})")


# --- text ------------------------------------------------------------------------------------

def _verify_text(pred: str, task: Any) -> Verdict:
    got, gold = normalize_text(strip_answer_phrase(pred)), normalize_text(task.answer)
    if gold in ("yes", "no"):
        polarity = _yes_no(got.split())
        ok = polarity == gold
        return Verdict(ok, "yes_no_match" if ok else "yes_no_mismatch",
                       f"{polarity or 'no single yes/no'} vs gold {gold}")
    ok = got == gold
    return Verdict(ok, "text_match" if ok else "text_mismatch", f"{got[:80]!r} vs gold {gold!r}")


# --- multiple choice ------------------------------------------------------------------------

_LETTER_RE = re.compile(
    r"(?:(?:option|choice)\s*)?[(\[]?\s*([A-Za-z])\s*[)\]]?(?:(?:\s*[.:)\-]\s*|\s+)(.*))?",
    re.IGNORECASE | re.DOTALL)


def _choice_by_text(text: str, choices: Sequence[str]) -> set[int]:
    """Indices of the options whose normalised text equals `text`'s."""
    norm = normalize_text(text)
    return {i for i, c in enumerate(choices) if norm and normalize_text(c) == norm}


def _choice_by_value(text: str, choices: Sequence[str]) -> set[int]:
    """Indices of the numeric options whose value `text` states ("15.0" for "15 cm")."""
    value = parse_number(text) if re.search(r"\d", text) else None
    if value is None or not math.isfinite(value):
        return set()
    return {i for i, c in enumerate(choices)
            if (v := parse_number(c)) is not None and numbers_match(value, v, 0.0)}


def _verify_choice(pred: str, task: Any) -> Verdict:
    choices = tuple(task.choices or ())
    gold_letter = task.answer.strip().upper()
    gold = ord(gold_letter) - ord("A") if len(gold_letter) == 1 else -1
    if not (0 <= gold < len(choices)):
        raise ValueError(f"task {getattr(task, 'task_id', '?')!r}: choice answer "
                         f"{task.answer!r} is not a letter of its {len(choices)} choices")

    def named(indices: set[int], how: str) -> Verdict:
        ok = gold in indices
        letters = "/".join(chr(65 + i) for i in sorted(indices))
        return Verdict(ok, how if ok else "choice_mismatch",
                       f"{how.split('_')[1]} names option {letters}, gold {gold_letter}")

    text = strip_answer_phrase(pred).strip().rstrip(".").strip()
    by_text = _choice_by_text(text, choices)
    if by_text:  # first: an option's text may itself look like "A cat"
        return named(by_text, "choice_text")
    m = _LETTER_RE.fullmatch(text)
    if m is not None:
        letter = m.group(1).upper()
        index = ord(letter) - ord("A")
        if index >= len(choices):
            return Verdict(False, "choice_out_of_range",
                           f"letter {letter} but only {len(choices)} options")
        rest = (m.group(2) or "").strip().rstrip(".").strip()
        if rest and index not in (_choice_by_text(rest, choices)
                                  or _choice_by_value(rest, choices)):
            return Verdict(False, "choice_conflict",
                           f"letter {letter} with text {rest[:40]!r}, not option {letter}'s")
        return named({index}, "choice_letter")
    by_value = _choice_by_value(text, choices)
    if by_value:
        return named(by_value, "choice_value")
    return Verdict(False, "choice_unrecognised", f"{pred[:80]!r} names no option")


# --- expressions: LaTeX to plain math ------------------------------------------------------

class UnsafeExpression(ValueError):
    """An expression answer that could run code or is not plain math; never evaluated."""


_GREEK = ("alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa "
          "lambda mu nu xi omicron pi rho sigma tau upsilon phi varphi chi psi omega "
          "Gamma Delta Theta Lambda Xi Pi Sigma Phi Psi Omega").split()
_LATEX_FUNCS = ("arcsin arccos arctan sinh cosh tanh sin cos tan cot sec csc exp ln log "
                "max min").split()
_LATEX_DROP = ("\\displaystyle", "\\!", "\\,", "\\;", "\\:", "\\ ", "\\quad", "\\qquad",
               "$", "\\(", "\\)", "\\[", "\\]")


def _replace_command_groups(text: str, command: str, n_groups: int, fmt) -> str:
    """Replaces `\\command{a}{b}` (nested braces allowed) by fmt(a, b)."""
    out, i = [], 0
    while True:
        j = text.find(command, i)
        if j < 0:
            return "".join(out) + text[i:]
        k = j + len(command)
        if k < len(text) and text[k].isalpha():  # \frac inside \fracture: not this command
            out.append(text[i:k])
            i = k
            continue
        groups = []
        optional = None
        while k < len(text) and text[k] == " ":
            k += 1
        if command == "\\sqrt" and k < len(text) and text[k] == "[":
            end = text.find("]", k)
            if end < 0:
                raise ValueError("unclosed [ after \\sqrt")
            optional, k = text[k + 1:end], end + 1
        for _ in range(n_groups):
            while k < len(text) and text[k] == " ":
                k += 1
            if k < len(text) and text[k] == "{":
                group = _brace_group(text, k)
                if group is None:
                    raise ValueError(f"unclosed {{ after {command}")
                groups.append(group[0])
                k = group[1]
            elif k < len(text) and (text[k].isalnum()):  # \frac12, \sqrt2
                groups.append(text[k])
                k += 1
            else:
                raise ValueError(f"{command} needs {n_groups} argument(s)")
        out.append(text[i:j] + fmt(*groups, optional=optional))
        i = k


def latex_to_plain(text: str) -> str:
    """Plain sympy-parser math for simple LaTeX (see the module docstring for the forms);
    text without backslashes passes through, apart from $ and brace groups. Raises
    ValueError for LaTeX it does not know."""
    for token in _LATEX_DROP:
        text = text.replace(token, " ")
    text = re.sub(r"\\left\s*\|", " Abs(", text)
    text = re.sub(r"\\right\s*\|", ") ", text)
    text = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)\s*([()\[\].]|\\\{|\\\})",
                  lambda m: {"[": "(", "]": ")", ".": " ", "\\{": "(", "\\}": ")"}.get(
                      m.group(1), m.group(1)), text)
    text = re.sub(r"\\(?:text|mathrm|mathit|mathbf|operatorname|mbox)\s*\{([^{}]*)\}",
                  r" \1 ", text)
    for command in ("\\dfrac", "\\tfrac", "\\frac"):
        text = _replace_command_groups(text, command, 2, lambda a, b, optional: f"(({a})/({b}))")
    text = _replace_command_groups(
        text, "\\sqrt", 1,
        lambda a, optional: f"sqrt({a})" if optional is None else f"root(({a}),({optional}))")
    text = re.sub(r"\\(?:cdot|times|ast)(?![A-Za-z])", "*", text)
    text = re.sub(r"\\div(?![A-Za-z])", "/", text)
    text = re.sub(r"\\(" + "|".join(_LATEX_FUNCS) + r")(?![A-Za-z])", r" \1 ", text)
    text = re.sub(r"\\(" + "|".join(_GREEK) + r")(?![A-Za-z])",
                  lambda m: " lamda " if m.group(1).lower() == "lambda" else f" {m.group(1)} ",
                  text)
    if "\\" in text:
        bad = re.search(r"\\[A-Za-z]+|\\.", text)
        raise ValueError(f"unsupported LaTeX {bad.group() if bad else chr(92)!r}")
    text = re.sub(r"_\{([A-Za-z0-9]+)\}", r"_\1", text)  # x_{1} -> x_1, one symbol
    text = text.replace("{", "(").replace("}", ")")
    return " ".join(text.split())


_SYMBOL_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LITERAL_RE = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def unsimplified_form(pred_plain: str, gold_plain: str) -> str | None:
    """Why answer text `pred_plain` is not in the simplest form `gold_plain` is in (plain
    notation, LaTeX already converted), or None: it names a symbol more often, or writes
    more numeric literals, than the gold. Equivalence is checked elsewhere."""
    def counts(text: str):
        text = _expression_key(text)
        return collections.Counter(_SYMBOL_RE.findall(text)), len(_LITERAL_RE.findall(text))
    pred_symbols, pred_literals = counts(pred_plain)
    gold_symbols, gold_literals = counts(gold_plain)
    for name, n in sorted(pred_symbols.items()):
        if n > gold_symbols.get(name, 0) and name in gold_symbols:
            return f"{name!r} appears {n} times, {gold_symbols[name]} in the simplest form"
    if pred_literals > gold_literals:
        return f"{pred_literals} numbers written, {gold_literals} in the simplest form"
    return None


def _expression_key(text: str) -> str:
    """A normal form for the cheap identical-string check."""
    text = latex_to_plain(text)
    text = text.replace("**", "^").replace("×", "*").replace("·", "*").replace("−", "-")
    return re.sub(r"\s+", "", text)


_GROUPED_NUMBER_RE = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_PLAIN_LITERAL_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")

# --- expressions: safe parsing (runs in the worker; importable for tests) --------------------

_ALLOWED_CHARS_RE = re.compile(r"[A-Za-z0-9_\s+\-*/^().,=!]*")
_FORBIDDEN_RE = re.compile(r"__|lambda|import|exec|eval|[A-Za-z_)\]]\s*\.\s*[A-Za-z_]")
_SAFE_FUNCTIONS = ("sqrt root cbrt exp log ln sin cos tan cot sec csc asin acos atan arcsin "
                   "arccos arctan sinh cosh tanh Abs abs factorial binomial floor ceiling ceil "
                   "Max Min max min").split()
_CONSTRUCTORS = ("Integer", "Float", "Rational", "Symbol", "Function")
_SAFE_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Call, ast.Name, ast.Load,
               ast.Constant, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub, ast.UAdd)


def check_text_safe(text: str) -> None:
    """Raises UnsafeExpression unless `text` is plain math: letters, digits, spaces and
    + - * / ^ ( ) . , = !, no "__", "lambda", "import", "exec", "eval" or attribute access."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise UnsafeExpression(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    if not _ALLOWED_CHARS_RE.fullmatch(text):
        bad = sorted({c for c in text if not _ALLOWED_CHARS_RE.fullmatch(c)})
        raise UnsafeExpression(f"characters {''.join(bad)!r} are not math")
    m = _FORBIDDEN_RE.search(text)
    if m:
        raise UnsafeExpression(f"{m.group()!r} is not allowed in an expression")


def check_code_safe(code: str, names: set[str] | frozenset[str]) -> ast.Expression:
    """Parses the Python code sympy's parser generated and raises UnsafeExpression unless
    every node is arithmetic, a number, a whitelisted name, or a call of a whitelisted name
    with positional arguments (string literals only for Symbol/Integer/Float/...); a tuple
    only at the top. Returns the checked tree."""
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an expression: {exc.msg}") from None
    top = tree.body.elts if isinstance(tree.body, ast.Tuple) else [tree.body]
    stack: list[ast.AST] = list(top)
    while stack:
        node = stack.pop()
        if not isinstance(node, _SAFE_NODES):
            raise UnsafeExpression(f"{type(node).__name__} is not allowed in an expression")
        if isinstance(node, ast.Name) and node.id not in names:
            raise UnsafeExpression(f"name {node.id!r} is not allowed")
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float)) or isinstance(node.value, bool):
                raise UnsafeExpression(f"literal {node.value!r} is not a number")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.keywords:
                raise UnsafeExpression("only plain calls of math functions are allowed")
            if node.func.id in _CONSTRUCTORS:
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*|[0-9.eE+-]+", arg.value):
                            raise UnsafeExpression(f"literal {arg.value!r} is not a name")
                    else:
                        stack.append(arg)
                stack.append(node.func)
                continue
        stack.extend(ast.iter_child_nodes(node))
    return tree


_NAMESPACE: dict[str, Any] | None = None


def _namespace() -> dict[str, Any]:
    global _NAMESPACE
    if _NAMESPACE is None:
        import sympy
        ns: dict[str, Any] = {name: getattr(sympy, name) for name in _CONSTRUCTORS}
        aliases = {"ln": "log", "arcsin": "asin", "arccos": "acos", "arctan": "atan",
                   "abs": "Abs", "ceil": "ceiling", "max": "Max", "min": "Min"}
        for name in _SAFE_FUNCTIONS:
            ns[name] = getattr(sympy, aliases.get(name, name))
        ns.update(pi=sympy.pi, E=sympy.E, e=sympy.E)
        _NAMESPACE = ns
    return _NAMESPACE


def safe_parse(text: str):
    """A sympy expression (or tuple of them) for plain math `text`, parsed with sympy's
    parser (standard transformations, implicit multiplication/application, ^ as power)
    after both safety checks; evaluated with no builtins. Raises UnsafeExpression or
    ValueError. May take unbounded time ("9^9^9^9"): call it in a worker."""
    from sympy.parsing.sympy_parser import (convert_xor, eval_expr,
                                            implicit_multiplication_application,
                                            standard_transformations, stringify_expr)
    check_text_safe(text)
    if not text.strip():
        raise ValueError("empty expression")
    ns = _namespace()
    transformations = standard_transformations + (implicit_multiplication_application,
                                                  convert_xor)
    try:
        code = stringify_expr(text, {}, dict(ns), transformations)
    except Exception as exc:  # noqa: BLE001 - TokenError, SyntaxError, ...: not math
        raise ValueError(f"cannot tokenize: {type(exc).__name__}: {exc}") from None
    tree = check_code_safe(code, frozenset(ns))
    compiled = compile(tree, "<answer>", "eval")
    try:
        value = eval_expr(compiled, {}, {"__builtins__": {}, **ns})
    except Exception as exc:  # noqa: BLE001 - sympy raises many kinds on odd input
        raise ValueError(f"cannot evaluate: {type(exc).__name__}: {exc}") from None
    return value


# --- expressions: equivalence (runs in the worker) -----------------------------------------

class _SoftTimeout(BaseException):
    """simplify ran past its share of the budget (BaseException: sympy's `except Exception`
    blocks must not swallow it)."""


@contextlib.contextmanager
def _soft_time_limit(seconds: float | None):
    """Interrupts Python-level work after `seconds` with _SoftTimeout (SIGALRM; only in a
    process's main thread, else no limit). C-level loops (huge integer powers) are not
    interrupted: the pool's hard timeout covers those."""
    if (not seconds or threading.current_thread() is not threading.main_thread()
            or not hasattr(signal, "setitimer")):
        yield
        return

    def alarm(signum, frame):
        raise _SoftTimeout()

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _split_equation(text: str) -> list[str]:
    sides = re.split(r"==?", text)
    if len(sides) > 2:
        raise ValueError("more than one '='")
    return sides


@functools.lru_cache(maxsize=512)
def _parse_answer(text: str):
    """("eq", lhs, rhs) | ("tuple", items) | ("expr", e)."""
    import sympy
    sides = _split_equation(text)
    parsed = [safe_parse(s) for s in sides]
    for p in parsed:
        if isinstance(p, tuple):
            if len(sides) > 1 or not p or not all(isinstance(x, sympy.Basic) for x in p):
                raise ValueError("a tuple must be non-empty, stand alone and hold expressions")
        elif not isinstance(p, sympy.Basic):
            raise ValueError(f"not a math expression: {type(p).__name__}")
    if len(parsed) == 2:
        return ("eq", sympy.sympify(parsed[0]), sympy.sympify(parsed[1]))
    if isinstance(parsed[0], tuple):
        return ("tuple", tuple(sympy.sympify(x) for x in parsed[0]))
    return ("expr", sympy.sympify(parsed[0]))


def _probe_points(symbols, n: int) -> list[dict]:
    rng = random.Random(12345)  # fixed: the same answer always gets the same verdict
    return [{s: 0.5 + 2.0 * rng.random() for s in symbols} for _ in range(n)]


def _numeric(expr, point) -> complex | None:
    import sympy
    try:
        value = expr.evalf(30, subs=point) if point else expr.evalf(30)
        if not value.is_number:
            return None
        z = complex(value)
    except (TypeError, ValueError, ZeroDivisionError, AttributeError, OverflowError,
            sympy.SympifyError):
        return None
    return z if (math.isfinite(z.real) and math.isfinite(z.imag)) else None


def _fmt(z: complex) -> str:
    return f"{z.real:.6g}" if z.imag == 0 else f"{z:.6g}"


def _close(a: complex, b: complex, rtol: float) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b)) + 1e-12


def _simplifies_to(expr, soft_s: float | None) -> Any:
    """simplify(expr), or None when it ran out of its soft budget."""
    import sympy
    try:
        with _soft_time_limit(soft_s):
            return sympy.simplify(expr)
    except _SoftTimeout:
        return None


def _expr_equivalent(a, b, rtol: float, soft_s: float | None) -> tuple[bool, str, str]:
    """(equal, rule, detail) for two sympy expressions: a numeric probe refutes, simplify
    proves, agreement at every probe accepts when simplify is inconclusive."""
    if a == b:
        return True, "expression_identical", "same expression once parsed"
    symbols = sorted(a.free_symbols | b.free_symbols, key=lambda s: s.name)
    points = _probe_points(symbols, NUMERIC_PROBES if symbols else 1)
    agreeing = 0
    for point in points:
        va, vb = _numeric(a, point), _numeric(b, point)
        if va is None or vb is None:
            continue
        if not _close(va, vb, rtol):
            where = ", ".join(f"{s}={v:.3g}" for s, v in point.items())
            return False, "expression_mismatch", f"{_fmt(va)} vs {_fmt(vb)}" + (
                f" at {where}" if where else "")
        agreeing += 1
    if not symbols and agreeing:
        return True, "expression_numeric", f"both {_fmt(_numeric(a, {}))} (rtol {rtol:g})"
    difference = _simplifies_to(a - b, soft_s)
    if difference is not None and difference == 0:
        return True, "expression_symbolic", "simplify(pred - gold) == 0"
    if agreeing == len(points):
        inconclusive = "timed out" if difference is None else "did not reach 0"
        return True, "expression_numeric", (f"simplify {inconclusive}; equal at {agreeing} "
                                            "random points")
    return False, "expression_mismatch", "simplify(pred - gold) != 0 and no numeric evidence"


def _lone_symbol_side(lhs, rhs) -> Any:
    """The other side of an equation with a lone symbol on one side ("x = 3" -> 3)."""
    import sympy
    if isinstance(lhs, sympy.Symbol) and not isinstance(rhs, sympy.Symbol):
        return rhs
    if isinstance(rhs, sympy.Symbol) and not isinstance(lhs, sympy.Symbol):
        return lhs
    return None


def _equations_equivalent(p, g, rtol: float, soft_s: float | None) -> tuple[bool, str, str]:
    """Equations are equivalent when pred's lhs - rhs is a nonzero constant multiple of
    gold's ("2y = 4x + 2" ~ "y = 2x + 1")."""
    dp, dg = p[1] - p[2], g[1] - g[2]
    if dg == 0 or dp == 0:
        ok = dg == 0 and dp == 0
        return ok, "expression_symbolic" if ok else "expression_mismatch", "trivial equation"
    symbols = sorted(dp.free_symbols | dg.free_symbols, key=lambda s: s.name)
    ratios = []
    for point in _probe_points(symbols, NUMERIC_PROBES):
        vp, vg = _numeric(dp, point), _numeric(dg, point)
        if vp is None or vg is None or abs(vg) < 1e-12:
            continue
        ratios.append(vp / vg)
    if ratios and (abs(ratios[0]) < 1e-12 or not all(_close(r, ratios[0], rtol)
                                                    for r in ratios)):
        return False, "expression_mismatch", "lhs - rhs of the two are not proportional"
    ratio = _simplifies_to(dp / dg, soft_s)
    if ratio is not None and ratio.is_number and ratio != 0 and ratio.is_finite:
        return True, "expression_symbolic", f"equations proportional (factor {ratio})"
    if len(ratios) == NUMERIC_PROBES:
        return True, "expression_numeric", "lhs - rhs proportional at random points"
    return False, "expression_mismatch", "equations not proportional"


class _GoldError(Exception):
    pass


def expressions_equivalent(pred: str, gold: str, rtol: float = EXACT_RTOL,
                           soft_s: float | None = None) -> tuple[bool, str, str]:
    """(equal, rule, detail) for two plain-math texts; raises _GoldError when `gold` cannot
    be parsed and returns a not-equal verdict when `pred` cannot. `soft_s` bounds each
    simplify (then the numeric evidence decides). Unbounded time: call it in a worker."""
    try:
        g = _parse_answer(gold)
    except (ValueError, RecursionError) as exc:
        raise _GoldError(str(exc)) from None
    try:
        p = _parse_answer(pred)
    except UnsafeExpression as exc:
        return False, "expression_unsafe", str(exc)[:200]
    except (ValueError, RecursionError) as exc:
        return False, "expression_unparsed", str(exc)[:200]
    if p[0] == "tuple" or g[0] == "tuple":
        if p[0] != g[0] or len(p[1]) != len(g[1]):
            return False, "expression_mismatch", "tuple shapes differ"
        for i, (x, y) in enumerate(zip(p[1], g[1])):
            ok, rule, detail = _expr_equivalent(x, y, rtol, soft_s)
            if not ok:
                return False, rule, f"item {i + 1}: {detail}"
        return True, "expression_tuple", f"{len(g[1])} items equivalent"
    if p[0] == "eq" and g[0] == "eq":
        return _equations_equivalent(p, g, rtol, soft_s)
    if p[0] == "eq" or g[0] == "eq":
        eq, other = (p, g[1]) if p[0] == "eq" else (g, p[1])
        side = _lone_symbol_side(eq[1], eq[2])
        if side is None:
            return False, "expression_mismatch", "an equation against an expression"
        a, b = (side, other) if p[0] == "eq" else (other, side)
        return _expr_equivalent(a, b, rtol, soft_s)
    return _expr_equivalent(p[1], g[1], rtol, soft_s)


# --- expressions: the worker pool ---------------------------------------------------------

# The worker is a fresh interpreter (fork+exec, as multiprocessing's "spawn", safe beside the
# parent's JAX threads) that imports this package and sympy. multiprocessing's spawn/forkserver are
# not used because they re-run the parent's __main__ in the child: a script without an
# `if __name__ == "__main__"` guard fails, and `python -m vista_jax.cli` would import JAX
# into every worker.
_WORKER_CODE = ("import sys; from vista_jax.env.rewards import _worker_main; "
                "_worker_main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))")
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _worker_main(read_fd: int, write_fd: int, memory_limit_bytes: int) -> None:
    """A worker process: imports sympy, says ready, then answers JSON requests
    ["equiv", pred, gold, rtol, soft_s] with ["ok", [equal, rule, detail]] |
    ["gold_error", msg] | ["error", msg] until the parent closes the pipe."""
    from multiprocessing.connection import Connection
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    import sympy  # noqa: F401 - imported before "ready" so the timeout measures work only
    _namespace()
    if memory_limit_bytes > 0:  # the budget is for verifying, on top of what imports mapped
        _limit_address_space(memory_limit_bytes)
    outbox.send_bytes(json.dumps(["ready", os.getpid()]).encode())
    while True:
        try:
            request = json.loads(inbox.recv_bytes())
        except (EOFError, OSError):
            return
        try:
            op, *args = request
            if op != "equiv":
                raise ValueError(f"unknown request {op!r}")
            reply = ["ok", list(expressions_equivalent(*args))]
        except _GoldError as exc:
            reply = ["gold_error", str(exc)[:300]]
        except BaseException as exc:  # noqa: BLE001 - MemoryError, RecursionError, sympy bugs
            reply = ["error", f"{type(exc).__name__}: {exc}"[:300]]
        try:
            outbox.send_bytes(json.dumps(reply).encode())
        except (OSError, ValueError):
            return


def _limit_address_space(extra_bytes: int) -> None:
    """RLIMIT_AS = the address space mapped now + `extra_bytes` (no-op where unsupported:
    the timeout alone then bounds the worker)."""
    try:
        import resource
        mapped = 0
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    mapped = int(line.split()[1]) * 1024
        limit = mapped + extra_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, OSError, ValueError):
        pass


class ExpressionTimeout(Exception):
    """A worker did not answer within the timeout; it has been killed."""


class WorkerDied(Exception):
    """A worker exited while working on a request (killed, or crashed)."""


class _Worker:
    """One worker process and its two pipe ends."""

    def __init__(self, memory_limit_bytes: int):
        from multiprocessing.connection import Connection
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = "1"  # numpy comes in with the package: no thread pools in a worker
        env["PYTHONPATH"] = os.pathsep.join(
            [_PACKAGE_ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CODE, str(to_child_r), str(from_child_w),
                 str(memory_limit_bytes)],
                pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, env=env)
        except BaseException:
            for fd in (to_child_r, to_child_w, from_child_r, from_child_w):
                os.close(fd)
            raise
        os.close(to_child_r)
        os.close(from_child_w)
        self.outbox = Connection(to_child_w, readable=False)
        self.inbox = Connection(from_child_r, writable=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        try:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for conn in (self.outbox, self.inbox):
            try:
                conn.close()
            except OSError:
                pass


class ExpressionPool:
    """A small persistent pool of sympy worker processes, started on first use. Thread-safe:
    a caller takes an idle worker (or starts one, up to `workers`), sends one request and
    waits up to the timeout; a worker that overruns is killed and its slot refilled by a
    fresh process on a later call, as is one found dead."""

    def __init__(self, workers: int = 1, timeout_s: float = 2.0,
                 memory_limit_mb: int | None = 1024, start_timeout_s: float = 60.0):
        if not (isinstance(workers, int) and workers >= 1):
            raise ValueError(f"ExpressionPool workers={workers!r}: must be an int ≥ 1")
        if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
            raise ValueError(f"ExpressionPool timeout_s={timeout_s!r}: must be positive")
        if memory_limit_mb is not None and memory_limit_mb < 64:
            raise ValueError(f"ExpressionPool memory_limit_mb={memory_limit_mb!r}: must be ≥ 64 "
                             "or None for no limit")
        self.workers, self.timeout_s = workers, float(timeout_s)
        self.memory_limit_mb, self.start_timeout_s = memory_limit_mb, start_timeout_s
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._live = 0  # workers running or being started
        self._closed = False
        self.owner_pid = os.getpid()
        self.stats = collections.Counter(requests=0, timeouts=0, worker_deaths=0, errors=0,
                                         started=0, replaced=0)

    def _count(self, key: str) -> None:
        with self._cond:
            self.stats[key] += 1

    def _start_worker(self) -> _Worker:
        limit = 0 if self.memory_limit_mb is None else int(self.memory_limit_mb) << 20
        worker = _Worker(limit)
        try:
            if not worker.inbox.poll(self.start_timeout_s):
                raise RuntimeError(f"sympy verifier worker did not start within "
                                   f"{self.start_timeout_s:g} s")
            status, _ = json.loads(worker.inbox.recv_bytes())
            if status != "ready":
                raise RuntimeError(f"sympy verifier worker said {status!r} instead of ready")
        except (EOFError, OSError) as exc:
            worker.kill()
            raise RuntimeError(
                f"sympy verifier worker exited while starting (exit code "
                f"{worker.process.returncode}; its stderr says why): {exc!r}") from None
        except BaseException:
            worker.kill()
            raise
        with self._cond:
            self.stats["started"] += 1
            if self.stats["started"] > self.workers:
                self.stats["replaced"] += 1
        return worker

    def _acquire(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the expression pool is closed")
                if self._idle:
                    return self._idle.pop()
                if self._live < self.workers:
                    self._live += 1
                    break
                self._cond.wait()
        try:
            return self._start_worker()
        except BaseException:
            with self._cond:
                self._live -= 1
                self._cond.notify()
            raise

    def _release(self, worker: _Worker | None) -> None:
        with self._cond:
            if worker is not None and not self._closed:
                self._idle.append(worker)
            else:
                self._live -= 1
                if worker is not None:
                    worker.kill()
            self._cond.notify()

    def request(self, *message, timeout_s: float | None = None) -> list:
        """Sends one JSON request to a worker and returns its reply; raises ExpressionTimeout
        (the worker was killed) or WorkerDied."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        worker: _Worker | None = self._acquire()
        self._count("requests")
        try:
            if not worker.alive():  # died while idle (killed from outside, OOM killer)
                worker.kill()
                self._count("worker_deaths")
                worker = None
                worker = self._start_worker()
            try:
                worker.outbox.send_bytes(json.dumps(message).encode())
                if not worker.inbox.poll(timeout):
                    worker.kill()
                    self._count("timeouts")
                    worker = None
                    raise ExpressionTimeout(f"no verdict within {timeout:g} s; worker killed")
                return json.loads(worker.inbox.recv_bytes())
            except (EOFError, OSError):
                code = worker.process.poll()
                worker.kill()
                self._count("worker_deaths")
                worker = None
                raise WorkerDied(f"worker exited while verifying (exit code {code})") from None
        finally:
            self._release(worker)

    def pids(self) -> list[int]:
        """Process ids of the idle workers (for tests and diagnostics)."""
        with self._cond:
            return [w.pid for w in self._idle]

    def close(self) -> None:
        """Kills the idle workers; busy ones are killed when their request returns."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._live -= len(idle)
            self._cond.notify_all()
        for worker in idle:
            worker.kill()


_POOL: ExpressionPool | None = None
_POOL_LOCK = threading.Lock()
_POOL_SETTINGS: dict[str, Any] = dict(workers=1, timeout_s=2.0, memory_limit_mb=1024)


def expression_pool() -> ExpressionPool:
    """The process-wide pool (created, not started, on first use). A forked child (a data
    loader worker) gets a pool of its own: the inherited one's pipes are its parent's."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.owner_pid != os.getpid():
            _POOL = ExpressionPool(**_POOL_SETTINGS)
        return _POOL


def configure_expression_verifier(*, workers: int = 1, timeout_s: float = 2.0,
                                  memory_limit_mb: int | None = 1024,
                                  cache_size: int = 4096) -> None:
    """Replaces the process-wide pool (closing the old one), clears the verdict cache and
    the counters. `timeout_s` is the default budget per expression
    (RewardConfig.expression_timeout_s overrides it per call)."""
    global _POOL, _POOL_SETTINGS
    settings = dict(workers=workers, timeout_s=timeout_s, memory_limit_mb=memory_limit_mb)
    ExpressionPool(**settings)  # validates before anything is replaced
    if not (isinstance(cache_size, int) and cache_size >= 0):
        raise ValueError(f"cache_size={cache_size!r}: must be an int ≥ 0")
    with _POOL_LOCK:
        old, _POOL, _POOL_SETTINGS = _POOL, None, settings
    if old is not None and old.owner_pid == os.getpid():
        old.close()
    _CACHE.clear(cache_size)
    with _CHEAP_LOCK:
        for key in _CHEAP:
            _CHEAP[key] = 0


def _close_default_pool() -> None:
    with _POOL_LOCK:
        pool = _POOL
    if pool is not None and pool.owner_pid == os.getpid():
        pool.close()


atexit.register(_close_default_pool)


class _VerdictCache:
    def __init__(self, size: int = 4096):
        self._lock = threading.Lock()
        self._data: collections.OrderedDict = collections.OrderedDict()
        self.size = size

    def get(self, key) -> Verdict | None:
        with self._lock:
            verdict = self._data.get(key)
            if verdict is not None:
                self._data.move_to_end(key)
            return verdict

    def put(self, key, verdict: Verdict) -> None:
        with self._lock:
            self._data[key] = verdict
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self, size: int | None = None) -> None:
        with self._lock:
            self._data.clear()
            if size is not None:
                self.size = size


_CACHE = _VerdictCache()
_CHEAP = collections.Counter(identical=0, literal=0, cache_hits=0)
_CHEAP_LOCK = threading.Lock()


def expression_stats() -> dict[str, int]:
    """Counters of expression verification since the pool was configured: requests to the
    workers, timeouts, worker_deaths, errors, workers started/replaced, and the cheap
    paths (identical strings, numeric literals, cache hits)."""
    with _POOL_LOCK:
        pool = _POOL
    stats = dict(pool.stats) if pool is not None else dict(
        requests=0, timeouts=0, worker_deaths=0, errors=0, started=0, replaced=0)
    with _CHEAP_LOCK:
        stats.update(_CHEAP)
    return stats


def _bump(key: str) -> None:
    with _CHEAP_LOCK:
        _CHEAP[key] += 1


def _verify_expression(pred: str, task: Any, timeout_s: float | None) -> Verdict:
    gold_text = strip_answer_phrase(task.answer)
    text = strip_answer_phrase(pred)
    rtol = task.tolerance if task.tolerance > 0 else EXACT_RTOL
    try:
        gold_plain = latex_to_plain(gold_text)
    except ValueError as exc:
        raise ValueError(f"task {getattr(task, 'task_id', '?')!r}: expression answer "
                         f"{task.answer!r}: {exc}") from None
    try:
        plain = latex_to_plain(text)
    except ValueError as exc:
        return Verdict(False, "expression_unparsed", str(exc))
    if not plain:
        return Verdict(False, "expression_unparsed", "empty answer")
    if _GROUPED_NUMBER_RE.fullmatch(plain):  # "1,000" is a number here, not a tuple
        plain = plain.replace(",", "")
    if (getattr(task, "meta", None) or {}).get("simplest_form"):
        why = unsimplified_form(plain, gold_plain)
        if why is not None:
            return Verdict(False, "expression_not_simplified", why)
    if _expression_key(plain) == _expression_key(gold_plain):
        _bump("identical")
        return Verdict(True, "expression_identical", "same text once normalised")
    if _PLAIN_LITERAL_RE.fullmatch(plain) and _PLAIN_LITERAL_RE.fullmatch(gold_plain):
        _bump("literal")
        a, b = float(plain), float(gold_plain)
        ok = numbers_match(a, b, rtol)
        return Verdict(ok, "expression_numeric" if ok else "expression_mismatch",
                       f"{a:g} vs gold {b:g}")
    try:
        check_text_safe(plain)
    except UnsafeExpression as exc:
        return Verdict(False, "expression_unsafe", str(exc))
    key = (plain, gold_plain, rtol)
    cached = _CACHE.get(key)
    if cached is not None:
        _bump("cache_hits")
        return cached
    pool = expression_pool()
    try:
        budget = pool.timeout_s if timeout_s is None else timeout_s
        status, payload = pool.request("equiv", plain, gold_plain, rtol, budget / 2,
                                       timeout_s=budget)
    except ExpressionTimeout as exc:
        verdict = Verdict(False, "expression_timeout", str(exc))
    except WorkerDied as exc:
        return Verdict(False, "expression_error", str(exc))  # not cached: may be external
    else:
        if status == "gold_error":
            raise ValueError(f"task {getattr(task, 'task_id', '?')!r}: expression answer "
                             f"{task.answer!r} cannot be parsed: {payload}")
        if status == "ok":
            ok, rule, detail = payload
            verdict = Verdict(bool(ok), rule, detail)
        else:
            pool._count("errors")
            verdict = Verdict(False, "expression_error", str(payload))
    _CACHE.put(key, verdict)
    return verdict


# --- verify --------------------------------------------------------------------------------

def verify_details(pred: str | None, task: Any, *, relaxed: bool = False,
                   timeout_s: float | None = None) -> Verdict:
    """The verdict on answer text `pred` for `task` (a `Task`) and the rule that decided it.
    `relaxed` widens number tolerance to ChartQA's 5%; `timeout_s` bounds an expression
    check (default: the pool's). Raises ValueError for a task whose gold answer is
    malformed or whose answer_type is unknown."""
    if pred is None:
        return Verdict(False, "no_answer", "the episode ended without an answer")
    if not isinstance(pred, str):
        raise TypeError(f"pred must be a str or None, got {type(pred).__name__}")
    kind = task.answer_type
    if kind == "number":
        return _verify_number(pred, task, relaxed)
    if kind == "text":
        return _verify_text(pred, task)
    if kind == "choice":
        return _verify_choice(pred, task)
    if kind == "expression":
        return _verify_expression(pred, task, timeout_s)
    raise ValueError(f"task {getattr(task, 'task_id', '?')!r}: unknown answer_type {kind!r}; "
                     "one of number|text|choice|expression")


def verify(pred: str | None, task: Any, *, relaxed: bool = False) -> bool:
    """Whether the answer text `pred` is right for `task`: numbers within the task's relative
    tolerance (`relaxed`: at least ChartQA's 5%), text after normalisation, a choice by
    letter and/or option text, an expression by sympy equivalence in a worker process with
    a timeout. See the module docstring for every rule."""
    return verify_details(pred, task, relaxed=relaxed).ok


# --- reward ------------------------------------------------------------------------------

def degenerate_ngram(text: str | None, n: int = DEGENERATE_NGRAM,
                     max_repeats: int = DEGENERATE_REPEATS) -> tuple[tuple[str, ...], int] | None:
    """The most repeated n-gram of words in `text` and its count, when it occurs more than
    `max_repeats` times; else None."""
    words = (text or "").split()
    grams = collections.Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return None
    gram, count = grams.most_common(1)[0]
    return (gram, count) if count > max_repeats else None


def is_degenerate(text: str | None, n: int = DEGENERATE_NGRAM,
                  max_repeats: int = DEGENERATE_REPEATS) -> bool:
    """Whether some n-gram of words occurs more than `max_repeats` times in `text`."""
    return degenerate_ngram(text, n, max_repeats) is not None


def _call_key(turn: ParsedTurn) -> str:
    call = turn.tool_call
    return json.dumps([call.name, call.arguments], sort_keys=True, default=str)


def repetition_violations(turns: Sequence[ParsedTurn]) -> list[str]:
    """Why R_rep applies, one line per finding (turns numbered from 1); empty when clean."""
    found, first = [], {}
    for i, turn in enumerate(turns, 1):
        if turn.kind == "tool_call":
            key = _call_key(turn)
            if key in first:
                found.append(f"turn {i} repeats the {turn.tool_call.name} call of "
                             f"turn {first[key]}")
            else:
                first[key] = i
    for i, turn in enumerate(turns, 1):
        for field in ("think", "answer"):
            hit = degenerate_ngram(getattr(turn, field))
            if hit is not None:
                found.append(f"turn {i} {field}: {' '.join(hit[0])!r} occurs {hit[1]} times")
    return found


def has_repetition(turns: Sequence[ParsedTurn]) -> bool:
    """A repeated identical tool call, or a degenerate turn (see module docstring)."""
    return bool(repetition_violations(turns))


def format_violations(turns: Sequence[ParsedTurn], *, answered: bool) -> list[str]:
    """Why R_format applies, one line per finding (turns numbered from 1); empty when clean."""
    found = []
    for i, turn in enumerate(turns, 1):
        if turn.kind == "invalid":
            found.append(f"turn {i} invalid ({turn.error})")
        elif not turn.well_formed:
            found.append(f"turn {i} has text outside the protocol tags")
    if _final_answer(turns, answered) is None:
        found.append("no answer: the episode was truncated" if not answered
                     else "no answer: the last turn is not an answer")
    return found


def _final_answer(turns: Sequence[ParsedTurn], answered: bool) -> str | None:
    final = turns[-1] if turns else None
    return final.answer if (answered and final is not None and final.kind == "answer") else None


@dataclasses.dataclass(frozen=True)
class RewardDetails:
    """The reward components, their total, and why each has its value."""

    correct: float
    format: float
    repetition: float
    total: float
    verdict: Verdict  # why `correct` is what it is
    format_violations: tuple[str, ...]  # empty when R_format is 0
    repetition_violations: tuple[str, ...]  # empty when R_rep is 0

    def components(self) -> dict[str, float]:
        """What `compute_reward` returns: correct, format, repetition, total."""
        return {"correct": self.correct, "format": self.format,
                "repetition": self.repetition, "total": self.total}

    def reasons(self) -> dict[str, str]:
        """One line per component for logs: the verifier rule, the format and repetition
        findings ("ok" when none)."""
        v = self.verdict
        return {"correct": f"{v.rule}: {v.detail}" if v.detail else v.rule,
                "format": "; ".join(self.format_violations) or "ok",
                "repetition": "; ".join(self.repetition_violations) or "ok"}


def reward_details(turns: Sequence[ParsedTurn], task: Any, *, answered: bool,
                   config: RewardConfig = RewardConfig()) -> RewardDetails:
    """The reward of a finished episode with the rule behind each component. `answered`
    says whether the episode ended at an answer (its last turn); truncated episodes pass
    False."""
    verdict = verify_details(_final_answer(turns, answered), task,
                             timeout_s=config.expression_timeout_s)
    correct = float(verdict.ok)
    bad_format = tuple(format_violations(turns, answered=answered))
    repeated = tuple(repetition_violations(turns))
    fmt = -config.format_penalty if bad_format else 0.0
    rep = -config.repetition_penalty if repeated else 0.0
    return RewardDetails(correct=correct, format=fmt, repetition=rep,
                         total=config.correct_weight * correct + fmt + rep, verdict=verdict,
                         format_violations=bad_format, repetition_violations=repeated)


def compute_reward(turns: Sequence[ParsedTurn], task: Any, *, answered: bool,
                   config: RewardConfig = RewardConfig()) -> dict[str, float]:
    """Reward components and their weighted `total` for a finished episode. `answered` says
    whether the episode ended at an answer (its last turn); truncated episodes pass False.
    `reward_details` gives the same numbers with their reasons."""
    return reward_details(turns, task, answered=answered, config=config).components()
