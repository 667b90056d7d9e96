"""Verifiers and the terminal reward R_correct + R_format + R_rep."""

import dataclasses

import pytest

from vista_jax import protocol
from vista_jax.env.rewards import (RewardConfig, compute_reward, is_degenerate, parse_number,
                                   verify)
from vista_jax.env.tasks.base import Task


def _task(answer, answer_type="number", tolerance=0.0, choices=None):
    return Task(task_id="t", family="f", seed=0, split="train", question="q?", images=(),
                answer=answer, answer_type=answer_type, tolerance=tolerance, choices=choices)


def _turns(*texts):
    return [protocol.parse_assistant_turn(t) for t in texts]


CALL = '<think>read</think><tool_call>{"name": "chart_to_table", "arguments": {"image": "img_0"}}</tool_call>'
CALC = '<tool_call>{"name": "calculator", "arguments": {"expression": "41 - 23"}}</tool_call>'


@pytest.mark.parametrize("pred,ok", [
    ("18", True), ("18.0", True), ("18 units", True), (" about 18.", True), ("+18", True),
    ("18.000000000001", True), ("19", False), ("17.9", False), ("-18", False),
    ("eighteen", False), ("", False), (None, False), ("1,8", False),
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
