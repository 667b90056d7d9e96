"""Ablation 4 — tools without training: a policy trained to answer directly (SFT on the
gold answers, no tool calls, no tools in its prompt), tested without tools and prompted
with the tools it was never trained to call; beside it the policy SFT-trained to use them.

    vista-train --config configs/ablations/tools_without_training.py

Our base policy has no instruction following to lose (the paper's base is a pretrained
VLM): "prompted with tools" changes its input and nothing else it has learnt.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ablation_common import ablation_base  # noqa: E402

TOOLS = "bar_values,chart_to_table,calculator,crop"


def get_config():
    c = ablation_base("tools_without_training")
    c.ablation.title = "4. Tools without training"  # section title
    c.ablation.question = ("Does offering tools help a policy not trained to use them? Direct-"
                           "answer SFT tested without tools vs prompted with tools, and the "
                           "tool-trained SFT policy.")  # the question
    c.ablation.paper = ("prompting a VLM to use tools it was not trained to use lowers "
                        "accuracy (naive tool use hurts)")  # the paper's finding
    c.ablation.variants = (  # label: policy overrides
        "direct_no_tools: sft sft.expert=direct env.tools=none",
        f"direct_prompted_tools: sft sft.expert=direct env.tools=none eval.tools={TOOLS}",
        "tool_trained: sft",
    )
    return c
