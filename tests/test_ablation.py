"""Ablation sweeps (vista_jax/ablation.py): variant parsing, run planning and sharing, the
tables and plots from fake runs (hand-checked means and stds), and one real micro sweep
through the job's new paths (direct-answer expert, no tools, tools at evaluation only,
eval.mixture, sft.steps=0, eval.policies)."""

import json
import math
import os

import pytest

from vista_jax import ablation, cli
from vista_jax import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name, *overrides, run_root="/tmp/unused"):
    return cli.load_config(["vista-train", "--config",
                            os.path.join(ROOT, "configs", "ablations", f"{name}.py"),
                            f"--config.run_root={run_root}", *overrides])


def test_parse_variant():
    v = ablation.parse_variant("dapo: rl rl.algorithm=dapo rl.clip_eps_high=0.28 env.tools=none")
    assert (v.label, v.policy) == ("dapo", "rl")
    assert v.overrides == (("rl.algorithm", "dapo"), ("rl.clip_eps_high", 0.28),
                           ("env.tools", "none"))
    assert ablation.parse_variant(v.spec) == v
    assert ablation.parse_variant("base: base").overrides == ()


@pytest.mark.parametrize("spec,needle", [
    ("no colon here", "expected 'label: policy"),
    ("x: train", "policy 'train' is not one of"),
    ("x: rl rl.steps", "'rl.steps' is not key=value"),
    (":rl", "expected 'label: policy"),
])
def test_bad_variant_names_the_spec(spec, needle):
    with pytest.raises(ValueError, match=needle):
        ablation.parse_variant(spec)


@pytest.mark.parametrize("variant,needle", [
    ("x: rl rl.gruop_size=4", r"variants\['x'\]: unknown config key 'rl.gruop_size'"),
    ("x: rl rl.group_size=1", r"variants\['x'\].*config\.rl\.group_size"),
    ("x: rl rl.group_size=abc", r"variants\['x'\]: rl.group_size='abc'"),
    ("x: rl eval.policies=rl", r"variants\['x'\]: eval.policies is set by the ablation"),
])
def test_bad_variant_fails_at_plan_naming_variant_and_key(variant, needle):
    c = load("stages")
    c.ablation.variants = (variant,)
    with pytest.raises(ValueError, match=needle):
        ablation.plan(c)


def test_unknown_variant_key_exits_from_the_command_line(tmp_path):
    with pytest.raises(SystemExit, match="unknown config key 'rl.nope'"):
        cli.train_main(["vista-train", "--config",
                        os.path.join(ROOT, "configs", "ablations", "algorithms.py"),
                        f"--config.run_root={tmp_path}",
                        "--config.ablation.variants=('x: rl rl.nope=1',)"])
    assert not os.path.exists(tmp_path / "ablations")  # nothing ran


def test_every_ablation_config_plans_and_runs_are_shared():
    plans = {name: ablation.plan(load(name)) for name in ablation.ORDER}
    by = {name: {(p.variant.label, p.seed): p for p in ps} for name, ps in plans.items()}
    for seed in (0, 1, 2):
        # SFT → GRPO is one run, whichever ablation asks for it
        runs = {by["stages"]["sft_grpo", seed].run_dir, by["algorithms"]["grpo", seed].run_dir,
                by["group_size"]["G8", seed].run_dir}
        assert len(runs) == 1
        # one SFT run per seed serves every variant that does not change SFT's settings
        sft = {p.sft_dir for name in ("stages", "algorithms", "group_size")
               for p in plans[name] if p.seed == seed and p.variant.label != "grpo_only"}
        sft.add(by["tools_without_training"]["tool_trained", seed].sft_dir)
        assert len(sft) == 1
        # tools at evaluation only: same SFT run, another variant run
        a = by["tools_without_training"]["direct_no_tools", seed]
        b = by["tools_without_training"]["direct_prompted_tools", seed]
        assert a.sft_dir == b.sft_dir != by["stages"]["sft_only", seed].sft_dir
        assert a.run_dir != b.run_dir
        assert b.config.eval.tools and a.config.sft.expert == "direct"
    # seeds differ, labels and the policy each run evaluates are set
    assert len({p.run_dir for p in plans["algorithms"]}) == 9
    p = by["stages"]["base", 0]
    assert (p.stop_after, p.config.eval.policies, p.sft_config.eval.policies) == ("sft", "base", "")
    assert by["stages"]["grpo_only", 0].sft_config.sft.steps == 0
    for ps in plans.values():
        for p in ps:
            assert p.config.sft.init_from == p.sft_dir


def test_sft_per_seed_false_shares_the_first_seeds_sft_run():
    c = load("algorithms", "--config.ablation.sft_per_seed=False")
    ps = ablation.plan(c)
    assert len({p.sft_dir for p in ps}) == 1 and len({p.run_dir for p in ps}) == 9
    assert {p.sft_config.seed for p in ps} == {0}


def test_run_keys_ignore_names_paths_logging_and_new_default_fields():
    c = load("stages")
    a = ablation.plan(c)
    c2 = load("stages", "--config.log.every=1", "--config.checkpoint.keep=1",
              "--config.tools.timeout_s=5.0")
    c2.ablation.runs_dir = "/tmp/elsewhere"
    b = ablation.plan(c2)
    assert [os.path.basename(p.run_dir) for p in a] == [os.path.basename(p.run_dir) for p in b]
    assert ablation.settings(config_lib_tiny()) == {}
    c3 = load("stages", "--config.rl.learning_rate=1e-4")
    assert ablation.plan(c3)[3].run_dir != a[3].run_dir  # sft_grpo seed 0: an RL setting
    assert ablation.plan(c3)[3].sft_dir == a[3].sft_dir


def config_lib_tiny():
    return cli.load_config(["vista-train", "--config", os.path.join(ROOT, "configs", "tiny_cpu.py")])


def _fake_pipeline(calls):
    """pipeline.run stand-in: records the call, writes summary.json and a metrics log whose
    accuracy is a known function of (variant settings, seed)."""

    def run(config, stop_after="rl"):
        calls.append((config.name, stop_after))
        run_dir = os.path.join(config.run_root, config.name)
        os.makedirs(run_dir, exist_ok=True)
        acc = 0.1 * config.seed + (0.5 if config.rl.algorithm == "ppo" else 0.2)
        results = {}
        for p in config.eval.policies.split(","):
            if p:
                results[p] = {"accuracy": acc, "mean_turns": 2.0, "taxonomy/E1": 1 - acc,
                              "accuracy@chart_qa": acc}
        with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
            for step in range(3):
                phase = "rl" if stop_after == "rl" else "sft"
                f.write(json.dumps({"phase": phase, "step": step, "reward": acc * step,
                                    "accuracy": acc, "val_accuracy": acc}) + "\n")
        with open(os.path.join(run_dir, "summary.json"), "w") as f:
            json.dump({"results": results, "wall_time_s": 1.0,
                       "timings": {"grpo_s": 10.0 + config.seed}}, f)
        return {}

    return run


def test_sweep_runs_each_run_once_and_aggregates(tmp_path, monkeypatch):
    from vista_jax import pipeline

    calls = []
    monkeypatch.setattr(pipeline, "run", _fake_pipeline(calls))
    c = load("algorithms", "--config.ablation.seeds=(0,1)", run_root=str(tmp_path))
    c.ablation.variants = ("grpo: rl", "ppo: rl rl.algorithm=ppo")
    result = ablation.run(c)
    assert len(calls) == 2 + 4  # an SFT run per seed, a run per variant x seed
    assert sum(stop == "sft" for _, stop in calls) == 2
    ppo = next(v for v in result["variants"] if v["label"] == "ppo")
    # accuracies 0.5 (seed 0) and 0.6 (seed 1): mean 0.55, sample std 0.0707
    assert ppo["stats"]["accuracy"]["mean"] == pytest.approx(0.55)
    assert ppo["stats"]["accuracy"]["std"] == pytest.approx(math.sqrt(0.005))
    assert ppo["seeds"]["1"]["curves"]["rl/reward"] == [[0, 1, 2], [0.0, 0.6, 1.2]]
    out = tmp_path / "ablations" / "algorithms"
    report = (out / "report.md").read_text()
    assert "| ppo | 2 | 55.0 ± 7.1 | 55.0 ± 7.1 |" in report  # accuracy, chart_qa
    assert "| grpo | 25.0 ± 7.1 | 75.0 ± 7.1 |" in report  # taxonomy: correct, E1
    # RL budget: 24 steps x 8 prompts x G=8 episodes; RL wall time 10 s and 11 s
    assert "| 1536 ± 0 | 10 ± 1 |" in report
    assert ppo["stats"]["budget/rl_time_s"]["mean"] == pytest.approx(10.5)
    for png in ("curves", "taxonomy"):
        assert (out / "plots" / f"{png}.png").stat().st_size > 1000
    assert os.path.samefile(out / "runs" / "ppo-seed1", tmp_path / ppo["seeds"]["1"]["run_dir"])
    summary = (tmp_path / "ablations" / "summary.md").read_text()
    assert "## 2. RL algorithms" in summary and "algorithms/plots/curves.png" in summary
    # again: every run is read back, none re-run
    ablation.run(c)
    assert len(calls) == 6
    # the summary CLI rebuilds the page from ablation.json alone
    os.remove(tmp_path / "ablations" / "summary.md")
    assert ablation.main([str(tmp_path / "ablations")]) == 0
    assert "## 2. RL algorithms" in (tmp_path / "ablations" / "summary.md").read_text()
    assert ablation.main([str(tmp_path / "ablations"), "--out", str(tmp_path / "docs")]) == 0
    assert (tmp_path / "docs" / "algorithms" / "plots" / "taxonomy.png").exists()
    assert "(algorithms/plots/curves.png)" in (tmp_path / "docs" / "summary.md").read_text()
    assert ablation.main([str(tmp_path / "nothing")]) == 2


MICRO = ["--config.sft.num_trajectories=32", "--config.sft.steps=2", "--config.sft.batch_size=4",
         "--config.sft.warmup_steps=1", "--config.sft.validate_every=0",
         "--config.rl.steps=1", "--config.rl.prompts_per_step=2", "--config.rl.group_size=2",
         "--config.rl.warmup_steps=1", "--config.eval.num_tasks=4", "--config.eval.batch_size=4",
         "--config.tokenizer.vocab_size=400", "--config.log.tensorboard=False",
         "--config.checkpoint.async_save=False", "--config.ablation.seeds=(0,)"]


def test_eval_tools_and_mixture_change_only_the_test_env():
    from vista_jax import pipeline

    c = config_lib_tiny()
    c.env.tools, c.eval.tools, c.eval.mixture = "none", "bar_values,calculator", "chart_qa,counting"
    mixture, kw = pipeline.env_setup(c)
    eval_mixture, eval_kw = pipeline.env_setup(c, for_eval=True)
    assert kw["tools"] == ("none",) and eval_kw["tools"] == ("bar_values", "calculator")
    assert sorted(mixture.weights) == ["chart_qa"]
    assert sorted(eval_mixture.weights) == ["chart_qa", "counting"]
    c.eval.tools = c.eval.mixture = ""  # "" = env's
    eval_mixture, eval_kw = pipeline.env_setup(c, for_eval=True)
    assert eval_kw["tools"] == ("none",) and sorted(eval_mixture.weights) == ["chart_qa"]


@pytest.mark.slow
def test_micro_sweep_through_the_job(tmp_path):
    """One SFT run (direct-answer expert data, no tools, sft.steps=0) shared by two variant
    runs on the real job: the untrained policy and GRPO from it, tested on two families."""
    c = load("tools_without_training", *MICRO, run_root=str(tmp_path))
    common = "sft.steps=0 sft.expert=direct env.tools=none eval.mixture=chart_qa,counting"
    c.ablation.variants = (f"untrained: base {common}", f"grpo_only: rl {common}")
    result = ablation.run(c)
    by = {v["label"]: v["seeds"]["0"] for v in result["variants"]}
    assert by["untrained"]["sft_run_dir"] == by["grpo_only"]["sft_run_dir"]
    # the direct expert calls no tool
    expert = (tmp_path / by["grpo_only"]["sft_run_dir"] / "expert" / "train.jsonl").read_text()
    assert "<answer>" in expert and "<tool_call>" not in expert and "No tools." in expert
    for label, policy in (("untrained", "base"), ("grpo_only", "grpo")):
        run_dir = tmp_path / by[label]["run_dir"]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert list(summary["results"]) == [policy]  # eval.policies: that policy only
        assert {"accuracy@chart_qa", "accuracy@counting"} <= set(by[label]["results"])
        phases = {json.loads(m)["phase"] for m in (run_dir / "metrics.jsonl").read_text().splitlines()}
        assert "sft" not in phases and ("rl" in phases) == (policy == "grpo")
    assert (tmp_path / "ablations" / "summary.md").exists()


def test_moving_average_of_rl_curves():
    import numpy as np

    got = ablation._moving_average(np.array([1.0, 2, 3, 4, 5, 6]), 3)
    assert np.allclose(got, [1, 1.5, 2, 3, 4, 5])
