"""The slot KV cache shared by prefill, decode and chunked prefill.

One cache serves a batch of B rows with S *slots* each and one shared write index: a call
with T tokens writes them to slots [index, index + T) of every row and advances index by T.
Rows of different lengths are handled with padding slots (`valid=False`): they are written
but never attended to. A query in slot i attends to key slot j iff j <= i and valid[b, j].

The cache does not check for overflow (it lives inside jit): callers keep index + T <= S.
`jax.lax.dynamic_update_slice` would clamp the write and silently overwrite the last slots.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

# Logical axis names of the cache arrays, resolved to mesh axes by `vista_jax.sharding`.
CACHE_LOGICAL_AXES = {
    "k": ("layers", "batch", "cache_len", "kv_heads", "head_dim"),
    "v": ("layers", "batch", "cache_len", "kv_heads", "head_dim"),
    "valid": ("batch", "cache_len"),
    "index": (),
}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Keys/values of every decoder layer plus which slots hold real tokens."""

    k: jax.Array  # [L, B, S, K, H] rotated keys
    v: jax.Array  # [L, B, S, K, H]
    valid: jax.Array  # bool [B, S]: slot holds a real (attendable) token
    index: jax.Array  # int32 []: next slot to write, shared by all rows

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def write_layer(self, layer: int, k_btkh: jax.Array, v_btkh: jax.Array) -> KVCache:
        """Writes one layer's new keys/values [B, T, K, H] at slots [index, index + T)."""
        start = (layer, 0, self.index, 0, 0)
        k = jax.lax.dynamic_update_slice(self.k, k_btkh[None].astype(self.k.dtype), start)
        v = jax.lax.dynamic_update_slice(self.v, v_btkh[None].astype(self.v.dtype), start)
        return dataclasses.replace(self, k=k, v=v)


def init_cache(config, batch: int, max_len: int, dtype=None) -> KVCache:
    """An empty cache for `batch` rows of `max_len` slots (dtype defaults to config.dtype)."""
    dtype = jnp.dtype(dtype or config.dtype)
    shape = (config.num_layers, batch, max_len, config.num_kv_heads, config.head_dim)
    return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
                   valid=jnp.zeros((batch, max_len), bool), index=jnp.zeros((), jnp.int32))
