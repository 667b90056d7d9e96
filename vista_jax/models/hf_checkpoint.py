"""HF checkpoint directories <-> sharded Qwen2.5-VL models, one tensor at a time.

`load_hf_checkpoint(path, mesh)` reads `config.json` and the safetensors shards (via
`model.safetensors.index.json`, or one `model.safetensors`) of a released or exported
Qwen2.5-VL checkpoint straight into a model whose params are already laid out on `mesh`:
each param is built with `jax.make_array_from_callback`, whose callback runs only for this
host's addressable shards and reads, through `safe_open(..., framework="numpy").get_slice`
(a memory map), only a contiguous range of the file covering that shard (see
`WeightSpec.to_ours`). No host holds the whole model, nor even a whole tensor unless one of
its shards needs it (a replicated param, or e.g. qkv rows split by heads).

`save_hf_checkpoint` writes the inverse: config.json, safetensors shards in the released
names plus the index, and the tokenizer files, gathering one param at a time to host; the
directory loads with `transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained`.
The name table and layouts live in `vista_jax.models.hf_convert`.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from vista_jax import sharding as sharding_lib
from vista_jax.models import hf_convert
from vista_jax.models.qwen2_5_vl import ModelConfig, Qwen25VL

log = logging.getLogger(__name__)

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

# Ids of the released Qwen2.5-VL tokenizer (config.json of Qwen/Qwen2.5-VL-*-Instruct);
# save_hf_checkpoint's defaults for ids our ModelConfig does not keep.
QWEN2_5_VL_TOKEN_IDS = dict(bos_token_id=151643, eos_token_id=151645, pad_token_id=151643,
                            vision_start_token_id=151652, vision_end_token_id=151653,
                            video_token_id=151656, max_position_embeddings=128000)

# Files of a tokenizer / processor directory copied next to the weights.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                   "special_tokens_map.json", "added_tokens.json", "chat_template.json",
                   "chat_template.jinja", "preprocessor_config.json", "processor_config.json",
                   "video_preprocessor_config.json", "generation_config.json")


# --- load ------------------------------------------------------------------------------------


def read_hf_config(path: str | os.PathLike, **overrides: Any) -> ModelConfig:
    """Our ModelConfig from `path/config.json` (nested transformers-5 or flat older format);
    `overrides` e.g. dtype="bfloat16", param_dtype="float32"."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"no config.json in {path}")
    return hf_convert.model_config_from_hf(json.loads(file.read_text()), **overrides)


def checkpoint_files(path: str | os.PathLike) -> dict[str, Path]:
    """Tensor name (as stored) -> the safetensors file holding it."""
    path = Path(path)
    if (path / INDEX_FILE).is_file():
        weight_map = json.loads((path / INDEX_FILE).read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{path / INDEX_FILE} has no weight_map")
        files = {name: path / file for name, file in weight_map.items()}
        absent = sorted({str(f) for f in files.values() if not f.is_file()})
        if absent:
            raise FileNotFoundError(f"{INDEX_FILE} lists missing shard files: {absent}")
        return files
    if (path / SINGLE_FILE).is_file():
        from safetensors import safe_open

        with safe_open(path / SINGLE_FILE, framework="numpy") as f:
            return {name: path / SINGLE_FILE for name in f.keys()}
    raise FileNotFoundError(f"neither {INDEX_FILE} nor {SINGLE_FILE} in {path}")


def load_hf_checkpoint(path: str | os.PathLike, mesh: jax.sharding.Mesh | None = None,
                       rules: sharding_lib.Rules = sharding_lib.DEFAULT_RULES,
                       **config_overrides: Any) -> tuple[Qwen25VL, ModelConfig]:
    """A `Qwen25VL` holding the weights of the HF checkpoint directory `path`, each param
    placed in its NamedSharding on `mesh` (by `rules`) as it is read; on one local device
    when `mesh` is None. `config_overrides` set ModelConfig fields HF does not describe
    (dtype, param_dtype): weights are cast to param_dtype.

    Raises ValueError listing missing / unexpected tensors, or naming a tensor whose shape
    differs from the config's, before any weight is placed."""
    from safetensors import safe_open

    cfg = read_hf_config(path, **config_overrides)
    if mesh is None:
        mesh = sharding_lib.make_mesh((1, 1, 1), devices=jax.local_devices()[:1])
    graphdef, abstract = sharding_lib.abstract_model(lambda: Qwen25VL(cfg, rngs=nnx.Rngs(0)),
                                                     mesh, rules)
    specs = hf_convert.weight_specs(cfg)
    hf_convert.check_covers(specs, abstract)
    files = checkpoint_files(path)
    stored = hf_convert.match_names(cfg, files)  # spec name -> stored name

    by_file: dict[Path, list[hf_convert.WeightSpec]] = collections.defaultdict(list)
    for spec in specs:
        by_file[files[stored[spec.hf_name]]].append(spec)
    for file, file_specs in by_file.items():  # every shape checked before any read
        with safe_open(file, framework="numpy") as f:
            for spec in file_specs:
                hf_convert.check_shape(spec, f.get_slice(stored[spec.hf_name]).get_shape())

    targets = {p: v.get_value() for p, v in nnx.to_flat_state(abstract)}
    arrays: dict[hf_convert.Path, jax.Array] = {}
    for file, file_specs in by_file.items():
        with safe_open(file, framework="numpy") as f:
            for spec in file_specs:
                arrays[spec.path] = _place(spec, f.get_slice(stored[spec.hf_name]),
                                           targets[spec.path])
    log.info("loaded %d tensors from %s onto mesh %s", len(arrays), path, dict(mesh.shape))
    state = nnx.from_flat_state([(p, v.replace(arrays[p]))
                                 for p, v in nnx.to_flat_state(abstract)])
    return nnx.merge(graphdef, state), cfg


def _place(spec: hf_convert.WeightSpec, source: Any, target: jax.ShapeDtypeStruct
           ) -> jax.Array:
    """The param `spec` as a global array in `target.sharding`, built from this host's
    shards only; devices holding the same block share one read."""
    blocks: dict[tuple, np.ndarray] = {}

    def block(index: tuple[slice, ...]) -> np.ndarray:  # our-layout block of one device
        key = tuple(s.indices(n)[:2] for s, n in zip(index, target.shape))
        if key not in blocks:
            blocks[key] = np.ascontiguousarray(spec.to_ours(source, index), target.dtype)
        return blocks[key]

    return jax.make_array_from_callback(target.shape, target.sharding, block,
                                        dtype=target.dtype)


# --- save ------------------------------------------------------------------------------------


def save_hf_checkpoint(model_or_state: nnx.Module | nnx.State, config: ModelConfig,
                       path: str | os.PathLike, *, token_ids: Mapping[str, int] | None = None,
                       dtype: str | None = None, shard_size_bytes: int = 5 * 10 ** 9,
                       tokenizer_dir: str | os.PathLike | None = None) -> Path:
    """Writes an HF Qwen2.5-VL checkpoint directory: config.json, safetensors shards of at
    most `shard_size_bytes` (one tensor may exceed it) in the released names with
    model.safetensors.index.json (or one model.safetensors), and the tokenizer files of
    `tokenizer_dir`. `token_ids`: ids for HF's config our ModelConfig does not keep
    (`hf_config_from` arguments), defaulting to the released Qwen2.5-VL ones. `dtype`:
    tensor dtype written (default: each param's). Params are gathered to host one at a time
    (all processes must call; process 0 writes)."""
    ids = {**QWEN2_5_VL_TOKEN_IDS, **(token_ids or {})}
    unknown = sorted(set(ids) - set(QWEN2_5_VL_TOKEN_IDS))
    if unknown:
        raise ValueError(f"unknown token_ids keys: {unknown}")
    too_big = {k: v for k, v in ids.items()
               if k.endswith("token_id") and not 0 <= v < config.vocab_size}
    if too_big:
        raise ValueError(f"token ids {too_big} outside the vocabulary ({config.vocab_size}); "
                         "pass token_ids=")
    tensors = list(hf_convert.hf_tensors(model_or_state, config))
    for spec, x in tensors:
        if tuple(x.shape) != spec.ours_shape:
            raise ValueError(f"param {'.'.join(map(str, spec.path))} has shape {x.shape}, "
                             f"config says {spec.ours_shape}")
    out_dtype = {spec.hf_name: np.dtype(dtype or x.dtype) for spec, x in tensors}
    shards = _plan_shards([(s.hf_name, out_dtype[s.hf_name].itemsize * int(np.prod(s.hf_shape)))
                           for s, _ in tensors], shard_size_bytes)

    writer = jax.process_index() == 0
    path = Path(path)
    if writer:
        path.mkdir(parents=True, exist_ok=True)
        hf_cfg = hf_convert.hf_config_from(config, **ids)
        hf_cfg.dtype = str(np.dtype(dtype or tensors[0][1].dtype))
        hf_cfg.architectures = ["Qwen2_5_VLForConditionalGeneration"]  # as released checkpoints
        hf_cfg.to_json_file(path / "config.json")
    by_name = {s.hf_name: (s, x) for s, x in tensors}
    names = [SINGLE_FILE] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map, total = {}, 0
    for file, shard in zip(names, shards):
        out = {}
        for name in shard:
            spec, value = by_name[name]
            x = spec.to_hf(_to_host(value)).astype(out_dtype[name])
            out[name], weight_map[name] = np.ascontiguousarray(x), file
            total += x.nbytes
        if writer:
            from safetensors.numpy import save_file

            save_file(out, str(path / file), metadata={"format": "pt"})
    if writer:
        if len(shards) > 1:
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (path / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        if tokenizer_dir is not None:
            copy_tokenizer_files(tokenizer_dir, path)
    log.info("saved %d tensors (%d bytes, %d files) to %s", len(tensors), total, len(shards),
             path)
    return path


def _plan_shards(sizes: list[tuple[str, int]], limit: int) -> list[list[str]]:
    """Greedy, in order: a new shard when the next tensor would push this one past limit."""
    if limit <= 0:
        raise ValueError(f"shard_size_bytes must be positive, got {limit}")
    shards, current, used = [], [], 0
    for name, size in sizes:
        if current and used + size > limit:
            shards.append(current)
            current, used = [], 0
        current.append(name)
        used += size
    return shards + [current] if current else shards


def _to_host(x: jax.Array) -> np.ndarray:
    """The full value of a (possibly multi-host) array on this host."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def copy_tokenizer_files(src: str | os.PathLike, dst: str | os.PathLike) -> list[str]:
    """Copies the tokenizer / processor files of `src` into `dst`; raises if there are
    none."""
    src = Path(src)
    found = [name for name in TOKENIZER_FILES if (src / name).is_file()]
    if not found:
        raise FileNotFoundError(f"no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...) "
                                f"in {src}")
    for name in found:
        shutil.copyfile(src / name, Path(dst) / name)
    return found


__all__ = ["QWEN2_5_VL_TOKEN_IDS", "checkpoint_files", "copy_tokenizer_files",
           "load_hf_checkpoint", "read_hf_config", "save_hf_checkpoint"]
