"""HF checkpoint directories in and out: safetensors shards -> (sharded) model -> shards,
checked against transformers' own save_pretrained / from_pretrained on tiny random
configs (fp32, no downloads)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vista_jax.models import ModelConfig, Qwen25VL, mrope_positions
from vista_jax.models import hf_convert
from vista_jax.models.hf_checkpoint import load_hf_checkpoint, save_hf_checkpoint

VOCAB, IMG, VIDEO, V_START, V_END = 256, 250, 251, 252, 253
TOKEN_IDS = dict(video_token_id=VIDEO, vision_start_token_id=V_START, vision_end_token_id=V_END,
                 bos_token_id=1, eos_token_id=2, pad_token_id=0, max_position_embeddings=1024)
GH, GW = 8, 6  # patch grid of each test image: 56 px windows cut it into ragged windows


def tiny(**overrides) -> ModelConfig:
    return ModelConfig.tiny(VOCAB, IMG, **{"num_layers": 2, "vision_window_size": 56,
                                           "vision_fullatt_block_indexes": (1,), **overrides})


def perturbed(model: Qwen25VL, seed: int) -> Qwen25VL:
    """Adds N(0, 0.1) to every param, so zero biases and unit norms also move the logits."""
    state = nnx.state(model)
    keys = iter(jax.random.split(jax.random.key(seed), len(jax.tree.leaves(state))))
    nnx.update(model, jax.tree.map(lambda x: x + 0.1 * jax.random.normal(next(keys), x.shape),
                                   state))
    return model


def hf_random_model(cfg: ModelConfig):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    hf = transformers.Qwen2_5_VLForConditionalGeneration(
        hf_convert.hf_config_from(cfg, **TOKEN_IDS)).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            noise = 0.1 * torch.randn_like(p)
            p.copy_(1 + noise if ("norm" in name or "ln_q" in name) else noise)
    return hf


def text_and_images(cfg: ModelConfig):
    """Two 8x6-patch images between text: (token ids, pixel patches [2, 48, C])."""
    pix = np.random.default_rng(6).normal(size=(2, GH * GW, cfg.patch_dim)).astype(np.float32)
    n = GH * GW // 4
    ids = [5, 6, V_START] + [IMG] * n + [V_END, 7, 8, V_START] + [IMG] * n + [V_END, 9]
    return ids, pix


@nnx.jit
def _forward(model, tokens, positions, pix):  # -> logits [1, T, V]
    emb = model.encode_images(pix, grid_hw=(GH, GW))  # [2, 12, D]
    logits, _ = model(tokens, positions, jnp.ones(tokens.shape, bool), None,
                      image_embeds=emb.reshape(1, -1, model.config.embed_dim))
    return logits


def our_logits(model: Qwen25VL, ids, pix) -> np.ndarray:  # [1, T, V]
    pos, _ = mrope_positions(ids, [(1, GH // 2, GW // 2)] * 2, 0, image_pad_id=IMG)
    return np.asarray(_forward(model, jnp.asarray([ids], jnp.int32), jnp.asarray(pos)[:, None],
                               jnp.asarray(pix)))


def hf_logits(hf, ids, pix) -> np.ndarray:  # [1, T, V]
    import torch

    input_ids = torch.tensor([ids])
    with torch.no_grad():
        return hf(input_ids=input_ids, pixel_values=torch.tensor(pix.reshape(-1, pix.shape[-1])),
                  image_grid_thw=torch.tensor([[1, GH, GW]] * 2),
                  mm_token_type_ids=(input_ids == IMG).int()).logits.numpy()


def params(model) -> dict:
    return {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model))}


def assert_same_params(a, b):
    a, b = params(a), params(b)
    assert a.keys() == b.keys()
    for path in a:
        assert a[path].dtype == b[path].dtype, path
        np.testing.assert_array_equal(a[path], b[path], err_msg=str(path))


# --- (a) transformers save_pretrained -> ours ---------------------------------------------------


def test_load_sharded_hf_checkpoint_matches_transformers_logits(tmp_path):
    cfg = tiny(tie_word_embeddings=False)  # lm_head present, as in the 7B checkpoint
    hf = hf_random_model(cfg)
    hf.save_pretrained(tmp_path, max_shard_size="200KB")
    shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(shards) > 3 and (tmp_path / "model.safetensors.index.json").is_file()

    model, loaded_cfg = load_hf_checkpoint(tmp_path)
    assert loaded_cfg == cfg
    ids, pix = text_and_images(cfg)
    ref = hf_logits(hf, ids, pix)
    diff = float(np.abs(our_logits(model, ids, pix) - ref).max())
    print(f"load: max |logits - HF| = {diff:.2e} (logits scale {np.abs(ref).max():.2f})")
    assert diff <= 1e-4

    # The in-memory importer (same table) gives bit-identical params.
    direct = Qwen25VL(cfg, rngs=nnx.Rngs(1))
    hf_convert.load_hf_weights(direct, hf)
    assert_same_params(model, direct)


# --- (b) ours -> save_hf_checkpoint -> transformers, and back ------------------------------------


def test_save_hf_checkpoint_loads_in_transformers_and_round_trips(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = tiny(tie_word_embeddings=True)  # tied, as in the 3B checkpoint
    model = perturbed(Qwen25VL(cfg, rngs=nnx.Rngs(3)), seed=4)

    tok_dir = tmp_path / "tok"
    _write_tokenizer(tok_dir)
    out = save_hf_checkpoint(model, cfg, tmp_path / "export", token_ids=TOKEN_IDS,
                             shard_size_bytes=200_000, tokenizer_dir=tok_dir)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 3
    assert "lm_head.weight" not in index["weight_map"]
    assert (out / "tokenizer.json").is_file() and (out / "tokenizer_config.json").is_file()
    tok = transformers.PreTrainedTokenizerFast.from_pretrained(out)
    assert tok.encode("a b c") == transformers.PreTrainedTokenizerFast.from_pretrained(
        tok_dir).encode("a b c")

    hf, info = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(
        out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert hf.dtype == __import__("torch").float32
    assert json.loads((out / "config.json").read_text())["architectures"] == [
        "Qwen2_5_VLForConditionalGeneration"]
    # the class named by config.json, as AutoModel-style loaders pick it
    assert type(hf).__name__ in transformers.AutoConfig.from_pretrained(out).architectures
    ids, pix = text_and_images(cfg)
    diff = float(np.abs(our_logits(model, ids, pix) - hf_logits(hf.eval(), ids, pix)).max())
    print(f"save: max |logits - HF from_pretrained| = {diff:.2e}")
    assert diff <= 1e-4

    back, back_cfg = load_hf_checkpoint(out)
    assert back_cfg == cfg
    assert_same_params(back, model)


def _write_tokenizer(path):
    import tokenizers
    import transformers

    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(
        {"[UNK]": 0, "a": 1, "b": 2, "c": 3}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(
        path)


# --- partial reads ---------------------------------------------------------------------------


class RecordingSource:
    """A numpy tensor that records the slices read from it."""

    def __init__(self, x):
        self.x, self.reads = x, []

    def __getitem__(self, index):
        self.reads.append(tuple((s.start, s.stop) for s in index))
        return self.x[index]


def test_to_ours_reads_only_the_slices_a_shard_needs():
    cfg = tiny(tie_word_embeddings=False)
    rng = np.random.default_rng(0)
    specs = {s.hf_name: s for s in hf_convert.weight_specs(cfg)}
    for spec in specs.values():  # every tensor, every block of a 2-way split of each dim
        x = rng.normal(size=spec.hf_shape).astype(np.float32)
        full = spec.to_ours(x)
        np.testing.assert_array_equal(spec.to_hf(full), x)
        for dim, n in enumerate(spec.ours_shape):
            for half in (slice(0, n // 2), slice(n // 2, n)):
                index = tuple(half if i == dim else slice(None) for i in range(len(full.shape)))
                np.testing.assert_array_equal(spec.to_ours(x, index), full[index],
                                              err_msg=f"{spec.hf_name} {index}")

    d, h = cfg.embed_dim, cfg.head_dim
    q = specs["model.layers.0.self_attn.q_proj.weight"]  # HF [(N H), D] -> ours [D, N, H]
    src = RecordingSource(rng.normal(size=q.hf_shape))
    q.to_ours(src, (slice(0, d // 2), slice(2, 4), slice(None)))  # fsdp x tensor shard
    assert src.reads == [((2 * h, 4 * h), (0, d // 2))]  # heads 2-3 rows, half the columns
    emb = specs["model.embed_tokens.weight"]
    src = RecordingSource(rng.normal(size=emb.hf_shape))
    emb.to_ours(src, (slice(64, 128), slice(32, 64)))
    assert src.reads == [((64, 128), (32, 64))]
    # qkv rows are (3, N, H): one head of each of q, k, v is not contiguous -> all rows read.
    qkv = specs["visual.blocks.0.attn.qkv.weight"]
    src = RecordingSource(rng.normal(size=qkv.hf_shape))
    qkv.to_ours(src, (slice(0, 32), slice(None), slice(1, 2), slice(None)))
    assert src.reads == [((0, qkv.hf_shape[0]), (0, 32))]


# --- (c) onto a mesh of 8 fake devices -----------------------------------------------------------

_MESH_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from flax import nnx
    from vista_jax import sharding
    from vista_jax.models.hf_checkpoint import load_hf_checkpoint

    assert len(jax.devices()) == 8
    single, cfg = load_hf_checkpoint(sys.argv[1])
    ref = {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(single))}
    out = {}
    for shape in [(2, 2, 2), (1, 2, 4)]:
        mesh = sharding.make_mesh(shape)
        model, _ = load_hf_checkpoint(sys.argv[1], mesh)
        want = {p: v.get_value().spec for p, v in
                nnx.to_flat_state(sharding.model_shardings(nnx.state(model), mesh))}
        got = {p: v.get_value() for p, v in nnx.to_flat_state(nnx.state(model))}
        out[str(shape)] = {
            "wrong_spec": [str(p) for p, x in got.items()
                           if x.sharding.spec != want[p] or x.sharding.mesh != mesh],
            "max_diff": max(float(np.abs(np.asarray(x) - ref[p]).max()) for p, x in got.items()),
            "specs": {".".join(map(str, p)): str(x.sharding.spec) for p, x in got.items()
                      if p in [("embed_tokens",), ("lm_head", "kernel"),
                               ("layers", 0, "self_attn", "q_proj", "kernel"),
                               ("layers", 0, "self_attn", "k_proj", "kernel"),
                               ("visual", "blocks", 0, "attn", "qkv", "kernel")]},
            "gate_shard": list(got[("layers", 0, "mlp", "gate_proj", "kernel")]
                               .addressable_shards[0].data.shape),
        }
    print("RESULT" + json.dumps(out))
""")


def test_load_onto_8_device_mesh_matches_single_device(tmp_path, eight_device_env):
    cfg = tiny(tie_word_embeddings=False)
    save_hf_checkpoint(perturbed(Qwen25VL(cfg, rngs=nnx.Rngs(5)), seed=6), cfg, tmp_path,
                       token_ids=TOKEN_IDS, shard_size_bytes=300_000)
    proc = subprocess.run([sys.executable, "-c", _MESH_SCRIPT, str(tmp_path)], env=eight_device_env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(next(line for line in proc.stdout.splitlines()
                             if line.startswith("RESULT"))[len("RESULT"):])
    for shape, r in result.items():
        assert r["wrong_spec"] == [] and r["max_diff"] == 0.0, (shape, r)
    assert result["(2, 2, 2)"]["specs"] == {
        "embed_tokens": "P('tensor', 'fsdp')", "lm_head.kernel": "P('fsdp', 'tensor')",
        "layers.0.self_attn.q_proj.kernel": "P('fsdp', 'tensor', None)",
        "layers.0.self_attn.k_proj.kernel": "P('fsdp', 'tensor', None)",
        "visual.blocks.0.attn.qkv.kernel": "P('fsdp', None, 'tensor', None)"}
    # 2 kv heads do not split over 4 tensor devices: replicated on that dim.
    assert result["(1, 2, 4)"]["specs"]["layers.0.self_attn.k_proj.kernel"] == \
        "P('fsdp', None, None)"
    assert result["(2, 2, 2)"]["gate_shard"] == [64, 192]
    assert result["(1, 2, 4)"]["gate_shard"] == [64, 96]


# --- (d) bad checkpoints -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """A one-file checkpoint of a 1-layer model: (dir, config, model)."""
    cfg = tiny(num_layers=1, vision_num_layers=1, vision_fullatt_block_indexes=(0,),
               tie_word_embeddings=False)
    model = perturbed(Qwen25VL(cfg, rngs=nnx.Rngs(7)), seed=8)
    path = save_hf_checkpoint(model, cfg, tmp_path_factory.mktemp("small"), token_ids=TOKEN_IDS)
    assert (path / "model.safetensors").is_file()
    assert not (path / "model.safetensors.index.json").exists()
    return path, cfg, model


def edited_copy(src, dst, edit):
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    edit(tensors)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_missing_unexpected_and_misshapen_tensors_are_named(small_checkpoint, tmp_path):
    src, _, _ = small_checkpoint
    path = edited_copy(src, tmp_path / "missing",
                       lambda t: t.pop("model.layers.0.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"missing 1 tensor\(s\): model.layers.0.mlp.up_proj"):
        load_hf_checkpoint(path)

    def extra(t):
        t["model.layers.1.mlp.up_proj.weight"] = t["model.layers.0.mlp.up_proj.weight"]
        t["visual.blocks.0.attn.rotary.inv_freq"] = np.zeros(4, np.float32)
    path = edited_copy(src, tmp_path / "unexpected", extra)
    with pytest.raises(ValueError, match=r"unexpected 2 tensor\(s\): model.layers.1.mlp.up_proj"
                                         r".weight, visual.blocks.0.attn.rotary.inv_freq"):
        load_hf_checkpoint(path)

    def transpose(t):
        name = "model.layers.0.self_attn.k_proj.weight"
        t[name] = np.ascontiguousarray(t[name].T)
    path = edited_copy(src, tmp_path / "shape", transpose)
    with pytest.raises(ValueError, match=r"model.layers.0.self_attn.k_proj.weight: checkpoint "
                                         r"shape \(128, 64\), expected \(64, 128\)"):
        load_hf_checkpoint(path)

    # A config that disagrees with the tensors (2 layers declared, 1 stored).
    path = shutil.copytree(src, tmp_path / "config")
    cfg_json = json.loads((path / "config.json").read_text())
    cfg_json["text_config"]["num_hidden_layers"] = 2
    (path / "config.json").write_text(json.dumps(cfg_json))
    with pytest.raises(ValueError, match=r"missing \d+ tensor\(s\): model.layers.1."):
        load_hf_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_checkpoint(tmp_path)


def test_bfloat16_checkpoint_is_cast_to_param_dtype(small_checkpoint, tmp_path):
    """Released checkpoints are bf16: read through numpy (ml_dtypes) and cast on load."""
    _, cfg, model = small_checkpoint
    path = save_hf_checkpoint(model, cfg, tmp_path, token_ids=TOKEN_IDS, dtype="bfloat16")
    assert json.loads((path / "config.json").read_text())["dtype"] == "bfloat16"
    fp32, _ = load_hf_checkpoint(path)
    bf16, bf16_cfg = load_hf_checkpoint(path, param_dtype="bfloat16")
    assert bf16_cfg == dataclasses.replace(cfg, param_dtype="bfloat16")
    for (p, a), b in zip(params(fp32).items(), params(bf16).values()):
        assert a.dtype == np.float32 and b.dtype == jnp.bfloat16, p
        np.testing.assert_array_equal(a, b.astype(np.float32), err_msg=str(p))
        want = params(model)[p].astype(jnp.bfloat16).astype(np.float32)
        np.testing.assert_array_equal(a, want, err_msg=str(p))


def test_config_json_formats_and_save_argument_checks(small_checkpoint, tmp_path):
    path, cfg, model = small_checkpoint
    nested = json.loads((path / "config.json").read_text())
    assert hf_convert.model_config_from_hf(nested) == cfg
    # The flat layout of the released checkpoints' config.json (transformers 4.x).
    text = nested.pop("text_config")
    rope = text.pop("rope_parameters")
    vision = dict(nested.pop("vision_config"))
    vision["in_chans"] = vision.pop("in_channels", 3)
    flat = {**text, **nested, "vision_config": vision, "rope_theta": rope["rope_theta"],
            "rope_scaling": {"type": "mrope", "mrope_section": rope["mrope_section"]}}
    assert hf_convert.model_config_from_hf(flat) == cfg
    with pytest.raises(ValueError, match="mrope_section"):
        hf_convert.model_config_from_hf({**flat, "rope_scaling": {"type": "default"}})
    with pytest.raises(ValueError, match="use_sliding_window"):
        hf_convert.model_config_from_hf({**flat, "use_sliding_window": True})

    with pytest.raises(ValueError, match="outside the vocabulary"):  # released ids > 256
        save_hf_checkpoint(model, cfg, tmp_path / "a")
    with pytest.raises(ValueError, match="unknown token_ids"):
        save_hf_checkpoint(model, cfg, tmp_path / "b", token_ids={**TOKEN_IDS, "img": 3})
    with pytest.raises(ValueError, match="weight table"):
        save_hf_checkpoint(model, dataclasses.replace(cfg, num_layers=2), tmp_path / "c",
                           token_ids=TOKEN_IDS)
