"""HF Qwen2.5-VL -> ours: the config and weight mapping a checkpoint importer needs.

`model_config_from_hf` reads a transformers `Qwen2_5_VLConfig` into our `ModelConfig`;
`load_hf_weights` copies the weights of a `Qwen2_5_VLForConditionalGeneration` (or its
state dict) into a `Qwen25VL` built from that config. Both are pure renames and reshapes
(our module tree mirrors HF's). Used by the parity tests and the HF-vs-ours benchmark;
reading safetensors shards of a released checkpoint straight into a sharded model is a
later issue. Neither function imports torch or transformers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from vista_jax.models.qwen2_5_vl import ModelConfig, Qwen25VL


def model_config_from_hf(hf_config: Any, **overrides: Any) -> ModelConfig:
    """Our ModelConfig for an HF `Qwen2_5_VLConfig` (transformers 5: `rope_parameters`
    carries `mrope_section`). `overrides` set fields HF does not describe (e.g. dtype)."""
    text, vis = hf_config.text_config, hf_config.vision_config
    rope = text.rope_parameters
    if "mrope_section" not in rope:
        raise ValueError(f"text_config.rope_parameters has no mrope_section: {rope}")
    if vis.out_hidden_size != text.hidden_size:
        raise ValueError(f"vision out_hidden_size {vis.out_hidden_size} != text hidden_size "
                         f"{text.hidden_size}")
    fields = dict(
        vocab_size=text.vocab_size,
        embed_dim=text.hidden_size,
        num_layers=text.num_hidden_layers,
        num_heads=text.num_attention_heads,
        num_kv_heads=text.num_key_value_heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads,
        mlp_dim=text.intermediate_size,
        rope_theta=float(rope["rope_theta"]),
        mrope_section=tuple(rope["mrope_section"]),
        rms_norm_eps=text.rms_norm_eps,
        tie_word_embeddings=bool(hf_config.tie_word_embeddings),
        vision_embed_dim=vis.hidden_size,
        vision_num_layers=vis.depth,
        vision_num_heads=vis.num_heads,
        vision_mlp_dim=vis.intermediate_size,
        vision_window_size=vis.window_size,
        vision_fullatt_block_indexes=tuple(vis.fullatt_block_indexes),
        vision_rope_theta=float((getattr(vis, "rope_parameters", None) or {})
                                .get("rope_theta", 10000.0)),
        patch_size=vis.patch_size,
        temporal_patch_size=vis.temporal_patch_size,
        spatial_merge_size=vis.spatial_merge_size,
        in_channels=vis.in_channels,
        image_pad_id=hf_config.image_token_id,
        init_std=text.initializer_range,
    )
    return ModelConfig(**{**fields, **overrides})


def hf_config_from(cfg: ModelConfig, *, video_token_id: int, vision_start_token_id: int,
                   vision_end_token_id: int, bos_token_id: int = 1, eos_token_id: int = 2,
                   pad_token_id: int = 0, max_position_embeddings: int = 4096) -> Any:
    """The transformers `Qwen2_5_VLConfig` describing `cfg` (the inverse of
    `model_config_from_hf`, which reads it back equal). Token ids HF needs and ours does not
    keep are arguments. Imports transformers."""
    import transformers

    if cfg.head_dim * cfg.num_heads != cfg.embed_dim:
        raise ValueError(f"HF derives head_dim as embed_dim // num_heads = "
                         f"{cfg.embed_dim // cfg.num_heads}; this config has {cfg.head_dim}")
    text = dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.embed_dim, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.mlp_dim, rms_norm_eps=cfg.rms_norm_eps,
        initializer_range=cfg.init_std, max_position_embeddings=max_position_embeddings,
        bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta,
                         "mrope_section": list(cfg.mrope_section)})
    vision = dict(
        depth=cfg.vision_num_layers, hidden_size=cfg.vision_embed_dim,
        intermediate_size=cfg.vision_mlp_dim, num_heads=cfg.vision_num_heads,
        out_hidden_size=cfg.embed_dim, window_size=cfg.vision_window_size,
        fullatt_block_indexes=list(cfg.vision_fullatt_block_indexes),
        patch_size=cfg.patch_size, temporal_patch_size=cfg.temporal_patch_size,
        spatial_merge_size=cfg.spatial_merge_size, in_channels=cfg.in_channels)
    return transformers.Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=cfg.image_pad_id,
        video_token_id=video_token_id, vision_start_token_id=vision_start_token_id,
        vision_end_token_id=vision_end_token_id, tie_word_embeddings=cfg.tie_word_embeddings)


def load_hf_weights(model: Qwen25VL, hf: Any) -> None:
    """Copies HF Qwen2.5-VL weights into `model` in place. `hf`: a torch
    `Qwen2_5_VLForConditionalGeneration` or its state dict (name -> array or tensor).
    Every shape is checked; a missing name raises KeyError."""
    source = hf.state_dict() if hasattr(hf, "state_dict") else hf
    sd: Mapping[str, np.ndarray] = {k: _numpy(v) for k, v in source.items()}
    c = model.config
    e, nv = c.vision_embed_dim, c.vision_num_heads
    d, n, k, h = c.embed_dim, c.num_heads, c.num_kv_heads, c.head_dim

    def put(var, x):
        if var[...].shape != x.shape:
            raise ValueError(f"shape mismatch: ours {var[...].shape}, HF {x.shape}")
        var[...] = jnp.asarray(x, var[...].dtype)

    pre = "model.visual."
    put(model.visual.patch_embed.kernel, sd[pre + "patch_embed.proj.weight"].reshape(e, -1).T)
    for i, blk in enumerate(model.visual.blocks):
        p = f"{pre}blocks.{i}."
        put(blk.norm1.scale, sd[p + "norm1.weight"])
        put(blk.norm2.scale, sd[p + "norm2.weight"])
        put(blk.attn.qkv.kernel, sd[p + "attn.qkv.weight"].T.reshape(e, 3, nv, e // nv))
        put(blk.attn.qkv.bias, sd[p + "attn.qkv.bias"].reshape(3, nv, e // nv))
        put(blk.attn.proj.kernel, sd[p + "attn.proj.weight"].T.reshape(nv, e // nv, e))
        put(blk.attn.proj.bias, sd[p + "attn.proj.bias"])
        for name in ("gate_proj", "up_proj", "down_proj"):
            put(getattr(blk.mlp, name).kernel, sd[p + f"mlp.{name}.weight"].T)
            put(getattr(blk.mlp, name).bias, sd[p + f"mlp.{name}.bias"])
    put(model.visual.merger.ln_q.scale, sd[pre + "merger.ln_q.weight"])
    put(model.visual.merger.fc1.kernel, sd[pre + "merger.mlp.0.weight"].T)
    put(model.visual.merger.fc1.bias, sd[pre + "merger.mlp.0.bias"])
    put(model.visual.merger.fc2.kernel, sd[pre + "merger.mlp.2.weight"].T)
    put(model.visual.merger.fc2.bias, sd[pre + "merger.mlp.2.bias"])

    pre = "model.language_model."
    put(model.embed_tokens, sd[pre + "embed_tokens.weight"])
    put(model.norm.scale, sd[pre + "norm.weight"])
    for i, layer in enumerate(model.layers):
        p = f"{pre}layers.{i}."
        put(layer.input_layernorm.scale, sd[p + "input_layernorm.weight"])
        put(layer.post_attention_layernorm.scale, sd[p + "post_attention_layernorm.weight"])
        attn = layer.self_attn
        for name, heads in (("q_proj", n), ("k_proj", k), ("v_proj", k)):
            weight = sd[p + f"self_attn.{name}.weight"]
            put(getattr(attn, name).kernel, weight.T.reshape(d, heads, h))
            put(getattr(attn, name).bias, sd[p + f"self_attn.{name}.bias"].reshape(heads, h))
        put(attn.o_proj.kernel, sd[p + "self_attn.o_proj.weight"].T.reshape(n, h, d))
        for name in ("gate_proj", "up_proj", "down_proj"):
            put(getattr(layer.mlp, name).kernel, sd[p + f"mlp.{name}.weight"].T)
    if model.lm_head is not None:
        put(model.lm_head.kernel, sd["lm_head.weight"].T)


def _numpy(x: Any) -> np.ndarray:
    """float32 numpy from a torch tensor (any dtype, incl. bf16) or an array."""
    if hasattr(x, "detach"):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, np.float32)
