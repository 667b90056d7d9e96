"""Fixtures shared across the suite."""

import atexit
import os
import shutil
import tempfile

import pytest

# XLA's CPU backend at LLVM optimisation level 0 for the whole session and its subprocesses:
# a third less wall time on the compile-bound tests (tests/rl/test_train_step.py,
# test_sampling.py, test_learns.py, test_qwen2_5_vl.py: 256 s at XLA's default level 3,
# 171 s at 0, on 2 cores). The HLO passes, and with them buffer sizes and every numerical
# tolerance, are unchanged; runs compared for exact equality are compiled alike. A level
# set in XLA_FLAGS is kept: XLA_FLAGS=--xla_backend_optimization_level=3 runs the suite at
# XLA's default.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]).strip()

# One on-disk XLA cache for the whole session, inherited by the subprocess jobs: the tiny
# job's programs (same shapes in the end-to-end, ablation and notebook tests) compile once.
# Compile-count tests count jit cache entries, which a disk hit still creates.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _XLA_CACHE = tempfile.mkdtemp(prefix="vista-jax-tests-xla-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
    import jax  # noqa: E402  (in case a plugin imported it before the variables were set)

    jax.config.update("jax_compilation_cache_dir", _XLA_CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

from vista_jax import tokenizer as T


@pytest.fixture(scope="session")
def eight_device_env() -> dict[str, str]:
    """The environment of a subprocess on 8 fake CPU devices (the session's XLA flags kept)."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8"
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags.strip())

# Task-like text for a tiny BPE: a question, a table, a think + tool call, an answer.
CHART_TEXTS = [
    "What is the value of Beta?", "Alpha | 23\nBeta | 41", "How much greater is Beta than Alpha?",
    '<think>I need the table.</think><tool_call>{"name": "chart_to_table", "arguments": '
    '{"image": "img_0"}}</tool_call>', "<answer>18</answer>", "Read the Beta bar.",
    '<think>Read Beta.</think><tool_call>{"name": "bar_values", "arguments": '
    '{"image": "img_0", "labels": ["Beta"]}}</tool_call>',
] * 20


@pytest.fixture(scope="session")
def chart_texts():
    return CHART_TEXTS


@pytest.fixture(scope="session")
def tok(tmp_path_factory):
    """A 400-token BPE trained on CHART_TEXTS, 4 pad tokens per image."""
    return T.load_or_train_tokenizer(tmp_path_factory.mktemp("tok"), lambda: CHART_TEXTS, 400, 4)
