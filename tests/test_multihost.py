"""Multi-host: two local processes (4 fake CPU devices each, gloo collectives) train the same
tiny policy on one global mesh and match a single 8-device process step for step.

Each process joins through `vista_jax.distributed.maybe_initialize` (env variables over the
config), reads only its half of every SFT batch (`data.sft_iterator(shard=...)`) and hands
it to `data.global_batch` (jax.make_array_from_process_local_data). The mesh (1, 8, 1)
shards every param (FSDP) and the batch across both processes, so each step all-gathers
params and reduce-scatters gradients between them. (A second mesh, (2, 4, 1) with the data
axis across the processes, was dropped for suite time: 100 s for both; its cross-process
collectives are a subset of these, and test_sharding checks (2, 2, 2) on one process.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from vista_jax import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = textwrap.dedent("""
    import json, os, sys
    import jax
    jax.config.update("jax_num_cpu_devices", int(os.environ["NUM_LOCAL_DEVICES"]))
    sys.path.insert(0, os.environ["CONFIG_DIR"])
    import tiny_cpu
    from vista_jax import distributed
    spec = distributed.maybe_initialize(tiny_cpu.get_config())  # env overrides the config
    import jax.numpy as jnp, numpy as np
    from flax import nnx
    from vista_jax import data, sharding
    from vista_jax.models import ModelConfig, Qwen25VL, mrope_positions
    from vista_jax.rl.train_step import make_optimizer, make_train_step, sft_loss

    assert jax.device_count() == 8 and jax.process_count() == spec.num_processes
    PAD, IMG, GRID = 0, 63, 4  # 56 px images: 4x4 patches, 2x2 merged tokens
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):  # same rows on every process; each packs only its share
        n = int(rng.integers(12, 30))
        toks = np.concatenate([[IMG] * 4, rng.integers(1, 60, n - 4)]).astype(np.int32)
        pos, _ = mrope_positions(toks, [(1, 2, 2)], 0, image_pad_id=IMG)
        mask = np.zeros(n, np.float32); mask[n // 2:] = 1.0
        rows.append({"tokens": toks, "positions": pos, "loss_mask": mask,
                     "images": [rng.normal(size=(GRID * GRID, 1176)).astype(np.float32)]})
    cfg = ModelConfig.tiny(64, IMG, num_layers=1, vision_num_layers=1)
    mesh = sharding.make_mesh((1, 8, 1))  # fsdp across both processes
    with jax.set_mesh(mesh):
        model = sharding.create_sharded_model(lambda: Qwen25VL(cfg, rngs=nnx.Rngs(0)), mesh)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        tx = make_optimizer(3e-3, warmup_steps=1, total_steps=10)
        opt_state = tx.init(params)  # eager: moments keep the params' shardings
        step = make_train_step(graphdef, rest, sft_loss, tx, (GRID, GRID))
        batches = data.sft_iterator(rows, batch_size=8, seq_len=32, max_images=1,
                                    patch_shape=(GRID * GRID, 1176), pad_id=PAD, seed=1)
        bs = sharding.batch_sharding(mesh, 1)
        losses = []
        for _ in range(3):
            local = next(batches)
            assert local["tokens"].shape[0] == 8 // jax.process_count()
            batch = data.global_batch(local, bs)
            assert batch["tokens"].shape == (8, 32)
            params, opt_state, m = step(params, opt_state, batch)
            losses.append(float(m["loss"]))
        sq = jax.jit(lambda p: sum(jnp.sum(x.astype(jnp.float32) ** 2)
                                   for x in jax.tree.leaves(p)))(params)
        emb = params["embed_tokens"].get_value()
    out = {"process": jax.process_index(), "losses": losses, "param_sq": float(sq),
           "embed_local_shards": len(emb.addressable_shards),
           "embed_fully_addressable": emb.is_fully_addressable}
    print("RESULT " + json.dumps(out), flush=True)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(env_extra: dict[str, str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(CONFIG_DIR=os.path.join(ROOT, "configs"), JAX_PLATFORMS="cpu", **env_extra)
    return subprocess.Popen([sys.executable, "-c", WORKER], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen, timeout: float) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"worker failed (rc {proc.returncode}):\n{err[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow
def test_two_processes_match_one_process():
    port = _free_port()
    workers = [_launch({"NUM_LOCAL_DEVICES": "4", "JAX_NUM_PROCESSES": "2",
                        "JAX_PROCESS_ID": str(i),
                        "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}"}) for i in range(2)]
    try:
        multi = [_result(w, 240) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    single = _result(_launch({"NUM_LOCAL_DEVICES": "8"}), 240)

    assert [m["process"] for m in multi] == [0, 1]
    for got in multi:
        assert got["losses"] == pytest.approx(single["losses"], abs=1e-5, rel=1e-5)
        assert got["param_sq"] == pytest.approx(single["param_sq"], rel=1e-5)
        # Each process holds only its own devices' shards of the embedding.
        assert not got["embed_fully_addressable"] and got["embed_local_shards"] == 4
    assert single["embed_fully_addressable"] and single["embed_local_shards"] == 8
    # The loss moves: the runs compare training, not three copies of one number.
    assert abs(single["losses"][0] - single["losses"][-1]) > 1e-3, single["losses"]


def test_spec_from_config_and_environment(monkeypatch):
    import ml_collections

    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                 "JAX_DISTRIBUTED_AUTO"):
        monkeypatch.delenv(name, raising=False)

    cfg = ml_collections.ConfigDict({"distributed": {
        "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 1,
        "auto_detect": False}})
    spec = distributed.spec_from(cfg, environ={})
    assert (spec.coordinator_address, spec.num_processes, spec.process_id) == (
        "10.0.0.1:1234", 4, 1)
    spec = distributed.spec_from(cfg, environ={"JAX_PROCESS_ID": "3",
                                               "JAX_COORDINATOR_ADDRESS": "h:9"})
    assert (spec.coordinator_address, spec.process_id, spec.multi_process) == ("h:9", 3, True)
    assert not distributed.spec_from(None, environ={}).multi_process
    assert distributed.spec_from(None, environ={"JAX_DISTRIBUTED_AUTO": "1"}).auto_detect
    # Single process: nothing to join, no jax.distributed call.
    assert distributed.maybe_initialize(None) == distributed.DistributedSpec()
    with pytest.raises(ValueError, match="process_id"):
        distributed.spec_from(cfg, environ={"JAX_PROCESS_ID": "4"})
    with pytest.raises(ValueError, match="coordinator_address"):
        distributed.spec_from(cfg, environ={"JAX_COORDINATOR_ADDRESS": "nohost"})
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
        distributed.spec_from(cfg, environ={"JAX_NUM_PROCESSES": "two"})


def test_sft_shards_union_is_the_global_batch():
    import numpy as np

    from vista_jax import data

    rows = [{"tokens": np.arange(5) + i, "positions": np.zeros((3, 5), np.int32),
             "loss_mask": np.ones(5, np.float32), "images": []} for i in range(20)]
    kw = dict(batch_size=8, seq_len=16, max_images=1, patch_shape=(4, 8), pad_id=0, seed=3)
    whole = data.sft_iterator(rows, shard=(0, 1), **kw)
    parts = [data.sft_iterator(rows, shard=(i, 2), **kw) for i in range(2)]
    for _ in range(5):  # crosses an epoch boundary (20 rows, 8 per step)
        ref = next(whole)["tokens"][:, 0]
        got = [next(p)["tokens"][:, 0] for p in parts]
        assert all(len(g) == 4 for g in got)
        assert sorted(np.concatenate(got).tolist()) == sorted(ref.tolist())
    assert data.host_slice(32, (1, 4)) == slice(8, 16)
    with pytest.raises(ValueError, match="does not split"):
        data.host_slice(30, (0, 4))
    with pytest.raises(ValueError, match="sft.batch_size=8"):
        data.sft_iterator(rows, shard=(0, 3), **kw)
