"""Greedy evaluation of a policy on held-out tasks: accuracy (overall, per task family and
per question type), tool-call validity, mean turns, format errors, and the share of each
error class of the paper's taxonomy (`env.taxonomy`: E1–E6, tool_failure)."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from vista_jax.env import taxonomy
from vista_jax.rollout import Episode, Sampler, run_episodes


def evaluate(sampler: Sampler, params, make_vec_env, tasks: Sequence[Any], *, batch_size: int,
             seed: int = 0) -> tuple[dict[str, float], list[Episode]]:
    """Plays every task once with greedy decoding, `batch_size` episodes at a time, on one
    vector env of `batch_size` envs from `make_vec_env(batch_size)` (the last batch is padded
    with repeats, so shapes and compilations stay fixed; callers may cache the env)."""
    episodes: list[Episode] = []
    env = make_vec_env(batch_size)
    for start in range(0, len(tasks), batch_size):
        chunk = list(tasks[start:start + batch_size])
        n = len(chunk)
        chunk += [chunk[-1]] * (batch_size - n)
        eps, _ = run_episodes(sampler, params, env, chunk, rng=jax.random.key(seed), greedy=True)
        episodes.extend(eps[:n])
    return summarize(episodes, tasks), episodes


def summarize(episodes: Sequence[Episode], tasks: Sequence[Any]) -> dict[str, float]:
    calls = sum(e.num_tool_calls for e in episodes)
    valid = sum(e.num_valid_tool_calls for e in episodes)
    out = {
        "accuracy": float(np.mean([e.correct for e in episodes])),
        "tool_call_validity": valid / calls if calls else 0.0,
        "tool_calls_per_episode": calls / len(episodes),
        "mean_turns": float(np.mean([e.num_turns for e in episodes])),
        "format_ok": float(np.mean([e.reward_components.get("format", 0.0) == 0.0
                                    for e in episodes])),
        "answered": float(np.mean([e.trajectory.get("answer") is not None for e in episodes])),
        "mean_reward": float(np.mean([e.reward for e in episodes])),
    }
    by_type, by_family = collections.defaultdict(list), collections.defaultdict(list)
    for e, t in zip(episodes, tasks):
        by_type[t.meta.get("question_type", t.family)].append(e.correct)
        by_family[t.family].append(e.correct)
    if len(by_family) > 1:
        for k, v in sorted(by_family.items()):
            out[f"accuracy@{k}"] = float(np.mean(v))
    for k, v in sorted(by_type.items()):
        out[f"accuracy/{k}"] = float(np.mean(v))
    labels = taxonomy.labels_for([e.trajectory for e in episodes], list(tasks))
    for label in taxonomy.ERROR_LABELS:
        out[f"taxonomy/{label}"] = labels.count(label) / len(labels)
    return out


def taxonomy_report(episodes: Sequence[Episode], tasks: Sequence[Any]) -> dict[str, Any]:
    """The taxonomy distribution per task family (`taxonomy.summarize`'s JSON report)."""
    records = [e.trajectory for e in episodes]
    return taxonomy.summarize(taxonomy.distribution(records, list(tasks)))
