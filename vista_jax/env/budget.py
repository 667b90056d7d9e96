"""Token budgets of an episode, and the token counters that measure them.

Five budgets, all in config (`env.*` of the training configs):

- `prompt_tokens`: system + user message (images included). A task over it is refused at
  `reset` with `PromptTooLong`, naming the task: a prompt cut short would be a different
  question.
- `turn_tokens`: one assistant turn. A longer action is cut to the budget before parsing
  (the sampler cannot produce more; hand-written or replayed text can) and flagged in info.
- `observation_tokens`: one tool response. A longer one is cut and ends in
  `TRUNCATION_MARKER`, so the policy sees that it was cut.
- `trajectory_tokens`: prompt + all turns + all observations. The step that reaches it
  ends the episode as truncated (no answer: R_correct 0 and the format penalty).
- `max_turns`: assistant turns before the episode is truncated.

Counting is done by a `TokenCounter`. `ApproxTokenCounter` (the default) counts words and
runs of punctuation, roughly a BPE's count on our task text but not equal to any real
tokenizer; `TokenizerCounter` counts with the policy's own tokenizer and chat template, so
the env's budgets are the rollout's (the training pipeline uses it).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Protocol

from vista_jax.tokenizer import TRUNCATION_MARKER


class PromptTooLong(ValueError):
    """A task's prompt exceeds `Budgets.prompt_tokens`."""


@dataclasses.dataclass(frozen=True)
class Budgets:
    prompt_tokens: int = 1024
    turn_tokens: int = 256
    observation_tokens: int = 512
    trajectory_tokens: int = 4096
    max_turns: int = 6

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"budget {field.name} must be a positive integer, got {value!r}")
        marker_room = 8  # an observation must hold at least the truncation marker and a little text
        if self.observation_tokens < marker_room:
            raise ValueError(f"budget observation_tokens={self.observation_tokens} is below "
                             f"{marker_room}, too small to hold a truncated response")


class TokenCounter(Protocol):
    def count(self, text: str) -> int:
        """Tokens in `text`."""

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of `text` with at most `max_tokens` tokens."""

    def message_tokens(self, message: Mapping[str, Any]) -> int:
        """Tokens one chat message takes in the policy's context (header and images too)."""


_PIECE = re.compile(r"\w+|[^\w\s]+")


class ApproxTokenCounter:
    """Words and runs of punctuation as tokens; `image_tokens` per image (default 0:
    set it to the policy's tokens per image when prompt budgets should include images)."""

    def __init__(self, image_tokens: int = 0, message_overhead: int = 3):
        self.image_tokens = image_tokens
        self.message_overhead = message_overhead  # role header and end-of-turn marker

    def count(self, text: str) -> int:
        return sum(1 for _ in _PIECE.finditer(text or ""))

    def truncate(self, text: str, max_tokens: int) -> str:
        if max_tokens <= 0:
            return ""
        for i, m in enumerate(_PIECE.finditer(text)):
            if i == max_tokens:
                return text[:m.start()].rstrip()
        return text

    def message_tokens(self, message: Mapping[str, Any]) -> int:
        return (self.message_overhead + self.count(message.get("content", ""))
                + self.image_tokens * len(message.get("images") or ()))


class TokenizerCounter:
    """Counts with a `vista_jax.tokenizer.VistaTokenizer` (exact for the policy)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer

    def count(self, text: str) -> int:
        return len(self.tok.encode(text))

    def truncate(self, text: str, max_tokens: int) -> str:
        ids = self.tok.encode(text)
        if len(ids) <= max_tokens:
            return text
        keep = max(max_tokens, 0)
        while keep > 0:  # re-encoding a cut text can merge differently: shrink until it fits
            cut = self.tok.decode(ids[:keep])
            if len(self.tok.encode(cut)) <= max_tokens:
                return cut
            keep -= 1
        return ""

    def message_tokens(self, message: Mapping[str, Any]) -> int:
        return len(self.tok.render_message(dict(message)).ids)


def truncate_response(content: str, budget: int, counter: TokenCounter,
                      start: str, end: str) -> tuple[str, bool]:
    """Cuts the body of `start…end` (a tool response) so that the whole has at most `budget`
    tokens, ending the body in TRUNCATION_MARKER. Returns (content, whether it was cut)."""
    if counter.count(content) <= budget:
        return content, False
    body = content[len(start):len(content) - len(end)] if (
        content.startswith(start) and content.endswith(end)) else content
    fixed = counter.count(start + TRUNCATION_MARKER + end)
    cut = counter.truncate(body, max(budget - fixed, 0))
    while cut and counter.count(start + cut + TRUNCATION_MARKER + end) > budget:
        cut = counter.truncate(cut, counter.count(cut) - 1)
    return start + cut + TRUNCATION_MARKER + end, True
