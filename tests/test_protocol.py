import json

import pytest

from vista_jax import protocol as P


def test_tool_call_round_trip():
    call = P.ToolCall("chart_to_table", {"image": "img_0"})
    text = P.render_assistant_turn("I need the values.", tool_call=call)
    parsed = P.parse_assistant_turn(text)
    assert parsed.kind == "tool_call" and parsed.tool_call == call
    assert parsed.think == "I need the values." and parsed.well_formed


def test_answer_round_trip():
    parsed = P.parse_assistant_turn(P.render_assistant_turn("so", answer=" 18 "))
    assert parsed.kind == "answer" and parsed.answer == "18" and parsed.well_formed


@pytest.mark.parametrize("text,code", [
    ("I think it is 5", P.E1_NO_ACTION),
    ("<tool_call>{not json}</tool_call>", P.E1_BAD_JSON),
    ('<tool_call>["chart"]</tool_call>', P.E1_BAD_ENVELOPE),
    ('<tool_call>{"name": 3, "arguments": {}}</tool_call>', P.E1_BAD_ENVELOPE),
    ('<tool_call>{"name": "a", "arguments": []}</tool_call>', P.E1_BAD_ENVELOPE),
    ('<tool_call>{"name": "a", "arguments": {}}', P.E1_UNCLOSED),
    ("<answer>5", P.E1_UNCLOSED),
    ("<think>unclosed <answer>5</answer>", P.E1_UNCLOSED),
    ("<answer>1</answer><answer>2</answer>", P.E1_MULTIPLE_ACTIONS),
    ('<answer>1</answer><tool_call>{"name": "a"}</tool_call>', P.E1_MULTIPLE_ACTIONS),
])
def test_malformed_turns_are_invalid_not_exceptions(text, code):
    parsed = P.parse_assistant_turn(text)
    assert parsed.kind == "invalid" and parsed.error == code


def test_deeply_nested_json_does_not_raise():
    parsed = P.parse_assistant_turn("<tool_call>" + "[" * 100000 + "]" * 100000 + "</tool_call>")
    assert parsed.kind == "invalid"


def test_stray_text_is_recoverable_but_not_well_formed():
    parsed = P.parse_assistant_turn("hello <answer>4</answer>")
    assert parsed.kind == "answer" and not parsed.well_formed


def test_render_tool_response_ok_and_error():
    ok = P.render_tool_response({"ok": True, "text": "A | 3", "images": ["x"]}, ["img_1"])
    assert ok == "<tool_response>A | 3\n[img_1]</tool_response>"
    err = P.render_tool_response({"ok": False, "error": {"code": "unknown_tool", "message": "no"}})
    assert err == "<tool_response>error[unknown_tool]: no</tool_response>"
    assert P.taxonomy_for_tool_error("unknown_tool") == "E2"
    assert P.taxonomy_for_tool_error("invalid_argument") == "E3"
    assert P.taxonomy_for_tool_error("timeout") is None


def test_tool_call_json_is_the_envelope():
    assert json.loads(P.ToolCall("x", {"a": 1}).to_json()) == {"name": "x", "arguments": {"a": 1}}
