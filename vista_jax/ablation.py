"""Ablations: one command runs every variant × seed of an experiment, shares the runs that
agree, and writes the tables and plots.

    vista-train --config configs/ablations/stages.py
    vista-train --config configs/ablations/algorithms.py --config.ablation.seeds=(0,1)

An ablation config is an ordinary job config (`configs/tiny_cpu.py`'s fields) plus
`config.ablation`:

- `variants`: one string each, `"label: policy key=value key=value ..."`. `policy` is the
  policy the variant reports: `base` (untrained), `sft` (after SFT) or `rl` (after the RL
  phase, whichever `rl.algorithm`); the overrides change the job config for that variant
  (values are Python literals, or bare strings), e.g.
  `"dapo: rl rl.algorithm=dapo rl.clip_eps_high=0.28"`.
- `seeds`: every variant runs once per seed (`seed` of the job config).
- `sft_per_seed`: True trains an SFT policy per seed; False trains one (the first seed's)
  and varies only RL and evaluation with the seed.

How it runs: each variant × seed becomes two runs of the ordinary job (`pipeline.run`),
an SFT run (`stop_after="sft"`, no evaluation) and a variant run that starts from it
(`sft.init_from`) and evaluates only the variant's policy. Runs live in a shared
directory (`ablation.runs_dir`, default `<run_root>/ablations/_runs`) under a key hashed
from their settings (the fields that differ from `configs/tiny_cpu.py`, without the ones
that cannot change the result: names, paths, logging, checkpoint cadence, tool server
address). Variants, seeds and even other ablations whose runs agree share them: the stages
ablation's SFT → GRPO runs are the algorithms ablation's GRPO runs. A finished run
(summary.json) is read back; an interrupted one resumes from its checkpoints, so running
the command again finishes a killed sweep.

Outputs, in `<run_root>/<name>/` (name `ablations/<ablation>` in the shipped configs):
`ablation.json` (every seed's results and the mean ± std per variant), `report.md` (the
tables, Table 1-style error taxonomy per variant, plots), `plots/*.png` and `runs/`
(links to each variant × seed's run directory, each with its own report.md). Then the
summary page of every ablation under the same parent is rewritten (`write_summary`):
`<run_root>/ablations/summary.md`.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

log = logging.getLogger("vista_jax")

POLICIES = {"base": "base", "sft": "sft", "rl": "grpo"}  # variant policy -> results key
# Config groups that cannot change a run's numbers: left out of the run keys.
NOT_IN_KEY = ("name", "run_root", "ablation", "log", "checkpoint", "tools", "distributed")
SET_BY_ABLATION = {"seed": "config.ablation.seeds", "sft.init_from": "the variant's SFT run",
                   "eval.policies": "the variant's policy", "name": "the run key",
                   "run_root": "config.ablation.runs_dir"}
# Metrics aggregated over seeds (from evaluate.summarize), in table order.
TABLE_KEYS = ("accuracy", "tool_calls_per_episode", "tool_call_validity", "mean_turns",
              "format_ok")


@dataclasses.dataclass(frozen=True)
class Variant:
    label: str
    policy: str  # base | sft | rl
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def spec(self) -> str:
        return " ".join([f"{self.label}: {self.policy}"]
                        + [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
                           for k, v in self.overrides])


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string: rl.algorithm=dapo


def parse_variant(spec: str) -> Variant:
    """`"label: policy key=value ..."` -> Variant; a malformed spec raises ValueError naming it."""
    label, sep, rest = spec.partition(":")
    words = rest.split()
    if not sep or not label.strip() or not words:
        raise ValueError(f"ablation variant {spec!r}: expected 'label: policy key=value ...'")
    policy, overrides = words[0], []
    if policy not in POLICIES:
        raise ValueError(f"ablation variant {spec!r}: policy {policy!r} is not one of "
                         f"{' | '.join(POLICIES)}")
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise ValueError(f"ablation variant {spec!r}: {word!r} is not key=value")
        overrides.append((key, _literal(value)))
    return Variant(label.strip(), policy, tuple(overrides))


def _set(config: ml_collections.ConfigDict, key: str, value: Any, where: str) -> None:
    node = config
    parts = key.split(".")
    for part in parts[:-1]:
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            raise ValueError(f"{where}: unknown config key {key!r}")
        node = node[part]
    if parts[-1] not in node:
        raise ValueError(f"{where}: unknown config key {key!r}")
    old = node[parts[-1]]
    if isinstance(old, tuple) and isinstance(value, list):
        value = tuple(value)
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    try:
        node[parts[-1]] = value
    except TypeError as e:
        raise ValueError(f"{where}: {key}={value!r}: {e}") from None


def job_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The ablation config without its `ablation` group: an ordinary job config."""
    d = config.to_dict()
    d.pop("ablation", None)
    return ml_collections.ConfigDict(d)


def settings(config: ml_collections.ConfigDict, drop: Sequence[str] = ()) -> dict[str, Any]:
    """The fields of `config` that differ from `configs/tiny_cpu.py`'s, without the groups
    that cannot change its numbers (`NOT_IN_KEY`) and those in `drop`: what a run key
    hashes. Fields added to the defaults later leave the existing keys as they are."""
    from vista_jax import config as config_lib

    defaults = config_lib.defaults()
    now = config_lib.flatten(json.loads(config.to_json_best_effort()))
    skip = tuple(NOT_IN_KEY) + tuple(drop)
    return {k: v for k, v in sorted(now.items())
            if not any(k == g or k.startswith(g + ".") for g in skip)
            and (k not in defaults or defaults[k] != v)}


def run_key(kind: str, fields: Mapping[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()
    return f"{kind}-{digest[:10]}"


@dataclasses.dataclass
class PlannedRun:
    """One variant × seed: its SFT run and its variant run (directories and configs)."""
    variant: Variant
    seed: int
    sft_dir: str
    sft_config: ml_collections.ConfigDict
    run_dir: str
    config: ml_collections.ConfigDict
    stop_after: str


def plan(config: ml_collections.ConfigDict) -> list[PlannedRun]:
    """Every variant × seed as (SFT run, variant run), each config validated; raises
    ValueError / ConfigError naming the variant and the key before anything runs."""
    from vista_jax import config as config_lib

    a = config.ablation
    if not a.variants:
        raise ValueError("config.ablation.variants is empty")
    if not a.seeds:
        raise ValueError("config.ablation.seeds is empty")
    variants = [parse_variant(v) for v in a.variants]
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise ValueError(f"config.ablation.variants: labels repeat: {labels}")
    out_dir = os.path.abspath(os.path.join(config.run_root, config.name))
    runs_dir = os.path.abspath(a.runs_dir or os.path.join(os.path.dirname(out_dir), "_runs"))
    base = job_config(config)
    planned = []
    for seed in a.seeds:
        for v in variants:
            where = f"config.ablation.variants[{v.label!r}]"
            vc = copy.deepcopy(base)
            for key, value in v.overrides:
                if key in SET_BY_ABLATION:
                    raise ValueError(f"{where}: {key} is set by the ablation "
                                     f"({SET_BY_ABLATION[key]})")
                _set(vc, key, value, where)
            vc.seed = int(seed)
            if vc.sft.init_from:
                raise ValueError(f"{where}: sft.init_from is set by the ablation (its SFT run)")
            # The SFT run: the variant's settings outside RL and evaluation.
            sc = copy.deepcopy(vc)
            sc.seed = int(seed if a.sft_per_seed else a.seeds[0])
            sc.eval.policies = ""  # the variant runs evaluate
            sft_dir = os.path.join(runs_dir, run_key("sft", settings(sc, drop=("rl", "eval"))))
            sc.run_root, sc.name = os.path.dirname(sft_dir), os.path.basename(sft_dir)
            # The variant run: from that SFT checkpoint, evaluating the variant's policy only.
            vc.eval.policies = POLICIES[v.policy]
            stop_after = "rl" if v.policy == "rl" else "sft"
            fields = settings(vc, drop=("rl",) if stop_after == "sft" else ())
            fields["sft_run"] = os.path.basename(sft_dir)  # instead of a path
            kind = "rl" if v.policy == "rl" else f"eval-{v.policy}"
            run_dir = os.path.join(runs_dir, run_key(kind, fields))
            vc.run_root, vc.name = os.path.dirname(run_dir), os.path.basename(run_dir)
            try:
                config_lib.validate(sc)
                vc.sft.init_from = ""  # checked below, once the SFT run exists
                config_lib.validate(vc)
            except config_lib.ConfigError as e:
                raise config_lib.ConfigError(f"{where}: {e}") from None
            vc.sft.init_from = sft_dir
            planned.append(PlannedRun(v, int(seed), sft_dir, sc, run_dir, vc, stop_after))
    return planned


def _finished(run_dir: str) -> dict[str, Any] | None:
    path = os.path.join(run_dir, "summary.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _persistent_compilation_cache(path: str) -> None:
    """XLA executables cached on disk: the runs of a sweep compile the same programs (same
    shapes), and each would otherwise spend ~30 s of 2 CPU cores compiling them again.
    Left alone when the user has set a cache directory."""
    import jax

    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def run(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Runs (or reads back) every planned run, then writes the ablation's ablation.json,
    report.md and plots and the summary page beside it. Returns the ablation.json dict."""
    from vista_jax import pipeline

    planned = plan(config)
    out_dir = os.path.abspath(os.path.join(config.run_root, config.name))
    _persistent_compilation_cache(os.path.join(os.path.dirname(planned[0].run_dir), ".jax_cache"))
    os.makedirs(os.path.join(out_dir, "runs"), exist_ok=True)
    todo = {p.sft_dir for p in planned} | {p.run_dir for p in planned}
    done = {d for d in todo if _finished(d) is not None}
    log.info("ablation %s: %d variants x %d seeds -> %d runs (%d already finished)",
             config.name, len(config.ablation.variants), len(config.ablation.seeds),
             len(todo), len(done))
    for i, p in enumerate(planned):
        for kind, run_dir, cfg, stop in (("sft", p.sft_dir, p.sft_config, "sft"),
                                         (p.variant.policy, p.run_dir, p.config, p.stop_after)):
            if _finished(run_dir) is None:
                log.info("ablation %s [%d/%d] %s seed %d: %s run %s", config.name, i + 1,
                         len(planned), p.variant.label, p.seed, kind, run_dir)
                os.makedirs(run_dir, exist_ok=True)
                with open(os.path.join(run_dir, "key.json"), "w", encoding="utf-8") as f:
                    json.dump(settings(cfg), f, indent=1)
                pipeline.run(cfg, stop_after=stop)
        link = os.path.join(out_dir, "runs", f"{p.variant.label}-seed{p.seed}")
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(os.path.relpath(p.run_dir, os.path.dirname(link)), link)
    result = collect(config, planned)
    with open(os.path.join(out_dir, "ablation.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    write_report(out_dir, result)
    write_summary(os.path.dirname(out_dir))
    return result


# --- results ----------------------------------------------------------------------------

def _curves(run_dir: str, phase: str, key: str) -> list[list]:
    """[steps, values] of `key` in a run's metrics.jsonl (`phase` records)."""
    from vista_jax.report import read_metrics, series

    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return [], []
    return list(map(list, series(read_metrics(path), phase, key)))


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "n": int(len(v))}


def collect(config: ml_collections.ConfigDict, planned: Sequence[PlannedRun]) -> dict[str, Any]:
    """ablation.json: per variant, each seed's evaluation (the variant's policy) and curves
    (RL rollout reward and accuracy; SFT validation accuracy), and the mean ± std over seeds
    of every evaluation metric."""
    a = config.ablation
    by_label: dict[str, dict[str, Any]] = {}
    for p in planned:
        summary = _finished(p.run_dir)
        res = summary["results"][POLICIES[p.variant.policy]]
        entry = by_label.setdefault(p.variant.label, {
            "label": p.variant.label, "policy": p.variant.policy, "spec": p.variant.spec,
            "seeds": {}})
        curves = {"sft/val_accuracy": _curves(p.sft_dir, "sft", "val_accuracy")}
        budget = {}
        if p.variant.policy == "rl":
            for key in ("reward", "accuracy"):
                curves[f"rl/{key}"] = _curves(p.run_dir, "rl", key)
            # what the RL phase cost: episodes rolled out (DAPO's extra rounds included)
            # and its wall time
            rl = p.config.rl
            groups = _curves(p.run_dir, "rl", "dynamic_sampling/groups_sampled")[1]
            budget["rl_episodes"] = float(rl.group_size * (
                sum(groups) if groups else rl.prompts_per_step * rl.steps))
            budget["rl_time_s"] = float(summary.get("timings", {}).get("grpo_s", float("nan")))
        entry["seeds"][str(p.seed)] = {
            "run_dir": os.path.relpath(p.run_dir, os.path.abspath(config.run_root)),
            "sft_run_dir": os.path.relpath(p.sft_dir, os.path.abspath(config.run_root)),
            "results": res, "budget": budget, "curves": curves,
            "wall_time_s": summary.get("wall_time_s")}
    for entry in by_label.values():
        seeds = list(entry["seeds"].values())
        values = [{**s["results"], **{f"budget/{k}": v for k, v in s["budget"].items()}}
                  for s in seeds]
        keys = sorted({k for vals in values for k, v in vals.items()
                       if isinstance(v, (int, float))})
        entry["stats"] = {k: _mean_std([vals[k] for vals in values if k in vals])
                          for k in keys}
    return {"name": config.name, "title": a.title, "question": a.question,
            "paper": a.paper, "seeds": list(a.seeds), "sft_per_seed": bool(a.sft_per_seed),
            "eval_tasks": int(config.eval.num_tasks),
            "eval_mixture": config.eval.mixture or config.env.mixture,
            "variants": list(by_label.values())}


PERCENT = ("accuracy", "tool_call_validity")  # cells shown in % (and accuracy@*, taxonomy/*)


def _cell(stats: Mapping[str, Any], key: str, pct: bool = True, digits: int = 1) -> str:
    """"mean ± std" over seeds (just the mean for one seed); "–" when absent."""
    s = stats.get(key)
    if s is None:
        return "–"
    scale = 100.0 if pct else 1.0
    if s["n"] > 1:
        return f"{scale * s['mean']:.{digits}f} ± {scale * s['std']:.{digits}f}"
    return f"{scale * s['mean']:.{digits}f}"


def tables(result: Mapping[str, Any]) -> list[str]:
    """Markdown: the results table (accuracy and per-family accuracy in %, mean ± std over
    seeds) and the Table 1-style error taxonomy per variant (share of episodes, %)."""
    from vista_jax.env.taxonomy import ERROR_LABELS

    variants = result["variants"]
    fams = sorted({k for v in variants for k in v["stats"] if k.startswith("accuracy@")})
    cols = ["accuracy"] + fams + ["tool_calls_per_episode", "tool_call_validity", "mean_turns",
                                  "budget/rl_episodes", "budget/rl_time_s"]
    heads = ["accuracy %"] + [f"{f.split('@')[1]} %" for f in fams] + [
        "tool calls / ep", "valid calls %", "turns", "RL episodes", "RL time s"]
    lines = ["| variant | seeds | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(cols)]
    for v in variants:
        n = len(v["seeds"])
        cells = [_cell(v["stats"], k, pct=k in PERCENT or k.startswith("accuracy@"),
                       digits=0 if k.startswith("budget/") else 1) for k in cols]
        lines.append(f"| {v['label']} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "Error taxonomy (share of all test episodes, %; E1–E6 as in the paper's "
              "Table 1, `vista_jax.env.taxonomy`):", "",
              "| variant | correct | " + " | ".join(ERROR_LABELS) + " |",
              "|---|---|" + "---|" * len(ERROR_LABELS)]
    for v in variants:
        cells = [_cell(v["stats"], "accuracy")] + [_cell(v["stats"], f"taxonomy/{e}")
                                                   for e in ERROR_LABELS]
        lines.append(f"| {v['label']} | " + " | ".join(cells) + " |")
    return lines


SMOOTH = 5  # RL curves: trailing moving average over this many steps


def _moving_average(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to `window` points (the first points average fewer)."""
    c = np.cumsum(np.insert(np.asarray(y, dtype=float), 0, 0.0))
    end = np.arange(1, len(y) + 1)
    start = np.maximum(end - window, 0)
    return (c[end] - c[start]) / (end - start)


def write_plots(out_dir: str, result: Mapping[str, Any]) -> list[str]:
    """plots/curves.png (each curve key: one line per variant, mean over seeds, ± std band)
    and plots/taxonomy.png (grouped bars of the error classes per variant)."""
    from matplotlib.figure import Figure

    from vista_jax.env.taxonomy import ERROR_LABELS

    os.makedirs(os.path.join(out_dir, "plots"), exist_ok=True)
    written = []
    panels = [("rl/reward", f"RL rollout reward (mean of {SMOOTH} steps)"),
              ("rl/accuracy", f"RL rollout accuracy (mean of {SMOOTH} steps)"),
              ("sft/val_accuracy", "SFT validation accuracy")]
    drawn = []
    for key, title in panels:
        lines = []
        for v in result["variants"]:
            runs = [s["curves"].get(key) for s in v["seeds"].values()]
            runs = [r for r in runs if r and r[0]]
            if not runs:
                continue
            steps = sorted(set.intersection(*(set(r[0]) for r in runs)))
            ys = np.array([[dict(zip(*r))[s] for s in steps] for r in runs])
            if key.startswith("rl/"):  # one RL step is 8 prompts: smooth the noise
                ys = np.stack([_moving_average(y, SMOOTH) for y in ys])
            lines.append((v["label"], steps, ys.mean(0), ys.std(0)))
        # SFT curves repeat across variants sharing an SFT run: one line when all agree.
        if key.startswith("sft/") and len(lines) > 1 and len({tuple(m) for _, _, m, _ in lines}) == 1:
            lines = [("shared SFT run", *lines[0][1:])]
        if lines:
            drawn.append((key, title, lines))
    if drawn:
        fig = Figure(figsize=(4.8 * len(drawn), 3.6), layout="constrained")
        axes = fig.subplots(1, len(drawn), squeeze=False)[0]
        for ax, (key, title, lines) in zip(axes, drawn):
            for label, steps, mean, std in lines:
                ax.plot(steps, mean, label=label, marker="o" if len(steps) < 10 else None,
                        markersize=3)
                ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
            ax.set_title(title, fontsize="medium")
            ax.set_xlabel(f"{key.split('/')[0].upper()} step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        fig.suptitle(f"{result['title']} (mean ± std over seeds)")
        path = os.path.join(out_dir, "plots", "curves.png")
        fig.savefig(path, dpi=100)
        written.append(path)
    fig = Figure(figsize=(7.2, 3.6), layout="constrained")
    ax = fig.subplots()
    names = ("correct",) + ERROR_LABELS
    width = 0.8 / max(1, len(result["variants"]))
    for i, v in enumerate(result["variants"]):
        means = [v["stats"].get("accuracy" if n == "correct" else f"taxonomy/{n}",
                                {"mean": 0.0})["mean"] for n in names]
        stds = [v["stats"].get("accuracy" if n == "correct" else f"taxonomy/{n}",
                               {"std": 0.0})["std"] for n in names]
        ax.bar(np.arange(len(names)) + i * width, means, width, yerr=stds, label=v["label"],
               capsize=2)
    ax.set_xticks(np.arange(len(names)) + width * (len(result["variants"]) - 1) / 2, names)
    ax.set_ylabel("share of test episodes")
    ax.set_title(f"{result['title']}: error taxonomy", fontsize="medium")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3, axis="y")
    path = os.path.join(out_dir, "plots", "taxonomy.png")
    fig.savefig(path, dpi=100)
    written.append(path)
    return written


def _section(result: Mapping[str, Any], rel: str, plots: Sequence[str],
             level: str = "#") -> list[str]:
    """An ablation's markdown: question, paper's claim, settings, tables, `plots` (names
    under `<rel>plots/`)."""
    seeds = ", ".join(map(str, result["seeds"]))
    sft = ("one SFT run per seed" if result["sft_per_seed"]
           else f"one SFT run (seed {result['seeds'][0]}) shared by all seeds")
    lines = [f"{level} {result['title']}", "", result["question"], "",
             f"Paper: {result['paper'].rstrip('.')}.", "",
             f"Held-out test: {result['eval_tasks']} tasks of `{result['eval_mixture']}`, greedy. "
             f"Seeds {seeds} ({sft}); mean ± std (sample std) over seeds. Variants:", ""]
    lines += [f"- `{v['spec']}`" for v in result["variants"]]
    lines += [""] + tables(result) + [""]
    for name in plots:
        lines += [f"![{result['title']}: {name}]({rel}plots/{name}.png)", ""]
    return lines


def write_report(out_dir: str, result: Mapping[str, Any]) -> str:
    plots = [os.path.splitext(os.path.basename(p))[0] for p in write_plots(out_dir, result)]
    lines = _section(result, "", plots)
    lines += ["Runs (each with its own report.md): "
              + ", ".join(f"[`{v['label']}-seed{s}`](runs/{v['label']}-seed{s}/report.md)"
                          for v in result["variants"] for s in v["seeds"]), ""]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return path


ORDER = ("stages", "algorithms", "multitask", "tools_without_training", "group_size")


def write_summary(root: str, out: str | None = None) -> str | None:
    """`<root>/summary.md`: every ablation under `root` (each `<root>/<name>/ablation.json`),
    in the order of the shipped configs, with its tables and plots. `out`: write the page
    to `<out>/summary.md` instead, with copies of the plots (`<out>/<name>/plots/`), e.g.
    into the docs."""
    found = {}
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        path = os.path.join(root, name, "ablation.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                found[name] = json.load(f)
    if not found:
        return None
    names = sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    lines = ["# vista-jax ablations: the paper's findings in miniature", "",
             "Tiny Qwen2.5-VL-architecture policy (configs/tiny_cpu.py), 2 CPU cores. Each "
             "section: `vista-train --config configs/ablations/<name>.py`; its own report is "
             "`<name>/report.md`.", ""]
    for name in names:
        plots = [p for p in ("curves", "taxonomy")
                 if os.path.isfile(os.path.join(root, name, "plots", f"{p}.png"))]
        if out is not None:
            os.makedirs(os.path.join(out, name, "plots"), exist_ok=True)
            for p in plots:
                shutil.copyfile(os.path.join(root, name, "plots", f"{p}.png"),
                                os.path.join(out, name, "plots", f"{p}.png"))
        lines += _section(found[name], f"{name}/", plots, level="##")
    path = os.path.join(out if out is not None else root, "summary.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m vista_jax.ablation ROOT [--out DIR]`: rewrite ROOT/summary.md (or
    DIR/summary.md with copies of the plots) and each ablation's report and plots from the
    ablation.json files under ROOT."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m vista_jax.ablation", description=main.__doc__)
    p.add_argument("root", help="the ablations directory, e.g. runs/ablations")
    p.add_argument("--out", help="write summary.md and copies of the plots here instead "
                                 "(e.g. docs/ablations)")
    args = p.parse_args(argv)
    for name in sorted(os.listdir(args.root)) if os.path.isdir(args.root) else []:
        path = os.path.join(args.root, name, "ablation.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                write_report(os.path.join(args.root, name), json.load(f))
    path = write_summary(args.root, args.out)
    if path is None:
        print(f"no ablation.json under {args.root}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
