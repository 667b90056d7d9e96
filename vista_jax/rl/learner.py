"""The RL learners: rollouts → rewards (from the env) → advantages → clipped policy update.

`make_learner(config, ...)` picks one from `config.rl.algorithm`; every learner has
`init_state(params) -> state` (a pytree of arrays, checkpointed as one item, with the
sampler's policy params at state["params"]) and `step(state, ...) -> (state, metrics,
episodes)`. GRPO, Dr.GRPO and DAPO are one group learner here (they differ in the
registered advantage estimator and, for DAPO, dynamic sampling); PPO (critic + GAE) is
`vista_jax.rl.ppo`. Everything a step draws comes from its `rng`, so a step is a function
of (state, rng, tasks): resuming from a checkpoint replays the run exactly.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from vista_jax import data
from vista_jax.rl import advantages as adv_lib
from vista_jax.rl import losses
from vista_jax.rl.train_step import make_logprob_fn, make_optimizer, make_train_step
from vista_jax.rollout import Episode, Sampler, run_episodes

# The advantage estimator (vista_jax.rl.advantages registry) of each group algorithm.
GROUP_ADVANTAGE = {"grpo": "grpo", "dr_grpo": "dr_grpo", "dapo": "grpo"}


class Learner(Protocol):
    def init_state(self, params) -> dict[str, Any]:
        """The learner's state for policy `params`: a pytree of arrays holding at least
        "params" (the sampler's policy) and "opt_state"."""

    def step(self, state: dict[str, Any], *, sampler: Sampler, vec_env, tasks: Sequence[Any],
             rng: jax.Array, to_device: Callable, patch_shape, pad_id: int,
             more_tasks: Callable[[int], Sequence[Any]] | None = None, ref_params=None
             ) -> tuple[dict[str, Any], dict[str, float], list[Episode]]:
        """One RL iteration on `tasks` (each sampled rl.group_size times on `vec_env`, which
        holds len(tasks) * group_size envs). `state` is consumed (its buffers are donated).
        `more_tasks(n)`: n fresh tasks for a DAPO refill round (called with n = len(tasks),
        at most rl.dynamic_sampling_max_rounds - 1 times a step; for exact resumes its
        answers must depend on the step only). `ref_params`: the frozen reference policy
        when rl.kl_coef > 0. Returns the new state, the step's metrics and every episode
        sampled (all rounds, in order)."""


def make_learner(config, graphdef, rest, model_cfg, grid_hw: tuple[int, int]) -> Learner:
    """The learner of `config.rl.algorithm` (grpo | dr_grpo | dapo | ppo) for a policy split
    as nnx.split(model, nnx.Param, ...) = (graphdef, params, rest). Uses config.rl and the
    rollout's sampling controls (config.rollout.temperature / top_k / top_p)."""
    algorithm = config.rl.algorithm
    if algorithm == "ppo":
        from vista_jax.rl.ppo import PPOLearner
        return PPOLearner(config, graphdef, rest, model_cfg, grid_hw)
    if algorithm not in GROUP_ADVANTAGE:
        raise ValueError(f"config.rl.algorithm={algorithm!r}: one of "
                         f"{sorted(GROUP_ADVANTAGE) + ['ppo']}")
    return GroupLearner(config, graphdef, rest, grid_hw)


def policy_optimizer(rl_cfg, learning_rate: float | None = None):
    """The RL optimizer: AdamW at rl.learning_rate (or `learning_rate`, e.g. the critic's)
    after rl.warmup_steps, no decay, global-norm clip rl.max_grad_norm."""
    lr = rl_cfg.learning_rate if learning_rate is None else learning_rate
    return make_optimizer(lr, warmup_steps=rl_cfg.warmup_steps,
                          total_steps=rl_cfg.steps, max_grad_norm=rl_cfg.max_grad_norm,
                          decay=False)


# --- loss ---------------------------------------------------------------------------------


def make_policy_objective(rl_cfg, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
                          ) -> Callable:
    """`fn(logits, batch) -> (per-token loss [B, L], metric sums)`: the clipped policy loss
    (+ kl_coef · KL to the reference) before aggregation. Advantages are per row [B] or per
    token [B, L]. Metric sums are over the loss mask; "tokens" is its sum."""
    policy_loss = losses.get_policy_loss(rl_cfg.policy_loss)
    kl_coef = float(rl_cfg.kl_coef)
    kl_estimator = losses.KL_ESTIMATORS[rl_cfg.kl_estimator]

    def objective(logits, batch):
        logp = losses.token_logprobs(logits, batch["tokens"], temperature, top_k, top_p)
        mask = batch["loss_mask"]
        adv = batch["advantages"]
        adv = adv[:, None] if adv.ndim == 1 else adv  # [B, 1] or [B, L]
        per_tok, clipped = policy_loss(logp, batch["old_logprobs"], adv,
                                       clip_eps_low=rl_cfg.clip_eps_low,
                                       clip_eps_high=rl_cfg.clip_eps_high,
                                       dual_clip=float(rl_cfg.dual_clip))
        metrics = {"pg_loss": jnp.sum(per_tok * mask)}
        if kl_coef > 0:
            kl = kl_estimator(logp, batch["ref_logprobs"])
            per_tok = per_tok + kl_coef * kl
            metrics["kl_ref"] = jnp.sum(kl * mask)
        metrics.update(
            tokens=jnp.sum(mask),
            clip_fraction=jnp.sum(clipped * mask),
            approx_kl_old=jnp.sum((batch["old_logprobs"] - logp) * mask),
            logprob_abs_diff=jnp.sum(jnp.abs(batch["old_logprobs"] - logp) * mask),
            entropy=jnp.sum(losses.token_entropy(logits, temperature, top_k, top_p) * mask),
        )
        return per_tok, metrics

    return objective


def make_rl_loss(rl_cfg, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
                 ) -> Callable:
    """The learner's loss on a packed RL batch (see train_step.py for the layout).

    `temperature`, `top_k`, `top_p` must be the rollout's sampling controls: the policy
    being optimised is the tempered, truncated one the sampler drew from (whose log-probs
    are `old_logprobs`), so the importance ratio is 1 on policy. Filler rows (row_mask 0,
    loss mask 0) add nothing to the sum or to any denominator."""
    objective = make_policy_objective(rl_cfg, temperature, top_k, top_p)

    def loss(logits, batch):
        per_tok, metrics = objective(logits, batch)
        total, denom = losses.aggregate(per_tok, batch["loss_mask"], rl_cfg.loss_agg,
                                        row_mask=batch.get("row_mask"))
        return total, denom, metrics

    return loss


# --- shared pieces of a step --------------------------------------------------------------


def rollout_round(sampler: Sampler, params, vec_env, tasks: Sequence[Any], rl_cfg, rng,
                  temperature: float):
    """Samples each task group_size times. Returns the episodes, their shaped rewards
    (env reward + DAPO's overlong shaping) float32 [N], the overlong part [N], the group of
    each row [N] and run_episodes' stats."""
    g = int(rl_cfg.group_size)
    rows = [t for t in tasks for _ in range(g)]
    episodes, stats = run_episodes(sampler, params, vec_env, rows, rng=rng,
                                   temperature=temperature)
    rewards = np.array([e.reward for e in episodes], np.float32)
    # DAPO's overlong shaping (off with rl.overlong_buffer = 0): counted on generated tokens.
    overlong = adv_lib.overlong_penalty([e.loss_mask.sum() for e in episodes],
                                        int(rl_cfg.overlong_max_tokens),
                                        int(rl_cfg.overlong_buffer),
                                        float(rl_cfg.overlong_penalty))
    return episodes, rewards + overlong, overlong, np.arange(len(rows)) // g, stats


def minibatch_updates(update: Callable, state, batch: dict[str, np.ndarray], rl_cfg, rng,
                      to_device: Callable, prepare: Callable | None = None):
    """rl.updates_per_rollout optimizer steps over a random partition of the batch's rows
    (drawn from `rng`; a single step takes the batch as it is).
    `update(state, device_minibatch) -> (state, metrics)`; `prepare(device_minibatch)` may
    add fields (reference log-probs). Returns the new state and the per-update metrics
    averaged."""
    n_up = int(rl_cfg.updates_per_rollout)
    rows = batch["tokens"].shape[0]
    order = np.arange(rows)
    if n_up > 1:
        seed = int(jax.random.randint(rng, (), 0, 2**31 - 1))
        order = np.random.default_rng(seed).permutation(rows)
    step_metrics = []
    for mb in np.array_split(order, n_up):
        mb_batch = to_device({k: v[mb] for k, v in batch.items()})
        if prepare is not None:
            mb_batch = prepare(mb_batch)
        state, m = update(state, mb_batch)
        step_metrics.append({k: float(v) for k, v in m.items()})
    return state, {k: float(np.mean([m[k] for m in step_metrics])) for k in step_metrics[0]}


def rollout_metrics(episodes: Sequence[Episode], rewards, overlong, groups, stats_list,
                    rollout_s: float, update_s: float, seq_len: int) -> dict[str, float]:
    """The step's metrics that do not come from the update."""
    gen_tokens = int(sum(e.loss_mask.sum() for e in episodes))
    return {
        **episode_metrics(episodes),
        "informative_groups": adv_lib.informative_group_fraction(rewards, groups),
        "reward/overlong": float(np.mean(overlong)),
        "rollout_s": rollout_s, "update_s": update_s,
        "tools_s": float(sum(s["tools_s"] for s in stats_list)),
        "decode_tokens_per_s": float(np.mean([s["decode_tokens_per_s"] for s in stats_list])),
        "update_tokens_per_s": gen_tokens / max(update_s, 1e-9), "seq_len": seq_len,
    }


# --- GRPO / Dr.GRPO / DAPO ----------------------------------------------------------------


@dataclasses.dataclass
class _Sampled:
    """What a group learner's rollout rounds produced."""

    rounds: int = 0
    episodes: list = dataclasses.field(default_factory=list)  # every round's, in order
    rewards: Any = dataclasses.field(default_factory=list)  # shaped, float32 [N]
    overlong: Any = dataclasses.field(default_factory=list)  # the overlong part [N]
    groups: Any = dataclasses.field(default_factory=list)  # group of each episode [N]
    stats: list = dataclasses.field(default_factory=list)  # run_episodes stats per round
    kept: list = dataclasses.field(default_factory=list)  # the batch's rows (whole groups)
    advantages: Any = None  # of the kept rows, float32
    fillers: list = dataclasses.field(default_factory=list)  # rows that only keep the shape


class GroupLearner:
    """Group-relative advantages (rl.algorithm grpo | dr_grpo | dapo), one per episode
    broadcast over its generated tokens, and the clipped policy loss. DAPO adds dynamic
    sampling: groups whose rewards are all equal are dropped and fresh prompts rolled out
    (up to rl.dynamic_sampling_max_rounds rounds in all) until rl.prompts_per_step
    informative groups are in the batch; any shortfall is filled with rows that keep the
    batch's shape but carry no loss mask (no gradient, no share of a denominator)."""

    def __init__(self, config, graphdef, rest, grid_hw: tuple[int, int]):
        self.rl = config.rl
        r = config.rollout
        self.temperature, top_k, top_p = float(r.temperature), int(r.top_k), float(r.top_p)
        self.train_buckets, self.max_images = tuple(r.train_buckets), int(r.max_images)
        self.advantage = adv_lib.get_advantage(GROUP_ADVANTAGE[self.rl.algorithm])
        self.dynamic_sampling = self.rl.algorithm == "dapo"
        self.tx = policy_optimizer(self.rl)
        loss = make_rl_loss(self.rl, self.temperature, top_k, top_p)
        self.train_step = make_train_step(graphdef, rest, loss, self.tx, grid_hw,
                                          micro_batches=int(self.rl.micro_batches))
        # The reference policy's log-probs under the same sampling controls as the policy's.
        self.ref_logprob_fn = (make_logprob_fn(graphdef, rest, grid_hw, self.temperature, top_k,
                                               top_p) if self.rl.kl_coef > 0 else None)

    def init_state(self, params) -> dict[str, Any]:
        return {"params": params, "opt_state": self.tx.init(params)}

    def step(self, state, *, sampler, vec_env, tasks, rng, to_device, patch_shape, pad_id,
             more_tasks=None, ref_params=None):
        k_roll, k_perm = jax.random.split(rng)
        t0 = time.perf_counter()
        s = self._sample(sampler, state["params"], vec_env, tasks, k_roll, more_tasks)
        t1 = time.perf_counter()
        n_fill = len(s.fillers)
        batch = data.pack_episodes(s.kept + s.fillers, self.train_buckets, self.max_images,
                                   patch_shape, pad_id,
                                   np.concatenate([s.advantages, np.zeros(n_fill, np.float32)]))
        batch["row_mask"] = np.ones(len(s.kept) + n_fill, np.float32)
        batch["row_mask"][len(s.kept):] = 0.0
        batch["loss_mask"][len(s.kept):] = 0.0

        state, metrics = self._update(state, batch, k_perm, to_device, ref_params)
        t2 = time.perf_counter()
        metrics.update(rollout_metrics(s.episodes, s.rewards, s.overlong, s.groups, s.stats,
                                       t1 - t0, t2 - t1, batch["tokens"].shape[1]))
        metrics["advantage_abs_mean"] = (float(np.abs(s.advantages).mean()) if len(s.kept)
                                         else 0.0)
        if self.dynamic_sampling:
            g = int(self.rl.group_size)
            sampled = s.rounds * len(tasks)
            metrics.update({"dynamic_sampling/rounds": float(s.rounds),
                            "dynamic_sampling/groups_sampled": float(sampled),
                            "dynamic_sampling/kept_fraction": len(s.kept) // g / sampled,
                            "dynamic_sampling/filler_rows": float(n_fill)})
        return state, metrics, s.episodes

    def _sample(self, sampler, params, vec_env, tasks, rng, more_tasks) -> _Sampled:
        """The rollout rounds of one step: one round, or for DAPO rounds on fresh prompts
        (more_tasks(len(tasks)) each) until len(tasks) informative groups are kept or
        rl.dynamic_sampling_max_rounds is reached; then fillers for any shortfall, taken
        from the dropped rows (the shortest, so the padded length stays small)."""
        p, g = len(tasks), int(self.rl.group_size)
        rounds = int(self.rl.dynamic_sampling_max_rounds) if self.dynamic_sampling else 1
        out = _Sampled()
        kept_adv, dropped = [], []
        for r in range(rounds):
            if r > 0:
                if more_tasks is None:
                    break
                tasks = more_tasks(p)
            eps, rewards, overlong, groups, stats = rollout_round(
                sampler, params, vec_env, tasks, self.rl, jax.random.fold_in(rng, r),
                self.temperature)
            adv = self.advantage(rewards, groups)
            out.rounds += 1
            out.episodes += eps
            out.rewards.append(rewards), out.overlong.append(overlong), out.stats.append(stats)
            out.groups.append(groups + r * p)
            if not self.dynamic_sampling:
                out.kept, kept_adv = eps, [adv]
                break
            informative = adv_lib.informative_group_rows(rewards, groups)
            # A round's groups are g contiguous rows: the first groups still needed.
            rows = informative[:(p - len(out.kept) // g) * g]
            out.kept += [eps[i] for i in rows]
            kept_adv.append(adv[rows])
            dropped += [eps[i] for i in np.setdiff1d(np.arange(len(eps)), informative)]
            if len(out.kept) == p * g:
                break
        out.rewards, out.overlong = np.concatenate(out.rewards), np.concatenate(out.overlong)
        out.groups = np.concatenate(out.groups)
        out.advantages = np.concatenate(kept_adv).astype(np.float32)
        out.fillers = sorted(dropped, key=lambda e: len(e.tokens))[:p * g - len(out.kept)]
        return out

    def _update(self, state, batch, rng, to_device, ref_params):
        def update(state, mb):
            params, opt_state, m = self.train_step(state["params"], state["opt_state"], mb)
            return {"params": params, "opt_state": opt_state}, m

        prepare = with_reference(self.ref_logprob_fn, ref_params)
        return minibatch_updates(update, state, batch, self.rl, rng, to_device, prepare)


def with_reference(ref_logprob_fn, ref_params) -> Callable | None:
    """The minibatch hook adding the frozen reference's log-probs (`ref_logprobs`) for the
    KL term, or None without one (rl.kl_coef = 0)."""
    if ref_logprob_fn is None:
        return None
    if ref_params is None:
        raise ValueError("rl.kl_coef > 0 needs ref_params (the frozen SFT policy)")
    return lambda mb: {**mb, "ref_logprobs": ref_logprob_fn(ref_params, mb)}


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
