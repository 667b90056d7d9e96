"""The turn protocol: render and parse think | tool_call | tool_response | answer.

An assistant turn is `<think>…</think>` (optional) followed by exactly one of
`<tool_call>{"name": …, "arguments": {…}}</tool_call>` or `<answer>…</answer>`.
A tool result is shown to the policy as `<tool_response>…</tool_response>`.

Parsing never raises on policy output: a malformed turn is a `ParsedTurn` with
`kind="invalid"` and an error code, which the environment turns into an observation
the policy can learn from. The codes map onto the paper's error taxonomy (Table 1):
`E1` schema violations are produced here; `E2`/`E3` come from the tool server's result
codes (see `taxonomy_for_tool_error`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Literal

THINK_START, THINK_END = "<think>", "</think>"
TOOL_CALL_START, TOOL_CALL_END = "<tool_call>", "</tool_call>"
TOOL_RESPONSE_START, TOOL_RESPONSE_END = "<tool_response>", "</tool_response>"
ANSWER_START, ANSWER_END = "<answer>", "</answer>"

# Strings at which the sampler stops an assistant turn (in addition to EOS / end of turn).
STOP_STRINGS = (TOOL_CALL_END, ANSWER_END)

# Protocol-level error codes (the policy's fault, taxonomy E1).
E1_NO_ACTION = "no_action"  # neither a tool call nor an answer
E1_MULTIPLE_ACTIONS = "multiple_actions"  # more than one tool call / answer in one turn
E1_BAD_JSON = "bad_json"  # tool call body is not a JSON object
E1_BAD_ENVELOPE = "bad_envelope"  # JSON without a string "name" and an object "arguments"
E1_UNCLOSED = "unclosed_tag"  # a tag was opened and never closed
E1_TEXT_OUTSIDE = "text_outside_tags"  # stray text outside the protocol tags

# Tool-server result codes that are the policy's fault, by taxonomy class.
_POLICY_TOOL_ERRORS = {
    "unknown_tool": "E2",
    "unknown_argument": "E2",
    "missing_argument": "E3",
    "invalid_argument": "E3",
    "image_not_found": "E3",
}
# Codes that are the service's fault; counted separately, never blamed on the policy.
SERVICE_TOOL_ERRORS = frozenset({"execution_failed", "timeout", "overloaded", "transport_error"})


@dataclasses.dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "arguments": self.arguments}, sort_keys=False)


@dataclasses.dataclass(frozen=True)
class ParsedTurn:
    """One assistant turn, parsed. `kind` says which action it carries."""

    kind: Literal["tool_call", "answer", "invalid"]
    think: str | None = None
    tool_call: ToolCall | None = None
    answer: str | None = None
    error: str | None = None  # an E1 code when kind == "invalid"
    well_formed: bool = True  # False when the action was recoverable but the turn had stray text


_TAG_RE = re.compile(r"<(/?)(think|tool_call|answer|tool_response)>")


def parse_assistant_turn(text: str) -> ParsedTurn:
    """Parses one assistant turn. Never raises; malformed turns come back as kind='invalid'."""
    think = _between(text, THINK_START, THINK_END)
    if text.count(THINK_START) != text.count(THINK_END):
        return ParsedTurn("invalid", think=think, error=E1_UNCLOSED)
    n_calls, n_answers = text.count(TOOL_CALL_START), text.count(ANSWER_START)
    if n_calls + n_answers == 0:
        return ParsedTurn("invalid", think=think, error=E1_NO_ACTION)
    if n_calls + n_answers > 1:
        return ParsedTurn("invalid", think=think, error=E1_MULTIPLE_ACTIONS)
    if n_answers:
        answer = _between(text, ANSWER_START, ANSWER_END)
        if answer is None:
            return ParsedTurn("invalid", think=think, error=E1_UNCLOSED)
        return ParsedTurn("answer", think=think, answer=answer.strip(),
                          well_formed=_only_tags_outside(text))
    body = _between(text, TOOL_CALL_START, TOOL_CALL_END)
    if body is None:
        return ParsedTurn("invalid", think=think, error=E1_UNCLOSED)
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, RecursionError):
        return ParsedTurn("invalid", think=think, error=E1_BAD_JSON)
    if (not isinstance(payload, dict) or not isinstance(payload.get("name"), str)
            or not isinstance(payload.get("arguments", {}), dict)):
        return ParsedTurn("invalid", think=think, error=E1_BAD_ENVELOPE)
    call = ToolCall(payload["name"], payload.get("arguments", {}))
    return ParsedTurn("tool_call", think=think, tool_call=call, well_formed=_only_tags_outside(text))


def _between(text: str, start: str, end: str) -> str | None:
    i = text.find(start)
    if i < 0:
        return None
    j = text.find(end, i + len(start))
    if j < 0:
        return None
    return text[i + len(start):j]


def _only_tags_outside(text: str) -> bool:
    """True when nothing but whitespace lies outside the <think>/<tool_call>/<answer> blocks."""
    outside = re.sub(r"<(think|tool_call|answer)>.*?</\1>", "", text, flags=re.DOTALL)
    return not outside.strip()


def render_assistant_turn(think: str | None, *, tool_call: ToolCall | None = None,
                          answer: str | None = None) -> str:
    """Renders one well-formed assistant turn (used for expert trajectories)."""
    if (tool_call is None) == (answer is None):
        raise ValueError("exactly one of tool_call and answer must be given")
    parts = [f"{THINK_START}{think}{THINK_END}"] if think else []
    if tool_call is not None:
        parts.append(f"{TOOL_CALL_START}{tool_call.to_json()}{TOOL_CALL_END}")
    else:
        parts.append(f"{ANSWER_START}{answer}{ANSWER_END}")
    return "".join(parts)


def render_tool_response(result: dict[str, Any], image_handles: list[str] = ()) -> str:
    """Renders a tool-server result as the observation text the policy sees.

    `image_handles` are the episode-local names of images the tool produced (they follow the
    text; the chat template inserts their vision tokens).
    """
    if result.get("ok"):
        body = str(result.get("text", ""))
        if image_handles:
            body += "".join(f"\n[{h}]" for h in image_handles)
    else:
        err = result.get("error") or {}
        body = f"error[{err.get('code', 'unknown')}]: {err.get('message', '')}"
    return f"{TOOL_RESPONSE_START}{body}{TOOL_RESPONSE_END}"


def render_protocol_error(code: str) -> str:
    """The observation returned for a turn that could not be parsed (E1)."""
    hint = {
        E1_NO_ACTION: "end the turn with <tool_call>{...}</tool_call> or <answer>...</answer>",
        E1_MULTIPLE_ACTIONS: "one tool call or one answer per turn",
        E1_BAD_JSON: "the tool call must be a JSON object",
        E1_BAD_ENVELOPE: 'the tool call must be {"name": str, "arguments": {...}}',
        E1_UNCLOSED: "close every tag you open",
    }.get(code, "")
    return f"{TOOL_RESPONSE_START}error[{code}]: {hint}{TOOL_RESPONSE_END}"


def taxonomy_for_tool_error(code: str) -> str | None:
    """Maps a tool-server error code to the taxonomy class it evidences (E2/E3), or None."""
    return _POLICY_TOOL_ERRORS.get(code)
