"""A tiny real policy, sampler and a one-turn fake vector env for the learner tests."""

import dataclasses
import importlib.util
import os
import types

import jax
import numpy as np
import pytest
from flax import nnx

from vista_jax import tokenizer as tok_lib
from vista_jax.models import ModelConfig, Qwen25VL
from vista_jax.rollout import Sampler, SamplerConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEXTS = ["What is the value of Beta?", "Alpha | 23\nBeta | 41", "<think>look</think>",
         "<answer>18</answer>", "Say a word.", "the cat sat on a mat", "zebra xylophone"] * 10


@dataclasses.dataclass
class FakeTask:
    task_id: str
    meta: dict = dataclasses.field(default_factory=dict)
    family: str = "fake"


class OneTurnEnv:
    """One turn: the episode ends on the policy's first answer, with reward
    `reward_fn(text, task, index)` (index: this env's place in its vector env)."""

    def __init__(self, reward_fn, index):
        self.reward_fn, self.index, self.texts, self.task = reward_fn, index, [], None

    def reset(self, task):
        self.texts, self.task = [], task
        return {"messages": [{"role": "user", "content": "Say a word."}]}, {}

    def step(self, text):
        self.texts.append(text)
        r = float(self.reward_fn(text, self.task, self.index))
        return {"messages": []}, r, True, False, {"reward_components": {"correct": r}}

    def trajectory(self):
        return {"task": self.task.task_id, "turns": [{"text": t} for t in self.texts]}


class OneTurnVecEnv:
    def __init__(self, n, reward_fn):
        self.envs = [OneTurnEnv(reward_fn, i) for i in range(n)]

    def reset(self, tasks):
        return [e.reset(t) for e, t in zip(self.envs, tasks)]

    def step(self, actions):
        return [None if a is None else e.step(a) for e, a in zip(self.envs, actions)]

    def truncate(self, i):
        return 0.0, {"truncated": True, "reward_components": {}}


def tiny_config(**rl):
    """configs/tiny_cpu.py with RL fields overridden."""
    spec = importlib.util.spec_from_file_location("tiny_cpu", os.path.join(ROOT, "configs",
                                                                           "tiny_cpu.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    c.rollout.train_buckets = (32, 64)
    c.rollout.max_images = 1
    c.rollout.temperature = 1.0
    for k, v in rl.items():
        setattr(c.rl, k, v)
    return c


@pytest.fixture(scope="session")
def rl_setup(tmp_path_factory):
    tok = tok_lib.load_or_train_tokenizer(tmp_path_factory.mktemp("rltok"), lambda: TEXTS, 300, 4)
    cfg = ModelConfig.tiny(tok.vocab_size, tok.image_pad_id, num_layers=1, embed_dim=64,
                           num_heads=2, num_kv_heads=1, mlp_dim=128, vision_num_layers=1,
                           vision_fullatt_block_indexes=(0,))
    graphdef, params, rest = nnx.split(Qwen25VL(cfg, rngs=nnx.Rngs(0)), nnx.Param, ...)
    scfg = SamplerConfig(max_context=64, max_new_tokens=6, prompt_buckets=(32,),
                         obs_buckets=(8,), max_images_per_chunk=1, image_size=56)
    sampler = Sampler(graphdef, rest, cfg, tok, scfg)
    patch_shape = (sampler.grid * sampler.grid, cfg.patch_dim)
    return types.SimpleNamespace(
        tok=tok, cfg=cfg, graphdef=graphdef, params=params, rest=rest, sampler=sampler,
        grid_hw=(sampler.grid, sampler.grid), patch_shape=patch_shape,
        config=tiny_config, VecEnv=OneTurnVecEnv, Task=FakeTask,
        to_device=lambda b: jax.tree.map(np.asarray, b))
