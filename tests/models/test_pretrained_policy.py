"""`config.model.checkpoint`: the job's policy and tokenizer from a local HF checkpoint
directory (a tiny random Qwen2.5-VL saved by transformers, with the Qwen2.5-VL-format
tokenizer fixture; no downloads)."""

from __future__ import annotations

import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vista_jax import cli, pipeline, sharding
from vista_jax import config as config_lib
from vista_jax import tokenizer as tok_lib
from vista_jax.models import ModelConfig, mrope_positions
from vista_jax.models import hf_convert

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "qwen2_5_vl_tokenizer"


def _checkpoint(path: pathlib.Path, vocab: int = 448, image_pad: int | None = None) -> None:
    """A random tiny Qwen2.5-VL saved by transformers, with the fixture tokenizer beside it."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    raw = AutoTokenizer.from_pretrained(FIXTURE)
    ids = {t: raw.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>",
                                                     "<|vision_start|>", "<|vision_end|>")}
    cfg = ModelConfig.tiny(vocab, ids["<|image_pad|>"] if image_pad is None else image_pad,
                           num_layers=2)
    torch.manual_seed(0)
    hf = transformers.Qwen2_5_VLForConditionalGeneration(hf_convert.hf_config_from(
        cfg, video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], bos_token_id=None,
        eos_token_id=raw.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=raw.convert_tokens_to_ids("<|endoftext|>"), max_position_embeddings=1024))
    hf.save_pretrained(path)
    for f in FIXTURE.iterdir():
        if f.suffix == ".json":
            shutil.copy(f, path / f.name)
    return hf.eval()


def _config(*overrides: str):
    return cli.load_config(["vista-train", "--config", str(ROOT / "configs" / "tiny_cpu.py"),
                            *overrides])


def test_policy_and_tokenizer_from_checkpoint_match_transformers(tmp_path):
    import torch

    hf = _checkpoint(tmp_path)
    config = _config(f"--config.model.checkpoint={tmp_path}")
    config_lib.validate(config)
    tok = tok_lib.load_pretrained_tokenizer(config.model.checkpoint, image_tokens_per_image=4)
    rules = sharding.rules_from_config(config)
    mesh = sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    model, cfg = pipeline.build_policy(config, tok, mesh, rules)
    assert cfg.num_layers == 2 and cfg.vocab_size == 448 and cfg.image_pad_id == tok.image_pad_id

    # A rendered multi-turn conversation (text only: images are checked in test_parity_hf).
    messages = [{"role": "system", "content": "You use tools."},
                {"role": "user", "content": "Which bar is tallest?"},
                {"role": "assistant", "content": '<think>read</think><tool_call>{"name": '
                 '"chart_to_table", "arguments": {"image": "image_0"}}</tool_call>'},
                {"role": "tool", "content": "<tool_response>A 3, B 5</tool_response>"},
                {"role": "assistant", "content": "<answer>B</answer>"}]
    ids = tok.render_conversation(messages).ids
    assert max(tok.special_ids[t] for t in tok.added_tags) in ids  # added tags embedded too
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(ids[None].astype(np.int64))).logits.numpy()
    pos, _ = mrope_positions(ids, [], 0, image_pad_id=cfg.image_pad_id)
    ours, _ = model(jnp.asarray(ids[None]), jnp.asarray(pos[:, None]),
                    jnp.ones((1, len(ids)), bool), None)
    np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-4)


def test_checkpoint_disagreeing_with_tokenizer_or_preset_is_named(tmp_path):
    _checkpoint(tmp_path / "small", vocab=396)  # the 395 tokens, not the 6 added tags
    _checkpoint(tmp_path / "ok")
    tok = tok_lib.load_pretrained_tokenizer(FIXTURE, image_tokens_per_image=4)
    mesh = sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    config = _config(f"--config.model.checkpoint={tmp_path / 'small'}")
    with pytest.raises(ValueError, match=r"config\.model\.checkpoint=.*396 embedding rows for 401 tokens"):
        pipeline.build_policy(config, tok, mesh, sharding.DEFAULT_RULES)
    config = _config(f"--config.model.checkpoint={tmp_path / 'ok'}",
                     "--config.model.preset=qwen2_5_vl_7b")
    with pytest.raises(ValueError, match=r"num_layers=2 but config\.model\.preset='qwen2_5_vl_7b'"):
        pipeline.build_policy(config, tok, mesh, sharding.DEFAULT_RULES)
    with pytest.raises(config_lib.ConfigError, match=r"config\.model\.checkpoint="):
        config_lib.validate(_config(f"--config.model.checkpoint={tmp_path / 'absent'}"))
