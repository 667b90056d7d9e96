"""Greedy generation throughput: our compiled sampler against `transformers` generate, on
the SAME tiny random Qwen2.5-VL (HF weights copied into ours), in one process.

    python benchmarks/sampler_vs_hf.py                      # tiny, B=32 P=64 N=64, 3 repeats
    python benchmarks/sampler_vs_hf.py --size small --json  # embed 512, 8 layers; one JSON line

Text-only prompts of P random tokens (no padding), N new tokens per row, greedy, float32 on
CPU. Both sides are timed end to end (prefill + N tokens, host arrays out), warmed up once
first (ours compiles then); tokens/s = B * N / median seconds over --repeats runs.

What each side does per run:
- ours: `Sampler._prefill` (one chunk, bucket = P) then `Sampler._decode` (one jitted
  while_loop). The loop runs N model steps: its last step writes the N-th token into the
  cache for the next turn, a step HF skips (HF: prefill + N-1 steps).
- HF: `generate(input_ids, attention_mask, max_new_tokens=N, min_new_tokens=N,
  do_sample=False)` under `torch.inference_mode()`, dynamic KV cache, with the generation
  config's EOS unset so no logits processor runs (the greedy argmax is plain on both sides).

Figures are wall-clock on a shared machine: rerun, and compare only on the same machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vista_jax.models import ModelConfig, Qwen25VL, init_cache
from vista_jax.models.hf_convert import hf_config_from, load_hf_weights, model_config_from_hf
from vista_jax.rollout import Sampler, SamplerConfig

# Decoder sizes (our ModelConfig names); the vision tower is the tiny default in both
# (text-only prompts never run it).
SIZES = {
    "tiny": dict(embed_dim=128, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32,
                 mlp_dim=384, mrope_section=(4, 6, 6)),
    "small": dict(embed_dim=512, num_layers=8, num_heads=8, num_kv_heads=2, head_dim=64,
                  mlp_dim=1536, mrope_section=(8, 12, 12)),
}
VOCAB = 1024
# Special ids at the top of the vocab; prompts are drawn below them.
IMAGE, VIDEO, V_START, V_END = VOCAB - 4, VOCAB - 3, VOCAB - 2, VOCAB - 1
PAD, BOS, EOS = 0, 1, 2
IMAGE_SIZE = 56  # px; the sampler's image grid (unused by text-only prompts)


def hf_model(size: str, seed: int = 0):
    """A random HF Qwen2_5_VLForConditionalGeneration of `SIZES[size]` (fp32, eval mode)."""
    import torch
    import transformers

    cfg = ModelConfig(vocab_size=VOCAB, image_pad_id=IMAGE, **SIZES[size])
    config = hf_config_from(cfg, video_token_id=VIDEO, vision_start_token_id=V_START,
                            vision_end_token_id=V_END, bos_token_id=BOS, eos_token_id=EOS,
                            pad_token_id=PAD)
    torch.manual_seed(seed)
    return transformers.Qwen2_5_VLForConditionalGeneration(config).eval()


@dataclasses.dataclass(frozen=True)
class RawIdsTokenizer:
    """What `Sampler` reads from a tokenizer when it is driven with token ids directly."""

    image_tokens_per_image: int
    image_pad_id: int
    pad_id: int = PAD
    # Token ids are >= 0, so no row ever stops: every row decodes exactly N tokens, as HF
    # does with no EOS and max_new_tokens = N.
    stop_ids: tuple[int, ...] = (-1,)


def ours_generate_fn(sampler: Sampler, params, prompts: np.ndarray):
    """A function running prefill + greedy decode on `prompts` [B, P]; returns tokens [B, N]."""
    b, p = prompts.shape
    positions = np.broadcast_to(np.arange(p, dtype=np.int32), (3, b, p))
    valid = np.ones((b, p), bool)
    grid = IMAGE_SIZE // sampler.model_config.patch_size
    patches = np.zeros((b, 0, grid * grid, sampler.model_config.patch_dim), np.float32)  # no images
    args = tuple(jnp.asarray(x) for x in (prompts, positions, valid, patches))
    starts = jnp.full((b,), p, jnp.int32)
    active = jnp.ones((b,), bool)
    rng = jax.random.key(0)

    def generate() -> np.ndarray:
        cache = init_cache(sampler.model_config, b, sampler.config.max_context)
        logits, cache = sampler._prefill(params, cache, *args)
        tokens, _, lengths, _, _ = sampler._decode(params, cache, logits, starts, active, rng,
                                                   jnp.float32(1.0), greedy=True)
        tokens, lengths = np.asarray(tokens), np.asarray(lengths)
        assert (lengths == tokens.shape[1]).all(), lengths  # no row stopped early
        return tokens

    return generate


def hf_generate_fn(hf, prompts: np.ndarray, new_tokens: int):
    import torch

    input_ids = torch.from_numpy(prompts.astype(np.int64))
    attention_mask = torch.ones_like(input_ids)

    def generate() -> np.ndarray:
        with torch.inference_mode():
            out = hf.generate(input_ids, attention_mask=attention_mask,
                              max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              do_sample=False)
        return out[:, prompts.shape[1]:].numpy()

    return generate


def timed(fn, repeats: int) -> tuple[np.ndarray, float, list[float]]:
    """Warm-up call (its seconds), then `repeats` timed calls; returns the last output."""
    t0 = time.perf_counter()
    out = fn()
    warm = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, warm, times


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny", help="decoder size")
    ap.add_argument("--batch", "-B", type=int, default=32, help="rows per generate call")
    ap.add_argument("--prompt-len", "-P", type=int, default=64, help="prompt tokens per row")
    ap.add_argument("--new-tokens", "-N", type=int, default=64, help="generated tokens per row")
    ap.add_argument("--repeats", "-R", type=int, default=3, help="timed runs per side (median)")
    ap.add_argument("--torch-threads", type=int, default=os.cpu_count(),
                    help="torch intra-op threads (default: all cores, as JAX's CPU client uses)")
    ap.add_argument("--seed", type=int, default=0, help="weights and prompts")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Runs the benchmark; prints a table (or a JSON line) and returns the result dict."""
    import torch

    args = parse_args(argv)
    b, p, n = args.batch, args.prompt_len, args.new_tokens
    # JAX's CPU client sizes its intra-op pool to every core; torch gets the same by default
    # (torch.set_num_threads(os.cpu_count())). On a machine shared with another busy job,
    # torch's OpenMP barriers can stall for whole scheduler slices: compare --torch-threads 1.
    torch.set_num_threads(args.torch_threads)

    hf = hf_model(args.size, args.seed)
    gen = hf.generation_config
    gen.temperature = gen.top_p = gen.top_k = None  # greedy: no warnings about sampling knobs
    # No EOS: min_new_tokens would otherwise set the EOS logit to -inf, and HF's greedy
    # tokens would part from ours wherever EOS is the argmax. Without it no logits
    # processor runs and max_new_tokens alone fixes the length at N.
    gen.eos_token_id = None
    cfg = model_config_from_hf(hf.config)
    model = Qwen25VL(cfg, rngs=nnx.Rngs(0))
    load_hf_weights(model, hf)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    grid = IMAGE_SIZE // cfg.patch_size
    tok = RawIdsTokenizer((grid // cfg.spatial_merge_size) ** 2, cfg.image_pad_id)
    sampler = Sampler(graphdef, rest, cfg, tok, SamplerConfig(
        max_context=p + n, max_new_tokens=n, prompt_buckets=(p,), obs_buckets=(p,),
        max_images_per_chunk=0, image_size=IMAGE_SIZE))

    prompts = np.random.default_rng(args.seed).integers(BOS + 1, IMAGE, (b, p)).astype(np.int32)
    ours_out, ours_warm, ours_s = timed(ours_generate_fn(sampler, params, prompts), args.repeats)
    hf_out, hf_warm, hf_s = timed(hf_generate_fn(hf, prompts, n), args.repeats)

    ours_tps = b * n / statistics.median(ours_s)
    hf_tps = b * n / statistics.median(hf_s)
    result = {
        "size": args.size, "batch": b, "prompt_len": p, "new_tokens": n, "repeats": args.repeats,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "jax_backend": jax.default_backend(),
        "ours_tokens_per_s": ours_tps, "hf_tokens_per_s": hf_tps, "ratio": ours_tps / hf_tps,
        "ours_seconds": ours_s, "hf_seconds": hf_s,
        "ours_warmup_s": ours_warm, "hf_warmup_s": hf_warm,
        # Greedy paths diverge for good after the first differing token (a near tie that
        # the ~1e-5 logit differences flip), so this is mostly "how long they agree".
        "token_agreement": float((ours_out == hf_out).mean()),
        "rows_identical": int((ours_out == hf_out).all(axis=1).sum()),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result))
    return result


def format_table(r: dict) -> str:
    ms = lambda xs: statistics.median(xs) * 1e3  # noqa: E731
    return "\n".join([
        f"greedy generate, {r['size']} Qwen2.5-VL (random), B={r['batch']} P={r['prompt_len']} "
        f"N={r['new_tokens']}, fp32 {r['jax_backend']}, {r['cpu_count']} cores, "
        f"torch threads {r['torch_threads']}, median of {r['repeats']}",
        f"{'':22}{'tokens/s':>10}{'median ms':>11}{'warm-up s':>11}",
        f"{'ours (jit Sampler)':22}{r['ours_tokens_per_s']:>10.0f}{ms(r['ours_seconds']):>11.1f}"
        f"{r['ours_warmup_s']:>11.2f}",
        f"{'HF generate (torch)':22}{r['hf_tokens_per_s']:>10.0f}{ms(r['hf_seconds']):>11.1f}"
        f"{r['hf_warmup_s']:>11.2f}",
        f"ratio ours/HF: {r['ratio']:.2f}x   greedy agreement: "
        f"{100 * r['token_agreement']:.1f}% of tokens, {r['rows_identical']}/{r['batch']} rows "
        f"identical",
    ])


if __name__ == "__main__":
    main(sys.argv[1:])
