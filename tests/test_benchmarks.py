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
