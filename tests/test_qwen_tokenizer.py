"""A released Qwen2.5-VL tokenizer as the policy's tokenizer (format fixture: see
tests/fixtures/qwen2_5_vl_tokenizer/make_fixture.py; the real one cannot be downloaded here)."""

import json
import pathlib
import shutil

import numpy as np
import pytest

from vista_jax import protocol
from vista_jax import tokenizer as T

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "qwen2_5_vl_tokenizer"


@pytest.fixture(scope="module")
def qwen():
    return T.load_pretrained_tokenizer(FIXTURE, image_tokens_per_image=4)


def _conversation():
    call = protocol.render_assistant_turn(
        "read the bars", tool_call=protocol.ToolCall("chart_to_table", {"image": "image_0"}))
    return [
        {"role": "system", "content": "You solve visual tasks with tools."},
        {"role": "user", "content": "Which bar is tallest?", "images": ["IMG"]},
        {"role": "assistant", "content": call},
        {"role": "tool", "content": '<tool_response>{"rows": [["A", 3]]}</tool_response>',
         "images": ["CROP"]},
        {"role": "assistant", "content": "<answer>A</answer>"},
    ]


def test_checkpoint_tokens_kept_and_protocol_tags_added(qwen):
    from transformers import AutoTokenizer

    raw = AutoTokenizer.from_pretrained(FIXTURE)
    n = len(raw)
    # The checkpoint's own tokens keep their ids; <tool_call> is Qwen's own token.
    for t in (T.IM_START, T.IM_END, T.IMAGE_PAD, T.EOS, protocol.TOOL_CALL_START,
              protocol.TOOL_CALL_END):
        assert qwen.special_ids[t] == raw.convert_tokens_to_ids(t) < n, t
    # Tags Qwen2.5 lacks become single tokens right after its vocabulary.
    assert set(qwen.added_tags) == {protocol.THINK_START, protocol.THINK_END,
                                    protocol.ANSWER_START, protocol.ANSWER_END,
                                    protocol.TOOL_RESPONSE_START, protocol.TOOL_RESPONSE_END}
    assert sorted(qwen.special_ids[t] for t in qwen.added_tags) == list(range(n, n + 6))
    assert qwen.vocab_size == n + 6
    for t in T.SPECIAL_TOKENS:
        assert len(qwen.encode(t)) == 1, t
    assert qwen.special_ids[protocol.ANSWER_END] in qwen.stop_ids


def test_rendering_equals_the_checkpoint_chat_template(qwen):
    """Our segments (with their loss masks) tokenise exactly as the checkpoint's template
    renders the same conversation (images expanded to their pad runs, as the processor
    does); the loader runs this check on every checkpoint it loads."""
    messages = _conversation()
    seg = qwen.render_conversation(messages)
    reference = qwen.chat_template_ids(messages)
    ours = np.concatenate([seg.ids, qwen.encode(T.IM_END + "\n")])
    np.testing.assert_array_equal(ours, reference)
    trained = qwen.decode(seg.ids[seg.loss_mask == 1])
    assert trained == messages[2]["content"] + messages[4]["content"]
    # The generation prompt too.
    prompt = qwen.render_prompt(messages[:2]).ids
    np.testing.assert_array_equal(prompt, qwen.chat_template_ids(messages[:2], add_generation_prompt=True))


def test_hermes_tool_call_round_trips(qwen):
    """Qwen/Hermes format: a JSON object with "name" and "arguments" inside <tool_call>,
    with or without the newlines Qwen's models put around it."""
    for body in ('{"name": "crop", "arguments": {"box": [1, 2, 3, 4]}}',
                 '\n{"name": "crop", "arguments": {"box": [1, 2, 3, 4]}}\n'):
        text = f"<think>zoom in</think><tool_call>{body}</tool_call>"
        ids = qwen.encode(text)
        assert ids[-1] == qwen.special_ids[protocol.TOOL_CALL_END]
        turn = protocol.parse_assistant_turn(qwen.decode(ids))
        assert turn.kind == "tool_call" and turn.tool_call.arguments == {"box": [1, 2, 3, 4]}


def test_template_mismatch_is_reported(tmp_path):
    bad = tmp_path / "tok"
    shutil.copytree(FIXTURE, bad)
    template = json.loads((bad / "chat_template.json").read_text())["chat_template"]
    changed = template.replace("<|im_start|>{{ message['role'] }}\n",
                               "<|im_start|>{{ message['role'] }}:\n")
    assert changed != template
    (bad / "chat_template.json").write_text(json.dumps({"chat_template": changed}))
    with pytest.raises(ValueError, match="chat template"):
        T.load_pretrained_tokenizer(bad, image_tokens_per_image=4)


def test_tokenizer_without_chatml_tokens_is_rejected(tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()))
    hf.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"<\|im_start\|>"):
        T.load_pretrained_tokenizer(tmp_path, image_tokens_per_image=4)
