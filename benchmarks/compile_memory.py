"""Per-device memory of a config's train step, from XLA's ahead-of-time compile: no device
memory is allocated, so it runs on a CPU laptop for an 8-GPU host or a 32-chip pod.

    python benchmarks/compile_memory.py --config configs/qwen2_5_vl_7b_gpu.py
    python benchmarks/compile_memory.py --config configs/qwen2_5_vl_7b_tpu.py --devices 32 --hbm-gib 95
    python benchmarks/compile_memory.py --config configs/qwen2_5_vl_3b_gpu.py --phase sft --json

What is compiled: the real jitted update (`rl.train_step.make_train_step` with the config's
loss, optimizer, micro-batches, remat, dtypes and sharding rules), lowered on
ShapeDtypeStructs that carry NamedShardings on a mesh of `--devices` fake CPU devices
(`--xla_force_host_platform_device_count`, set here before jax is imported). Params come from
`sharding.abstract_model` (nothing materialised); optimizer moments take the params'
shardings (as the eager `tx.init` gives them). The batch is one update's worth:
- rl:  prompts_per_step * group_size / updates_per_rollout rows of max(rollout.train_buckets)
       tokens (the longest bucket: the step has to survive its worst batch);
- sft: sft.batch_size rows of sft.seq_len tokens;
each row with rollout.max_images images of model.image_size px, split into the config's
micro-batches.

Two figures:
- no remat (compiled at the real depth, exact for XLA:CPU): XLA:CPU drops `jax.checkpoint` in
  an unrolled layer stack (it expands the optimization barriers and CSEs the recomputation
  away: a toy stack compiles to the same temp bytes with and without), so this is the memory
  with every activation kept, an upper bound. --skip-upper-bound skips it.
- remat (model.remat="full"; what GPU/TPU compilers keep): the step compiled with ONE decoder
  layer and every vision layer at full length (its temp holds the fixed part, the vision
  tower, the logits and one layer's activations) plus, for each of the other decoder layers,
  its saved input [rows, T, D] and its non-activation bytes (gradients, optimizer
  temporaries): the temp slope over 1, 2, 3 decoder layers compiled at 256 tokens, where
  activations are negligible; those three must lie on a line to within --tolerance. Measured
  on the 7B GPU config, the 1-to-2 slope is ~10% above the 1-to-28 one: the model errs high.
  The vision tower has no remat: its blocks count in full.

Caveat: XLA:CPU's buffer assignment for the partitioned program. XLA:GPU and XLA:TPU fuse and
schedule differently (and may use other attention kernels), so treat the figures as estimates
to within tens of percent, not guarantees. LLVM optimisation is turned off
(--xla_backend_optimization_level=0: the code never runs; buffer sizes are identical and
compiles ~40% faster). Prints a table and, with --json, one JSON line (bytes per device).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

GIB = 2 ** 30
FIELDS = ("argument_bytes", "output_bytes", "alias_bytes", "temp_bytes", "peak_bytes")


def _set_device_count(n: int) -> None:
    if "jax" in sys.modules:
        import jax
        if jax.device_count() < n:
            raise RuntimeError(f"jax was imported with {jax.device_count()} devices; need {n}")
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        # The compiled code never runs: skip LLVM optimisation (same buffers, faster compile).
        os.environ["XLA_FLAGS"] = (f"{flags} --xla_force_host_platform_device_count={n} "
                                   "--xla_backend_optimization_level=0").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def load_config(path: str, overrides: list[str]):
    from vista_jax import cli
    return cli.load_config(["compile_memory", "--config", path, *overrides])


class _TokenizerShape:
    """What model_config_from needs of a tokenizer, without loading one."""

    def __init__(self, config):
        from vista_jax.models import PRESETS
        preset = config.model.get("preset", "")
        if preset:
            base = PRESETS[preset]()
            self.vocab_size, self.image_pad_id = base.vocab_size, base.image_pad_id
        else:
            self.vocab_size = int(config.tokenizer.vocab_size)
            self.image_pad_id = self.vocab_size - 1


def step_shapes(config, phase: str) -> dict[str, Any]:
    """Rows, length, micro-batches and images of one update of `phase` (see module doc)."""
    r = config.rollout
    if phase == "rl":
        rows = config.rl.prompts_per_step * config.rl.group_size // config.rl.updates_per_rollout
        return dict(rows=rows, seq_len=max(r.train_buckets), micro_batches=config.rl.micro_batches,
                    images=r.max_images)
    if phase == "sft":
        return dict(rows=config.sft.batch_size, seq_len=config.sft.seq_len,
                    micro_batches=config.sft.micro_batches, images=r.max_images)
    raise ValueError(f"--phase {phase!r}: rl | sft")


def compile_step(config, *, phase: str = "rl", num_layers: int | None = None,
                 vision_layers: int | None = None, mesh=None) -> dict[str, Any]:
    """Lowers and compiles the update at the given depths; returns per-device bytes
    (FIELDS), the compile seconds and the shapes used."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec

    from vista_jax import pipeline, sharding
    from vista_jax.models import Qwen25VL
    from vista_jax.rl import learner
    from vista_jax.rl.train_step import make_optimizer, make_train_step, sft_loss

    model_cfg = pipeline.model_config_from(config, _TokenizerShape(config))
    full_depth = (model_cfg.num_layers, model_cfg.vision_num_layers)
    nl = num_layers or model_cfg.num_layers
    vl = vision_layers or model_cfg.vision_num_layers
    model_cfg = dataclasses.replace(
        model_cfg, num_layers=nl, vision_num_layers=vl,
        vision_fullatt_block_indexes=tuple(i for i in model_cfg.vision_fullatt_block_indexes
                                           if i < vl))
    mesh = mesh or sharding.make_mesh(tuple(config.mesh.shape))
    rules = sharding.rules_from_config(config)
    graphdef, state = sharding.abstract_model(lambda: Qwen25VL(model_cfg, rngs=nnx.Rngs(0)),
                                              mesh, rules)
    params, rest = state.filter(nnx.Param, ...)

    if phase == "rl":
        rl = config.rl
        tx = make_optimizer(rl.learning_rate, warmup_steps=rl.warmup_steps, total_steps=rl.steps,
                            max_grad_norm=rl.max_grad_norm, decay=False)
        loss = learner.make_rl_loss(rl, config.rollout.temperature, config.rollout.top_k,
                                    config.rollout.top_p)  # as pipeline.run builds it
    else:
        s = config.sft
        tx = make_optimizer(s.learning_rate, warmup_steps=s.warmup_steps, total_steps=s.steps,
                            weight_decay=s.weight_decay)
        loss = sft_loss
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_state = optax.tree_map_params(
        tx, lambda s, p: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=p.sharding),
        jax.eval_shape(tx.init, params), params,
        transform_non_params=lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated))

    shapes = step_shapes(config, phase)
    b, t, m = shapes["rows"], shapes["seq_len"], shapes["images"]
    grid = config.model.image_size // model_cfg.patch_size
    batch_sharding = NamedSharding(mesh, sharding.logical_to_mesh_spec(("batch",), rules))

    def sds(shape, dtype):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding)

    batch = {"tokens": sds((b, t), jnp.int32), "positions": sds((b, 3, t), jnp.int32),
             "valid": sds((b, t), jnp.bool_), "loss_mask": sds((b, t), jnp.float32),
             "patches": sds((b, m, grid * grid, model_cfg.patch_dim), jnp.float32)}
    if phase == "rl":
        batch.update(old_logprobs=sds((b, t), jnp.float32), advantages=sds((b,), jnp.float32))
        if config.rl.kl_coef > 0:
            batch["ref_logprobs"] = sds((b, t), jnp.float32)
    step = make_train_step(graphdef, rest, loss, tx, (grid, grid),
                           micro_batches=shapes["micro_batches"])
    t0 = time.perf_counter()
    with jax.set_mesh(mesh):
        compiled = step.lower(params, opt_state, batch).compile()
    seconds = time.perf_counter() - t0
    ma = compiled.memory_analysis()
    out = {"argument_bytes": ma.argument_size_in_bytes, "output_bytes": ma.output_size_in_bytes,
           "alias_bytes": ma.alias_size_in_bytes, "temp_bytes": ma.temp_size_in_bytes}
    # Donated params / optimizer state alias their outputs: count those buffers once.
    out["peak_bytes"] = (out["argument_bytes"] + out["output_bytes"] - out["alias_bytes"]
                         + out["temp_bytes"])
    n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
    expected_args = sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
                        for x in jax.tree.leaves((params, opt_state, batch)))
    return {**out, "expected_argument_bytes": expected_args, "embed_dim": model_cfg.embed_dim,
            "compile_s": seconds, "num_layers": nl, "vision_layers": vl,
            "full_depth": full_depth, "params": n_params, "mesh": dict(mesh.shape),
            "devices": mesh.size, **shapes}


def param_count(config) -> int:
    """Parameters of the config's model at its real depth (abstract: nothing allocated)."""
    import jax
    from flax import nnx

    from vista_jax import pipeline
    from vista_jax.models import Qwen25VL

    model_cfg = pipeline.model_config_from(config, _TokenizerShape(config))
    state = jax.eval_shape(lambda: nnx.state(Qwen25VL(model_cfg, rngs=nnx.Rngs(0)), nnx.Param))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(state))


def _fit_line(xs, ys):
    """Least-squares (intercept, slope) and the worst relative miss of the points."""
    import numpy as np
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    miss = max(abs(intercept + slope * x - y) / max(abs(y), 1.0) for x, y in zip(xs, ys))
    return float(intercept), float(slope), float(miss)


def _log_run(log, r: dict[str, Any]) -> None:
    log(f"compiled {r['num_layers']} decoder + {r['vision_layers']} vision layers "
        f"({r['seq_len']} tokens) in {r['compile_s']:.1f} s: "
        + ", ".join(f"{k[:-6]} {r[k] / GIB:.2f}" for k in FIELDS) + " GiB")
    if r["argument_bytes"] != r["expected_argument_bytes"]:
        raise RuntimeError(f"XLA's argument bytes {r['argument_bytes']} differ from the sum of "
                           f"the shardings' shard sizes {r['expected_argument_bytes']}")


def estimate(config, *, phase: str = "rl", upper_bound: bool = True, small_seq: int = 256,
             small_depths=(1, 2, 3), tolerance: float = 0.02, log=print) -> dict[str, Any]:
    """Per-device bytes of one update (see the module docstring).

    `upper_bound`: compile the real depth; XLA:CPU keeps every activation, so these are the
    no-remat figures (FIELDS). With model.remat="full", the `remat_*` figures: the step
    compiled with 1 decoder layer (and every vision layer) at full length, plus for each
    further decoder layer its saved input and its non-activation bytes (the temp slope over
    `small_depths` at `small_seq` tokens; RuntimeError unless those depths lie on a line to
    within `tolerance`). `expected_peak_bytes` is the remat figure when modelled, else the
    compiled one."""
    remat = config.model.remat
    result: dict[str, Any] = {"remat": remat, "params": param_count(config)}
    if upper_bound:
        full = compile_step(config, phase=phase)
        _log_run(log, full)
        result.update({k: v for k, v in full.items() if k != "expected_argument_bytes"})
    if remat != "full":
        if not upper_bound:
            raise ValueError(f"model.remat={remat!r} is not modelled: compile the full depth")
        result["expected_peak_bytes"] = result["peak_bytes"]
        return result

    one = compile_step(config, phase=phase, num_layers=1)
    _log_run(log, one)
    small = config.copy_and_resolve_references()
    if phase == "rl":
        small.rollout.train_buckets = (small_seq,)
    else:
        small.sft.seq_len = small_seq
    lo = []
    for d in small_depths:
        r = compile_step(small, phase=phase, num_layers=d, vision_layers=1)
        _log_run(log, r)
        lo.append(r)
    if not upper_bound:
        result.update({k: v for k, v in one.items() if k not in FIELDS
                       and k not in ("expected_argument_bytes", "params")})
        result["num_layers"], result["vision_layers"] = one["full_depth"]
    layers = one["full_depth"][0]
    per_layer = {}
    for key in ("argument_bytes", "output_bytes", "alias_bytes", "temp_bytes"):
        _, slope, miss = _fit_line(small_depths, [r[key] for r in lo])
        if miss > tolerance:
            raise RuntimeError(f"{key} is not linear in decoder layers at {small_seq} tokens: a "
                               f"depth misses the line by {miss:.1%} (> {tolerance:.0%})")
        per_layer[key] = slope
    rows = one["rows"] // one["micro_batches"]
    shards = one["mesh"].get("data", 1) * one["mesh"].get("fsdp", 1)
    itemsize = 2 if config.model.dtype == "bfloat16" else 4
    saved_input = math.ceil(rows / shards) * one["seq_len"] * one["embed_dim"] * itemsize
    remat = {k: one[k] + (layers - 1) * per_layer[k]
             for k in ("argument_bytes", "output_bytes", "alias_bytes")}
    remat["temp_bytes"] = one["temp_bytes"] + (layers - 1) * (per_layer["temp_bytes"] + saved_input)
    remat["peak_bytes"] = (remat["argument_bytes"] + remat["output_bytes"] - remat["alias_bytes"]
                           + remat["temp_bytes"])
    result.update({f"remat_{k}": int(v) for k, v in remat.items()})
    result.update(remat_saved_input_per_layer=saved_input,
                  remat_non_activation_per_layer=per_layer["temp_bytes"],
                  remat_one_layer_temp=one["temp_bytes"],
                  expected_peak_bytes=int(remat["peak_bytes"]))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="config file, e.g. configs/qwen2_5_vl_7b_gpu.py")
    p.add_argument("--devices", type=int, default=8, help="fake devices in the mesh (default 8)")
    p.add_argument("--phase", default="rl", choices=("rl", "sft"))
    p.add_argument("--hbm-gib", type=float, default=141.0,
                   help="device memory to compare against (H200 141, H100 80, v5p 95)")
    p.add_argument("--skip-upper-bound", action="store_true",
                   help="with remat=full, skip the real-depth (no-remat) compile: faster")
    p.add_argument("--tolerance", type=float, default=0.02)
    p.add_argument("--json", action="store_true", help="also print one JSON line")
    p.add_argument("overrides", nargs="*", help="--config.a.b=value overrides (after --)")
    args = p.parse_args(argv)
    _set_device_count(args.devices)
    config = load_config(args.config, args.overrides)
    from vista_jax import config as config_lib
    import jax
    if jax.device_count() != args.devices:
        raise SystemExit(f"have {jax.device_count()} devices, asked for {args.devices}")
    checked = config.copy_and_resolve_references()
    checked.model.checkpoint = ""  # the estimate needs shapes (the preset), not the checkpoint
    config_lib.validate(checked)
    result = estimate(config, phase=args.phase, upper_bound=not args.skip_upper_bound,
                      tolerance=args.tolerance)
    expected = result["expected_peak_bytes"]
    result.update(config=args.config, phase=args.phase, hbm_bytes=int(args.hbm_gib * GIB),
                  fits=expected <= args.hbm_gib * GIB)
    print(f"\n{args.config} [{args.phase}] on mesh {result['mesh']} ({args.devices} devices), "
          f"{result['params'] / 1e9:.3g} B params, {result['num_layers']} decoder + "
          f"{result['vision_layers']} vision layers, remat={result['remat']}")
    print(f"one update: {result['rows']} rows x {result['seq_len']} tokens, "
          f"{result['micro_batches']} micro-batches, {result['images']} images per row")
    if "peak_bytes" in result:
        print("  compiled at full depth (XLA:CPU keeps every activation: the no-remat figure)")
        for key in FIELDS:
            print(f"  {key[:-6]:>9}: {result[key] / GIB:8.2f} GiB per device")
    if "remat_peak_bytes" in result:
        print("  with remat=full (1 decoder layer compiled + per-layer parts, see the docstring)")
        for key in FIELDS:
            print(f"  {key[:-6]:>9}: {result['remat_' + key] / GIB:8.2f} GiB per device")
    print(f"  expected peak {expected / GIB:.2f} GiB: "
          f"{'fits' if result['fits'] else 'DOES NOT FIT'} in {args.hbm_gib:g} GiB")
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
