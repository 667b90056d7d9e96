"""The chart QA family at level 1 (bar charts): answers right against the true table,
determinism by seed, disjoint splits, reference plans that compute the answer. Levels 2-3
and the level-1 reference hashes: test_tasks_chart.py."""

import collections

import pytest

from tools_server.tools.chart import select_bars
from tools_server.images import encode_png
from vista_jax.env.tasks import chart_qa
from vista_jax.env.tasks.base import (SPLIT_BASE, SPLIT_SIZE, fill_template, get_family,
                                      make_task, make_tasks, split_seed)


@pytest.fixture(scope="module")
def tasks():
    return make_tasks("chart_qa", "train", 300, difficulty=1)


def _expected(task):
    table = task.meta["table"]
    kind = task.meta["question_type"]
    a, b = task.meta["asked"]
    return {"lookup": lambda: str(table[a]),
            "max": lambda: max(table, key=table.get),
            "min": lambda: min(table, key=table.get),
            "difference": lambda: str(table[a] - table[b]),
            "sum": lambda: str(table[a] + table[b])}[kind]()


def test_answers_match_the_table(tasks):
    kinds = collections.Counter()
    for t in tasks:
        table, kind = t.meta["table"], t.meta["question_type"]
        kinds[kind] += 1
        assert 3 <= len(table) <= 6 and len(set(table.values())) == len(table)
        assert all(isinstance(v, int) and 1 <= v <= 99 for v in table.values())
        assert all(label in chart_qa.LABELS for label in table)
        assert t.answer == _expected(t)
        assert t.answer_type == ("text" if kind in ("max", "min") else "number")
        assert t.tolerance == 0.0 and len(t.images) == 1
        if kind == "difference":
            assert int(t.answer) > 0
        if kind in ("lookup", "difference", "sum"):
            assert all(label in t.question for label in t.meta["asked"][:1 if kind == "lookup" else 2])
    assert set(kinds) == set(chart_qa.QUESTION_TYPES)
    assert kinds["lookup"] > kinds["max"]  # weights 0.3 vs 0.15
    # phrasing varies
    assert len({t.question.split()[0] for t in tasks}) >= 4


def test_reference_plan_computes_the_answer_from_the_table(tasks):
    fam = get_family("chart_qa")
    for t in tasks[:60]:
        table = t.meta["table"]
        results = []
        for step in t.reference_plan:
            args = fill_template(step.arguments, fam.bindings(t, results))
            if step.tool == "bar_values":
                qtype, asked = t.meta["question_type"], t.meta["asked"]
                if qtype in ("max", "min"):  # the whole chart, sorted
                    assert args == {"image": "img_0",
                                    "order": "descending" if qtype == "max" else "ascending"}
                else:  # only the bars the question names, in its order
                    assert args == {"image": "img_0",
                                    "labels": asked[:1] if qtype == "lookup" else asked[:2]}
                rows = select_bars(list(table), [float(v) for v in table.values()],
                                   args.get("labels"), args.get("order", "chart"))
                results.append({"ok": True, "text": "\n".join(f"{k} | {v:g}" for k, v in rows),
                                "images": [], "data": {"labels": [r[0] for r in rows],
                                                       "values": [r[1] for r in rows]}})
            else:
                assert step.tool == "calculator"
                value = eval(args["expression"])  # noqa: S307 - "41 - 23"
                results.append({"ok": True, "text": str(value), "images": [],
                                "data": {"value": float(value)}})
        bindings = fam.bindings(t, results)
        assert fill_template(t.answer_template, bindings) == t.answer
        assert "{" not in fill_template(t.final_think, bindings)
        n_calls = 2 if t.meta["question_type"] in ("difference", "sum") else 1
        assert len(t.reference_plan) == n_calls


def test_bindings_fall_back_to_the_table_text():
    t = next(t for t in make_tasks("chart_qa", "train", 50, difficulty=1)
             if t.meta["question_type"] == "lookup")
    text = "\n".join(f"{k} | {v}" for k, v in t.meta["table"].items())
    b = get_family("chart_qa").bindings(t, [{"ok": True, "text": text, "images": [], "data": {}}])
    assert fill_template(t.answer_template, b) == t.answer


def test_same_seed_same_task_and_image_bytes():
    a, b = make_task("chart_qa", "val", 17, 1), make_task("chart_qa", "val", 17, 1)
    assert a == b and a.meta == b.meta
    assert encode_png(a.images[0]) == encode_png(b.images[0])
    c = make_task("chart_qa", "val", 18, 1)
    assert (c.question, c.meta["table"]) != (a.question, a.meta["table"])


def test_splits_are_disjoint():
    seeds = {s: {t.seed for t in make_tasks("chart_qa", s, 50)} for s in SPLIT_BASE}
    assert seeds["train"].isdisjoint(seeds["val"]) and seeds["val"].isdisjoint(seeds["test"])
    assert seeds["train"].isdisjoint(seeds["test"])
    ranges = sorted((SPLIT_BASE[s], SPLIT_BASE[s] + SPLIT_SIZE) for s in SPLIT_BASE)
    assert all(hi <= lo for (_, hi), (lo, _) in zip(ranges, ranges[1:]))
    # an offset can never walk a split into the next one
    assert split_seed("train", SPLIT_SIZE - 1) < SPLIT_BASE["val"]
    with pytest.raises(ValueError):
        split_seed("train", SPLIT_SIZE)
    with pytest.raises(ValueError):
        make_tasks("chart_qa", "dev", 1)
    ids = [t.task_id for t in make_tasks("chart_qa", "test", 3, seed_offset=10)]
    assert ids == [f"chart_qa/test/{SPLIT_BASE['test'] + i}" for i in (10, 11, 12)]
    with pytest.raises(KeyError, match="chart_qa"):
        get_family("nope")


def test_max_min_thinks_restate_the_questions_superlative_and_order(tasks):
    seen = collections.Counter()
    for task in tasks:
        kind = task.meta["question_type"]
        if kind not in ("max", "min"):
            continue
        step = task.reference_plan[0]
        word = next(w for w in chart_qa.SUPERLATIVES[kind] if w in task.question)
        order = "descending" if kind == "max" else "ascending"
        assert word in step.think and order in step.think, (task.question, step.think)
        assert step.arguments["order"] == order
        seen[kind] += 1
    assert seen["max"] > 10 and seen["min"] > 10
