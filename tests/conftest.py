"""Fixtures shared across the suite."""

import pytest

from vista_jax import tokenizer as T

# Task-like text for a tiny BPE: a question, a table, a think + tool call, an answer.
CHART_TEXTS = [
    "What is the value of Beta?", "Alpha | 23\nBeta | 41", "How much greater is Beta than Alpha?",
    '<think>I need the table.</think><tool_call>{"name": "chart_to_table", "arguments": '
    '{"image": "img_0"}}</tool_call>', "<answer>18</answer>", "Read the Beta bar.",
    '<think>Read Beta.</think><tool_call>{"name": "bar_values", "arguments": '
    '{"image": "img_0", "labels": ["Beta"]}}</tool_call>',
] * 20


@pytest.fixture(scope="session")
def chart_texts():
    return CHART_TEXTS


@pytest.fixture(scope="session")
def tok(tmp_path_factory):
    """A 400-token BPE trained on CHART_TEXTS, 4 pad tokens per image."""
    return T.load_or_train_tokenizer(tmp_path_factory.mktemp("tok"), lambda: CHART_TEXTS, 400, 4)
