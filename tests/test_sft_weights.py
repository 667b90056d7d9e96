"""SFT loss weights: which assistant tokens count as copied, and how they are weighted."""

import numpy as np
import pytest

from vista_jax import protocol
from vista_jax import sft


def conversation():
    call = protocol.ToolCall("bar_values", {"image": "img_0", "labels": ["Beta"]})
    return [
        {"role": "system", "content": "Tools: bar_values(image, labels). Read the bar."},
        {"role": "user", "content": "What is the value of Beta?"},
        {"role": "assistant", "content": protocol.render_assistant_turn("Read Beta.", tool_call=call)},
        {"role": "tool", "content": "<tool_response>Beta | 41</tool_response>"},
        {"role": "assistant", "content": protocol.render_assistant_turn("Read 41.", answer="41")},
    ]


def copied_texts(tok, messages):
    seg = tok.render_conversation(messages)
    mask = sft.copied_mask(tok, messages, seg)
    assert not mask[seg.loss_mask == 0].any(), "only assistant tokens can be copied"
    text = [tok.token_texts[i].strip() for i in seg.ids]
    trained = [t for t, on in zip(text, seg.loss_mask) if on]
    return [t for t, on in zip(text, mask) if on], trained


def test_copied_tokens_come_from_earlier_user_and_tool_messages(tok):
    copied, trained = copied_texts(tok, conversation())
    # "Beta" is in the question (as " Beta") and copied in the think and the JSON argument;
    # "4", "1" are only in the tool response, so only the answer after it copies them.
    assert copied.count("Beta") == 2
    assert "".join(c for c in copied if c.isdigit()) == "4141"  # final think and answer
    # the system prompt is not context: "Read" (system prompt, not question) is not a copy
    assert trained.count("Read") == 2 and "Read" not in copied
    # protocol tokens and JSON keys are never copies
    assert not {protocol.TOOL_CALL_START, protocol.ANSWER_START, "name", "labels"} & set(copied)


def test_a_value_seen_only_later_is_not_a_copy(tok):
    messages = conversation()
    messages[2] = {"role": "assistant", "content": protocol.render_assistant_turn(
        "Guess 41.", tool_call=protocol.ToolCall("bar_values", {"image": "img_0"}))}
    seg = tok.render_conversation(messages)
    mask = sft.copied_mask(tok, messages, seg)
    first_turn = np.flatnonzero(seg.loss_mask)[: len(tok.encode(messages[2]["content"]))]
    assert not any(tok.decode([int(seg.ids[k])]).isdigit() and mask[k] for k in first_turn)


def test_mismatched_turns_are_an_error(tok):
    messages = conversation()
    seg = tok.render_conversation(messages)
    with pytest.raises(ValueError, match="assistant messages"):
        sft.copied_mask(tok, messages[:3], seg)


def test_copy_weights_balance_by_how_often_each_id_is_copied():
    # id 7 is copied 4 times, id 9 once; mean count 2.5
    rows = [{"tokens": np.array([1, 7, 7, 9, 2]), "loss_mask": np.array([0, 1, 1, 1, 1]),
             "copied": np.array([0, 1, 1, 1, 0], bool)},
            {"tokens": np.array([7, 7, 3]), "loss_mask": np.array([1, 1, 0]),
             "copied": np.array([1, 1, 0], bool)}]
    plain = sft.copy_loss_weights(rows, 1.0)
    np.testing.assert_array_equal(plain[0], [0, 1, 1, 1, 1])
    flat = sft.copy_loss_weights(rows, 10.0, balance=0.0)
    np.testing.assert_array_equal(flat[0], [0, 10, 10, 10, 1])
    np.testing.assert_array_equal(flat[1], [10, 10, 0])
    bal = sft.copy_loss_weights(rows, 10.0, balance=1.0)
    np.testing.assert_allclose(bal[0], [0, 10 * 2.5 / 4, 10 * 2.5 / 4, 10 * 2.5, 1])
    # a copied token never weighs less than an ordinary one
    tiny = sft.copy_loss_weights(rows, 1.5, balance=1.0)
    assert tiny[0][1] == 1.0
