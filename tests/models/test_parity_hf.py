"""Logits parity with transformers' `Qwen2_5_VLForConditionalGeneration` (torch CPU, fp32)
on a tiny random config with perturbed weights, through the whole image path: HF's
processor on the HF side, our `preprocess_image` (dynamic resolution) +
`encode_images_varlen` + `mrope_positions` on ours. Four cases, each max |logits diff|
<= 1e-4: text only, one image, three images of different grids, and a multi-turn
tool-use conversation whose tool response carries a cropped image of another size.
The measured diffs are printed (run with -s) and recorded in MEASURED."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from vista_jax.models import vision
from vista_jax.models.qwen2_5_vl import ModelConfig, Qwen25VL

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (  # noqa: E402
    Qwen2VLImageProcessorPil)

from vista_jax.models.hf_convert import hf_config_from, load_hf_weights  # noqa: E402

VOCAB, IMG, VIDEO, V_START, V_END = 256, 250, 251, 252, 253
# ChatML / protocol tags as single ids of the tiny vocab (text ids are drawn from 3..199).
IM_START, IM_END, NL, TOOL_CALL, TOOL_CALL_END, TOOL_RESP, TOOL_RESP_END = range(240, 247)
ANSWER, ANSWER_END = 247, 248
SYSTEM, USER, ASSISTANT = 200, 201, 202
MIN_PIXELS, MAX_PIXELS = 56 * 56, 28 * 28 * 16  # grids between 2x2 and 8x8 patches
TOL = 1e-4
MEASURED: dict[str, float] = {}


@pytest.fixture(scope="module")
def models():
    cfg = ModelConfig.tiny(VOCAB, IMG, embed_dim=64, num_layers=2, num_heads=2, num_kv_heads=1,
                           head_dim=32, mlp_dim=128, vision_num_layers=4, vision_window_size=56,
                           vision_fullatt_block_indexes=(1, 3))
    hf_cfg = hf_config_from(cfg, video_token_id=VIDEO, vision_start_token_id=V_START,
                            vision_end_token_id=V_END, max_position_embeddings=1024)
    torch.manual_seed(0)
    hf = transformers.Qwen2_5_VLForConditionalGeneration(hf_cfg).eval()
    with torch.no_grad():  # larger than the 0.02 init so every piece moves the logits
        for name, p in hf.named_parameters():
            noise = 0.1 * torch.randn_like(p)
            p.copy_(1 + noise if ("norm" in name or "ln_q" in name) else noise)
    ours = Qwen25VL(cfg, rngs=nnx.Rngs(0))
    load_hf_weights(ours, hf)
    return hf, ours


def smooth_image(h: int, w: int, seed: int) -> Image.Image:
    """A random image with some structure (bicubic upsampling of coarse noise)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)


def text(rng, n: int) -> list[int]:
    return [int(t) for t in rng.integers(3, 200, n)]


def image_run(grid_thw) -> list[int]:
    t, h, w = vision.merged_grid(grid_thw)
    return [V_START] + [IMG] * (t * h * w) + [V_END]


def compare(models, case: str, ids: list[int], images: list[Image.Image]) -> float:
    """Logits of one sequence by HF and by us; returns (and records) the max abs diff."""
    hf, ours = models
    kwargs = {}
    emb = None
    if images:
        out = Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)(
            images=images, return_tensors="np")
        ours_pre = [vision.preprocess_image(im, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
                    for im in images]
        grids = tuple(g for _, g in ours_pre)
        patches = np.concatenate([p for p, _ in ours_pre])
        np.testing.assert_array_equal(out["image_grid_thw"], grids)
        np.testing.assert_array_equal(patches, out["pixel_values"])
        feats = ours.encode_images_varlen(jnp.asarray(patches), grids)  # [M, D]
        vision.check_image_tokens(ids, feats.shape[0], image_pad_id=IMG)
        emb = feats[None]  # [1, M, D]
        kwargs = dict(pixel_values=torch.tensor(out["pixel_values"]),
                      image_grid_thw=torch.tensor(out["image_grid_thw"]))
        merged = [vision.merged_grid(g) for g in grids]
    else:
        merged = []
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        want = hf(input_ids=input_ids, mm_token_type_ids=(input_ids == IMG).int(),
                  **kwargs).logits.numpy()[0]
    pos, _ = vision.mrope_positions(ids, merged, 0, image_pad_id=IMG)
    got, _ = ours(jnp.asarray([ids], jnp.int32), jnp.asarray(pos)[:, None],
                  jnp.ones((1, len(ids)), bool), None, image_embeds=emb)
    got = np.asarray(got)[0]
    assert np.isfinite(got).all() and got.shape == want.shape
    diff = float(np.abs(got - want).max())
    MEASURED[case] = diff
    print(f"\n{case}: {len(ids)} tokens, {len(images)} images, max |logits diff| {diff:.3g} "
          f"(logits scale {np.abs(want).max():.3g})")
    assert diff <= TOL, (case, diff)
    return diff


def test_text_only(models):
    rng = np.random.default_rng(0)
    compare(models, "text_only", text(rng, 40), [])


def test_one_image(models):
    rng = np.random.default_rng(1)
    image = smooth_image(300, 45, seed=1)  # tall and thin: a 20x2-patch grid, ragged windows
    grid = vision.preprocess_image(image, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)[1]
    assert grid == (1, 20, 2)
    compare(models, "one_image", text(rng, 4) + image_run(grid) + text(rng, 6), [image])


def test_several_images_of_different_sizes(models):
    rng = np.random.default_rng(2)
    images = [smooth_image(61, 97, seed=2), smooth_image(97, 61, seed=3),
              smooth_image(120, 110, seed=4)]
    grids = [vision.preprocess_image(im, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)[1]
             for im in images]
    assert grids == [(1, 4, 6), (1, 6, 4), (1, 8, 8)]
    ids = text(rng, 3)
    for g in grids:
        ids += image_run(g) + text(rng, 3)
    compare(models, "several_images", ids, images)


def test_multi_turn_tool_conversation_with_cropped_image(models):
    """system; user (image + question); assistant (<tool_call>); user (<tool_response> with a
    crop of the image, another size); assistant (<answer>): one sequence, as training sees it."""
    rng = np.random.default_rng(3)
    image = smooth_image(480, 640, seed=5)
    crop = image.crop((100, 60, 260, 150))  # 160x90 px region
    grids = [vision.preprocess_image(im, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)[1]
             for im in (image, crop)]
    assert grids[0] != grids[1], grids

    def turn(role, body):
        return [IM_START, role, NL] + body + [IM_END, NL]

    ids = (turn(SYSTEM, text(rng, 6))
           + turn(USER, image_run(grids[0]) + text(rng, 8))
           + turn(ASSISTANT, text(rng, 5) + [TOOL_CALL] + text(rng, 9) + [TOOL_CALL_END])
           + turn(USER, [TOOL_RESP] + image_run(grids[1]) + text(rng, 4) + [TOOL_RESP_END])
           + [IM_START, ASSISTANT, NL] + text(rng, 4) + [ANSWER] + text(rng, 2) + [ANSWER_END])
    compare(models, "multi_turn_tool_crop", ids, [image, crop])


def test_placeholder_feature_mismatch_is_a_clear_error(models):
    """One placeholder short of the image's features: our host check and HF both refuse."""
    hf, ours = models
    image = smooth_image(61, 97, seed=6)
    patches, grid = vision.preprocess_image(image, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    ids = [5, V_START] + [IMG] * 5 + [V_END]  # the 4x6 grid encodes to 6 rows
    feats = ours.encode_images_varlen(jnp.asarray(patches), (grid,))
    with pytest.raises(ValueError, match="5 image placeholder tokens but 6 image feature rows"):
        vision.check_image_tokens(ids, feats.shape[0], image_pad_id=IMG)
    input_ids = torch.tensor([ids])
    with pytest.raises(ValueError), torch.no_grad():
        hf(input_ids=input_ids, mm_token_type_ids=(input_ids == IMG).int(),
           pixel_values=torch.tensor(patches), image_grid_thw=torch.tensor([grid]))
