"""Images of any size: `smart_resize` and dynamic-resolution preprocessing bit-exact against
HF's processor, the per-image patch tables, several images of different grids in one
`encode_images_varlen` call, and the placeholder/feature count checks."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from vista_jax.models import vision
from vista_jax.models.qwen2_5_vl import ModelConfig, Qwen25VL

VOCAB, IMG = 256, 250
MIN_PIXELS, MAX_PIXELS = 56 * 56, 28 * 28 * 16  # small budgets: grids from 2x2 to 8x8 patches


def random_image(h: int, w: int, seed: int, mode: str = "RGB") -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    x = np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)
    return Image.fromarray(x[..., 0] if channels == 1 else x, mode)


# --- smart_resize and preprocessing against transformers ----------------------------------------


def test_smart_resize_matches_hf():
    hf_vision = pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")
    rng = np.random.default_rng(0)
    sizes = [(61, 97), (300, 45), (640, 480), (29, 29), (10, 12), (1, 150), (28, 28), (42, 70),
             (2000, 3000), (14, 2800), (4000, 4000)]
    sizes += [tuple(int(v) for v in rng.integers(1, 2500, 2)) for _ in range(300)]
    budgets = [(vision.HF_MIN_PIXELS, vision.HF_MAX_PIXELS), (MIN_PIXELS, MAX_PIXELS),
               (3136, 12845056), (100, 200)]
    checked = 0
    for h, w in sizes:
        for lo, hi in budgets:
            try:
                want = hf_vision.smart_resize(h, w, 28, lo, hi)
            except ValueError:
                with pytest.raises(ValueError, match="aspect ratio"):
                    vision.smart_resize(h, w, 28, lo, hi)
                continue
            assert vision.smart_resize(h, w, 28, lo, hi) == want, (h, w, lo, hi)
            checked += 1
    assert checked > 1000
    with pytest.raises(ValueError, match="aspect ratio must be smaller than 200, got 201"):
        vision.smart_resize(1, 201)
    with pytest.raises(ValueError, match="height=0"):
        vision.smart_resize(0, 5)


@pytest.mark.parametrize("hw,mode", [((61, 97), "RGB"), ((300, 45), "RGB"), ((480, 640), "RGB"),
                                     ((29, 29), "RGB"), ((10, 12), "RGB"), ((97, 61), "RGBA"),
                                     ((50, 90), "L")])
def test_dynamic_preprocess_equals_hf_processor_bit_for_bit(hw, mode):
    """Odd sizes, one far below min_pixels, one above max_pixels, alpha and grayscale: the
    patches and grid equal `Qwen2VLImageProcessorPil`'s exactly (not merely to eps)."""
    pytest.importorskip("transformers")
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil)

    image = random_image(*hw, seed=hw[0] * 1000 + hw[1], mode=mode)
    for lo, hi in ((MIN_PIXELS, MAX_PIXELS), (vision.HF_MIN_PIXELS, vision.HF_MAX_PIXELS)):
        out = Qwen2VLImageProcessorPil(min_pixels=lo, max_pixels=hi)(images=[image],
                                                                      return_tensors="np")
        patches, grid = vision.preprocess_image(image, min_pixels=lo, max_pixels=hi)
        np.testing.assert_array_equal(out["image_grid_thw"], [grid])
        assert patches.dtype == np.float32 and patches.shape == out["pixel_values"].shape
        np.testing.assert_array_equal(patches, out["pixel_values"])
        rh, rw = vision.smart_resize(*hw, 28, lo, hi)
        assert grid == (1, rh // 14, rw // 14)


def test_fixed_square_preprocess_is_exact_too():
    pytest.importorskip("transformers")
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil)

    image = random_image(61, 97, seed=1)
    patches, grid = vision.preprocess_image(image, 84)
    assert grid == (1, 6, 6)
    square = image.resize((84, 84), Image.Resampling.BICUBIC)
    out = Qwen2VLImageProcessorPil()(images=[square], return_tensors="np")
    np.testing.assert_array_equal(patches, out["pixel_values"])


def test_preprocess_modes_are_explicit():
    image = random_image(40, 40, seed=2)
    for kwargs in ({}, {"image_size": 56, "min_pixels": 10, "max_pixels": 100},
                   {"min_pixels": 3136}, {"max_pixels": 3136}):
        with pytest.raises(ValueError, match="image_size .* or both min_pixels and max_pixels"):
            vision.preprocess_image(image, **kwargs)
    with pytest.raises(ValueError, match="image_size 50"):
        vision.preprocess_image(image, 50)
    with pytest.raises(ValueError, match="min_pixels=5000, max_pixels=100"):
        vision.preprocess_image(image, min_pixels=5000, max_pixels=100)
    with pytest.raises(ValueError, match="aspect ratio"):
        vision.preprocess_image(random_image(1, 300, seed=3), min_pixels=3136, max_pixels=10 ** 6)
    with pytest.raises(ValueError, match="PIL image"):
        vision.preprocess_image(np.zeros((4, 4), np.float32), 28)


# --- static tables and checks ------------------------------------------------------------------


def test_patch_tables_restart_per_image_and_never_share_windows():
    grids = ((1, 4, 6), (1, 6, 4), (1, 8, 8))
    pos, img, win = vision.vision_patch_tables(grids, window_size=56)
    assert pos.shape == (24 + 24 + 64, 2) and img.shape == win.shape == (112,)
    np.testing.assert_array_equal(img, np.repeat([0, 1, 2], [24, 24, 64]))
    np.testing.assert_array_equal(pos[24:48], vision.vision_patch_positions(6, 4))
    np.testing.assert_array_equal(win[48:] - win[48],
                                  vision.vision_window_ids(8, 8, window_size=56))
    for i in range(3):  # window ids of different images are disjoint
        for j in range(i):
            assert not set(win[img == i]) & set(win[img == j])
    # 56 px windows are 4x4 patches: a 4x6 grid has 2 windows, a 6x4 grid 2, an 8x8 grid 4.
    assert [len(set(win[img == i])) for i in range(3)] == [2, 2, 4]
    with pytest.raises(ValueError, match="only still images"):
        vision.check_grids([(2, 4, 4)])
    with pytest.raises(ValueError, match="multiples of merge_size 2"):
        vision.check_grids([(1, 4, 5)])
    assert vision.merged_grid((1, 8, 6)) == (1, 4, 3)


def test_check_image_tokens_names_both_counts():
    tokens = [1, IMG, IMG, 2, IMG, 3]
    assert vision.check_image_tokens(tokens, 3, image_pad_id=IMG) == 3
    with pytest.raises(ValueError, match="3 image placeholder tokens but 4 image feature rows"):
        vision.check_image_tokens(np.asarray(tokens), 4, image_pad_id=IMG)
    with pytest.raises(ValueError, match="0 image placeholder tokens but 2 image feature rows"):
        vision.check_image_tokens([1, 2], 2, image_pad_id=IMG)


# --- several grids in one encode call -----------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    cfg = ModelConfig.tiny(VOCAB, IMG, num_layers=1, vision_num_layers=3, vision_window_size=56,
                           vision_fullatt_block_indexes=(1,))
    m = Qwen25VL(cfg, rngs=nnx.Rngs(0))
    # Larger-than-init weights so that cross-image leaks would show well above float noise.
    state = nnx.state(m, nnx.Param)
    keys = iter(np.random.default_rng(7).integers(0, 2 ** 31, len(nnx.to_flat_state(state))))
    nnx.update(m, nnx.map_state(lambda _, v: v + 0.1 * jnp.asarray(
        np.random.default_rng(next(keys)).normal(size=v.shape), v.dtype), state))
    return m


GRIDS = ((1, 4, 6), (1, 6, 4), (1, 8, 8))


def varlen_inputs(model, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(h * w, model.config.patch_dim)).astype(np.float32)
            for _, h, w in GRIDS]


def test_varlen_equals_each_image_encoded_alone(model):
    images = varlen_inputs(model)
    enc = nnx.jit(lambda m, p, grids: m.encode_images_varlen(p, grids), static_argnums=2)
    out = np.asarray(enc(model, jnp.asarray(np.concatenate(images)), GRIDS))
    assert out.shape == (sum(h * w for _, h, w in GRIDS) // 4, model.config.embed_dim)
    start = 0
    for (_, h, w), pix in zip(GRIDS, images):
        alone = np.asarray(model.encode_images(jnp.asarray(pix[None]), grid_hw=(h, w)))[0]
        # float32 summation order differs between the packed and the single-image programs:
        # ~4e-6 on values of O(1) on an AMD EPYC host (2e-6 held on the machines before)
        np.testing.assert_allclose(out[start:start + h * w // 4], alone, atol=1e-5, rtol=1e-5)
        start += h * w // 4
    # Changing image 0 leaves the features of images 1 and 2 as they were.
    images[0] = images[0] + 1.0
    changed = np.asarray(enc(model, jnp.asarray(np.concatenate(images)), GRIDS))
    assert np.abs(changed[:6] - out[:6]).max() > 1e-2
    np.testing.assert_allclose(changed[6:], out[6:], atol=1e-6)


def test_single_grid_batch_is_the_varlen_special_case(model):
    """encode_images over N images of one grid == encode_images_varlen of the N concatenated."""
    pix = np.random.default_rng(3).normal(size=(3, 48, model.config.patch_dim)).astype(np.float32)
    batch = np.asarray(model.encode_images(jnp.asarray(pix), grid_hw=(8, 6)))  # [3, 12, D]
    flat = np.asarray(model.encode_images_varlen(jnp.asarray(pix.reshape(-1, pix.shape[-1])),
                                                 ((1, 8, 6),) * 3))
    np.testing.assert_allclose(flat, batch.reshape(flat.shape), atol=2e-6, rtol=1e-5)


def test_varlen_rejects_bad_shapes(model):
    pix = jnp.zeros((30, model.config.patch_dim))
    with pytest.raises(ValueError, match=r"should be \[24, 1176\]"):
        model.encode_images_varlen(pix, ((1, 4, 6),))
    with pytest.raises(ValueError, match="only still images"):
        model.encode_images_varlen(pix, ((2, 4, 4),))


def test_eager_forward_rejects_more_placeholders_than_features(model):
    tokens = jnp.asarray([[1, IMG, IMG, IMG, 2]], jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(5, dtype=jnp.int32), (3, 1, 5))
    emb = jnp.zeros((1, 2, model.config.embed_dim))
    with pytest.raises(ValueError, match="3 image placeholder tokens but 2 image feature rows"):
        model(tokens, pos, jnp.ones((1, 5), bool), None, image_embeds=emb)
