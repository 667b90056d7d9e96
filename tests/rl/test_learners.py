"""The learner interface: DAPO's filter and refill loop, filler rows that weigh nothing,
per-token advantages, whitening, and PPO's update (exact under accumulation)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from vista_jax.rl import advantages as A
from vista_jax.rl import losses as L
from vista_jax.rl.learner import make_learner, make_rl_loss
from vista_jax.rl.ppo import ValueHead, critic_values, make_ppo_train_step


def rl_cfg(**kw):
    base = dict(policy_loss="ppo_clip", clip_eps_low=0.2, clip_eps_high=0.2, dual_clip=0.0,
                kl_coef=0.0, kl_estimator="k3", loss_agg="token-mean", value_coef=0.5,
                value_clip=0.2)
    return ml_collections.ConfigDict({**base, **kw})


# --- pure functions, by hand ----------------------------------------------------------------


def test_informative_group_rows_hand_computed():
    rewards = [1, 0, 1, 1, 0, 0.5, 0, 0, 2, 1]
    groups = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]  # informative: 0, 2, 4
    np.testing.assert_array_equal(A.informative_group_rows(rewards, groups), [0, 1, 4, 5, 8, 9])
    np.testing.assert_array_equal(A.informative_group_rows(rewards, groups, limit=2), [0, 1, 4, 5])
    assert A.informative_group_rows(rewards, groups, limit=0).size == 0
    # "first" = order of first appearance, not group id; rows keep their order
    np.testing.assert_array_equal(A.informative_group_rows([1, 0, 0, 1], [7, 7, 3, 3], limit=1),
                                  [0, 1])
    np.testing.assert_array_equal(A.informative_group_rows([1, 0, 5, 1], [7, 3, 3, 7]), [1, 2])
    assert A.informative_group_rows([], []).size == 0


def test_terminal_token_rewards_hand_computed():
    mask = np.array([[0, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    out = A.terminal_token_rewards([2.0, 5.0, -1.0], mask)
    want = np.zeros((3, 6), np.float32)
    want[0, 4], want[2, 0] = 2.0, -1.0
    np.testing.assert_array_equal(out, want)


def test_whiten_over_generated_tokens_hand_computed():
    adv = np.array([[1.0, 2.0, 9.0], [3.0, 7.0, 7.0]])
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    # tokens 1, 2, 3: mean 2, population std sqrt(2/3)
    s = np.sqrt(2 / 3)
    np.testing.assert_allclose(A.whiten(adv, mask), [[-1 / s, 0, 0], [1 / s, 0, 0]], atol=1e-6)
    np.testing.assert_array_equal(A.whiten(adv, np.zeros_like(mask)), np.zeros((2, 3)))


def test_aggregate_row_mask_drops_filler_rows_from_the_constant_normaliser():
    per_tok = jnp.ones((3, 4))
    mask = jnp.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], jnp.float32)
    total, denom = L.aggregate(per_tok, mask, "seq-mean-token-sum-norm",
                               row_mask=jnp.array([1, 1, 0]))
    assert (float(total), float(denom)) == (3.0, 8.0)  # 2 real rows x 4
    assert float(L.aggregate(per_tok, mask, "seq-mean-token-sum-norm")[1]) == 12.0


def _loss_batch(b=2, t=5, v=7, seed=0):
    rng = np.random.default_rng(seed)
    logits = jnp.asarray(rng.normal(size=(b, t, v)), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, v, (b, t)), jnp.int32)
    return logits, {"tokens": tokens, "old_logprobs": L.token_logprobs(logits, tokens)}


def test_per_token_advantages_hand_computed():
    logits, batch = _loss_batch()
    mask = np.array([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]], np.float32)
    adv = np.array([[0, 1.0, -2.0, 0.5, 0], [0, 0, 3.0, -1.0, 2.0]], np.float32)
    old = np.array(batch["old_logprobs"])
    old[0, 1] -= np.log(1.5)  # ratio 1.5, A > 0: clipped to 1.2
    old[1, 3] -= np.log(1.5)  # ratio 1.5, A < 0: the unclipped 1.5 A is the min
    batch = dict(batch, old_logprobs=jnp.asarray(old), loss_mask=jnp.asarray(mask),
                 advantages=jnp.asarray(adv))
    ratio = np.ones_like(adv)
    ratio[0, 1], ratio[1, 3] = 1.2, 1.5
    terms = -(ratio * adv)  # per token, on the masked positions
    total, denom, m = make_rl_loss(rl_cfg())(logits, batch)
    assert float(denom) == 6.0
    np.testing.assert_allclose(float(total), (terms * mask).sum(), rtol=1e-5)
    assert float(m["clip_fraction"]) == 1.0  # only (0, 1) took the clipped term
    total, denom, _ = make_rl_loss(rl_cfg(loss_agg="seq-mean-token-mean"))(logits, batch)
    want = ((terms * mask).sum(1) / mask.sum(1)).sum()
    np.testing.assert_allclose((float(total), float(denom)), (want, 2.0), rtol=1e-5)
    # a per-row advantage [B] is the per-token one broadcast over the row
    row = dict(batch, old_logprobs=L.token_logprobs(logits, batch["tokens"]),
               advantages=jnp.array([0.7, -0.3]))
    tok = dict(row, advantages=jnp.broadcast_to(row["advantages"][:, None], (2, 5)))
    np.testing.assert_allclose(make_rl_loss(rl_cfg())(logits, row)[0],
                               make_rl_loss(rl_cfg())(logits, tok)[0], rtol=1e-6)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("per_token", [False, True])
def test_filler_rows_add_nothing_to_loss_gradient_or_denominator(agg, per_token):
    """A batch of 3 real rows and the same batch with 2 filler rows appended (arbitrary
    tokens, advantages, old and reference log-probs; loss mask and row mask 0): the same
    loss sum and denominator, metric sums and gradients on the real rows; zero gradient on
    the fillers."""
    rng = np.random.default_rng(1)
    b, f, t, v = 3, 2, 6, 9
    logits = jnp.asarray(rng.normal(size=(b + f, t, v)), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, v, (b + f, t)), jnp.int32)
    mask = (rng.random((b + f, t)) < 0.7).astype(np.float32)
    mask[b:] = 0.0
    adv_shape = (b + f, t) if per_token else (b + f,)
    full = {"tokens": tokens, "loss_mask": jnp.asarray(mask),
            "old_logprobs": jnp.asarray(-rng.random((b + f, t)) * 3, jnp.float32),
            "ref_logprobs": jnp.asarray(-rng.random((b + f, t)) * 3, jnp.float32),
            "advantages": jnp.asarray(rng.normal(size=adv_shape), jnp.float32),
            "row_mask": jnp.asarray([1.0] * b + [0.0] * f)}
    real = {k: x[:b] for k, x in full.items()}
    loss = make_rl_loss(rl_cfg(loss_agg=agg, kl_coef=0.3))

    def run(lg, batch):
        (total, (denom, m)), g = jax.value_and_grad(
            lambda lg: (lambda s, d, m: (s, (d, m)))(*loss(lg, batch)), has_aux=True)(lg)
        return total, denom, m, g

    t1, d1, m1, g1 = run(logits[:b], real)
    t2, d2, m2, g2 = run(logits, full)
    np.testing.assert_allclose((t2, d2), (t1, d1), rtol=1e-6)
    for k in m1:
        np.testing.assert_allclose(m2[k], m1[k], rtol=1e-6, atol=1e-7, err_msg=k)
    np.testing.assert_allclose(g2[:b], g1, rtol=1e-6, atol=1e-8)
    assert float(jnp.abs(g2[b:]).max()) == 0.0


# --- DAPO's refill loop (real tiny sampler, update replaced by a spy) -----------------------


def _dapo(rl_setup, rounds, round_tasks):
    s = rl_setup
    p, g = 4, 4
    config = s.config(algorithm="dapo", prompts_per_step=p, group_size=g,
                      dynamic_sampling_max_rounds=rounds)
    learner = make_learner(config, s.graphdef, s.rest, s.cfg, s.grid_hw)
    seen = []

    def spy(params, opt_state, batch):
        seen.append(jax.tree.map(np.asarray, batch))
        return params, opt_state, {"loss": 0.0}

    learner.train_step = spy

    def task(name, informative):
        return s.Task(name, meta={"informative": informative})

    scripts = [[task(f"r{r}-{i}", bool(flag)) for i, flag in enumerate(flags)]
               for r, flags in enumerate(round_tasks)]
    calls = []

    def more_tasks(n):
        calls.append(n)
        return scripts[len(calls)]

    # Informative tasks pay 1 on odd rows of each group of 4, others pay 0 everywhere.
    env = s.VecEnv(p * g, lambda text, t, i: float(t.meta["informative"] and i % 2))
    state = learner.init_state(s.params)
    _, m, episodes = learner.step(state, sampler=s.sampler, vec_env=env, tasks=scripts[0],
                                  rng=jax.random.key(0), to_device=s.to_device,
                                  patch_shape=s.patch_shape, pad_id=s.tok.pad_id,
                                  more_tasks=more_tasks)
    assert len(seen) == 1
    return m, episodes, seen[0], calls


def _rows_match(batch, episodes, rows):
    for i, e in enumerate(episodes):
        n = len(e.tokens)
        np.testing.assert_array_equal(batch["tokens"][rows[i], :n], e.tokens)


def test_dapo_refills_until_enough_informative_groups(rl_setup):
    m, eps, batch, calls = _dapo(rl_setup, 3, [[0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 1, 0]])
    assert calls == [4, 4] and len(eps) == 48
    assert (m["dynamic_sampling/rounds"], m["dynamic_sampling/groups_sampled"],
            m["dynamic_sampling/filler_rows"]) == (3, 12, 0)
    assert m["dynamic_sampling/kept_fraction"] == pytest.approx(4 / 12)
    assert m["informative_groups"] == pytest.approx(5 / 12)
    # kept: round 1's groups 0 and 2, then round 2's first two (its third is surplus)
    kept = [eps[i] for i in [*range(16, 20), *range(24, 28), *range(32, 40)]]
    assert [e.trajectory["task"] for e in kept[::4]] == ["r1-0", "r1-2", "r2-0", "r2-1"]
    _rows_match(batch, kept, range(16))
    np.testing.assert_allclose(batch["advantages"], [-1, 1, -1, 1] * 4, atol=1e-5)
    np.testing.assert_array_equal(batch["row_mask"], np.ones(16))
    gen = np.array([e.loss_mask.sum() for e in kept])
    np.testing.assert_array_equal(batch["loss_mask"].sum(1), gen)


def test_dapo_fills_a_short_batch_with_rows_that_weigh_nothing(rl_setup):
    m, eps, batch, calls = _dapo(rl_setup, 2, [[0, 0, 0, 0], [1, 0, 1, 0]])
    assert calls == [4] and len(eps) == 32
    assert (m["dynamic_sampling/rounds"], m["dynamic_sampling/groups_sampled"],
            m["dynamic_sampling/filler_rows"]) == (2, 8, 8)
    assert m["dynamic_sampling/kept_fraction"] == pytest.approx(2 / 8)
    _rows_match(batch, [eps[i] for i in [*range(16, 20), *range(24, 28)]], range(8))
    assert batch["tokens"].shape[0] == 16  # the batch keeps its shape
    np.testing.assert_array_equal(batch["row_mask"], [1] * 8 + [0] * 8)
    assert batch["loss_mask"][8:].sum() == 0 and np.all(batch["advantages"][8:] == 0)
    assert batch["loss_mask"][:8].sum(1).min() > 0


def test_dapo_without_more_tasks_is_one_round(rl_setup):
    s = rl_setup
    config = s.config(algorithm="dapo", prompts_per_step=4, group_size=4)
    learner = make_learner(config, s.graphdef, s.rest, s.cfg, s.grid_hw)
    seen = []
    learner.train_step = lambda p, o, b: (seen.append(b), (p, o, {"loss": 0.0}))[1]
    env = s.VecEnv(16, lambda text, t, i: float(t.meta["informative"] and i % 2))
    tasks = [s.Task(f"t{i}", meta={"informative": i < 3}) for i in range(4)]
    _, m, _ = learner.step(learner.init_state(s.params), sampler=s.sampler, vec_env=env,
                           tasks=tasks, rng=jax.random.key(0), to_device=s.to_device,
                           patch_shape=s.patch_shape, pad_id=s.tok.pad_id)
    assert (m["dynamic_sampling/rounds"], m["dynamic_sampling/filler_rows"]) == (1, 4)


def test_make_learner_names_a_bad_algorithm(rl_setup):
    s = rl_setup
    with pytest.raises(ValueError, match="'reinforce'"):
        make_learner(s.config(algorithm="reinforce"), s.graphdef, s.rest, s.cfg, s.grid_hw)


# --- PPO --------------------------------------------------------------------------------------


def test_ppo_state_holds_the_critic(rl_setup):
    s = rl_setup
    for critic in ("shared", "separate"):
        learner = make_learner(s.config(algorithm="ppo", critic=critic), s.graphdef, s.rest,
                               s.cfg, s.grid_hw)
        state = learner.init_state(s.params)
        assert set(state) == {"params", "opt_state", "critic", "critic_opt_state"}
        assert set(state["critic"]) == ({"value_head"} if critic == "shared"
                                        else {"value_head", "trunk"})
        assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(state))
        head = state["critic"]["value_head"]
        assert float(jnp.abs(head["proj"]["kernel"][...]).max()) == 0.0  # zero-initialised
        if critic == "separate":  # a copy, not an alias of the policy's buffers
            for a, b in zip(jax.tree.leaves(state["critic"]["trunk"]), jax.tree.leaves(s.params)):
                np.testing.assert_array_equal(a, b)
                assert a is not b


def _ppo_batch(s, b=4, t=16, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, s.tok.vocab_size, (b, t)).astype(np.int32)
    tokens[tokens == s.tok.image_pad_id] = 5
    valid = np.ones((b, t), bool)
    for i in range(b):
        valid[i, t - 1 - i % 3:] = False
    mask = ((rng.random((b, t)) < 0.6) & valid & (np.arange(t) > 0)).astype(np.float32)
    return {"tokens": tokens, "valid": valid, "loss_mask": mask,
            "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (b, 3, t)).copy(),
            "patches": np.zeros((b, 1) + s.patch_shape, np.float32),
            "old_logprobs": (-rng.random((b, t)) * 3).astype(np.float32) * mask,
            "advantages": (rng.normal(size=(b, t)) * mask).astype(np.float32),
            "returns": (rng.normal(size=(b, t)) * mask).astype(np.float32),
            "row_mask": np.ones(b, np.float32)}


@pytest.mark.parametrize("critic", ["shared", pytest.param("separate", marks=pytest.mark.slow)])
def test_ppo_step_value_loss_by_hand_and_exact_under_accumulation(rl_setup, critic):
    """Two compilations of the step (≈ 10 s each on 2 busy cores): the separate critic's
    run is marked slow."""
    s = rl_setup
    cfg = rl_cfg(value_coef=0.5, value_clip=0.1)
    rng = np.random.default_rng(3)
    head = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape) * 0.3, jnp.float32),
                        nnx.state(ValueHead(s.cfg.embed_dim)))
    head_graphdef = nnx.graphdef(ValueHead(s.cfg.embed_dim))
    critic_state = {"value_head": head}
    if critic == "separate":
        critic_state["trunk"] = jax.tree.map(lambda x: x * 1.01, s.params)
    trunk = s.params if critic == "shared" else critic_state["trunk"]
    batch = _ppo_batch(s)
    values = np.asarray(jax.jit(lambda tr, hd, b: critic_values(
        s.graphdef, s.rest, head_graphdef, tr, hd, b, s.grid_hw))(trunk, head, batch))
    # old values off the current ones by ±0.3 on alternate tokens: some clip, some do not
    shift = 0.3 * (-1) ** np.arange(16)
    batch["old_values"] = ((values + shift) * batch["loss_mask"]).astype(np.float32)
    tx = optax.sgd(0.1)
    copy = lambda p: jax.tree.map(lambda x: x.copy(), p)  # noqa: E731
    out = {}
    for mb in (1, 2):
        step = make_ppo_train_step(s.graphdef, s.rest, head_graphdef, cfg, tx, tx, s.grid_hw,
                                   shared=critic == "shared", micro_batches=mb)
        out[mb] = step(copy(s.params), tx.init(s.params), copy(critic_state),
                       tx.init(critic_state), batch)
    m = out[1][4]
    # the value loss from the critic's values, by hand
    mask, old, ret = batch["loss_mask"], batch["old_values"], batch["returns"]
    moved = old + np.clip(values - old, -0.1, 0.1)
    per = 0.5 * np.maximum((values - ret) ** 2, (moved - ret) ** 2)
    np.testing.assert_allclose(m["value_loss"], (per * mask).sum() / mask.sum(), rtol=1e-4)
    frac = (((moved - ret) ** 2 > (values - ret) ** 2) * mask).sum() / mask.sum()
    np.testing.assert_allclose(m["value_clip_fraction"], frac, rtol=1e-5)
    assert 0 < frac < 1
    np.testing.assert_allclose(m["loss"], m["pg_loss"] + 0.5 * m["value_loss"], rtol=1e-5)
    assert float(m["critic_grad_norm"]) > 0
    # micro_batches = 2 is the same update
    for k in ("loss", "value_loss", "pg_loss", "grad_norm", "critic_grad_norm"):
        np.testing.assert_allclose(out[2][4][k], m[k], rtol=1e-5, err_msg=k)
    for i in (0, 2):  # params, critic
        for a, c in zip(jax.tree.leaves(out[1][i]), jax.tree.leaves(out[2][i])):
            np.testing.assert_allclose(a, c, atol=1e-6)
