"""Device mesh and logical-axis sharding rules (maxtext style).

Params carry *logical* axis names (set in `vista_jax.models.qwen2_5_vl`); one rule table
maps them to mesh axes. Change the parallelism by changing the rules or the mesh shape,
never the model.

Mesh axes: "data" (pure data parallel), "fsdp" (data parallel + params sharded on "embed"),
"tensor" (heads / mlp / vocab split across devices).

Logical names used by the model and the KV cache:
    batch          leading dim of data arrays and the KV cache
    vocab          token embedding rows / logits
    embed          decoder hidden size (D)
    mlp            decoder SwiGLU hidden (F)
    heads          query heads (N)
    kv_heads       key/value heads (K)
    head_dim       per-head dim (H); decoder and vision
    norm           RMSNorm scales
    vision_embed   vision tower width (E)
    vision_mlp     vision SwiGLU hidden and the PatchMerger MLP hidden
    vision_heads   vision heads
    vision_merged  PatchMerger input (4 * E, one 2x2 group concatenated)
    patch          flattened pixel patch features (3 * 2 * 14 * 14)
    layers         KV cache layer dim
    cache_len      KV cache slots (S)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("norm", None),
    ("vision_embed", "fsdp"),
    ("vision_mlp", "tensor"),
    ("vision_heads", "tensor"),
    ("vision_merged", "fsdp"),
    ("patch", None),
    ("layers", None),
    ("cache_len", None),
)

RULE_SETS = {"default": DEFAULT_RULES}  # config.mesh.rules names one of these


def make_mesh(shape: Sequence[int] = (-1, 1, 1), names: Sequence[str] = MESH_AXES,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over all (or the given) devices; one -1 in `shape` takes the remaining devices.

    Axes are Auto (GSPMD propagation): jax's default Explicit axes make ordinary NNX layers
    fail under jit with ambiguous contraction shardings."""
    devices = list(devices) if devices is not None else jax.devices()
    shape = list(shape)
    if len(shape) != len(names):
        raise ValueError(f"mesh shape {shape} does not match axis names {names}")
    if shape.count(-1) > 1:
        raise ValueError(f"at most one -1 in mesh shape {shape}")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices do not divide into mesh {shape}")
        shape[shape.index(-1)] = len(devices) // known
    if math.prod(shape) != len(devices):
        raise ValueError(f"mesh {shape} needs {math.prod(shape)} devices, have {len(devices)}")
    return jax.make_mesh(tuple(shape), tuple(names), axis_types=(AxisType.Auto,) * len(names),
                         devices=devices)


def logical_to_mesh_spec(logical_axes: Sequence[str | None] | None, rules: Rules = DEFAULT_RULES,
                         shape: Sequence[int] | None = None, mesh: Mesh | None = None
                         ) -> PartitionSpec:
    """Maps logical axis names to a PartitionSpec through `rules`.

    Unknown names raise (typos should not silently replicate). A mesh axis is used at most
    once per spec (later dims that map to it are replicated). Given `shape` and `mesh`, a
    dim that the mapped mesh axes do not divide evenly is replicated instead."""
    if logical_axes is None:
        return PartitionSpec()
    table = dict(rules)
    used: set[str] = set()
    out = []
    for dim, name in enumerate(logical_axes):
        if name is None:
            out.append(None)
            continue
        if name not in table:
            raise ValueError(f"logical axis {name!r} has no sharding rule")
        target = table[name]
        axes = () if target is None else (target,) if isinstance(target, str) else tuple(target)
        axes = tuple(a for a in axes if a not in used)
        if axes and shape is not None and mesh is not None:
            size = math.prod(mesh.shape[a] for a in axes)
            if shape[dim] % size:
                log.info("replicating logical axis %r (dim %d of size %d) instead of sharding it "
                         "over %s (%d devices)", name, dim, shape[dim], axes, size)
                axes = ()
        used.update(axes)
        out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*out)


def _logical_axes(variable: nnx.Variable) -> tuple | None:
    return variable.get_metadata().get("out_sharding")


def model_shardings(model_or_state: nnx.Module | nnx.State, mesh: Mesh,
                    rules: Rules = DEFAULT_RULES) -> nnx.State:
    """NamedShardings for every variable of a model (or its nnx.State), same tree as
    `nnx.state(model)`: leaves are the variables with their value replaced by a sharding.
    Variables without logical axes are replicated."""
    state = (nnx.state(model_or_state) if isinstance(model_or_state, nnx.Module)
             else model_or_state)

    def one(v):
        spec = logical_to_mesh_spec(_logical_axes(v), rules, v.shape, mesh)
        return v.replace(NamedSharding(mesh, spec))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def abstract_model(make_model: Callable[[], nnx.Module], mesh: Mesh,
                   rules: Rules = DEFAULT_RULES) -> tuple[nnx.GraphDef, nnx.State]:
    """The graphdef and abstract state of `make_model()` without allocating it: state leaves
    are ShapeDtypeStructs carrying their NamedSharding on `mesh` (a concrete mesh, so the
    state can serve as an Orbax restore target).

    Works inside or outside `jax.set_mesh`: unlike `nnx.eval_shape` under a mesh, it never
    needs the logical names to be mesh axes."""
    holder = {}

    def init():
        holder["graphdef"], state = nnx.split(make_model())
        return state

    state = jax.eval_shape(init)
    shardings = model_shardings(state, mesh, rules)
    state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                         state, shardings)
    return holder["graphdef"], state


def create_sharded_model(make_model: Callable[[], nnx.Module], mesh: Mesh,
                         rules: Rules = DEFAULT_RULES) -> nnx.Module:
    """Builds `make_model()` with every param created directly in its sharded layout
    (a jitted init with out_shardings), never whole on one device."""
    graphdef, abstract = abstract_model(make_model, mesh, rules)
    shardings = jax.tree.map(lambda x: x.sharding, abstract)
    with jax.set_mesh(mesh):
        state = jax.jit(lambda: nnx.split(make_model())[1], out_shardings=shardings)()
    return nnx.merge(graphdef, state)


def batch_sharding(mesh: Mesh, rank: int, rules: Rules = DEFAULT_RULES) -> NamedSharding:
    """Sharding of a data array of `rank` dims split on its leading (batch) dim."""
    return NamedSharding(mesh, logical_to_mesh_spec(("batch",) + (None,) * (rank - 1), rules))


def cache_shardings(cache: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """NamedShardings for a `KVCache` (batch over data/fsdp, kv heads over tensor)."""
    from vista_jax.models.kv_cache import CACHE_LOGICAL_AXES, KVCache

    return KVCache(**{
        name: NamedSharding(mesh, logical_to_mesh_spec(axes, rules,
                                                       getattr(cache, name).shape, mesh))
        for name, axes in CACHE_LOGICAL_AXES.items()})
