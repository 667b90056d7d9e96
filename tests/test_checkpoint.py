"""Orbax checkpoints of a run: round trip of the whole training state, keep-N with phase
ends kept, lookup by phase, partial restores with a clear error, restore onto another mesh
(8 fake CPU devices, in a subprocess), and SFT resumed mid-phase equal to SFT run through."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vista_jax import checkpoint as ckpt_lib
from vista_jax import data as data_lib
from vista_jax.models import ModelConfig, Qwen25VL
from vista_jax.rl.train_step import make_optimizer, make_train_step, sft_loss
from vista_jax.sft import run_sft

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(seed=0):
    cfg = ModelConfig.tiny(64, 63, num_layers=2)
    return nnx.split(Qwen25VL(cfg, rngs=nnx.Rngs(seed)), nnx.Param, ...)


def _equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_state_round_trip_keep_n_and_phase_ends(tmp_path):
    _, params, _ = tiny(1)
    tx = make_optimizer(1e-3, warmup_steps=1, total_steps=10)
    state = {"params": params, "opt_state": tx.init(params),
             "rng": jax.random.key_data(jax.random.key(3))}
    mngr = ckpt_lib.manager(tmp_path, 2, phase_ends=(2,), async_save=True)
    for step in range(1, 6):
        ckpt_lib.save_state(mngr, step, jax.tree.map(lambda x: x + step, state),
                            {"phase": "sft" if step <= 2 else "rl", "phase_step": step,
                             "end": step == 2, "data_state": {"next_index": step}})
    mngr.wait_until_finished()
    assert mngr.all_steps() == [2, 4, 5]  # the newest two and the SFT end
    other = {"params": tiny(2)[1], "opt_state": tx.init(tiny(2)[1]),
             "rng": jax.random.key_data(jax.random.key(0))}
    reader = ckpt_lib.manager(tmp_path, read_only=True)
    _equal(ckpt_lib.restore_state(reader, 4, other), jax.tree.map(lambda x: x + 4, state))
    meta = ckpt_lib.restore_meta(reader, 4)
    assert meta["data_state"] == {"next_index": 4} and meta["state_keys"] == sorted(state)
    _equal(ckpt_lib.restore_params(reader, other["params"], 2), jax.tree.map(lambda x: x + 2, params))
    assert ckpt_lib.find_step(reader, "sft") == 2 and ckpt_lib.find_step(reader, "rl", end=False) == 5
    with pytest.raises(FileNotFoundError, match="final 'rl'"):
        ckpt_lib.find_step(reader, "rl")
    with pytest.raises(KeyError, match="critic"):
        ckpt_lib.restore_state(reader, 5, {"critic": other["params"]})


def test_sft_resumed_mid_phase_equals_sft_run_through(tmp_path):
    """run_sft with its checkpoint hook: stop after 3 of 6 steps, restore params, optimizer
    state, best-so-far and the grain iterator's position from the checkpoint in a fresh
    optimizer/iterator, finish: the same losses and final params as 6 steps in one go."""
    graphdef, params0, rest = tiny(0)
    rng = np.random.default_rng(0)
    rows = [{"tokens": rng.integers(0, 60, 20), "loss_mask": np.ones(20, np.float32),
             "positions": np.broadcast_to(np.arange(20), (3, 20)), "images": []}
            for _ in range(12)]
    tx = make_optimizer(1e-2, warmup_steps=1, total_steps=6)
    step_fn = make_train_step(graphdef, rest, sft_loss, tx, (4, 4))

    def batches():
        return data_lib.sft_iterator(rows, batch_size=4, seq_len=24, max_images=1,
                                     patch_shape=(16, 1176), pad_id=0, seed=5)

    def fresh():
        return jax.tree.map(jnp.copy, params0)

    scores = iter(np.linspace(0.1, 0.9, 10))
    def validate(p):  # a deterministic stand-in; "loss" is logged as val_loss
        s = float(next(scores))
        return {"accuracy": s, "loss": 1.0 - s}

    def go(steps, start=0, params=None, opt_state=None, it=None, best=None, on_step=None):
        logs = []
        params = fresh() if params is None else params
        out = run_sft(params=params, opt_state=tx.init(params) if opt_state is None else opt_state,
                      train_step=step_fn, batches=it or batches(), steps=steps,
                      to_device=lambda b: b, log=lambda s, m: logs.append((s, m)), log_every=1,
                      validate=validate, validate_every=2, progress=False, start_step=start,
                      best=best, on_step=on_step)
        return out, logs

    (p_ref, _, info_ref), logs_ref = go(6)
    val = [m for _, m in logs_ref if "val_accuracy" in m]
    assert len(val) == 3 and all(m["val_loss"] == 1.0 - m["val_accuracy"] for m in val)

    scores = iter(np.linspace(0.1, 0.9, 10))
    mngr = ckpt_lib.manager(tmp_path, 3)
    it = batches()

    class Killed(Exception):
        pass

    logs_a = []

    def save(done, p, o, best):
        logs_a[:] = logs_so_far
        if done == 3:
            ckpt_lib.save_state(mngr, done, {"params": p, "opt_state": o,
                                             "best_params": best["params"]},
                                {"data": it.get_state(), "best": {k: best[k] for k in
                                                                  ("accuracy", "step", "curve")}},
                                wait=True)
            raise Killed  # the process dies right after the checkpoint

    logs_so_far = []
    with pytest.raises(Killed):
        run_sft(params=fresh(), opt_state=tx.init(fresh()), train_step=step_fn, batches=it,
                steps=6, to_device=lambda b: b, log=lambda s, m: logs_so_far.append((s, m)),
                log_every=1, validate=validate, validate_every=2, progress=False, on_step=save)
    # A fresh process: new iterator, new optimizer state, restored from disk.
    scores = iter(np.linspace(0.1, 0.9, 10)[1:])  # the validation at step 2 already ran
    target = {"params": fresh(), "opt_state": tx.init(fresh()), "best_params": fresh()}
    state = ckpt_lib.restore_state(mngr, 3, target)
    meta = ckpt_lib.restore_meta(mngr, 3)
    it2 = batches()
    it2.set_state(meta["data"])
    (p_res, _, info_res), logs_b = go(6, start=3, params=state["params"],
                                      opt_state=state["opt_state"], it=it2,
                                      best=dict(meta["best"], params=state["best_params"]))
    assert [s for s, _ in logs_a] + [s for s, _ in logs_b] == [s for s, _ in logs_ref]
    for (s1, m1), (s2, m2) in zip(logs_a + logs_b, logs_ref):
        assert s1 == s2 and {k: v for k, v in m1.items() if k != "elapsed_s"} == \
            {k: v for k, v in m2.items() if k != "elapsed_s"}
    _equal(p_res, p_ref)
    assert info_res["validation_curve"] == info_ref["validation_curve"]
    assert info_res["best_step"] == info_ref["best_step"] == 6


def test_train_step_compiles_once_and_keeps_param_shardings():
    """The update returns params and optimizer state in their input shardings, so every
    step (and the first step of a resumed run, whose state is restored in those shardings)
    runs one program. Before, XLA chose the outputs' specs (e.g. P('fsdp', 'tensor') came
    back as P('tensor', 'fsdp')) and the second step compiled a second program."""
    from vista_jax import sharding

    mesh = sharding.make_mesh((-1, 1, 1))
    with jax.set_mesh(mesh):
        model = sharding.create_sharded_model(
            lambda: Qwen25VL(ModelConfig.tiny(64, 63, num_layers=2), rngs=nnx.Rngs(0)), mesh)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        specs = [x.sharding for x in jax.tree.leaves(params)]
        tx = make_optimizer(1e-2, warmup_steps=1, total_steps=6)
        step = make_train_step(graphdef, rest, sft_loss, tx, (4, 4))
        opt = tx.init(params)
        rng = np.random.default_rng(0)
        rows = [{"tokens": rng.integers(0, 60, 20), "loss_mask": np.ones(20, np.float32),
                 "positions": np.broadcast_to(np.arange(20), (3, 20)), "images": []}
                for _ in range(8)]
        it = data_lib.sft_iterator(rows, batch_size=4, seq_len=24, max_images=1,
                                   patch_shape=(16, 1176), pad_id=0, seed=0)
        for _ in range(3):
            params, opt, _ = step(params, opt, next(it))
    assert step.compilations() == 1
    assert [x.sharding for x in jax.tree.leaves(params)] == specs


_OTHER_MESH = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from flax import nnx
    from vista_jax import checkpoint as ckpt_lib, sharding
    from vista_jax.models import ModelConfig, Qwen25VL
    from vista_jax.rl.train_step import make_optimizer

    cfg = ModelConfig.tiny(64, 63, num_layers=2)
    tx = make_optimizer(1e-3, warmup_steps=1, total_steps=10)
    out = {}
    def build(shape, seed):
        mesh = sharding.make_mesh(shape)
        with jax.set_mesh(mesh):
            model = sharding.create_sharded_model(lambda: Qwen25VL(cfg, rngs=nnx.Rngs(seed)), mesh)
            _, params, _ = nnx.split(model, nnx.Param, ...)
            opt = jax.jit(tx.init)(params)
        return mesh, {"params": params, "opt_state": opt}
    _, saved = build((2, 4, 1), 0)
    saved = jax.tree.map(lambda x: x + (0.5 if x.dtype.kind == "f" else 1), saved)  # not the init
    mngr = ckpt_lib.manager(sys.argv[1], 2, async_save=True)
    ckpt_lib.save_state(mngr, 1, saved, {"phase": "sft"}, wait=True)
    ref = jax.tree.map(np.asarray, saved)
    for shape in [(1, 8, 1), (1, 2, 4), (8, 1, 1)]:
        mesh, target = build(shape, 1)
        with jax.set_mesh(mesh):
            got = ckpt_lib.restore_state(mngr, 1, target)
        diffs = [float(np.abs(np.asarray(a) - b).max()) for a, b in
                 zip(jax.tree.leaves(got), jax.tree.leaves(ref))]
        same = all(a.sharding == t.sharding for a, t in
                   zip(jax.tree.leaves(got), jax.tree.leaves(target)))
        sharded = sum(len(a.sharding.device_set) == 8 and not a.sharding.is_fully_replicated
                      for a in jax.tree.leaves(got["params"]))
        out[str(shape)] = {"max_diff": max(diffs), "target_shardings": same, "sharded": sharded}
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_restore_onto_a_different_mesh(tmp_path, eight_device_env):
    """Params and optimizer state saved from a (data 2, fsdp 4) mesh restore bit-exactly
    onto (fsdp 8), (fsdp 2, tensor 4) and (data 8) meshes, each array in the target's
    sharding."""
    proc = subprocess.run([sys.executable, "-c", _OTHER_MESH, str(tmp_path / "ckpt")],
                          env=eight_device_env,
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))[6:])
    for shape, r in out.items():
        assert r["max_diff"] == 0.0 and r["target_shardings"], (shape, r)
    assert out["(1, 8, 1)"]["sharded"] > 0 and out["(1, 2, 4)"]["sharded"] > 0
