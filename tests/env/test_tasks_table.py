"""The table-reading family and its table renderer: determinism by seed, splits, every
question type at every level, bindings that rebuild the table from OCR lines and boxes (a
perfect reader made from the renderer's layout, doctored results, and a sample played
against the real `ocr` tool and calculator)."""

import numpy as np
import pytest

from tools_server.images import encode_png
from vista_jax.env import VectorVistaEnv
from vista_jax.env.expert import run_expert_batch
from vista_jax.env.rewards import verify
from vista_jax.env.tasks import table_reading
from vista_jax.env.tasks.base import draw_difficulty, fill_template, get_family, make_tasks
from vista_jax.env.tasks.render_table import (FONT_SIZES, PAD_X, STYLES, layout_table,
                                              render_table, text_width)
from vista_jax.env.tasks.table_reading import parse_ocr_table

FAMILY = get_family("table_reading")


@pytest.fixture(scope="module")
def tasks_by_level():
    return {lvl: make_tasks("table_reading", "train", 40, difficulty=lvl) for lvl in (1, 2, 3)}


# --- a perfect reader: the OCR lines the renderer's layout implies -----------------------------

def _perfect_ocr(task, edit=None):
    """An `ocr` result with one line per cell, boxed around its centred text as drawn;
    `edit` maps (row, column) (row 0 the header) to a replacement text."""
    header, rows, size = task.meta["header"], task.meta["rows"], task.meta["font_size"]
    layout = layout_table(header, rows, size)
    lines = []
    for r, row in enumerate([header, *rows]):
        for c, text in enumerate(row):
            text = (edit or {}).get((r, c), text)
            x0, y0, x1, y1 = layout.cell_box(r, c)
            cx, cy, half = (x0 + x1) // 2, (y0 + y1) // 2, text_width(text, size) // 2 + 3
            lines.append({"text": text, "box": [cx - half, cy - size, cx + half, cy + size],
                          "score": 0.99})
    text = "\n".join(f"{ln['text']} @ {ln['box']}" for ln in lines)
    return {"ok": True, "text": text, "images": [], "data": {"lines": lines}}


def _calc(expression):
    from tools_server.tools.math_tools import evaluate_expression
    text, value, exact = evaluate_expression(expression)
    return {"ok": True, "text": text, "images": [], "data": {"value": value, "exact": exact}}


def _play(task, ocr_result):
    """The expert's answer with `ocr_result` for the ocr step and the real calculator."""
    results = [ocr_result]
    for step in task.reference_plan[1:]:
        args = fill_template(step.arguments, FAMILY.bindings(task, results))
        results.append(_calc(args["expression"]))
    return fill_template(task.answer_template, FAMILY.bindings(task, results))


# --- the renderer ------------------------------------------------------------------------------

def test_render_is_deterministic_and_laid_out():
    header, rows = ["Name", "Math", "Art"], [["Anna", "12", "7"], ["Ben", "101", "88"]]
    for style in STYLES:
        for size in FONT_SIZES:
            a, layout = render_table(header, rows, font_size=size, style=style)
            b, _ = render_table(header, rows, font_size=size, style=style)
            assert encode_png(a) == encode_png(b) and a.size == layout.size
            dark = np.asarray(a).max(axis=-1) < 100  # [H, W]: the text's ink
            x0, y0, x1, y1 = layout.cell_box(2, 1)  # "101"
            assert dark[y0 + 1:y1 - 1, x0 + PAD_X - 2:x1 - PAD_X + 2].any()
            assert not dark[y0 + 1:y1 - 1, x0 + 1:x0 + PAD_X - 2].any()  # cells keep a margin
            assert len(layout.col_edges) == 4 and len(layout.row_edges) == 4


def test_render_refuses_what_ocr_could_not_read_back():
    with pytest.raises(ValueError, match="one word"):
        render_table(["Name", "Math"], [["Anna Lee", "3"]])
    with pytest.raises(ValueError, match="columns"):
        render_table(["Name"], [["Anna"]])
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        render_table(["Name", "Math"], [["Anna"]])
    with pytest.raises(ValueError, match="style"):
        render_table(["Name", "Math"], [["Anna", "3"]], style="fancy")
    with pytest.raises(ValueError, match="font size"):
        render_table(["Name", "Math"], [["Anna", "3"]], font_size=9)
    with pytest.raises(ValueError, match="at most"):
        layout_table([f"Column{i}Wide" for i in range(8)], [["x"] * 8], 18)


# --- the family --------------------------------------------------------------------------------

def test_registered_with_its_names():
    assert FAMILY is table_reading.TABLE_READING
    assert (FAMILY.name, FAMILY.gym_name, FAMILY.tools) == \
           ("table_reading", "TableReading", ("ocr", "calculator"))


def test_same_seed_same_task_and_image_bytes():
    for seed in (5, 64, 901):
        a, b = FAMILY.generate(seed, "train"), FAMILY.generate(seed, "train")
        assert (a.question, a.answer, a.reference_plan) == (b.question, b.answer, b.reference_plan)
        assert encode_png(a.images[0]) == encode_png(b.images[0])
        fixed = FAMILY.generate(seed, "train", draw_difficulty(seed))
        assert fixed == a and encode_png(fixed.images[0]) == encode_png(a.images[0])


def test_splits_differ():
    train, val = make_tasks("table_reading", "train", 6), make_tasks("table_reading", "val", 6)
    assert [t.question for t in train] != [t.question for t in val]
    assert all(encode_png(a.images[0]) != encode_png(b.images[0]) for a, b in zip(train, val))


def test_every_type_at_every_level_and_bigger_tables_higher(tasks_by_level):
    cells = {}
    for lvl, tasks in tasks_by_level.items():
        assert {t.difficulty for t in tasks} == {lvl}
        assert {t.meta["question_type"] for t in tasks} == set(table_reading.QUESTION_TYPES)
        cells[lvl] = min(len(t.meta["rows"]) * len(t.meta["header"]) for t in tasks)
        for t in tasks:
            assert {s.tool for s in t.reference_plan} <= set(FAMILY.tools)
            assert t.reference_plan[0].tool == "ocr"
    assert cells[1] < cells[2] < cells[3]


def test_perfect_reader_gives_every_gold_answer(tasks_by_level):
    for tasks in tasks_by_level.values():
        for t in tasks:
            answer = _play(t, _perfect_ocr(t))
            assert verify(answer, t), (t.task_id, t.question, t.answer, answer)


def test_doctored_ocr_changes_the_answer(tasks_by_level):
    changed = 0
    for t in tasks_by_level[2]:
        if t.meta["question_type"] not in ("lookup", "row_aggregate", "compare") \
                or t.answer_type != "number":
            continue
        row = [r[0] for r in t.meta["rows"]].index(t.meta["row"] if "row" in t.meta
                                                    else t.meta["asked_rows"][0]) + 1
        column = t.meta["header"].index(t.meta["column"] if "column" in t.meta
                                        else t.meta["asked_columns"][0])
        doctored = _perfect_ocr(t, {(row, column): "1000"})
        assert _play(t, doctored) != _play(t, _perfect_ocr(t))
        assert not verify(_play(t, doctored), t)
        changed += 1
    assert changed >= 5


def test_parse_ocr_table_groups_rows_and_columns():
    lines = [{"text": t, "box": b} for t, b in [
        ("Name", [10, 10, 50, 30]), ("Wins", [80, 11, 120, 31]), ("Anna", [12, 41, 48, 60]),
        ("7", [95, 40, 104, 61]), ("12", [92, 72, 108, 92]), ("Ben", [15, 71, 45, 91])]]
    table = parse_ocr_table(lines)
    assert table.header == ("Name", "Wins")
    assert table.by_label() == {"Anna": {"Name": "Anna", "Wins": "7"},
                                "Ben": {"Name": "Ben", "Wins": "12"}}
    with pytest.raises(ValueError, match="no text"):
        parse_ocr_table([])
    with pytest.raises(ValueError, match="two cells"):
        parse_ocr_table(lines + [{"text": "3", "box": [100, 42, 110, 60]}])


def test_unreadable_ocr_leaves_bindings_missing():
    t = FAMILY.generate(3, "train", 1, question_type="lookup")
    assert FAMILY.bindings(t, [{"ok": True, "text": "", "data": {"lines": []}}]) == {}
    assert FAMILY.bindings(t, [{"ok": False, "error": {"code": "timeout", "message": ""}}]) == {}
    with pytest.raises(KeyError):
        fill_template(t.answer_template, {})


def _verify_with_real_tools(client, tasks):
    vec = VectorVistaEnv(client, len(tasks), family="table_reading", max_turns=4)
    outcomes = run_expert_batch(vec, tasks)
    failed = [(t.task_id, t.question, t.answer, info["answer"], info["error"])
              for t, (_, info) in zip(tasks, outcomes) if not info["verified"]]
    assert not failed, failed
    # the answer comes from what OCR returned: the ocr observation holds every text answer
    for t, (messages, _) in zip(tasks, outcomes):
        if t.answer_type == "text":
            assert t.answer in next(m["content"] for m in messages if m["role"] == "tool")


def test_experts_verify_with_the_real_tools(client):
    """Five tasks, every type and every level, against rapidocr and the calculator (OCR
    costs ~0.5 s a table on a quiet 2-core machine; the slow test below plays 30)."""
    picks = [("lookup", 1), ("column_aggregate", 2), ("row_aggregate", 3), ("argmax", 3),
             ("compare", 2)]
    _verify_with_real_tools(client, [FAMILY.generate(7000 + 13 * i, "test", lvl, question_type=q)
                                     for i, (q, lvl) in enumerate(picks)])


@pytest.mark.slow
def test_experts_verify_with_the_real_tools_on_every_type_and_level(client):
    tasks = [FAMILY.generate(7100 + 11 * i + lvl, "test", lvl, question_type=q)
             for lvl in (1, 2, 3) for i, q in enumerate(table_reading.QUESTION_TYPES)]
    _verify_with_real_tools(client, tasks + make_tasks("table_reading", "val", 15))
