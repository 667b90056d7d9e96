"""Verifiers (numbers, text, choices) and the terminal reward R_correct + R_format + R_rep.
Expression verification (the sympy worker pool) is tested in test_verifiers.py."""

import dataclasses
import math

import pytest

from vista_jax import protocol
from vista_jax.env.rewards import (RewardConfig, compute_reward, find_numbers, format_violations,
                                   has_repetition, is_degenerate, normalize_text, parse_number,
                                   repetition_violations, reward_details, strip_answer_phrase,
                                   verify, verify_details)
from vista_jax.env.tasks.base import Task


def _task(answer, answer_type="number", tolerance=0.0, choices=None, meta=None):
    return Task(task_id="t", family="f", seed=0, split="train", question="q?", images=(),
                answer=answer, answer_type=answer_type, tolerance=tolerance, choices=choices,
                meta=meta or {})


def _turns(*texts):
    return [protocol.parse_assistant_turn(t) for t in texts]


CALL = '<think>read</think><tool_call>{"name": "chart_to_table", "arguments": {"image": "img_0"}}</tool_call>'
CALC = '<tool_call>{"name": "calculator", "arguments": {"expression": "41 - 23"}}</tool_call>'


@pytest.mark.parametrize("pred,ok", [
    ("18", True), ("18.0", True), ("18 units", True), (" about 18.", True), ("+18", True),
    ("18.000000000001", True), ("19", False), ("17.9", False), ("-18", False),
    ("eighteen", True), ("", False), (None, False), ("1,8", False),
])
def test_number_exact(pred, ok):
    assert verify(pred, _task("18")) is ok


def test_number_tolerance_and_relaxed():
    assert verify("1,200", _task("1200"))
    assert verify("104", _task("100", tolerance=0.05)) and not verify("106", _task("100", tolerance=0.05))
    assert not verify("104", _task("100")) and verify("104", _task("100"), relaxed=True)
    assert verify("0", _task("0")) and not verify("0.001", _task("0"))
    assert parse_number("x = -3.5e2 m") == -350.0 and parse_number("no digits") is None


@pytest.mark.parametrize("pred,ok", [
    ("Beta", True), ("beta", True), ("  BETA. ", True), ("Beta!", True), ("'Beta'", True),
    ("Bet", False), ("Beta Gamma", False), ("Alpha", False),
])
def test_text_normalised(pred, ok):
    assert verify(pred, _task("Beta", "text")) is ok


@pytest.mark.parametrize("pred,ok", [
    ("B", True), ("b", True), ("(B)", True), ("B. Green", True), ("Option B", True),
    ("green", True), ("Green.", True), ("A", False), ("red", False), ("E", False),
])
def test_choice_by_letter_or_text(pred, ok):
    assert verify(pred, _task("B", "choice", choices=("Red", "Green", "Blue"))) is ok


def test_expression_by_sympy():
    t = _task("2*x + 2", "expression")
    assert verify("2*(x + 1)", t) and not verify("2*x", t) and not verify("2*(", t)


def test_reward_correct_and_clean():
    task = _task("18")
    r = compute_reward(_turns(CALL, CALC, "<think>so</think><answer>18</answer>"), task,
                       answered=True)
    assert r == {"correct": 1.0, "format": 0.0, "repetition": 0.0, "total": 1.0}
    r = compute_reward(_turns(CALL, "<answer>17</answer>"), task, answered=True)
    assert r == {"correct": 0.0, "format": 0.0, "repetition": 0.0, "total": 0.0}


def test_format_penalty():
    task = _task("18")
    cfg = RewardConfig(format_penalty=0.1)
    invalid = compute_reward(_turns("<tool_call>{bad</tool_call>", "<answer>18</answer>"), task,
                             answered=True, config=cfg)
    assert invalid["correct"] == 1.0 and invalid["format"] == pytest.approx(-0.1)
    assert invalid["total"] == pytest.approx(0.9)
    stray = compute_reward(_turns("Sure! <answer>18</answer>"), task, answered=True, config=cfg)
    assert stray["correct"] == 1.0 and stray["format"] == pytest.approx(-0.1)
    unanswered = compute_reward(_turns(CALL, CALC), task, answered=False, config=cfg)
    assert unanswered == {"correct": 0.0, "format": -0.1, "repetition": 0.0, "total": -0.1}
    # penalised once, however many malformed turns
    many = compute_reward(_turns("x", "y", "z"), task, answered=False, config=cfg)
    assert many["format"] == pytest.approx(-0.1)


def test_repetition_penalty():
    task = _task("18")
    cfg = RewardConfig(repetition_penalty=0.2, correct_weight=2.0)
    rep = compute_reward(_turns(CALL, CALL, "<answer>18</answer>"), task, answered=True, config=cfg)
    assert rep["repetition"] == pytest.approx(-0.2) and rep["total"] == pytest.approx(1.8)
    # same tool, different arguments: not a repetition
    other = CALL.replace("img_0", "img_1")
    assert compute_reward(_turns(CALL, other, "<answer>18</answer>"), task,
                          answered=True)["repetition"] == 0.0
    # same arguments in another key order are the same call
    swapped = ('<tool_call>{"name": "crop", "arguments": {"box": [0, 0, 1, 1], "image": "img_0"}}'
               '</tool_call>')
    plain = ('<tool_call>{"name": "crop", "arguments": {"image": "img_0", "box": [0, 0, 1, 1]}}'
             '</tool_call>')
    assert compute_reward(_turns(plain, swapped), task, answered=False)["repetition"] < 0
    babble = "<think>" + "the value is high " * 3 + "</think><answer>18</answer>"
    assert compute_reward(_turns(babble), task, answered=True)["repetition"] < 0
    assert is_degenerate("a b c d a b c d a b c d") and not is_degenerate("a b c d a b c d")


def test_reward_config_is_a_frozen_dataclass():
    cfg = RewardConfig()
    assert (cfg.correct_weight, cfg.format_penalty, cfg.repetition_penalty) == (1.0, 0.1, 0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.format_penalty = 0.5


# --- numbers: parsing ---------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [
    ("1,234", 1234.0), ("1,234,567.5", 1234567.5), ("-3.5", -3.5), ("\u22123.5", -3.5),
    ("+2", 2.0), (".5", 0.5), ("42.", 42.0), ("1e3", 1000.0), ("2.5E-2", 0.025),
    ("1.2e+03", 1200.0), ("1.2×10^3", 1200.0), ("1.2 x 10^{3}", 1200.0),
    ("12%", 12.0), ("12 %", 12.0), ("12\\%", 12.0), ("$4.50", 4.5), ("-$3", -3.0),
    ("$-3", -3.0), ("€2", 2.0), ("3/4", 0.75), ("-3/4", -0.75), ("2 1/2", 2.5),
    ("\\frac{3}{4}", 0.75), ("\\dfrac{1}{8}", 0.125), ("12 cm", 12.0), ("45°", 45.0),
    ("45 degrees", 45.0), ("12 cm^2", 12.0), ("12 cm2", 12.0), ("5 m^{3}", 5.0),
    ("3 million", 3.0), ("The answer is 42.", 42.0), ("Answer: 42", 42.0),
    ("\\boxed{42}", 42.0), ("so the final answer is \\boxed{7}", 7.0), ("$42$", 42.0),
    ("x = 3", 3.0), ("42 or 42", 42.0), ("about 18.", 18.0), ("3rd", 3.0), ("12 km/h", 12.0),
    ("twelve", 12.0), ("Twenty-one", 21.0), ("one hundred and five", 105.0),
    ("two thousand three hundred", 2300.0), ("minus three", -3.0), ("zero", 0.0),
])
def test_parse_number_forms(text, value):
    assert parse_number(text) == pytest.approx(value)


@pytest.mark.parametrize("text,why", [
    ("between 40 and 45", None), ("2019: 42", None), ("3:45", None), ("1 2", None),
    ("five six", None), ("40-45", "stray digit"), ("x-3", "stray digit"), ("x/2", "stray digit"),
    ("x2", "stray digit"), ("Q3 42", "stray digit"), ("1,8", "stray digit"),
    ("12,34", "stray digit"), ("1.2.3", "stray digit"), ("sqrt(2)", "math notation"),
    ("2*pi", "math notation"), ("x + 3", "math notation"), ("41 - 23", "math notation"),
    ("4√2", None), ("3x^2", "math notation"), ("2π", "math notation"),
])
def test_parse_number_rejects_ambiguous_text(text, why):
    assert parse_number(text) is None
    if why is not None:
        assert find_numbers(text)[1] == why


@pytest.mark.parametrize("text", ["", "no digits", "Beta", "no one", "none"])
def test_parse_number_none_without_a_number(text):
    assert parse_number(text) is None


def test_parse_number_nonfinite_never_verifies():
    assert parse_number("1e999") == math.inf and math.isnan(parse_number("1/0"))
    for pred in ("1e999", "-1e999", "1/0", "nan", "inf", "infinity"):
        assert not verify(pred, _task("18")), pred
        assert not verify(pred, _task("18"), relaxed=True), pred
    assert verify_details("1e999", _task("18")).rule == "number_nonfinite"
    with pytest.raises(TypeError, match="str"):
        parse_number(18)


# --- numbers: matching -------------------------------------------------------------------------

@pytest.mark.parametrize("pred,gold,tol,relaxed,ok", [
    ("104", "100", 0.05, False, True), ("105", "100", 0.05, False, True),
    ("105.1", "100", 0.05, False, False), ("95", "100", 0.05, False, True),
    ("-104", "-100", 0.05, False, True), ("-96", "100", 0.05, False, False),
    ("104", "100", 0.0, False, False), ("104", "100", 0.0, True, True),
    ("106", "100", 0.0, True, False), ("104", "100", 0.1, True, True),
    ("109", "100", 0.1, True, True),  # relaxed never narrows a wider task tolerance
    ("0.75", "3/4", 0.0, False, True), ("2 1/2", "2.5", 0.0, False, True),
    ("1,200", "1200", 0.0, False, True), ("1200", "1,200", 0.0, False, True),
    ("12%", "12", 0.0, False, True), ("12", "12%", 0.0, False, True),
    ("0.12", "12%", 0.0, True, False),  # unlike pix2struct, % is a unit, not /100
    # gold 0: the tolerance is read as absolute
    ("0", "0", 0.0, False, True), ("0.0", "0", 0.0, False, True), ("-0", "0", 0.0, False, True),
    ("0.001", "0", 0.0, False, False), ("0.04", "0", 0.0, True, True),
    ("0.06", "0", 0.0, True, False), ("0.001", "0", 0.01, False, True),
])
def test_number_tolerance(pred, gold, tol, relaxed, ok):
    assert verify(pred, _task(gold, tolerance=tol), relaxed=relaxed) is ok


def _pix2struct_relaxed(target: str, prediction: str) -> bool:
    """ChartQA's reference metric (pix2struct/metrics.py relaxed_correctness), restated for
    plain numeric strings without %: within 5% of a nonzero target."""
    t, p = float(target), float(prediction)
    return abs(p - t) / abs(t) <= 0.05


@pytest.mark.parametrize("gold", ["100", "2015", "-40", "0.37", "12.5", "1e6"])
@pytest.mark.parametrize("factor", [0.9, 0.949, 0.951, 1.0, 1.02, 1.049, 1.051, 1.2, -1.0])
def test_relaxed_matches_chartqa_reference(gold, factor):
    pred = repr(float(gold) * factor)
    assert verify(pred, _task(gold), relaxed=True) is _pix2struct_relaxed(gold, pred)


def test_years_flagged_by_the_task_match_exactly():
    plain, year = _task("2015"), _task("2015", meta={"answer_is_year": True})
    assert verify("2014", plain, relaxed=True)  # pix2struct: no year exception
    assert not verify("2014", year, relaxed=True) and verify("2015", year, relaxed=True)
    assert "year" in verify_details("2014", year, relaxed=True).detail


def test_number_verdicts_name_their_rule():
    t = _task("18")
    assert verify_details("18", t).rule == "number_match"
    assert verify_details("19", t).rule == "number_mismatch"
    assert verify_details("about 17 or 18", t).rule == "number_ambiguous"
    assert verify_details("sqrt(324)", t).rule == "number_not_literal"
    assert verify_details("dunno", t).rule == "number_missing"
    assert verify_details(None, t).rule == "no_answer"


def test_malformed_gold_or_type_is_a_clear_error():
    with pytest.raises(ValueError, match="number answer 'many' is not one finite number"):
        verify("3", _task("many"))
    with pytest.raises(ValueError, match="not a letter of its 3 choices"):
        verify("D", _task("D", "choice", choices=("a", "b", "c")))
    with pytest.raises(ValueError, match="unknown answer_type 'date'"):
        verify("x", _task("x", "date"))
    with pytest.raises(TypeError, match="pred must be a str"):
        verify(18, _task("18"))


# --- text ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text,norm", [
    ("  Beta. ", "beta"), ("BETA!", "beta"), ("'Beta'", "beta"), ("Café", "cafe"),
    ("The blue bar", "blue bar"), ("an apple", "apple"), ("A B", "a b"), ("A", "a"),
    ("the", "the"), ("U.S.", "us"), ("don't", "dont"), ("3.5 kg", "3.5 kg"),
    ("1,000 units", "1000 units"), ("north-east", "north east"), ("snake_case", "snake case"),
    ("Tower of the Sun", "tower of the sun"), ("x\tb\n c", "x b c"), ("a b c", "b c"),
])
def test_normalize_text(text, norm):
    assert normalize_text(text) == norm


@pytest.mark.parametrize("pred,gold,ok", [
    ("The answer is Beta.", "Beta", True), ("Answer: beta", "Beta", True),
    ("\\boxed{Beta}", "Beta", True), ("the Beta", "Beta", True), ("Beta is highest", "Beta", False),
    ("Alpha Beta", "Beta", False), ("A B", "B", False), ("B", "A B", False), ("A", "A", True),
    ("The", "A", False), ("Cafe", "Café", True), ("north east", "North-East", True),
    ("Yes", "yes", True), ("yes.", "Yes", True), ("True", "yes", True), ("FALSE", "no", True),
    ("No, it is not.", "no", True), ("Yes, it is.", "yes", True), ("yes and no", "yes", False),
    ("no", "yes", False), ("false", "yes", False), ("maybe", "no", False), ("", "yes", False),
])
def test_text_rules(pred, gold, ok):
    assert verify(pred, _task(gold, "text")) is ok


def test_strip_answer_phrase():
    assert strip_answer_phrase("The final answer is: 42") == "42"
    assert strip_answer_phrase("So, the answer is B") == "B"
    assert strip_answer_phrase("x \\boxed{a} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert strip_answer_phrase("answering machine") == "answering machine"
    assert strip_answer_phrase("Answer") == "Answer" and strip_answer_phrase("answer = x") == "x"
    assert strip_answer_phrase("The answer isotope") == "isotope"


# --- multiple choice -----------------------------------------------------------------------

CHOICES = ("Red", "Green", "Blue", "Dark green")


@pytest.mark.parametrize("pred,ok,rule", [
    ("B", True, "choice_letter"), ("b", True, "choice_letter"), ("(B)", True, "choice_letter"),
    ("[B]", True, "choice_letter"), ("B.", True, "choice_letter"), ("B)", True, "choice_letter"),
    ("Option B", True, "choice_letter"), ("option (b)", True, "choice_letter"),
    ("Choice B.", True, "choice_letter"), ("The answer is B", True, "choice_letter"),
    ("The answer is (B).", True, "choice_letter"), ("Answer: B", True, "choice_letter"),
    ("\\boxed{B}", True, "choice_letter"), ("B. Green", True, "choice_letter"),
    ("(B) green", True, "choice_letter"), ("B: Green", True, "choice_letter"),
    ("B Green", True, "choice_letter"), ("green", True, "choice_text"),
    ("Green.", True, "choice_text"), ("the green", True, "choice_text"),
    ("A", False, "choice_mismatch"), ("red", False, "choice_mismatch"),
    ("dark green", False, "choice_mismatch"), ("D", False, "choice_mismatch"),
    ("E", False, "choice_out_of_range"), ("Z", False, "choice_out_of_range"),
    ("(E) Green", False, "choice_out_of_range"), ("B. Red", False, "choice_conflict"),
    ("A) Green", False, "choice_conflict"), ("B and C", False, "choice_conflict"),
    ("Bet", False, "choice_unrecognised"), ("", False, "choice_unrecognised"),
    ("purple", False, "choice_unrecognised"),
])
def test_choice_forms(pred, ok, rule):
    v = verify_details(pred, _task("B", "choice", choices=CHOICES))
    assert (v.ok, v.rule) == (ok, rule), v


@pytest.mark.parametrize("pred,ok", [
    ("15", True), ("15.0", True), ("15 cm", True), ("(B) 15 cm", True), ("B", True),
    ("(A) 15 cm", False), ("10", False), ("12", False),
])
def test_choice_numeric_options_by_value(pred, ok):
    assert verify(pred, _task("B", "choice", choices=("10 cm", "15 cm", "20 cm"))) is ok


def test_choice_option_text_that_looks_like_a_letter_form():
    t = _task("B", "choice", choices=("A dog", "A cat"))
    assert verify("a cat", t) and verify("A cat", t) and verify("B", t) and not verify("A dog", t)


# --- reward details ---------------------------------------------------------------------------

def test_reward_details_give_each_rule():
    task = _task("18")
    d = reward_details(_turns(CALL, CALL, "Sure! <answer>19</answer>"), task, answered=True)
    assert d.components() == compute_reward(_turns(CALL, CALL, "Sure! <answer>19</answer>"), task,
                                            answered=True)
    assert (d.correct, d.format, d.repetition) == (0.0, -0.1, -0.1)
    reasons = d.reasons()
    assert reasons["correct"].startswith("number_mismatch: 19 vs gold 18")
    assert reasons["format"] == "turn 3 has text outside the protocol tags"
    assert reasons["repetition"] == "turn 2 repeats the chart_to_table call of turn 1"
    clean = reward_details(_turns(CALL, "<answer>18</answer>"), task, answered=True)
    assert clean.reasons() == {"correct": "number_match: 18 vs gold 18 (exact)", "format": "ok",
                               "repetition": "ok"}


def test_format_violations_name_turn_and_code():
    turns = _turns("<tool_call>{bad</tool_call>", "<think>x",
                   "<answer>1</answer><answer>2</answer>")
    assert format_violations(turns, answered=False) == [
        "turn 1 invalid (bad_json)", "turn 2 invalid (unclosed_tag)",
        "turn 3 invalid (multiple_actions)", "no answer: the episode was truncated"]
    assert format_violations(_turns(CALL), answered=True) == [
        "no answer: the last turn is not an answer"]
    assert format_violations([], answered=False) == ["no answer: the episode was truncated"]


def test_repetition_violations_name_the_ngram():
    babble = "<think>" + "the value is high " * 3 + "</think><answer>18</answer>"
    assert repetition_violations(_turns(babble)) == [
        "turn 1 think: 'the value is high' occurs 3 times"]
    answer_babble = "<answer>" + "18 18 18 18 " * 3 + "</answer>"
    assert has_repetition(_turns(answer_babble))
    assert repetition_violations(_turns(CALL, CALC, "<answer>18</answer>")) == []


def test_reward_config_validates():
    with pytest.raises(ValueError, match="format_penalty=-0.1"):
        RewardConfig(format_penalty=-0.1)
    with pytest.raises(ValueError, match="correct_weight=nan"):
        RewardConfig(correct_weight=float("nan"))
    with pytest.raises(ValueError, match="expression_timeout_s=0"):
        RewardConfig(expression_timeout_s=0)
