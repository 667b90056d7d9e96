"""The main job, a few steps of each phase, through the console entry point.

Runs `python -m vista_jax.cli --config configs/tiny_cpu.py` with tiny overrides in a
subprocess (tool server started by the job itself) and checks that every artifact the
README promises exists and that every logged number is finite.
"""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OVERRIDES = {
    "sft.num_trajectories": 48, "sft.steps": 4, "sft.batch_size": 4, "sft.warmup_steps": 1,
    "sft.validate_every": 2, "sft.validate_tasks": 4,
    "rl.steps": 2, "rl.prompts_per_step": 2, "rl.group_size": 4, "rl.warmup_steps": 1,
    "rl.kl_coef": 0.01,  # exercises the frozen-reference pass too
    "eval.num_tasks": 6, "eval.batch_size": 4, "log.every": 1, "log.trajectories": 3,
    "tokenizer.vocab_size": 400,
}


def _finite_numbers(obj, where=""):
    """Yields (path, value) for every number in a JSON object that is not finite."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _finite_numbers(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _finite_numbers(v, f"{where}[{i}]")
    elif isinstance(obj, float) and not math.isfinite(obj):
        yield where, obj


@pytest.mark.slow
def test_main_job_writes_every_artifact(tmp_path):
    cmd = [sys.executable, "-m", "vista_jax.cli", "--config", os.path.join(ROOT, "configs", "tiny_cpu.py"),
           "--config.name=e2e", f"--config.run_root={tmp_path}"]
    cmd += [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "summary: base_accuracy=" in proc.stdout

    run = tmp_path / "e2e"
    summary = json.loads((run / "summary.json").read_text())
    for key in ("base_accuracy", "sft_accuracy", "grpo_accuracy", "tool_call_validity",
                "mean_turns", "wall_time_s"):
        assert isinstance(summary[key], float) and math.isfinite(summary[key]), key
        if key.endswith("accuracy") or key == "tool_call_validity":
            assert 0.0 <= summary[key] <= 1.0
    assert summary["wall_time_s"] > 0 and 1.0 <= summary["mean_turns"] <= 4.0
    assert summary["sft_validation_curve"] and summary["sft_best_step"] in (2, 4)
    assert not list(_finite_numbers(summary))

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    phases = {r["phase"] for r in records}
    assert phases == {"sft", "rl", "eval"}
    assert not [bad for r in records for bad in _finite_numbers(r)]
    rl = [r for r in records if r["phase"] == "rl"]
    assert [r["step"] for r in rl] == [0, 1]
    for key in ("loss", "reward", "informative_groups", "clip_fraction", "kl_ref", "decode_tokens_per_s"):
        assert key in rl[0], key
    assert {r["policy"] for r in records if r["phase"] == "eval"} == {"base", "sft", "grpo"}

    report = (run / "report.md").read_text()
    assert "| accuracy |" in report and "SFT → GRPO" in report
    for name in ("eval_base", "eval_sft", "eval_grpo", "rl"):
        lines = (run / "trajectories" / f"{name}.jsonl").read_text().splitlines()
        assert lines, name
        traj = json.loads(lines[0])
        assert traj["turns"] and "reward_components" in traj and "task_id" in traj
    steps = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [4, 6]  # after SFT, after GRPO
    assert (run / "tokenizer").is_dir() and any((run / "tokenizer").iterdir())
    assert json.loads((run / "config.json").read_text())["rl"]["group_size"] == 4

    # Restart from this run's SFT phase: same tokenizer, same SFT policy (identical greedy
    # evaluation), no SFT steps logged, no tokenizer trained in the new run.
    cmd2 = [c for c in cmd if not c.startswith(("--config.name=", "--config.rl.steps="))]
    cmd2 += ["--config.name=e2e_rl", f"--config.sft.init_from={run}", "--config.rl.steps=1"]
    proc = subprocess.run(cmd2, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    again = json.loads((tmp_path / "e2e_rl" / "summary.json").read_text())
    assert again["results"]["sft"] == summary["results"]["sft"]
    assert again["sft_best_step"] is None
    assert not (tmp_path / "e2e_rl" / "tokenizer").exists()
    phases = {json.loads(line)["phase"] for line in
              (tmp_path / "e2e_rl" / "metrics.jsonl").read_text().splitlines()}
    assert phases == {"rl", "eval"}


@pytest.mark.slow
def test_main_job_starts_from_an_hf_checkpoint(tmp_path):
    """`--config.model.checkpoint=DIR`: weights, sizes and tokenizer (Qwen2.5-VL format,
    protocol tags added, chat template checked) come from a local HF directory, and the job
    runs through SFT, GRPO and evaluation on them."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "models"))
    from test_pretrained_policy import _checkpoint

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    _checkpoint(ckpt, vocab=448)
    overrides = dict(OVERRIDES, **{"sft.steps": 2, "sft.validate_every": 2, "rl.steps": 1,
                                   "rl.kl_coef": 0.0, "eval.num_tasks": 4})
    overrides.pop("tokenizer.vocab_size")
    cmd = [sys.executable, "-m", "vista_jax.cli", "--config",
           os.path.join(ROOT, "configs", "tiny_cpu.py"), "--config.name=hf",
           f"--config.run_root={tmp_path}", f"--config.model.checkpoint={ckpt}"]
    cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert f"tensors from {ckpt}" in log and "added ['<think>'" in log
    summary = json.loads((tmp_path / "hf" / "summary.json").read_text())
    assert not list(_finite_numbers(summary))
    assert set(summary["results"]) == {"base", "sft", "grpo"}
    assert not (tmp_path / "hf" / "tokenizer").exists()  # the checkpoint's, not a trained BPE
