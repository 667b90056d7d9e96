"""The sampler and multi-turn loop on the tiny model with a scripted vector env (no tool
server): loss masks, log-prob consistency with the learner, compile counts, determinism."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from vista_jax import data
from vista_jax import tokenizer as tok_lib
from vista_jax.models import ModelConfig, Qwen25VL
from vista_jax.rl.train_step import make_logprob_fn
from vista_jax.rollout import Sampler, SamplerConfig, bucket, run_episodes

TEXTS = ["What is the value of Beta?", "Alpha | 23\nBeta | 41", "<think>look</think>",
         '<tool_call>{"name": "crop", "arguments": {"image": "img_0"}}</tool_call>',
         "<answer>18</answer>", "<tool_response>cropped</tool_response>"] * 10


@dataclasses.dataclass
class FakeTask:
    task_id: str
    meta: dict = dataclasses.field(default_factory=dict)
    family: str = "fake"


class ScriptedEnv:
    """Turn 1 gets a tool observation (with an image on even rows); turn 2 ends the episode
    with reward = number of characters the policy wrote, mod 3."""

    def __init__(self, seed, response="cropped"):
        self.turns, self.seed, self.texts, self.response = 0, seed, [], response

    def reset(self, task):
        self.turns, self.texts = 0, []
        img = Image.fromarray(np.full((40, 60, 3), 30 * self.seed % 255, np.uint8))
        return {"messages": [{"role": "system", "content": "Use tools."},
                             {"role": "user", "content": "What is the value of Beta?",
                              "images": [img]}]}, {}

    def step(self, text):
        self.turns += 1
        self.texts.append(text)
        if self.turns == 1:
            images = [Image.new("RGB", (28, 28), "red")] if self.seed % 2 == 0 else []
            msg = {"role": "tool", "content": f"<tool_response>{self.response}</tool_response>",
                   "images": images}
            return {"messages": [msg]}, 0.0, False, False, {}
        r = float(sum(len(t) for t in self.texts) % 3)
        return {"messages": []}, r, True, False, {"reward_components": {"correct": r}}

    def trajectory(self):
        return {"turns": [{"text": t} for t in self.texts], "answer": None}


class ScriptedVecEnv:
    def __init__(self, n, response="cropped"):
        self.envs = [ScriptedEnv(i, response) for i in range(n)]

    def reset(self, tasks):
        return [e.reset(t) for e, t in zip(self.envs, tasks)]

    def step(self, actions):
        return [None if a is None else e.step(a) for e, a in zip(self.envs, actions)]

    def truncate(self, i):
        return 0.0, {"truncated": True, "reward_components": {}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tok = tok_lib.load_or_train_tokenizer(tmp_path_factory.mktemp("tok"), lambda: TEXTS, 300, 4)
    cfg = ModelConfig.tiny(tok.vocab_size, tok.image_pad_id, num_layers=2)
    model = Qwen25VL(cfg, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    scfg = SamplerConfig(max_context=256, max_new_tokens=12, prompt_buckets=(32, 64),
                         obs_buckets=(16, 32), max_images_per_chunk=1, image_size=56)
    return tok, cfg, graphdef, params, rest, Sampler(graphdef, rest, cfg, tok, scfg)


def test_bucket():
    assert bucket(3, (16, 32)) == 16 and bucket(17, (16, 32)) == 32
    with pytest.raises(ValueError, match="33"):
        bucket(33, (16, 32))


def test_episodes_masks_logprobs_and_no_recompilation(setup):
    tok, cfg, graphdef, params, rest, sampler = setup
    tasks = [FakeTask(f"t{i}") for i in range(4)]
    env = ScriptedVecEnv(4)
    eps, stats = run_episodes(sampler, params, env, tasks, rng=jax.random.key(0))
    warm = sampler.compilations()
    for e in eps:
        assert e.num_turns == 2
        n_gen = int(e.loss_mask.sum())
        assert 2 <= n_gen <= 2 * 12
        # observation tokens (prompt, tool response, headers, image pads) are never trained on
        obs = e.tokens[e.loss_mask == 0]
        assert (obs == tok.image_pad_id).sum() == 4 * len(e.images)
        assert "<tool_response>cropped</tool_response>" in tok.decode(obs)
        assert np.all(e.logprobs[e.loss_mask == 0] == 0)
        assert np.all(e.logprobs[e.loss_mask == 1] <= 0)
        # positions increase along the compacted sequence's text
        assert np.all(np.diff(e.positions[0]) >= 0)
    assert len(eps[0].images) == 2 and len(eps[1].images) == 1

    # the learner recomputes exactly the sampler's log-probs on the compacted layout
    batch = data.pack_episodes(eps, (128, 256), 2, eps[0].images[0].shape, tok.pad_id,
                               np.zeros(4))
    logp = make_logprob_fn(graphdef, rest, (4, 4))(params, batch)
    mask = batch["loss_mask"] > 0
    np.testing.assert_allclose(np.asarray(logp)[mask], batch["old_logprobs"][mask], atol=2e-4)

    # a second batch of episodes (different lengths) compiles nothing new
    eps2, _ = run_episodes(sampler, params, ScriptedVecEnv(4), tasks, rng=jax.random.key(1))
    assert sampler.compilations() == warm


def test_greedy_is_deterministic_and_sampling_depends_on_rng(setup):
    tok, cfg, graphdef, params, rest, sampler = setup
    tasks = [FakeTask(f"t{i}") for i in range(4)]
    a, _ = run_episodes(sampler, params, ScriptedVecEnv(4), tasks, rng=jax.random.key(0), greedy=True)
    b, _ = run_episodes(sampler, params, ScriptedVecEnv(4), tasks, rng=jax.random.key(5), greedy=True)
    assert all(np.array_equal(x.tokens, y.tokens) for x, y in zip(a, b))
    c, _ = run_episodes(sampler, params, ScriptedVecEnv(4), tasks, rng=jax.random.key(5))
    assert any(not np.array_equal(x.tokens, y.tokens) for x, y in zip(a, c))


def test_oversized_tool_response_is_truncated_not_fatal(setup):
    """A tool result longer than the largest observation bucket (here 32 tokens) is cut to
    fit, with the truncation marker, instead of failing the whole batch of rollouts."""
    tok, cfg, graphdef, params, rest, sampler = setup
    tasks = [FakeTask(f"t{i}") for i in range(4)]
    long = " ".join(["Alpha | 23"] * 40)
    eps, _ = run_episodes(sampler, params, ScriptedVecEnv(4, long), tasks, rng=jax.random.key(0))
    for e in eps:
        obs = tok.decode(e.tokens[e.loss_mask == 0])
        assert e.num_turns == 2 and not e.truncated
        assert tok_lib.TRUNCATION_MARKER + "</tool_response>" in obs
    assert len(eps[0].images) == 2  # the tool's image survived the cut


def test_observation_that_cannot_fit_ends_its_episode(setup):
    """With an observation bucket smaller than a tool message's fixed tokens (headers,
    tags, image), the rollout truncates those episodes instead of failing the batch."""
    tok, cfg, graphdef, params, rest, _ = setup
    small = Sampler(graphdef, rest, cfg, tok, SamplerConfig(
        max_context=256, max_new_tokens=12, prompt_buckets=(32, 64), obs_buckets=(8,),
        max_images_per_chunk=1, image_size=56))
    tasks = [FakeTask(f"t{i}") for i in range(4)]
    eps, _ = run_episodes(small, params, ScriptedVecEnv(4), tasks, rng=jax.random.key(0))
    for e in eps:
        assert e.num_turns == 1 and e.truncated
        assert "tool_response" not in tok.decode(e.tokens)


def test_image_placeholders_must_match_the_images_features(setup):
    """A chunk whose image pads do not match its images' feature rows is refused on the
    host, naming both counts (the compiled merge would silently pad or reuse features)."""
    tok, *_, sampler = setup
    from PIL import Image

    image = Image.new("RGB", (40, 30), "white")
    good = tok.render_prompt([{"role": "user", "content": "hi", "images": [image]}])
    sampler.build_chunk([good], np.zeros(1, np.int64), (32, 64))  # 4 pads, 4 features: fine
    ids = good.ids[good.ids != tok.image_pad_id]  # the pads dropped, the image kept
    bad = tok_lib.Segment(ids, np.zeros(len(ids), np.int32), [image])
    with pytest.raises(ValueError, match=r"row 0: 0 image placeholder tokens but 4 image "
                                         r"feature rows \(1 image\(s\) of 4 tokens each\)"):
        sampler.build_chunk([bad], np.zeros(1, np.int64), (32, 64))
