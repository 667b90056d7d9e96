import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vista_jax.rl import advantages as A
from vista_jax.rl import losses as L


def test_grpo_advantages_hand_computed():
    rewards = [1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5]
    groups = [0, 0, 0, 0, 1, 1, 1, 1]
    adv = A.get_advantage("grpo")(rewards, groups)
    # group 0: mean 0.5, population std 0.5 -> ±1; group 1: all equal -> 0
    np.testing.assert_allclose(adv, [1, -1, -1, 1, 0, 0, 0, 0], atol=1e-5)
    adv = A.get_advantage("dr_grpo")(rewards, groups)
    np.testing.assert_allclose(adv, [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0], atol=1e-6)
    assert A.informative_group_fraction(rewards, groups) == 0.5


def test_grpo_advantages_uneven_groups():
    adv = A.group_normalized_advantages([3.0, 1.0, 2.0], [0, 0, 1])
    np.testing.assert_allclose(adv, [1.0, -1.0, 0.0], atol=1e-5)


def test_unknown_names_are_named():
    with pytest.raises(KeyError, match="nope"):
        A.get_advantage("nope")
    with pytest.raises(KeyError, match="nope"):
        L.get_policy_loss("nope")


def test_ppo_clip_hand_computed():
    logp = jnp.log(jnp.array([[1.5, 0.5, 1.1, 0.7]]))  # ratios against old_logp = 0
    old = jnp.zeros((1, 4))
    adv = jnp.array([[1.0, 1.0, -1.0, -1.0]])
    loss, clipped = L.get_policy_loss("ppo_clip")(logp, old, adv, clip_eps_low=0.2, clip_eps_high=0.2)
    # loss = -min(ρA, clip(ρ)A): A>0: -min(1.5, 1.2), -min(0.5, 0.8); A<0: -min(-1.1, -1.1), -min(-0.7, -0.8)
    np.testing.assert_allclose(loss, [[-1.2, -0.5, 1.1, 0.8]], atol=1e-6)
    np.testing.assert_allclose(clipped, [[1, 0, 0, 1]])


def test_aggregations_hand_computed():
    x = jnp.array([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    m = jnp.array([[1, 1, 1], [1, 0, 0]])
    s, d = L.aggregate(x, m, "token-mean")
    assert float(s / d) == pytest.approx(10 / 4)
    s, d = L.aggregate(x, m, "seq-mean-token-mean")
    assert float(s / d) == pytest.approx((2 + 4) / 2)
    s, d = L.aggregate(x, m, "seq-mean-token-sum-norm")
    assert float(s / d) == pytest.approx(10 / 6)


def test_token_logprobs_alignment():
    logits = jax.random.normal(jax.random.key(0), (2, 5, 7))
    tokens = jax.random.randint(jax.random.key(1), (2, 5), 0, 7)
    lp = L.token_logprobs(logits, tokens)
    ref = jax.nn.log_softmax(logits, -1)
    assert lp[0, 0] == 0
    np.testing.assert_allclose(lp[1, 3], ref[1, 2, tokens[1, 3]], rtol=1e-6)


def test_kl_k3_is_zero_at_equality_and_positive_otherwise():
    a = jnp.array([-1.0, -2.0])
    np.testing.assert_allclose(L.kl_k3(a, a), 0.0, atol=1e-7)
    assert float(L.kl_k3(a, a + 0.3).min()) > 0


def test_clip_higher_and_dual_clip_hand_computed():
    ppo = L.get_policy_loss("ppo_clip")
    logp = jnp.log(jnp.array([[1.5, 0.5, 5.0, 5.0]]))  # ratios against old_logp = 0
    old = jnp.zeros((1, 4))
    adv = jnp.array([[1.0, -1.0, -1.0, 1.0]])
    # clip-higher: 1.5 -> 1.28 above, 0.5 -> 0.8 below (A < 0: -min(-0.5, -0.8) = 0.8)
    loss, clipped = ppo(logp, old, adv, clip_eps_low=0.2, clip_eps_high=0.28)
    np.testing.assert_allclose(loss, [[-1.28, 0.8, 5.0, -1.28]], atol=1e-5)
    np.testing.assert_allclose(clipped, [[1, 1, 0, 1]])
    # dual clip c = 3: a bad token with ratio 5 costs -max(min(-5, -1.2), -3) = 3, not 5;
    # positive advantages are untouched
    loss, clipped = ppo(logp, old, adv, clip_eps_low=0.2, clip_eps_high=0.28, dual_clip=3.0)
    np.testing.assert_allclose(loss, [[-1.28, 0.8, 3.0, -1.28]], atol=1e-5)
    np.testing.assert_allclose(clipped, [[1, 1, 1, 1]])
    with pytest.raises(ValueError, match="dual_clip=0.5"):
        ppo(logp, old, adv, clip_eps_low=0.2, clip_eps_high=0.2, dual_clip=0.5)


def test_kl_estimators_hand_computed():
    logp, ref = jnp.array([-1.0, -2.0]), jnp.array([-1.5, -1.0])
    np.testing.assert_allclose(L.KL_ESTIMATORS["k1"](logp, ref), [0.5, -1.0], atol=1e-6)
    r = np.array([-0.5, 1.0])  # ref - logp
    np.testing.assert_allclose(L.KL_ESTIMATORS["k3"](logp, ref), np.exp(r) - r - 1, atol=1e-6)


def test_overlong_penalty_hand_computed():
    # max 100, buffer 20: no penalty to 80 tokens, linear to -1 at 100, -1 beyond; factor 0.5
    pen = A.overlong_penalty([10, 80, 90, 100, 130], max_tokens=100, buffer=20, factor=0.5)
    np.testing.assert_allclose(pen, [0, 0, -0.25, -0.5, -0.5], atol=1e-6)
    np.testing.assert_array_equal(A.overlong_penalty([500], 100, 0), [0.0])  # off
    with pytest.raises(ValueError, match="buffer 200"):
        A.overlong_penalty([1], 100, 200)


def test_gae_hand_computed_with_observation_gaps():
    # One row: generated tokens at 0, 1 (turn 1) and 4, 5 (turn 2); 2, 3 are a tool response.
    values = np.array([[0.2, 0.4, 9.0, 9.0, 0.5, 0.8]])
    mask = np.array([[1, 1, 0, 0, 1, 1]])
    rewards = np.zeros((1, 6))
    rewards[0, 5] = 1.0  # terminal reward on the last generated token
    adv, ret = A.gae(values, rewards, mask, gamma=1.0, lam=1.0)
    np.testing.assert_allclose(adv, [[0.8, 0.6, 0, 0, 0.5, 0.2]], atol=1e-6)  # R - V_t
    np.testing.assert_allclose(ret, [[1.0, 1.0, 0, 0, 1.0, 1.0]], atol=1e-6)
    # λ = 0: one-step TD over the generated chain (the observation values 9.0 are skipped)
    adv, _ = A.gae(values, rewards, mask, gamma=1.0, lam=0.0)
    np.testing.assert_allclose(adv, [[0.2, 0.1, 0, 0, 0.3, 0.2]], atol=1e-6)
    # γ = 0.5, λ = 0.5: δ = [0.0, -0.15, ·, ·, -0.1, 0.2]; A_5 = 0.2, A_4 = -0.1 + 0.25*0.2,
    # A_1 = -0.15 + 0.25*A_4, A_0 = 0.0 + 0.25*A_1
    adv, _ = A.gae(values, rewards, mask, gamma=0.5, lam=0.5)
    a4 = -0.1 + 0.25 * 0.2
    a1 = -0.15 + 0.25 * a4
    np.testing.assert_allclose(adv, [[0.25 * a1, a1, 0, 0, a4, 0.2]], atol=1e-6)


def test_clipped_value_loss_hand_computed():
    v = jnp.array([1.0, 1.0, 0.0])
    old = jnp.array([0.5, 0.9, 0.0])
    ret = jnp.array([0.0, 2.0, 1.0])
    # token 0: unclipped (1-0)² = 1, clipped V = 0.7 -> 0.49; max 1 -> 0.5
    # token 1: unclipped 1, clipped V = 1.0 (within ±0.2 of 0.9) -> 1; -> 0.5
    # token 2: unclipped 1, clipped 0 -> 1; -> 0.5
    loss, clipped = L.clipped_value_loss(v, old, ret, 0.2)
    np.testing.assert_allclose(loss, [0.5, 0.5, 0.5])
    assert clipped.tolist() == [False, False, False]  # the clipped term never larger
    # where the clip binds from the other side: V moved away from R beyond ε
    v2, old2, ret2 = jnp.array([0.0]), jnp.array([1.0]), jnp.array([1.2])
    # unclipped (0-1.2)² = 1.44, clipped V = 0.8 -> 0.16; max = 1.44 -> 0.72
    loss, clipped = L.clipped_value_loss(v2, old2, ret2, 0.2)
    np.testing.assert_allclose(loss, [0.72], atol=1e-6)
    assert clipped.tolist() == [False]
    v3, old3, ret3 = jnp.array([2.0]), jnp.array([1.0]), jnp.array([1.9])
    # unclipped 0.01, clipped V = 1.2 -> 0.49: the clip makes it worse -> 0.245
    loss, clipped = L.clipped_value_loss(v3, old3, ret3, 0.2)
    np.testing.assert_allclose(loss, [0.245], atol=1e-6)
    assert clipped.tolist() == [True]
    loss, clipped = L.clipped_value_loss(v3, old3, ret3, 0.0)
    np.testing.assert_allclose(loss, [0.005], atol=1e-6)
    assert clipped.tolist() == [False]
