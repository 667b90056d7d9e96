"""Qwen2.5-VL in Flax NNX: one implementation of the architecture family, sized by config.

Follows HF `Qwen2_5_VLForConditionalGeneration` (transformers 5) in parameterisation and
numerics, so importing a checkpoint is a rename and reshape (module names mirror HF's:
`visual.blocks[i].attn.qkv`, `layers[i].self_attn.q_proj`, ...):

- decoder: pre-norm blocks, RMSNorm, GQA attention with q/k/v biases and no o_proj bias,
  SwiGLU MLP, M-RoPE (`mrope_section` splits the rotary half-dim into t/h/w sections);
- vision tower: a linear patch embed over flattened (C, tp, p, p) patches, pre-norm blocks
  with RMSNorm, 2D rotary (h and w halves) and a biased SwiGLU MLP, windowed attention
  except in `vision_fullatt_block_indexes`, then the PatchMerger (RMSNorm ln_q, then an
  MLP over each 2x2 merge group) into the decoder width.

Images: `encode_images` for a batch of one static grid, `encode_images_varlen` for images of
different sizes (HF dynamic resolution) in one call. Not covered yet: video (temporal
grids > 1), sliding-window decoder layers (unused by released checkpoints).

Dims in einsum strings: B batch, T query tokens, S key slots, D embed, N heads, K kv heads,
G query heads per kv head, H head dim, F mlp, V vocab; vision: I images, P patches,
E vision embed, C channels*tp*p*p (patch features), M merged tokens.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vista_jax import sharding as sharding_lib
from vista_jax.models import vision as vision_lib
from vista_jax.models.kv_cache import KVCache

# A large finite value (not -inf) for masked logits: a query with no visible key then
# averages values uniformly instead of producing NaN.
_MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)


# --- config ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes and constants of a Qwen2.5-VL model (HF names in comments where they differ)."""

    vocab_size: int = 1024  # token embedding rows and logits width
    embed_dim: int = 128  # decoder hidden size (hidden_size)
    num_layers: int = 4  # decoder layers (num_hidden_layers)
    num_heads: int = 4  # query heads (num_attention_heads)
    num_kv_heads: int = 2  # key/value heads, GQA (num_key_value_heads)
    head_dim: int = 32  # per-head dim; HF derives it as embed_dim // num_heads
    mlp_dim: int = 384  # SwiGLU hidden size (intermediate_size)
    rope_theta: float = 10000.0  # decoder rotary base (rope_parameters.rope_theta)
    mrope_section: tuple[int, int, int] = (4, 6, 6)  # t/h/w split of the rotary half-dim
    rms_norm_eps: float = 1e-6  # decoder RMSNorm epsilon
    tie_word_embeddings: bool = True  # logits reuse the token embedding (3B: yes, 7B: no)
    vision_embed_dim: int = 64  # vision tower width (vision_config.hidden_size)
    vision_num_layers: int = 2  # vision blocks (vision_config.depth)
    vision_num_heads: int = 2  # vision heads; head dim = vision_embed_dim // vision_num_heads
    vision_mlp_dim: int = 128  # vision SwiGLU hidden size (vision_config.intermediate_size)
    vision_window_size: int = 112  # window-attention side in pixels (vision_config.window_size)
    vision_fullatt_block_indexes: tuple[int, ...] = (1,)  # blocks with full (not window) attention
    vision_rope_theta: float = 10000.0  # vision 2D rotary base
    vision_rms_norm_eps: float = 1e-6  # vision RMSNorm epsilon (fixed in HF)
    patch_size: int = 14  # pixels per patch side
    temporal_patch_size: int = 2  # frames per patch; still images are duplicated
    spatial_merge_size: int = 2  # patches per merged token side (2x2 -> 1 decoder token)
    in_channels: int = 3  # RGB
    image_pad_id: int = -1  # token id of the image placeholder; set from the tokenizer
    init_std: float = 0.02  # stddev of normal weight init (HF initializer_range)
    dtype: str = "float32"  # activation / compute dtype: float32 | bfloat16
    param_dtype: str = "float32"  # parameter storage dtype (fp32 master weights under bf16 compute)
    remat: str = "none"  # decoder-layer rematerialisation in training: none | full | dots
    # Logical-axis rules for activation constraints (vista_jax.sharding.resolve_rules pairs);
    # () = sharding.DEFAULT_RULES. Constraints apply only under a mesh (jax.set_mesh).
    sharding_rules: tuple = ()

    def __post_init__(self):
        checks = {
            "mrope_section": len(self.mrope_section) == 3
            and sum(self.mrope_section) == self.head_dim // 2,
            "num_kv_heads": self.num_heads % self.num_kv_heads == 0,
            "head_dim": self.head_dim % 2 == 0,
            "vision_num_heads": self.vision_embed_dim % self.vision_num_heads == 0
            and (self.vision_embed_dim // self.vision_num_heads) % 4 == 0,
        }
        checks.update({
            "dtype": self.dtype in ("float32", "bfloat16"),
            "param_dtype": self.param_dtype in ("float32", "bfloat16"),
            "remat": self.remat in sharding_lib.REMAT_POLICIES,
        })
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"inconsistent ModelConfig fields: {bad} ({self})")
        if self.sharding_rules:  # a full, hashable table (also from JSON lists)
            object.__setattr__(self, "sharding_rules",
                               sharding_lib.resolve_rules(self.sharding_rules))

    def constrain(self, x: jax.Array, logical_axes: tuple[str | None, ...]) -> jax.Array:
        """Activation sharding constraint by logical names (identity without a mesh)."""
        return sharding_lib.constrain(x, logical_axes, self.sharding_rules or None)

    @property
    def patch_dim(self) -> int:
        """Features of one flattened patch: C * tp * p * p (1176 for RGB 2x14x14)."""
        return self.in_channels * self.temporal_patch_size * self.patch_size ** 2

    @classmethod
    def tiny(cls, vocab_size: int, image_pad_id: int, **overrides: Any) -> ModelConfig:
        """The CPU-sized policy used in tests and the tiny pipeline."""
        return cls(vocab_size=vocab_size, image_pad_id=image_pad_id, **overrides)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """From a mapping (e.g. a ConfigDict); unknown keys raise, lists become tuples."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# What the released 3B and 7B checkpoints share: the vision tower, M-RoPE and bf16 compute.
_QWEN2_5_VL_COMMON = dict(
    head_dim=128, rope_theta=1e6, mrope_section=(16, 24, 24), vision_embed_dim=1280,
    vision_num_layers=32, vision_num_heads=16, vision_mlp_dim=3420,
    vision_fullatt_block_indexes=(7, 15, 23, 31), dtype="bfloat16")


def qwen2_5_vl_3b(image_pad_id: int = 151655) -> ModelConfig:
    """Qwen2.5-VL-3B-Instruct shapes (bf16 compute)."""
    return ModelConfig(vocab_size=151936, embed_dim=2048, num_layers=36, num_heads=16,
                       num_kv_heads=2, mlp_dim=11008, tie_word_embeddings=True,
                       image_pad_id=image_pad_id, **_QWEN2_5_VL_COMMON)


def qwen2_5_vl_7b(image_pad_id: int = 151655) -> ModelConfig:
    """Qwen2.5-VL-7B-Instruct shapes (bf16 compute)."""
    return ModelConfig(vocab_size=152064, embed_dim=3584, num_layers=28, num_heads=28,
                       num_kv_heads=4, mlp_dim=18944, tie_word_embeddings=False,
                       image_pad_id=image_pad_id, **_QWEN2_5_VL_COMMON)


# `config.model.preset` names one of these ("" = the config's own sizes).
PRESETS = {"qwen2_5_vl_3b": qwen2_5_vl_3b, "qwen2_5_vl_7b": qwen2_5_vl_7b}


# --- building blocks ------------------------------------------------------------------------


def _param(rngs: nnx.Rngs | None, init, shape: tuple[int, ...], axes: tuple[str | None, ...],
           dtype) -> nnx.Param:
    """A Param carrying logical axis names (resolved to mesh axes by vista_jax.sharding).

    eager_sharding=False: creating a model never needs a mesh; sharded creation goes
    through `sharding.create_sharded_model`, which places every param directly."""
    value = init(rngs.params(), shape, dtype) if rngs is not None else init(shape, dtype)
    return nnx.Param(value, out_sharding=axes, eager_sharding=False)


class Dense(nnx.Module):
    """`einsum(eqn, x, kernel) + bias` with named kernel dims, e.g. 'BTD,DNH->BTNH'."""

    def __init__(self, eqn: str, kernel_shape: tuple[int, ...], kernel_axes: tuple,
                 bias_axes: tuple | None, config: ModelConfig, *, rngs: nnx.Rngs):
        self.eqn = eqn
        self.dtype = jnp.dtype(config.dtype)
        pdtype = jnp.dtype(config.param_dtype)
        self.kernel = _param(rngs, nnx.initializers.normal(config.init_std), kernel_shape,
                             kernel_axes, pdtype)
        out_rank = len(bias_axes) if bias_axes is not None else 0
        self.bias = (_param(None, jnp.zeros, kernel_shape[-out_rank:], bias_axes, pdtype)
                     if bias_axes is not None else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.einsum(self.eqn, x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class RMSNorm(nnx.Module):
    """x / rms(x) * scale, normalised in float32 like HF (then cast back before the scale)."""

    def __init__(self, dim: int, eps: float, config: ModelConfig):
        self.eps = eps
        self.scale = _param(None, jnp.ones, (dim,), ("norm",), jnp.dtype(config.param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:  # [..., D] -> [..., D]
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.scale[...].astype(x.dtype) * x32.astype(x.dtype)


class SwiGLU(nnx.Module):
    """down(silu(gate(x)) * up(x)); biased in the vision tower, bias-free in the decoder."""

    def __init__(self, dim: int, hidden: int, axes: tuple[str, str], bias: bool,
                 config: ModelConfig, *, rngs: nnx.Rngs):
        d, f = axes
        self.gate_proj = Dense("...D,DF->...F", (dim, hidden), (d, f), (f,) if bias else None,
                               config, rngs=rngs)
        self.up_proj = Dense("...D,DF->...F", (dim, hidden), (d, f), (f,) if bias else None,
                             config, rngs=rngs)
        self.down_proj = Dense("...F,FD->...D", (hidden, dim), (f, d), (d,) if bias else None,
                               config, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:  # [..., D] -> [..., D]
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


def rotate_half(x: jax.Array) -> jax.Array:
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [..., T, N, H] rotated by cos/sin [..., T, H] (HF rotate_half convention), in f32."""
    x32 = x.astype(jnp.float32)
    out = x32 * cos[..., None, :] + rotate_half(x32) * sin[..., None, :]
    return out.astype(x.dtype)


def mrope_cos_sin(positions: jax.Array, head_dim: int, theta: float,
                  section: tuple[int, int, int]) -> tuple[jax.Array, jax.Array]:
    """M-RoPE angles: positions int [3, B, T] -> cos, sin float32 [B, T, H].

    Frequency f of the rotary half-dim takes its position from the t, h or w row according
    to `section` (e.g. (16, 24, 24): 16 temporal, then 24 height, 24 width frequencies)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    rows = np.repeat(np.arange(3), section)  # [H/2] which position row each frequency uses
    pos_btf = jnp.transpose(positions[rows], (1, 2, 0)).astype(jnp.float32)  # [B, T, H/2]
    freqs = pos_btf * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)  # [B, T, H]
    return jnp.cos(emb), jnp.sin(emb)


def dot_attention(q_btnh: jax.Array, k_bskh: jax.Array, v_bskh: jax.Array,
                  mask_bts: jax.Array | None) -> jax.Array:
    """Softmax attention with grouped KV heads. q [B, T, N, H], k/v [B, S, K, H],
    mask bool broadcastable to [B, T, S] (True = attend) -> [B, T, N, H]."""
    b, t, n, h = q_btnh.shape
    kh = k_bskh.shape[2]
    q = q_btnh.reshape(b, t, kh, n // kh, h)  # [B, T, K, G, H]
    logits = jnp.einsum("BTKGH,BSKH->BKGTS", q, k_bskh).astype(jnp.float32) * h ** -0.5
    if mask_bts is not None:
        logits = jnp.where(mask_bts[:, None, None], logits, _MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(v_bskh.dtype)
    out = jnp.einsum("BKGTS,BSKH->BTKGH", probs, v_bskh)
    return out.reshape(b, t, n, h)


# --- vision tower ---------------------------------------------------------------------------


class VisionAttention(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        e, n = config.vision_embed_dim, config.vision_num_heads
        h = e // n
        # HF: qkv Linear(E, 3E) with output laid out as (3, N, H); proj Linear(E, E).
        self.qkv = Dense("IPE,ECNH->IPCNH", (e, 3, n, h),
                         ("vision_embed", None, "vision_heads", "head_dim"),
                         (None, "vision_heads", "head_dim"), config, rngs=rngs)
        self.proj = Dense("IPNH,NHE->IPE", (n, h, e), ("vision_heads", "head_dim", "vision_embed"),
                          ("vision_embed",), config, rngs=rngs)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array,
                 mask_pp: jax.Array | None) -> jax.Array:  # [I, P, E] -> [I, P, E]
        qkv = self.qkv(x)  # [I, P, 3, N, H]
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        mask = None if mask_pp is None else mask_pp[None]
        return self.proj(dot_attention(q, k, v, mask))


class VisionBlock(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        e, eps = config.vision_embed_dim, config.vision_rms_norm_eps
        self.norm1 = RMSNorm(e, eps, config)
        self.attn = VisionAttention(config, rngs=rngs)
        self.norm2 = RMSNorm(e, eps, config)
        self.mlp = SwiGLU(e, config.vision_mlp_dim, ("vision_embed", "vision_mlp"), True, config,
                          rngs=rngs)

    def __call__(self, x, cos, sin, mask_pp):  # [I, P, E] -> [I, P, E]
        x = x + self.attn(self.norm1(x), cos, sin, mask_pp)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nnx.Module):
    """RMSNorm each patch, concatenate each 2x2 merge group, MLP to the decoder width."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        e = config.vision_embed_dim
        g = e * config.spatial_merge_size ** 2
        self.ln_q = RMSNorm(e, config.vision_rms_norm_eps, config)
        # HF merger.mlp.0 / merger.mlp.2 (GELU between).
        self.fc1 = Dense("IMG,GF->IMF", (g, g), ("vision_merged", "vision_mlp"), ("vision_mlp",),
                         config, rngs=rngs)
        self.fc2 = Dense("IMF,FD->IMD", (g, config.embed_dim), ("vision_mlp", "embed"), ("embed",),
                         config, rngs=rngs)
        self.group = config.spatial_merge_size ** 2

    def __call__(self, x: jax.Array) -> jax.Array:  # [I, P, E] -> [I, P/4, D]
        i, p, e = x.shape
        x = self.ln_q(x).reshape(i, p // self.group, self.group * e)  # groups are contiguous
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class VisionTower(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        # HF Conv3d(kernel = stride = (tp, p, p)) == a linear map of the flattened patch.
        self.patch_embed = Dense("IPC,CE->IPE", (config.patch_dim, config.vision_embed_dim),
                                 ("patch", "vision_embed"), None, config, rngs=rngs)
        self.blocks = nnx.List([VisionBlock(config, rngs=rngs)
                                for _ in range(config.vision_num_layers)])
        self.merger = PatchMerger(config, rngs=rngs)

    def rotary(self, positions_p2: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """2D rotary cos/sin [P, H] of patches at (row, col) int [P, 2]: the first half of
        the rotary dims follows the patch row, the second half its column (same
        frequencies), as in HF."""
        c = self.config
        h = c.vision_embed_dim // c.vision_num_heads
        inv_freq = 1.0 / (c.vision_rope_theta
                          ** (jnp.arange(0, h // 2, 2, dtype=jnp.float32) / (h // 2)))  # [H/4]
        pos = jnp.asarray(positions_p2)
        freqs = (pos[:, :, None].astype(jnp.float32) * inv_freq).reshape(pos.shape[0], -1)
        emb = jnp.concatenate([freqs, freqs], axis=-1)  # [P, H]
        return jnp.cos(emb), jnp.sin(emb)

    def encode(self, patches: jax.Array, grids: tuple[tuple[int, int, int], ...]) -> jax.Array:
        """[I, P, C] pixel patches (HF order) -> [I, P/4, D]. Each of the I rows holds the
        images `grids` (static patch grids (t, gh, gw)) concatenated, like HF's
        `pixel_values`: windowed blocks attend within a window of one image, full blocks
        within one image (HF's cu_seqlens as a block-diagonal mask), 2D rotary positions
        restart per image. Attention is dense over the row's P patches (a [N, P, P] score
        tensor per block): fine for a few thousand patches, not for huge images."""
        c = self.config
        pos, image_ids, window_ids = vision_lib.vision_patch_tables(
            grids, window_size=c.vision_window_size, patch_size=c.patch_size,
            merge_size=c.spatial_merge_size)
        cos, sin = self.rotary(pos)

        def same(ids: np.ndarray) -> jax.Array | None:  # [P] -> bool [P, P], None if all equal
            if np.all(ids == ids[0]):
                return None
            ids = jnp.asarray(ids)
            return ids[:, None] == ids[None, :]

        full, window = same(image_ids), same(window_ids)
        x = self.patch_embed(patches)
        for i, block in enumerate(self.blocks):
            with jax.named_scope(f"vision_block_{i}"):
                x = block(x, cos, sin, full if i in c.vision_fullatt_block_indexes else window)
        with jax.named_scope("patch_merger"):
            return self.merger(x)

    def __call__(self, patches: jax.Array, grid_hw: tuple[int, int]) -> jax.Array:
        """[I, P, C] pixel patches (HF order) of I images of one grid -> [I, P/4, D]."""
        return self.encode(patches, ((1,) + tuple(grid_hw),))


# --- decoder --------------------------------------------------------------------------------


class Attention(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d, n, k, h = config.embed_dim, config.num_heads, config.num_kv_heads, config.head_dim
        self.q_proj = Dense("BTD,DNH->BTNH", (d, n, h), ("embed", "heads", "head_dim"),
                            ("heads", "head_dim"), config, rngs=rngs)
        self.k_proj = Dense("BTD,DKH->BTKH", (d, k, h), ("embed", "kv_heads", "head_dim"),
                            ("kv_heads", "head_dim"), config, rngs=rngs)
        self.v_proj = Dense("BTD,DKH->BTKH", (d, k, h), ("embed", "kv_heads", "head_dim"),
                            ("kv_heads", "head_dim"), config, rngs=rngs)
        self.o_proj = Dense("BTNH,NHD->BTD", (n, h, d), ("heads", "head_dim", "embed"), None,
                            config, rngs=rngs)
        self.config = config

    def __call__(self, x: jax.Array, rope: tuple[jax.Array, jax.Array], mask_bts: jax.Array,
                 cache: KVCache | None, layer: int) -> tuple[jax.Array, KVCache | None]:
        """x [B, T, D] -> [B, T, D]. With a cache, the new keys/values are written at the
        cache index first and the queries attend over all S slots."""
        cos, sin = rope
        c = self.config
        q_axes = ("act_batch", "act_length", "act_heads", "head_dim")
        kv_axes = ("act_batch", "act_length", "act_kv_heads", "head_dim")
        q = c.constrain(apply_rotary(self.q_proj(x), cos, sin), q_axes)  # [B, T, N, H]
        k = c.constrain(apply_rotary(self.k_proj(x), cos, sin), kv_axes)  # [B, T, K, H]
        v = c.constrain(self.v_proj(x), kv_axes)  # [B, T, K, H]
        if cache is not None:
            cache = cache.write_layer(layer, k, v)
            k, v = cache.k[layer].astype(q.dtype), cache.v[layer].astype(q.dtype)  # [B, S, K, H]
        return self.o_proj(dot_attention(q, k, v, mask_bts)), cache


class DecoderLayer(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d, eps = config.embed_dim, config.rms_norm_eps
        self.input_layernorm = RMSNorm(d, eps, config)
        self.self_attn = Attention(config, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(d, eps, config)
        self.mlp = SwiGLU(d, config.mlp_dim, ("embed", "mlp"), False, config, rngs=rngs)
        self.config = config

    def __call__(self, x, rope, mask_bts, cache, layer):  # [B, T, D] -> [B, T, D], cache
        h, cache = self.self_attn(self.input_layernorm(x), rope, mask_bts, cache, layer)
        x = self.config.constrain(x + h, _ACT_BTD)
        return self.config.constrain(x + self.mlp(self.post_attention_layernorm(x)), _ACT_BTD), cache


_ACT_BTD = ("act_batch", "act_length", "act_embed")  # the residual stream [B, T, D]


def _remat_layer_fn(policy_name: str):
    """A decoder layer's cache-free forward (layer, x [B, T, D], rope, mask) -> [B, T, D]
    wrapped in `nnx.remat` with the named `sharding.REMAT_POLICIES` policy: the backward
    pass recomputes what the policy does not save instead of keeping it from the forward."""
    return nnx.remat(lambda layer, x, rope, mask: layer(x, rope, mask, None, 0)[0],
                     policy=sharding_lib.REMAT_POLICIES[policy_name])


def merge_image_embeds(x_btd: jax.Array, tokens_bt: jax.Array, image_bmd: jax.Array,
                       image_pad_id: int) -> jax.Array:
    """Replaces row b's image placeholders, in order, by image_bmd[b, 0], [b, 1], ...

    Fixed shapes: the k-th placeholder of a row (a cumsum over the mask) gathers row k of
    the row's image embeddings. Extra embeddings are unused (padding); placeholders beyond
    M reuse the last one (callers size M to the most image tokens a row carries). Being
    compiled, this cannot raise on a count mismatch: callers check each row on the host
    with `vision.check_image_tokens` (and `Qwen25VL.__call__` does when run eagerly)."""
    is_image = tokens_bt == image_pad_id  # [B, T]
    slot = jnp.clip(jnp.cumsum(is_image, axis=1) - 1, 0, image_bmd.shape[1] - 1)  # [B, T]
    gathered = jnp.take_along_axis(image_bmd, slot[:, :, None], axis=1)  # [B, T, D]
    return jnp.where(is_image[:, :, None], gathered.astype(x_btd.dtype), x_btd)


class Qwen25VL(nnx.Module):
    """The policy: `encode_images` for pixels, `__call__` for prefill, decode and training."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        pdtype = jnp.dtype(config.param_dtype)
        self.visual = VisionTower(config, rngs=rngs)
        self.embed_tokens = _param(rngs, nnx.initializers.normal(config.init_std),
                                   (config.vocab_size, config.embed_dim), ("vocab", "embed"),
                                   pdtype)  # [V, D]
        self.layers = nnx.List([DecoderLayer(config, rngs=rngs) for _ in range(config.num_layers)])
        self.norm = RMSNorm(config.embed_dim, config.rms_norm_eps, config)
        self.lm_head = (None if config.tie_word_embeddings else
                        Dense("BTD,DV->BTV", (config.embed_dim, config.vocab_size),
                              ("embed", "vocab"), None, config, rngs=rngs))

    def encode_images(self, pixel_patches: jax.Array,
                      grid_hw: tuple[int, int] | None = None) -> jax.Array:
        """Pixel patches [N, P, C] of N images sharing one (grid_h, grid_w) patch grid (a
        static pair; square if omitted) -> image embeddings [N, P/4, D]."""
        p = pixel_patches.shape[1]
        if grid_hw is None:
            side = math.isqrt(p)
            grid_hw = (side, side)
        if grid_hw[0] * grid_hw[1] != p:
            raise ValueError(f"grid {grid_hw} does not hold {p} patches")
        grids = vision_lib.check_grids([(1,) + tuple(grid_hw)], self.config.spatial_merge_size)
        with jax.named_scope("vision_tower"):
            return self.visual.encode(pixel_patches, grids)

    def encode_images_varlen(self, pixel_patches: jax.Array,
                             grids: tuple[tuple[int, int, int], ...]) -> jax.Array:
        """Images of different sizes in one call, as HF's visual(pixel_values, grid_thw):
        patches [sum P_i, C] concatenated in image order (HF `pixel_values`), `grids` their
        patch grids (t=1, gh, gw) (HF `image_grid_thw`; static: one compilation per grids
        tuple) -> merged features [sum P_i / 4, D] in the same order, image i's rows
        contiguous. Images never attend to each other."""
        grids = vision_lib.check_grids(grids, self.config.spatial_merge_size)
        total = sum(t * h * w for t, h, w in grids)
        if pixel_patches.ndim != 2 or pixel_patches.shape[0] != total:
            raise ValueError(f"pixel_patches {pixel_patches.shape} should be [{total}, "
                             f"{self.config.patch_dim}] for grids {grids}")
        with jax.named_scope("vision_tower"):
            return self.visual.encode(pixel_patches[None], grids)[0]

    def __call__(self, tokens: jax.Array, positions: jax.Array, valid: jax.Array,
                 cache: KVCache | None = None, image_embeds: jax.Array | None = None,
                 logits_at: jax.Array | None = None) -> tuple[jax.Array, KVCache | None]:
        """tokens int [B, T], positions int [3, B, T] (M-RoPE t/h/w), valid bool [B, T],
        optional slot cache, optional image embeddings [B, M, D] for the image placeholders
        (row b's features in placeholder order, e.g. `encode_images_varlen` output padded
        to M; called eagerly, a row with more placeholders than M raises). Returns logits
        float32 [B, T, V] and the advanced cache (None without one); with `logits_at` int
        [B], only the logits at those positions, [B, 1, V] (a prefill needs one per row:
        at T = 4K and a 152K vocab the full logits are 2.5 GB per row).

        Without a cache: causal attention over the T tokens, padding keys masked. With one:
        the tokens are written at slots [index, index + T) and attend to every earlier or
        equal valid slot."""
        x, cache = self.hidden(tokens, positions, valid, cache, image_embeds)  # [B, T, D]
        if logits_at is not None:
            x = jnp.take_along_axis(x, logits_at[:, None, None].astype(jnp.int32), axis=1)
        return self.logits(x), cache

    def hidden(self, tokens: jax.Array, positions: jax.Array, valid: jax.Array,
               cache: KVCache | None = None, image_embeds: jax.Array | None = None
               ) -> tuple[jax.Array, KVCache | None]:
        """The decoder trunk of `__call__`: the last layer's hidden states [B, T, D] (in
        the compute dtype, before the final norm and LM head: `logits` maps them) and the
        advanced cache. Arguments as `__call__`; a value head reads these."""
        c = self.config
        b, t = tokens.shape
        dtype = jnp.dtype(c.dtype)
        x = jnp.take(self.embed_tokens[...], tokens, axis=0).astype(dtype)  # [B, T, D]
        if image_embeds is not None:
            if c.image_pad_id < 0:
                raise ValueError("image_embeds given but config.image_pad_id is unset")
            if not isinstance(tokens, jax.core.Tracer):  # eager: the counts are known here
                counts = np.count_nonzero(np.asarray(tokens) == c.image_pad_id, axis=1)  # [B]
                if counts.max(initial=0) > image_embeds.shape[1]:
                    raise ValueError(f"{int(counts.max())} image placeholder tokens but "
                                     f"{image_embeds.shape[1]} image feature rows "
                                     f"(row {int(counts.argmax())})")
            x = merge_image_embeds(x, tokens, image_embeds, c.image_pad_id)
        rope = mrope_cos_sin(positions, c.head_dim, c.rope_theta, c.mrope_section)

        if cache is None:
            # From iotas, not a numpy constant: a [T, T] literal is 256 MB in the program at
            # T = 16K and tripled the 7B step's compile time.
            causal = jnp.arange(t)[:, None] >= jnp.arange(t)[None, :]  # [T, T]
            mask = causal[None] & valid[:, None, :]  # [B, T, T]
            slot_valid = None
        else:
            slot_valid = jax.lax.dynamic_update_slice(cache.valid, valid.astype(bool),
                                                      (0, cache.index))  # [B, S]
            q_slot = cache.index + jnp.arange(t)  # [T]
            k_slot = jnp.arange(cache.max_len)  # [S]
            mask = (k_slot[None, :] <= q_slot[:, None])[None] & slot_valid[:, None, :]  # [B, T, S]

        x = c.constrain(x, _ACT_BTD)
        # Remat only matters under differentiation, i.e. the cache-free training forward.
        remat = _remat_layer_fn(c.remat) if cache is None and c.remat != "none" else None
        for i, layer in enumerate(self.layers):
            with jax.named_scope(f"decoder_layer_{i}"):
                if remat is not None:
                    x = remat(layer, x, rope, mask)
                else:
                    x, cache = layer(x, rope, mask, cache, i)

        if cache is not None:
            cache = dataclasses.replace(cache, valid=slot_valid, index=cache.index + t)
        return x, cache

    def logits(self, x: jax.Array) -> jax.Array:
        """Final norm and LM head (tied to the embedding or not): hidden [B, T, D] ->
        float32 logits [B, T, V]."""
        with jax.named_scope("logits"):
            x = self.norm(x)
            if self.lm_head is None:
                logits = jnp.einsum("BTD,VD->BTV", x,
                                    self.embed_tokens[...].astype(jnp.dtype(self.config.dtype)))
            else:
                logits = self.lm_head(x)
            logits = self.config.constrain(logits, ("act_batch", "act_length", "act_vocab"))
        return logits.astype(jnp.float32)
