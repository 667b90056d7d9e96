"""Token log-probs, policy losses (registered by name) and named loss aggregations.

Aggregations are explicit so that gradient accumulation can be exact: each returns a
(sum, denominator) pair; the caller divides once after summing over micro-batches.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from vista_jax import sampling

_POLICY_LOSSES: dict[str, Callable] = {}


def register_policy_loss(name: str):
    def wrap(fn):
        _POLICY_LOSSES[name] = fn
        return fn
    return wrap


def get_policy_loss(name: str) -> Callable:
    if name not in _POLICY_LOSSES:
        raise KeyError(f"unknown policy loss {name!r}; registered: {sorted(_POLICY_LOSSES)}")
    return _POLICY_LOSSES[name]


def token_logprobs(logits, tokens, temperature: float = 1.0, top_k: int = 0,
                   top_p: float = 1.0):
    """log p(tokens[:, t] | < t) for t ≥ 1 from logits [B, T, V]; position 0 gets 0.
    Returns [B, T] float32. p is the sampler's distribution (`sampling.truncated_log_softmax`:
    tempered, then top-k / top-p truncated and renormalised; off by default)."""
    logp = sampling.truncated_log_softmax(logits[:, :-1], temperature, top_k, top_p)
    picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]  # [B, T-1]
    return jnp.pad(picked, ((0, 0), (1, 0)))


def token_entropy(logits, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
    """Entropy of the next-token distribution, aligned like token_logprobs. [B, T]."""
    logp = sampling.truncated_log_softmax(logits[:, :-1], temperature, top_k, top_p)
    ent = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    return jnp.pad(ent, ((0, 0), (1, 0)))


def aggregate(per_token, mask, mode: str, norm_len: int | None = None, row_mask=None):
    """Returns (sum, denominator) for the named aggregation of per_token [B, T] under mask.

    token-mean: Σ_tokens x / #tokens (every token weighs the same; DAPO, GRPO here).
    seq-mean-token-mean: mean over sequences of each sequence's token mean (original GRPO).
    seq-mean-token-sum-norm: Σ_tokens x / (B · norm_len) (Dr.GRPO; constant normaliser).
    `row_mask` [B] (optional, 1 = real row): rows at 0 are fillers that only keep a batch's
    shape; their mask must be 0 too, and they do not count in B either.
    """
    mask = mask.astype(jnp.float32)
    if mode == "token-mean":
        return jnp.sum(per_token * mask), jnp.sum(mask)
    if mode == "seq-mean-token-mean":
        n = jnp.sum(mask, axis=1)
        seq = jnp.sum(per_token * mask, axis=1) / jnp.maximum(n, 1.0)
        return jnp.sum(jnp.where(n > 0, seq, 0.0)), jnp.sum(n > 0).astype(jnp.float32)
    if mode == "seq-mean-token-sum-norm":
        length = per_token.shape[1] if norm_len is None else norm_len
        rows = (jnp.float32(per_token.shape[0]) if row_mask is None
                else jnp.sum(row_mask.astype(jnp.float32)))
        return jnp.sum(per_token * mask), rows * length
    raise ValueError(f"unknown loss aggregation {mode!r}")


@register_policy_loss("ppo_clip")
def ppo_clip_loss(logp, old_logp, advantages, *, clip_eps_low: float, clip_eps_high: float,
                  dual_clip: float = 0.0):
    """Token-level clipped surrogate, -min(ρA, clip(ρ, 1-ε_low, 1+ε_high)A), per token [B, T].

    ε_high > ε_low is DAPO's clip-higher (low-probability tokens may grow further).
    `dual_clip` = c > 1 (Ye et al., 2020) also bounds the loss of negative-advantage tokens
    by -cA, so a huge ratio on a bad token cannot dominate the step; 0 = off. Returns the
    per-token loss and an indicator of tokens whose clipped term was taken (either bound),
    for the clip-fraction metric."""
    ratio = jnp.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high) * advantages
    surrogate = jnp.minimum(unclipped, clipped)
    was_clipped = clipped < unclipped
    if dual_clip:
        if dual_clip <= 1.0:
            raise ValueError(f"dual_clip={dual_clip}: must be > 1 (or 0 = off)")
        bound = dual_clip * advantages
        dual = (advantages < 0) & (surrogate < bound)
        surrogate = jnp.where(dual, bound, surrogate)
        was_clipped = was_clipped | dual
    return -surrogate, was_clipped.astype(jnp.float32)


def kl_k1(logp, ref_logp):
    """The plain estimator of KL(π‖π_ref) per token: logp - ref (unbiased, can be negative)."""
    return logp - ref_logp


def kl_k3(logp, ref_logp):
    """Schulman's k3 estimator of KL(π‖π_ref) per token: exp(r) - r - 1 with r = ref - logp
    (unbiased, never negative, lower variance)."""
    r = ref_logp - logp
    return jnp.exp(r) - r - 1.0


KL_ESTIMATORS = {"k1": kl_k1, "k3": kl_k3}


def clipped_value_loss(values, old_values, returns, clip_eps: float):
    """PPO's value loss per token: ½ max((V - R)², (clip(V, V_old ± ε) - R)²); clip_eps = 0
    disables the clip (½ (V - R)²). All [B, T]. Returns (loss, clipped): clipped is True
    where the clipped term is the larger (the value's gradient is cut there)."""
    unclipped = (values - returns) ** 2
    if not clip_eps:
        return 0.5 * unclipped, jnp.zeros(unclipped.shape, bool)
    moved = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    clipped_sq = (moved - returns) ** 2
    return 0.5 * jnp.maximum(unclipped, clipped_sq), clipped_sq > unclipped
