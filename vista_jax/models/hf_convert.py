"""HF Qwen2.5-VL <-> ours: the config mapping and the one weight-name table.

`weight_specs(config)` is the single table of every weight: its name in an HF checkpoint
(the released layout: `model.layers.*`, `visual.*`, `lm_head.weight`), the path of our
param, and an einops-style pattern relating the two layouts (e.g. q_proj
`"(n h) d -> d n h"`: HF Linear [N*H, D] -> ours [D, N, H]). Everything that moves weights
between the two uses it:

- `load_hf_weights`: an in-memory torch model or state dict -> a model (parity tests);
- `vista_jax.models.hf_checkpoint`: safetensors shards <-> a sharded model, slice by slice.

`WeightSpec.to_ours(source, index)` reads only a contiguous superset of the requested
block of our layout from `source` (a numpy array or a safetensors slice), which is what
lets each host load just its addressable shards. Nothing here imports torch; only
`hf_config_from` imports transformers.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jax
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy: safetensors bf16 -> numpy)
import numpy as np
from flax import nnx

from vista_jax.models.qwen2_5_vl import ModelConfig, Qwen25VL

Path = tuple[str | int, ...]  # a param's path in nnx.state(model), e.g. ("layers", 0, ...)


# --- config ----------------------------------------------------------------------------------


def model_config_from_hf(hf_config: Any, **overrides: Any) -> ModelConfig:
    """Our ModelConfig for an HF Qwen2.5-VL config: a transformers `Qwen2_5_VLConfig` or the
    dict of a `config.json`, either transformers-5 nested (`text_config` with
    `rope_parameters.mrope_section`) or the older flat format of the released checkpoints
    (text fields at the top level, `rope_scaling.mrope_section`, `rope_theta`).
    `overrides` set fields HF does not describe (e.g. dtype, param_dtype)."""
    d = dict(hf_config) if isinstance(hf_config, Mapping) else hf_config.to_dict()
    text = {**d, **(d.get("text_config") or {})}  # flat format: text fields at top level
    vis = d.get("vision_config")
    if not vis:
        raise ValueError("HF config has no vision_config")

    def need(where: Mapping, key: str, name: str):
        if where.get(key) is None:
            raise ValueError(f"HF config has no {name}.{key}")
        return where[key]

    rope = dict(text.get("rope_parameters") or text.get("rope_scaling") or {})
    if "mrope_section" not in rope:
        raise ValueError(f"HF text config rope_parameters/rope_scaling has no mrope_section: "
                         f"{rope}")
    theta = rope.get("rope_theta", text.get("rope_theta"))
    if theta is None:
        raise ValueError("HF config has no rope_theta (rope_parameters or text config)")
    if text.get("use_sliding_window"):
        raise ValueError("HF config has use_sliding_window=true: sliding-window decoder "
                         "layers are not implemented")
    hidden, heads = need(text, "hidden_size", "text_config"), need(text, "num_attention_heads",
                                                                   "text_config")
    if need(vis, "out_hidden_size", "vision_config") != hidden:
        raise ValueError(f"vision out_hidden_size {vis['out_hidden_size']} != text hidden_size "
                         f"{hidden}")
    tie = d.get("tie_word_embeddings", text.get("tie_word_embeddings"))
    fields = dict(
        vocab_size=need(text, "vocab_size", "text_config"),
        embed_dim=hidden,
        num_layers=need(text, "num_hidden_layers", "text_config"),
        num_heads=heads,
        num_kv_heads=text.get("num_key_value_heads") or heads,
        head_dim=text.get("head_dim") or hidden // heads,
        mlp_dim=need(text, "intermediate_size", "text_config"),
        rope_theta=float(theta),
        mrope_section=tuple(rope["mrope_section"]),
        rms_norm_eps=float(text.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(tie) if tie is not None else False,  # HF's default
        vision_embed_dim=need(vis, "hidden_size", "vision_config"),
        vision_num_layers=need(vis, "depth", "vision_config"),
        vision_num_heads=need(vis, "num_heads", "vision_config"),
        vision_mlp_dim=need(vis, "intermediate_size", "vision_config"),
        vision_window_size=vis.get("window_size", 112),
        vision_fullatt_block_indexes=tuple(vis.get("fullatt_block_indexes", (7, 15, 23, 31))),
        vision_rope_theta=float((vis.get("rope_parameters") or {}).get("rope_theta", 10000.0)),
        patch_size=vis.get("patch_size", 14),
        temporal_patch_size=vis.get("temporal_patch_size", 2),
        spatial_merge_size=vis.get("spatial_merge_size", 2),
        in_channels=vis.get("in_channels", vis.get("in_chans", 3)),
        image_pad_id=need(d, "image_token_id", "config"),
        init_std=float(text.get("initializer_range", 0.02)),
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
        spatial_merge_size=cfg.spatial_merge_size, in_channels=cfg.in_channels,
        rope_parameters={"rope_type": "axial", "rope_theta": cfg.vision_rope_theta})
    return transformers.Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=cfg.image_pad_id,
        video_token_id=video_token_id, vision_start_token_id=vision_start_token_id,
        vision_end_token_id=vision_end_token_id, tie_word_embeddings=cfg.tie_word_embeddings)


# --- layouts ---------------------------------------------------------------------------------

_GROUP = re.compile(r"\(([^()]*)\)|(\w+)")


def _parse_side(text: str) -> tuple[tuple[str, ...], ...]:
    groups = []
    for inner, single in _GROUP.findall(text):
        groups.append(tuple(inner.split()) if inner else (single,))
    return tuple(groups)


@dataclasses.dataclass(frozen=True)
class WeightSpec:
    """One weight: `hf_name` in the checkpoint, `path` of our param, and `pattern`
    ("file dims -> our dims", einops style: a parenthesised group is one dim made of
    several axes, row-major) with the size of every axis in `sizes`."""

    hf_name: str
    path: Path
    pattern: str
    sizes: Mapping[str, int]

    @property
    def _sides(self) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]:
        src, dst = self.pattern.split("->")
        return _parse_side(src), _parse_side(dst)

    def _shape(self, groups) -> tuple[int, ...]:
        return tuple(math.prod(self.sizes[a] for a in g) for g in groups)

    @property
    def hf_shape(self) -> tuple[int, ...]:
        return self._shape(self._sides[0])

    @property
    def ours_shape(self) -> tuple[int, ...]:
        return self._shape(self._sides[1])

    def to_hf(self, x: np.ndarray) -> np.ndarray:
        """Our full param -> the checkpoint tensor."""
        src, dst = self._sides
        return _rearrange(np.asarray(x), dst, src, self.sizes)

    def to_ours(self, source: Any, index: tuple[slice, ...] | None = None) -> np.ndarray:
        """Block `index` (slices over our dims, step 1; None = everything) of our param,
        read from `source`: anything indexable by a tuple of slices in the checkpoint layout
        (a numpy array, a safetensors `get_slice`). Per checkpoint dim it reads the smallest
        contiguous range covering the block (the whole dim when a split dim's inner axes are
        partly selected, e.g. qkv rows of some heads for all of q, k, v), then cuts."""
        src, dst = self._sides
        sizes = self.sizes
        index = index if index is not None else (slice(None),) * len(dst)
        if len(index) != len(dst):
            raise ValueError(f"{self.hf_name}: index {index} for {len(dst)} dims")
        want: dict[str, tuple[int, int]] = {}
        post = []  # cut applied to merged (multi-axis) dims of ours after assembling
        for group, sl, n in zip(dst, index, self.ours_shape):
            start, stop, step = sl.indices(n)
            if step != 1:
                raise ValueError(f"{self.hf_name}: strided index {sl}")
            if len(group) == 1:
                want[group[0]] = (start, stop)
                post.append(slice(None))
            else:
                want.update({a: (0, sizes[a]) for a in group})
                post.append(slice(start, stop))
        read_idx, got = [], {}
        for group in src:
            multi = False
            for a in group:  # contiguous superset: axes after the first multi-element one full
                got[a] = (0, sizes[a]) if multi else want[a]
                multi = multi or got[a][1] - got[a][0] > 1
            strides = [math.prod(sizes[b] for b in group[j + 1:]) for j in range(len(group))]
            first = sum(got[a][0] * s for a, s in zip(group, strides))
            last = sum((got[a][1] - 1) * s for a, s in zip(group, strides))
            read_idx.append(slice(first, last + 1))
        block = np.asarray(source[tuple(read_idx)])
        names = [a for g in src for a in g]
        block = block.reshape([got[a][1] - got[a][0] for a in names])
        block = block[tuple(slice(want[a][0] - got[a][0], want[a][1] - got[a][0])
                            for a in names)]
        order = [a for g in dst for a in g]
        block = block.transpose([names.index(a) for a in order])
        block = block.reshape([math.prod(want[a][1] - want[a][0] for a in g) for g in dst])
        return block[tuple(post)]


def _rearrange(x: np.ndarray, src, dst, sizes) -> np.ndarray:
    """Full-array layout change between two groupings of the same axes."""
    names = [a for g in src for a in g]
    order = [a for g in dst for a in g]
    x = x.reshape([sizes[a] for a in names]).transpose([names.index(a) for a in order])
    return x.reshape([math.prod(sizes[a] for a in g) for g in dst])


def weight_specs(config: ModelConfig) -> list[WeightSpec]:
    """Every weight of a `Qwen25VL(config)`, in checkpoint order (vision, decoder, head).
    HF Linear weights are [out, in]; ours are [in, out] with heads split out."""
    c = config
    e, nv = c.vision_embed_dim, c.vision_num_heads
    d, n, k, h = c.embed_dim, c.num_heads, c.num_kv_heads, c.head_dim
    g = e * c.spatial_merge_size ** 2
    specs: list[WeightSpec] = []

    def add(hf_name: str, path: Path, pattern: str, **sizes: int):
        specs.append(WeightSpec(hf_name, tuple(path), pattern, sizes))

    def linear(hf: str, path: Path, fan_in: int, fan_out: int, bias: bool):
        add(hf + ".weight", path + ("kernel",), "o i -> i o", o=fan_out, i=fan_in)
        if bias:
            add(hf + ".bias", path + ("bias",), "o -> o", o=fan_out)

    def norm(hf: str, path: Path, dim: int):
        add(hf + ".weight", path + ("scale",), "x -> x", x=dim)

    add("visual.patch_embed.proj.weight", ("visual", "patch_embed", "kernel"),
        "e c t p q -> (c t p q) e", e=e, c=c.in_channels, t=c.temporal_patch_size,
        p=c.patch_size, q=c.patch_size)  # Conv3d kernel == stride: a linear map of the patch
    for i in range(c.vision_num_layers):
        hf, ours = f"visual.blocks.{i}.", ("visual", "blocks", i)
        norm(hf + "norm1", ours + ("norm1",), e)
        norm(hf + "norm2", ours + ("norm2",), e)
        add(hf + "attn.qkv.weight", ours + ("attn", "qkv", "kernel"), "(s n h) e -> e s n h",
            s=3, n=nv, h=e // nv, e=e)
        add(hf + "attn.qkv.bias", ours + ("attn", "qkv", "bias"), "(s n h) -> s n h",
            s=3, n=nv, h=e // nv)
        add(hf + "attn.proj.weight", ours + ("attn", "proj", "kernel"), "e (n h) -> n h e",
            e=e, n=nv, h=e // nv)
        add(hf + "attn.proj.bias", ours + ("attn", "proj", "bias"), "e -> e", e=e)
        for name, fi, fo in (("gate_proj", e, c.vision_mlp_dim), ("up_proj", e, c.vision_mlp_dim),
                             ("down_proj", c.vision_mlp_dim, e)):
            linear(hf + "mlp." + name, ours + ("mlp", name), fi, fo, bias=True)
    norm("visual.merger.ln_q", ("visual", "merger", "ln_q"), e)
    linear("visual.merger.mlp.0", ("visual", "merger", "fc1"), g, g, bias=True)
    linear("visual.merger.mlp.2", ("visual", "merger", "fc2"), g, d, bias=True)

    add("model.embed_tokens.weight", ("embed_tokens",), "v d -> v d", v=c.vocab_size, d=d)
    for i in range(c.num_layers):
        hf, ours = f"model.layers.{i}.", ("layers", i)
        norm(hf + "input_layernorm", ours + ("input_layernorm",), d)
        norm(hf + "post_attention_layernorm", ours + ("post_attention_layernorm",), d)
        for name, heads in (("q_proj", n), ("k_proj", k), ("v_proj", k)):
            p = ours + ("self_attn", name)
            add(hf + f"self_attn.{name}.weight", p + ("kernel",), "(n h) d -> d n h",
                n=heads, h=h, d=d)
            add(hf + f"self_attn.{name}.bias", p + ("bias",), "(n h) -> n h", n=heads, h=h)
        add(hf + "self_attn.o_proj.weight", ours + ("self_attn", "o_proj", "kernel"),
            "d (n h) -> n h d", d=d, n=n, h=h)
        for name, fi, fo in (("gate_proj", d, c.mlp_dim), ("up_proj", d, c.mlp_dim),
                             ("down_proj", c.mlp_dim, d)):
            linear(hf + "mlp." + name, ours + ("mlp", name), fi, fo, bias=False)
    norm("model.norm", ("norm",), d)
    if not c.tie_word_embeddings:
        add("lm_head.weight", ("lm_head", "kernel"), "v d -> d v", v=c.vocab_size, d=d)
    return specs


# --- names -----------------------------------------------------------------------------------

# transformers >= 4.52 names modules model.language_model.* / model.visual.* in memory;
# checkpoints (released and saved by transformers 5) use model.* / visual.*.
_IN_MEMORY_PREFIXES = (("model.language_model.", "model."), ("model.visual.", "visual."))


def checkpoint_name(name: str) -> str:
    """The checkpoint (released-layout) name of an HF tensor name in either layout."""
    for new, old in _IN_MEMORY_PREFIXES:
        if name.startswith(new):
            return old + name[len(new):]
    return name


def _listing(names: Iterable[str], limit: int = 20) -> str:
    names = sorted(names)
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def match_names(config: ModelConfig, names: Iterable[str]) -> dict[str, str]:
    """Maps each spec's hf_name to the given name holding it (names in either layout).
    Raises ValueError listing missing, unexpected or duplicated tensors. A tied model ignores
    an `lm_head.weight` (some exports write the tied copy)."""
    specs = weight_specs(config)
    by_name: dict[str, str] = {}
    dup = []
    for name in names:
        key = checkpoint_name(name)
        if key in by_name:
            dup.append(f"{by_name[key]} / {name}")
        by_name[key] = name
    if config.tie_word_embeddings:
        by_name.pop("lm_head.weight", None)
    expected = {s.hf_name for s in specs}
    missing, unexpected = expected - by_name.keys(), by_name.keys() - expected
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensor(s): {_listing(unexpected)}")
    if dup:
        problems.append(f"tensor(s) given twice: {_listing(dup)}")
    if problems:
        raise ValueError("checkpoint does not match the Qwen2.5-VL config "
                         f"({config.num_layers} layers, {config.vision_num_layers} vision "
                         f"blocks, tie_word_embeddings={config.tie_word_embeddings}): "
                         + "; ".join(problems))
    return {s.hf_name: by_name[s.hf_name] for s in specs}


def check_shape(spec: WeightSpec, shape: Iterable[int]) -> None:
    """Raises ValueError naming the tensor and both shapes when `shape` is not its HF shape."""
    shape = tuple(int(s) for s in shape)
    if shape != spec.hf_shape:
        ours = ".".join(map(str, spec.path))
        raise ValueError(f"tensor {spec.hf_name}: checkpoint shape {shape}, expected "
                         f"{spec.hf_shape} for this config (our param {ours} {spec.ours_shape})")


def check_covers(specs: list[WeightSpec], state: nnx.State) -> None:
    """Raises ValueError unless the config's weight table covers exactly the variables of
    `state` with the same shapes (a config that does not describe the model)."""
    flat = {p: v.get_value().shape for p, v in nnx.to_flat_state(state)}
    table = {s.path: s.ours_shape for s in specs}
    if flat != table:
        bad = sorted(set(flat.items()) ^ set(table.items()), key=str)
        raise ValueError(f"weight table of the config and model variables differ (path, shape): "
                         f"{bad[:10]}")


# --- in-memory import / export ---------------------------------------------------------------


def load_hf_weights(model: Qwen25VL, hf: Any) -> None:
    """Copies HF Qwen2.5-VL weights into `model` in place, keeping each param's dtype and
    sharding. `hf`: a torch `Qwen2_5_VLForConditionalGeneration` or a state dict (name ->
    array or tensor, either naming layout). Names and shapes are checked (ValueError)."""
    source = hf.state_dict() if hasattr(hf, "state_dict") else hf
    specs = weight_specs(model.config)
    names = match_names(model.config, source.keys())
    state = nnx.state(model)
    check_covers(specs, state)
    by_path = {s.path: s for s in specs}
    new = []
    for path, var in nnx.to_flat_state(state):
        spec = by_path[path]
        x = _numpy(source[names[spec.hf_name]])
        check_shape(spec, x.shape)
        old = var.get_value()
        value = spec.to_ours(x).astype(old.dtype)
        new.append((path, var.replace(jax.device_put(value, old.sharding))))
    nnx.update(model, nnx.from_flat_state(new))


def hf_tensors(model_or_state: nnx.Module | nnx.State, config: ModelConfig
               ) -> Iterator[tuple[WeightSpec, jax.Array]]:
    """(spec, our param array) for every weight, in checkpoint order; arrays stay where they
    are (call `spec.to_hf(np.asarray(x))` on a host copy)."""
    state = (nnx.state(model_or_state, nnx.Param) if isinstance(model_or_state, nnx.Module)
             else model_or_state)
    specs = weight_specs(config)
    check_covers(specs, state)
    values = {p: v.get_value() for p, v in nnx.to_flat_state(state)}
    for spec in specs:
        yield spec, values[spec.path]


def _numpy(x: Any) -> np.ndarray:
    """float32 numpy from a torch tensor (any dtype, incl. bf16) or an array."""
    if hasattr(x, "detach"):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, np.float32)
