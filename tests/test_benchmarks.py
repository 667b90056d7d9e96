"""The benchmarks run end to end at toy sizes and report sane numbers."""

import importlib.util
import json
import math
import pathlib
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "sampler_throughput.py"


def test_sampler_throughput_benchmark_runs(capsys, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    spec = importlib.util.spec_from_file_location("sampler_throughput", BENCH)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # dataclasses look their module up
    spec.loader.exec_module(bench)

    # One torch thread: a busy shared CPU can stall multi-threaded torch for seconds.
    result = bench.main(["-B", "2", "3", "-P", "8", "-N", "4", "-R", "1", "--torch-threads", "1"])
    for key in ("ours_tokens_per_s", "transformers_tokens_per_s", "ratio",
                "ours_tokens_per_s_b3", "transformers_tokens_per_s_b3", "ratio_b3"):
        assert math.isfinite(result[key]) and result[key] > 0, (key, result[key])
    # Logits agree to ~1e-5, so greedy decoding picks the same tokens on both sides.
    assert result["token_agreement"] == 1.0 and result["rows_identical"] == 2
    assert result["token_agreement_b3"] == 1.0 and result["rows_identical_b3"] == 3
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1]) == result  # the final line is the JSON
    assert any("HF generate" in line for line in out[:-1])  # after the table


def test_tool_server_load_benchmark_runs(capsys):
    path = BENCH.parent / "tool_server_load.py"
    spec = importlib.util.spec_from_file_location("tool_server_load", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--duration", "0.3", "--batch-clients", "2", "--skip-batching"])
    assert result["errors"] == 0  # every call of both mixes succeeded
    for key in ("light_calls_per_s", "reader_calls_per_s", "p50_ms_256", "p99_ms_256",
                "call_p99_ms_64"):
        assert math.isfinite(result[key]) and result[key] > 0, (key, result[key])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result


def test_train_step_throughput_benchmark_runs(capsys, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    path = BENCH.parent / "train_step_throughput.py"
    spec = importlib.util.spec_from_file_location("train_step_throughput", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)
    spec.loader.exec_module(bench)

    result = bench.main(["-B", "2", "-L", "48", "-R", "2", "--torch-threads", "1"])
    for key in ("ours_tokens_per_s", "torch_tokens_per_s", "ratio"):
        assert math.isfinite(result[key]) and result[key] > 0, (key, result[key])
    assert result["trained_tokens"] == 2 * 48
    # The torch GRPO update is the same computation: first-step loss and grad norm, and the
    # loss after the optimizer's updates, agree to float32 rounding.
    for key in ("loss_rel_diff", "grad_norm_rel_diff", "entropy_rel_diff", "loss_last_rel_diff"):
        assert result[key] < 1e-4, (key, result[key])
    assert 0 < result["clip_fraction_torch"] < 1  # the clip takes part
    # Update 1 runs at lr 0 (optax warmup from 0); the third call sees the second update.
    assert result["loss_last_ours"] != result["loss_ours"]
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1]) == result  # the final line is the JSON
    assert any("torch (HF + GRPO)" in line for line in out[:-1])  # after the table
