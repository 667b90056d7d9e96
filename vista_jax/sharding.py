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

Activation names (`constrain` inside the decoder; separate from the param names so params
and activations can be laid out independently):
    act_batch      batch dim of [B, T, ...] activations
    act_length     token dim T (map it to a mesh axis for sequence sharding)
    act_embed      hidden dim D of the residual stream
    act_heads      query-head dim N of q
    act_kv_heads   kv-head dim K of new keys / values
    act_vocab      vocab dim V of the logits

Any dim whose size the mapped mesh axes do not divide falls back to replication (logged
once per trace), so e.g. 4 heads on a tensor axis of 8 still runs, unsharded on heads.

`config.mesh.rules` picks the table (`rules_from_config`): a rule-set name ("default",
"data_parallel"), a name followed by overrides ("default,heads=none,mlp=fsdp+tensor"),
or, in a Python config built from scratch, a sequence of (name, axes) pairs / a dict that
overrides "default".
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
    # activations
    ("act_batch", ("data", "fsdp")),
    ("act_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_vocab", "tensor"),
)

# Pure data parallelism: every param replicated, the batch split over all devices.
DATA_PARALLEL_RULES: Rules = tuple(
    (name, ("data", "fsdp", "tensor") if name in ("batch", "act_batch") else None)
    for name, _ in DEFAULT_RULES)

RULE_SETS = {"default": DEFAULT_RULES,  # data + fsdp (params' embed dims) + tensor (heads, mlp, vocab)
             "data_parallel": DATA_PARALLEL_RULES}  # config.mesh.rules names one of these


def _check_target(name: str, target: Any) -> str | tuple[str, ...] | None:
    """A rule's mesh-axis target normalised (None, one axis, or a tuple of axes)."""
    if target is None or target == ():
        return None
    axes = (target,) if isinstance(target, str) else tuple(target)
    bad = [a for a in axes if a not in MESH_AXES]
    if bad or len(set(axes)) != len(axes):
        raise ValueError(f"sharding rule {name!r} -> {target!r}: mesh axes must be distinct "
                         f"names from {MESH_AXES}")
    return axes[0] if len(axes) == 1 else axes


def resolve_rules(spec: Any = "default") -> tuple[tuple[str, Any], ...]:
    """The rule table `spec` names, as a hashable tuple of (logical name, mesh axes) pairs.

    `spec`: a rule-set name ("default", "data_parallel"); a string "base,name=axes,..." of
    overrides on that base (axes joined by "+", "none" or "" for replicated); or a sequence
    of (name, axes) pairs or a dict, overriding "default". Unknown rule sets, logical names
    and mesh axes raise ValueError naming them."""
    if isinstance(spec, str):
        base, *overrides = [part.strip() for part in spec.split(",")]
        if base not in RULE_SETS:
            raise ValueError(f"unknown sharding rule set {base!r}; one of {sorted(RULE_SETS)}")
        pairs = []
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"sharding rule override {item!r} is not name=axes")
            name, axes = (x.strip() for x in item.split("=", 1))
            pairs.append((name, None if axes.lower() in ("", "none") else tuple(axes.split("+"))))
        table = dict(RULE_SETS[base])
    else:
        pairs = list(spec.items()) if hasattr(spec, "items") else [tuple(p) for p in spec]
        table = dict(DEFAULT_RULES)
    for pair in pairs:
        if len(pair) != 2 or not isinstance(pair[0], str):
            raise ValueError(f"sharding rule {pair!r} is not a (logical name, mesh axes) pair")
        name, target = pair
        if name not in table:
            raise ValueError(f"sharding rule for unknown logical axis {name!r}; known: "
                             f"{sorted(table)}")
        table[name] = target
    return tuple((name, _check_target(name, target)) for name, target in table.items())


def rules_from_config(config) -> tuple[tuple[str, Any], ...]:
    """`resolve_rules(config.mesh.rules)` with the key named in the error."""
    try:
        return resolve_rules(config.mesh.rules)
    except (ValueError, TypeError) as e:
        raise ValueError(f"config.mesh.rules={config.mesh.rules!r}: {e}") from None


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
    dim that the mapped mesh axes do not divide evenly is sharded over the longest prefix
    of them that does divide it (often none: replicated)."""
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
            missing = [a for a in axes if a not in mesh.shape]
            if missing:
                raise ValueError(f"logical axis {name!r} maps to mesh axes {missing} that the "
                                 f"mesh {dict(mesh.shape)} lacks")
            fit = axes
            while fit and shape[dim] % math.prod(mesh.shape[a] for a in fit):
                fit = fit[:-1]
            if fit != axes:
                log.debug("logical axis %r (dim %d of size %d) does not divide over %s: sharded "
                         "over %s instead", name, dim, shape[dim], axes, fit or "nothing")
                axes = fit
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


def constrain(x: jax.Array, logical_axes: Sequence[str | None], rules: Rules | None = None
              ) -> jax.Array:
    """`with_sharding_constraint(x, rules(logical_axes))` under the current mesh
    (`jax.set_mesh`); the identity without one, or when the mesh has non-Auto axes (the
    explicit-sharding mode types shardings itself). Dims the mapped axes do not divide are
    left replicated. `rules` defaults to DEFAULT_RULES."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or any(t != AxisType.Auto for t in mesh.axis_types):
        return x
    if len(logical_axes) != x.ndim:
        raise ValueError(f"logical axes {tuple(logical_axes)} for an array of shape {x.shape}")
    spec = logical_to_mesh_spec(logical_axes, rules or DEFAULT_RULES, x.shape, mesh)
    return jax.lax.with_sharding_constraint(x, spec)


REMAT_POLICIES: dict[str, Callable | None] = {
    # None: no rematerialisation (every activation the backward pass needs is kept).
    "none": None,
    # Keep only each decoder layer's inputs; recompute the whole layer in the backward pass.
    "full": jax.checkpoint_policies.nothing_saveable,
    # Keep the weight matmuls' outputs (projections, MLP); recompute attention scores and
    # elementwise ops (matmuls with batch dims, e.g. QK^T, are not saved).
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def jit_keeping_shardings(fn: Callable, num_state: int) -> Callable:
    """`jax.jit(fn)` for an update `fn(*state, *rest) -> (*new_state, *aux)`: the first
    `num_state` arguments are donated and come back in the shardings they came in with.

    Without this, XLA's propagation picks the outputs' shardings (on a mesh it may transpose
    a param's spec), so the second call sees other input shardings and compiles a second
    program, the sampler recompiles for the moved params, and a run resumed from a
    checkpoint (restored in the intended shardings) would run the first program where the
    uninterrupted run ran the second: float sums in another order, not an exact resume.
    The jitted function is built on the first call from its arguments' shardings (one per
    distinct input layout)."""
    cache: dict[Any, Callable] = {}

    def jitted(args):
        shardings = jax.tree.map(lambda x: x.sharding, args[:num_state])
        key = (jax.tree.structure(shardings), tuple(jax.tree.leaves(shardings)))
        if key not in cache:
            cache[key] = jax.jit(fn, donate_argnums=tuple(range(num_state)),
                                 out_shardings=(*shardings, None))
        return cache[key]

    def call(*args):
        return jitted(args)(*args)

    call.lower = lambda *args: jitted(args).lower(*args)  # AOT (ShapeDtypeStructs with shardings)
    call.compilations = lambda: sum(f._cache_size() for f in cache.values())
    return call
