"""The base of every ablation config: configs/tiny_cpu.py plus the `ablation` group that
`vista_jax.ablation` reads (one field per line, each documented). Not a config itself."""

import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tiny_cpu import get_config as get_tiny_config  # noqa: E402


def ablation_base(name: str) -> ml_collections.ConfigDict:
    c = get_tiny_config()
    c.name = f"ablations/{name}"  # outputs go to <run_root>/ablations/<name>/; the summary page to <run_root>/ablations/summary.md
    c.ablation = ml_collections.ConfigDict()
    c.ablation.title = name  # section title in report.md and the summary page
    c.ablation.question = ""  # what the ablation asks (printed above its tables)
    c.ablation.paper = ""  # what the paper (arXiv 2511.19773) found, to compare against
    c.ablation.variants = ()  # "label: policy key=value ..." each; policy = base | sft | rl (see vista_jax/ablation.py)
    c.ablation.seeds = (0, 1, 2)  # every variant runs once per seed; tables show mean ± std
    c.ablation.sft_per_seed = True  # True: an SFT run per seed; False: the first seed's SFT run serves every seed
    c.ablation.runs_dir = ""  # where runs live, keyed by their settings and shared across ablations ("" = <run_root>/ablations/_runs)
    return c
