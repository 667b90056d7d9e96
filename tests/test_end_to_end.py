"""The main job, a few steps of each phase, through the console entry point.

Runs `python -m vista_jax.cli --config configs/tiny_cpu.py` with tiny overrides in a
subprocess (tool server started by the job itself) and checks that every artifact the
README promises exists and that every logged number is finite. That run is also the
reference of the exact-resume test (the same job SIGKILLed mid-RL and started again logs
the same metrics step for step) and the source of `vista-eval
--checkpoint` and `vista-export`. A second chain starts from a local HF checkpoint:
`vista-sft` on it, then PPO from that SFT checkpoint.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OVERRIDES = {
    "sft.num_trajectories": 48, "sft.steps": 4, "sft.batch_size": 4, "sft.warmup_steps": 1,
    "sft.validate_every": 2, "sft.validate_tasks": 4,
    "rl.steps": 3, "rl.prompts_per_step": 2, "rl.group_size": 4, "rl.warmup_steps": 1,
    "rl.kl_coef": 0.01,  # exercises the frozen-reference pass too (restored on resume)
    "eval.num_tasks": 6, "eval.batch_size": 4, "log.every": 1, "log.trajectories": 3,
    "tokenizer.vocab_size": 400,
    "checkpoint.sft_every": 1, "checkpoint.rl_every": 1, "checkpoint.keep": 2,
}


def job_cmd(run_root, name, **extra) -> list[str]:
    """The job's command line: OVERRIDES updated by `extra` (a value of None drops the key)."""
    cmd = [sys.executable, "-m", "vista_jax.cli", "--config",
           os.path.join(ROOT, "configs", "tiny_cpu.py"), f"--config.name={name}",
           f"--config.run_root={run_root}"]
    return cmd + [f"--config.{k}={v}" for k, v in {**OVERRIDES, **extra}.items()
                  if v is not None]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The tiny job run straight through: (run root, its run dir, the process)."""
    root = tmp_path_factory.mktemp("e2e")
    proc = subprocess.run(job_cmd(root, "e2e"), capture_output=True, text=True, timeout=600,
                          cwd=root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root, root / "e2e", proc


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
def test_main_job_writes_every_artifact(job):
    tmp_path, run, proc = job
    assert "summary: base_accuracy=" in proc.stdout
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
    assert [r["step"] for r in rl] == [0, 1, 2]
    val = [r for r in records if "val_accuracy" in r]
    assert [r["step"] for r in val] == [1, 3]  # after steps 2 and 4 (validate_every=2)
    for r in val:  # teacher-forced loss on the val split's expert trajectories
        assert 0 < r["val_loss"] < 10 and 0 <= r["val_token_accuracy"] <= 1
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
    assert steps == [4, 6, 7]  # the SFT end, the newest two (keep=2; the last is the RL end)
    assert (run / "tensorboard").is_dir() and (run / "plots" / "reward.png").is_file()
    assert "plots/reward.png" in report
    assert (run / "tokenizer").is_dir() and any((run / "tokenizer").iterdir())
    assert json.loads((run / "config.json").read_text())["rl"]["group_size"] == 4



@pytest.mark.slow
def test_vista_sft_from_an_hf_checkpoint_then_ppo_from_its_checkpoint(tmp_path):
    """`--config.model.checkpoint=DIR`: weights, sizes and tokenizer (Qwen2.5-VL format,
    protocol tags added, chat template checked) come from a local HF directory. `vista-sft`
    trains on them (on vista-expert's data) and stops after SFT and its evaluation;
    `vista-train` with sft.init_from restarts from that SFT phase (same SFT policy:
    identical greedy evaluation; no SFT steps logged, no tokenizer trained) and runs PPO,
    whose learner state (policy, value head, both optimizers) is checkpointed at the end."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "models"))
    from test_pretrained_policy import _checkpoint

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    _checkpoint(ckpt, vocab=448)
    expert = tmp_path / "data" / "expert.jsonl"  # SFT data from vista-expert, not generated
    from vista_jax.cli import expert_main  # in this process (its tools in-process too)

    expert_main(["--mixture", "chart_qa", "--difficulty", "1", "--n", "40", "--out",
                 str(expert), "--system-prompt-style", "minimal",
                 "--tools", "bar_values,chart_to_table,calculator,crop"])
    # Both runs on the checkpoint (its tokenizer: tokenizer.vocab_size does not apply).
    hf = {"model.checkpoint": ckpt, "eval.num_tasks": 4, "tokenizer.vocab_size": None}
    sft_cmd = [sys.executable, "-c", "from vista_jax.cli import sft_main; sft_main()"]
    sft_cmd += job_cmd(tmp_path, "sftonly", **hf, **{"sft.steps": 2, "sft.validate_every": 0,
                                                     "sft.data": expert})[3:]
    proc = subprocess.run(sft_cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert f"tensors from {ckpt}" in log and "added ['<think>'" in log
    first = json.loads((tmp_path / "sftonly" / "summary.json").read_text())
    assert set(first["results"]) == {"base", "sft"} and first["grpo_accuracy"] is None
    assert not list(_finite_numbers(first))
    assert not (tmp_path / "sftonly" / "expert").exists() and first["expert_pass_rate"] == 1.0
    assert not (tmp_path / "sftonly" / "tokenizer").exists()  # the checkpoint's, not a trained BPE
    assert "| SFT |" in (tmp_path / "sftonly" / "report.md").read_text()
    steps = sorted(int(p.name) for p in (tmp_path / "sftonly" / "checkpoints").iterdir()
                   if p.name.isdigit())
    assert steps == [1, 2]  # sft_every=1: step 1 mid-phase, step 2 the SFT end

    cmd2 = job_cmd(tmp_path, "ppo", **hf, **{"sft.init_from": tmp_path / "sftonly",
                                             "rl.steps": 1, "rl.algorithm": "ppo",
                                             "rl.kl_coef": 0.0})
    proc = subprocess.run(cmd2, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    again = json.loads((tmp_path / "ppo" / "summary.json").read_text())
    assert again["results"]["sft"] == first["results"]["sft"]
    assert again["sft_best_step"] is None and again["rl_algorithm"] == "ppo"
    assert not (tmp_path / "ppo" / "tokenizer").exists()
    records = [json.loads(line) for line in
               (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in records} == {"rl", "eval"}
    rl = next(r for r in records if r["phase"] == "rl")
    for key in ("value_loss", "explained_variance", "loss", "reward"):
        assert key in rl and math.isfinite(rl[key]), key
    assert "| SFT → PPO |" in (tmp_path / "ppo" / "report.md").read_text()


# --- exact resume ----------------------------------------------------------------------------

# Wall-clock figures differ between any two runs; everything else must be equal.
def _comparable(record):
    return {k: v for k, v in record.items()
            if k not in ("time", "elapsed_s") and not k.endswith(("_s", "_per_s"))}


def _records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _logged_steps(records, phase):
    return [r["step"] for r in records if r["phase"] == phase and "loss" in r]


def _run_until(cmd, run_dir, done, timeout=600):
    """Starts `cmd` and SIGKILLs it as soon as `done(metrics records)` holds."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    try:
        while time.time() - t0 < timeout:
            if proc.poll() is not None:
                raise AssertionError("the job ended before it could be killed:\n"
                                     + proc.stderr.read()[-3000:])
            try:
                records = _records(run_dir)
            except (FileNotFoundError, json.JSONDecodeError):  # not there yet / mid-line
                records = None
            if records is not None and done(records):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return records
            time.sleep(0.02)
        raise AssertionError("timed out")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_killed_and_resumed_job_logs_the_same_metrics_step_for_step(job):
    """SIGKILL mid-RL, resume to the end: the metrics are those of the uninterrupted run,
    step for step (timings aside). The kill comes after the job logged a step past its
    newest checkpoint, so the resume must also cut the logs back. SFT's mid-phase resume
    (params, optimizer, best-so-far, the grain iterator's position) is checked in
    test_checkpoint.py; here the resume starts from RL checkpoints."""
    root, through, _ = job
    expected = _records(through)
    run_dir = root / "killed"
    cmd = job_cmd(root, "killed")
    seen = _run_until(cmd, run_dir, lambda r: 1 in _logged_steps(r, "rl"))
    assert _logged_steps(seen, "sft") == _logged_steps(expected, "sft")  # SFT ran through
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resuming" in proc.stderr and "RL resumed at step" in proc.stderr

    got = _records(run_dir)
    assert [(r["phase"], r["step"]) for r in got] == [(r["phase"], r["step"]) for r in expected]
    for a, b in zip(got, expected):
        assert _comparable(a) == _comparable(b), (a["phase"], a["step"])
    summary = json.loads((run_dir / "summary.json").read_text())
    reference = json.loads((through / "summary.json").read_text())
    for key in ("base_accuracy", "sft_accuracy", "grpo_accuracy", "sft_best_step",
                "sft_validation_curve", "results", "expert_pass_rate"):
        assert summary[key] == reference[key], key
    assert summary["resumed_from_step"] >= 5  # an RL checkpoint (SFT ends at step 4)

    def rl_log(run):
        return [json.loads(x) for x in (run / "trajectories" / "rl.jsonl").read_text().splitlines()]

    assert [(r["step"], r["task_id"], r["reward"]) for r in rl_log(run_dir)] == [
        (r["step"], r["task_id"], r["reward"]) for r in rl_log(through)]


@pytest.mark.slow
def test_eval_and_export_from_the_checkpoint(job, tmp_path):
    """`vista-eval --checkpoint` plays the run's final policy in a fresh process (the same
    greedy accuracy as the job's own final evaluation) and reports the taxonomy;
    `vista-export` writes an HF checkpoint whose logits transformers reproduces."""
    root, run, _ = job
    summary = json.loads((run / "summary.json").read_text())
    out = tmp_path / "eval.jsonl"
    proc = subprocess.run([sys.executable, "-m", "vista_jax.eval_cli", "--checkpoint", str(run),
                           "--phase", "rl", "--config.eval.num_tasks=6", "--out", str(out),
                           "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    head = next(x for x in proc.stdout.splitlines() if x.startswith("checkpoint step 7"))
    assert f"accuracy={summary['grpo_accuracy']:.3f}" in head
    report = json.loads(proc.stdout[proc.stdout.index("\n{") + 1:])
    assert report and len(out.read_text().splitlines()) == 6
    from vista_jax import eval_cli  # in this process: a fresh one only to fail costs ~8 s

    with pytest.raises(SystemExit, match="no step 99"):
        eval_cli.eval_main(["--checkpoint", str(run), "--step", "99"])

    export = tmp_path / "hf"
    proc = subprocess.run([sys.executable, "-c", "from vista_jax.cli import export_main; "
                           "export_main()", "--checkpoint", str(run), "--phase", "sft",
                           "--out", str(export)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import numpy as np
    import torch
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(export, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(export)
    ids = tok("<think>read the chart</think><answer>42</answer>")["input_ids"]
    with torch.no_grad():
        hf_logits = hf(input_ids=torch.tensor([ids])).logits[0].numpy()
    # The same SFT params through our model, restored in this process.
    import jax
    from flax import nnx
    from vista_jax import checkpoint as ckpt_lib
    from vista_jax.models.hf_checkpoint import load_hf_checkpoint
    from vista_jax import sharding
    mesh = sharding.make_mesh((1, 1, 1))
    model, _ = load_hf_checkpoint(export, mesh, sharding.DEFAULT_RULES)
    _, params, _ = nnx.split(model, nnx.Param, ...)
    mngr = ckpt_lib.manager(run / "checkpoints", read_only=True)
    saved = ckpt_lib.restore_params(mngr, params, ckpt_lib.find_step(mngr, "sft"))
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    t = len(ids)
    pos = np.broadcast_to(np.arange(t, dtype=np.int32), (3, 1, t))
    ours, _ = model(np.array([ids], np.int32), pos, np.ones((1, t), bool))
    np.testing.assert_allclose(np.asarray(ours)[0], hf_logits, atol=1e-4)
