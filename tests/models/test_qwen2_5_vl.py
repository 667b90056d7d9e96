"""Qwen2.5-VL model: slot-cache decode == full forward, image placeholders, host-side
preprocessing and positions against transformers, and logits against HF on a tiny config."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vista_jax.models import (KVCache, ModelConfig, Qwen25VL, init_cache, mrope_positions,
                              preprocess_image, qwen2_5_vl_3b, qwen2_5_vl_7b)
from vista_jax.models.hf_convert import hf_config_from, load_hf_weights, model_config_from_hf

VOCAB, IMG, V_START, V_END = 256, 250, 252, 253
GRID = 4  # 56 px images: 4x4 patches -> 2x2 merged -> 4 image tokens
MERGED = (1, GRID // 2, GRID // 2)
TOKENS_PER_IMAGE = 4


@nnx.jit
def forward(model, tokens, positions, valid, cache, image_embeds):
    return model(tokens, positions, valid, cache, image_embeds=image_embeds)


@pytest.fixture(scope="module")
def model():
    return Qwen25VL(ModelConfig.tiny(VOCAB, IMG), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def image_embeds(model):
    """Embeddings of 4 random images: [4, 4, D]."""
    pix = np.random.default_rng(1).normal(size=(4, GRID * GRID, model.config.patch_dim))
    return nnx.jit(lambda m, p: m.encode_images(p, grid_hw=(GRID, GRID)))(
        model, jnp.asarray(pix, jnp.float32))


def image_run(rng) -> list[int]:
    return [V_START] + [IMG] * TOKENS_PER_IMAGE + [V_END] + list(rng.integers(3, 200, 1))


# --- a slot-cache script and its compacted reference ------------------------------------------


def run_script(model, calls, row_images, max_len=48):
    """Runs `calls` through one slot cache. calls: list of per-row slot lists (a token id, or
    None for a padding slot); row b's images are row_images[b] in order ([k, 4, D] each).
    Returns per-call logits [B, T, V] and per-row compacted (ids, positions, images)."""
    b = len(row_images)
    cache = init_cache(model.config, b, max_len)
    starts = np.zeros(b, np.int64)
    used = [0] * b
    compact = [([], [], []) for _ in range(b)]
    outputs = []
    for call in calls:
        t = max(len(slots) for slots in call)
        tokens = np.zeros((b, t), np.int32)
        valid = np.zeros((b, t), bool)
        positions = np.zeros((3, b, t), np.int32)
        embeds = []
        for r, slots in enumerate(call):
            ids = [s for s in slots if s is not None]
            n_img = ids.count(IMG) // TOKENS_PER_IMAGE
            pos, starts[r] = mrope_positions(ids, [MERGED] * n_img, int(starts[r]),
                                             image_pad_id=IMG)
            where = [i for i, s in enumerate(slots) if s is not None]
            tokens[r, where], valid[r, where], positions[:, r, where] = ids, True, pos
            imgs = [row_images[r][used[r] + k] for k in range(n_img)]
            used[r] += n_img
            embeds.append(imgs)
            compact[r][0].extend(ids), compact[r][1].append(pos), compact[r][2].extend(imgs)
        m = max(len(e) for e in embeds)
        emb = None
        if m:
            d = model.config.embed_dim
            emb = np.zeros((b, m * TOKENS_PER_IMAGE, d), np.float32)
            for r, imgs in enumerate(embeds):
                for k, e in enumerate(imgs):
                    emb[r, k * TOKENS_PER_IMAGE:(k + 1) * TOKENS_PER_IMAGE] = e
        logits, cache = forward(model, jnp.asarray(tokens), jnp.asarray(positions),
                                jnp.asarray(valid), cache, emb)
        outputs.append((np.asarray(logits), valid))
    assert int(cache.index) == sum(max(len(s) for s in call) for call in calls)
    rows = [(np.array(ids, np.int32), np.concatenate(pos, axis=1), imgs)
            for ids, pos, imgs in compact]
    return outputs, rows


def full_forward(model, rows):
    """No-cache forward over the compacted rows (right-padded). Returns logits [B, L, V]."""
    b, length = len(rows), max(len(ids) for ids, _, _ in rows)
    tokens = np.zeros((b, length), np.int32)
    positions = np.zeros((3, b, length), np.int32)
    valid = np.zeros((b, length), bool)
    m = max(len(imgs) for _, _, imgs in rows)
    emb = np.zeros((b, max(m, 1) * TOKENS_PER_IMAGE, model.config.embed_dim), np.float32)
    for r, (ids, pos, imgs) in enumerate(rows):
        tokens[r, :len(ids)], positions[:, r, :len(ids)], valid[r, :len(ids)] = ids, pos, True
        for k, e in enumerate(imgs):
            emb[r, k * TOKENS_PER_IMAGE:(k + 1) * TOKENS_PER_IMAGE] = e
        # Positions of the compacted row equal those computed over it in one go.
        n_img = list(ids).count(IMG) // TOKENS_PER_IMAGE
        np.testing.assert_array_equal(
            pos, mrope_positions(ids, [MERGED] * n_img, 0, image_pad_id=IMG)[0])
    logits, _ = forward(model, jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(valid),
                        None, emb)
    return np.asarray(logits)


def assert_script_matches_full_forward(model, calls, row_images):
    outputs, rows = run_script(model, calls, row_images)
    ref = full_forward(model, rows)
    seen = np.zeros(len(rows), np.int64)
    for logits, valid in outputs:
        assert np.isfinite(logits).all()
        for r in range(len(rows)):
            for t in np.flatnonzero(valid[r]):
                np.testing.assert_allclose(logits[r, t], ref[r, seen[r]], atol=1e-5, rtol=1e-5)
                seen[r] += 1
    assert [int(s) for s in seen] == [len(ids) for ids, _, _ in rows]


def test_decode_with_padding_slots_matches_full_forward(model, image_embeds):
    rng = np.random.default_rng(0)
    text = lambda n: list(rng.integers(3, 200, n))  # noqa: E731
    prompt = [
        text(3) + image_run(rng) + text(2),  # 12 slots, all valid
        text(6) + [None] * 6,  # a shorter prompt: padding at the end
        text(2) + [None, None] + image_run(rng) + text(1) + [None],  # padding in the middle
    ]
    decode_valid = [[1, 1, 1, 1, 1, 1], [1, 1, 0, 1, 1, 0], [1, 1, 0, 0, 1, 1]]
    calls = [prompt] + [[[int(rng.integers(3, 200))] if decode_valid[r][step] else [None]
                         for r in range(3)] for step in range(6)]
    images = [[image_embeds[0]], [], [image_embeds[1]]]
    assert_script_matches_full_forward(model, calls, images)


def test_chunked_prefill_matches_full_forward(model, image_embeds):
    """Prompt, then a 5-token chunk in one call (a tool observation, with an image in row 1),
    then decode: the same logits as one causal forward over each compacted row."""
    rng = np.random.default_rng(1)
    text = lambda n: list(rng.integers(3, 200, n))  # noqa: E731
    prompt = [text(2) + image_run(rng) + text(2), text(10) + [None, None],
              text(4) + [None] * 8]
    observation = [text(5), [IMG] * 4 + [V_END], text(3) + [None, None]]
    decode = [[[int(rng.integers(3, 200))] for _ in range(3)] for _ in range(2)]
    images = [[image_embeds[2]], [image_embeds[3]], []]
    assert_script_matches_full_forward(model, [prompt, observation] + decode, images)


def test_image_embeds_only_change_logits_from_the_image_on(model, image_embeds):
    rng = np.random.default_rng(2)
    ids = list(rng.integers(3, 200, 3)) + image_run(rng) + list(rng.integers(3, 200, 4))
    first_image = ids.index(IMG)
    pos, _ = mrope_positions(ids, [MERGED], 0, image_pad_id=IMG)
    args = (jnp.asarray([ids], jnp.int32), jnp.asarray(pos)[:, None], jnp.ones((1, len(ids)), bool))
    a, _ = forward(model, *args, None, image_embeds[None, 0])
    b, _ = forward(model, *args, None, image_embeds[None, 1])
    diff = np.abs(np.asarray(a) - np.asarray(b)).max(axis=-1)[0]  # [T]
    assert (diff[:first_image] == 0).all()
    assert (diff[first_image:] > 1e-4).all()
    # Without image_embeds the placeholders are ordinary token embeddings.
    c, _ = forward(model, *args, None, None)
    assert np.abs(np.asarray(c) - np.asarray(a))[0, first_image:].max() > 1e-4


def test_merge_image_embeds_fills_placeholders_in_order():
    from vista_jax.models.qwen2_5_vl import merge_image_embeds

    tokens = jnp.asarray([[IMG, 1, IMG, IMG], [1, 1, 1, IMG]], jnp.int32)
    x = jnp.zeros((2, 4, 1))
    images = jnp.asarray([[10.0, 11.0, 12.0], [20.0, 21.0, 22.0]])[:, :, None]  # [B, M=3, D=1]
    out = merge_image_embeds(x, tokens, images, IMG)[..., 0]
    np.testing.assert_array_equal(out, [[10, 0, 11, 12], [0, 0, 0, 20]])


def test_shapes_and_no_nans_for_padding_rows(model):
    cfg = model.config
    tokens = jnp.asarray(np.random.default_rng(3).integers(3, 200, (3, 7)), jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(7, dtype=jnp.int32), (3, 3, 7))
    valid = jnp.asarray([[1] * 7, [0] * 7, [0, 0, 0, 1, 1, 1, 1]], bool)  # full, empty, left-padded
    logits, cache = forward(model, tokens, positions, valid, None, None)
    assert logits.shape == (3, 7, cfg.vocab_size) and logits.dtype == jnp.float32
    assert cache is None and np.isfinite(np.asarray(logits)).all()

    cache = init_cache(cfg, 3, 16)
    assert cache.k.shape == (cfg.num_layers, 3, 16, cfg.num_kv_heads, cfg.head_dim)
    logits, cache = forward(model, tokens, positions, valid, cache, None)
    assert isinstance(cache, KVCache) and int(cache.index) == 7
    np.testing.assert_array_equal(np.asarray(cache.valid[:, :7]), np.asarray(valid))
    assert not np.asarray(cache.valid[:, 7:]).any()
    assert np.isfinite(np.asarray(logits)).all()
    step, cache = forward(model, tokens[:, :1], positions[:, :, :1], jnp.zeros((3, 1), bool),
                          cache, None)
    assert step.shape == (3, 1, cfg.vocab_size) and np.isfinite(np.asarray(step)).all()


def test_jit_through_split_merge(model, image_embeds):
    graphdef, state = nnx.split(model)

    @jax.jit
    def f(state, tokens, positions, valid, emb):
        return nnx.merge(graphdef, state)(tokens, positions, valid, None, image_embeds=emb)[0]

    ids = [5, 6] + [IMG] * 4 + [7]
    pos, _ = mrope_positions(ids, [MERGED], 0, image_pad_id=IMG)
    args = (jnp.asarray([ids], jnp.int32), jnp.asarray(pos)[:, None], jnp.ones((1, 7), bool),
            image_embeds[None, 0])
    ref = forward(model, *args[:3], None, args[3])[0]
    np.testing.assert_allclose(f(state, *args), ref, atol=1e-6)
    # encode_images with a non-square static grid (6 x 4 patches).
    emb = nnx.jit(lambda m, p: m.encode_images(p, grid_hw=(6, 4)))(
        model, jnp.ones((2, 24, model.config.patch_dim)))
    assert emb.shape == (2, 6, model.config.embed_dim)


# --- config ----------------------------------------------------------------------------------


def test_config_validation_and_presets():
    cfg = ModelConfig.tiny(VOCAB, IMG)
    assert ModelConfig.from_dict({**cfg.to_dict(), "mrope_section": [4, 6, 6]}) == cfg
    with pytest.raises(ValueError, match="mrope_section"):
        dataclasses.replace(cfg, mrope_section=(4, 4, 4))
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({"vocab_size": 10, "hidden": 3})
    # Exact parameter counts of the released checkpoints (HF model cards: 3.75B / 8.29B).
    for preset, count in ((qwen2_5_vl_3b(), 3_754_622_976), (qwen2_5_vl_7b(), 8_292_166_656)):
        abstract = nnx.eval_shape(lambda p=preset: Qwen25VL(p, rngs=nnx.Rngs(0)))
        assert sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param))) == count


# --- host-side preprocessing against transformers ----------------------------------------------


def hf_model(**ours):
    """A random torch HF model built from `ModelConfig.tiny(VOCAB, IMG, num_layers=2, **ours)`
    (fields in our names)."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")

    cfg = ModelConfig.tiny(VOCAB, IMG, num_layers=2, **ours)
    config = hf_config_from(cfg, video_token_id=251, vision_start_token_id=V_START,
                            vision_end_token_id=V_END, max_position_embeddings=1024)
    torch.manual_seed(0)
    return transformers.Qwen2_5_VLForConditionalGeneration(config).eval()


def test_mrope_positions_match_hf_get_rope_index():
    import torch

    hf = hf_model()
    rng = np.random.default_rng(4)
    grids = [(1, 2, 2), (1, 3, 2), (1, 2, 4)]  # merged grids
    ids = []
    for g in grids:
        ids += list(rng.integers(3, 200, 3)) + [V_START] + [IMG] * int(np.prod(g)) + [V_END]
    ids += list(rng.integers(3, 200, 4))
    hf_grids = torch.tensor([[t, 2 * h, 2 * w] for t, h, w in grids])  # patch grids
    input_ids = torch.tensor([ids])
    hf_pos, _ = hf.model.get_rope_index(input_ids, (input_ids == IMG).int(),
                                        image_grid_thw=hf_grids)
    pos, next_start = mrope_positions(ids, grids, 0, image_pad_id=IMG)
    np.testing.assert_array_equal(pos, hf_pos[:, 0].numpy())
    assert next_start == pos.max() + 1

    # Chunks compose when split anywhere outside an image.
    for cut in (4, ids.index(V_END) + 1, len(ids) - 2):
        n_first = ids[:cut].count(IMG)
        k = next(i for i in range(len(grids) + 1)
                 if sum(int(np.prod(g)) for g in grids[:i]) == n_first)
        a, s = mrope_positions(ids[:cut], grids[:k], 0, image_pad_id=IMG)
        b, s2 = mrope_positions(ids[cut:], grids[k:], s, image_pad_id=IMG)
        np.testing.assert_array_equal(np.concatenate([a, b], axis=1), pos)
        assert s2 == next_start
    with pytest.raises(ValueError):
        mrope_positions([IMG] * 3, [(1, 2, 2)], 0, image_pad_id=IMG)


def test_preprocess_image_matches_hf_processor():
    pytest.importorskip("transformers")
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil)

    rng = np.random.default_rng(5)
    odd = Image.fromarray(rng.integers(0, 256, (61, 97, 3), dtype=np.uint8))
    size = 84
    patches, grid = preprocess_image(odd, size)
    assert patches.shape == ((size // 14) ** 2, 3 * 2 * 14 * 14) and patches.dtype == np.float32
    assert grid == (1, size // 14, size // 14)
    processor = Qwen2VLImageProcessorPil()
    resized = odd.resize((size, size), Image.Resampling.BICUBIC)
    out = processor(images=[resized], return_tensors="np")
    np.testing.assert_allclose(patches, out["pixel_values"], atol=1e-5)
    np.testing.assert_array_equal(out["image_grid_thw"], [grid])

    # A square image resized by HF itself (pixel budget pinned to image_size**2).
    square = Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
    processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56)
    out = processor(images=[square], return_tensors="np")
    np.testing.assert_allclose(preprocess_image(square, 56)[0], out["pixel_values"], atol=1e-5)


# --- logits against transformers ------------------------------------------------------------


def test_logits_match_hf_qwen2_5_vl():
    """Vision tower (with window attention: 56 px windows on an 8x6-patch grid) and decoder
    logits of a tiny random HF model with perturbed weights equal ours."""
    import torch

    hf = hf_model(vision_window_size=56, vision_fullatt_block_indexes=(1,))
    with torch.no_grad():  # larger than the 0.02 init so every piece moves the logits
        for name, p in hf.named_parameters():
            noise = 0.1 * torch.randn_like(p)
            p.copy_(1 + noise if ("norm" in name or "ln_q" in name) else noise)
    cfg = ModelConfig.tiny(VOCAB, IMG, num_layers=2, vision_window_size=56,
                           vision_fullatt_block_indexes=(1,))
    assert model_config_from_hf(hf.config) == cfg
    model = Qwen25VL(cfg, rngs=nnx.Rngs(0))
    load_hf_weights(model, hf)

    gh, gw = 8, 6
    pix = np.random.default_rng(6).normal(size=(2, gh * gw, cfg.patch_dim)).astype(np.float32)
    emb = np.asarray(model.encode_images(jnp.asarray(pix), grid_hw=(gh, gw)))  # [2, 12, D]
    n_img = gh * gw // 4
    ids = [5, 6, V_START] + [IMG] * n_img + [V_END, 7, 8, V_START] + [IMG] * n_img + [V_END, 9]
    input_ids = torch.tensor([ids])
    grid_thw = torch.tensor([[1, gh, gw]] * 2)
    with torch.no_grad():
        hf_emb = hf.model.visual(torch.tensor(pix.reshape(-1, cfg.patch_dim)),
                                 grid_thw=grid_thw).pooler_output.numpy()
        pixel_values = torch.tensor(pix.reshape(-1, cfg.patch_dim))
        hf_logits = hf(input_ids=input_ids, pixel_values=pixel_values, image_grid_thw=grid_thw,
                       mm_token_type_ids=(input_ids == IMG).int()).logits.numpy()
    np.testing.assert_allclose(emb.reshape(hf_emb.shape), hf_emb, atol=5e-5, rtol=1e-5)

    pos, _ = mrope_positions(ids, [(1, gh // 2, gw // 2)] * 2, 0, image_pad_id=IMG)
    logits, _ = model(jnp.asarray([ids], jnp.int32), jnp.asarray(pos)[:, None],
                      jnp.ones((1, len(ids)), bool), None,
                      image_embeds=jnp.asarray(emb.reshape(1, -1, cfg.embed_dim)))
    np.testing.assert_allclose(np.asarray(logits), hf_logits, atol=5e-5, rtol=1e-5)


def test_logits_at_gathers_one_position_per_row(model):
    """`logits_at` (the prefill's one position per row) equals the full logits there, with
    and without a cache."""
    rng = np.random.default_rng(3)
    tokens = jnp.asarray(rng.integers(3, 200, (3, 9)), jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(9, dtype=jnp.int32), (3, 3, 9))
    valid = jnp.ones((3, 9), bool)
    at = jnp.asarray([8, 0, 4], jnp.int32)
    full, _ = model(tokens, positions, valid)
    some, _ = model(tokens, positions, valid, logits_at=at)
    assert some.shape == (3, 1, full.shape[-1])
    np.testing.assert_allclose(some[:, 0], full[jnp.arange(3), at], atol=1e-6)
    cached, cache = model(tokens, positions, valid, init_cache(model.config, 3, 16), logits_at=at)
    np.testing.assert_allclose(cached[:, 0], full[jnp.arange(3), at], atol=1e-5)
    assert int(cache.index) == 9
