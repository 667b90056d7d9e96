"""Policy models: Qwen2.5-VL (Flax NNX), its slot KV cache and host-side preprocessing."""

from vista_jax.models.kv_cache import KVCache, init_cache
from vista_jax.models.qwen2_5_vl import (PRESETS, ModelConfig, Qwen25VL, qwen2_5_vl_3b,
                                         qwen2_5_vl_7b)
from vista_jax.models.vision import mrope_positions, preprocess_image

__all__ = [
    "KVCache",
    "PRESETS",
    "ModelConfig",
    "Qwen25VL",
    "init_cache",
    "mrope_positions",
    "preprocess_image",
    "qwen2_5_vl_3b",
    "qwen2_5_vl_7b",
]
