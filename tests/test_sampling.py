"""Sampling controls (temperature / top-k / top-p), per-row stop sequences and the decode
loop's equality with the model's full forward (vista_jax.sampling, rollout.Sampler)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vista_jax import sampling
from vista_jax.models import ModelConfig, Qwen25VL, init_cache
from vista_jax.rl import losses
from vista_jax.rollout import Sampler, SamplerConfig, decode_phases

# --- pure sampling functions ----------------------------------------------------------------

LOGITS = np.log(np.array([0.05, 0.30, 0.10, 0.40, 0.15], np.float32))  # probs sum to 1


def draw(logits, n, temperature=1.0, top_k=0, top_p=1.0, seed=0):
    """n samples from one row of logits -> tokens [n], logprobs [n]."""
    rows = jnp.broadcast_to(jnp.asarray(logits), (n, len(logits)))
    return jax.jit(lambda k: sampling.sample(rows, k, temperature, top_k, top_p))(
        jax.random.key(seed))


def test_temperature_zero_is_argmax_with_logprob_zero():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(32, 50)).astype(np.float32)
    logits[3, [7, 9]] = 10.0  # a tie: the first index wins, as jnp.argmax
    tok, lp = sampling.sample(jnp.asarray(logits), jax.random.key(0), 0.0, top_k=5, top_p=0.5)
    np.testing.assert_array_equal(np.asarray(tok), logits.argmax(-1))
    assert int(tok[3]) == 7 and not np.asarray(lp).any()
    np.testing.assert_array_equal(np.asarray(sampling.argmax(jnp.asarray(logits))),
                                  logits.argmax(-1))


def test_top_k_never_samples_outside_the_k_largest():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=40).astype(np.float32)
    top3 = set(np.argsort(-logits)[:3].tolist())
    tok, lp = draw(logits, 4000, temperature=1.5, top_k=3)
    assert set(np.asarray(tok).tolist()) == top3  # all three seen, nothing else
    # log-probs are those of the renormalised top-3 distribution at temperature 1.5
    x = logits / 1.5
    ref = x - np.log(np.exp(x[list(top3)]).sum())
    np.testing.assert_allclose(np.asarray(lp), ref[np.asarray(tok)], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("top_p,nucleus", [
    (0.30, {3}),  # 0.40 alone reaches 0.30
    (0.40, {3}),  # exactly 0.40: still one token
    (0.41, {3, 1}),  # 0.40 + 0.30
    (0.70, {3, 1}),
    (0.71, {3, 1, 4}),  # + 0.15
    (0.86, {3, 1, 4, 2}),  # + 0.10 (0.95)
    (0.96, {3, 1, 4, 2, 0}),
])
def test_top_p_sampled_set_is_the_minimal_nucleus(top_p, nucleus):
    keep = sampling.truncation_mask(jnp.asarray(LOGITS), top_p=top_p)
    assert set(np.flatnonzero(np.asarray(keep)).tolist()) == nucleus
    tok, _ = draw(LOGITS, 3000, top_p=top_p)
    assert set(np.asarray(tok).tolist()) == nucleus


def test_top_p_frequencies_match_the_renormalised_distribution():
    n = 40000
    tok, lp = draw(LOGITS, n, top_p=0.8, seed=3)  # nucleus {3, 1, 4}: 0.40, 0.30, 0.15
    probs = np.exp(LOGITS)
    expected = np.zeros(5)
    expected[[3, 1, 4]] = probs[[3, 1, 4]] / probs[[3, 1, 4]].sum()
    counts = np.bincount(np.asarray(tok), minlength=5)
    kept = expected > 0
    chi2 = (((counts - n * expected)[kept]) ** 2 / (n * expected[kept])).sum()
    assert counts[~kept].sum() == 0
    assert chi2 < 13.8, (counts, n * expected)  # 2 dof: p = 0.001
    np.testing.assert_allclose(np.exp(np.asarray(lp)), expected[np.asarray(tok)], rtol=1e-5)


def test_top_k_then_top_p_and_temperature_frequencies():
    """HF order: temperature, then top-k, then top-p on the renormalised top-k."""
    logits = np.log(np.array([0.5, 0.2, 0.15, 0.1, 0.05], np.float32))
    t = 2.0
    x = logits / t
    head = np.exp(x[:3]) / np.exp(x[:3]).sum()  # top-3 renormalised
    n_keep = int(np.sum(np.cumsum(head) - head < 0.6))
    expected = np.zeros(5)
    expected[:n_keep] = head[:n_keep] / head[:n_keep].sum()
    n = 30000
    tok, _ = draw(logits, n, temperature=t, top_k=3, top_p=0.6, seed=4)
    counts = np.bincount(np.asarray(tok), minlength=5)
    assert n_keep == 2 and counts[n_keep:].sum() == 0
    chi2 = ((counts[:n_keep] - n * expected[:n_keep]) ** 2 / (n * expected[:n_keep])).sum()
    assert chi2 < 10.8, counts  # 1 dof: p = 0.001


def test_untruncated_sampling_matches_softmax_frequencies():
    n = 30000
    tok, lp = draw(LOGITS, n, temperature=0.5, seed=5)
    p = np.exp(LOGITS / 0.5) / np.exp(LOGITS / 0.5).sum()
    counts = np.bincount(np.asarray(tok), minlength=5)
    chi2 = ((counts - n * p) ** 2 / (n * p)).sum()
    assert chi2 < 18.5, counts  # 4 dof: p = 0.001
    np.testing.assert_allclose(np.exp(np.asarray(lp)), p[np.asarray(tok)], rtol=1e-5)


def test_learner_logprobs_use_the_same_truncation():
    rng = np.random.default_rng(6)
    logits = jnp.asarray(rng.normal(size=(2, 6, 30)).astype(np.float32))
    tokens = jnp.asarray(np.argsort(-np.asarray(logits), -1)[..., 0])  # top-1: never cut
    tokens = jnp.roll(tokens, 1, axis=1)  # token t is predicted by logits t-1
    got = losses.token_logprobs(logits, tokens, 0.7, top_k=4, top_p=0.8)
    ref = sampling.truncated_log_softmax(logits[:, :-1], 0.7, 4, 0.8)
    ref = jnp.take_along_axis(ref, tokens[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(got)[:, 1:], np.asarray(ref), rtol=1e-6)
    plain = losses.token_logprobs(logits, tokens, 0.7)
    assert np.all(np.asarray(got)[:, 1:] > np.asarray(plain)[:, 1:])  # renormalised: larger


def test_bad_truncation_values_are_named():
    with pytest.raises(ValueError, match="top_k=-1"):
        sampling.check_truncation(-1, 1.0)
    with pytest.raises(ValueError, match="top_p=0"):
        sampling.check_truncation(0, 0.0)
    with pytest.raises(ValueError, match="top_p=1.5"):
        SamplerConfig(64, 8, (16,), (16,), 1, 56, top_p=1.5)


def test_config_fields_reach_the_sampler_and_bad_values_are_named():
    import importlib.util
    import os

    from vista_jax import config as config_lib

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "tiny_cpu.py")
    spec = importlib.util.spec_from_file_location("tiny_cpu", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = mod.get_config()
    cfg.rollout.top_k, cfg.rollout.top_p = 20, 0.9
    config_lib.validate(cfg)
    scfg = SamplerConfig.from_config(cfg)
    assert (scfg.top_k, scfg.top_p) == (20, 0.9)
    for key, value in (("top_k", -2), ("top_p", 0.0), ("top_p", 1.2)):
        bad = mod.get_config()
        bad.rollout[key] = value
        with pytest.raises(config_lib.ConfigError, match=f"rollout.{key}"):
            config_lib.validate(bad)


def test_stop_sequence_hit_on_padded_tails():
    seqs, lens = sampling.pad_stop_sequences([[[5, 6, 7]], [[9], [1, 2]], []], 3, 2, 4)
    assert seqs.shape == (3, 2, 4) and lens.tolist() == [[3, 0], [1, 2], [0, 0]]
    np.testing.assert_array_equal(seqs[0, 0], [-1, 5, 6, 7])  # right-aligned
    tails = jnp.asarray([[4, 5, 6, 7], [-1, -1, 1, 2], [5, 6, 7, 9]], jnp.int32)
    hit = sampling.stop_sequence_hit(tails, jnp.asarray(seqs), jnp.asarray(lens))
    assert np.asarray(hit).tolist() == [True, True, False]
    tails = jnp.asarray([[-1, -1, 6, 7], [3, 1, 2, 9], [0, 0, 0, 0]], jnp.int32)  # too short
    hit = sampling.stop_sequence_hit(tails, jnp.asarray(seqs), jnp.asarray(lens))
    assert np.asarray(hit).tolist() == [False, True, False]
    with pytest.raises(ValueError, match="row 1 has 3 stop sequences"):
        sampling.pad_stop_sequences([[], [[1], [2], [3]]], 2, 2, 4)
    with pytest.raises(ValueError, match="row 0 stop sequence"):
        sampling.pad_stop_sequences([[[1] * 5]], 1, 2, 4)


def test_decode_phases_cover_every_step():
    assert decode_phases(12) == [(0, 12)]
    assert decode_phases(48) == [(0, 32), (32, 48)]
    assert decode_phases(128) == [(0, 32), (32, 64), (64, 96), (96, 128)]
    assert decode_phases(1000)[:2] == [(0, 125), (125, 250)] and len(decode_phases(1000)) == 8


# --- the decode loop on a tiny random model -------------------------------------------------

VOCAB, IMG, STOP = 96, 95, 94


class RawTokenizer:
    image_tokens_per_image = 4
    image_pad_id = IMG
    pad_id = 0
    stop_ids = (STOP,)


@pytest.fixture(scope="module")
def tiny():
    cfg = ModelConfig.tiny(VOCAB, IMG, num_layers=2, embed_dim=64, mlp_dim=128, num_heads=4,
                           num_kv_heads=2, head_dim=16, mrope_section=(2, 3, 3))
    model = Qwen25VL(cfg, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    scfg = SamplerConfig(max_context=64, max_new_tokens=40, prompt_buckets=(8,),
                         obs_buckets=(8,), max_images_per_chunk=0, image_size=56,
                         max_stop_sequences=2, max_stop_len=3, min_decode_window=8)
    return cfg, model, params, Sampler(graphdef, rest, cfg, RawTokenizer(), scfg)


def prompts_for(b, lengths, seed=0):
    """Left-aligned prompt chunk [B, 8] with per-row lengths (ids below STOP)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, STOP - 1, (b, 8)).astype(np.int32)
    valid = np.arange(8)[None] < np.asarray(lengths)[:, None]
    positions = np.broadcast_to(np.arange(8, dtype=np.int32), (3, b, 8)).copy()
    return tokens, positions, valid


def generate(sampler, params, tokens, positions, valid, **kw):
    b = tokens.shape[0]
    cfg = sampler.model_config
    cache = init_cache(cfg, b, sampler.config.max_context)
    patches = np.zeros((b, 0, 16, cfg.patch_dim), np.float32)
    first, cache = sampler._prefill(params, cache, tokens, positions, valid, patches)
    starts = jnp.asarray(valid.sum(1), jnp.int32)
    out = sampler.decode(params, cache, first, starts, jnp.ones((b,), bool),
                         jax.random.key(kw.pop("seed", 0)), **kw)
    return [np.asarray(x) if not hasattr(x, "k") else x for x in out]


def test_decode_equals_full_forward_and_cache_matches(tiny):
    """Greedy tokens are the argmax of a full no-cache forward over prompt + generated
    tokens, sampled log-probs equal the full forward's (tempered) log-probs, and the
    decode loop leaves the same keys in the cache as the model's own cached decode."""
    cfg, model, params, sampler = tiny
    forward = jax.jit(lambda *a: model(*a))  # the model as a constant; one trace per shape
    lengths = np.array([8, 5, 3])
    tokens, positions, valid = prompts_for(3, lengths)
    for kw in (dict(greedy=True), dict(temperature=0.8, seed=3)):
        out_tok, out_lp, n, cache, pos = generate(sampler, params, tokens, positions, valid, **kw)
        for b in range(3):
            seq = np.concatenate([tokens[b, :lengths[b]], out_tok[b, :n[b]]])
            seq = np.pad(seq, (0, 48 - len(seq)))  # one shape: trailing pads see nothing back
            logits, _ = forward(jnp.asarray(seq[None]),
                                jnp.broadcast_to(jnp.arange(48), (3, 1, 48)),
                                jnp.ones((1, 48), bool))
            logits = logits[:, :lengths[b] + n[b]]
            pred = np.asarray(logits[0, lengths[b] - 1:-1])  # predicts each generated token
            if kw.get("greedy"):
                np.testing.assert_array_equal(pred.argmax(-1), out_tok[b, :n[b]])
            else:
                ref = jax.nn.log_softmax(pred / 0.8, -1)[np.arange(n[b]), out_tok[b, :n[b]]]
                np.testing.assert_allclose(out_lp[b, :n[b]], ref, atol=2e-5)
        assert int(cache.index) == 8 + n.max() and (pos == lengths + n).all()

    # the cache after decode == the cache after feeding the same tokens to the model
    out_tok, _, n, cache, _ = generate(sampler, params, tokens, positions, valid, greedy=True)
    ref_cache = init_cache(cfg, 3, 64)
    _, ref_cache = forward(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(valid),
                           ref_cache)
    steps = int(n.max())
    pos = lengths[:, None] + np.arange(steps)[None]
    ok = np.arange(steps)[None] < n[:, None]
    for i in range(steps):  # the model writes one slot per call, as the decode loop
        _, ref_cache = forward(jnp.asarray(out_tok[:, i:i + 1]),
                               jnp.broadcast_to(jnp.asarray(pos[:, i:i + 1])[None], (3, 3, 1)),
                               jnp.asarray(ok[:, i:i + 1]), ref_cache)
    assert int(ref_cache.index) == int(cache.index)
    np.testing.assert_array_equal(np.asarray(cache.valid), np.asarray(ref_cache.valid))
    live = np.asarray(cache.valid)[None, :, :, None, None]
    np.testing.assert_allclose(np.asarray(cache.k) * live, np.asarray(ref_cache.k) * live,
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(cache.v) * live, np.asarray(ref_cache.v) * live,
                               atol=1e-5)


def test_truncated_sampler_logprobs_equal_the_learners(tiny):
    """With top-k and top-p on, the sampler's log-probs are what the learner recomputes
    (losses.token_logprobs with the same controls) on the full forward: ratio 1 on policy."""
    cfg, model, params, base = tiny
    sampler = Sampler(base.graphdef, base.rest, cfg, RawTokenizer(),
                      dataclasses.replace(base.config, top_k=6, top_p=0.85))
    tokens, positions, valid = prompts_for(2, [8, 6], seed=4)
    out_tok, out_lp, n, _, _ = generate(sampler, params, tokens, positions, valid,
                                        temperature=1.2, seed=7)
    for b, length in enumerate([8, 6]):
        seq = np.concatenate([tokens[b, :length], out_tok[b, :n[b]]])
        logits, _ = model(jnp.asarray(seq[None]),
                          jnp.broadcast_to(jnp.arange(len(seq)), (3, 1, len(seq))),
                          jnp.ones((1, len(seq)), bool))
        ref = losses.token_logprobs(logits, jnp.asarray(seq[None]), 1.2, top_k=6, top_p=0.85)
        np.testing.assert_allclose(out_lp[b, :n[b]], np.asarray(ref)[0, length:], atol=2e-5)
        plain = losses.token_logprobs(logits, jnp.asarray(seq[None]), 1.2)
        # truncation mattered: renormalised log-probs are larger
        assert np.all(np.asarray(plain)[0, length:] < out_lp[b, :n[b]] - 1e-4)


def first_end(row, seq):
    """Index just past the first occurrence of seq in row (None if absent)."""
    return next((i + len(seq) for i in range(len(row) - len(seq) + 1)
                 if row[i:i + len(seq)].tolist() == seq), None)


def test_rows_stop_exactly_after_their_own_stop_sequences(tiny):
    cfg, model, params, sampler = tiny
    tokens, positions, valid = prompts_for(4, [8, 8, 8, 8], seed=1)
    free, _, n_free, _, _ = generate(sampler, params, tokens, positions, valid, greedy=True)
    # Each row's stop sequence is a piece of what it generates unstopped (rows differ: a
    # 3-token, a 2-token with a decoy, a 1-token sequence, and none).
    pieces = {0: [free[0, 3:6].tolist()], 1: [[VOCAB - 5, VOCAB - 6], free[1, 9:11].tolist()],
              2: [free[2, 0:1].tolist()], 3: []}
    expect = {}
    for r, seqs in pieces.items():
        ends = [e for e in (first_end(free[r, :n_free[r]], s) for s in seqs) if e is not None]
        expect[r] = min(ends, default=n_free[r])
    assert expect[0] <= 6 and expect[1] <= 11 and expect[2] == 1 and expect[3] == n_free[3]
    assert n_free[:3].min() > 11, n_free  # the pieces were generated before any stop id
    out, _, n, _, _ = generate(sampler, params, tokens, positions, valid, greedy=True,
                               stop_sequences=[pieces[r] for r in range(4)])
    for r in range(4):
        assert n[r] == expect[r], (r, n[r], expect[r])
        np.testing.assert_array_equal(out[r, :n[r]], free[r, :n[r]])


def test_stop_sequence_spanning_the_prompt_boundary_does_not_trigger(tiny):
    cfg, model, params, sampler = tiny
    tokens, positions, valid = prompts_for(2, [8, 8], seed=2)
    free, _, n_free, _, _ = generate(sampler, params, tokens, positions, valid, greedy=True)
    # last prompt token + first generated token: matched across the boundary it would stop
    # the row after 1 token; only occurrences inside the generated tokens (ending at ≥ 2)
    # may stop it.
    stops = [[[int(tokens[r, -1]), int(free[r, 0])]] for r in range(2)]
    expect = [first_end(free[r, :n_free[r]], stops[r][0]) or n_free[r] for r in range(2)]
    _, _, n, _, _ = generate(sampler, params, tokens, positions, valid, greedy=True,
                             stop_sequences=stops)
    assert min(expect) >= 2
    np.testing.assert_array_equal(n, expect)


def test_single_stop_ids_still_stop_and_no_recompilation(tiny):
    cfg, model, params, sampler = tiny
    tokens, positions, valid = prompts_for(3, [8, 6, 7], seed=3)
    generate(sampler, params, tokens, positions, valid, greedy=True)
    generate(sampler, params, tokens, positions, valid, temperature=1.0)
    warm = sampler.compilations()  # greedy and sampled decode loops for this batch
    # other stop sequence values, temperatures and rng: the same executables
    for stops, kw in [([[[1, 2]], [[3]], []], dict(temperature=0.7)),
                      ([[[4, 5, 6], [7]], [], [[8]]], dict(greedy=True)),
                      (None, dict(temperature=1.3, seed=9))]:
        generate(sampler, params, tokens, positions, valid, stop_sequences=stops, **kw)
    assert sampler.compilations() == warm
    # the tokenizer's single stop id ends a row right after it (kept in the output)
    rows = []
    for seed in range(40):
        out, _, n, _, _ = generate(sampler, params, tokens, positions, valid,
                                   temperature=3.0, seed=seed)
        for r in range(3):
            hits = np.flatnonzero(out[r, :40] == STOP)
            if hits.size:
                rows.append((hits[0], n[r]))
        if len(rows) >= 3:
            break
    assert rows and all(n == h + 1 for h, n in rows), rows
    assert sampler.compilations() == warm


def test_decode_refuses_to_overflow_the_cache(tiny):
    cfg, model, params, sampler = tiny
    cache = dataclasses.replace(init_cache(cfg, 1, 64), index=jnp.asarray(30, jnp.int32))
    with pytest.raises(ValueError, match="slot 30 needs 40 more"):
        sampler.decode(params, cache, jnp.zeros((1, VOCAB)), jnp.zeros((1,), jnp.int32),
                       jnp.ones((1,), bool), jax.random.key(0))
