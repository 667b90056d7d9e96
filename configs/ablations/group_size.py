"""Ablation 5 — GRPO group size G ∈ {2, 4, 8, 16}: 8 prompts per step, G samples each, so
rollouts per step grow with G.

    vista-train --config configs/ablations/group_size.py
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ablation_common import ablation_base  # noqa: E402


def get_config():
    c = ablation_base("group_size")
    c.ablation.title = "5. GRPO group size"  # section title
    c.ablation.question = ("GRPO with G = 2, 4, 8, 16 samples per prompt, 8 prompts per step, "
                           "24 steps, from the same SFT policy (per seed).")  # the question
    c.ablation.paper = "G = 8 in VISTA-R1's GRPO; no group-size figure is quoted here"  # what the paper did
    c.ablation.variants = (  # label: policy overrides
        "G2: rl rl.group_size=2",
        "G4: rl rl.group_size=4",
        "G8: rl",
        "G16: rl rl.group_size=16",
    )
    return c
