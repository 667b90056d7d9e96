"""Answer verifiers and the episode reward R_correct + R_format + R_rep.

The reward is sparse and terminal: the env gives it on the step that ends the episode and 0
on every other step. Its components:

- `correct` ∈ {0, 1}: the final answer verifies against the task (`verify`).
- `format` ∈ {0, -format_penalty}: penalised if any turn was invalid (E1), any turn had text
  outside the protocol tags (`ParsedTurn.well_formed` False), or the episode ended without
  an answer.
- `repetition` ∈ {0, -repetition_penalty}: penalised if the same tool call (same name and
  same arguments) was made twice in the episode, or a turn's think/answer text is
  degenerate: some run of `DEGENERATE_NGRAM` words occurs more than `DEGENERATE_REPEATS`
  times in it.

`total = correct_weight * correct + format + repetition`. Keep the penalties small beside the
correctness weight (see LEARNING_NOTES: |p| ≤ 0.2).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import re
import string
from collections.abc import Sequence
from typing import Any

from vista_jax.protocol import ParsedTurn

DEGENERATE_NGRAM = 4  # words per n-gram checked for degenerate repetition
DEGENERATE_REPEATS = 2  # an n-gram may occur this often in one turn's text; more is degenerate
RELAXED_TOLERANCE = 0.05  # ChartQA's relaxed accuracy: 5% relative error on numbers


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    correct_weight: float = 1.0  # weight of R_correct (0/1)
    format_penalty: float = 0.1  # subtracted once for any malformed turn or no answer
    repetition_penalty: float = 0.1  # subtracted once for repeated tool calls or degenerate text


# --- verifiers ---------------------------------------------------------------------------

_NUMBER_RE = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


def parse_number(text: str) -> float | None:
    """The first number in `text` ("18", "18.0", "18 units", "1,200", "-3.5e2"), or None."""
    m = _NUMBER_RE.search(text)
    if m is None:
        return None
    try:
        return float(m.group().replace(",", ""))
    except ValueError:
        return None


def normalize_text(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed."""
    text = text.lower().translate(str.maketrans(string.punctuation, " " * len(string.punctuation)))
    return " ".join(text.split())


def numbers_match(pred: float, gold: float, tolerance: float) -> bool:
    """Relative tolerance; 0 means exact (up to 1e-9 relative, for float round-off)."""
    if not (math.isfinite(pred) and math.isfinite(gold)):
        return False
    if tolerance == 0:
        return abs(pred - gold) <= 1e-9 * max(1.0, abs(gold))
    return abs(pred - gold) <= tolerance * abs(gold)


_CHOICE_RE = re.compile(r"(?:option\s+)?\(?([a-z])\)?(?:[.:)]\s*.*)?", re.IGNORECASE | re.DOTALL)


def _choice_letter(pred: str, n_choices: int) -> str | None:
    """"B", "(B)", "B.", "B) Beta", "Option B" -> "B"; None when pred names no letter."""
    m = _CHOICE_RE.fullmatch(pred.strip())
    if m is None:
        return None
    letter = m.group(1).upper()
    return letter if ord(letter) - ord("A") < n_choices else None


def _expressions_equal(pred: str, gold: str) -> bool:
    import sympy

    try:
        a, b = sympy.sympify(pred), sympy.sympify(gold)
        return bool(sympy.simplify(a - b) == 0)
    except (sympy.SympifyError, TypeError, ValueError, SyntaxError, AttributeError):
        return False


def verify(pred: str | None, task: Any, *, relaxed: bool = False) -> bool:
    """Whether the answer text `pred` is right for `task` (a `Task`): numbers within the
    task's relative tolerance (`relaxed` widens it to ChartQA's 5%), text after
    normalisation, a choice by letter or option text, an expression by sympy equivalence."""
    if pred is None:
        return False
    if task.answer_type == "number":
        got, gold = parse_number(pred), parse_number(task.answer)
        if got is None or gold is None:
            return False
        tol = max(task.tolerance, RELAXED_TOLERANCE) if relaxed else task.tolerance
        return numbers_match(got, gold, tol)
    if task.answer_type == "text":
        return normalize_text(pred) == normalize_text(task.answer)
    if task.answer_type == "choice":
        choices = task.choices or ()
        gold = task.answer.strip().upper()
        letter = _choice_letter(pred, len(choices))
        if letter is not None:
            return letter == gold
        idx = ord(gold) - ord("A")
        return 0 <= idx < len(choices) and normalize_text(pred) == normalize_text(choices[idx])
    if task.answer_type == "expression":
        return _expressions_equal(pred, task.answer)
    raise ValueError(f"unknown answer_type {task.answer_type!r}")


# --- reward ------------------------------------------------------------------------------

def is_degenerate(text: str | None, n: int = DEGENERATE_NGRAM,
                  max_repeats: int = DEGENERATE_REPEATS) -> bool:
    """Whether some n-gram of words occurs more than `max_repeats` times in `text`."""
    words = (text or "").split()
    grams = collections.Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return any(c > max_repeats for c in grams.values())


def _call_key(turn: ParsedTurn) -> str:
    call = turn.tool_call
    return json.dumps([call.name, call.arguments], sort_keys=True, default=str)


def has_repetition(turns: Sequence[ParsedTurn]) -> bool:
    """A repeated identical tool call, or a degenerate turn (see module docstring)."""
    keys = [_call_key(t) for t in turns if t.kind == "tool_call"]
    if len(keys) != len(set(keys)):
        return True
    return any(is_degenerate(t.think) or is_degenerate(t.answer) for t in turns)


def compute_reward(turns: Sequence[ParsedTurn], task: Any, *, answered: bool,
                   config: RewardConfig = RewardConfig()) -> dict[str, float]:
    """Reward components and their weighted `total` for a finished episode. `answered` says
    whether the episode ended at an answer (its last turn); truncated episodes pass False."""
    final = turns[-1] if turns else None
    answer = final.answer if (answered and final is not None and final.kind == "answer") else None
    correct = float(verify(answer, task))
    bad_format = (answer is None or any(t.kind == "invalid" or not t.well_formed for t in turns))
    fmt = -config.format_penalty if bad_format else 0.0
    rep = -config.repetition_penalty if has_repetition(turns) else 0.0
    return {"correct": correct, "format": fmt, "repetition": rep,
            "total": config.correct_weight * correct + fmt + rep}
