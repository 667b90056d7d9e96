"""Ablation 3 — multi-task vs single-task (chart only) training, both evaluated on every
family of the multi-task mixture, with the same prompt (the union of the families' tools).

    vista-train --config configs/ablations/multitask.py
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ablation_common import ablation_base  # noqa: E402

FAMILIES = "chart_qa,counting,geometry"
TOOLS = ("bar_values,calculator,count_objects,detect_objects,dominant_colors,measure_length,"
         "measure_angle,detect_circles,diagram_to_formal,geometry_solver")


def get_config():
    c = ablation_base("multitask")
    c.env.tools = TOOLS  # every family's reference-plan tools, for both variants (same prompt)
    c.eval.mixture = FAMILIES  # both policies are tested on all three families
    c.ablation.title = "3. Multi-task vs single-task"  # section title
    c.ablation.question = (f"SFT → GRPO on chart_qa only vs on {FAMILIES}, the same budget, "
                           "tested on all three families.")  # the question
    c.ablation.paper = ("VISTA-R1 trains on the multi-task mixture; no single-task figure is "
                        "quoted here")  # what the paper did
    c.ablation.variants = (  # label: policy overrides
        "chart_only: rl env.mixture=chart_qa",
        f"multi_task: rl env.mixture={FAMILIES}",
    )
    c.ablation.seeds = (0,)  # one seed: two SFT runs per seed (no sharing with other ablations)
    return c
