"""PPO (rl.algorithm = "ppo"): a learned critic, token-level GAE and the clipped losses.

Per step: roll out, score the batch with the current critic (the old values), put each
episode's reward on its last generated token, run `advantages.gae` over each row's
generated tokens, whiten the advantages over the batch's generated tokens, then update the
policy with the clipped surrogate on per-token advantages plus rl.value_coef times the
clipped value loss, in one jitted step (micro-batches accumulated exactly, as
`train_step.make_train_step`).

The critic (`rl.critic`):
- "shared": a `ValueHead` on the policy's own trunk; the value loss also trains the trunk
  (at the policy's learning rate), the head has its own optimizer at rl.critic_learning_rate.
- "separate": a second trunk, a copy of the policy's at init, plus a head, with one optimizer
  at rl.critic_learning_rate.

Values are aligned like token log-probs: the value of generated token t is the critic's
estimate of the state it was sampled in, read from the last hidden state at t - 1.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from vista_jax import data
from vista_jax.sharding import jit_keeping_shardings
from vista_jax.rl import advantages as adv_lib
from vista_jax.rl import learner, losses
from vista_jax.rl.learner import (make_policy_objective, minibatch_updates, policy_optimizer,
                                  rollout_metrics, rollout_round)
from vista_jax.rl.train_step import (accumulate_gradients, make_logprob_fn, normalize_metrics,
                                     policy_hidden)


class ValueHead(nnx.Module):
    """V(state) from the trunk's last hidden state: its own RMSNorm (the residual stream's
    scale grows with depth; HF-style critics read the final-norm output), then a Linear to
    one value. Zero-initialised Linear: values start at 0 and, at the first step, the value
    loss sends no gradient into the trunk."""

    def __init__(self, embed_dim: int, eps: float = 1e-6):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((embed_dim,), jnp.float32))
        self.proj = nnx.Linear(embed_dim, 1, kernel_init=nnx.initializers.zeros_init(),
                               bias_init=nnx.initializers.zeros_init(),
                               param_dtype=jnp.float32, rngs=nnx.Rngs(0))

    def __call__(self, hidden_btd: jax.Array) -> jax.Array:  # [B, T, D] -> float32 [B, T]
        x = hidden_btd.astype(jnp.float32)
        x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
        return self.proj(x * self.scale[...])[..., 0]


def token_values(head_values_bt: jax.Array) -> jax.Array:
    """The value of each token's state: the head's output at t - 1 (as token_logprobs reads
    logits at t - 1); position 0 gets 0. [B, T] -> [B, T]."""
    return jnp.pad(head_values_bt[:, :-1], ((0, 0), (1, 0)))


def critic_values(graphdef, rest, head_graphdef, trunk_params, head_params, batch, grid_hw):
    """Values [B, L] of a packed batch under a critic (trunk params + value head params)."""
    hidden = policy_hidden(nnx.merge(graphdef, trunk_params, rest), batch, grid_hw)
    return token_values(nnx.merge(head_graphdef, head_params)(hidden))


def make_ppo_train_step(graphdef, rest, head_graphdef, rl_cfg, tx, critic_tx,
                        grid_hw: tuple[int, int], *, shared: bool, micro_batches: int = 1,
                        temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
    """The jitted PPO update (state arguments donated)
        (params, opt_state, critic, critic_opt_state, batch)
            -> (params, opt_state, critic, critic_opt_state, metrics).
    `critic` = {"value_head": head params} (shared) or {"trunk": params, "value_head": ...}
    (separate). The batch carries per-token advantages [B, L], old_values and returns
    [B, L] besides the RL layout. Loss = aggregate(policy loss + value_coef · value loss)
    under rl.loss_agg: one denominator, so accumulation over micro-batches is exact."""
    objective = make_policy_objective(rl_cfg, temperature, top_k, top_p)
    value_coef, value_clip = float(rl_cfg.value_coef), float(rl_cfg.value_clip)

    def sums(trainable, mb):
        params, critic = trainable
        model = nnx.merge(graphdef, params, rest)
        hidden = policy_hidden(model, mb, grid_hw)  # [B, L, D]
        logits = model.logits(hidden)
        if not shared:
            hidden = policy_hidden(nnx.merge(graphdef, critic["trunk"], rest), mb, grid_hw)
        values = token_values(nnx.merge(head_graphdef, critic["value_head"])(hidden))
        per_tok, metrics = objective(logits, mb)
        v_loss, v_clipped = losses.clipped_value_loss(values, mb["old_values"], mb["returns"],
                                                      value_clip)
        mask = mb["loss_mask"]
        total, denom = losses.aggregate(per_tok + value_coef * v_loss, mask, rl_cfg.loss_agg,
                                        row_mask=mb.get("row_mask"))
        metrics.update(value_loss=jnp.sum(v_loss * mask),
                       value_clip_fraction=jnp.sum(v_clipped * mask),
                       value_mean_new=jnp.sum(values * mask))
        return total, (denom, metrics)

    value_and_grad = jax.value_and_grad(sums, has_aux=True)

    def step(params, opt_state, critic, critic_opt_state, batch):
        total, denom, metrics, (g_policy, g_critic) = accumulate_gradients(
            value_and_grad, (params, critic), batch, micro_batches)
        updates, opt_state = tx.update(g_policy, opt_state, params)
        params = optax.apply_updates(params, updates)
        updates, critic_opt_state = critic_tx.update(g_critic, critic_opt_state, critic)
        critic = optax.apply_updates(critic, updates)
        out = normalize_metrics(metrics, total, denom)
        out["grad_norm"] = optax.tree.norm(g_policy)
        out["critic_grad_norm"] = optax.tree.norm(g_critic)
        return params, opt_state, critic, critic_opt_state, out

    # The four state arguments are donated and come back in their input shardings (as
    # make_train_step's): one program for every step, and resumed runs run the same one.
    return jit_keeping_shardings(step, num_state=4)


def explained_variance(values, returns, mask) -> float:
    """1 - Var(returns - values) / Var(returns) over the positions where mask > 0 (1: the
    critic explains the returns; 0: no better than their mean; 0 when the returns are
    constant)."""
    m = np.asarray(mask) > 0
    r, v = np.asarray(returns, np.float64)[m], np.asarray(values, np.float64)[m]
    var = r.var() if r.size else 0.0
    return float(1.0 - (r - v).var() / var) if var > 1e-12 else 0.0


class PPOLearner:
    """See the module docstring. State: {"params", "opt_state", "critic",
    "critic_opt_state"}, all arrays."""

    def __init__(self, config, graphdef, rest, model_cfg, grid_hw: tuple[int, int]):
        rl = self.rl = config.rl
        r = config.rollout
        self.temperature, top_k, top_p = float(r.temperature), int(r.top_k), float(r.top_p)
        self.train_buckets, self.max_images = tuple(r.train_buckets), int(r.max_images)
        self.shared = rl.critic == "shared"
        self.embed_dim, self.eps = int(model_cfg.embed_dim), float(model_cfg.rms_norm_eps)
        self.head_graphdef = nnx.graphdef(ValueHead(self.embed_dim, self.eps))
        self.graphdef, self.rest, self.grid_hw = graphdef, rest, grid_hw
        self.tx = policy_optimizer(rl)
        self.critic_tx = policy_optimizer(rl, rl.critic_learning_rate)
        self.micro_batches = int(rl.micro_batches)
        self.train_step = make_ppo_train_step(
            graphdef, rest, self.head_graphdef, rl, self.tx, self.critic_tx, grid_hw,
            shared=self.shared, micro_batches=self.micro_batches,
            temperature=self.temperature, top_k=top_k, top_p=top_p)

        def values(trunk, head, batch):  # [B, L], one micro-batch at a time, as training
            def one(mb):
                return critic_values(graphdef, rest, self.head_graphdef, trunk, head, mb,
                                     grid_hw)

            if self.micro_batches == 1:
                return one(batch)
            split = jax.tree.map(lambda x: x.reshape((self.micro_batches, -1) + x.shape[1:]),
                                 batch)
            out = jax.lax.map(one, split)
            return out.reshape((-1,) + out.shape[2:])

        self.values_fn = jax.jit(values)
        self.ref_logprob_fn = (make_logprob_fn(graphdef, rest, grid_hw, self.temperature, top_k,
                                               top_p) if rl.kl_coef > 0 else None)

    def init_state(self, params) -> dict[str, Any]:
        head = nnx.state(ValueHead(self.embed_dim, self.eps))
        mesh = jax.sharding.get_mesh()
        if not mesh.empty:  # replicated over the mesh, beside the sharded policy
            replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
            head = jax.device_put(head, replicated)
        critic = {"value_head": head}
        if not self.shared:  # the critic's own trunk starts as the policy's
            critic["trunk"] = jax.tree.map(lambda x: x.copy(), params)
        return {"params": params, "opt_state": self.tx.init(params), "critic": critic,
                "critic_opt_state": self.critic_tx.init(critic)}

    def _trunk(self, state):
        return state["params"] if self.shared else state["critic"]["trunk"]

    def old_values(self, state, batch, to_device) -> np.ndarray:
        """The current critic's values [B, L] of a host batch, in training-sized pieces (a
        minibatch per call, its micro-batches one after another)."""
        rows = batch["tokens"].shape[0]
        chunk = rows // int(self.rl.updates_per_rollout)
        out = []
        for lo in range(0, rows, chunk):
            mb = to_device({k: v[lo:lo + chunk] for k, v in batch.items()})
            out.append(np.asarray(self.values_fn(self._trunk(state),
                                                 state["critic"]["value_head"], mb)))
        return np.concatenate(out) * batch["loss_mask"]

    def step(self, state, *, sampler, vec_env, tasks, rng, to_device, patch_shape, pad_id,
             more_tasks=None, ref_params=None):
        rl = self.rl
        k_roll, k_perm = jax.random.split(rng)
        t0 = time.perf_counter()
        episodes, rewards, overlong, groups, stats = rollout_round(
            sampler, state["params"], vec_env, tasks, rl, k_roll, self.temperature)
        batch = data.pack_episodes(episodes, self.train_buckets, self.max_images, patch_shape,
                                   pad_id, np.zeros(len(episodes), np.float32))
        del batch["advantages"]  # per token, below
        mask = batch["loss_mask"]
        old_values = self.old_values(state, batch, to_device)
        adv, returns = adv_lib.gae(old_values, adv_lib.terminal_token_rewards(rewards, mask),
                                   mask, float(rl.gae_gamma), float(rl.gae_lambda))
        batch.update(advantages=adv_lib.whiten(adv, mask), old_values=old_values,
                     returns=returns, row_mask=np.ones(len(episodes), np.float32))
        t1 = time.perf_counter()

        def update(state, mb):
            params, opt, critic, critic_opt, m = self.train_step(
                state["params"], state["opt_state"], state["critic"], state["critic_opt_state"],
                mb)
            return {"params": params, "opt_state": opt, "critic": critic,
                    "critic_opt_state": critic_opt}, m

        prepare = learner.with_reference(self.ref_logprob_fn, ref_params)
        state, metrics = minibatch_updates(update, state, batch, rl, k_perm, to_device, prepare)
        t2 = time.perf_counter()
        metrics.update(rollout_metrics(episodes, rewards, overlong, groups, [stats], t1 - t0,
                                       t2 - t1, batch["tokens"].shape[1]))
        on = mask > 0
        metrics.update(
            value_mean=float(old_values[on].mean()) if on.any() else 0.0,
            explained_variance=explained_variance(old_values, returns, mask),
            return_mean=float(returns[on].mean()) if on.any() else 0.0,
            advantage_mean=float(adv[on].mean()) if on.any() else 0.0,
            advantage_std=float(adv[on].std()) if on.any() else 0.0,
            advantage_abs_mean=float(np.abs(adv[on]).mean()) if on.any() else 0.0)
        return state, metrics, episodes
