"""report.md for a run: the evaluation table, training curves (PNG plots drawn from
metrics.jsonl), timings and the config. `write_plots(run_dir)` redraws the plots from a
run directory alone (for vista-eval or a notebook)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Line:
    """One curve: `key` in `phase`'s records (a key ending in "/*" draws every key under
    that prefix, each as its own curve)."""
    phase: str
    key: str
    label: str = ""
    markers: bool = False


@dataclasses.dataclass(frozen=True)
class Panel:
    title: str
    ylabel: str
    lines: tuple[Line, ...] = ()
    eval_key: str = ""  # instead of curves: a bar per evaluated policy of this eval key


# Plot name -> (title, panels). Key names are those that pipeline.py logs: SFT from
# sft.run_sft (train-step metrics, `val_accuracy`, `val_loss`), RL from the learners
# (learner.GroupLearner, ppo.PPOLearner) and episode_metrics, eval from evaluate.summarize.
PLOTS: dict[str, tuple[str, tuple[Panel, ...]]] = {
    "reward": ("RL rollout reward (mean per episode)", (
        Panel("reward and its components", "reward", (
            Line("rl", "reward", "reward"),
            Line("rl", "reward/correct", "correct"),
            Line("rl", "reward/format", "format"),
            Line("rl", "reward/repetition", "repetition"),
            Line("rl", "reward/overlong", "overlong"))),)),
    "accuracy": ("Accuracy", (
        Panel("SFT validation (greedy)", "accuracy",
              (Line("sft", "val_accuracy", "val accuracy", markers=True),)),
        Panel("RL rollouts (sampled)", "accuracy",
              (Line("rl", "accuracy", "rollout accuracy"),)),
        Panel("held-out test (greedy)", "accuracy", eval_key="accuracy"))),
    "response_length": ("RL response length", (
        Panel("generated tokens per episode", "tokens",
              (Line("rl", "response_tokens", "response tokens"),)),
        Panel("turns per episode", "turns",
              (Line("rl", "turns", "turns"),)))),
    "tool_calls": ("RL tool calls", (
        Panel("tool calls per episode", "calls",
              (Line("rl", "tool_calls", "all tools"),
               Line("rl", "tool_calls/*"))),
        Panel("valid share of tool calls", "validity",
              (Line("rl", "tool_call_validity", "validity"),)))),
    "sft_loss": ("SFT", (
        Panel("loss", "loss", (Line("sft", "loss", "training (copy-weighted)"),
                               Line("sft", "val_loss", "validation", markers=True))),
        Panel("next-token accuracy", "accuracy",
              (Line("sft", "token_accuracy", "token accuracy"),)))),
}


def read_metrics(path: str) -> list[dict[str, Any]]:
    """metrics.jsonl's records, skipping lines that do not parse (a crash can cut the last)."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
    return records


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def series(records, phase: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of `key` in `phase`, sorted by step; the last record of a step wins
    (a resumed run whose log was not truncated logs some steps twice)."""
    by_step = {r["step"]: float(r[key]) for r in records
               if r.get("phase") == phase and _is_number(r.get(key)) and _is_number(r.get("step"))}
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def _curves(records, line: Line) -> list[tuple[str, list[int], list[float], bool]]:
    """(label, steps, values, markers) per curve `line` draws; [] when its key is absent."""
    key = line.key
    if key.endswith("/*"):
        names = sorted({k for r in records if r.get("phase") == line.phase
                        for k in r if k.startswith(key[:-1])})
        curves = [(k[len(key) - 1:], *series(records, line.phase, k), line.markers)
                  for k in names]
        return [c for c in curves if c[1]]
    steps, values = series(records, line.phase, key)
    return [(line.label or key, steps, values, line.markers)] if steps else []


def _eval_bars(records, key: str) -> list[tuple[str, float]]:
    last = {r["policy"]: float(r[key]) for r in records
            if r.get("phase") == "eval" and isinstance(r.get("policy"), str)
            and _is_number(r.get(key))}
    order = {"base": 0, "sft": 1, "grpo": 2}
    return sorted(last.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))


def write_plots(run_dir: str) -> list[str]:
    """Draws PNG training curves from `<run_dir>/metrics.jsonl` into `<run_dir>/plots/` and
    returns the paths written (in `PLOTS` order). A plot, or a panel, whose metrics the log
    lacks is left out; no metrics.jsonl gives []."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    records = read_metrics(path)
    from matplotlib.figure import Figure  # Agg canvas, no pyplot state, no display

    out_dir = os.path.join(run_dir, "plots")
    written = []
    for name, (title, panels) in PLOTS.items():
        drawn = []
        for panel in panels:
            data = (_eval_bars(records, panel.eval_key) if panel.eval_key else
                    [c for line in panel.lines for c in _curves(records, line)])
            if data:
                drawn.append((panel, data))
        if not drawn:
            continue
        fig = Figure(figsize=(4.8 * len(drawn), 3.6), layout="constrained")
        axes = fig.subplots(1, len(drawn), squeeze=False)[0]
        for ax, (panel, data) in zip(axes, drawn):
            if panel.eval_key:
                labels, values = zip(*data)
                bars = ax.bar(labels, values, color="tab:blue")
                ax.bar_label(bars, fmt="%.3f")
                ax.margins(y=0.15)  # room for the labels under the title
                ax.set_xlabel("policy")
            else:
                for label, steps, values, markers in data:
                    marker = "o" if markers or len(steps) < 3 else None
                    ax.plot(steps, values, marker=marker, markersize=4, label=label)
                ax.set_xlabel(f"{panel.lines[0].phase.upper()} step")
                if len(data) > 1:
                    ax.legend(fontsize="small")
                ax.grid(alpha=0.3)
            ax.set_title(panel.title, fontsize="medium")
            ax.set_ylabel(panel.ylabel)
        fig.suptitle(title)
        os.makedirs(out_dir, exist_ok=True)
        png = os.path.join(out_dir, f"{name}.png")
        fig.savefig(png, dpi=100)
        written.append(png)
    return written


def write_report(run_dir: str, config, summary: dict[str, Any]) -> str:
    res = summary["results"]
    policies = [p for p in ("base", "sft", "grpo") if p in res]
    keys = ["accuracy", "tool_call_validity", "tool_calls_per_episode", "mean_turns",
            "format_ok", "answered", "mean_reward"]
    keys += sorted({k for p in policies for k in res[p] if k.startswith("accuracy@")})
    keys += sorted({k for p in policies for k in res[p] if k.startswith("accuracy/")})
    # share of all episodes in each error class of the paper's taxonomy (env.taxonomy)
    keys += sorted({k for p in policies for k in res[p] if k.startswith("taxonomy/")})
    # results["grpo"] is the policy after the RL phase, whichever rl.algorithm trained it.
    algo = {"grpo": "GRPO", "dr_grpo": "Dr.GRPO", "dapo": "DAPO", "ppo": "PPO"}.get(
        config.rl.algorithm, config.rl.algorithm)
    label = {"base": "base (untrained)", "sft": "SFT", "grpo": f"SFT → {algo}"}
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
    lines += ["", f"Expert trajectories that verified: {summary.get('expert_pass_rate')}", ""]
    try:  # the curves illustrate the report; a plotting failure must not cost the report
        plots = write_plots(run_dir)
    except Exception:  # noqa: BLE001
        log.exception("report: drawing the training curves failed")
        plots = []
    if plots:
        lines += ["## Training curves", ""]
        for png in plots:
            name = os.path.splitext(os.path.basename(png))[0]
            lines += [f"![{name}](plots/{name}.png)", ""]
    lines += ["## Files", "",
              "- `metrics.jsonl`: one line per logged SFT / RL step and per evaluation",
              "- `plots/`: the training curves above as PNG "
              "(`vista_jax.report.write_plots(run_dir)` redraws them from metrics.jsonl)",
              "- `trajectories/`: evaluation and RL trajectories (JSONL + images; "
              "`vista-eval --trajectories trajectories/eval_sft.jsonl` prints the error "
              "taxonomy per family, `vista-view` renders one as HTML)",
              "- `expert/`: the verified expert trajectories SFT trained on (JSONL + images, "
              "`train.stats.json`)",
              "- `checkpoints/`: Orbax checkpoints (every checkpoint.sft_every / rl_every steps, "
              "the newest checkpoint.keep and every phase end; `vista-eval --checkpoint`, "
              "`vista-export`, and a rerun of the same command resumes from them)",
              "- `tokenizer/`: the BPE trained for this run", "- `config.json`, `summary.json`", "",
              "## Config", "", "```", config.to_json_best_effort(indent=1), "```", ""]
    path = os.path.join(run_dir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return path
