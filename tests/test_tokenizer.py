import numpy as np
import pytest

from vista_jax import protocol
from vista_jax import tokenizer as T


def test_round_trip_and_cache(tok, chart_texts, tmp_path):
    for s in chart_texts[:7] + ["unseen wörds 12345 ✓"]:
        assert tok.decode(tok.encode(s)) == s
    # a second load reads the cache instead of training (texts_fn must not be called)
    d = tmp_path / "t"
    T.load_or_train_tokenizer(d, lambda: chart_texts, 400, 4)
    again = T.load_or_train_tokenizer(d, lambda: pytest.fail("retrained"), 400, 4)
    assert again.encode(chart_texts[3]) == tok.encode(chart_texts[3])


def test_special_tokens_are_atomic_and_digits_single(tok):
    for s in T.SPECIAL_TOKENS:
        assert len(tok.encode(s)) == 1, s
    assert [tok.decode([i]) for i in tok.encode("12345")] == list("12345")
    assert tok.special_ids[protocol.TOOL_CALL_END] in tok.stop_ids
    assert tok.special_ids[protocol.ANSWER_END] in tok.stop_ids


def test_conversation_loss_mask_covers_exactly_assistant_turns(tok):
    call = protocol.render_assistant_turn("look", tool_call=protocol.ToolCall("chart_to_table", {"image": "img_0"}))
    messages = [
        {"role": "system", "content": "You use tools."},
        {"role": "user", "content": "What is Beta?", "images": ["IMG"]},
        {"role": "assistant", "content": call},
        {"role": "tool", "content": "<tool_response>Beta | 41</tool_response>"},
        {"role": "assistant", "content": "<answer>41</answer>"},
    ]
    seg = tok.render_conversation(messages)
    assert seg.images == ["IMG"]
    assert (seg.ids == tok.image_pad_id).sum() == 4
    trained = tok.decode(seg.ids[seg.loss_mask == 1])
    assert trained == call + "<answer>41</answer>"
    # the same sequence as the rollout builds it: prompt, turn, observation, turn
    parts = [tok.render_prompt(messages[:2]), tok.render_assistant(call),
             tok.render_observation(messages[3:4]), tok.render_assistant("<answer>41</answer>")]
    np.testing.assert_array_equal(T.Segment.concat(parts).ids, seg.ids)
    np.testing.assert_array_equal(T.Segment.concat(parts).loss_mask, seg.loss_mask)
    text = tok.decode(seg.ids)
    assert "<|im_start|>user\n<tool_response>Beta | 41</tool_response><|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n<answer>41</answer>")


def test_conversation_without_assistant_is_rejected(tok):
    with pytest.raises(ValueError):
        tok.render_conversation([{"role": "user", "content": "hi"}])


def test_long_tool_response_is_truncated_to_the_observation_budget(tok):
    long = "\n".join(f"Alpha | {i}" for i in range(60))
    messages = [{"role": "tool", "content": f"<tool_response>{long}</tool_response>", "images": ["IMG"]}]
    full = tok.render_observation(messages)
    assert tok.render_observation(messages, max_tokens=len(full.ids)).ids.tolist() == full.ids.tolist()
    for budget in (64, 50, 44):
        seg = tok.render_observation(messages, max_tokens=budget)
        text = tok.decode(seg.ids)
        assert len(seg.ids) <= budget
        assert T.TRUNCATION_MARKER + "</tool_response><|im_end|>" in text  # tags kept, cut marked
        assert text.startswith("<|im_end|>\n<|im_start|>user\n<|vision_start|>")  # image kept
        assert text.endswith("<|im_start|>assistant\n") and seg.images == ["IMG"]
        if budget == 64:  # room for more than the marker: the head of the result survives
            assert "Alpha | 0\nAlpha | 1" in text
    with pytest.raises(ValueError, match="budget"):
        tok.render_observation(messages, max_tokens=10)  # not even the tags and image fit


def test_split_pattern_isolates_its_matches_before_bpe():
    texts = ['Look up Plum. ["Plum"]\nPlum | 8'] * 20
    plain = T.train_bpe(texts, 300).encode("Look up Plum.").tokens
    split = T.train_bpe(texts, 300, split_pattern=" (?=[A-Z])").encode('Look up Plum. ["Plum"]').tokens
    assert "ĠPlum" in plain
    assert split.count("Plum") == 2 and "ĠPlum" not in split  # one id in prose and JSON


def test_token_texts_are_each_ids_decoding(tok):
    assert len(tok.token_texts) == tok.vocab_size
    for i in (0, 5, tok.image_pad_id, tok.vocab_size - 1):
        assert tok.token_texts[i] == tok.decode([i])
