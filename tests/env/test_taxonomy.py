"""The error taxonomy (env.taxonomy): each class from trajectories played through VistaEnv
with the real tools (InProcessToolClient) on chart_qa tasks, and from records built by hand;
precedence between classes, recovery, plan matching (key_args, alternatives, image
handles), tasks without a plan, and the distribution table.

`play`, `call`, `answer` and `chart_tasks` are imported by test_viewer_eval.py."""

import collections
import dataclasses
import json

import pytest

from vista_jax import protocol
from vista_jax.env import (PlanStep, TrajectoryWriter, VistaEnv, expert_messages, make_tasks,
                           read_trajectories)
from vista_jax.env import taxonomy as tx

TOOLS = ("bar_values", "chart_to_table", "calculator", "crop")


def call(name, arguments, think="Use a tool."):
    return protocol.render_assistant_turn(think, tool_call=protocol.ToolCall(name, arguments))


def answer(value, think="Done."):
    return protocol.render_assistant_turn(think, answer=str(value))


BAD_JSON = '<think>x</think><tool_call>{"name": "bar_values", </tool_call>'


def play(env, task, turns):
    """Plays `turns` (assistant texts) on `task`; truncates if they run out before the
    episode ends; returns the trajectory record."""
    env.reset(options={"task": task})
    for text in turns:
        if env.done:
            break
        env.step(text)
    if not env.done:
        env.truncate()
    return env.trajectory()


def play_expert(env, client, task, prefix=()):
    """`prefix` turns, then the expert's plan (whatever the prefix did) through `env`."""
    env.reset(options={"task": task})
    for text in prefix:
        env.step(text)
    return expert_messages(task, client, env=_Continuing(env))[1], env.trajectory()


class _Continuing:
    """An env view whose reset keeps the episode going (to play the expert after a prefix)."""

    def __init__(self, env):
        self.env = env

    def reset(self, **_):
        return None

    def __getattr__(self, name):
        return getattr(self.env, name)


def chart_tasks(n=60):
    """The first level-1 (bar chart) chart_qa train task of each question type."""
    out = {}
    for task in make_tasks("chart_qa", "train", n, difficulty=1):
        out.setdefault(task.meta["question_type"], task)
    return out


@pytest.fixture(scope="module")
def env(client):
    return VistaEnv(client, family="chart_qa", max_turns=6, tools=TOOLS)


@pytest.fixture(scope="module")
def tasks():
    return chart_tasks()


def _other_label(task):
    asked = task.meta["asked"]
    return next(label for label in task.meta["table"] if label not in asked)


def _check(record, task, label, turn="any", contains=None):
    """classify with the task and with the task rebuilt from the record agree on `label`."""
    for got in (tx.classify(record, task), tx.classify(record)):
        assert got.label == label, got
        if turn != "any":
            assert got.turn == turn, got
        if contains:
            assert contains in got.explanation, got
    return got


# --- each class, played through the env ------------------------------------------------

def test_correct_expert_trajectories(env, client, tasks):
    for qtype, task in tasks.items():
        _, record = play_expert(env, client, task)
        assert record["correct"], qtype
        got = _check(record, task, "correct", turn=None)
        assert "recovering" not in got.explanation


def test_recovery_from_early_errors_is_correct(env, client, tasks):
    task = tasks["difference"]
    _, record = play_expert(env, client, task, prefix=[
        BAD_JSON, call("calculator", {"expr": "1 + 1"})])
    assert record["correct"]
    got = _check(record, task, "correct", turn=None)
    assert "E1 at turn 0" in got.explanation and "E2 at turn 1" in got.explanation


@pytest.mark.parametrize("bad", [
    BAD_JSON,                                                    # bad JSON
    '<tool_call>{"name": 3, "arguments": {}}</tool_call>',         # bad envelope
    "<answer>1</answer><answer>2</answer>",                        # multiple actions
    "<think>just thinking</think>",                                # no action
    "<think>open",                                                 # unclosed tag
])
def test_e1_unparsed_turn_then_wrong_answer(env, tasks, bad):
    task = tasks["lookup"]
    record = play(env, task, [bad, answer(int(task.answer) + 1)])
    assert record["turns"][0]["kind"] == "invalid"
    _check(record, task, "E1", turn=0)


def test_e1_truncated_with_malformed_last_turn(env, tasks):
    task = tasks["lookup"]
    record = play(env, task, ["no tags at all"] * 6)
    assert record["truncated"] and record["answer"] is None
    _check(record, task, "E1", turn=5, contains="no answer")


@pytest.mark.parametrize("turn0", [
    call("calculator", {"expr": "1 + 1"}),                 # unknown_argument
    call("bar_value", {"image": "img_0", "labels": ["x"]}),  # unknown_tool (rejected by the env)
])
def test_e2_unknown_tool_or_argument(env, tasks, turn0):
    task = tasks["lookup"]
    record = play(env, task, [turn0, answer(int(task.answer) + 1)])
    assert record["turns"][0]["error"] in ("unknown_argument", "unknown_tool")
    _check(record, task, "E2", turn=0)


@pytest.mark.parametrize("arguments", [
    {"image": "img_0", "labels": ["NoSuchBar"]},  # invalid_argument
    {"image": "img_7", "labels": ["x"]},          # image_not_found
    {"labels": ["x"]},                            # missing_argument
])
def test_e3_invalid_argument_value(env, tasks, arguments):
    task = tasks["lookup"]
    record = play(env, task, [call("bar_values", arguments), answer(int(task.answer) + 1)])
    assert record["turns"][0]["error"] in ("invalid_argument", "image_not_found",
                                           "missing_argument")
    _check(record, task, "E3", turn=0)


def test_e4_valid_call_on_the_wrong_bar(env, tasks):
    task = tasks["lookup"]
    other = _other_label(task)
    record = play(env, task, [call("bar_values", {"image": "img_0", "labels": [other]}),
                              answer(task.meta["table"][other])])
    assert record["turns"][0]["tool_result"]["ok"] and not record["correct"]
    _check(record, task, "E4", turn=0, contains=other)


def test_e4_skipped_the_tools(env, tasks):
    task = tasks["lookup"]
    record = play(env, task, [answer(int(task.answer) + 1)])
    _check(record, task, "E4", turn=0, contains="skipped the tools")


def test_e4_skipped_a_later_step(env, tasks):
    task = tasks["difference"]
    a, b = task.meta["asked"]
    record = play(env, task, [call("bar_values", {"image": "img_0", "labels": [a, b]}),
                              answer(int(task.answer) + 1)])
    _check(record, task, "E4", turn=1, contains="plan step 1 (calculator)")


@pytest.mark.parametrize("qtype", ["lookup", "max", "difference"])
def test_e5_answer_contradicts_the_tool(env, client, tasks, qtype):
    """The expert's calls, then a different answer: the right value was in a tool output."""
    task = tasks[qtype]
    _, record = play_expert(env, client, task)
    turns = [t["text"] for t in record["turns"][:-1]]
    wrong = (next(label for label in task.meta["table"] if label != task.answer)
             if qtype == "max" else int(task.answer) + 1)
    record = play(env, task, turns + [answer(wrong)])
    _check(record, task, "E5", turn=len(turns), contains=repr(task.answer))


def test_e6_no_answer_after_valid_calls(env, tasks):
    task = tasks["lookup"]
    a = task.meta["asked"][0]
    record = play(env, task, [call("bar_values", {"image": "img_0", "labels": [a]})] * 6)
    assert record["truncated"]
    _check(record, task, "E6", turn=5, contains="no answer after valid tool use")


def test_e6_wrong_value_not_in_any_output(env, tasks):
    """A plan that leaves the arithmetic to the policy: covered, the answer appears nowhere."""
    task = next(t for t in make_tasks("chart_qa", "train", 200, difficulty=1)
                if t.meta["question_type"] == "difference"
                and t.answer not in map(str, t.meta["table"].values()))
    short = dataclasses.replace(task, reference_plan=task.reference_plan[:1])
    a, b = task.meta["asked"]
    wrong = int(task.answer) + 1000  # a value no bar has
    record = play(env, short, [call("bar_values", {"image": "img_0", "labels": [a, b]}),
                               answer(wrong)])
    got = tx.classify(record, short)
    assert got.label == "E6" and got.turn == 1, got


class FlakyClient:
    """The real tools, except that the first `fail` calls of `tool` time out."""

    def __init__(self, inner, tool, fail=1, code="timeout"):
        self.inner, self.tool, self.left, self.code = inner, tool, fail, code

    def batch(self, calls):
        out = []
        for name, args in calls:
            if name == self.tool and self.left > 0:
                self.left -= 1
                out.append({"ok": False, "error": {"code": self.code, "message": "injected"}})
            else:
                out.extend(self.inner.batch([(name, args)]))
        return out

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_tool_failure_on_the_needed_call(client, tasks):
    task = tasks["lookup"]
    a = task.meta["asked"][0]
    flaky = FlakyClient(client, "bar_values", code="execution_failed")
    env = VistaEnv(flaky, family="chart_qa", max_turns=4, tools=TOOLS)
    record = play(env, task, [call("bar_values", {"image": "img_0", "labels": [a]}),
                              answer(int(task.answer) + 1)])
    assert record["turns"][0]["taxonomy"] == "service"
    _check(record, task, "tool_failure", turn=0, contains="execution_failed")


def test_tool_failure_from_misreporting_tools(env, client, tasks):
    """The expert's answer from the tools' outputs is wrong and the policy gave exactly it:
    the tools, not the policy, are at fault (simulated by a task whose truth differs from
    what the chart shows)."""
    task = tasks["lookup"]
    _, record = play_expert(env, client, task)
    lied = dataclasses.replace(task, answer=str(int(task.answer) + 5))
    record = play(env, lied, [t["text"] for t in record["turns"]])
    assert not record["correct"]
    got = tx.classify(record, lied)
    assert got.label == "tool_failure" and "expert would answer the same" in got.explanation


def test_expert_calls_cover_their_own_plan_at_every_level(client):
    """The expert's calls, then a wrong answer: E5/E6 (never E4) on every chart_qa level;
    without the expert's first call: E4."""
    env = VistaEnv(client, family="chart_qa", max_turns=8)
    labels = collections.Counter()
    for task in make_tasks("chart_qa", "train", 24):
        _, record = play_expert(env, client, task)
        assert record["correct"], task.task_id
        calls = [t["text"] for t in record["turns"][:-1]]
        wrong = "no such label" if task.answer_type == "text" else "-12345"
        got = tx.classify(play(env, task, calls + [answer(wrong)]), task)
        assert got.label in ("E5", "E6"), (task.task_id, got)
        assert tx.classify(play(env, task, calls[1:] + [answer(wrong)]), task).label == "E4"
        labels[task.difficulty] += 1
    assert set(labels) == {1, 2, 3}


# --- precedence ------------------------------------------------------------------------

def test_e4_beats_an_earlier_rejected_call(env, tasks):
    task = tasks["lookup"]
    other = _other_label(task)
    record = play(env, task, [call("bar_values", {"image": "img_0", "labels": ["Nope"]}),
                              call("bar_values", {"image": "img_0", "labels": [other]}),
                              answer(task.meta["table"][other])])
    _check(record, task, "E4", turn=1)


@pytest.mark.parametrize("order,label", [(("E3", "E1"), "E1"), (("E1", "E3"), "E3")])
def test_the_last_policy_error_is_blamed(env, tasks, order, label):
    task = tasks["lookup"]
    turns = {"E3": call("bar_values", {"image": "img_0", "labels": ["Nope"]}), "E1": BAD_JSON}
    record = play(env, task, [turns[order[0]], turns[order[1]], answer(int(task.answer) + 1)])
    _check(record, task, label, turn=1)


def test_covered_plan_after_errors_is_judged_on_the_answer(env, tasks):
    task = tasks["lookup"]
    a = task.meta["asked"][0]
    record = play(env, task, [call("calculator", {"expr": "1"}), BAD_JSON,
                              call("bar_values", {"image": "img_0", "labels": [a]}),
                              answer(int(task.answer) + 1)])
    _check(record, task, "E5", turn=3)


def test_unanswered_episode_blames_its_last_turn(env, tasks):
    task = tasks["lookup"]
    other = _other_label(task)
    wrong = call("bar_values", {"image": "img_0", "labels": [other]})
    record = play(env, task, [wrong] + ["garbage"] * 5)
    _check(record, task, "E1", turn=5)
    rejected = call("bar_values", {"image": "img_0", "labels": ["No"]})
    record = play(env, task, [wrong] + [rejected] * 5)
    _check(record, task, "E3", turn=5)
    record = play(env, task, [wrong, wrong])  # truncated by hand after a valid call
    _check(record, task, "E4", turn=0)


def test_service_failure_then_wrong_content_is_the_services_fault(client, tasks):
    task = tasks["lookup"]
    a, other = task.meta["asked"][0], _other_label(task)
    env = VistaEnv(FlakyClient(client, "bar_values"), family="chart_qa", max_turns=4, tools=TOOLS)
    record = play(env, task, [call("bar_values", {"image": "img_0", "labels": [a]}),
                              call("bar_values", {"image": "img_0", "labels": [other]}),
                              answer(task.meta["table"][other])])
    _check(record, task, "tool_failure", turn=0)


def test_retry_after_service_failure_is_judged_on_the_answer(client, tasks):
    task = tasks["lookup"]
    a = task.meta["asked"][0]
    env = VistaEnv(FlakyClient(client, "bar_values"), family="chart_qa", max_turns=4, tools=TOOLS)
    read = call("bar_values", {"image": "img_0", "labels": [a]})
    record = play(env, task, [read, read, answer(int(task.answer) + 1)])
    _check(record, task, "E5", turn=2)


# --- plan matching ---------------------------------------------------------------------

@pytest.mark.parametrize("a,b,equal", [
    ("Alpha", " alpha ", True), ("North West", "northwest", True), ("Alpha", "Beta", False),
    ("41 - 23", "41-23", True), (1.0, 1.0000001, True), (1.0, 1.001, False), (3, "3", True),
    (["A", "B"], ["a", "b"], True), (["A", "B"], ["B", "A"], False), (["A"], ["A", "B"], False),
    ("img_0", "img_1", False), ({"x": 1}, {"x": 1.0}, True), (True, 1, False), (None, None, True),
])
def test_values_equal(a, b, equal):
    assert tx.values_equal(a, b) is equal


def test_key_args_ignore_style_arguments(env, tasks):
    task = tasks["lookup"]
    a = task.meta["asked"][0]
    args = {"image": "img_0", "labels": [a], "order": "chart"}
    strict = dataclasses.replace(task, reference_plan=(PlanStep("bar_values", args, "t"),))
    keyed = dataclasses.replace(task, reference_plan=(
        PlanStep("bar_values", args, "t", key_args=("image", "labels")),))
    record = play(env, task, [call("bar_values", {"image": "img_0", "labels": [a]}),
                              answer(int(task.answer) + 1)])
    assert tx.classify(record, strict).label == "E4"
    assert tx.classify(record, keyed).label == "E5"


def test_extra_arguments_select_other_content_unless_key_args_say_otherwise(env, tasks):
    task = tasks["lookup"]
    other = _other_label(task)
    every_bar = PlanStep("bar_values", {"image": "img_0"}, "t")
    plan = lambda step: dataclasses.replace(task, reference_plan=(step,))  # noqa: E731
    record = play(env, task, [call("bar_values", {"image": "img_0", "labels": [other]}),
                              answer(int(task.answer) + 1)])
    assert tx.classify(record, plan(every_bar)).label == "E4"
    by_image = dataclasses.replace(every_bar, key_args=("image",))
    assert tx.classify(record, plan(by_image)).label == "E6"  # covered; the value is absent


def test_alternatives_cover_a_step(env, tasks):
    task = tasks["lookup"]
    step = dataclasses.replace(task.reference_plan[0], alternatives=())
    alt = PlanStep("chart_to_table", {"image": "img_0"}, "t")
    without_alt = dataclasses.replace(task, reference_plan=(step,))
    with_alt = dataclasses.replace(task, reference_plan=(
        dataclasses.replace(step, alternatives=(alt,)),))
    record = play(env, task, [call("chart_to_table", {"image": "img_0"}),
                              answer(int(task.answer) + 1)])
    assert tx.classify(record, without_alt).label == "E4"
    got = tx.classify(record, with_alt)
    assert got.label == "E5", got


def test_plan_handles_follow_the_policys_images(env, tasks):
    """The plan's `img_1` is the image its crop made; the policy's crop got `img_2`."""
    task = tasks["lookup"]
    a = task.meta["asked"][0]
    w, h = task.images[0].size
    plan = (PlanStep("crop", {"image": "img_0", "box": [0, 0, w, h]}, "t"),
            PlanStep("bar_values", {"image": "img_1", "labels": [a]}, "t"))
    cropped = dataclasses.replace(task, reference_plan=plan)
    record = play(env, task, [call("crop", {"image": "img_0", "box": [0, 0, 20, 20]}),
                              call("crop", {"image": "img_0", "box": [0, 0, w, h]}),
                              call("bar_values", {"image": "img_2", "labels": [a]}),
                              answer(int(task.answer) + 1)])
    assert record["turns"][1]["image_handles"] == ["img_2"]
    assert record["turns"][2]["tool_result"]["ok"], record["turns"][2]
    got = tx.classify(record, cropped)
    assert got.label == "E5", got
    record = play(env, task, [call("crop", {"image": "img_0", "box": [0, 0, 20, 20]}),
                              call("crop", {"image": "img_0", "box": [0, 0, w, h]}),
                              call("bar_values", {"image": "img_0", "labels": [a]}),
                              answer(int(task.answer) + 1)])
    assert tx.classify(record, cropped).label == "E4"


@pytest.mark.parametrize("value,text,kind,present", [
    ("18", "Alpha | 41\nBeta | 18", "number", True),
    ("-23", "41-23", "number", False),       # '-' after a digit is an operator
    ("-23", "value: -23", "number", True),
    ("1200", "total 1,200 units", "number", True),
    ("Zeta", "Zeta | 75", "text", True),
    ("Zeta", "Zetas | 75", "text", False),
    ("x + 1", "result: x+1", "expression", True),
])
def test_value_in_text(value, text, kind, present):
    assert tx.value_in_text(value, text, kind) is present


def test_choice_present_by_its_option_text():
    assert tx.value_in_text("B", "the shape is a square", "choice", choices=("circle", "square"))
    assert not tx.value_in_text("B", "B", "choice")  # no options: a bare letter proves nothing


# --- records built by hand; tasks without a plan ---------------------------------------

def _turn(kind, *, name=None, arguments=None, result=None, error=None, answer_text=None):
    return {"text": "", "kind": kind, "think": None,
            "tool_call": None if name is None else {"name": name, "arguments": arguments or {}},
            "tool_result": result, "answer": answer_text, "error": error, "taxonomy": None,
            "latency_s": 0.0, "image_handles": [], "images": []}


def _ok(text):
    return {"ok": True, "text": text, "images": [], "data": {}}


def _err(code):
    return {"ok": False, "error": {"code": code, "message": "m"}}


def _record(turns, answer_text="7", gold="42", correct=False, family="docvqa"):
    return {"task_id": f"{family}/test/0", "family": family, "split": "test", "seed": 0,
            "source": "docvqa", "question": "q?", "question_type": "lookup",
            "gold_answer": gold, "answer_type": "number", "images": [], "turns": turns,
            "answer": answer_text, "correct": correct, "reward": 0.0, "reward_components": {},
            "terminated": answer_text is not None, "truncated": answer_text is None,
            "num_turns": len(turns)}


ANSWER = _turn("answer", answer_text="7")


@pytest.mark.parametrize("turns,label,turn", [
    ([_turn("tool_call", name="ocr", result=_ok("total: 42")), ANSWER], "E5", 1),
    ([_turn("tool_call", name="ocr", result=_ok("total: 41")), ANSWER], "E6", 1),
    ([ANSWER], "E6", 0),  # no calls: E4 is not judged without a plan
    ([_turn("tool_call", name="ocr", result=_err("invalid_argument"),
            error="invalid_argument"), ANSWER], "E3", 0),
    ([_turn("tool_call", name="ocr", result=_err("invalid_argument")),
      _turn("tool_call", name="ocr", result=_ok("total: 41")), ANSWER], "E6", 2),  # recovered
    ([_turn("invalid", error="bad_json"), _turn("tool_call", name="ocr", result=_ok("41")),
      ANSWER], "E6", 2),
    ([_turn("tool_call", name="zoom", result=_err("unknown_tool")), ANSWER], "E2", 0),
    ([_turn("tool_call", name="ocr", result=_err("timeout")), ANSWER], "tool_failure", 0),
    ([_turn("tool_call", name="ocr", result=_err("overloaded")),
      _turn("tool_call", name="ocr", result=_ok("41")), ANSWER], "E6", 2),
])
def test_dataset_records_without_a_plan(turns, label, turn):
    got = tx.classify(_record(turns))
    assert (got.label, got.turn) == (label, turn), got
    if label not in ("E2", "E3", "tool_failure"):
        assert "E4 not judged" in got.explanation


def test_unanswered_records_built_by_hand():
    got = tx.classify(_record([_turn("tool_call", name="ocr", result=_err("timeout"))], None))
    assert (got.label, got.turn) == ("tool_failure", 0)
    got = tx.classify(_record([_turn("tool_call", name="ocr", result=_ok("41"))], None))
    assert got.label == "E6" and "no answer" in got.explanation
    assert tx.classify(_record([], None)).label == "E1"
    assert tx.classify(_record([ANSWER], correct=True)).label == "correct"


def test_a_task_with_an_empty_plan_is_judged_without_one(tasks):
    task = dataclasses.replace(tasks["lookup"], reference_plan=())
    got = tx.classify(_record([ANSWER], family="chart_qa"), task)
    assert got.label == "E6" and "the task has none" in got.explanation


def test_a_record_that_does_not_match_its_seed_is_judged_without_a_plan(env, tasks):
    task = tasks["lookup"]
    record = play(env, task, [answer(int(task.answer) + 1)])
    assert tx.classify(record).label == "E4"
    record["question"] = "Something else?"
    got = tx.classify(record)
    assert got.label == "E6" and "could not be rebuilt" in got.explanation


def test_bad_records_raise_clearly():
    with pytest.raises(ValueError, match="turns"):
        tx.classify({"task_id": "x", "turns": None})
    with pytest.raises(ValueError, match="unknown kind"):
        tx.classify(_record([{"kind": "dance"}]))
    with pytest.raises(ValueError, match="unknown taxonomy label"):
        tx.Label("E9", "")


# --- logs, labels carried by records, distribution -------------------------------------

def _sample_records(env, tasks):
    lookup, diff = tasks["lookup"], tasks["difference"]
    a = lookup.meta["asked"][0]
    return [
        play(env, lookup, [call("bar_values", {"image": "img_0", "labels": [a]}),
                           answer(lookup.answer)]),                                   # correct
        play(env, lookup, [call("bar_values", {"image": "img_0", "labels": [a]}),
                           answer(int(lookup.answer) + 1)]),                          # E5
        play(env, lookup, [answer(int(lookup.answer) + 1)]),                          # E4
        play(env, diff, [BAD_JSON, answer(0)]),                                       # E1
        _record([_turn("tool_call", name="ocr", result=_ok("total: 42")), ANSWER]),    # E5
    ]


def test_labels_survive_the_trajectory_log(env, tasks, tmp_path):
    records = _sample_records(env, tasks)
    with TrajectoryWriter(tmp_path / "log.jsonl") as w:
        for r in records:
            w.write(r)
    back = read_trajectories(tmp_path / "log.jsonl")
    assert [tx.classify(r).label for r in back] == [tx.classify(r).label for r in records] \
        == ["correct", "E5", "E4", "E1", "E5"]


def test_distribution_and_table(env, tasks):
    records = _sample_records(env, tasks)
    dist = tx.distribution(records)
    assert dist == {"chart_qa": {"E1": 1, "E4": 1, "E5": 1, "correct": 1}, "docvqa": {"E5": 1}}
    by_id = tx.distribution(records, tasks=list(tasks.values()))
    assert by_id == dist
    report = tx.summarize(dist)
    row = report["families"]["chart_qa"]
    assert row["n"] == 4 and row["accuracy"] == 0.25 and row["shares"]["E4"] == 0.25
    assert report["total"]["n"] == 5
    assert row["accuracy"] + sum(row["shares"].values()) == pytest.approx(1.0)
    table = tx.format_distribution(dist)
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["family", "n", "accuracy", "E1"]
    assert lines[1].split()[:4] == ["chart_qa", "4", "25.0%", "25.0%"]
    assert lines[-1].split()[:3] == ["total", "5", "20.0%"]
    json.dumps(report)


def test_a_label_carried_by_the_record_wins(env, tasks):
    record = _sample_records(env, tasks)[2]
    assert tx.label_of(record) == "E4"
    assert tx.label_of({**record, "taxonomy": "E2"}) == "E2"
    assert tx.label_of({**record, "taxonomy": tx.Label("E6", "why", 0).to_dict()}) == "E6"
    with pytest.raises(ValueError, match="carries taxonomy"):
        tx.label_of({**record, "taxonomy": "E7"})
