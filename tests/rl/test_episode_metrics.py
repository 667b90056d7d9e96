"""Per-step RL metrics computed from finished episodes (no model needed)."""

import numpy as np
import pytest

from vista_jax.rl.learner import episode_metrics
from vista_jax.rollout import Episode


def _episode(turns, reward=1.0, correct=True, generated=5):
    n = 8
    mask = np.zeros(n, np.int32)
    mask[:generated] = 1
    calls = [t for t in turns if t.get("tool_call")]
    return Episode(tokens=np.zeros(n, np.int32), positions=np.zeros((3, n), np.int32),
                   loss_mask=mask, logprobs=np.zeros(n, np.float32), images=[], reward=reward,
                   reward_components={"correct": float(correct), "format": 0.1},
                   correct=correct, num_turns=len(turns), num_tool_calls=len(calls),
                   num_valid_tool_calls=sum(t.get("error") is None for t in calls),
                   truncated=False, group=0, trajectory={"turns": turns})


def test_tool_calls_by_tool_and_errors_by_code_per_episode():
    call = lambda name, error=None: {"tool_call": {"name": name, "arguments": {}},  # noqa: E731
                                     "error": error}
    answer = {"tool_call": None, "error": None}
    episodes = [
        _episode([call("bar_values"), call("calculator"), answer]),
        _episode([call("bar_values", "missing_argument"), {"tool_call": None,
                                                           "error": "bad_json"}],
                 reward=-0.1, correct=False, generated=3),
    ]
    m = episode_metrics(episodes)
    assert m["tool_calls/bar_values"] == pytest.approx(1.0)  # 2 calls over 2 episodes
    assert m["tool_calls/calculator"] == pytest.approx(0.5)
    assert m["errors/missing_argument"] == pytest.approx(0.5)
    assert m["errors/bad_json"] == pytest.approx(0.5)
    assert m["tool_calls"] == pytest.approx(1.5) and m["tool_call_validity"] == pytest.approx(2 / 3)
    assert m["accuracy"] == 0.5 and m["response_tokens"] == 4.0 and m["turns"] == 2.5
