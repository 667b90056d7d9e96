"""Tokenizer and chat template.

Two kinds of tokenizer sit behind one interface (`VistaTokenizer`):
- a byte-level BPE trained with the `tokenizers` library on the task text at the first run
  of a config (cached under the run dir), for the tiny CPU policy; and
- the tokenizer of a released Qwen2.5-VL checkpoint (`load_pretrained_tokenizer`: its ChatML,
  vision and `<tool_call>` tokens, plus the protocol tags it lacks as added tokens; its chat
  template checked to render conversations exactly as ours).

The chat template is Qwen's ChatML with the protocol tags as single special tokens:

    <|im_start|>system\n{system}<|im_end|>\n
    <|im_start|>user\n<|vision_start|><|image_pad|>…<|vision_end|>{question}<|im_end|>\n
    <|im_start|>assistant\n<think>…</think><tool_call>{…}</tool_call><|im_end|>\n
    <|im_start|>user\n<tool_response>…</tool_response><|im_end|>\n
    <|im_start|>assistant\n…<answer>…</answer>

Images of a message are rendered right after its role header. Tool results are shown in a
user turn, as Qwen2.5 does. The policy generates an assistant turn up to and including its
stop token (`</tool_call>` or `</answer>`); everything else (headers, `<|im_end|>`, tool
responses) is an observation, never trained on.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from vista_jax import protocol

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, IMAGE_PAD, VISION_END = "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"
EOS = "<|endoftext|>"

SPECIAL_TOKENS = (
    EOS, IM_START, IM_END, VISION_START, IMAGE_PAD, VISION_END,
    protocol.THINK_START, protocol.THINK_END,
    protocol.TOOL_CALL_START, protocol.TOOL_CALL_END,
    protocol.TOOL_RESPONSE_START, protocol.TOOL_RESPONSE_END,
    protocol.ANSWER_START, protocol.ANSWER_END,
)


@dataclasses.dataclass
class Segment:
    """A run of tokens with a per-token loss mask and the images whose pads it contains."""

    ids: np.ndarray  # int32 [T]
    loss_mask: np.ndarray  # int32 [T], 1 on tokens the policy generates
    images: list[Any]  # PIL images, in the order of their pad runs in `ids`

    @staticmethod
    def concat(segments: Sequence[Segment]) -> Segment:
        return Segment(
            np.concatenate([s.ids for s in segments]).astype(np.int32),
            np.concatenate([s.loss_mask for s in segments]).astype(np.int32),
            [im for s in segments for im in s.images],
        )


TRUNCATION_MARKER = "[...]"  # ends a tool response cut to the observation budget (short: tiny vocabularies)


class VistaTokenizer:
    """Wraps an HF tokenizer; adds the protocol's special-token ids and the chat template."""

    def __init__(self, hf_tokenizer, image_tokens_per_image: int):
        self.hf = hf_tokenizer
        self.image_tokens_per_image = image_tokens_per_image
        missing = [t for t in SPECIAL_TOKENS if t not in hf_tokenizer.get_vocab()]
        if missing:
            raise ValueError(f"tokenizer lacks special tokens {missing}")
        ids = {t: hf_tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        self.special_ids = ids
        self.eos_id = ids[EOS]
        self.pad_id = ids[EOS]
        self.im_end_id = ids[IM_END]
        self.image_pad_id = ids[IMAGE_PAD]
        # The sampler ends an assistant turn at any of these tokens (inclusive).
        self.stop_ids = (ids[protocol.TOOL_CALL_END], ids[protocol.ANSWER_END], ids[IM_END], ids[EOS])
        self.added_tags: tuple[str, ...] = ()  # protocol tags added to a checkpoint's tokenizer
        self.chat_template: str | None = None  # a checkpoint's jinja template, when it has one

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    @functools.cached_property
    def token_texts(self) -> tuple[str, ...]:
        """Each id's text on its own (`decode([i])`), computed once: for per-token analyses
        such as which assistant tokens copy context (`sft.copied_mask`)."""
        return tuple(self.hf.decode([i]) for i in range(self.vocab_size))

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # --- chat template -------------------------------------------------------------------

    def _text(self, text: str, trained: bool = False) -> Segment:
        ids = np.asarray(self.encode(text), np.int32)
        return Segment(ids, np.full(len(ids), int(trained), np.int32), [])

    def _images(self, images: Sequence[Any]) -> Segment:
        ids: list[int] = []
        for _ in images:
            ids += [self.special_ids[VISION_START]]
            ids += [self.image_pad_id] * self.image_tokens_per_image
            ids += [self.special_ids[VISION_END]]
        return Segment(np.asarray(ids, np.int32), np.zeros(len(ids), np.int32), list(images))

    def render_message(self, message: dict[str, Any]) -> Segment:
        """A whole non-assistant message: header, images, content, end of turn."""
        role = "user" if message["role"] == "tool" else message["role"]
        return Segment.concat([
            self._text(f"{IM_START}{role}\n"),
            self._images(message.get("images") or ()),
            self._text(message["content"] + f"{IM_END}\n"),
        ])

    def assistant_header(self) -> Segment:
        return self._text(f"{IM_START}assistant\n")

    def render_prompt(self, messages: Sequence[dict[str, Any]]) -> Segment:
        """System + user messages followed by the assistant header (the generation prompt)."""
        return Segment.concat([self.render_message(m) for m in messages] + [self.assistant_header()])

    def render_observation(self, messages: Sequence[dict[str, Any]],
                           max_tokens: int | None = None) -> Segment:
        """What follows an assistant turn that called a tool: end of turn, tool message(s),
        and the next assistant header.

        With `max_tokens`, the text inside each `<tool_response>…</tool_response>` is cut
        to fit and marked `TRUNCATION_MARKER` (shorter responses are kept whole, the room
        left is shared by the longer ones), so a long tool result or error never overflows
        the rollout's observation buckets; tags, images and headers are kept. ValueError
        if not even empty responses fit."""
        def render(msgs):
            return Segment.concat([self._text(f"{IM_END}\n")]
                                  + [self.render_message(m) for m in msgs]
                                  + [self.assistant_header()])

        def wrap(body: str) -> str:
            return protocol.TOOL_RESPONSE_START + body + protocol.TOOL_RESPONSE_END

        seg = render(messages)
        if max_tokens is None or len(seg.ids) <= max_tokens:
            return seg
        start, end = len(protocol.TOOL_RESPONSE_START), -len(protocol.TOOL_RESPONSE_END)
        msgs = [dict(m) for m in messages]
        bodies = {i: self.encode(m["content"][start:end]) for i, m in enumerate(msgs)
                  if m["content"].startswith(protocol.TOOL_RESPONSE_START)
                  and m["content"].endswith(protocol.TOOL_RESPONSE_END)}
        for i in bodies:  # the fixed cost: everything but the response texts
            msgs[i]["content"] = wrap(TRUNCATION_MARKER)
        room = max_tokens - len(render(msgs).ids)
        if room < 0:
            raise ValueError(f"observation needs {max_tokens - room} tokens even with empty "
                             f"tool responses; the budget is {max_tokens}")
        keep = {}
        for left, i in zip(range(len(bodies), 0, -1), sorted(bodies, key=lambda k: len(bodies[k]))):
            keep[i] = min(len(bodies[i]), room // left)
            room -= keep[i]
        while True:
            for i, ids in bodies.items():
                msgs[i]["content"] = wrap(self.decode(ids[:keep[i]])
                                          + (TRUNCATION_MARKER if keep[i] < len(ids) else ""))
            seg = render(msgs)
            if len(seg.ids) <= max_tokens:
                return seg
            # Re-encoding a cut text can merge differently; give back one more token.
            longest = max(keep, key=keep.get)
            keep[longest] -= 1

    def render_assistant(self, text: str) -> Segment:
        """An assistant turn as the policy would generate it (loss mask 1)."""
        return self._text(text, trained=True)

    def render_conversation(self, messages: Sequence[dict[str, Any]]) -> Segment:
        """A whole conversation (e.g. an expert trajectory) as one token sequence whose loss
        mask is 1 exactly on the assistant turns' tokens."""
        segments, pending = [], []
        first_assistant = True
        for m in messages:
            if m["role"] == "assistant":
                if first_assistant:
                    segments.append(self.render_prompt(pending))
                    first_assistant = False
                else:
                    segments.append(self.render_observation(pending))
                pending = []
                segments.append(self.render_assistant(m["content"]))
            else:
                pending.append(m)
        if first_assistant:
            raise ValueError("conversation has no assistant turn")
        if pending:
            segments.append(self.render_observation(pending))
        return Segment.concat(segments)

    # --- the checkpoint's chat template -------------------------------------------------

    def chat_template_ids(self, messages: Sequence[dict[str, Any]],
                          add_generation_prompt: bool = False) -> np.ndarray:
        """Token ids of `messages` rendered by `self.chat_template` (a checkpoint's jinja
        template), each image expanded to `image_tokens_per_image` pads as the HF
        processor does. Tool messages become user turns (see `load_pretrained_tokenizer`)."""
        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat template")
        qwen = []
        for m in messages:
            parts = [{"type": "image"} for _ in m.get("images") or ()]
            role = "user" if m["role"] == "tool" else m["role"]
            qwen.append({"role": role, "content": parts + [{"type": "text", "text": m["content"]}]
                         if parts else m["content"]})
        text = self.hf.apply_chat_template(qwen, chat_template=self.chat_template, tokenize=False,
                                           add_generation_prompt=add_generation_prompt)
        text = text.replace(IMAGE_PAD, IMAGE_PAD * self.image_tokens_per_image)
        return np.asarray(self.encode(text), np.int32)

    def check_chat_template(self) -> None:
        """ValueError unless a probe conversation renders as `self.chat_template` does."""
        probe = [
            {"role": "system", "content": "You answer questions about images with tools."},
            {"role": "user", "content": "Which bar is tallest?", "images": [None]},
            {"role": "assistant", "content": protocol.render_assistant_turn(
                "read the chart", tool_call=protocol.ToolCall("chart_to_table", {"image": "image_0"}))},
            {"role": "tool", "content": protocol.TOOL_RESPONSE_START + '{"rows": [["A", 3]]}'
             + protocol.TOOL_RESPONSE_END, "images": [None]},
            {"role": "assistant", "content": protocol.ANSWER_START + "A" + protocol.ANSWER_END},
        ]
        ours = np.concatenate([self.render_conversation(probe).ids, self.encode(IM_END + "\n")])
        theirs = self.chat_template_ids(probe)
        if len(ours) == len(theirs) and (ours == theirs).all():
            return
        at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b),
                  min(len(ours), len(theirs)))
        raise ValueError(
            "the checkpoint's chat template renders conversations differently from vista-jax's "
            f"ChatML renderer, from token {at}: ours …{self.decode(ours[max(at - 8, 0):at + 8])!r} "
            f"vs template …{self.decode(theirs[max(at - 8, 0):at + 8])!r}")


# --- training the tiny BPE ---------------------------------------------------------------

def train_bpe(texts: Iterable[str], vocab_size: int, split_pattern: str | None = None):
    """Trains a byte-level BPE for a tiny policy: digits are single tokens (numbers copy and
    compute digit by digit), protocol tags are atomic special tokens, and words keep their
    GPT-2-style leading space. Isolating spaces as tokens of their own (so that " Plum" and
    "Plum" become one id) was tried and measured worse: the token before every word is then
    the same space id, and a tiny policy no longer learns to copy a word after it
    (benchmarks/probe_copy_learning.py --space-tokens; docs/design.md).

    `split_pattern`, a regex, isolates its matches as pre-tokens before that chain (for
    tokenizer experiments, e.g. " (?=[A-Z])" splits the space off capitalised words).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    extra = [] if split_pattern is None else [pre_tokenizers.Split(Regex(split_pattern), "isolated")]
    tok.pre_tokenizer = pre_tokenizers.Sequence(extra + [
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load_or_train_tokenizer(cache_dir: str | os.PathLike, texts_fn, vocab_size: int,
                            image_tokens_per_image: int,
                            split_pattern: str | None = None) -> VistaTokenizer:
    """Loads the tokenizer cached in `cache_dir`, or trains one on `texts_fn()` and caches it."""
    from transformers import PreTrainedTokenizerFast

    cache_dir = os.fspath(cache_dir)
    if os.path.exists(os.path.join(cache_dir, "tokenizer.json")):
        hf = PreTrainedTokenizerFast.from_pretrained(cache_dir)
    else:
        tok = train_bpe(texts_fn(), vocab_size, split_pattern)
        hf = PreTrainedTokenizerFast(
            tokenizer_object=tok, eos_token=EOS, pad_token=EOS,
            additional_special_tokens=[t for t in SPECIAL_TOKENS if t != EOS],
        )
        hf.save_pretrained(cache_dir)
    return VistaTokenizer(hf, image_tokens_per_image)


# --- a released checkpoint's tokenizer ----------------------------------------------------

PROTOCOL_TAGS = (protocol.THINK_START, protocol.THINK_END, protocol.TOOL_CALL_START,
                 protocol.TOOL_CALL_END, protocol.TOOL_RESPONSE_START, protocol.TOOL_RESPONSE_END,
                 protocol.ANSWER_START, protocol.ANSWER_END)
_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def _chat_template(hf, path: str | os.PathLike) -> str | None:
    """The checkpoint's chat template: the tokenizer's own, else chat_template.jinja /
    chat_template.json beside it (where transformers' processors keep Qwen2.5-VL's)."""
    if getattr(hf, "chat_template", None):
        return hf.chat_template
    for name in _TEMPLATE_FILES:
        file = os.path.join(path, name)
        if os.path.isfile(file):
            with open(file, encoding="utf-8") as f:
                text = f.read()
            return json.loads(text)["chat_template"] if name.endswith(".json") else text
    return None


def load_pretrained_tokenizer(path: str | os.PathLike, image_tokens_per_image: int
                              ) -> VistaTokenizer:
    """The tokenizer of a local HF checkpoint directory (e.g. Qwen2.5-VL-7B-Instruct).

    Its ChatML and vision tokens (`<|im_start|>`, `<|image_pad|>`, …) and Qwen's own
    `<tool_call>`/`</tool_call>` keep their ids. The protocol tags Qwen2.5 has no token
    for (`<think>`, `<answer>`, `<tool_response>` and their closers) are added as special
    tokens right after its vocabulary, so each is one id the sampler can stop at; their
    embedding rows are the checkpoint's padding rows (Qwen2.5-VL has 152,064 or 151,936
    rows for 151,665 tokens), untrained until SFT. Recorded in `added_tags`.

    When the checkpoint has a chat template, the conversation our renderer builds
    (system, user with an image, assistant tool call, tool response with an image,
    answer) must tokenise exactly as the template renders it, else ValueError showing
    where they part: trajectories look to the model as the ones it was tuned on.
    Tool results go in a user turn wrapped in `<tool_response>` (Qwen2.5's convention; the
    VL template itself has no tool role)."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    path = os.fspath(path)
    hf = AutoTokenizer.from_pretrained(path)
    vocab = hf.get_vocab()
    lacking = [t for t in SPECIAL_TOKENS if t not in vocab and t not in PROTOCOL_TAGS]
    if lacking:
        raise ValueError(f"tokenizer in {path} lacks {lacking}: vista-jax needs a Qwen2 / "
                         "Qwen2.5-VL style tokenizer (ChatML and vision tokens)")
    added = [t for t in PROTOCOL_TAGS if t not in vocab]
    if added:
        hf.add_tokens([AddedToken(t, special=True, normalized=False) for t in added],
                      special_tokens=True)
    tok = VistaTokenizer(hf, image_tokens_per_image)
    tok.added_tags = tuple(added)
    tok.chat_template = _chat_template(hf, path)
    if tok.chat_template is not None:
        tok.check_chat_template()
    return tok
