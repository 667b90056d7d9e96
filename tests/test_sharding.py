"""Logical-axis rules, and sharded == single-device forward on 8 fake CPU devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest
from jax.sharding import AbstractMesh, AxisType, PartitionSpec

from vista_jax import sharding

MESH = AbstractMesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)


def test_logical_to_mesh_spec():
    spec = sharding.logical_to_mesh_spec
    assert spec(("vocab", "embed")) == PartitionSpec("tensor", "fsdp")
    assert spec(("batch", None)) == PartitionSpec(("data", "fsdp"), None)
    assert spec(("embed", "heads", "head_dim")) == PartitionSpec("fsdp", "tensor", None)
    assert spec(None) == PartitionSpec()
    # A mesh axis is used once per spec: the second "tensor" dim is replicated.
    assert spec(("heads", "mlp")) == PartitionSpec("tensor", None)
    # Dims the mesh axes do not divide are replicated (shape-aware).
    assert spec(("embed", "kv_heads"), shape=(128, 3), mesh=MESH) == PartitionSpec("fsdp", None)
    assert spec(("batch",), shape=(6,), mesh=MESH) == PartitionSpec(None)
    custom = (("embed", None), ("mlp", ("fsdp", "tensor")))
    assert spec(("embed", "mlp"), custom) == PartitionSpec(None, ("fsdp", "tensor"))
    with pytest.raises(ValueError, match="no sharding rule"):
        spec(("embedding",))


def test_make_mesh_and_batch_sharding():
    n = len(jax.devices())
    mesh = sharding.make_mesh((-1, 1, 1))
    assert dict(mesh.shape) == {"data": n, "fsdp": 1, "tensor": 1}
    assert all(t == AxisType.Auto for t in mesh.axis_types)
    assert sharding.batch_sharding(mesh, 3).spec == PartitionSpec(("data", "fsdp"), None, None)
    with pytest.raises(ValueError):
        sharding.make_mesh((-1, -1, 1))
    with pytest.raises(ValueError):
        sharding.make_mesh((n + 1, 1, 1))


def test_model_param_logical_axes_all_have_rules():
    from flax import nnx

    from vista_jax.models import ModelConfig, Qwen25VL

    abstract = nnx.eval_shape(lambda: Qwen25VL(ModelConfig.tiny(256, 250), rngs=nnx.Rngs(0)))
    specs = sharding.model_shardings(abstract, sharding.make_mesh((-1, 1, 1)))
    leaves = jax.tree.leaves(specs)
    assert leaves and all(isinstance(s, jax.sharding.NamedSharding) for s in leaves)


def test_create_sharded_model_inside_a_mesh():
    """Creation works whether or not the caller already entered the mesh (nnx.eval_shape
    under a mesh would try to use the logical names as mesh axes)."""
    from flax import nnx

    from vista_jax.models import ModelConfig, Qwen25VL

    cfg = ModelConfig.tiny(256, 250, num_layers=1, vision_num_layers=1)
    mesh = sharding.make_mesh((-1, 1, 1))
    with jax.set_mesh(mesh):
        graphdef, abstract = sharding.abstract_model(lambda: Qwen25VL(cfg, rngs=nnx.Rngs(0)), mesh)
        model = sharding.create_sharded_model(lambda: Qwen25VL(cfg, rngs=nnx.Rngs(0)), mesh)
    emb = abstract["embed_tokens"].get_value()
    assert isinstance(emb, jax.ShapeDtypeStruct) and emb.shape == (256, 128)
    assert emb.sharding.spec == PartitionSpec("tensor", "fsdp")
    assert model.embed_tokens[...].sharding.spec == PartitionSpec("tensor", "fsdp")


_SUBPROCESS = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec
    from vista_jax import sharding
    from vista_jax.models import ModelConfig, Qwen25VL, init_cache, mrope_positions

    assert len(jax.devices()) == 8
    IMG, B, T = 250, 8, 16
    cfg = ModelConfig.tiny(256, IMG)
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, 200, (B, T)).astype(np.int32)
    tokens[:, 3:7] = IMG
    positions = np.stack([mrope_positions(row, [(1, 2, 2)], 0, image_pad_id=IMG)[0]
                          for row in tokens], axis=1)  # [3, B, T]
    valid = np.ones((B, T), bool)
    valid[1, 12:] = False
    valid[5, 9:11] = False
    patches = rng.normal(size=(B, 16, cfg.patch_dim)).astype(np.float32)

    def step(model, patches, tokens, positions, valid, cache):
        emb = model.encode_images(patches, grid_hw=(4, 4))  # [B, 4, D]
        full, _ = model(tokens, positions, valid, None, image_embeds=emb)
        cached, cache = model(tokens, positions, valid, cache, image_embeds=emb)
        return full, cached, cache.k

    ref = Qwen25VL(cfg, rngs=nnx.Rngs(0))
    ref_out = nnx.jit(step)(ref, patches, tokens, positions, valid, init_cache(cfg, B, 24))
    ref_out = [np.asarray(x) for x in ref_out]

    result = {}
    for shape in [(8, 1, 1), (2, 2, 2), (1, 1, 8)]:
        mesh = sharding.make_mesh(shape)
        model = sharding.create_sharded_model(lambda: Qwen25VL(cfg, rngs=nnx.Rngs(0)), mesh)
        init_diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in
                        zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(ref))))
        specs = {
            "embed_tokens": str(model.embed_tokens[...].sharding.spec),
            "q_proj": str(model.layers[0].self_attn.q_proj.kernel[...].sharding.spec),
            "gate_proj": str(model.layers[0].mlp.gate_proj.kernel[...].sharding.spec),
        }
        shard_shape = model.layers[0].mlp.gate_proj.kernel[...].addressable_shards[0].data.shape
        # Same params as the reference, in the sharded layout.
        nnx.update(model, jax.device_put(nnx.state(ref), sharding.model_shardings(model, mesh)))
        data = sharding.batch_sharding(mesh, 2)
        args = (jax.device_put(patches, sharding.batch_sharding(mesh, 3)),
                jax.device_put(tokens, data),
                jax.device_put(positions, NamedSharding(mesh, PartitionSpec(None, *data.spec))),
                jax.device_put(valid, data))
        cache = init_cache(cfg, B, 24)
        cache = jax.device_put(cache, sharding.cache_shardings(cache, mesh))
        with jax.set_mesh(mesh):
            out = nnx.jit(step)(model, *args, cache)
        result[str(shape)] = {
            "diffs": [float(np.abs(np.asarray(o) - r).max()) for o, r in zip(out, ref_out)],
            "init_diff": init_diff, "specs": specs, "gate_shard": list(shard_shape),
            "logits_spec": str(out[0].sharding.spec),
        }
    print("RESULT" + json.dumps(result))
""")


@pytest.fixture(scope="module")
def mesh_results():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _SUBPROCESS], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["(8, 1, 1)", "(2, 2, 2)", "(1, 1, 8)"])
def test_sharded_forward_matches_single_device(mesh_results, shape):
    r = mesh_results[shape]
    # full forward logits, cached-prefill logits, written keys
    assert max(r["diffs"]) < 1e-5, r
    # Created directly sharded, from the same init as the unsharded model.
    assert r["init_diff"] < 1e-6, r
    if shape == "(2, 2, 2)":
        assert r["specs"] == {"embed_tokens": "P('tensor', 'fsdp')",
                              "q_proj": "P('fsdp', 'tensor', None)",
                              "gate_proj": "P('fsdp', 'tensor')"}, r
        assert r["gate_shard"] == [64, 192]
    if shape == "(1, 1, 8)":
        assert r["gate_shard"] == [128, 48]  # mlp 384 over 8 tensor devices
