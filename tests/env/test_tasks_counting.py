"""The counting family: answers right against the drawn scene, determinism by seed, splits,
every question type at every level, experts that verify with the real tools and answer from
the tool results."""

import collections

import pytest

from tools_server.images import encode_png
from vista_jax.env import generate_expert_dataset
from vista_jax.env.tasks import counting
from vista_jax.env.tasks.base import (draw_difficulty, fill_template, get_family, make_task,
                                      make_tasks)
from vista_jax.env.tasks.render_scene import shape_mask

FAMILY = get_family("counting")


@pytest.fixture(scope="module")
def by_level():
    return {lvl: make_tasks("counting", "train", 120, difficulty=lvl) for lvl in (1, 2, 3)}


def _matches(query, obj):
    words = query.split()
    color = words[0] if len(words) == 2 else (words[0] if words[0] in counting.COLORS else None)
    shape = next((s for s, p in counting.PLURAL.items() if p == words[-1]), None)
    return color in (None, obj["color"]) and shape in (None, obj["shape"])


def _inside(box, region):
    return (region[0] <= box[0] and box[2] <= region[2]
            and region[1] <= box[1] and box[3] <= region[3])


def _expected(task):
    """The answer recomputed from the objects drawn (independently of the generator)."""
    objs, kind = task.meta["objects"], task.meta["question_type"]
    if kind == "count":
        region = task.meta.get("box")
        return str(sum(_matches(task.meta["query"], o)
                       and (region is None or _inside(o["box"], region)) for o in objs))
    if kind in ("compare", "total"):
        na, nb = (sum(_matches(q, o) for o in objs) for q in task.meta["queries"])
        if kind == "total":
            return str(na + nb)
        return "A" if na > nb else "B" if nb > na else "C"
    if kind == "relation":
        lp, lq = task.meta["pair"]
        [bp] = [o["box"] for o in objs if f"{o['color']} {o['shape']}" == lp]
        [bq] = [o["box"] for o in objs if f"{o['color']} {o['shape']}" == lq]
        axis, sign = counting.RELATIONS[task.meta["relation"]]
        return "yes" if ((bp[axis] + bp[axis + 2]) - (bq[axis] + bq[axis + 2])) * sign > 0 else "no"
    if kind == "extreme":
        axis, sign, _ = counting.EXTREMES[task.meta["side"]]
        best = max(objs, key=lambda o: sign * (o["box"][axis] + o["box"][axis + 2]))
        return f"{best['color']} {best['shape']}"
    area = collections.Counter()
    for o in objs:
        area[o["color"]] += int(shape_mask(o["shape"], o["box"][2] - o["box"][0]).sum())
    return area.most_common(1)[0][0]


def test_every_type_at_every_level_and_answers_match_the_scene(by_level):
    for level, tasks in by_level.items():
        kinds = collections.Counter(t.meta["question_type"] for t in tasks)
        assert set(kinds) == set(counting.QUESTION_TYPES), (level, kinds)
        for t in tasks:
            assert t.difficulty == level and len(t.images) == 1
            assert t.images[0].size == counting.CANVAS[level]
            lo, hi = counting.N_OBJECTS[level]
            assert lo <= len(t.meta["objects"]) <= max(hi, 13)
            assert t.answer == _expected(t), (t.task_id, t.question)
            kind = t.meta["question_type"]
            assert t.answer_type == {"count": "number", "total": "number",
                                     "compare": "choice"}.get(kind, "text")
            if kind == "compare":
                assert t.choices[:2] == tuple(t.meta["queries"])
                assert len(t.choices) == (2 if level == 1 else 3)
            if kind == "count" and level == 3:
                assert t.reference_plan[0].arguments["box"] == t.meta["box"]
                w, h = t.images[0].size  # nothing straddles the dividing line
                mid = w // 2 if t.meta["half"] in ("left", "right") else h // 2
                axis = 0 if t.meta["half"] in ("left", "right") else 1
                assert all(o["box"][axis + 2] <= mid or o["box"][axis] >= mid
                           for o in t.meta["objects"])
    assert len({t.question.split()[0] for ts in by_level.values() for t in ts}) >= 6


def test_plans_use_the_family_tools_and_key_args(by_level):
    for t in by_level[2] + by_level[3]:
        for step in t.reference_plan:
            assert step.tool in FAMILY.tools and step.think
            if step.tool != "calculator":  # what an image step reads: its image, at least
                assert "image" in step.key_args
            for alt in step.alternatives:
                assert alt.tool in FAMILY.tools
        assert t.meta["roles"] and len(t.meta["roles"]) == len(t.reference_plan)


def test_same_seed_same_task_and_image_bytes():
    a, b = make_task("counting", "val", 5), make_task("counting", "val", 5)
    assert a == b and a.meta == b.meta and encode_png(a.images[0]) == encode_png(b.images[0])
    seed = a.seed
    assert FAMILY.generate(seed, "val") == FAMILY.generate(seed, "val", draw_difficulty(seed))
    assert make_task("counting", "val", 6).question != a.question or \
        encode_png(make_task("counting", "val", 6).images[0]) != encode_png(a.images[0])


def test_splits_differ():
    train = make_tasks("counting", "train", 20)
    val = make_tasks("counting", "val", 20)
    assert {t.seed for t in train}.isdisjoint({t.seed for t in val})
    assert {encode_png(t.images[0]) for t in train}.isdisjoint({encode_png(t.images[0]) for t in val})


def test_bad_difficulty_is_refused():
    with pytest.raises(ValueError, match="difficulty"):
        FAMILY.generate(1, "train", 4)


def test_experts_verify_with_the_real_tools(client):
    for level in (1, 2, 3):
        _, stats = generate_expert_dataset("counting", "test", 40, client, difficulty=level,
                                           filter_correct=False, batch_size=20)
        assert stats["pass_rate"] == 1.0, (level, stats)


def _real_results(task, client):
    """The plan played against the real tools (results in plan order)."""
    image_id = client.upload_image(task.images[0])
    results = []
    for step in task.reference_plan:
        args = fill_template(step.arguments, FAMILY.bindings(task, results))
        args = {k: (image_id if v == "img_0" else v) for k, v in args.items()}
        results.append(client.call(step.tool, args))
    return results


def _answer(task, results):
    return fill_template(task.answer_template, FAMILY.bindings(task, results))


def test_answers_come_from_the_tool_results(client, by_level):
    tasks = by_level[2]
    seen = set()
    for t in tasks:
        kind = t.meta["question_type"]
        if kind in seen:
            continue
        seen.add(kind)
        results = _real_results(t, client)
        assert _answer(t, results) == t.answer
        doctored = [dict(r, data=dict(r["data"])) for r in results]
        if kind == "count":
            doctored[0]["data"]["count"] += 1
            assert _answer(t, doctored) == str(int(t.answer) + 1)
        elif kind == "total":
            doctored[2]["data"]["value"] += 3  # the calculator "said" something else
            assert _answer(t, doctored) == str(int(t.answer) + 3)
        elif kind == "compare":
            doctored[0]["data"]["count"], doctored[1]["data"]["count"] = 7, 2
            assert _answer(t, doctored) == "A"
        elif kind == "relation":  # swap the two boxes: the relation flips
            objs = [dict(o) for o in doctored[0]["data"]["objects"]]
            objs[0]["box"], objs[1]["box"] = objs[1]["box"], objs[0]["box"]
            doctored[0]["data"]["objects"] = objs
            assert _answer(t, doctored) == {"yes": "no", "no": "yes"}[t.answer]
        elif kind == "extreme":
            objs = [dict(o) for o in doctored[0]["data"]["objects"]]
            objs[0]["label"] = "black star" if objs[0]["label"] != "black star" else "red circle"
            objs[0]["box"] = [-50, -50, -40, -40] if t.meta["side"] in ("left", "top") \
                else [900, 900, 910, 910]
            doctored[0]["data"]["objects"] = objs
            assert _answer(t, doctored) == objs[0]["label"]
        else:
            doctored[0]["data"]["colors"] = [{"name": "cyan", "share": 0.9}]
            assert _answer(t, doctored) == "cyan"
        # a failed call leaves nothing to answer from
        failed = [{"ok": False, "error": {"code": "execution_failed"}}] + results[1:]
        with pytest.raises(KeyError):
            _answer(t, failed) if kind not in ("total",) else \
                fill_template(t.reference_plan[-1].arguments, FAMILY.bindings(t, failed[:1]))
    assert seen == set(counting.QUESTION_TYPES)
