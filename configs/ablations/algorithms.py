"""Ablation 2 — RL algorithms at the same budget: GRPO vs PPO vs DAPO, each from the same
SFT policy (per seed), 24 updates of 8 prompts.

    vista-train --config configs/ablations/algorithms.py

DAPO keeps drawing prompts (up to rl.dynamic_sampling_max_rounds rounds) until a step has
8 groups with unequal rewards: the same number of updates costs it more rollouts.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ablation_common import ablation_base  # noqa: E402


def get_config():
    c = ablation_base("algorithms")
    c.ablation.title = "2. RL algorithms"  # section title
    c.ablation.question = ("GRPO vs PPO (shared-trunk critic, GAE) vs DAPO (dynamic sampling, "
                           "clip-higher) from the same SFT policy, same number of updates.")  # the question
    c.ablation.paper = ("GRPO best; DAPO's filtering of uninformative groups starves early "
                        "learning")  # the paper's finding
    c.ablation.variants = (  # label: policy overrides
        "grpo: rl",
        "ppo: rl rl.algorithm=ppo",
        "dapo: rl rl.algorithm=dapo rl.clip_eps_high=0.28",
    )
    return c
