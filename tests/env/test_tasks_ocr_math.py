"""The OCR and math-word families and their text renderer: determinism by seed, splits, every
question type at every level, plans whose bindings parse what the tools return (a perfect
reader built from the renderer's ink boxes, doctored results, and a sample played against
the real tools: rapidocr and sympy)."""

import collections

import pytest
import sympy

from tools_server.images import encode_png
from vista_jax.env import VectorVistaEnv
from vista_jax.env.expert import run_expert_batch
from vista_jax.env.rewards import verify
from vista_jax.env.tasks import math_word, ocr_text
from vista_jax.env.tasks.base import (draw_difficulty, fill_template, get_family, make_task,
                                      make_tasks)
from vista_jax.env.tasks.render_text import (MIN_SIZE, Panel, TextLine, misread_prone,
                                             render_text_image)

OCR = get_family("ocr_text")
MATH = get_family("math_word")


@pytest.fixture(scope="module")
def ocr_tasks():
    return {lvl: make_tasks("ocr_text", "train", 80, difficulty=lvl) for lvl in (1, 2, 3)}


@pytest.fixture(scope="module")
def math_tasks():
    return {lvl: make_tasks("math_word", "train", 80, difficulty=lvl) for lvl in (1, 2, 3)}


# --- a perfect reader: what the tools would return if they read the renderer's ink exactly --

def _inside(box, region):
    return (region[0] <= box[0] and box[2] <= region[2]
            and region[1] <= box[1] and box[3] <= region[3])


def _perfect_results(task):
    """Results for each plan step from the drawn texts (ocr: the texts in the read region, in
    the read image's frame; dominant_colors: the colour of the word in the band)."""
    texts = task.meta["texts"]
    colours = task.meta.get("facts", {}).get("words", {})
    results, zoom = [], None
    for step in task.reference_plan:
        args = step.arguments
        if step.tool == "zoom":
            zoom = (args["box"][0], args["box"][1], args["factor"])
            results.append({"ok": True, "text": "zoomed", "images": ["z"], "data": {}})
            continue
        if step.tool not in ("ocr", "dominant_colors"):
            results.append(None)  # computed by the caller
            continue

        def frame(box):
            if zoom is None or args["image"] != "img_1":
                return list(box)
            ox, oy, f = zoom
            return [(box[0] - ox) * f, (box[1] - oy) * f, (box[2] - ox) * f, (box[3] - oy) * f]

        region = args.get("box") or [0, 0, 10_000, 10_000]
        inside = [(t, frame(b)) for t, b in texts if _inside(frame(b), region)]
        if zoom is not None and args["image"] == "img_1":  # the zoomed quadrant only
            w, h = task.images[0].size
            inside = [(t, b) for t, b in inside if b[0] >= 0 and b[1] >= 0
                      and b[2] <= w and b[3] <= h]
        if step.tool == "ocr":
            lines = [{"text": t, "box": b, "score": 1.0} for t, b in inside]
            results.append({"ok": True, "text": "", "images": [], "data": {"lines": lines}})
        else:
            [(word, _)] = inside
            results.append({"ok": True, "text": "", "images": [],
                            "data": {"colors": [{"name": colours[word], "share": 1.0}]}})
    return results


# --- generation -------------------------------------------------------------------------

@pytest.mark.parametrize("name, types", [("ocr_text", ocr_text.QUESTION_TYPES),
                                         ("math_word", math_word.QUESTION_TYPES)])
def test_every_type_at_every_level(name, types, ocr_tasks, math_tasks):
    tasks = ocr_tasks if name == "ocr_text" else math_tasks
    family = get_family(name)
    for level, ts in tasks.items():
        assert set(collections.Counter(t.meta["question_type"] for t in ts)) == set(types), level
        for t in ts:
            assert t.difficulty == level and t.meta["question_type"] in types
            assert t.answer and t.question.strip()
            assert all(s.tool in family.tools and s.think for s in t.reference_plan)
            assert all(a.tool in family.tools for s in t.reference_plan for a in s.alternatives)
            assert all(s.key_args for s in t.reference_plan)
            assert not any(misread_prone(text) for text, _ in t.meta["texts"]), t.meta["texts"]
    assert len({t.question.split()[0] for ts in tasks.values() for t in ts}) >= 4


@pytest.mark.parametrize("name", ["ocr_text", "math_word"])
def test_same_seed_same_task_and_image_bytes(name):
    a, b = make_task(name, "val", 3), make_task(name, "val", 3)
    assert a == b and a.meta == b.meta and encode_png(a.images[0]) == encode_png(b.images[0])
    family = get_family(name)
    assert family.generate(a.seed, "val") == family.generate(a.seed, "val", draw_difficulty(a.seed))
    with pytest.raises(ValueError, match="difficulty"):
        family.generate(a.seed, "val", 0)


@pytest.mark.parametrize("name", ["ocr_text", "math_word"])
def test_splits_differ(name):
    train, test = make_tasks(name, "train", 15), make_tasks(name, "test", 15)
    assert {t.seed for t in train}.isdisjoint({t.seed for t in test})
    assert {encode_png(t.images[0]) for t in train}.isdisjoint({encode_png(t.images[0]) for t in test})


def test_ocr_answers_match_what_was_drawn(ocr_tasks):
    for ts in ocr_tasks.values():
        for t in ts:
            kind, facts = t.meta["question_type"], t.meta["facts"]
            drawn = [text for text, _ in t.meta["texts"]]
            if kind == "label_code":
                assert any(text.endswith(t.answer) and text.startswith("Code") for text in drawn)
                assert set(t.answer) <= set(ocr_text.CODE_LETTERS + ocr_text.CODE_DIGITS + "-")
            elif kind == "colored_word":
                assert facts["words"][t.answer] == facts["color"] and facts["color"] in t.question
            elif kind == "largest_word":
                sizes = sorted(facts["sizes"].values())
                assert facts["sizes"][t.answer] == sizes[-1] >= 1.5 * sizes[-2]
            elif kind == "poster_title":
                assert t.answer in drawn and t.answer.split()[0] in ocr_text.TITLE_FIRST
            else:
                assert facts["name"] in t.question and t.answer == str(facts["rows"][facts["name"]])
            # the level's reading step
            tools = [s.tool for s in t.reference_plan]
            assert tools[-1] == "ocr"
            if t.difficulty == 3:
                assert tools[0] == "zoom"
                assert t.reference_plan[0].arguments["box"] == t.meta["region_box"]
            elif t.difficulty == 2 and kind != "colored_word":
                assert t.reference_plan[-1].arguments["box"] == t.meta["region_box"]


def test_math_answers_are_right(math_tasks):
    for ts in math_tasks.values():
        for t in ts:
            kind = t.meta["question_type"]
            if kind == "equation":
                v = sympy.Symbol(t.meta["var"])
                lhs, rhs = t.meta["equation"].replace("^", "**").split("=")
                expr = sympy.parse_expr(f"({lhs}) - ({rhs})", transformations="all")
                assert sympy.solve(expr, v) == [int(t.answer)]
            elif kind == "simplify":
                got = sympy.parse_expr(t.meta["expression"].replace("^", "**"),
                                       transformations="all")
                assert sympy.simplify(got - sympy.sympify(t.answer)) == 0
                assert t.answer_type == "expression"
                # the expression as shown is equivalent, but not an answer
                assert not verify(t.meta["expression"], t) and verify(t.answer, t)
            elif kind == "price_total":
                prices = {k.lower(): float(v) for k, v in t.meta["prices"].items()}
                total = sum(q * prices[k.lower()] for k, q in t.meta["bought"].items())
                assert abs(total - float(t.answer)) < 1e-9
            # every number the question needs is drawn, with no currency sign
            assert all("$" not in text for text, _ in t.meta["texts"])


# --- bindings: from the tools' results, not the ground truth ----------------------------

def test_perfect_reader_gives_the_gold_answer(ocr_tasks):
    for ts in ocr_tasks.values():
        for t in ts:
            results = _perfect_results(t)
            b = OCR.bindings(t, results)
            assert fill_template(t.answer_template, b) == t.answer, t.task_id
            assert "{" not in fill_template(t.final_think, b)


def test_ocr_answer_is_what_ocr_said(ocr_tasks):
    for kind in ocr_text.QUESTION_TYPES:
        t = next(t for t in ocr_tasks[1] if t.meta["question_type"] == kind)
        results = _perfect_results(t)
        lines = results[-1]["data"]["lines"]
        target = next(ln for ln in lines if (ln["text"] == t.answer if kind == "line_number"
                                             else t.answer in ln["text"]))
        doctored_text = target["text"].replace(t.answer, {"line_number": "77"}.get(kind, "KM-999"))
        lines[lines.index(target)] = dict(target, text=doctored_text)
        got = fill_template(t.answer_template, OCR.bindings(t, results))
        assert got == {"line_number": "77"}.get(kind, "KM-999"), (kind, got)
    # a colour the tool did not report stops the expert instead of guessing
    t = next(t for t in ocr_tasks[2] if t.meta["question_type"] == "colored_word")
    results = _perfect_results(t)
    results[-2]["data"]["colors"][0]["name"] = "gray"
    with pytest.raises(KeyError):
        fill_template(t.answer_template, OCR.bindings(t, results))
    # a failed read likewise
    with pytest.raises(KeyError):
        fill_template(t.answer_template, OCR.bindings(t, results[:-1] + [
            {"ok": False, "error": {"code": "timeout"}}]))
    # bindings also parse the text form of an ocr result
    t = next(t for t in ocr_tasks[1] if t.meta["question_type"] == "label_code")
    res = _perfect_results(t)[-1]
    text = "\n".join(f"{ln['text']} @ [{', '.join(map(str, ln['box']))}]"
                     for ln in res["data"]["lines"])
    b = OCR.bindings(t, [{"ok": True, "text": text, "images": [], "data": {}}])
    assert b["code"] == t.answer


def test_a_whole_image_read_is_narrowed_to_the_named_part(ocr_tasks, math_tasks):
    """The plan's alternative to a region read (ocr of all of img_0) binds the same values:
    the other half's text (a second label, price list, board) is left out."""
    whole = lambda t: {"ok": True, "text": "", "images": [], "data": {"lines": [  # noqa: E731
        {"text": text, "box": box, "score": 1.0} for text, box in t.meta["texts"]]}}
    checked = collections.Counter()
    for t in ocr_tasks[2]:
        if t.meta["question_type"] != "colored_word":
            assert [a.tool for a in t.reference_plan[-1].alternatives] == ["ocr"]
            assert fill_template(t.answer_template, OCR.bindings(t, [whole(t)])) == t.answer
            checked["ocr_text"] += 1
    for t in math_tasks[3]:
        assert [a.tool for a in t.reference_plan[0].alternatives] == ["ocr"]
        assert MATH.bindings(t, [whole(t)]) == MATH.bindings(t, _perfect_results(t)[:1])
        checked["math_word"] += 1
    assert min(checked.values()) > 20


def _math_results(task, client, doctor=None):
    results = _perfect_results(task)
    if doctor:
        doctor(results[0]["data"]["lines"])
    compute = task.reference_plan[1]
    args = fill_template(compute.arguments, MATH.bindings(task, results[:1]))
    results[1] = client.call(compute.tool, args)
    return results, args


def test_math_plans_compute_from_what_ocr_read(math_tasks, client):
    seen = collections.Counter()
    for ts in math_tasks.values():
        for t in ts[:30]:
            results, _ = _math_results(t, client)
            got = fill_template(t.answer_template, MATH.bindings(t, results))
            assert verify(got, t), (t.task_id, got, t.answer)
            seen[t.meta["question_type"]] += 1
    assert set(seen) == set(math_word.QUESTION_TYPES)
    # a price read differently changes the calculator's expression and the answer
    t = next(t for t in math_tasks[2] if t.meta["question_type"] == "price_total")
    item = next(iter(t.meta["bought"]))

    def misread(lines):
        i = next(i for i, ln in enumerate(lines) if ln["text"] == item)
        price = lines[i + 1]
        lines[i + 1] = dict(price, text=str(float(price["text"]) + 1))

    results, args = _math_results(t, client, misread)
    got = fill_template(t.answer_template, MATH.bindings(t, results))
    assert float(got) == pytest.approx(float(t.answer) + t.meta["bought"][item])
    assert not verify(got, t)
    # the equation solved is the one OCR read
    t = next(t for t in math_tasks[1] if t.meta["question_type"] == "equation")

    def other_equation(lines):
        i = next(i for i, ln in enumerate(lines) if "=" in ln["text"])
        lines[i] = dict(lines[i], text=f"2{t.meta['var']} = 50")

    results, args = _math_results(t, client, other_equation)
    assert args["equations"] == f"2{t.meta['var']} = 50"
    assert fill_template(t.answer_template, MATH.bindings(t, results)) == "25"


def _sample(name, tasks):
    """One task per question type, the levels cycling 1, 2, 3 over the types."""
    types = (ocr_text if name == "ocr_text" else math_word).QUESTION_TYPES
    return [next(t for t in tasks[i % 3 + 1] if t.meta["question_type"] == kind)
            for i, kind in enumerate(types)]


def test_experts_verify_with_the_real_tools(client, ocr_tasks, math_tasks):
    for name, tasks in (("ocr_text", ocr_tasks), ("math_word", math_tasks)):
        sample = _sample(name, tasks)
        vec = VectorVistaEnv(client, len(sample), family=name, max_turns=8)
        outcomes = run_expert_batch(vec, sample)
        for task, (_, info) in zip(sample, outcomes):
            assert info["verified"], (task.task_id, task.question, task.answer, info)


@pytest.mark.slow
def test_experts_verify_with_the_real_tools_every_type_and_level(client, ocr_tasks, math_tasks):
    for name, tasks in (("ocr_text", ocr_tasks), ("math_word", math_tasks)):
        types = (ocr_text if name == "ocr_text" else math_word).QUESTION_TYPES
        sample = [next(t for t in tasks[lvl] if t.meta["question_type"] == kind)
                  for lvl in (1, 2, 3) for kind in types]
        vec = VectorVistaEnv(client, len(sample), family=name, max_turns=8)
        for task, (_, info) in zip(sample, run_expert_batch(vec, sample)):
            assert info["verified"], (task.task_id, task.question, task.answer, info)


# --- the renderer ---------------------------------------------------------------------

def test_misread_prone_numbers():
    for text in ("213", "Distance: 210 km", "721x + 7", "2.15", "11"):
        assert misread_prone(text), text
    for text in ("15", "1.25", "Price: 120", "3x + 7 = 23", "Code KX-482"):
        assert not misread_prone(text), text


def test_render_text_is_deterministic_and_reports_ink_boxes():
    panels = [Panel((10, 10, 200, 120), (TextLine("Summer Fair", 24, align="center"),
                                         TextLine("Apple", 14, right="2.50"),
                                         TextLine("Code KX-4827", 14, "red", crisp=True)),
                    fill="cream", outline="black")]
    a, placed = render_text_image(panels)
    b, _ = render_text_image(panels)
    assert encode_png(a) == encode_png(b)
    assert [p.text for p in placed] == ["Summer Fair", "Apple", "2.50", "Code KX-4827"]
    px = a.load()
    red = placed[-1]
    inks = {px[x, y] for x in range(red.box[0], red.box[2]) for y in range(red.box[1], red.box[3])}
    assert inks <= {(220, 30, 30), (255, 246, 214)}  # crisp: exactly the colour or the fill
    assert abs(placed[2].box[2] - (200 - 8)) <= 1 and placed[1].box[0] == 18  # flush right


@pytest.mark.parametrize("panel, message", [
    (Panel((10, 10, 200, 120), (TextLine("Price $2", 14),)), "characters"),
    (Panel((10, 10, 200, 120), (TextLine("Price", 14, "teal"),)), "colour"),
    (Panel((10, 10, 60, 120), (TextLine("A long line of text", 14),)), "width"),
    (Panel((10, 10, 200, 30), (TextLine("One", 14), TextLine("Two", 14))), "height"),
    (Panel((10, 10, 400, 120), (TextLine("One", 14),)), "inside the canvas"),
    (Panel((10, 10, 200, 120), (TextLine("Tiny", MIN_SIZE - 2),)), "font size"),
])
def test_render_text_refuses_bad_input(panel, message):
    with pytest.raises(ValueError, match=message):
        render_text_image([panel])

