"""report.md for a run: the evaluation table, timings and the config."""

from __future__ import annotations

import os
from typing import Any


def write_report(run_dir: str, config, summary: dict[str, Any]) -> str:
    res = summary["results"]
    policies = [p for p in ("base", "sft", "grpo") if p in res]
    keys = ["accuracy", "tool_call_validity", "tool_calls_per_episode", "mean_turns",
            "format_ok", "answered", "mean_reward"]
    keys += sorted({k for p in policies for k in res[p] if k.startswith("accuracy@")})
    keys += sorted({k for p in policies for k in res[p] if k.startswith("accuracy/")})
    # share of all episodes in each error class of the paper's taxonomy (env.taxonomy)
    keys += sorted({k for p in policies for k in res[p] if k.startswith("taxonomy/")})
    label = {"base": "base (untrained)", "sft": "SFT", "grpo": "SFT → GRPO"}
    lines = [
        f"# vista-jax run `{config.name}`", "",
        f"Held-out evaluation on {config.eval.num_tasks} test-split tasks of the mixture "
        f"`{config.env.mixture}` (difficulty {config.env.difficulty or 'drawn per task'}), "
        "greedy decoding, tools served by the local tool server.", "",
        "| metric | " + " | ".join(label[p] for p in policies) + " |",
        "|---|" + "---|" * len(policies),
    ]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(f"{res[p].get(k, float('nan')):.3f}"
                                              for p in policies) + " |")
    t = summary["timings"]
    lines += ["", "## Wall time by phase (s)", "", "| phase | seconds |", "|---|---|"]
    lines += [f"| {k[:-2]} | {v:.1f} |" for k, v in t.items()]
    lines += ["", f"Expert trajectories that verified: {summary.get('expert_pass_rate')}", "",
              "## Files", "",
              "- `metrics.jsonl`: one line per logged SFT / RL step and per evaluation",
              "- `trajectories/`: evaluation and RL trajectories (JSONL + images; "
              "`vista-eval --trajectories trajectories/eval_sft.jsonl` prints the error "
              "taxonomy per family, `vista-view` renders one as HTML)",
              "- `expert/`: the verified expert trajectories SFT trained on (JSONL + images, "
              "`train.stats.json`)",
              "- `checkpoints/`: Orbax checkpoints (after SFT, after GRPO)",
              "- `tokenizer/`: the BPE trained for this run", "- `config.json`, `summary.json`", "",
              "## Config", "", "```", config.to_json_best_effort(indent=1), "```", ""]
    path = os.path.join(run_dir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return path
