"""One compiled update: `(params, opt_state, batch) -> (params, opt_state, metrics)`.

Shared by SFT and the RL learners: a loss function maps the policy's logits on a packed
batch to a (sum, denominator, metric sums) triple. Micro-batches are accumulated inside the
jitted step with `lax.scan` by summing loss sums and their gradients and dividing once by
the summed denominator, so the update is the same with and without accumulation.

A packed batch (all arrays batch-major so one NamedSharding over ("data", "fsdp") shards
them all):
    tokens       int32   [B, L]
    positions    int32   [B, 3, L]   explicit M-RoPE positions
    valid        bool    [B, L]
    loss_mask    float32 [B, L]      1 on tokens the policy generated
    patches      float32 [B, M, P, F] pixel patches of the row's images, in token order
    plus, for RL: old_logprobs [B, L], advantages [B] (per row) or [B, L] (per token, PPO),
    optional row_mask [B] (0 = a filler row: no loss, no share of any denominator),
    (ref_logprobs [B, L]); for PPO also old_values [B, L] and returns [B, L].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

LossFn = Callable[[jax.Array, dict[str, jax.Array]], tuple[jax.Array, jax.Array, dict[str, jax.Array]]]


def policy_hidden(model, batch: dict[str, jax.Array], grid_hw: tuple[int, int]):
    """Full causal forward of the decoder trunk over a packed batch: the last layer's
    hidden states [B, L, D] (before the final norm; `model.logits` maps them)."""
    patches = batch["patches"]
    b, m = patches.shape[:2]
    emb = model.encode_images(patches.reshape((b * m,) + patches.shape[2:]), grid_hw=grid_hw)
    emb = emb.reshape(b, m * emb.shape[1], emb.shape[2])
    positions = jnp.transpose(batch["positions"], (1, 0, 2))  # [3, B, L]
    hidden, _ = model.hidden(batch["tokens"], positions, batch["valid"], None, image_embeds=emb)
    return hidden


def policy_logits(model, batch: dict[str, jax.Array], grid_hw: tuple[int, int]):
    """Full causal forward of the policy over a packed batch. Returns logits [B, L, V]."""
    return model.logits(policy_hidden(model, batch, grid_hw))


def make_optimizer(learning_rate: float, *, warmup_steps: int, total_steps: int,
                   weight_decay: float = 0.0, max_grad_norm: float = 1.0,
                   decay: bool = True) -> optax.GradientTransformation:
    """AdamW with linear warmup, then cosine decay (or constant), and global-norm clipping."""
    if decay:
        schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(warmup_steps, 1),
                                                      max(total_steps, warmup_steps + 1),
                                                      end_value=learning_rate * 0.1)
    else:
        schedule = optax.join_schedules(
            [optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1)),
             optax.constant_schedule(learning_rate)], [max(warmup_steps, 1)])
    return optax.chain(optax.clip_by_global_norm(max_grad_norm),
                       optax.adamw(schedule, b1=0.9, b2=0.98, weight_decay=weight_decay))


def make_train_step(graphdef: nnx.GraphDef, rest: nnx.State, loss_fn: LossFn,
                    tx: optax.GradientTransformation, grid_hw: tuple[int, int],
                    micro_batches: int = 1):
    """Builds the jitted, donated update for a model split as (graphdef, params, rest)."""

    def sums(params, mb):
        model = nnx.merge(graphdef, params, rest)
        total, denom, metrics = loss_fn(policy_logits(model, mb, grid_hw), mb)
        return total, (denom, metrics)

    value_and_grad = jax.value_and_grad(sums, has_aux=True)

    def step(params, opt_state, batch):
        total, denom, metrics, grads = accumulate_gradients(value_and_grad, params, batch,
                                                            micro_batches)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        out = normalize_metrics(metrics, total, denom)
        out["grad_norm"] = optax.tree.norm(grads)
        return params, opt_state, out

    # Params and optimizer state come back in their input shardings: one program for every
    # step, and a resumed run runs the same one as an uninterrupted run.
    from vista_jax.sharding import jit_keeping_shardings
    return jit_keeping_shardings(step, num_state=2)


def accumulate_gradients(value_and_grad, params, batch: dict[str, jax.Array],
                         micro_batches: int = 1):
    """Loss sums and their gradients over `micro_batches` sequential slices of `batch`
    (a `lax.scan` when > 1), divided once by the summed denominator: the same update as one
    big batch. `value_and_grad(params, batch)` returns ((sum, (denominator, metric sums)),
    grads). Returns (sum, denominator ≥ 1, metric sums, grads / denominator)."""
    if micro_batches == 1:
        (total, (denom, metrics)), grads = value_and_grad(params, batch)
    else:
        split = jax.tree.map(
            lambda x: x.reshape((micro_batches, x.shape[0] // micro_batches) + x.shape[1:]),
            batch)

        def body(carry, mb):
            (total, (denom, metrics)), g = value_and_grad(params, mb)
            acc = jax.tree.map(jnp.add, carry, (total, denom, metrics, g))
            return acc, None

        zeros = jax.eval_shape(lambda: value_and_grad(params, jax.tree.map(lambda x: x[0], split)))
        init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                            (zeros[0][0], zeros[0][1][0], zeros[0][1][1], zeros[1]))
        (total, denom, metrics, grads), _ = jax.lax.scan(body, init, split)
    denom = jnp.maximum(denom, 1.0)
    return total, denom, metrics, jax.tree.map(lambda g: g / denom, grads)


def normalize_metrics(metrics: dict[str, jax.Array], total, denom) -> dict[str, jax.Array]:
    """Metric sums divided per token when the loss reports its token count ("tokens"),
    else per denominator; plus "loss" = total / denom."""
    metrics = dict(metrics)
    norm = jnp.maximum(metrics.pop("tokens", denom), 1.0)
    out = {k: v / norm for k, v in metrics.items()}
    out["loss"] = total / denom
    return out


def make_eval_fn(graphdef: nnx.GraphDef, rest: nnx.State, loss_fn: LossFn,
                 grid_hw: tuple[int, int]):
    """Jitted `(params, batches) -> metrics`: `loss_fn`'s sums over a list of packed
    batches (no gradient), normalised once over all of them as the train step does, so the
    result is that of one big batch (e.g. SFT validation loss over a held-out split)."""

    def sums(params, batch):
        model = nnx.merge(graphdef, params, rest)
        total, denom, metrics = loss_fn(policy_logits(model, batch, grid_hw), batch)
        return total, denom, metrics

    sums = jax.jit(sums)

    def fn(params, batches):
        acc = None
        for batch in batches:
            out = sums(params, batch)
            acc = out if acc is None else jax.tree.map(jnp.add, acc, out)
        total, denom, metrics = acc
        denom = jnp.maximum(denom, 1.0)
        return {k: float(v) for k, v in normalize_metrics(metrics, total, denom).items()}

    return fn


def make_logprob_fn(graphdef: nnx.GraphDef, rest: nnx.State, grid_hw: tuple[int, int],
                    temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
    """Jitted token log-probs [B, L] of a policy on a packed batch (reference / diagnostics)."""
    from vista_jax.rl.losses import token_logprobs

    def fn(params, batch):
        model = nnx.merge(graphdef, params, rest)
        return token_logprobs(policy_logits(model, batch, grid_hw), batch["tokens"], temperature,
                              top_k, top_p)

    return jax.jit(fn)


def sft_loss(logits, batch) -> tuple[Any, Any, dict]:
    """Weighted token-mean negative log-likelihood on generated (assistant) tokens: the loss
    mask holds the weights (1, or e.g. `sft.copy_weight` on copied tokens); the reported
    token accuracy is unweighted."""
    from vista_jax.rl.losses import token_logprobs

    logp = token_logprobs(logits, batch["tokens"])
    mask = batch["loss_mask"]
    acc = (jnp.argmax(logits[:, :-1], -1) == batch["tokens"][:, 1:]).astype(jnp.float32)
    acc = jnp.pad(acc, ((0, 0), (1, 0)))
    trained = (mask > 0).astype(jnp.float32)
    return -jnp.sum(logp * mask), jnp.sum(mask), {"token_accuracy": jnp.sum(acc * trained),
                                                  "tokens": jnp.sum(trained)}
