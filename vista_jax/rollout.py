"""Compiled sampling and the batched multi-turn agent loop.

The sampler keeps one fixed-shape state per batch of R rows: a "slot" KV cache of
`max_context` slots written at one shared index (rows of different lengths are handled by
padding slots that are never attended to), plus per-row M-RoPE positions on the host.

    prompt chunk (bucketed) ─▶ decode turn (jit while_loop, per-row stop) ─▶ env.step (one
    batched tool request) ─▶ observation chunk (bucketed) ─▶ decode turn ─▶ … ─▶ answer

Compiled functions: one image encoder, one prefill per bucket length, one decode loop per
attention window (powers of two over the filled cache prefix, `SamplerConfig.decode_window`)
and mode (greedy or sampled). Positive temperatures, stop sequences and turns of other
lengths reuse them: after warm-up no call recompiles (tests count the compilations). Each
generated token's log-prob is recorded while sampling, so the RL loss uses them as the old
policy's without another pass; top-k / top-p truncation and stop sequences are in
`vista_jax.sampling`.

An `Episode` is the compacted trajectory of one row (only its valid tokens, in order, with
their explicit M-RoPE positions): the same layout SFT trains on, so training recomputes
exactly the log-probs the sampler saw.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vista_jax import sampling
from vista_jax import tokenizer as tok_lib
from vista_jax.models import KVCache, init_cache, mrope_positions, preprocess_image
from vista_jax.models.qwen2_5_vl import _MASK_VALUE, apply_rotary, mrope_cos_sin
from vista_jax.models.vision import check_image_tokens


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    max_context: int  # KV-cache slots per row
    max_new_tokens: int  # tokens per assistant turn
    prompt_buckets: tuple[int, ...]  # prompt chunk lengths
    obs_buckets: tuple[int, ...]  # observation chunk lengths
    max_images_per_chunk: int  # images one chunk may carry
    image_size: int  # policy-side image resolution (px, multiple of 28)
    top_k: int = 0  # sample among the k most likely tokens (0 = off); static
    top_p: float = 1.0  # then within the minimal nucleus of this mass (1.0 = off); static
    max_stop_sequences: int = 4  # per-row stop sequences the decode loop checks (padded)
    max_stop_len: int = 8  # tokens per stop sequence (padded)
    min_decode_window: int = 32  # smallest attention window over the cache prefix (slots)

    def __post_init__(self):
        sampling.check_truncation(self.top_k, self.top_p)
        for name in ("max_context", "max_new_tokens", "max_stop_sequences", "max_stop_len",
                     "min_decode_window"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SamplerConfig.{name}={getattr(self, name)!r}: must be ≥ 1")

    @classmethod
    def from_config(cls, config) -> SamplerConfig:
        r = config.rollout
        return cls(int(r.max_context), int(config.env.turn_tokens), tuple(r.prompt_buckets),
                   tuple(r.obs_buckets), int(r.max_images_per_chunk), int(config.model.image_size),
                   top_k=int(r.top_k), top_p=float(r.top_p))

    def decode_window(self, index: int) -> int:
        """Cache-prefix slots a decode call starting at slot `index` attends to: the
        smallest power of two ≥ index (at least min_decode_window), capped at max_context.
        One decode compilation per window, as one prefill per chunk bucket."""
        w = max(int(self.min_decode_window), 1 << max(int(index) - 1, 0).bit_length())
        return min(w, int(self.max_context))


@dataclasses.dataclass
class Episode:
    """One finished row: compacted tokens plus what the learner and the report need."""

    tokens: np.ndarray  # int32 [n]
    positions: np.ndarray  # int32 [3, n]
    loss_mask: np.ndarray  # int32 [n], 1 on generated tokens
    logprobs: np.ndarray  # float32 [n], sampler log-probs of generated tokens (0 elsewhere)
    images: list[np.ndarray]  # pixel patches [P, F] of each image, in token order
    reward: float
    reward_components: dict[str, float]
    correct: bool
    num_turns: int
    num_tool_calls: int
    num_valid_tool_calls: int
    truncated: bool
    group: int  # index of the prompt this row was sampled for
    trajectory: dict[str, Any]  # the env's log record


def bucket(n: int, buckets: Sequence[int]) -> int:
    for b in sorted(buckets):
        if n <= b:
            return b
    raise ValueError(f"chunk of {n} tokens exceeds the largest bucket {max(buckets)}")


def _attend(q_btnh, kt, v, ok):
    """One query per row over the slots of a decode buffer, grouped KV heads.
    q [B, 1, N, H], keys transposed kt [B, K, H, C], values v [B, K, C, H], ok bool [B, C]
    -> [B, 1, N, H]. Float32 scores and softmax, K-major head groups, as the model's
    `dot_attention`. Keys are stored transposed so both products are plain batched
    matmuls over (B, K) that read the buffers in place (the cache's [B, S, K, H] layout
    would need a transposed copy of every layer at every step)."""
    b, _, n, h = q_btnh.shape
    kh = kt.shape[1]
    q = q_btnh.reshape(b, kh, n // kh, h)  # [B, K, G, H]
    scores = jnp.einsum("BKGH,BKHC->BKGC", q, kt.astype(q.dtype)).astype(jnp.float32)
    scores = jnp.where(ok[:, None, None], scores * h ** -0.5, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    out = jnp.einsum("BKGC,BKCH->BKGH", probs, v.astype(q.dtype))
    return out.reshape(b, 1, n, h)


def _decode_step(model, tokens, positions, slot, buf):
    """The decoder on one text token per row, as `Qwen25VL.__call__` with a cache but on
    a decode buffer: tokens/positions int [B] (text, so the three M-RoPE rows are equal);
    buf = (kt, v, ok): per-layer tuples kt [B, K, H, C], v [B, K, C, H] and ok bool [B, C],
    which already marks `slot`, where the token's key/value are written. Returns logits
    float32 [B, V] and the updated buffer. tests/test_sampling.py checks the decode loop
    against the model's full forward."""
    c = model.config
    b = tokens.shape[0]
    dtype = jnp.dtype(c.dtype)
    kts, vs, ok = list(buf[0]), list(buf[1]), buf[2]
    x = jnp.take(model.embed_tokens[...], tokens[:, None], axis=0).astype(dtype)  # [B, 1, D]
    cos, sin = mrope_cos_sin(jnp.broadcast_to(positions[None, :, None], (3, b, 1)),
                             c.head_dim, c.rope_theta, c.mrope_section)  # [B, 1, H]
    for i, layer in enumerate(model.layers):
        with jax.named_scope(f"decode_layer_{i}"):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = apply_rotary(attn.q_proj(h), cos, sin)  # [B, 1, N, H]
            k = apply_rotary(attn.k_proj(h), cos, sin)  # [B, 1, K, H]
            v = attn.v_proj(h)  # [B, 1, K, H]
            kts[i] = jax.lax.dynamic_update_slice(  # column `slot` of [B, K, H, C]
                kts[i], jnp.transpose(k, (0, 2, 3, 1)).astype(kts[i].dtype), (0, 0, 0, slot))
            vs[i] = jax.lax.dynamic_update_slice(
                vs[i], jnp.swapaxes(v, 1, 2).astype(vs[i].dtype), (0, 0, slot, 0))
            x = x + attn.o_proj(_attend(q, kts[i], vs[i], ok))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
    return model.logits(x)[:, 0], (tuple(kts), tuple(vs), ok)


def decode_phases(max_new_tokens: int, step: int = 32, max_phases: int = 8
                  ) -> list[tuple[int, int]]:
    """Step ranges [lo, hi) of the decode loop's phases: [0, 32), [32, 64), … up to
    max_new_tokens (phases grow past 32 steps so there are at most `max_phases`). A
    phase's buffer holds `hi` new slots, so attention reads the filled slots plus at most
    one phase's worth, not all max_new_tokens; each phase is one more while_loop to compile."""
    step = max(step, -(-max_new_tokens // max_phases))
    return [(lo, min(lo + step, max_new_tokens)) for lo in range(0, max_new_tokens, step)]


class Sampler:
    """Jitted prefill / decode over a slot KV cache for a fixed number of rows."""

    def __init__(self, graphdef: nnx.GraphDef, rest: nnx.State, model_config,
                 tokenizer: tok_lib.VistaTokenizer, config: SamplerConfig):
        """`graphdef`, `rest`: the policy split as nnx.split(model, nnx.Param, ...); the
        compiled functions take the params as an argument."""
        self.graphdef, self.rest = graphdef, rest
        self.model_config = model_config
        self.tok = tokenizer
        self.config = config
        self.grid = config.image_size // model_config.patch_size  # patches per side
        self.tokens_per_image = (self.grid // model_config.spatial_merge_size) ** 2
        if tokenizer.image_tokens_per_image != self.tokens_per_image:
            raise ValueError(f"tokenizer renders {tokenizer.image_tokens_per_image} image tokens, "
                             f"the model makes {self.tokens_per_image} per image")
        self.stop_ids = jnp.asarray(tokenizer.stop_ids, jnp.int32)
        self._encode = jax.jit(self._encode_impl)
        self._prefill = jax.jit(self._prefill_impl, donate_argnums=(1,))
        self._decode_loop = jax.jit(self._decode_impl, donate_argnums=(1,),
                                    static_argnames=("window", "greedy"))

    # --- compiled pieces -----------------------------------------------------------------

    def _model(self, params):
        return nnx.merge(self.graphdef, params, self.rest)

    def _encode_impl(self, params, patches):  # [N, P, F] -> [N, P/4, D]
        return self._model(params).encode_images(patches, grid_hw=(self.grid, self.grid))

    def _prefill_impl(self, params, cache, tokens, positions, valid, patches):
        """Writes one chunk for all rows; returns each row's logits after its last valid
        token. tokens/valid [R, T], positions [3, R, T], patches [R, M, P, F]."""
        model = self._model(params)
        r, m = patches.shape[:2]
        emb = model.encode_images(patches.reshape((r * m,) + patches.shape[2:]),
                                  grid_hw=(self.grid, self.grid))
        emb = emb.reshape(r, m * emb.shape[1], emb.shape[2])  # [R, M*P/4, D]
        last = jnp.maximum(jnp.sum(valid, axis=1) - 1, 0)  # rows are left-aligned in the chunk
        logits, cache = model(tokens, positions, valid, cache, image_embeds=emb, logits_at=last)
        return logits[:, 0], cache  # [R, V]

    def decode(self, params, cache: KVCache, first_logits, starts, active, rng,
               temperature=1.0, *, greedy: bool = False,
               stop_sequences: Sequence[Sequence[Sequence[int]]] | None = None):
        """Samples up to max_new_tokens per row after a prefill (one compiled while_loop).

        first_logits [R, V] (the prefill's), starts int [R] (each row's next M-RoPE
        position), active bool [R]; `temperature` 0 or `greedy` = argmax; top-k/top-p from
        the config; `stop_sequences[r]` = row r's token-id sequences (besides the
        tokenizer's single stop ids). A row stops right after a stop id or sequence (it is
        kept in the output), at max_new_tokens, or never starts when inactive.

        Returns tokens int32 [R, N] and their log-probs float32 [R, N] (the sampled
        distribution's, see vista_jax.sampling), lengths [R], the cache (donated: the
        argument is consumed) and the advanced positions [R]."""
        index = int(cache.index)  # the host needs it for the static attention window
        cfg = self.config
        if index + cfg.max_new_tokens > cache.max_len:
            raise ValueError(f"decode from cache slot {index} needs {cfg.max_new_tokens} more "
                             f"slots; the cache has {cache.max_len}")
        temp = 0.0 if greedy else float(temperature)
        if not temp >= 0:
            raise ValueError(f"temperature={temperature!r}: must be ≥ 0 (0 = greedy)")
        seqs, lens = sampling.pad_stop_sequences(stop_sequences, first_logits.shape[0],
                                                 cfg.max_stop_sequences, cfg.max_stop_len)
        # Greedy or not is static (one executable each: no per-step branch, no RNG work
        # when greedy); any positive temperature reuses the sampling one.
        return self._decode_loop(params, cache, first_logits, starts, active, rng,
                                 jnp.float32(max(temp, 1e-6)), seqs, lens,
                                 window=min(cfg.decode_window(index), cache.max_len),
                                 greedy=temp == 0)

    def _decode_impl(self, params, cache, first_logits, positions, active, rng, temperature,
                     stop_seqs, stop_lens, *, window: int, greedy: bool):
        """The decode loop. Per step each row's pending token runs through the decoder
        (`_decode_step`) and the next token is sampled. Keys/values live in a decode
        buffer, one array per layer with keys transposed: slots [0, window) hold the cache
        prefix (copied once per call; slots from cache.index on are masked), slot window + i
        the token of step i. One while_loop per `decode_phases` phase, run in sequence; each
        phase's buffer has room for the new slots up to its last step only (the next phase
        pads it once), so attention reads about the filled slots, not all of them. At the
        end the new slots go into the donated cache in place. Returns as `decode`."""
        model = self._model(params)
        c, cfg = self.model_config, self.config
        n_max = cfg.max_new_tokens
        r = first_logits.shape[0]
        start = cache.index
        layers = range(c.num_layers)
        buf = (tuple(jnp.transpose(cache.k[i, :, :window], (0, 2, 3, 1)) for i in layers),
               tuple(jnp.swapaxes(cache.v[i, :, :window], 1, 2) for i in layers),
               cache.valid[:, :window] & (jnp.arange(window) < start)[None])  # [B, K, H, W] ...

        def grow(buf, slots):  # pad the buffer's slot dim to `slots`
            kts, vs, ok = buf
            n = slots - ok.shape[1]
            return (tuple(jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, n))) for x in kts),
                    tuple(jnp.pad(x, ((0, 0), (0, 0), (0, n), (0, 0))) for x in vs),
                    jnp.pad(ok, ((0, 0), (0, n))))

        def sample(logits, rng):  # -> tokens [R], logprobs [R], next rng
            if greedy:
                return (*sampling.sample(logits, rng, 0.0, greedy=True), rng)
            rng, key = jax.random.split(rng)
            return (*sampling.sample(logits, key, temperature, cfg.top_k, cfg.top_p,
                                     greedy=False), rng)

        tok0, lp0, rng = sample(first_logits, rng)
        state = dict(
            i=jnp.int32(0), pending=tok0, pos=positions, act=active, rng=rng, buf=buf,
            out_tok=jnp.zeros((r, n_max), jnp.int32).at[:, 0].set(tok0),
            out_lp=jnp.zeros((r, n_max), jnp.float32).at[:, 0].set(lp0),
            tail=sampling.push_tail(jnp.full((r, cfg.max_stop_len), -1, jnp.int32), tok0,
                                    jnp.ones((r,), bool)))

        def body(s):
            i, pending, act = s["i"], s["pending"], s["act"]
            kts, vs, ok = s["buf"]
            slot = window + i
            ok = jax.lax.dynamic_update_slice(ok, act[:, None], (0, slot))
            logits, buf = _decode_step(model, pending, s["pos"], slot, (kts, vs, ok))
            nxt, lp, rng = sample(logits, s["rng"])
            stopped = (jnp.isin(pending, self.stop_ids)
                       | sampling.stop_sequence_hit(s["tail"], stop_seqs, stop_lens))
            can = act & ~stopped & (i + 1 < n_max)
            col = jnp.minimum(i + 1, n_max - 1)
            out_tok = s["out_tok"].at[:, col].set(jnp.where(can, nxt, s["out_tok"][:, col]))
            out_lp = s["out_lp"].at[:, col].set(jnp.where(can, lp, s["out_lp"][:, col]))
            return dict(i=i + 1, pending=jnp.where(can, nxt, pending),
                        pos=s["pos"] + act.astype(jnp.int32), act=can, rng=rng, buf=buf,
                        out_tok=out_tok, out_lp=out_lp,
                        tail=sampling.push_tail(s["tail"], nxt, can))

        for _, hi in decode_phases(n_max):
            state["buf"] = grow(state["buf"], window + hi)
            state = jax.lax.while_loop(lambda s, hi=hi: (s["i"] < hi) & jnp.any(s["act"]),
                                       body, state)
        kts, vs, ok = state["buf"]
        k, v = cache.k, cache.v
        for i in layers:  # the new slots into the donated cache, in place
            at = (i, 0, start, 0, 0)
            k = jax.lax.dynamic_update_slice(
                k, jnp.transpose(kts[i][..., window:], (0, 3, 1, 2))[None], at)
            v = jax.lax.dynamic_update_slice(v, jnp.swapaxes(vs[i][:, :, window:], 1, 2)[None], at)
        valid = jax.lax.dynamic_update_slice(cache.valid, ok[:, window:], (0, start))
        cache = KVCache(k=k, v=v, valid=valid, index=start + state["i"])
        return state["out_tok"], state["out_lp"], state["pos"] - positions, cache, state["pos"]

    # --- host-side chunk building --------------------------------------------------------

    def image_patches(self, image) -> np.ndarray:  # PIL -> [P, F]
        patches, _ = preprocess_image(image, self.config.image_size)
        return patches

    def build_chunk(self, segments: Sequence[tok_lib.Segment | None], starts: np.ndarray,
                    buckets: Sequence[int]):
        """Pads per-row segments into one chunk. Returns device-ready arrays, the per-row
        M-RoPE positions and patches (for the episode record) and next positions."""
        r = len(segments)
        t = bucket(max((len(s.ids) for s in segments if s is not None), default=1), buckets)
        m = self.config.max_images_per_chunk
        pdim = None
        tokens = np.full((r, t), self.tok.pad_id, np.int32)
        valid = np.zeros((r, t), bool)
        positions = np.zeros((3, r, t), np.int32)
        row_pos, row_patches, next_starts = [], [], np.array(starts, np.int64)
        patches_rows = []
        grid = (1, self.grid // 2, self.grid // 2)
        for b, seg in enumerate(segments):
            if seg is None:
                row_pos.append(None), row_patches.append([]), patches_rows.append([])
                continue
            n = len(seg.ids)
            if len(seg.images) > m:
                raise ValueError(f"chunk carries {len(seg.images)} images; "
                                 f"rollout.max_images_per_chunk is {m}")
            try:  # the compiled merge cannot raise: placeholders and features checked here
                check_image_tokens(seg.ids, len(seg.images) * grid[1] * grid[2],
                                   image_pad_id=self.tok.image_pad_id)
            except ValueError as e:
                raise ValueError(f"row {b}: {e} ({len(seg.images)} image(s) of "
                                 f"{grid[1] * grid[2]} tokens each)") from None
            pos, next_starts[b] = mrope_positions(seg.ids, [grid] * len(seg.images), int(starts[b]),
                                                  image_pad_id=self.tok.image_pad_id)
            tokens[b, :n], valid[b, :n], positions[:, b, :n] = seg.ids, True, pos
            pats = [self.image_patches(im) for im in seg.images]
            row_pos.append(pos), row_patches.append(pats), patches_rows.append(pats)
            if pats:
                pdim = pats[0].shape
        if pdim is None:
            pdim = (self.grid * self.grid, 3 * self.model_config.temporal_patch_size
                    * self.model_config.patch_size ** 2)
        patches = np.zeros((r, m) + pdim, np.float32)
        for b, pats in enumerate(patches_rows):
            for k, p in enumerate(pats):
                patches[b, k] = p
        return (tokens, positions, valid, patches), row_pos, row_patches, next_starts

    def new_cache(self, rows: int) -> KVCache:
        """An empty KV cache for `rows` rows of max_context slots. Under `jax.set_mesh` it is
        created directly in its shardings (rows over data/fsdp, kv heads over tensor: a
        7B's 16K-slot cache for a rollout batch never sits whole on one device)."""
        make = functools.partial(init_cache, self.model_config, rows, self.config.max_context)
        mesh = jax.sharding.get_mesh()
        if mesh.empty or mesh.size == 1:
            return make()
        from vista_jax import sharding

        shardings = sharding.cache_shardings(jax.eval_shape(make), mesh,
                                             self.model_config.sharding_rules or
                                             sharding.DEFAULT_RULES)
        return jax.jit(make, out_shardings=shardings)()

    def compilations(self) -> int:
        """Number of compiled variants of the sampler's jitted functions (for tests)."""
        return sum(f._cache_size() for f in (self._encode, self._prefill, self._decode_loop))


@dataclasses.dataclass
class _Row:
    tokens: list = dataclasses.field(default_factory=list)
    positions: list = dataclasses.field(default_factory=list)
    mask: list = dataclasses.field(default_factory=list)
    logprobs: list = dataclasses.field(default_factory=list)
    images: list = dataclasses.field(default_factory=list)

    def add(self, ids, pos, mask, logprobs, images=()):
        self.tokens.append(np.asarray(ids, np.int32))
        self.positions.append(np.asarray(pos, np.int32).reshape(3, -1))
        self.mask.append(np.asarray(mask, np.int32))
        self.logprobs.append(np.asarray(logprobs, np.float32))
        self.images.extend(images)


def run_episodes(sampler: Sampler, params, vec_env, tasks: Sequence[Any], *, rng: jax.Array,
                 temperature: float = 1.0, greedy: bool = False,
                 stop_sequences: Sequence[Sequence[Sequence[int]]] | None = None,
                 ) -> tuple[list[Episode], dict]:
    """Plays one episode per task (repeat tasks for groups) in lock step and returns the
    compacted episodes plus timing stats. `vec_env` is a VectorVistaEnv with len(tasks) envs.
    Turns are sampled at `temperature` (greedy: argmax) with the sampler's top-k/top-p and
    end at the tokenizer's stop ids or at a row's `stop_sequences` (token-id lists)."""
    cfg, tok = sampler.config, sampler.tok
    r = len(tasks)
    t0 = time.perf_counter()
    resets = vec_env.reset(tasks=list(tasks))
    t_tools = time.perf_counter() - t0
    rows = [_Row() for _ in range(r)]
    prompts = [tok.render_prompt(obs["messages"]) for obs, _ in resets]
    arrays, row_pos, row_pats, starts = sampler.build_chunk(prompts, np.zeros(r, np.int64),
                                                            cfg.prompt_buckets)
    for b, seg in enumerate(prompts):
        rows[b].add(seg.ids, row_pos[b], seg.loss_mask, np.zeros(len(seg.ids)), row_pats[b])
    cache = sampler.new_cache(r)
    logits, cache = sampler._prefill(params, cache, *arrays)
    used = arrays[0].shape[1]

    done = np.zeros(r, bool)
    finals: list[tuple[float, dict] | None] = [None] * r
    turns = np.zeros(r, np.int32)
    n_gen = 0
    t_decode = 0.0
    while not done.all():
        if used + cfg.max_new_tokens > cfg.max_context:
            break  # context exhausted: the remaining rows are truncated below
        td = time.perf_counter()
        out_tok, out_lp, lengths, cache, _ = sampler.decode(
            params, cache, logits, jnp.asarray(starts, jnp.int32), jnp.asarray(~done), rng,
            temperature, greedy=greedy, stop_sequences=stop_sequences)
        rng = jax.random.fold_in(rng, 1)
        out_tok, out_lp, lengths = map(np.asarray, (out_tok, out_lp, lengths))
        t_decode += time.perf_counter() - td
        used += int(lengths.max(initial=0))
        actions: list[str | None] = [None] * r
        for b in np.flatnonzero(~done):
            n = int(lengths[b])
            ids = out_tok[b, :n]
            pos = np.broadcast_to(np.arange(starts[b], starts[b] + n), (3, n))
            rows[b].add(ids, pos, np.ones(n), out_lp[b, :n])
            starts[b] += n
            n_gen += n
            turns[b] += 1
            actions[b] = tok.decode(ids)
        t1 = time.perf_counter()
        results = vec_env.step(actions)
        t_tools += time.perf_counter() - t1
        obs_segments: list[tok_lib.Segment | None] = [None] * r
        for b, res in enumerate(results):
            if actions[b] is None:
                continue
            obs, reward, terminated, truncated, info = res
            if terminated or truncated:
                done[b] = True
                finals[b] = (float(reward), info)
            else:
                try:  # long tool results are cut to the largest observation bucket
                    obs_segments[b] = tok.render_observation(obs["messages"],
                                                             max_tokens=max(cfg.obs_buckets))
                except ValueError:  # not even its images and tags fit: end the episode
                    done[b] = True
                    reward, info = vec_env.truncate(b)
                    finals[b] = (float(reward), info)
        if done.all():
            break
        need = max(len(s.ids) for s in obs_segments if s is not None)
        if used + bucket(need, cfg.obs_buckets) + cfg.max_new_tokens > cfg.max_context:
            break
        arrays, row_pos, row_pats, starts = sampler.build_chunk(obs_segments, starts,
                                                                cfg.obs_buckets)
        for b, seg in enumerate(obs_segments):
            if seg is not None:
                rows[b].add(seg.ids, row_pos[b], seg.loss_mask, np.zeros(len(seg.ids)), row_pats[b])
        logits, cache = sampler._prefill(params, cache, *arrays)
        used += arrays[0].shape[1]

    for b in np.flatnonzero(~done):  # out of context: end the episode without an answer
        reward, info = vec_env.truncate(b)
        finals[b] = (float(reward), info)

    episodes = []
    for b in range(r):
        reward, info = finals[b]
        traj = vec_env.envs[b].trajectory()
        comps = dict(info.get("reward_components", {}))
        calls = [t for t in traj.get("turns", []) if t.get("tool_call") is not None]
        valid_calls = [t for t in calls if (t.get("tool_result") or {}).get("ok")]
        row = rows[b]
        # A trailing observation without a following assistant turn carries no signal.
        episodes.append(Episode(
            tokens=np.concatenate(row.tokens), positions=np.concatenate(row.positions, axis=1),
            loss_mask=np.concatenate(row.mask), logprobs=np.concatenate(row.logprobs),
            images=row.images, reward=reward, reward_components=comps,
            correct=bool(comps.get("correct", 0) > 0), num_turns=int(turns[b]),
            num_tool_calls=len(calls), num_valid_tool_calls=len(valid_calls),
            truncated=bool(info.get("truncated", False)), group=b, trajectory=traj))
    stats = {"rollout_s": time.perf_counter() - t0, "decode_s": t_decode, "tools_s": t_tools,
             "generated_tokens": n_gen,
             "decode_tokens_per_s": n_gen / max(t_decode, 1e-9)}
    return episodes, stats
