"""Packing trajectories into fixed-shape training batches, and grain pipelines.

Every training batch, SFT or RL, has the layout documented in `rl/train_step.py`: one row
per trajectory, padded on the right to a bucket length, images as pixel patches.

Multi-host: each process builds only its slice of a global batch (`host_slice` for RL rows,
`sft_iterator(shard=...)` for SFT) and `global_batch` assembles the slices into arrays
sharded over the mesh, without any host holding the whole batch on device.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from vista_jax.rollout import bucket


def pack_rows(rows: Sequence[dict[str, Any]], seq_len: int, max_images: int,
              patch_shape: tuple[int, int], pad_id: int) -> dict[str, np.ndarray]:
    """Packs rows (tokens [n], positions [3, n], loss_mask [n], optional logprobs [n],
    images: list of [P, F]) into batch arrays of length seq_len. Rows must fit."""
    b = len(rows)
    out = {
        "tokens": np.full((b, seq_len), pad_id, np.int32),
        "positions": np.zeros((b, 3, seq_len), np.int32),
        "valid": np.zeros((b, seq_len), bool),
        "loss_mask": np.zeros((b, seq_len), np.float32),
        "old_logprobs": np.zeros((b, seq_len), np.float32),
        "patches": np.zeros((b, max_images) + tuple(patch_shape), np.float32),
    }
    for i, row in enumerate(rows):
        n = len(row["tokens"])
        if n > seq_len or len(row["images"]) > max_images:
            raise ValueError(f"row {i} has {n} tokens / {len(row['images'])} images; "
                             f"the batch takes {seq_len} / {max_images}")
        out["tokens"][i, :n] = row["tokens"]
        out["positions"][i, :, :n] = row["positions"]
        out["valid"][i, :n] = True
        out["loss_mask"][i, :n] = row["loss_mask"]
        if row.get("logprobs") is not None:
            out["old_logprobs"][i, :n] = row["logprobs"]
        for k, p in enumerate(row["images"]):
            out["patches"][i, k] = p
    return out


def fits(row: dict[str, Any], seq_len: int, max_images: int) -> bool:
    return len(row["tokens"]) <= seq_len and len(row["images"]) <= max_images


def pack_episodes(episodes, buckets: Sequence[int], max_images: int, patch_shape, pad_id: int,
                  advantages: np.ndarray) -> dict[str, np.ndarray]:
    """An RL batch from rollout episodes, padded to the smallest bucket that fits them all."""
    rows = [{"tokens": e.tokens, "positions": e.positions, "loss_mask": e.loss_mask,
             "logprobs": e.logprobs, "images": e.images} for e in episodes]
    seq_len = bucket(max(len(r["tokens"]) for r in rows), buckets)
    batch = pack_rows(rows, seq_len, max_images, patch_shape, pad_id)
    batch["advantages"] = np.asarray(advantages, np.float32)
    return batch


def process_shard(shard: tuple[int, int] | None = None) -> tuple[int, int]:
    """(this process's index, process count): `shard` if given, else JAX's."""
    if shard is not None:
        index, count = shard
    else:
        import jax
        index, count = jax.process_index(), jax.process_count()
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} is not in [0, {count})")
    return index, count


def host_slice(num_rows: int, shard: tuple[int, int] | None = None) -> slice:
    """This process's contiguous block of a global batch of `num_rows` rows (e.g. whole
    GRPO groups when the per-host count is a multiple of the group size)."""
    index, count = process_shard(shard)
    if num_rows % count:
        raise ValueError(f"a global batch of {num_rows} rows does not split over {count} processes")
    per = num_rows // count
    return slice(index * per, (index + 1) * per)


def global_batch(local: dict[str, np.ndarray], sharding) -> dict[str, Any]:
    """Global jax.Arrays from this process's rows of each field (leading dim = local rows),
    laid out by `sharding` (batch-major NamedSharding); process p's rows come p-th. With
    one process it is a device_put."""
    import jax
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local.items()}


def sft_iterator(rows: Sequence[dict[str, Any]], *, batch_size: int, seq_len: int,
                 max_images: int, patch_shape, pad_id: int, seed: int,
                 shard: tuple[int, int] | None = None) -> Iterator[dict]:
    """Endless shuffled SFT batches through grain (its iterator state can be checkpointed).

    `batch_size` is the global batch; each of the `shard = (index, count)` processes
    (default: JAX's) reads and packs only its `batch_size // count` rows of every global
    batch: the same seeded shuffle everywhere, then every count-th element from `index`
    (grain's ShardByJaxProcess convention), so the union of the hosts' step-k batches is the
    single-process step-k batch."""
    import grain  # only the SFT pipeline needs it

    if len(rows) < batch_size:
        raise ValueError(f"{len(rows)} SFT rows is fewer than one batch of {batch_size}")
    index, count = process_shard(shard)
    if batch_size % count:
        raise ValueError(f"sft.batch_size={batch_size} does not split over {count} processes")

    def pack_one(row):
        return {k: v[0] for k, v in pack_rows([row], seq_len, max_images, patch_shape,
                                              pad_id).items()}

    ds = grain.MapDataset.source(list(rows)).seed(seed).shuffle().repeat()
    if count > 1:
        ds = ds[index::count]  # lazily, before packing: a host never packs others' rows
    ds = ds.map(pack_one).batch(batch_size // count, drop_remainder=True)
    return iter(ds.to_iter_dataset())


def task_iterator(mixture, *, start: int, split: str = "train",
                  shard: tuple[int, int] | None = None) -> Iterator[Any]:
    """Endless RL prompts through grain: the mixture's tasks start, start + 1, ... of
    `split` (procedural tasks: each index is a fresh task, so no shuffling is needed), its
    iterator state (`get_state()` / `set_state()`, the next index) saved in checkpoints.

    Per host: process `index` of `count` takes every count-th task from `start + index`, so
    the hosts' prompts are disjoint and their union is the single-process sequence."""
    import grain

    index, count = process_shard(shard)
    ds = grain.MapDataset.range(start, start + 2**62)
    if count > 1:
        ds = ds[index::count]
    return iter(ds.map(lambda i: mixture.task(int(i), split)).to_iter_dataset())
