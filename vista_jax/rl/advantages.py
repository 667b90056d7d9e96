"""Advantage estimators, registered by name and chosen from config (`rl.algorithm`).

Each takes per-episode terminal rewards and the group index of every episode and returns
one advantage per episode; the learner broadcasts it over that episode's generated tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_ADVANTAGES: dict[str, Callable[..., np.ndarray]] = {}


def register_advantage(name: str):
    def wrap(fn):
        _ADVANTAGES[name] = fn
        return fn
    return wrap


def get_advantage(name: str) -> Callable[..., np.ndarray]:
    if name not in _ADVANTAGES:
        raise KeyError(f"unknown advantage estimator {name!r}; registered: {sorted(_ADVANTAGES)}")
    return _ADVANTAGES[name]


def _group_stats(rewards: np.ndarray, groups: np.ndarray):
    uniq, inv = np.unique(groups, return_inverse=True)
    counts = np.bincount(inv).astype(np.float64)
    mean = np.bincount(inv, weights=rewards) / counts
    var = np.bincount(inv, weights=(rewards - mean[inv]) ** 2) / counts
    return mean[inv], np.sqrt(var)[inv]


@register_advantage("grpo")
def group_normalized_advantages(rewards, groups, eps: float = 1e-6) -> np.ndarray:
    """GRPO: (r - mean_group) / (std_group + eps), population std over the group."""
    rewards = np.asarray(rewards, np.float64)
    mean, std = _group_stats(rewards, np.asarray(groups))
    return ((rewards - mean) / (std + eps)).astype(np.float32)


@register_advantage("dr_grpo")
def group_centered_advantages(rewards, groups) -> np.ndarray:
    """Dr.GRPO: r - mean_group, without the std normalisation that up-weights easy groups."""
    rewards = np.asarray(rewards, np.float64)
    mean, _ = _group_stats(rewards, np.asarray(groups))
    return (rewards - mean).astype(np.float32)


def informative_group_fraction(rewards, groups) -> float:
    """Share of groups whose rewards are not all equal (the only ones that carry signal)."""
    _, std = _group_stats(np.asarray(rewards, np.float64), np.asarray(groups))
    groups = np.asarray(groups)
    uniq = np.unique(groups)
    return float(np.mean([std[groups == g][0] > 1e-9 for g in uniq])) if len(uniq) else 0.0


def overlong_penalty(lengths, max_tokens: int, buffer: int, factor: float = 1.0) -> np.ndarray:
    """DAPO's soft overlong punishment, added to each episode's reward before advantages.

    lengths: generated (policy) tokens per episode. 0 up to `max_tokens - buffer`, then a
    linear ramp to -factor at `max_tokens`, and -factor beyond it:
        R = factor * min(0, max(-1, (max_tokens - buffer - L) / buffer)).
    `buffer` = 0 turns it off (all zeros)."""
    lengths = np.asarray(lengths, np.float64)
    if buffer <= 0:
        return np.zeros(lengths.shape, np.float32)
    if not 0 < buffer <= max_tokens:
        raise ValueError(f"overlong buffer {buffer} must be in (0, max_tokens={max_tokens}]")
    ramp = (max_tokens - buffer - lengths) / buffer
    return (factor * np.clip(ramp, -1.0, 0.0)).astype(np.float32)
