"""benchmarks/sampler_vs_hf.py runs end to end at a toy size and reports sane numbers."""

import importlib.util
import json
import math
import pathlib
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "sampler_vs_hf.py"


def test_sampler_vs_hf_benchmark_runs(capsys, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    spec = importlib.util.spec_from_file_location("sampler_vs_hf", BENCH)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # dataclasses look their module up
    spec.loader.exec_module(bench)

    # One torch thread: a busy shared CPU can stall multi-threaded torch for seconds.
    result = bench.main(["-B", "2", "-P", "8", "-N", "4", "-R", "1", "--torch-threads", "1",
                         "--json"])
    for key in ("ours_tokens_per_s", "hf_tokens_per_s", "ratio"):
        assert math.isfinite(result[key]) and result[key] > 0, (key, result[key])
    # Logits agree to ~1e-5, so greedy decoding picks the same tokens on both sides.
    assert result["token_agreement"] == 1.0 and result["rows_identical"] == 2
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result


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
