"""Config validation: one place, at start, naming the bad key."""

from __future__ import annotations

import functools
import importlib.util
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import ml_collections


class ConfigError(ValueError):
    pass


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if part not in node:
            raise ConfigError(f"config is missing {key!r}")
        node = node[part]
    return node


def _names(spec: str) -> list[str]:
    """A comma-separated list (tools, policies) as names, blanks dropped."""
    return [n.strip() for n in spec.split(",") if n.strip()]


def _check_mixture(config: ml_collections.ConfigDict, key: str = "env.mixture") -> None:
    from vista_jax.env.mixture import TaskMixture
    spec = _get(config, key)
    if key != "env.mixture" and not spec:  # "" = env.mixture's
        return
    try:
        TaskMixture.parse(spec)
    except (ValueError, KeyError) as e:
        msg = e.args[0] if e.args else str(e)
        raise ConfigError(f"config.{key}={spec!r}: {msg}") from None


def _check_tools(config: ml_collections.ConfigDict) -> None:
    """env.tools / eval.tools: "none" stands alone (whether the tool server serves the
    names is checked when the env is made, against the server's own list)."""
    for key in ("env.tools", "eval.tools"):
        names = _names(_get(config, key))
        if "none" in names and names != ["none"]:
            raise ConfigError(f"config.{key}={_get(config, key)!r}: 'none' stands alone "
                              "(no tools) or is not given")


def _check_rules(config: ml_collections.ConfigDict) -> None:
    from vista_jax import sharding
    _get(config, "mesh.rules")
    try:
        sharding.rules_from_config(config)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first key whose value cannot work."""

    def check(key: str, ok, why: str):
        if not ok(_get(config, key)):
            raise ConfigError(f"config.{key}={_get(config, key)!r}: {why}")

    positive = lambda v: isinstance(v, (int, float)) and v > 0  # noqa: E731
    for key in ("env.max_turns", "tokenizer.vocab_size", "model.embed_dim", "model.num_layers",
                "model.num_heads", "model.num_kv_heads", "model.head_dim", "model.mlp_dim",
                "rollout.max_context", "env.turn_tokens", "env.prompt_tokens",
                "env.observation_tokens", "env.trajectory_tokens", "rl.group_size",
                "rl.prompts_per_step", "sft.batch_size", "sft.seq_len", "eval.batch_size",
                "rl.learning_rate", "sft.learning_rate", "rollout.max_images",
                "reward.expression_timeout_s"):
        check(key, positive, "must be positive")
    for key in ("sft.steps", "rl.steps", "eval.num_tasks", "rl.kl_coef", "reward.format_penalty",
                "reward.repetition_penalty"):
        check(key, lambda v: v >= 0, "must be ≥ 0")
    check("model.num_heads", lambda v: v % config.model.num_kv_heads == 0,
          "must be a multiple of model.num_kv_heads")
    check("model.mrope_section", lambda v: len(v) == 3 and sum(v) == config.model.head_dim // 2,
          f"needs 3 sections summing to head_dim // 2 = {config.model.head_dim // 2}")
    check("model.image_size", lambda v: v % 28 == 0, "must be a multiple of 28 (2x2 merge of 14 px)")
    check("rl.group_size", lambda v: v >= 2, "GRPO needs at least 2 samples per group")
    check("rl.algorithm", lambda v: v in ("grpo", "dr_grpo", "dapo", "ppo"),
          "one of grpo | dr_grpo | dapo | ppo")
    check("rl.dynamic_sampling_max_rounds", lambda v: isinstance(v, int) and v >= 1,
          "must be an integer ≥ 1")
    check("rl.critic", lambda v: v in ("shared", "separate"), "one of shared | separate")
    for key in ("rl.value_coef", "rl.value_clip"):
        check(key, lambda v: v >= 0, "must be ≥ 0")
    check("rl.critic_learning_rate", positive, "must be positive")
    for key in ("rl.gae_gamma", "rl.gae_lambda"):
        check(key, lambda v: 0 <= v <= 1, "must be in [0, 1]")
    integer0 = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0  # noqa: E731
    for key in ("checkpoint.sft_every", "checkpoint.rl_every"):
        check(key, integer0, "must be an integer ≥ 0 (0 = only at the end of the phase)")
    check("checkpoint.keep", lambda v: isinstance(v, int) and v >= 1, "must be an integer ≥ 1")
    check("rl.clip_eps_low", lambda v: 0 <= v < 1, "must be in [0, 1)")
    check("rl.clip_eps_high", lambda v: v >= 0, "must be ≥ 0")
    check("rl.dual_clip", lambda v: v == 0 or v > 1, "must be 0 (off) or > 1")
    check("rl.overlong_buffer", lambda v: 0 <= v <= config.rl.overlong_max_tokens,
          "must be in [0, rl.overlong_max_tokens] (0 = off)")
    check("rl.overlong_penalty", lambda v: v >= 0, "must be ≥ 0")
    check("rl.kl_estimator", lambda v: v in ("k1", "k3"), "one of k1 | k3")
    check("rl.loss_agg", lambda v: v in ("token-mean", "seq-mean-token-mean",
                                         "seq-mean-token-sum-norm"), "unknown aggregation")
    check("env.system_prompt_style", lambda v: v in ("minimal", "compact", "full"),
          "minimal | compact | full")
    check("mesh.shape", lambda v: len(v) == 3 and list(v).count(-1) <= 1,
          "3 axis sizes (data, fsdp, tensor), at most one -1")
    _check_rules(config)
    for key in ("model.dtype", "model.param_dtype"):
        check(key, lambda v: v in ("float32", "bfloat16"), "float32 | bfloat16")
    check("model.remat", lambda v: v in ("none", "full", "dots"), "none | full | dots")
    check("rollout.prompt_buckets", lambda v: max(v) <= config.rollout.max_context,
          "buckets cannot exceed rollout.max_context")
    check("env.prompt_tokens", lambda v: v <= max(config.rollout.prompt_buckets),
          "cannot exceed the largest rollout.prompt_buckets")
    check("env.observation_tokens", lambda v: v < max(config.rollout.obs_buckets),
          "must be below the largest rollout.obs_buckets (the chunk adds headers)")
    check("env.trajectory_tokens", lambda v: v <= config.rollout.max_context,
          "cannot exceed rollout.max_context (the KV cache)")
    check("env.difficulty", lambda v: v in (0, 1, 2, 3), "0 (drawn per task) or a level 1..3")
    _check_mixture(config)
    check("sft.expert", lambda v: v in ("tools", "direct"), "tools | direct")
    check("eval.policies", lambda v: set(_names(v)) <= {"base", "sft", "grpo"},
          "comma-separated subset of base,sft,grpo")
    _check_mixture(config, "eval.mixture")
    _check_tools(config)
    check("sft.copy_weight", lambda v: v >= 1, "must be ≥ 1 (1 = plain token-mean NLL)")
    check("sft.init_from", lambda v: not v or os.path.isdir(os.path.join(v, "checkpoints")),
          "must be empty or a run directory holding checkpoints/")
    check("sft.data", lambda v: not v or os.path.isfile(v),
          "must be empty (generate expert trajectories) or an existing JSONL file")
    check("sft.copy_balance", lambda v: v >= 0, "must be ≥ 0 (0 = one weight for all copied tokens)")
    check("rollout.temperature", positive, "must be positive (evaluation is greedy anyway)")
    check("rollout.top_k", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
          "must be an integer ≥ 0 (0 = off)")
    check("rollout.top_p", lambda v: 0 < v <= 1, "must be in (0, 1] (1.0 = off)")
    check("tools.num_workers", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
          "must be an integer ≥ 0 (0 = model-backed tools run in the tool server's process)")
    check("tools.num_workers", lambda v: v == 0 or not config.tools.url,
          "must be 0 when tools.url names an external server (it has its own workers)")
    _check_scale(config, check)


def _check_scale(config: ml_collections.ConfigDict, check) -> None:
    """Checks of the fields real-scale configs set: presets, checkpoint paths, train
    buckets, gradient accumulation and the multi-host fields."""
    from vista_jax.models import PRESETS
    names = ("",) + tuple(PRESETS)  # "" = config.model's own sizes
    check("model.preset", lambda v: v in names, f"one of {names}")
    check("tokenizer.path", lambda v: not v or os.path.isdir(v),
          "must be empty (the checkpoint's, or train a BPE) or an existing local HF tokenizer "
          "directory")
    check("model.checkpoint", lambda v: not v or os.path.isfile(os.path.join(v, "config.json")),
          "must be empty (random init) or a local HF Qwen2.5-VL checkpoint directory "
          "(config.json, safetensors, tokenizer files)")
    check("rollout.train_buckets", lambda v: max(v) >= config.env.trajectory_tokens,
          "the largest must hold env.trajectory_tokens (a full trajectory is one training row)")
    integer = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1  # noqa: E731
    check("sft.micro_batches", lambda v: integer(v) and config.sft.batch_size % v == 0,
          "must be an integer ≥ 1 dividing sft.batch_size")
    rows = config.rl.prompts_per_step * config.rl.group_size
    check("rl.micro_batches", lambda v: integer(v) and rows % (config.rl.updates_per_rollout * v) == 0,
          f"must be an integer ≥ 1 with updates_per_rollout * micro_batches dividing the {rows} "
          "rollouts of a step")
    from vista_jax import distributed
    try:
        distributed.spec_from(config, environ={})  # the environment is checked at start
    except ValueError as e:
        raise ConfigError(str(e)) from None


def load(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None
         ) -> ml_collections.ConfigDict:
    """`get_config()` of a config file with dotted-key overrides (`{"rl.group_size": 4}`),
    as `vista-train --config FILE --config.rl.group_size=4` builds it, then validated: an
    unknown key or a bad value raises ConfigError naming it. For notebooks and scripts."""
    spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
    if spec is None or not os.path.isfile(path):
        raise ConfigError(f"{path}: no such config file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.lock()  # overrides may change fields, never add them
    for key, value in (overrides or {}).items():
        try:
            config.update_from_flattened_dict({key: value})
        except (KeyError, AttributeError, TypeError) as e:
            msg = e.args[0] if e.args else e
            raise ConfigError(f"config.{key}={value!r}: {msg}") from None
    validate(config)
    return config


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict (a config's JSON) as {"a.b.c": value}."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def default_path() -> str:
    """configs/tiny_cpu.py of the source checkout: the embedded default."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(here, "configs", "tiny_cpu.py")


def defaults() -> dict[str, Any]:
    """The embedded default's fields as {dotted key: JSON value} (tuples as lists); a copy
    of the file's values read once per process (plans call this per variant x seed)."""
    return dict(_defaults())


@functools.lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    import json

    spec = importlib.util.spec_from_file_location("_tiny_cpu_defaults", default_path())
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return flatten(json.loads(module.get_config().to_json_best_effort()))
