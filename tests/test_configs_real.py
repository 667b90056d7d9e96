"""The real-scale configs (3B / 7B on 8-GPU hosts, 7B on a TPU v5p-64) validate, carry the
values their docstrings promise, and the 7B GPU train step fits an H200 by XLA's
ahead-of-time memory estimate (benchmarks/compile_memory.py, abstract shapes only)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from vista_jax import cli
from vista_jax import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 2 ** 30

# config file -> (preset, devices per host or slice = fsdp * tensor, decoder layers, D)
REAL = {
    "qwen2_5_vl_3b_gpu.py": ("qwen2_5_vl_3b", 8, 36, 2048),
    "qwen2_5_vl_7b_gpu.py": ("qwen2_5_vl_7b", 8, 28, 3584),
    "qwen2_5_vl_7b_tpu.py": ("qwen2_5_vl_7b", 32, 28, 3584),
}


def _load(name: str, *overrides: str):
    return cli.load_config(["vista-train", "--config", os.path.join(ROOT, "configs", name),
                            *overrides])


def _ckpt(path) -> str:
    """A directory validation accepts as an HF checkpoint (it only looks for config.json)."""
    (path / "config.json").write_text("{}")
    return str(path)


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_config_validates_and_carries_its_values(name, tmp_path):
    from vista_jax import pipeline

    preset, per_host, layers, width = REAL[name]
    cfg = _load(name)
    # The checkpoint path is a placeholder until the user sets it: validation names the key.
    with pytest.raises(config_lib.ConfigError, match=r"config\.model\.checkpoint="):
        config_lib.validate(cfg)
    cfg = _load(name, f"--config.model.checkpoint={_ckpt(tmp_path)}")
    config_lib.validate(cfg)

    assert cfg.model.preset == preset and cfg.name == name[:-3]
    assert (cfg.model.dtype, cfg.model.param_dtype, cfg.model.remat) == (
        "bfloat16", "float32", "full")
    assert cfg.rl.group_size == 8
    assert cfg.rollout.max_context >= 16384 and max(cfg.rollout.train_buckets) == cfg.rollout.max_context
    assert cfg.env.trajectory_tokens == cfg.rollout.max_context
    data, fsdp, tensor = cfg.mesh.shape
    assert data == -1 and fsdp * tensor == per_host  # data = -1: hosts / slices beyond one
    # Every micro-batch puts exactly one row on each device of one host / slice.
    rows = cfg.rl.prompts_per_step * cfg.rl.group_size // cfg.rl.updates_per_rollout
    assert rows // cfg.rl.micro_batches == fsdp
    assert cfg.sft.batch_size // cfg.sft.micro_batches == fsdp

    class Tok:  # a real Qwen2.5-VL tokenizer: 151665 tokens, <|image_pad|> = 151655
        vocab_size, image_pad_id = 151665, 151655

    mc = pipeline.model_config_from(cfg, Tok())
    assert (mc.num_layers, mc.embed_dim, mc.vision_num_layers) == (layers, width, 32)
    assert (mc.dtype, mc.param_dtype, mc.remat, mc.image_pad_id) == (
        "bfloat16", "float32", "full", 151655)
    assert mc.vocab_size >= Tok.vocab_size

    text = open(os.path.join(ROOT, "configs", name)).read()
    assert f"--config configs/{name}" in text  # the launch command is in the docstring
    assert f"benchmarks/compile_memory.py --config configs/{name}" in text
    if "gpu" in name:
        assert "JAX_COORDINATOR_ADDRESS" in text and "JAX_PROCESS_ID" in text
    else:
        assert cfg.distributed.auto_detect and "--worker=all" in text


def test_preset_validation_and_tokenizer_size():
    from vista_jax import pipeline

    cfg = _load("qwen2_5_vl_7b_gpu.py", "--config.model.checkpoint=")
    cfg.model.preset = "qwen2_5_vl_70b"
    with pytest.raises(config_lib.ConfigError, match=r"config\.model\.preset='qwen2_5_vl_70b'"):
        config_lib.validate(cfg)

    class BigTok:
        vocab_size, image_pad_id = 200000, 151655

    cfg.model.preset = "qwen2_5_vl_7b"
    with pytest.raises(ValueError, match="152064 embedding rows"):
        pipeline.model_config_from(cfg, BigTok())


@pytest.mark.parametrize("key,value,needle", [
    ("rollout.train_buckets", "(2048,4096)", "rollout.train_buckets"),
    ("rl.micro_batches", "3", "rl.micro_batches"),
    ("sft.micro_batches", "5", "sft.micro_batches"),
    ("distributed.num_processes", "2", "coordinator_address"),
])
def test_scale_fields_validation_names_the_key(key, value, needle, tmp_path):
    cfg = _load("qwen2_5_vl_3b_gpu.py", f"--config.model.checkpoint={_ckpt(tmp_path)}",
                f"--config.{key}={value}")
    with pytest.raises(config_lib.ConfigError, match=needle):
        config_lib.validate(cfg)


@pytest.mark.slow
def test_7b_gpu_train_step_fits_h200_by_aot_compile():
    """Compiles the real 7B RL update for 8 fake devices with 1 decoder layer and all 32
    vision layers at full length, and at 1, 2, 3 decoder layers at 256 tokens (whose temp
    bytes must lie on a line); models the other 27 remat'd layers from those (see
    benchmarks/compile_memory.py). Per device: 1 row of 16,384 tokens with 8 448-px images
    per micro-batch, 32 micro-batches (64 rows) per update, mesh (data 1, fsdp 2, tensor 4).
    Skips the real-depth no-remat compile (~65 s more; 519 GiB per device, README)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "compile_memory.py"),
         "--config", "configs/qwen2_5_vl_7b_gpu.py", "--devices", "8", "--hbm-gib", "141",
         "--skip-upper-bound", "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    print("\n".join(proc.stdout.strip().splitlines()[-9:-1]))

    assert r["mesh"] == {"data": 1, "fsdp": 2, "tensor": 4}
    assert (r["num_layers"], r["vision_layers"]) == (28, 32)
    assert (r["rows"], r["seq_len"], r["micro_batches"], r["images"]) == (64, 16384, 32, 8)
    for key in ("argument_bytes", "output_bytes", "temp_bytes", "peak_bytes"):
        assert math.isfinite(r["remat_" + key]) and r["remat_" + key] > 0, key
    # Arguments: fp32 params + two Adam moments (12 B/param), every param sharded 8 ways,
    # plus this device's 32 rows of the batch (each: 16K x 25 B of int/float/bool fields and
    # 8 images x 1024 patches x 1176 float32).
    assert 8.2e9 < r["params"] < 8.4e9
    batch = 32 * (16384 * 25 + 8 * 1024 * 1176 * 4)
    assert r["remat_argument_bytes"] == pytest.approx(12 * r["params"] / 8 + batch, rel=0.01)
    # The donated params and optimizer state come back in place.
    assert r["remat_alias_bytes"] == pytest.approx(r["remat_output_bytes"], rel=1e-3)
    # Each remat'd layer keeps its bf16 input: 1 row x 16K x 3584 x 2 B.
    assert r["remat_saved_input_per_layer"] == 16384 * 3584 * 2
    assert 0 < r["remat_non_activation_per_layer"] < 2 * GIB
    assert r["remat_peak_bytes"] < 141 * GIB and r["fits"]
    assert r["expected_peak_bytes"] == r["remat_peak_bytes"]
