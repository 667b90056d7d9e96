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
import shutil
import time
import types
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
from vista_jax import metrics_log as metrics_lib
from vista_jax import sharding
from vista_jax import tokenizer as tok_lib
from vista_jax.env import (Budgets, RewardConfig, TaskMixture, TokenizerCounter, TrajectoryWriter,
                           VectorVistaEnv)
from vista_jax.env.expert import ExpertDataSource, expert_records, write_expert_dataset
from vista_jax.env.tool_client import SyncToolClient
from vista_jax.evaluate import evaluate
from vista_jax.models import PRESETS, ModelConfig, Qwen25VL, mrope_positions
from vista_jax.rl import learner
from vista_jax.rl.train_step import make_eval_fn, make_optimizer, make_train_step, sft_loss
from vista_jax.rollout import Sampler, SamplerConfig
from vista_jax import sft as sft_lib
from vista_jax.sft import run_sft

log = logging.getLogger("vista_jax")


def model_config_from(config: ml_collections.ConfigDict, tok: tok_lib.VistaTokenizer) -> ModelConfig:
    """The policy's ModelConfig: the sizes in config.model, or with `model.preset` a released
    checkpoint's shapes (its vocab rows, which may exceed the tokenizer's length; the size
    fields are then ignored). dtypes, remat and sharding rules come from config either way."""
    m = config.model
    common = dict(image_pad_id=tok.image_pad_id, dtype=m.dtype, param_dtype=m.param_dtype,
                  remat=m.remat, sharding_rules=sharding.rules_from_config(config))
    preset = m.get("preset", "")
    if preset:
        if preset not in PRESETS:
            raise ValueError(f"config.model.preset={preset!r}: one of {sorted(PRESETS)}")
        base = PRESETS[preset]()
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
        base = PRESETS[m.preset]()
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


def _tool_client(config, stack: contextlib.ExitStack) -> SyncToolClient:
    """A client of `tools.url`, or of a tool server started here (closed with `stack`)."""
    url = config.tools.url
    if not url:
        from tools_server.launch import LocalToolServer
        url = stack.enter_context(LocalToolServer(num_workers=config.tools.num_workers)).url
        log.info("started local tool server at %s (%d tool workers)", url,
                 config.tools.num_workers)
    client = SyncToolClient(url, timeout_s=config.tools.timeout_s)
    stack.callback(client.close)
    return client


def env_setup(config, *, for_eval: bool = False) -> tuple[TaskMixture, dict[str, Any]]:
    """The task mixture and the env arguments from config.env / config.reward (without the
    token counter, which needs the tokenizer). `for_eval`: the test tasks' mixture and the
    tools shown at evaluation (`eval.mixture`, `eval.tools`; "" = env's)."""
    e = config.env
    spec, tools = e.mixture, e.tools
    if for_eval:
        spec, tools = config.eval.mixture or spec, config.eval.tools or tools
    mixture = TaskMixture.parse(spec, difficulty=e.difficulty or None, seed=config.seed)
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
        tools=tuple(config_lib._names(tools)))
    return mixture, env_kwargs


def _tokenizer(config, run_dir: str, texts=None) -> tok_lib.VistaTokenizer:
    """The policy's tokenizer: a released checkpoint's (`tokenizer.path` or
    `model.checkpoint`; protocol tags added, chat template checked), else the BPE cached in
    the run dir (or `sft.init_from`'s), trained on `texts()` if there is none yet."""
    tokens_per_image = (config.model.image_size // 28) ** 2
    tok_path = config.tokenizer.path or config.model.checkpoint
    if tok_path:
        tok = tok_lib.load_pretrained_tokenizer(tok_path, tokens_per_image)
        if tok.added_tags:
            log.info("tokenizer %s: added %s as tokens %s", tok_path, list(tok.added_tags),
                     [tok.special_ids[t] for t in tok.added_tags])
        return tok
    tok_dir = os.path.join(config.sft.init_from or run_dir, "tokenizer")

    def corpus():
        if config.sft.init_from or texts is None:  # a trained policy's tokenizer is never retrained
            raise FileNotFoundError(f"no tokenizer in {tok_dir}")
        return texts()

    return tok_lib.load_or_train_tokenizer(tok_dir, corpus, config.tokenizer.vocab_size,
                                           tokens_per_image)


def _policy(config, stack: contextlib.ExitStack, tok) -> types.SimpleNamespace:
    """The mesh (entered on `stack`), the policy split as (graphdef, params, rest) with its
    params sharded, its sampler, and the batch placement."""
    mesh = sharding.make_mesh(tuple(config.mesh.shape))
    stack.enter_context(jax.set_mesh(mesh))
    rules = sharding.rules_from_config(config)  # params, batch and (via model_cfg) activations
    model, model_cfg = build_policy(config, tok, mesh, rules)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    del model
    log.info("mesh %s\n%s", dict(mesh.shape), param_table(params))
    batch_sharding = NamedSharding(mesh, sharding.logical_to_mesh_spec(("batch",), rules))
    sampler = Sampler(graphdef, rest, model_cfg, tok, SamplerConfig.from_config(config))
    return types.SimpleNamespace(
        mesh=mesh, rules=rules, graphdef=graphdef, params=params, rest=rest,
        model_cfg=model_cfg, sampler=sampler,
        to_device=lambda batch: jax.device_put(batch, batch_sharding),
        patch_shape=(sampler.grid * sampler.grid, 3 * 2 * 14 * 14),
        grid_hw=(sampler.grid, sampler.grid))


def _sft_rows(config, tok, sampler, expert) -> list[dict[str, Any]]:
    """Expert conversations -> training rows that fit sft.seq_len, loss-weighted."""
    rows = [conversation_row(tok, sampler, r["messages"]) for r in expert]
    fit = [r for r in rows if data_lib.fits(r, config.sft.seq_len, config.rollout.max_images)]
    log.info("SFT rows: %d (%d dropped as longer than sft.seq_len=%d)", len(fit),
             len(rows) - len(fit), config.sft.seq_len)
    weights = sft_lib.copy_loss_weights(fit, config.sft.copy_weight, config.sft.copy_balance)
    return [dict(r, loss_mask=w) for r, w in zip(fit, weights)]


# Config groups a resumed run may change: where it writes, logging, checkpointing, the
# tool server's address, the hosts. Everything else must match the checkpointed run.
RESUMABLE_CHANGES = ("name", "run_root", "checkpoint", "log", "tools", "distributed")


def config_differences(saved: dict[str, Any], config: ml_collections.ConfigDict) -> list[str]:
    """Dotted keys whose values differ between a checkpoint's config and `config`, outside
    `RESUMABLE_CHANGES`. A field added to the code since the checkpoint was written counts
    only if it is set to something other than its default (`configs/tiny_cpu.py`'s); a
    field since removed does not count."""
    old = config_lib.flatten(saved)
    now = config_lib.flatten(json.loads(config.to_json_best_effort()))
    defaults = config_lib.defaults()
    out = []
    for key in sorted(set(old) | set(now)):
        if key.split(".")[0] in RESUMABLE_CHANGES or key not in now:
            continue
        if key not in old and key in defaults and now[key] == defaults[key]:
            continue
        if old.get(key) != now[key]:
            out.append(key)
    return out


class _Run:
    """The run directory's durable state: checkpoints, the metrics and RL trajectory logs,
    results and timings. `start()` decides between a fresh start and a resume."""

    def __init__(self, config: ml_collections.ConfigDict, run_dir: str):
        self.config = config
        self.run_dir = run_dir
        self.sft_end = int(config.sft.steps)
        self.rl_end = self.sft_end + int(config.rl.steps)
        self.ckpt_dir = os.path.join(run_dir, "checkpoints")
        self.metrics_path = os.path.join(run_dir, "metrics.jsonl")
        self.rl_traj_path = os.path.join(run_dir, "trajectories", "rl.jsonl")
        self.resume: tuple[int, dict[str, Any]] | None = None
        self.results: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self.sft_info: dict[str, Any] = {}
        self.ckpt = None

    def start(self) -> None:
        """Finds the newest checkpoint (resume) or clears the last run's outputs (fresh),
        then opens the logs."""
        step = reader = None
        if os.path.isdir(self.ckpt_dir) and self.config.checkpoint.resume:
            reader = ckpt_lib.manager(self.ckpt_dir, read_only=True)
            step = reader.latest_step()
        if step is not None:
            meta = ckpt_lib.restore_meta(reader, step)
            diff = config_differences(meta.get("config", {}), self.config)
            if diff:
                raise config_lib.ConfigError(
                    f"{self.run_dir} holds a checkpoint (step {step}) of a run with other "
                    f"settings: config.{', config.'.join(diff)} differ. Resume with the same "
                    "config, or start over with --config.checkpoint.resume=False (or another "
                    "--config.name)")
            self.resume = (step, meta)
            self.results = dict(meta.get("results", {}))
            self.timings = dict(meta.get("timings", {}))
            self.sft_info = dict(meta.get("sft_info", {}))
            metrics_lib.truncate(self.metrics_path, meta["offsets"]["metrics"])
            if os.path.exists(self.rl_traj_path):
                metrics_lib.truncate(self.rl_traj_path, meta["offsets"]["rl_trajectories"])
            log.info("resuming %s from checkpoint step %d (%s, step %d of the phase)",
                     self.run_dir, step, meta["phase"], meta["phase_step"])
        else:
            for name in ("checkpoints", "trajectories", "plots", "tensorboard"):
                shutil.rmtree(os.path.join(self.run_dir, name), ignore_errors=True)
            for name in ("metrics.jsonl", "summary.json", "report.md"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.run_dir, name))
        c = self.config.checkpoint
        self.ckpt = ckpt_lib.manager(self.ckpt_dir, int(c.keep), async_save=bool(c.async_save),
                                     phase_ends=(self.sft_end, self.rl_end))
        tb = os.path.join(self.run_dir, "tensorboard") if self.config.log.tensorboard else None
        purge = None  # TensorBoard: drop the steps the interrupted run logged past its checkpoint
        if self.resume:
            meta = self.resume[1]
            purge = {"rl": 0, "eval_grpo": 0} if meta["phase"] == "sft" else {}
            if meta["phase"] == "sft":
                purge["eval_sft"] = 0
            purge[meta["phase"]] = meta["phase_step"]
        self.metrics_log = metrics_lib.MetricsLog(self.metrics_path, tensorboard_dir=tb,
                                                  purge_step=purge)
        # Wall time and phase times add up over the processes of a resumed run.
        self.t_start = time.perf_counter() - self.timings.get("wall_time_s", 0.0)

    def at(self, phase: str) -> tuple[int, bool] | None:
        """(steps done, phase ended) if the resume point lies in `phase`."""
        if self.resume and self.resume[1]["phase"] == phase:
            return self.resume[1]["phase_step"], self.resume[1]["end"]
        return None

    @property
    def sft_done(self) -> bool:
        """Whether the resume point lies at the SFT phase's end or beyond: SFT is not run
        again (its params are the SFT-end checkpoint's)."""
        return self.past("sft") or bool((self.at("sft") or (0, False))[1])

    def past(self, phase: str) -> bool:
        """Whether the resume point lies beyond `phase` (its results are in the checkpoint)."""
        order = ("sft", "rl")
        return bool(self.resume) and order.index(self.resume[1]["phase"]) > order.index(phase)

    def save(self, step: int, state, *, phase: str, phase_step: int, end: bool,
             data_state: dict | None = None, extra: dict | None = None,
             clocks: dict[str, float] | None = None) -> None:
        """Checkpoints `state` at global `step` with what a resume needs besides it."""
        rl_traj = (os.path.getsize(self.rl_traj_path) if os.path.exists(self.rl_traj_path)
                   else 0)
        timings = dict(self.timings)
        for k, t0 in (clocks or {}).items():
            timings[k] = time.perf_counter() - t0
        timings["wall_time_s"] = time.perf_counter() - self.t_start
        meta = {"phase": phase, "phase_step": phase_step, "end": end,
                "data_state": data_state, "results": self.results, "timings": timings,
                "sft_info": _jsonable(self.sft_info),
                "offsets": {"metrics": self.metrics_log.offset(), "rl_trajectories": rl_traj},
                "config": json.loads(self.config.to_json_best_effort()), **(extra or {})}
        ckpt_lib.save_state(self.ckpt, step, state, meta)

    def close(self) -> None:
        if self.ckpt is not None:
            self.ckpt.wait_until_finished()
            self.ckpt.close()
        self.metrics_log.close()


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist")
                                 else str(o)))


def _train_sft(config, job: _Run, tok, sampler, expert, graphdef, rest, params, grid_hw,
               patch_shape, to_device, eval_env, val_tasks, clock: float, val_expert=()):
    """The SFT phase: expert conversations -> weighted rows -> `run_sft` with validation,
    checkpointed every `checkpoint.sft_every` steps and resumed from the newest checkpoint.
    `val_expert`: verified expert records of the val split, whose teacher-forced loss is
    logged at each validation (`val_loss`, `val_token_accuracy`). Returns (params, info)
    with the best validated params."""
    fit = _sft_rows(config, tok, sampler, expert)
    tx = make_optimizer(config.sft.learning_rate, warmup_steps=config.sft.warmup_steps,
                        total_steps=config.sft.steps, weight_decay=config.sft.weight_decay)
    sft_step = make_train_step(graphdef, rest, sft_loss, tx, grid_hw,
                               micro_batches=config.sft.micro_batches)
    batches = data_lib.sft_iterator(fit, batch_size=config.sft.batch_size,
                                    seq_len=config.sft.seq_len,
                                    max_images=config.rollout.max_images,
                                    patch_shape=patch_shape, pad_id=tok.pad_id, seed=config.seed)
    opt_state = tx.init(params)
    start, best = 0, None
    if job.at("sft"):
        step, meta = job.resume
        target = {"params": params, "opt_state": opt_state}
        if meta["best"]:
            target["best_params"] = params
        state = ckpt_lib.restore_state(job.ckpt, step, target)
        params, opt_state = state["params"], state["opt_state"]
        start = meta["phase_step"]
        batches.set_state(meta["data_state"])
        if meta["best"]:
            best = dict(meta["best"], params=state["best_params"])
        log.info("SFT resumed at step %d of %d", start, config.sft.steps)

    # Teacher-forced loss on verified expert trajectories of the val split (plain token-mean
    # NLL on assistant tokens, no copy weighting), padded to whole batches of fixed shape.
    val_batches = []
    if val_expert:
        rows = [r for r in (conversation_row(tok, sampler, x["messages"]) for x in val_expert)
                if data_lib.fits(r, config.sft.seq_len, config.rollout.max_images)]
        b = config.sft.batch_size
        for i in range(0, len(rows), b):
            chunk = rows[i:i + b]
            chunk += [dict(chunk[-1], loss_mask=np.zeros_like(chunk[-1]["loss_mask"]))] * (b - len(chunk))
            val_batches.append(to_device(data_lib.pack_rows(
                chunk, config.sft.seq_len, config.rollout.max_images, patch_shape, tok.pad_id)))
    eval_loss = make_eval_fn(graphdef, rest, sft_loss, grid_hw)

    def validate(p) -> dict[str, float]:  # greedy accuracy on the val split (disjoint from test)
        summary, _ = evaluate(sampler, p, lambda n: eval_env("val", n), val_tasks,
                              batch_size=config.eval.batch_size, seed=config.seed)
        out = {"accuracy": summary["accuracy"]}
        if val_batches:
            m = eval_loss(p, val_batches)
            out.update(loss=m["loss"], token_accuracy=m["token_accuracy"])
        return out

    every = config.checkpoint.sft_every

    def on_step(done, p, o, best_so_far):
        if every and done % every == 0 and done < config.sft.steps:
            state = {"params": p, "opt_state": o}
            meta_best = None
            if best_so_far["params"] is not None:
                state["best_params"] = best_so_far["params"]
                meta_best = {k: best_so_far[k] for k in ("accuracy", "step", "curve")}
            job.save(done, state, phase="sft", phase_step=done, end=False,
                     data_state=batches.get_state(), extra={"best": meta_best},
                     clocks={"sft_s": clock})

    params, _, info = run_sft(
        params=params, opt_state=opt_state, train_step=sft_step, batches=batches,
        steps=config.sft.steps, to_device=to_device,
        log=lambda s, m: job.metrics_log("sft", s, m, echo=s % (config.log.every * 10) == 0),
        log_every=config.log.every, validate=validate, validate_every=config.sft.validate_every, start_step=start,
        best=best, on_step=on_step)
    if "best_step" in info:
        log.info("SFT: keeping step %d (val accuracy %.3f); curve %s", info["best_step"],
                 info["best_accuracy"], info["validation_curve"])
    return params, info


def run(config: ml_collections.ConfigDict, *, stop_after: str = "rl") -> dict[str, Any]:
    """Runs the whole job (`stop_after="sft"`: up to the SFT evaluation, as `vista-sft`)
    and returns the summary dict (also written to summary.json).

    A run directory that holds checkpoints is resumed from the newest one (unless
    `checkpoint.resume` is False): the logs are cut back to what that checkpoint had seen
    and every later step is recomputed exactly as the interrupted run would have."""
    if stop_after not in ("sft", "rl"):
        raise ValueError(f"stop_after={stop_after!r}: sft | rl")
    config_lib.validate(config)
    # Multi-host: join the job before anything touches a device (no-op for one process).
    distributed.maybe_initialize(config)
    run_dir = os.path.abspath(os.path.join(config.run_root, config.name))
    os.makedirs(run_dir, exist_ok=True)
    job = _Run(config, run_dir)
    job.start()
    timings = job.timings
    results = job.results
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))

    with contextlib.ExitStack() as stack:
        stack.callback(job.close)
        client = _tool_client(config, stack)
        mixture, env_kwargs = env_setup(config)

        # --- expert data (JSONL + images, read back as a grain source) and tokenizer -------
        # The token budgets bind the policy, counted with its tokenizer (below), which may
        # not exist yet (it can be trained on these trajectories): the expert runs with the
        # default budgets, and SFT drops rows longer than sft.seq_len. A resumed run reads
        # back the dataset its first process wrote (its stats file is written last).
        t = time.perf_counter()
        expert_env = dict(env_kwargs, budgets=Budgets(max_turns=config.env.max_turns))
        expert_path = config.sft.data or os.path.join(run_dir, "expert", "train.jsonl")
        stats_path = os.path.splitext(expert_path)[0] + ".stats.json"
        expert = expert_stats = None
        val_expert: list[dict[str, Any]] = []
        if (job.resume or config.sft.data) and os.path.exists(stats_path):
            with contextlib.suppress(ValueError):
                with open(stats_path, encoding="utf-8") as f:
                    expert_stats = json.load(f)
        if config.sft.init_from or job.sft_done:
            log.info("no SFT to run here (%s): no expert data",
                     f"sft.init_from={config.sft.init_from}" if config.sft.init_from
                     else "resumed after it")
        else:
            if config.sft.data:
                expert_stats = expert_stats or {}
            elif expert_stats is None:
                records, expert_stats = expert_records(
                    mixture.tasks(config.sft.num_trajectories, split="train"), client,
                    filter_correct=True, env_kwargs=expert_env,
                    direct=config.sft.expert == "direct")
                write_expert_dataset(records, expert_path, expert_stats)
                del records
                timings["expert_data_s"] = time.perf_counter() - t
            expert = ExpertDataSource(expert_path)
            log.info("expert trajectories (%s): %d, %s", expert_path, len(expert), expert_stats)
            if config.sft.validate_every > 0:  # the validation loss's held-out trajectories
                val_expert, _ = expert_records(
                    mixture.tasks(config.sft.validate_tasks, split="val"), client,
                    filter_correct=True, env_kwargs=expert_env,
                    direct=config.sft.expert == "direct")

        t = time.perf_counter()
        tok = _tokenizer(config, run_dir, lambda: corpus_texts(
            ExpertDataSource(expert_path, load_images=False)))
        timings.setdefault("tokenizer_s", time.perf_counter() - t)

        # --- model, sharded over the mesh -----------------------------------------------
        pol = _policy(config, stack, tok)
        sampler, params, to_device = pol.sampler, pol.params, pol.to_device
        graphdef, rest, model_cfg = pol.graphdef, pol.rest, pol.model_cfg
        patch_shape, grid_hw = pol.patch_shape, pol.grid_hw
        env_kwargs["token_counter"] = TokenizerCounter(tok)

        def make_vec_env(n: int, split: str = "train") -> VectorVistaEnv:
            return VectorVistaEnv(client, n, split=split, **env_kwargs)

        # Test tasks and the tools shown at evaluation may differ from training's (eval.*).
        eval_mixture, eval_kwargs = env_setup(config, for_eval=True)
        eval_kwargs["token_counter"] = env_kwargs["token_counter"]
        eval_tasks = eval_mixture.tasks(config.eval.num_tasks, split="test")
        val_tasks = mixture.tasks(config.sft.validate_tasks, split="val")
        eval_envs: dict[tuple[str, int], VectorVistaEnv] = {}

        def eval_env(split: str, n: int) -> VectorVistaEnv:
            if (split, n) not in eval_envs:
                kw = eval_kwargs if split == "test" else env_kwargs
                eval_envs[split, n] = VectorVistaEnv(client, n, split=split, **kw)
            return eval_envs[split, n]

        policies = config_lib._names(config.eval.policies)

        def run_eval(name: str, p) -> dict[str, float] | None:
            if name not in policies:  # eval.policies leaves it out
                return None
            t = time.perf_counter()
            summary, episodes = evaluate(
                sampler, p,
                lambda n: eval_env("test", n), eval_tasks,
                batch_size=config.eval.batch_size, seed=config.seed)
            timings[f"eval_{name}_s"] = time.perf_counter() - t
            path = os.path.join(run_dir, "trajectories", f"eval_{name}.jsonl")
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)  # an interrupted run's partial file
            writer = TrajectoryWriter(path)
            for e in episodes[:config.log.trajectories]:
                writer.write({**e.trajectory, "reward": e.reward, "policy": name})
            writer.close()
            job.metrics_log("eval", 0, {"policy": name, **summary}, echo=False)
            tqdm.write(f"[eval {name}] " + " ".join(f"{k}={v:.3f}" for k, v in summary.items()))
            return summary

        if "base" not in results and "base" in policies:
            results["base"] = run_eval("base", params)

        # --- SFT ------------------------------------------------------------------------
        clock = time.perf_counter() - timings.get("sft_s", 0.0)
        if job.sft_done:  # the SFT phase's final checkpoint
            params = ckpt_lib.restore_params(job.ckpt, params, job.sft_end)
        elif config.sft.steps == 0:
            log.info("sft.steps=0: no SFT phase (the SFT checkpoint holds the initial params)")
        elif config.sft.init_from:
            # The SFT phase of an earlier run, restored (its tokenizer was loaded above).
            src = ckpt_lib.manager(os.path.join(config.sft.init_from, "checkpoints"),
                                   read_only=True)
            params = ckpt_lib.restore_params(src, params, ckpt_lib.find_step(src, "sft"))
            log.info("SFT params restored from %s", config.sft.init_from)
        else:
            params, job.sft_info = _train_sft(config, job, tok, sampler, expert, graphdef, rest,
                                              params, grid_hw, patch_shape, to_device, eval_env,
                                              val_tasks, clock, val_expert)
        if not job.sft_done:
            timings["sft_s"] = time.perf_counter() - clock
            job.save(job.sft_end, {"params": params}, phase="sft", phase_step=config.sft.steps,
                     end=True)
        if "sft" not in results and "sft" in policies:
            results["sft"] = run_eval("sft", params)

        # --- RL -------------------------------------------------------------------------
        if stop_after == "rl":
            _train_rl(config, job, mixture, sampler, make_vec_env, graphdef, rest, model_cfg,
                      params, grid_hw, patch_shape, to_device, tok, run_eval)

    timings["wall_time_s"] = time.perf_counter() - job.t_start
    final = next((p for p in ("grpo", "sft", "base") if p in results), None)
    summary = {
        **{f"{p}_accuracy": results[p]["accuracy"] if p in results else None
           for p in ("base", "sft", "grpo")},
        "rl_algorithm": config.rl.algorithm if stop_after == "rl" else None,
        "tool_call_validity": results[final]["tool_call_validity"] if final else None,
        "mean_turns": results[final]["mean_turns"] if final else None,
        "wall_time_s": timings["wall_time_s"],
        "expert_pass_rate": (expert_stats or {}).get("pass_rate"),
        "sft_best_step": job.sft_info.get("best_step"),
        "sft_validation_curve": job.sft_info.get("validation_curve"),
        "resumed_from_step": job.resume[0] if job.resume else None,
        "timings": timings,
        "results": results,
    }
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    from vista_jax.report import write_report
    write_report(run_dir, config, summary)
    return summary


def _train_rl(config, job: _Run, mixture, sampler, make_vec_env, graphdef, rest, model_cfg,
              params, grid_hw, patch_shape, to_device, tok, run_eval) -> None:
    """The RL phase (`rl.algorithm`: GRPO, Dr.GRPO, DAPO or PPO through one learner
    interface), checkpointed every `checkpoint.rl_every` steps, then the final evaluation
    (stored under results["grpo"], the policy after RL whichever the algorithm)."""
    rl = config.rl
    timings, results = job.timings, job.results
    clock = time.perf_counter() - timings.get("grpo_s", 0.0)
    rl_learner = learner.make_learner(config, graphdef, rest, model_cfg, grid_hw)
    ref_params = jax.tree.map(lambda x: x.copy(), params) if rl.kl_coef > 0 else None
    rng = jax.random.key(config.seed + 1)
    state = rl_learner.init_state(params)
    # RL prompts are train tasks SFT never saw.
    prompts = data_lib.task_iterator(mixture, start=config.sft.num_trajectories, split="train")
    start = 0
    at = job.at("rl")
    if at:
        step, meta = job.resume
        restored = ckpt_lib.restore_state(
            job.ckpt, step, {"learner": state, "rng": jax.random.key_data(rng)})
        state, rng = restored["learner"], jax.random.wrap_key_data(restored["rng"])
        start = meta["phase_step"]
        prompts.set_state(meta["data_state"])
        log.info("RL resumed at step %d of %d", start, rl.steps)
    if not (at and at[1]):
        rl_env = make_vec_env(rl.prompts_per_step * rl.group_size)
        traj_writer = TrajectoryWriter(job.rl_traj_path)
        more_tasks = lambda n: [next(prompts) for _ in range(n)]  # noqa: E731
        for step in tqdm(range(start, rl.steps), desc=rl.algorithm, dynamic_ncols=True,
                         initial=start, total=rl.steps):
            tasks = more_tasks(rl.prompts_per_step)
            state, m, episodes = rl_learner.step(
                state, sampler=sampler, vec_env=rl_env, tasks=tasks,
                rng=jax.random.fold_in(rng, step), to_device=to_device,
                patch_shape=patch_shape, pad_id=tok.pad_id, more_tasks=more_tasks,
                ref_params=ref_params)
            job.metrics_log("rl", step, m,
                            echo=step % config.log.every == 0 or step == rl.steps - 1)
            for e in episodes[:rl.group_size]:
                traj_writer.write({**e.trajectory, "reward": e.reward, "step": step})
            done = step + 1
            every = config.checkpoint.rl_every
            if done == rl.steps or (every and done % every == 0):
                job.save(job.sft_end + done, {"learner": state, "rng": jax.random.key_data(rng)},
                         phase="rl", phase_step=done, end=done == rl.steps,
                         data_state=prompts.get_state(), clocks={"grpo_s": clock})
        traj_writer.close()
        timings["grpo_s"] = time.perf_counter() - clock
    if rl.steps == 0:
        log.info("rl.steps=0: no RL phase")
    if "grpo" not in results and (r := run_eval("grpo", state["params"])) is not None:
        results["grpo"] = r


def load_run_config(run_dir: str) -> ml_collections.ConfigDict:
    """The config a run was started with (its config.json), as an unlocked ConfigDict."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir}: no config.json (not a vista-train run directory)")
    with open(path, encoding="utf-8") as f:
        return ml_collections.ConfigDict(json.load(f))


def restore_policy(config, run_dir: str, stack: contextlib.ExitStack, step: int | None,
                    phase: str | None) -> tuple[types.SimpleNamespace, tok_lib.VistaTokenizer, int]:
    """The policy of a run's checkpoint (`step`, or the end of `phase`, or the newest) on
    this process's mesh, whatever mesh it was saved from. Returns (policy, tokenizer, step)."""
    mngr = ckpt_lib.manager(os.path.join(run_dir, "checkpoints"), read_only=True)
    if step is None:
        step = ckpt_lib.find_step(mngr, phase) if phase else mngr.latest_step()
    if step is None:
        raise FileNotFoundError(f"{run_dir}/checkpoints holds no checkpoint")
    if step not in mngr.all_steps():
        raise FileNotFoundError(f"{run_dir}/checkpoints has no step {step} "
                                f"(steps {sorted(mngr.all_steps())})")
    tok = _tokenizer(config, run_dir)
    pol = _policy(config, stack, tok)
    meta = ckpt_lib.restore_meta(mngr, step)
    key = "learner" if meta.get("phase") == "rl" else None
    target = {key: {"params": pol.params}} if key else {"params": pol.params}
    state = ckpt_lib.restore_state(mngr, step, target)
    pol.params = state[key]["params"] if key else state["params"]
    log.info("restored step %d (%s%s) from %s", step, meta.get("phase"),
             ", end" if meta.get("end") else "", run_dir)
    return pol, tok, step


def evaluate_checkpoint(config: ml_collections.ConfigDict, run_dir: str, *,
                        step: int | None = None, phase: str | None = None,
                        split: str = "test", out: str | None = None) -> dict[str, Any]:
    """Greedy evaluation of a run's checkpointed policy on `config.eval.num_tasks` tasks of
    `split` (of `eval.mixture`, tools `eval.tools`) with the tool server of `config.tools` (or a local one). Writes the episodes to
    `out` (a JSONL trajectory log) if given. Returns the `evaluate` summary plus `step`."""
    with contextlib.ExitStack() as stack:
        client = _tool_client(config, stack)
        mixture, env_kwargs = env_setup(config, for_eval=True)
        pol, tok, step = restore_policy(config, run_dir, stack, step, phase)
        env_kwargs["token_counter"] = TokenizerCounter(tok)
        tasks = mixture.tasks(config.eval.num_tasks, split=split)
        summary, episodes = evaluate(
            pol.sampler, pol.params,
            lambda n: VectorVistaEnv(client, n, split=split, **env_kwargs), tasks,
            batch_size=config.eval.batch_size, seed=config.seed)
        if out:
            with contextlib.suppress(FileNotFoundError):
                os.remove(out)  # TrajectoryWriter appends: a rerun replaces the episodes
            writer = TrajectoryWriter(out)
            for e in episodes:
                writer.write({**e.trajectory, "reward": e.reward, "policy": f"step{step}"})
            writer.close()
    return {"step": step, **summary}


def export_checkpoint(config: ml_collections.ConfigDict, run_dir: str, out: str, *,
                      step: int | None = None, phase: str | None = None,
                      dtype: str | None = None) -> str:
    """Writes a run's checkpointed policy as an HF Qwen2.5-VL checkpoint directory
    (safetensors + config.json that `transformers` loads, and the tokenizer files)."""
    from vista_jax.models.hf_checkpoint import save_hf_checkpoint

    with contextlib.ExitStack() as stack:
        pol, tok, step = restore_policy(config, run_dir, stack, step, phase)
        tok_dir = config.tokenizer.path or config.model.checkpoint or os.path.join(
            run_dir if not config.sft.init_from else config.sft.init_from, "tokenizer")
        token_ids = None  # a released checkpoint's tokenizer: Qwen2.5-VL's own ids
        if not (config.tokenizer.path or config.model.checkpoint):
            ids = tok.special_ids
            # Our BPE has no video token. HF's rope index only looks at the token after
            # each <|vision_start|>, which is always <|image_pad|> here, so any other id
            # (<|im_start|>) never matches as a video.
            token_ids = dict(bos_token_id=tok.eos_id, eos_token_id=ids[tok_lib.IM_END],
                             pad_token_id=tok.pad_id,
                             vision_start_token_id=ids[tok_lib.VISION_START],
                             vision_end_token_id=ids[tok_lib.VISION_END],
                             video_token_id=ids[tok_lib.IM_START],
                             max_position_embeddings=int(config.rollout.max_context))
        path = save_hf_checkpoint(nnx.merge(pol.graphdef, pol.params, pol.rest), pol.model_cfg,
                                  out, token_ids=token_ids, dtype=dtype, tokenizer_dir=tok_dir)
    log.info("exported step %d of %s to %s", step, run_dir, path)
    return os.fspath(path)
