"""The main job: tools → expert data → tokenizer → model → base eval → SFT → eval → GRPO →
eval → report. `vista-train --config configs/tiny_cpu.py` runs it; everything it writes
goes to `<run_root>/<name>/`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from tqdm.auto import tqdm

from vista_jax import checkpoint as ckpt_lib
from vista_jax import config as config_lib
from vista_jax import data as data_lib
from vista_jax import distributed
from vista_jax import sharding
from vista_jax import tokenizer as tok_lib
from vista_jax.env import (Budgets, RewardConfig, TaskMixture, TokenizerCounter, TrajectoryWriter,
                           VectorVistaEnv)
from vista_jax.env.expert import ExpertDataSource, expert_records, write_expert_dataset
from vista_jax.env.tool_client import SyncToolClient
from vista_jax.evaluate import evaluate
from vista_jax.models import PRESETS, ModelConfig, Qwen25VL, mrope_positions
from vista_jax.rl import learner
from vista_jax.rl.train_step import make_logprob_fn, make_optimizer, make_train_step, sft_loss
from vista_jax.rollout import Sampler, SamplerConfig
from vista_jax import sft as sft_lib
from vista_jax.sft import run_sft

log = logging.getLogger("vista_jax")


class MetricsLog:
    """Appends one JSON line per logged step to metrics.jsonl and echoes a short line."""

    def __init__(self, path: str):
        self.f = open(path, "a", encoding="utf-8")

    def __call__(self, phase: str, step: int, metrics: dict[str, Any], echo: bool = False):
        rec = {"phase": phase, "step": step, "time": time.time(), **metrics}
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        if echo:
            keys = [k for k in ("loss", "reward", "accuracy", "informative_groups", "clip_fraction",
                                "logprob_abs_diff", "tool_call_validity", "decode_tokens_per_s")
                    if k in metrics]
            tqdm.write(f"[{phase} {step}] " + " ".join(f"{k}={metrics[k]:.4g}" for k in keys))

    def close(self):
        self.f.close()


MODEL_PRESETS = PRESETS  # config.model.preset -> a released checkpoint's ModelConfig


def model_config_from(config: ml_collections.ConfigDict, tok: tok_lib.VistaTokenizer) -> ModelConfig:
    """The policy's ModelConfig: the sizes in config.model, or with `model.preset` a released
    checkpoint's shapes (its vocab rows, which may exceed the tokenizer's length; the size
    fields are then ignored). dtypes, remat and sharding rules come from config either way."""
    m = config.model
    common = dict(image_pad_id=tok.image_pad_id, dtype=m.dtype, param_dtype=m.param_dtype,
                  remat=m.remat, sharding_rules=sharding.rules_from_config(config))
    preset = m.get("preset", "")
    if preset:
        if preset not in MODEL_PRESETS:
            raise ValueError(f"config.model.preset={preset!r}: one of {sorted(MODEL_PRESETS)}")
        base = MODEL_PRESETS[preset]()
        if tok.vocab_size > base.vocab_size:
            raise ValueError(f"config.model.preset={preset!r} has {base.vocab_size} embedding rows "
                             f"but the tokenizer has {tok.vocab_size} tokens")
        return dataclasses.replace(base, **common)
    return ModelConfig(
        vocab_size=tok.vocab_size, embed_dim=m.embed_dim, num_layers=m.num_layers,
        num_heads=m.num_heads, num_kv_heads=m.num_kv_heads, head_dim=m.head_dim,
        mlp_dim=m.mlp_dim, rope_theta=m.rope_theta, tie_word_embeddings=m.tie_word_embeddings,
        mrope_section=tuple(m.mrope_section),
        vision_embed_dim=m.vision_embed_dim, vision_num_layers=m.vision_num_layers,
        vision_num_heads=m.vision_num_heads, vision_mlp_dim=m.vision_mlp_dim, **common)


def build_policy(config: ml_collections.ConfigDict, tok: tok_lib.VistaTokenizer, mesh,
                 rules: sharding.Rules) -> tuple[Qwen25VL, ModelConfig]:
    """The policy, each param in its NamedSharding on `mesh`: random init from
    `model_config_from`, or with `model.checkpoint` the HF checkpoint's weights streamed
    into their shardings (its config.json fixes the sizes; dtypes, remat and rules still
    come from config). Checks that the checkpoint agrees with the tokenizer (its
    `<|image_pad|>` id, enough embedding rows) and with `model.preset` if one is set."""
    m = config.model
    if not m.checkpoint:
        model_cfg = model_config_from(config, tok)
        return sharding.create_sharded_model(
            lambda: Qwen25VL(model_cfg, rngs=nnx.Rngs(config.seed)), mesh, rules), model_cfg
    from vista_jax.models.hf_checkpoint import load_hf_checkpoint, read_hf_config

    cfg = read_hf_config(m.checkpoint)  # checked before any weight is read
    where = f"config.model.checkpoint={m.checkpoint!r}"
    if cfg.image_pad_id != tok.image_pad_id:
        raise ValueError(f"{where}: image_token_id {cfg.image_pad_id} but the tokenizer's "
                         f"<|image_pad|> is {tok.image_pad_id}")
    if cfg.vocab_size < tok.vocab_size:
        raise ValueError(f"{where}: {cfg.vocab_size} embedding rows for {tok.vocab_size} "
                         "tokens (with the added protocol tags)")
    if m.preset:
        base = MODEL_PRESETS[m.preset]()
        for name in ("num_layers", "embed_dim", "num_heads", "num_kv_heads", "mlp_dim",
                     "vocab_size", "vision_num_layers"):
            if getattr(base, name) != getattr(cfg, name):
                raise ValueError(f"{where}: {name}={getattr(cfg, name)} but config.model.preset="
                                 f"{m.preset!r} has {getattr(base, name)}")
    return load_hf_checkpoint(m.checkpoint, mesh, rules, dtype=m.dtype, param_dtype=m.param_dtype,
                              remat=m.remat, sharding_rules=rules)


def conversation_row(tok: tok_lib.VistaTokenizer, sampler: Sampler, messages) -> dict[str, Any]:
    """An expert conversation as a training row (tokens, positions, loss mask, which tokens
    are copied from the context (`sft.copied_mask`), patches)."""
    seg = tok.render_conversation(messages)
    grid = (1, sampler.grid // 2, sampler.grid // 2)
    pos, _ = mrope_positions(seg.ids, [grid] * len(seg.images), 0, image_pad_id=tok.image_pad_id)
    return {"tokens": seg.ids, "positions": pos, "loss_mask": seg.loss_mask,
            "copied": sft_lib.copied_mask(tok, messages, seg),
            "images": [sampler.image_patches(im) for im in seg.images]}


def corpus_texts(records) -> list[str]:
    """Text the tiny BPE is trained on: every message of the expert trajectories."""
    return [m["content"] for r in records for m in r["messages"]]


def param_table(params) -> str:
    rows = []
    for path, x in jax.tree_util.tree_leaves_with_path(params):
        name = "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)
        spec = getattr(getattr(x, "sharding", None), "spec", "")
        rows.append(f"  {name:<60} {str(tuple(x.shape)):<20} {spec}")
    total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    return "\n".join(rows + [f"  total parameters: {total:,}"])


def _train_sft(config, tok, sampler, expert, graphdef, rest, params, grid_hw, patch_shape,
               to_device, eval_env, val_tasks, metrics_log):
    """The SFT phase: expert conversations -> weighted rows -> `run_sft` with validation.
    Returns (params, info) with the best validated params."""
    rows = [conversation_row(tok, sampler, r["messages"]) for r in expert]
    fit = [r for r in rows if data_lib.fits(r, config.sft.seq_len, config.rollout.max_images)]
    log.info("SFT rows: %d (%d dropped as longer than sft.seq_len=%d)", len(fit),
             len(rows) - len(fit), config.sft.seq_len)
    weights = sft_lib.copy_loss_weights(fit, config.sft.copy_weight, config.sft.copy_balance)
    fit = [dict(r, loss_mask=w) for r, w in zip(fit, weights)]
    tx = make_optimizer(config.sft.learning_rate, warmup_steps=config.sft.warmup_steps,
                        total_steps=config.sft.steps, weight_decay=config.sft.weight_decay)
    sft_step = make_train_step(graphdef, rest, sft_loss, tx, grid_hw,
                               micro_batches=config.sft.micro_batches)
    batches = data_lib.sft_iterator(fit, batch_size=config.sft.batch_size,
                                    seq_len=config.sft.seq_len,
                                    max_images=config.rollout.max_images,
                                    patch_shape=patch_shape, pad_id=tok.pad_id, seed=config.seed)

    def validate(p) -> float:  # greedy accuracy on the val split (disjoint from test)
        summary, _ = evaluate(sampler, p, lambda n: eval_env("val", n), val_tasks,
                              batch_size=config.eval.batch_size, seed=config.seed)
        return summary["accuracy"]

    params, _, info = run_sft(
        params=params, opt_state=tx.init(params), train_step=sft_step, batches=batches,
        steps=config.sft.steps, to_device=to_device,
        log=lambda s, m: metrics_log("sft", s, m, echo=s % (config.log.every * 10) == 0),
        validate=validate, validate_every=config.sft.validate_every)
    if "best_step" in info:
        log.info("SFT: keeping step %d (val accuracy %.3f); curve %s", info["best_step"],
                 info["best_accuracy"], info["validation_curve"])
    return params, info


def run(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Runs the whole job and returns the summary dict (also written to summary.json)."""
    config_lib.validate(config)
    # Multi-host: join the job before anything touches a device (no-op for one process).
    distributed.maybe_initialize(config)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    run_dir = os.path.abspath(os.path.join(config.run_root, config.name))
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    metrics_log = MetricsLog(os.path.join(run_dir, "metrics.jsonl"))

    with contextlib.ExitStack() as stack:
        url = config.tools.url
        if not url:
            from tools_server.launch import LocalToolServer
            url = stack.enter_context(LocalToolServer(num_workers=config.tools.num_workers)).url
            log.info("started local tool server at %s (%d tool workers)", url,
                     config.tools.num_workers)
        client = SyncToolClient(url, timeout_s=config.tools.timeout_s)
        stack.callback(client.close)

        e = config.env
        mixture = TaskMixture.parse(e.mixture, difficulty=e.difficulty or None, seed=config.seed)
        env_kwargs = dict(
            family=mixture,
            budgets=Budgets(prompt_tokens=e.prompt_tokens, turn_tokens=e.turn_tokens,
                            observation_tokens=e.observation_tokens,
                            trajectory_tokens=e.trajectory_tokens, max_turns=e.max_turns),
            reward_config=RewardConfig(correct_weight=config.reward.correct_weight,
                                       format_penalty=config.reward.format_penalty,
                                       repetition_penalty=config.reward.repetition_penalty,
                                       expression_timeout_s=config.reward.expression_timeout_s),
            system_prompt_style=e.system_prompt_style,
            tools=tuple(t.strip() for t in e.tools.split(",") if t.strip()))

        # --- expert data (JSONL + images, read back as a grain source) and tokenizer -------
        # The token budgets bind the policy, counted with its tokenizer (below), which may
        # not exist yet (it can be trained on these trajectories): the expert runs with the
        # default budgets, and SFT drops rows longer than sft.seq_len.
        t = time.perf_counter()
        records, expert_stats = expert_records(
            mixture.tasks(config.sft.num_trajectories, split="train"), client,
            filter_correct=True, env_kwargs=dict(env_kwargs, budgets=Budgets(max_turns=e.max_turns)))
        expert_path = write_expert_dataset(records, os.path.join(run_dir, "expert", "train.jsonl"),
                                           expert_stats)
        del records
        expert = ExpertDataSource(expert_path)
        timings["expert_data_s"] = time.perf_counter() - t
        log.info("expert trajectories (%s): %s", expert_path, expert_stats)

        t = time.perf_counter()
        grid = config.model.image_size // 14
        tokens_per_image = (grid // 2) ** 2
        tok_path = config.tokenizer.path or config.model.checkpoint
        if tok_path:  # a released checkpoint's tokenizer (protocol tags added, template checked)
            tok = tok_lib.load_pretrained_tokenizer(tok_path, tokens_per_image)
            if tok.added_tags:
                log.info("tokenizer %s: added %s as tokens %s", tok_path, list(tok.added_tags),
                         [tok.special_ids[t] for t in tok.added_tags])
        else:
            # With sft.init_from, the restored policy's tokenizer (never retrained).
            tok_dir = os.path.join(config.sft.init_from or run_dir, "tokenizer")
            def texts():
                if config.sft.init_from:
                    raise FileNotFoundError(f"config.sft.init_from: no tokenizer in {tok_dir}")
                return corpus_texts(ExpertDataSource(expert_path, load_images=False))

            tok = tok_lib.load_or_train_tokenizer(
                tok_dir, texts,
                config.tokenizer.vocab_size, tokens_per_image)
        timings["tokenizer_s"] = time.perf_counter() - t

        # --- model, sharded over the mesh -----------------------------------------------
        mesh = sharding.make_mesh(tuple(config.mesh.shape))
        stack.enter_context(jax.set_mesh(mesh))
        rules = sharding.rules_from_config(config)  # params, batch and (via model_cfg) activations
        model, model_cfg = build_policy(config, tok, mesh, rules)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        del model
        log.info("mesh %s\n%s", dict(mesh.shape), param_table(params))
        batch_sharding = NamedSharding(mesh, sharding.logical_to_mesh_spec(("batch",), rules))

        def to_device(batch):
            return jax.device_put(batch, batch_sharding)

        sampler = Sampler(graphdef, rest, model_cfg, tok, SamplerConfig.from_config(config))
        env_kwargs["token_counter"] = TokenizerCounter(tok)

        def make_vec_env(n: int, split: str = "train") -> VectorVistaEnv:
            return VectorVistaEnv(client, n, split=split, **env_kwargs)

        patch_shape = (sampler.grid * sampler.grid, 3 * 2 * 14 * 14)
        grid_hw = (sampler.grid, sampler.grid)
        ckpt = ckpt_lib.manager(os.path.join(run_dir, "checkpoints"))

        eval_tasks = mixture.tasks(config.eval.num_tasks, split="test")
        val_tasks = mixture.tasks(config.sft.validate_tasks, split="val")
        eval_envs: dict[tuple[str, int], VectorVistaEnv] = {}

        def eval_env(split: str, n: int) -> VectorVistaEnv:
            if (split, n) not in eval_envs:
                eval_envs[split, n] = make_vec_env(n, split)
            return eval_envs[split, n]

        def run_eval(name: str, p) -> dict[str, float]:
            t = time.perf_counter()
            summary, episodes = evaluate(
                sampler, p,
                lambda n: eval_env("test", n), eval_tasks,
                batch_size=config.eval.batch_size, seed=config.seed)
            timings[f"eval_{name}_s"] = time.perf_counter() - t
            writer = TrajectoryWriter(os.path.join(run_dir, "trajectories", f"eval_{name}.jsonl"))
            for e in episodes[:config.log.trajectories]:
                writer.write({**e.trajectory, "reward": e.reward, "policy": name})
            writer.close()
            metrics_log("eval", 0, {"policy": name, **summary}, echo=False)
            tqdm.write(f"[eval {name}] " + " ".join(f"{k}={v:.3f}" for k, v in summary.items()))
            return summary

        results = {"base": run_eval("base", params)}

        # --- SFT ------------------------------------------------------------------------
        t = time.perf_counter()
        sft_info: dict[str, Any] = {}
        if config.sft.init_from:
            # The SFT phase of an earlier run, restored (its tokenizer was loaded above).
            src = ckpt_lib.manager(os.path.join(config.sft.init_from, "checkpoints"))
            params = ckpt_lib.restore_params(src, params, ckpt_lib.find_step(src, "sft"))
            log.info("SFT params restored from %s", config.sft.init_from)
        else:
            params, sft_info = _train_sft(config, tok, sampler, expert, graphdef, rest, params,
                                          grid_hw, patch_shape, to_device, eval_env, val_tasks,
                                          metrics_log)
        timings["sft_s"] = time.perf_counter() - t
        ckpt_lib.save(ckpt, config.sft.steps, params, extra={"phase": "sft"})
        results["sft"] = run_eval("sft", params)

        # --- GRPO -----------------------------------------------------------------------
        t = time.perf_counter()
        rl = config.rl
        tx = make_optimizer(rl.learning_rate, warmup_steps=rl.warmup_steps, total_steps=rl.steps,
                            max_grad_norm=rl.max_grad_norm, decay=False)
        opt_state = tx.init(params)
        rl_loss = learner.make_rl_loss(rl, config.rollout.temperature, config.rollout.top_k,
                                       config.rollout.top_p)
        rl_step_fn = make_train_step(graphdef, rest, rl_loss, tx, grid_hw,
                                     micro_batches=rl.micro_batches)
        ref_fn = ref_params = None
        if rl.kl_coef > 0:
            ref_fn = make_logprob_fn(graphdef, rest, grid_hw)
            ref_params = jax.tree.map(lambda x: x.copy(), params)
        rl_env = make_vec_env(rl.prompts_per_step * rl.group_size)
        traj_writer = TrajectoryWriter(os.path.join(run_dir, "trajectories", "rl.jsonl"))
        rng = jax.random.key(config.seed + 1)
        offset = config.sft.num_trajectories  # RL prompts are train tasks SFT never saw
        for step in tqdm(range(rl.steps), desc="grpo", dynamic_ncols=True):
            tasks = mixture.tasks(rl.prompts_per_step, start=offset + step * rl.prompts_per_step,
                                  split="train")
            params, opt_state, m, episodes = learner.rl_step(
                sampler=sampler, params=params,
                opt_state=opt_state, train_step=rl_step_fn, vec_env=rl_env, tasks=tasks,
                rl_cfg=rl, rollout_cfg=config.rollout, rng=jax.random.fold_in(rng, step),
                to_device=to_device, patch_shape=patch_shape, pad_id=tok.pad_id,
                ref_logprob_fn=ref_fn, ref_params=ref_params)
            metrics_log("rl", step, m, echo=step % config.log.every == 0 or step == rl.steps - 1)
            for e in episodes[:rl.group_size]:
                traj_writer.write({**e.trajectory, "reward": e.reward, "step": step})
        traj_writer.close()
        timings["grpo_s"] = time.perf_counter() - t
        ckpt_lib.save(ckpt, config.sft.steps + rl.steps, params, extra={"phase": "grpo"})
        results["grpo"] = run_eval("grpo", params)

    metrics_log.close()
    timings["wall_time_s"] = time.perf_counter() - t_start
    summary = {
        "base_accuracy": results["base"]["accuracy"],
        "sft_accuracy": results["sft"]["accuracy"],
        "grpo_accuracy": results["grpo"]["accuracy"],
        "tool_call_validity": results["grpo"]["tool_call_validity"],
        "mean_turns": results["grpo"]["mean_turns"],
        "wall_time_s": timings["wall_time_s"],
        "expert_pass_rate": expert_stats.get("pass_rate"),
        "sft_best_step": sft_info.get("best_step"),
        "sft_validation_curve": sft_info.get("validation_curve"),
        "timings": timings,
        "results": results,
    }
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    from vista_jax.report import write_report
    write_report(run_dir, config, summary)
    return summary
