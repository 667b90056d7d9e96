"""The jitted update: accumulation is exact, SFT loss falls, checkpoints round-trip."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from vista_jax.models import ModelConfig, Qwen25VL
from vista_jax.rl import learner
from vista_jax.rl.losses import token_logprobs
from vista_jax.rl.train_step import (make_logprob_fn, make_optimizer, make_train_step,
                                     policy_logits, sft_loss)

GRID = (4, 4)


def tiny_model(seed=0):
    cfg = ModelConfig.tiny(64, 63, num_layers=2)
    return cfg, nnx.split(Qwen25VL(cfg, rngs=nnx.Rngs(seed)), nnx.Param, ...)


def batch(b=4, t=24, seed=0, rl=False):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 60, (b, t)).astype(np.int32)
    valid = np.ones((b, t), bool)
    for i in range(b):
        valid[i, t - 1 - i % 3:] = False  # ragged rows
    mask = (rng.random((b, t)) < 0.6).astype(np.float32) * valid
    pos = np.broadcast_to(np.arange(t, dtype=np.int32), (b, 3, t)).copy()
    out = {"tokens": tokens, "positions": pos, "valid": valid, "loss_mask": mask,
           "patches": rng.normal(size=(b, 1, 16, 1176)).astype(np.float32),
           "old_logprobs": np.zeros((b, t), np.float32)}
    if rl:
        out["old_logprobs"] = (-rng.random((b, t)) * 3).astype(np.float32) * mask
        out["advantages"] = rng.normal(size=b).astype(np.float32)
    return out


class RL:
    policy_loss, clip_eps_low, clip_eps_high, dual_clip, kl_coef = "ppo_clip", 0.2, 0.2, 0.0, 0.0
    kl_estimator = "k3"
    loss_agg = "seq-mean-token-mean"


@pytest.mark.parametrize("loss_fn", [sft_loss, learner.make_rl_loss(RL)], ids=["sft", "rl"])
def test_accumulation_equals_one_big_batch(loss_fn):
    _, (graphdef, params, rest) = tiny_model()
    tx = optax.sgd(0.1)
    b = batch(rl=loss_fn is not sft_loss)
    copy = lambda p: jax.tree.map(lambda x: x.copy(), p)  # noqa: E731
    p1, _, m1 = make_train_step(graphdef, rest, loss_fn, tx, GRID)(copy(params), tx.init(params), b)
    p2, _, m2 = make_train_step(graphdef, rest, loss_fn, tx, GRID, micro_batches=2)(
        copy(params), tx.init(params), b)
    np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-5)
    for a, c in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
        np.testing.assert_allclose(a, c, atol=1e-6)


def test_sft_loss_decreases_on_a_fixed_batch():
    _, (graphdef, params, rest) = tiny_model()
    tx = make_optimizer(3e-3, warmup_steps=1, total_steps=30)
    step = make_train_step(graphdef, rest, sft_loss, tx, GRID)
    opt = tx.init(params)
    b = batch()
    losses = []
    for _ in range(30):
        params, opt, m = step(params, opt, b)
        losses.append(float(m["loss"]))
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_rl_loss_on_policy_is_minus_mean_advantage_and_pushes_up_good_rows(temperature):
    # old log-probs from the tempered policy, as the sampler records them: ratio 1 on policy
    _, (graphdef, params, rest) = tiny_model()
    b = batch(rl=True)
    b["old_logprobs"] = np.asarray(make_logprob_fn(graphdef, rest, GRID, temperature)(params, b)) * b["loss_mask"]
    tx = optax.sgd(0.5)
    step = make_train_step(graphdef, rest, learner.make_rl_loss(RL, temperature), tx, GRID)
    new, _, m = step(jax.tree.map(lambda x: x.copy(), params), tx.init(params), b)
    # ratio = 1 on policy: loss = -mean over sequences of A
    assert float(m["loss"]) == pytest.approx(-float(np.mean(b["advantages"])), abs=1e-4)
    assert float(m["clip_fraction"]) == 0.0 and float(m["logprob_abs_diff"]) < 1e-4
    after = np.asarray(make_logprob_fn(graphdef, rest, GRID, temperature)(new, b))
    gain = ((after - b["old_logprobs"]) * b["loss_mask"]).sum(1) / b["loss_mask"].sum(1)
    best, worst = np.argmax(b["advantages"]), np.argmin(b["advantages"])
    assert gain[best] > 0 > gain[worst]


def test_sft_loss_is_the_weighted_token_mean_and_accuracy_is_unweighted():
    _, (graphdef, params, rest) = tiny_model()
    b = batch()
    weights = b["loss_mask"] * np.where(np.arange(b["tokens"].shape[1]) % 2, 5.0, 1.0)
    logits = policy_logits(nnx.merge(graphdef, params, rest), jax.tree.map(jnp.asarray, b), GRID)
    logp = np.asarray(token_logprobs(logits, jnp.asarray(b["tokens"])))
    hit = np.pad(np.asarray(jnp.argmax(logits[:, :-1], -1)) == b["tokens"][:, 1:], ((0, 0), (1, 0)))
    tx = optax.sgd(0.0)
    step = make_train_step(graphdef, rest, sft_loss, tx, GRID)
    _, _, m = step(params, tx.init(params), dict(b, loss_mask=weights))
    np.testing.assert_allclose(m["loss"], -(logp * weights).sum() / weights.sum(), rtol=1e-5)
    trained = b["loss_mask"] > 0
    np.testing.assert_allclose(m["token_accuracy"], hit[trained].mean(), rtol=1e-5)
