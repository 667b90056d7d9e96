"""Compiled sampling and the batched multi-turn agent loop.

The sampler keeps one fixed-shape state per batch of R rows: a "slot" KV cache of
`max_context` slots written at one shared index (rows of different lengths are handled by
padding slots that are never attended to), plus per-row M-RoPE positions on the host.

    prompt chunk (bucketed) ─▶ decode turn (jit while_loop, per-row stop) ─▶ env.step (one
    batched tool request) ─▶ observation chunk (bucketed) ─▶ decode turn ─▶ … ─▶ answer

Compiled functions: one image encoder, one prefill per bucket length, one decode loop. After
warm-up no call recompiles (tests count the compilations). Each generated token's log-prob is
recorded while sampling, so the RL loss uses them as the old policy's without another pass.

An `Episode` is the compacted trajectory of one row (only its valid tokens, in order, with
their explicit M-RoPE positions): the same layout SFT trains on, so training recomputes
exactly the log-probs the sampler saw.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vista_jax import tokenizer as tok_lib
from vista_jax.models import init_cache, mrope_positions, preprocess_image


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    max_context: int  # KV-cache slots per row
    max_new_tokens: int  # tokens per assistant turn
    prompt_buckets: tuple[int, ...]  # prompt chunk lengths
    obs_buckets: tuple[int, ...]  # observation chunk lengths
    max_images_per_chunk: int  # images one chunk may carry
    image_size: int  # policy-side image resolution (px, multiple of 28)

    @classmethod
    def from_config(cls, config) -> SamplerConfig:
        r = config.rollout
        return cls(int(r.max_context), int(config.env.turn_tokens), tuple(r.prompt_buckets),
                   tuple(r.obs_buckets), int(r.max_images_per_chunk), int(config.model.image_size))


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
        self._decode = jax.jit(self._decode_impl, donate_argnums=(1,), static_argnames=("greedy",))

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
        logits, cache = model(tokens, positions, valid, cache, image_embeds=emb)
        last = jnp.maximum(jnp.sum(valid, axis=1) - 1, 0)  # rows are left-aligned in the chunk
        return jnp.take_along_axis(logits, last[:, None, None], axis=1)[:, 0], cache  # [R, V]

    def _decode_impl(self, params, cache, first_logits, positions, active, rng, temperature,
                     *, greedy: bool):
        """Samples up to max_new_tokens per row in one while_loop, stopping each row at a stop
        token and the whole loop when no row is left. Returns tokens/logprobs [R, N],
        per-row lengths [R], the cache and the advanced positions [R]."""
        model = self._model(params)
        n_max = self.config.max_new_tokens
        r = first_logits.shape[0]

        def sample(logits, key):  # [R, V] -> tokens [R], logprobs [R]
            logp = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)
            tok = jnp.argmax(logp, -1) if greedy else jax.random.categorical(key, logp, axis=-1)
            return tok.astype(jnp.int32), jnp.take_along_axis(logp, tok[:, None], -1)[:, 0]

        rng, key = jax.random.split(rng)
        tok0, lp0 = sample(first_logits, key)
        out_tok = jnp.zeros((r, n_max), jnp.int32).at[:, 0].set(tok0)
        out_lp = jnp.zeros((r, n_max), jnp.float32).at[:, 0].set(lp0)

        def cond(s):
            i, _, _, _, act, _, _, _ = s
            return (i < n_max) & jnp.any(act)

        def body(s):
            i, cache, pending, pos, act, out_tok, out_lp, rng = s
            pos3 = jnp.broadcast_to(pos[None, :, None], (3, r, 1))
            logits, cache = model(pending[:, None], pos3, act[:, None], cache)
            rng, key = jax.random.split(rng)
            nxt, lp = sample(logits[:, 0], key)
            can = act & ~jnp.isin(pending, self.stop_ids) & (i + 1 < n_max)
            col = jnp.minimum(i + 1, n_max - 1)
            out_tok = out_tok.at[:, col].set(jnp.where(can, nxt, out_tok[:, col]))
            out_lp = out_lp.at[:, col].set(jnp.where(can, lp, out_lp[:, col]))
            pos = pos + act.astype(jnp.int32)
            return i + 1, cache, jnp.where(can, nxt, pending), pos, can, out_tok, out_lp, rng

        state = (jnp.int32(0), cache, tok0, positions, active, out_tok, out_lp, rng)
        _, cache, _, positions_out, _, out_tok, out_lp, _ = jax.lax.while_loop(cond, body, state)
        lengths = positions_out - positions
        return out_tok, out_lp, lengths, cache, positions_out

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

    def compilations(self) -> int:
        """Number of compiled variants of the sampler's jitted functions (for tests)."""
        return sum(f._cache_size() for f in (self._encode, self._prefill, self._decode))


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
                 temperature: float = 1.0, greedy: bool = False) -> tuple[list[Episode], dict]:
    """Plays one episode per task (repeat tasks for groups) in lock step and returns the
    compacted episodes plus timing stats. `vec_env` is a VectorVistaEnv with len(tasks) envs."""
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
    cache = init_cache(sampler.model_config, r, cfg.max_context)
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
        out_tok, out_lp, lengths, cache, _ = sampler._decode(
            params, cache, logits, jnp.asarray(starts, jnp.int32), jnp.asarray(~done), rng,
            jnp.float32(max(temperature, 1e-6)), greedy=greedy)
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
