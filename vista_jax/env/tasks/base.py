"""Tasks, reference plans and the registry of task families.

A `Task` is image(s) + question + verifiable answer, plus a reference tool plan from which
`env.expert` writes expert trajectories. Plans are data, not code: a step's string arguments,
its think text and the task's answer template are `str.format` templates over *bindings*
that the task's family derives from the tool results seen so far
(`TaskFamily.bindings`), e.g. `"{v[Beta]} - {v[Alpha]}"` with `v` the table that
`chart_to_table` returned. The expert therefore answers from what the tools said, exactly as
a policy must, not from the generator's ground truth.

Splits draw from disjoint seed ranges: task `i` of split `s` has seed `SPLIT_BASE[s] + i`.

Difficulty: every procedural family has levels 1..3. `generate(seed, split, difficulty=None)`
draws the level from the seed (`draw_difficulty`, an RNG separate from the task's own, so
`generate(s, sp, None)` equals `generate(s, sp, draw_difficulty(s))`); a fixed level plays
only that level.

The taxonomy (`env.taxonomy`) judges E4 "valid call on the wrong content" against the
reference plan: a step is covered by a successful policy call of the same tool whose
`key_args` (all arguments when None) equal the step's filled arguments, or by one of the
step's `alternatives` (another call that obtains the same information).
"""

from __future__ import annotations

import dataclasses
import importlib
import string
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from PIL import Image

AnswerType = Literal["number", "text", "choice", "expression"]

SPLIT_SIZE = 10_000_000  # seeds per split; task i of a split has seed SPLIT_BASE[split] + i
SPLIT_BASE = {"train": 0, "val": SPLIT_SIZE, "test": 2 * SPLIT_SIZE}


@dataclasses.dataclass(frozen=True)
class PlanStep:
    """One tool call of a reference plan. String values of `arguments` (nested too) and
    `think` are `str.format` templates over the family's bindings; image arguments name
    episode-local handles (`"img_0"`)."""

    tool: str
    arguments: dict[str, Any]
    think: str
    # Arguments that name the content the step reads (the label asked, the region, the
    # expression); None = all. Optional style arguments (an `order`, a `precision`) are left
    # out so that the taxonomy does not call a differently styled call "wrong content".
    key_args: tuple[str, ...] | None = None
    # Other calls that obtain the same information (e.g. chart_to_table for bar_values),
    # matched on their own key_args.
    alternatives: tuple[PlanStep, ...] = ()


@dataclasses.dataclass(frozen=True)
class Task:
    task_id: str
    family: str
    seed: int
    split: str
    question: str
    images: tuple[Image.Image, ...]
    answer: str  # the gold answer as text (a choice task's gold answer is its letter)
    answer_type: AnswerType
    tolerance: float = 0.0  # relative tolerance for numbers; 0 = exact
    choices: tuple[str, ...] | None = None
    reference_plan: tuple[PlanStep, ...] = ()
    answer_template: str = "{answer}"  # the expert's answer, formatted with the bindings
    final_think: str = ""  # the expert's think before its answer (a template too)
    difficulty: int = 1  # 1 (easy) .. 3 (hard); dataset tasks: 0 (unknown)
    source: str = "procedural"  # "procedural", or the dataset an adapter read it from
    meta: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)


class TaskFamily(Protocol):
    """A procedural generator of tasks, registered by name."""

    name: str  # registry key, e.g. "geometry"
    gym_name: str  # the gymnasium id is f"VistaGym/{gym_name}-v0"
    tools: tuple[str, ...]  # every tool its reference plans (and alternatives) call

    def generate(self, seed: int, split: str, difficulty: int | None = None) -> Task:
        """The task for `seed`, deterministically (same seed -> same task and image bytes).
        `difficulty` None draws the level from the seed (`draw_difficulty`)."""

    def bindings(self, task: Task, results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Template variables derived from the results of the plan steps run so far
        (tool-server result dicts, in order)."""


_FAMILIES: dict[str, TaskFamily] = {}
# Built-in families, imported on first use so that `get_family` works without importing them.
_BUILTIN = {
    "chart_qa": "vista_jax.env.tasks.chart_qa",
    "geometry": "vista_jax.env.tasks.geometry",
    "table_reading": "vista_jax.env.tasks.table_reading",
    "counting": "vista_jax.env.tasks.counting",
    "ocr_text": "vista_jax.env.tasks.ocr_text",
    "math_word": "vista_jax.env.tasks.math_word",
    "multi_step": "vista_jax.env.tasks.multi_step",
}
DIFFICULTIES = (1, 2, 3)
DIFFICULTY_WEIGHTS = (0.4, 0.35, 0.25)  # how often `draw_difficulty` picks each level


def draw_difficulty(seed: int) -> int:
    """The level a seed plays when none is fixed; independent of the task's own RNG."""
    import random
    return random.Random(f"difficulty/{seed}").choices(DIFFICULTIES, DIFFICULTY_WEIGHTS)[0]


def check_difficulty(difficulty: int | None) -> None:
    if difficulty is not None and difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES} or None, not {difficulty!r}")


def pick_question_type(rng: Any, types: Sequence[str], fixed: str | None = None) -> str:
    """A question type drawn from `rng` (`random.Random`), or `fixed` (one of `types`) in its
    place; the draw happens either way, so the rest of the task's stream does not depend on
    whether the type was fixed."""
    drawn = rng.choice(types)
    if fixed is None:
        return drawn
    if fixed not in types:
        raise ValueError(f"unknown question type {fixed!r}; one of {tuple(types)}")
    return fixed


def register_family(family: TaskFamily) -> TaskFamily:
    if family.name in _FAMILIES:
        raise ValueError(f"task family {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def get_family(name: str) -> TaskFamily:
    if name not in _FAMILIES and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _FAMILIES:
        raise KeyError(f"unknown task family {name!r}; registered: {sorted(_FAMILIES)}")
    return _FAMILIES[name]


def families() -> list[str]:
    return sorted(set(_FAMILIES) | set(_BUILTIN))


def split_seed(split: str, index: int) -> int:
    """The seed of task `index` of `split`; raises if it would leave the split's range."""
    if split not in SPLIT_BASE:
        raise ValueError(f"unknown split {split!r}; one of {sorted(SPLIT_BASE)}")
    if not 0 <= index < SPLIT_SIZE:
        raise ValueError(f"task index {index} outside [0, {SPLIT_SIZE}) for split {split!r}")
    return SPLIT_BASE[split] + index


def make_task(family: str, split: str, index: int, difficulty: int | None = None) -> Task:
    check_difficulty(difficulty)
    return get_family(family).generate(split_seed(split, index), split, difficulty)


def make_tasks(family: str, split: str, n: int, seed_offset: int = 0,
               difficulty: int | None = None) -> list[Task]:
    """Tasks `seed_offset .. seed_offset + n - 1` of `split` (disjoint seed ranges per split)."""
    return [make_task(family, split, seed_offset + i, difficulty) for i in range(n)]


def fill_template(template: Any, bindings: Mapping[str, Any]) -> Any:
    """Formats every string inside `template` (dicts and lists recursively) with `bindings`.
    A string without replacement fields is returned unchanged (so `"{"` never needs escaping
    in plain values)."""
    if isinstance(template, str):
        if not any(field for _, field, _, _ in string.Formatter().parse(template)
                   if field is not None):
            return template
        return template.format_map(bindings)
    if isinstance(template, dict):
        return {k: fill_template(v, bindings) for k, v in template.items()}
    if isinstance(template, (list, tuple)):
        return type(template)(fill_template(v, bindings) for v in template)
    return template

