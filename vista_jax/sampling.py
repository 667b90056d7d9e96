"""Pure, jittable sampling pieces of the decode loop: temperature / top-k / top-p, and
per-row multi-token stop sequences.

Order of the logits processors (HF's): divide by the temperature, keep the `top_k` largest,
then keep the minimal nucleus (the fewest most-probable tokens whose probability, after the
top-k cut and renormalisation, sums to at least `top_p`). Ties at a cut are all kept.

Log-probs are those of the distribution actually sampled from: the tempered, truncated and
renormalised one (`truncated_log_softmax`); at temperature 0 the choice is the argmax and
its log-prob is 0 (a point mass). The RL learner recomputes log-probs with the same function
and the same (temperature, top_k, top_p), so the importance ratio is 1 on policy
(`vista_jax.rl.losses.token_logprobs`).

`top_k` and `top_p` are static (Python numbers): with the defaults (0 and 1.0, "off") no
sort or top-k runs at all; changing them compiles a new decode loop. Temperature is a traced
scalar, so greedy evaluation and tempered rollouts share one compiled loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Masked-out logits: finite, so a fully masked row cannot produce NaN, and far below any
# real logit so exp() underflows to exactly 0 in float32.
_MASKED = -1e30


def check_truncation(top_k: int, top_p: float) -> None:
    """Raises ValueError naming the bad value (top_k an int ≥ 0, 0 < top_p ≤ 1)."""
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise ValueError(f"top_k={top_k!r}: must be an integer ≥ 0 (0 = off)")
    if not 0.0 < float(top_p) <= 1.0:
        raise ValueError(f"top_p={top_p!r}: must be in (0, 1] (1.0 = off)")


def truncation_mask(logits: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array | None:
    """Which tokens survive top-k then top-p. logits [..., V] (already tempered) -> bool
    [..., V], or None when both are off (nothing is cut)."""
    check_truncation(top_k, top_p)
    v = logits.shape[-1]
    k = min(int(top_k), v) if top_k else 0
    if k == 0 and float(top_p) >= 1.0:
        return None
    x = logits.astype(jnp.float32)
    if k:  # the k largest, sorted descending
        head = jax.lax.top_k(x, k)[0]  # [..., k]
    else:
        head = -jnp.sort(-x, axis=-1)  # [..., V] descending
    threshold = head[..., -1:]  # the smallest kept logit so far
    if float(top_p) < 1.0:
        probs = jax.nn.softmax(head, axis=-1)  # renormalised over the top-k survivors
        before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly ahead of each token
        # The minimal nucleus keeps token j iff the tokens ahead of it hold < top_p; the
        # first is always kept.
        n_keep = jnp.maximum(jnp.sum(before < top_p, axis=-1, keepdims=True), 1)  # [..., 1]
        threshold = jnp.take_along_axis(head, n_keep - 1, axis=-1)
    return x >= threshold


def truncated_log_softmax(logits: jax.Array, temperature, top_k: int = 0,
                          top_p: float = 1.0) -> jax.Array:
    """log of the distribution sampled from at `temperature` (> 0): logits [..., V] ->
    float32 [..., V]; tokens cut by top-k / top-p get a huge negative value (prob 0)."""
    x = logits.astype(jnp.float32) / temperature
    keep = truncation_mask(x, top_k, top_p)
    if keep is not None:
        x = jnp.where(keep, x, _MASKED)
    return jax.nn.log_softmax(x, axis=-1)


def argmax(logits: jax.Array) -> jax.Array:
    """First index of the row maximum, int32 [B] from [B, V] (as jnp.argmax; written as
    max then min-index because XLA:CPU runs the fused argmax reduce ~3x slower)."""
    v = logits.shape[-1]
    top = jnp.max(logits, axis=-1, keepdims=True)
    first = jnp.min(jnp.where(logits == top, jnp.arange(v, dtype=jnp.int32), v), axis=-1)
    return jnp.minimum(first, v - 1)  # a NaN row matches nothing: clamp into the vocab


def sample(logits: jax.Array, key: jax.Array, temperature, top_k: int = 0,
           top_p: float = 1.0, greedy: bool | None = None) -> tuple[jax.Array, jax.Array]:
    """One token per row and its log-prob under the distribution sampled from.

    logits [B, V]; temperature a scalar (0 = greedy: argmax, log-prob 0) -> tokens int32
    [B], logprobs float32 [B]. Only the branch the temperature selects runs; a static
    `greedy` (True: argmax, False: draw, temperature > 0) skips the runtime branch."""
    temperature = jnp.asarray(temperature, jnp.float32)

    def argmax_branch(_):
        return argmax(logits), jnp.zeros(logits.shape[:1], jnp.float32)

    def draw(_):
        logp = truncated_log_softmax(logits, temperature, top_k, top_p)  # [B, V]
        tok = jax.random.categorical(key, logp, axis=-1).astype(jnp.int32)
        return tok, jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0]

    if greedy is not None:
        return argmax_branch(None) if greedy else draw(None)
    return jax.lax.cond(temperature > 0, draw, argmax_branch, None)


# --- stop sequences -------------------------------------------------------------------------


def pad_stop_sequences(rows: Sequence[Sequence[Sequence[int]]] | None, batch: int,
                       max_sequences: int, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row stop sequences (token-id lists; rows may differ, any row may have none) ->
    right-aligned ids int32 [B, S, L] (padding -1) and lengths int32 [B, S] (0 = unused).

    The shapes depend only on (batch, max_sequences, max_len), so new stop sequences never
    recompile the decode loop. Too many or too long sequences raise, naming the row."""
    seqs = np.full((batch, max_sequences, max_len), -1, np.int32)
    lens = np.zeros((batch, max_sequences), np.int32)
    if rows is None:
        return seqs, lens
    if len(rows) != batch:
        raise ValueError(f"stop sequences for {len(rows)} rows, the batch has {batch}")
    for b, row in enumerate(rows):
        row = [list(map(int, s)) for s in (row or ())]
        if len(row) > max_sequences:
            raise ValueError(f"row {b} has {len(row)} stop sequences; the sampler holds "
                             f"{max_sequences} (SamplerConfig.max_stop_sequences)")
        for j, s in enumerate(row):
            if not 0 < len(s) <= max_len:
                raise ValueError(f"row {b} stop sequence {s}: length must be 1..{max_len} "
                                 f"(SamplerConfig.max_stop_len)")
            if min(s) < 0:
                raise ValueError(f"row {b} stop sequence {s}: token ids must be ≥ 0")
            seqs[b, j, max_len - len(s):] = s
            lens[b, j] = len(s)
    return seqs, lens


def push_tail(tail: jax.Array, tokens: jax.Array, accept: jax.Array) -> jax.Array:
    """The last L generated tokens of each row after appending `tokens` where `accept`:
    tail int32 [B, L] (oldest first, -1 before the first token), tokens [B], accept bool [B]."""
    shifted = jnp.concatenate([tail[:, 1:], tokens[:, None].astype(tail.dtype)], axis=1)
    return jnp.where(accept[:, None], shifted, tail)


def stop_sequence_hit(tail: jax.Array, seqs: jax.Array, lens: jax.Array) -> jax.Array:
    """Whether each row's generated tokens end with one of its stop sequences.

    tail int32 [B, L] (last L generated tokens, -1 where fewer were generated), seqs int32
    [B, S, L] right-aligned, lens int32 [B, S] -> bool [B]. A sequence longer than what
    the row generated cannot match (the -1 fill never equals a token id), so a sequence
    spanning the prompt boundary never stops a row."""
    max_len = tail.shape[1]
    needed = jnp.arange(max_len)[None, None, :] >= (max_len - lens)[:, :, None]  # [B, S, L]
    equal = (tail[:, None, :] == seqs) | ~needed
    return jnp.any(jnp.all(equal, axis=-1) & (lens > 0), axis=-1)
