"""The geometry family: determinism by seed, splits, every question type at every level,
answers that are right by construction, and reference plans whose bindings come from the tool
results (played against the real diagram and math tools; doctored results change the
expert's answer)."""

import collections
import math

import pytest

from tools_server.images import encode_png
from vista_jax.env import VectorVistaEnv
from vista_jax.env.expert import run_expert_batch
from vista_jax.env.rewards import verify
from vista_jax.env.tasks import geometry
from vista_jax.env.tasks.base import (draw_difficulty, fill_template, get_family, make_tasks)

FAMILY = get_family("geometry")


@pytest.fixture(scope="module")
def tasks_by_level():
    return {lvl: make_tasks("geometry", "train", 60, difficulty=lvl) for lvl in (1, 2, 3)}


def _answer(task, results):
    return fill_template(task.answer_template, FAMILY.bindings(task, results))


def test_registered_with_its_names():
    assert FAMILY is geometry.GEOMETRY
    assert (FAMILY.name, FAMILY.gym_name) == ("geometry", "Geometry")


def test_same_seed_same_task_and_image_bytes():
    for seed in (3, 41, 777):
        a, b = FAMILY.generate(seed, "train"), FAMILY.generate(seed, "train")
        assert (a.question, a.answer, a.reference_plan, a.difficulty) == \
               (b.question, b.answer, b.reference_plan, b.difficulty)
        assert encode_png(a.images[0]) == encode_png(b.images[0])
        fixed = FAMILY.generate(seed, "train", draw_difficulty(seed))
        assert fixed == a and encode_png(fixed.images[0]) == encode_png(a.images[0])


def test_splits_differ():
    train = make_tasks("geometry", "train", 6)
    val = make_tasks("geometry", "val", 6)
    assert {t.seed for t in train}.isdisjoint(t.seed for t in val)
    assert [t.question for t in train] != [t.question for t in val]
    assert all(encode_png(a.images[0]) != encode_png(b.images[0]) for a, b in zip(train, val))


def test_every_type_at_every_level(tasks_by_level):
    for lvl, tasks in tasks_by_level.items():
        assert {t.difficulty for t in tasks} == {lvl}
        assert {t.meta["question_type"] for t in tasks} == set(geometry.QUESTION_TYPES), lvl
        for t in tasks:
            assert t.answer_type in ("number", "choice", "expression")
            assert {s.tool for s in t.reference_plan} <= set(FAMILY.tools)
            assert {a.tool for s in t.reference_plan for a in s.alternatives} <= set(FAMILY.tools)
    # levels ask for more: facts in the question from level 2, exact expressions at level 3
    kinds = {lvl: collections.Counter(t.answer_type for t in ts)
             for lvl, ts in tasks_by_level.items()}
    assert kinds[1]["expression"] == 0 and kinds[3]["expression"] > 0
    assert max(len(t.reference_plan) for t in tasks_by_level[3]) == 4  # a quadrilateral's sides


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="difficulty"):
        FAMILY.generate(1, "train", 4)
    with pytest.raises(ValueError, match="question type"):
        FAMILY.generate(1, "train", 1, question_type="volume")


def test_pixel_answers_match_the_drawn_points(tasks_by_level):
    for t in tasks_by_level[1]:
        if t.meta["question_type"] == "length":
            a, b = t.meta["asked"]
            assert float(t.answer) == pytest.approx(math.dist(t.meta["points"][a],
                                                              t.meta["points"][b]), abs=0.005)


def test_exact_answers_are_simplified():
    assert geometry.exact_answer(geometry.sympy.sqrt(8)) == ("2*sqrt(2)", "expression", 0.0)
    assert geometry.exact_answer(geometry.sympy.Rational(15, 2)) == ("7.5", "number", 0.0)
    assert geometry.exact_answer(25 * geometry.sympy.pi / 4)[1] == "expression"


def _sample():
    """30 tasks: every type at every level, then 12 more drawn by seed."""
    tasks = [FAMILY.generate(9000 + 7 * i + lvl, "train", lvl, question_type=q)
             for lvl in (1, 2, 3) for i, q in enumerate(geometry.QUESTION_TYPES)]
    return tasks + make_tasks("geometry", "val", 12, seed_offset=500)


def test_experts_verify_with_the_real_tools(client):
    tasks = _sample()
    vec = VectorVistaEnv(client, len(tasks), family="geometry", max_turns=6)
    outcomes = run_expert_batch(vec, tasks)
    failed = [(t.task_id, t.question, t.answer, info["answer"], info["error"])
              for t, (_, info) in zip(tasks, outcomes) if not info["verified"]]
    assert not failed, failed


def _real_results(client, task):
    """The results of the task's plan run against the real tools, step by step."""
    image = client.upload_image(task.images[0])
    results = []
    for step in task.reference_plan:
        args = fill_template(step.arguments, FAMILY.bindings(task, results))
        args = {k: (image if v == "img_0" else v) for k, v in args.items()}
        results.append(client.call(step.tool, args))
    return results


def test_doctored_tool_results_change_the_answer(client):
    length = FAMILY.generate(11, "train", 1, question_type="length")
    results = _real_results(client, length)
    assert verify(_answer(length, results), length)
    results[0] = {**results[0], "data": {**results[0]["data"], "length": 12.5}}
    assert _answer(length, results) == "12.5" and not verify("12.5", length)

    solved = FAMILY.generate(12, "train", 3, question_type="perimeter")
    results = _real_results(client, solved)
    assert verify(_answer(solved, results), solved)
    data = {**results[1]["data"], "exact": "3*sqrt(5) + 1", "value": 7.708}
    doctored = [results[0], {**results[1], "data": data}]
    assert _answer(solved, doctored) in ("3*sqrt(5) + 1", "7.708")
    # the solver's figure is the one diagram_to_formal returned, facts appended
    figure = fill_template(solved.reference_plan[1].arguments,
                           FAMILY.bindings(solved, results[:1]))["figure"]
    assert figure.startswith(results[0]["text"]) and "length" in figure.split(results[0]["text"])[1]

    choice = FAMILY.generate(13, "train", 2, question_type="largest")
    results = _real_results(client, choice)
    gold = _answer(choice, results)
    assert gold == choice.answer
    other = next(i for i in range(len(results)) if "ABC"[i] != gold)
    extreme = 179.0 if choice.meta["pick"] == "max" else 0.5
    results[other] = {**results[other], "data": {**results[other]["data"], "degrees": extreme}}
    assert _answer(choice, results) == "ABC"[other] != gold


def test_failed_tool_leaves_the_binding_missing():
    task = FAMILY.generate(21, "train", 1, question_type="circle")
    failed = [{"ok": False, "error": {"code": "execution_failed", "message": "x"}}]
    with pytest.raises(KeyError):
        _answer(task, failed)
    assert _answer(task, [{"ok": True, "text": "", "data": {"circles": [
        {"centre": [1, 2], "centre_label": None, "radius": 31.5, "through": []}]}}]) == "31.5"
