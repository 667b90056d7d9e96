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


def gae(values, rewards, mask, gamma: float = 1.0, lam: float = 1.0
        ) -> tuple[np.ndarray, np.ndarray]:
    """Token-level generalised advantage estimation (PPO), per row over its generated tokens.

    values, rewards, mask: [B, T]; mask is 1 on the tokens the policy generated. In a
    multi-turn episode those come in runs separated by observations (tool responses); the
    value chain skips the observations: the "next" state of a generated token is the next
    generated token of its row, and the value after the row's last generated token is 0
    (the episode ended; the terminal reward sits on that token). With
        δ_t = r_t + γ V_next - V_t,    A_t = δ_t + γ λ A_next,
    returns (advantages, value targets A + V), both 0 where mask is 0. λ = γ = 1 gives
    A_t = R - V_t for a terminal reward R."""
    values = np.asarray(values, np.float64)
    rewards = np.asarray(rewards, np.float64)
    mask = np.asarray(mask) > 0
    b, t = values.shape
    adv = np.zeros((b, t))
    next_value = np.zeros(b)
    next_adv = np.zeros(b)
    for i in range(t - 1, -1, -1):
        m = mask[:, i]
        delta = rewards[:, i] + gamma * next_value - values[:, i]
        a = delta + gamma * lam * next_adv
        adv[:, i] = np.where(m, a, 0.0)
        next_value = np.where(m, values[:, i], next_value)
        next_adv = np.where(m, a, next_adv)
    returns = np.where(mask, adv + values, 0.0)
    return adv.astype(np.float32), returns.astype(np.float32)


def informative_group_rows(rewards, groups, limit: int | None = None, tol: float = 1e-9
                           ) -> np.ndarray:
    """DAPO's dynamic-sampling filter: the row indices of the groups whose rewards are not
    all equal (population std > tol; an all-equal group has zero advantage everywhere, so it
    carries no gradient), at most the first `limit` such groups in order of first
    appearance, rows in their original order. Returns int64 [rows kept]."""
    rewards = np.asarray(rewards, np.float64)
    groups = np.asarray(groups)
    if len(groups) == 0:
        return np.zeros(0, np.int64)
    _, std = _group_stats(rewards, groups)
    _, first = np.unique(groups, return_index=True)
    ordered = groups[np.sort(first)]  # group ids in order of first appearance
    keep = [g for g in ordered if std[groups == g][0] > tol]
    if limit is not None:
        keep = keep[:max(int(limit), 0)]
    return np.flatnonzero(np.isin(groups, keep)).astype(np.int64)


def terminal_token_rewards(rewards, mask) -> np.ndarray:
    """Token-level rewards for GAE: each row's episode reward [B] on its last generated token
    (the last position where mask [B, T] > 0), 0 elsewhere; a row with no generated token
    gets none. Returns float32 [B, T]."""
    mask = np.asarray(mask) > 0
    rewards = np.asarray(rewards, np.float32)
    out = np.zeros(mask.shape, np.float32)
    has = mask.any(axis=1)
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
    out[np.flatnonzero(has), last[has]] = rewards[has]
    return out


def whiten(advantages, mask, eps: float = 1e-8) -> np.ndarray:
    """Advantage whitening over a batch's generated tokens: (A - mean) / (std + eps), mean and
    population std over the positions where mask > 0; 0 elsewhere. float32, shape of A."""
    a = np.asarray(advantages, np.float64)
    m = np.asarray(mask) > 0
    if not m.any():
        return np.zeros(a.shape, np.float32)
    mean, std = a[m].mean(), a[m].std()
    return np.where(m, (a - mean) / (std + eps), 0.0).astype(np.float32)
