"""Ablation 1 — training stages: base vs SFT only vs GRPO only vs SFT → GRPO.

    vista-train --config configs/ablations/stages.py

The base policy is the random initialisation (the paper's base is a pretrained VLM: ours
has no prior, so "GRPO only" starts from a policy that never produces a well-formed turn).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ablation_common import ablation_base  # noqa: E402


def get_config():
    c = ablation_base("stages")
    c.ablation.title = "1. Training stages"  # section title
    c.ablation.question = ("What does each stage add? Held-out accuracy of the untrained policy, "
                           "after SFT on expert trajectories, after GRPO alone, and after SFT then "
                           "GRPO.")  # the question
    c.ablation.paper = "SFT +3.46 points over the base model, GRPO +10.19 over SFT"  # the paper's figures
    c.ablation.variants = (  # label: policy overrides
        "base: base",
        "sft_only: sft",
        "grpo_only: rl sft.steps=0",
        "sft_grpo: rl",
    )
    return c
