"""The RL loop: rollouts → rewards (from the env) → advantages → clipped policy update.

GRPO, Dr.GRPO (and later PPO/DAPO) differ only in the registered advantage estimator,
policy loss and aggregation chosen from `config.rl`; this loop is shared.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vista_jax import data
from vista_jax.rl import advantages as adv_lib
from vista_jax.rl import losses
from vista_jax.rollout import Episode, Sampler, run_episodes


def make_rl_loss(rl_cfg, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
                 ) -> Callable:
    """The learner's loss on a packed RL batch (see train_step.py for the layout).

    `temperature`, `top_k`, `top_p` must be the rollout's sampling controls: the policy
    being optimised is the tempered, truncated one the sampler drew from (whose log-probs
    are `old_logprobs`), so the importance ratio is 1 on policy."""
    policy_loss = losses.get_policy_loss(rl_cfg.policy_loss)
    kl_coef = float(rl_cfg.kl_coef)
    kl_estimator = losses.KL_ESTIMATORS[rl_cfg.kl_estimator]

    def loss(logits, batch):
        logp = losses.token_logprobs(logits, batch["tokens"], temperature, top_k, top_p)
        mask = batch["loss_mask"]
        per_tok, clipped = policy_loss(logp, batch["old_logprobs"], batch["advantages"][:, None],
                                       clip_eps_low=rl_cfg.clip_eps_low,
                                       clip_eps_high=rl_cfg.clip_eps_high,
                                       dual_clip=float(rl_cfg.dual_clip))
        metrics = {}
        if kl_coef > 0:
            kl = kl_estimator(logp, batch["ref_logprobs"])
            per_tok = per_tok + kl_coef * kl
            metrics["kl_ref"] = jnp.sum(kl * mask)
        total, denom = losses.aggregate(per_tok, mask, rl_cfg.loss_agg)
        metrics.update(
            tokens=jnp.sum(mask),
            clip_fraction=jnp.sum(clipped * mask),
            approx_kl_old=jnp.sum((batch["old_logprobs"] - logp) * mask),
            logprob_abs_diff=jnp.sum(jnp.abs(batch["old_logprobs"] - logp) * mask),
            entropy=jnp.sum(losses.token_entropy(logits, temperature, top_k, top_p) * mask),
        )
        return total, denom, metrics

    return loss


def rl_step(*, sampler: Sampler, params, opt_state, train_step, vec_env, tasks: Sequence[Any],
            rl_cfg, rollout_cfg, rng, to_device: Callable, patch_shape, pad_id: int,
            ref_logprob_fn=None, ref_params=None):
    """One RL iteration on `tasks` (each repeated group_size times). Returns the new params,
    opt state, the step's metrics and its episodes."""
    g = int(rl_cfg.group_size)
    rows = [t for t in tasks for _ in range(g)]
    t0 = time.perf_counter()
    episodes, stats = run_episodes(sampler, params, vec_env, rows, rng=rng,
                                   temperature=float(rollout_cfg.temperature))
    rewards = np.array([e.reward for e in episodes], np.float32)
    # DAPO's overlong shaping (off with rl.overlong_buffer = 0): counted on generated tokens.
    overlong = adv_lib.overlong_penalty([e.loss_mask.sum() for e in episodes],
                                        int(rl_cfg.overlong_max_tokens),
                                        int(rl_cfg.overlong_buffer),
                                        float(rl_cfg.overlong_penalty))
    rewards = rewards + overlong
    groups = np.arange(len(rows)) // g
    advantages = adv_lib.get_advantage(rl_cfg.algorithm)(rewards, groups)
    t1 = time.perf_counter()
    batch = data.pack_episodes(episodes, tuple(rollout_cfg.train_buckets),
                               int(rollout_cfg.max_images), patch_shape, pad_id, advantages)
    n_up = int(rl_cfg.updates_per_rollout)
    order = np.random.default_rng(int(jax.random.randint(rng, (), 0, 2**31 - 1))).permutation(len(rows))
    step_metrics = []
    for mb in np.array_split(order, n_up):
        mb_batch = {k: v[mb] for k, v in batch.items()}
        mb_batch = to_device(mb_batch)
        if ref_logprob_fn is not None:
            mb_batch["ref_logprobs"] = ref_logprob_fn(ref_params, mb_batch)
        params, opt_state, m = train_step(params, opt_state, mb_batch)
        step_metrics.append({k: float(v) for k, v in m.items()})
    t2 = time.perf_counter()
    gen_tokens = int(sum(e.loss_mask.sum() for e in episodes))
    metrics = {k: float(np.mean([m[k] for m in step_metrics])) for k in step_metrics[0]}
    metrics.update(episode_metrics(episodes))
    metrics.update(
        informative_groups=adv_lib.informative_group_fraction(rewards, groups),
        **{"reward/overlong": float(overlong.mean())},
        advantage_abs_mean=float(np.abs(advantages).mean()),
        rollout_s=t1 - t0, update_s=t2 - t1, tools_s=stats["tools_s"],
        decode_tokens_per_s=stats["decode_tokens_per_s"],
        update_tokens_per_s=gen_tokens / max(t2 - t1, 1e-9), seq_len=batch["tokens"].shape[1])
    return params, opt_state, metrics, episodes


def episode_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    comps = {}
    for key in ("correct", "format", "repetition"):
        comps[f"reward/{key}"] = float(np.mean([e.reward_components.get(key, 0.0) for e in episodes]))
    calls = sum(e.num_tool_calls for e in episodes)
    # Per episode: calls of each tool, and turns ending in each error code (E1 protocol
    # codes, tool-server codes), from the env's log record.
    by_tool: dict[str, int] = collections.Counter()
    by_error: dict[str, int] = collections.Counter()
    for e in episodes:
        for turn in (e.trajectory or {}).get("turns", ()):
            if turn.get("tool_call"):
                by_tool[f"tool_calls/{turn['tool_call']['name']}"] += 1
            if turn.get("error"):
                by_error[f"errors/{turn['error']}"] += 1
    return {
        **{k: v / len(episodes) for k, v in sorted({**by_tool, **by_error}.items())},
        "reward": float(np.mean([e.reward for e in episodes])),
        "accuracy": float(np.mean([e.correct for e in episodes])),
        "turns": float(np.mean([e.num_turns for e in episodes])),
        "response_tokens": float(np.mean([e.loss_mask.sum() for e in episodes])),
        "tool_calls": calls / len(episodes),
        "tool_call_validity": (sum(e.num_valid_tool_calls for e in episodes) / calls) if calls else 0.0,
        **comps,
    }
