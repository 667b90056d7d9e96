"""The paper's error taxonomy (Table 1) for finished trajectories, and its distribution.

`classify(record, task)` gives one `Label` per trajectory (a `VistaEnv.trajectory()` dict,
live or read back from a log): "correct", "E1".."E6" or "tool_failure", with an
explanation and the index of the turn it blames (`record["turns"][turn]`, 0-based).

    E1  protocol/schema violation: a turn that did not parse (bad JSON, bad envelope, no or
        several actions, an unclosed tag)
    E2  unknown tool or argument name (tool error codes unknown_tool, unknown_argument)
    E3  invalid argument value or type (missing_argument, invalid_argument, image_not_found)
    E4  valid call on the wrong content, judged against the task's reference plan
    E5  tool output misread: the plan was covered and the answer contradicts a value the
        tools returned (the gold answer, or the answer the expert would give from the
        policy's own results, is in a tool output the policy saw)
    E6  reasoning failure after valid tool use (everything else that is wrong)
    tool_failure  the service's fault, never the policy's: execution_failed, timeout,
        overloaded, transport_error (or an unknown error code) on a call the trajectory
        needed, or tools whose outputs lead to a wrong answer that the policy copied
        faithfully (the expert, given the same results, answers exactly as the policy did)

Plan coverage (E4). The reference plan is walked step by step. Step k's arguments (and its
`alternatives`') are filled with `family.bindings(task, results)`, where `results` are the
policy's OWN results of the calls that covered steps 0..k-1, and image handles the plan
names for images earlier steps produced (`img_1`, ...) are mapped to the handles the
policy's covering calls actually got. Step k is covered by the earliest unused successful
policy call of the same tool whose `key_args` equal the filled ones (key_args None: all
arguments of both, so an extra `labels=[...]` is other content; with key_args, arguments
outside them are ignored, and one absent from both counts as equal): strings compared
case-insensitively without whitespace, numbers with 1e-6 relative tolerance, lists element
by element, image handles as strings; or by such a call matching one of the step's
`alternatives`. The walk stops at the first step no call covers (or whose arguments cannot
be filled from the policy's results).

Precedence, for a trajectory whose answer did not verify (first rule that applies):

1. No answer (truncated): the last turn is blamed when it is at fault: E1 if it did not
   parse, E2/E3 if its call was rejected, tool_failure if the service failed on it.
   Otherwise (its call succeeded) the rules below apply, reading "answer" as "no answer".
2. Plan fully covered: errors made on the way were recovered from and do not count.
   tool_failure if the tools' outputs lead the expert to the policy's own wrong answer;
   else E5 if the gold answer (or the expert's answer from the policy's results) is in a
   tool output the policy saw; else E6 (also for "no answer after valid calls").
3. Plan not covered at step k:
   a. tool_failure if the service failed on a call that would have covered step k;
   b. E4 if the policy made successful calls on other content (calls that cover no step
      and repeat no covering call); the first such call is blamed;
   c. else the LAST policy error (E1/E2/E3) is blamed: the policy never got past it, while
      earlier errors were followed by further attempts;
   d. else tool_failure if the service failed on some call;
   e. else E4 "skipped the tools": the policy made no tool call although the plan needs
      some, or stopped calling before step k (a skipped step is a tool-use error, not a
      reasoning one: the plan says the information must come from a tool). The answer turn
      (or the last turn) is blamed.

Recovery: a trajectory whose answer verifies is "correct", whatever errors it made on the
way (its explanation lists them); a failed one with a covered plan is E5/E6 (or
tool_failure, rule 2) however many bad turns preceded it. An episode that ended before any
turn is E1. "In a tool output" means in the result text the policy was shown (numbers as
numbers, text as whole words), not in the result's `data`.

Tasks without a reference plan (dataset tasks, or a record whose procedural task cannot be
rebuilt): E4 cannot be judged. Rule 1 holds as above; then E5 if the gold answer is in a
tool output the policy saw; else the last unrecovered policy error (one not followed by a
successful call of the same tool, of any tool for E1 and unknown_tool); else tool_failure
for an unrecovered service failure; else E6.

Records that already carry a label (`record["taxonomy"]`, a label string or a
`Label.to_dict()`) keep it in `label_of` / `distribution`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vista_jax import protocol
from vista_jax.env.rewards import normalize_text, numbers_match, parse_number, verify
from vista_jax.env.tasks.base import DIFFICULTIES, PlanStep, Task, fill_template, get_family

ERROR_LABELS = ("E1", "E2", "E3", "E4", "E5", "E6", "tool_failure")
LABELS = ("correct",) + ERROR_LABELS
ARG_REL_TOL = 1e-6  # relative tolerance when comparing numeric tool arguments to the plan
# What a family's bindings raise when the policy's results lack what a template needs.
_FILL_ERRORS = (KeyError, IndexError, ValueError, TypeError, AttributeError, ZeroDivisionError)


@dataclasses.dataclass(frozen=True)
class Label:
    """One trajectory's class, why, and the turn it blames (None: no single turn)."""

    label: str
    explanation: str
    turn: int | None = None

    def __post_init__(self):
        if self.label not in LABELS:
            raise ValueError(f"unknown taxonomy label {self.label!r}; one of {LABELS}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- turns -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Turn:
    """One turn of a record, reduced to what the taxonomy needs."""

    index: int
    kind: str  # "answer" | "call" (succeeded) | "policy_error" | "service_error" | "invalid"
    label: str | None = None  # E1/E2/E3/tool_failure for the error kinds
    code: str | None = None
    tool: str | None = None
    arguments: Any = None
    result: dict[str, Any] | None = None
    image_handles: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.tool is None:
            return f"turn {self.index}"
        return f"turn {self.index} {self.tool}({_short_args(self.arguments)})"


def _short_args(arguments: Any, limit: int = 80) -> str:
    if not isinstance(arguments, dict):
        return repr(arguments)[:limit]
    text = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _read_turns(record: Mapping[str, Any]) -> list[_Turn]:
    turns = record.get("turns")
    if not isinstance(turns, list):
        raise ValueError(f"record {record.get('task_id')!r}: 'turns' must be a list, "
                         f"not {type(turns).__name__}")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            raise ValueError(f"record {record.get('task_id')!r}: turn {i} is not an object")
        kind = turn.get("kind")
        if kind == "invalid":
            out.append(_Turn(i, "invalid", "E1", turn.get("error") or "invalid"))
        elif kind == "answer":
            out.append(_Turn(i, "answer"))
        elif kind == "tool_call":
            call = turn.get("tool_call") or {}
            result = turn.get("tool_result") or {}
            common = dict(tool=call.get("name"), arguments=call.get("arguments") or {},
                          result=result, image_handles=tuple(turn.get("image_handles") or ()))
            if result.get("ok"):
                out.append(_Turn(i, "call", **common))
                continue
            code = (result.get("error") or {}).get("code") or "unknown"
            policy_label = protocol.taxonomy_for_tool_error(code)
            if policy_label is not None:
                out.append(_Turn(i, "policy_error", policy_label, code, **common))
            else:  # SERVICE_TOOL_ERRORS, and codes we do not know: not blamed on the policy
                out.append(_Turn(i, "service_error", "tool_failure", code, **common))
        else:
            raise ValueError(f"record {record.get('task_id')!r}: turn {i} has unknown kind "
                             f"{kind!r} (expected tool_call, answer or invalid)")
    return out


def _is_error(t: _Turn) -> bool:
    return t.kind in ("invalid", "policy_error", "service_error")


# --- argument matching -------------------------------------------------------------------

_MISSING = object()


def _norm_str(s: str) -> str:
    return "".join(s.split()).casefold()


def _as_number(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, str):
        try:
            return float(x.strip())
        except ValueError:
            return None
    return None


def values_equal(a: Any, b: Any) -> bool:
    """Plan argument `a` against policy argument `b`: strings without case or whitespace,
    numbers (or numeric strings against numbers) within 1e-6 relative, lists as lists,
    dicts key by key."""
    if a is _MISSING or b is _MISSING:
        return a is b
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) or isinstance(b, (int, float)):
        x, y = _as_number(a), _as_number(b)
        return x is not None and y is not None and math.isclose(x, y, rel_tol=ARG_REL_TOL)
    if isinstance(a, str) and isinstance(b, str):
        return _norm_str(a) == _norm_str(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(values_equal(a[k], b[k]) for k in a)
    return a == b


def step_matches(step: PlanStep, filled: Mapping[str, Any], tool: str | None,
                 arguments: Any) -> bool:
    """Whether a call `tool(arguments)` does step `step`, whose arguments filled are
    `filled`: same tool, and equal `key_args`; with key_args None, every argument of either
    (an extra argument such as `labels` or `series` selects other content)."""
    if tool != step.tool or not isinstance(arguments, Mapping):
        return False
    keys = step.key_args if step.key_args is not None else set(filled) | set(arguments)
    return all(values_equal(filled.get(k, _MISSING), arguments.get(k, _MISSING)) for k in keys)


def _map_handles(value: Any, handles: Mapping[str, str]) -> Any:
    if not handles:
        return value
    if isinstance(value, str):
        return handles.get(value, value)
    if isinstance(value, Mapping):
        return {k: _map_handles(v, handles) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_map_handles(v, handles) for v in value]
    return value


# --- plan coverage -----------------------------------------------------------------------

@dataclasses.dataclass
class _Coverage:
    complete: bool
    step: int = 0  # the first uncovered step when not complete
    candidates: list[tuple[PlanStep, dict]] = dataclasses.field(default_factory=list)
    fill_error: str | None = None
    used: list[_Turn] = dataclasses.field(default_factory=list)  # covering calls, in plan order
    results: list[dict] = dataclasses.field(default_factory=list)


def _cover(task: Task, family, turns: Sequence[_Turn], n_task_images: int) -> _Coverage:
    calls = [t for t in turns if t.kind == "call"]
    cov = _Coverage(complete=False)
    handles: dict[str, str] = {}  # the expert's handle for an image -> the policy's
    next_expert_image = n_task_images
    for k, step in enumerate(task.reference_plan):
        cov.step = k
        try:
            bindings = family.bindings(task, cov.results)
            cov.candidates = [(c, _map_handles(fill_template(c.arguments, bindings), handles))
                              for c in (step, *step.alternatives)]
        except _FILL_ERRORS as e:
            cov.candidates = []
            cov.fill_error = f"{type(e).__name__}: {e}"
            return cov
        used_ids = {t.index for t in cov.used}
        match = next((t for t in calls if t.index not in used_ids
                      and any(step_matches(c, args, t.tool, t.arguments)
                              for c, args in cov.candidates)), None)
        if match is None:
            return cov
        cov.used.append(match)
        cov.results.append(match.result)
        for handle in match.image_handles:
            handles[f"img_{next_expert_image}"] = handle
            next_expert_image += 1
    cov.complete, cov.candidates = True, []
    return cov


def _repeats(t: _Turn, used: Sequence[_Turn]) -> bool:
    return any(u.tool == t.tool and values_equal(u.arguments, t.arguments) for u in used)


# --- answers in tool outputs -------------------------------------------------------------

# Numbers in tool text; a '-' right after a digit or letter is an operator, not a sign.
_TEXT_NUMBER_RE = re.compile(r"(?<![\w.])-?(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
                             r"|(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")


def value_in_text(value: str, text: str, answer_type: str, *, tolerance: float = 0.0,
                  choices: Sequence[str] | None = None) -> bool:
    """Whether the answer `value` appears in tool output `text`: a number as a number
    (within `tolerance`, at least 1e-6 relative), text as whole words after normalisation,
    a choice letter by its option's text, an expression without whitespace."""
    if not value or not text:
        return False
    if answer_type == "number":
        gold = parse_number(value)
        if gold is None:
            return False
        tol = max(tolerance, ARG_REL_TOL)
        for m in _TEXT_NUMBER_RE.finditer(text):
            x = _as_number(m.group().replace(",", ""))
            if x is not None and numbers_match(x, gold, tol):
                return True
        return False
    if answer_type == "choice":
        idx = ord(value.strip().upper()[:1] or "?") - ord("A")
        if not choices or not 0 <= idx < len(choices):
            return False  # a bare letter in tool text would match by accident
        value, answer_type = choices[idx], "text"
    if answer_type == "expression":
        return _norm_str(value) in _norm_str(text)
    needle = normalize_text(value)
    return bool(needle) and f" {needle} " in f" {normalize_text(text)} "


def _outputs(turns: Sequence[_Turn]) -> list[tuple[int, str]]:
    """(turn, text) of every successful tool result: what the policy saw."""
    return [(t.index, str(t.result.get("text", ""))) for t in turns if t.kind == "call"]


def _find_in_outputs(value: str | None, turns: Sequence[_Turn], answer_type: str,
                     task: Task | None) -> int | None:
    if value is None:
        return None
    tol = task.tolerance if task is not None else 0.0
    choices = task.choices if task is not None else None
    return next((i for i, text in _outputs(turns)
                 if value_in_text(value, text, answer_type, tolerance=tol, choices=choices)),
                None)


# --- tasks -------------------------------------------------------------------------------

@functools.lru_cache(maxsize=512)
def _generate(family: str, seed: int, split: str, difficulty: int | None) -> Task:
    return get_family(family).generate(seed, split, difficulty)


def task_for_record(record: Mapping[str, Any]) -> Task | None:
    """Rebuilds a procedural task from the record's family, split, seed (and difficulty,
    when recorded; otherwise each level is tried), keeping it only if its question and gold
    answer are the record's. None for dataset tasks and unregistered families."""
    family, seed, split = record.get("family"), record.get("seed"), record.get("split")
    if record.get("source", "procedural") != "procedural" or not isinstance(seed, int):
        return None
    try:
        get_family(family)
    except (KeyError, TypeError):
        return None
    recorded = record.get("difficulty")
    levels = [recorded] if recorded in DIFFICULTIES else [None, *DIFFICULTIES]
    for level in levels:
        try:
            task = _generate(family, seed, split, level)
        except (ValueError, KeyError, NotImplementedError, OSError):
            return None
        if task.question == record.get("question") and \
                str(task.answer) == str(record.get("gold_answer")):
            return task
    return None


# --- classification ----------------------------------------------------------------------

def _last_turn_fault(last: _Turn) -> Label | None:
    if last.kind == "invalid":
        return Label("E1", f"no answer: the last turn did not parse ({last.code})", last.index)
    if last.kind == "policy_error":
        return Label(last.label, f"no answer: the last call was rejected ({last.code}): "
                     f"{last.describe()}", last.index)
    if last.kind == "service_error":
        return Label("tool_failure", f"no answer: the service failed on the last call "
                     f"({last.code}): {last.describe()}", last.index)
    return None


def _recovered_errors(turns: Sequence[_Turn]) -> str:
    errors = [f"{t.label} at turn {t.index}" for t in turns if _is_error(t)]
    return f" after recovering from {', '.join(errors)}" if errors else ""


def _unrecovered(turns: Sequence[_Turn]) -> list[_Turn]:
    """Errors not followed by a successful call of the same tool (of any tool for turns
    that did not parse or named no usable tool)."""
    out = []
    for i, t in enumerate(turns):
        if not _is_error(t):
            continue
        any_tool = t.kind == "invalid" or t.code == "unknown_tool"
        if not any(u.kind == "call" and (any_tool or u.tool == t.tool) for u in turns[i + 1:]):
            out.append(t)
    return out


def _final_turn(turns: Sequence[_Turn], answered: _Turn | None) -> int | None:
    """The answer turn, else the last turn: where a wrong or missing answer is blamed."""
    return answered.index if answered is not None else (turns[-1].index if turns else None)


def _answer_label(turns, answered: _Turn | None, answer: str | None, record, task,
                  expert_answer: str | None, covered_note: str) -> Label:
    """E5 / E6 / tool_failure for a trajectory whose plan is covered (or has no plan)."""
    blame = _final_turn(turns, answered)
    if answer is None:
        return Label("E6", f"no answer after valid tool use{covered_note}", blame)
    answer_type = record.get("answer_type") or (task.answer_type if task else "text")
    gold = str(record.get("gold_answer"))
    if task is not None and expert_answer is not None and not verify(expert_answer, task):
        if verify(answer, dataclasses.replace(task, answer=expert_answer)):
            return Label("tool_failure", f"the tools' outputs lead to {expert_answer!r} (the "
                         f"expert would answer the same), not the gold {gold!r}", blame)
    at = _find_in_outputs(gold, turns, answer_type, task)
    if at is not None:
        return Label("E5", f"answered {answer!r} but the gold answer {gold!r} is in the output "
                     f"of turn {at}{covered_note}", blame)
    if expert_answer is not None:
        at = _find_in_outputs(expert_answer, turns, answer_type, task)
        if at is not None:
            return Label("E5", f"answered {answer!r} but the output of turn {at} gives "
                         f"{expert_answer!r}{covered_note}", blame)
    return Label("E6", f"answered {answer!r} (gold {gold!r}), which no tool output states"
                 f"{covered_note}", blame)


def _expert_answer(task: Task, family, results: Sequence[dict]) -> str | None:
    try:
        return str(fill_template(task.answer_template, family.bindings(task, results)))
    except _FILL_ERRORS:
        return None


def _classify_with_plan(turns, answered, answer, record, task) -> Label:
    family = get_family(task.family)
    n_images = len(record.get("images") or ()) or len(task.images)
    cov = _cover(task, family, turns, n_images)
    if cov.complete:
        note = f" (all {len(task.reference_plan)} plan steps covered)"
        return _answer_label(turns, answered, answer, record, task,
                             _expert_answer(task, family, cov.results), note)
    step = task.reference_plan[cov.step]
    what = f"plan step {cov.step} ({step.tool})"
    if cov.fill_error is not None:
        what += f", whose arguments the policy's results cannot fill ({cov.fill_error})"
    # a. the service failed on the call the plan needed
    for t in turns:
        if t.kind == "service_error" and any(step_matches(c, args, t.tool, t.arguments)
                                             for c, args in cov.candidates):
            return Label("tool_failure", f"the service failed ({t.code}) on the call {what} "
                         f"needs: {t.describe()}", t.index)
    # b. valid calls on other content
    other = [t for t in turns if t.kind == "call" and t not in cov.used
             and not _repeats(t, cov.used)]
    if other:
        return Label("E4", f"{what} not covered; {other[0].describe()} reads other content",
                     other[0].index)
    # c. the last error of the policy's own making
    policy = [t for t in turns if t.kind in ("invalid", "policy_error")]
    if policy:
        t = policy[-1]
        how = "did not parse" if t.kind == "invalid" else "was rejected"
        return Label(t.label, f"{what} not covered; {t.describe()} {how} ({t.code})", t.index)
    # d. only the service failed
    service = [t for t in turns if t.kind == "service_error"]
    if service:
        t = service[-1]
        return Label("tool_failure", f"{what} not covered; the service failed ({t.code}) on "
                     f"{t.describe()}", t.index)
    # e. the policy stopped calling tools
    blame = _final_turn(turns, answered)
    if not any(t.kind == "call" for t in turns):
        return Label("E4", f"skipped the tools: no tool call, but the plan needs "
                     f"{len(task.reference_plan)}", blame)
    return Label("E4", f"skipped the tools from {what} on", blame)


def _classify_without_plan(turns, answered, answer, record, task, why: str) -> Label:
    note = f" (no reference plan: {why}; E4 not judged)"
    if answer is not None:
        gold = str(record.get("gold_answer"))
        answer_type = record.get("answer_type") or "text"
        at = _find_in_outputs(gold, turns, answer_type, task)
        if at is not None:
            return Label("E5", f"answered {answer!r} but the gold answer {gold!r} is in the "
                         f"output of turn {at}{note}", _final_turn(turns, answered))
    left = _unrecovered(turns)
    policy = [t for t in left if t.kind != "service_error"]
    if policy:
        t = policy[-1]
        how = "did not parse" if t.kind == "invalid" else "was rejected"
        return Label(t.label, f"{t.describe()} {how} ({t.code}) and was not recovered{note}",
                     t.index)
    if left:
        t = left[-1]
        return Label("tool_failure", f"the service failed ({t.code}) on {t.describe()}{note}",
                     t.index)
    return _answer_label(turns, answered, answer, record, task, None, note)


def classify(record: Mapping[str, Any], task: Task | None = None) -> Label:
    """The taxonomy class of one finished trajectory (see the module docstring). `task`:
    the record's Task; None rebuilds procedural ones from the record (`task_for_record`)."""
    turns = _read_turns(record)
    if record.get("correct"):
        return Label("correct", "the answer verified" + _recovered_errors(turns))
    answer = record.get("answer")
    answered = next((t for t in reversed(turns) if t.kind == "answer"), None)
    if answer is None:
        answered = None
        if not turns:
            return Label("E1", "no answer and no turn: the episode ended before any action")
        fault = _last_turn_fault(turns[-1])
        if fault is not None:
            return fault
    if task is None:
        task = task_for_record(record)
        why = "the task could not be rebuilt from the record"
    else:
        why = "the task has none"
    if task is None or not task.reference_plan:
        return _classify_without_plan(turns, answered, answer, record, task, why)
    return _classify_with_plan(turns, answered, answer, record, task)


# --- distribution ------------------------------------------------------------------------

def label_of(record: Mapping[str, Any], task: Task | None = None) -> str:
    """The record's own "taxonomy" label when it carries one, else `classify`'s."""
    own = record.get("taxonomy")
    if own is not None:
        label = own.get("label") if isinstance(own, Mapping) else own
        if label not in LABELS:
            raise ValueError(f"record {record.get('task_id')!r} carries taxonomy {own!r}; "
                             f"labels are {LABELS}")
        return label
    return classify(record, task).label


def _task_lookup(tasks: Mapping[str, Task] | Sequence[Task] | None) -> Mapping[str, Task]:
    if tasks is None:
        return {}
    if isinstance(tasks, Mapping):
        return tasks
    return {t.task_id: t for t in tasks}


def labels_for(records: Iterable[Mapping[str, Any]],
               tasks: Mapping[str, Task] | Sequence[Task] | None = None) -> list[str]:
    """`label_of` for each record; `tasks` (by task_id, or a list) spares rebuilding them."""
    lookup = _task_lookup(tasks)
    return [label_of(r, lookup.get(r.get("task_id"))) for r in records]


def tally(records: Sequence[Mapping[str, Any]], labels: Sequence[str],
          by: str | None = None) -> dict[str, Any]:
    """{family: {label: count}}; with `by` (a record field, e.g. "question_type"),
    {family: {str(record[by]): {label: count}}}."""
    out: dict[str, Any] = {}
    for record, label in zip(records, labels, strict=True):
        family = str(record.get("family"))
        if by is None:
            counts = out.setdefault(family, collections.Counter())
        else:
            key = record.get(by)
            counts = out.setdefault(family, {}).setdefault(
                "(none)" if key is None else str(key), collections.Counter())
        counts[label] += 1
    return _plain(out)


def _plain(d: Any) -> Any:
    if isinstance(d, Mapping):
        return {k: _plain(v) for k, v in sorted(d.items())}
    return d


def distribution(records: Sequence[Mapping[str, Any]],
                 tasks: Mapping[str, Task] | Sequence[Task] | None = None
                 ) -> dict[str, dict[str, int]]:
    """{family: {label: count}} over `records`."""
    records = list(records)
    return tally(records, labels_for(records, tasks))


def summary_row(counts: Mapping[str, int]) -> dict[str, Any]:
    """n, accuracy and each error label's share of ALL trajectories (they sum to 1 with the
    accuracy), plus the raw counts."""
    n = sum(counts.values())
    share = (lambda c: c / n) if n else (lambda c: 0.0)
    return {"n": n, "accuracy": share(counts.get("correct", 0)),
            "shares": {label: share(counts.get(label, 0)) for label in ERROR_LABELS},
            "counts": {label: int(counts.get(label, 0)) for label in LABELS}}


def summarize(dist: Mapping[str, Mapping[str, int]],
              by_dist: Mapping[str, Mapping[str, Mapping[str, int]]] | None = None,
              by: str | None = None) -> dict[str, Any]:
    """The JSON report: {"families": {family: row}, "total": row} (rows from `summary_row`);
    with a breakdown, each family row gets {"by": {value: row}} and the report "by": field."""
    total = collections.Counter()
    families = {}
    for family, counts in sorted(dist.items()):
        total.update(counts)
        families[family] = summary_row(counts)
        if by_dist is not None:
            families[family]["by"] = {k: summary_row(v)
                                      for k, v in sorted(by_dist.get(family, {}).items())}
    out = {"families": families, "total": summary_row(total)}
    if by is not None:
        out["by"] = by
    return out


def format_distribution(report: Mapping[str, Any], rows_key: str = "families",
                        first: str = "family") -> str:
    """`summarize`'s report (or a bare {family: {label: count}}) as a text table: one row per
    family (and per breakdown value, indented), then the total; shares in percent.
    `rows_key`/`first`: another group of rows of the report and its column title (e.g.
    "policies" / "policy", as the paper's Table 1)."""
    if rows_key not in report:
        report = summarize(report)
    rows = []
    for family, row in report[rows_key].items():
        rows.append((family, row))
        rows.extend((f"  {key}", sub) for key, sub in row.get("by", {}).items())
    rows.append(("total", report["total"]))
    name_w = max(len(first), *(len(name) for name, _ in rows))
    heads = ["n", "accuracy", *ERROR_LABELS]
    widths = [max(6, len(h)) for h in heads]
    lines = ["  ".join([f"{first:<{name_w}}"] + [f"{h:>{w}}" for h, w in zip(heads, widths)])]
    for name, row in rows:
        cells = [str(row["n"]), f"{100 * row['accuracy']:.1f}%"]
        cells += [f"{100 * row['shares'][label]:.1f}%" for label in ERROR_LABELS]
        lines.append("  ".join([f"{name:<{name_w}}"]
                               + [f"{c:>{w}}" for c, w in zip(cells, widths)]))
    return "\n".join(lines)
