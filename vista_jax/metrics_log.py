"""The run's metrics log: metrics.jsonl (the record `report.py` plots from) and, optionally,
TensorBoard scalars of the same numbers.

TensorBoard layout: tags `"{phase}/{key}"` at the logged step (eval records, which carry
`policy`: `"eval_{policy}/{key}"`), one TensorBoard run per tag prefix:
`<tensorboard_dir>/{sft,rl,eval_base,eval_sft,...}/events.out.tfevents.*`. A run per prefix
keeps `purge_step` exact: SFT and RL steps both count from 0, evaluations all log step 0,
and TensorBoard discards, within one run, every event at or after a purge step.

Resuming: a checkpoint records `MetricsLog.offset()`; on resume, `truncate(path, offset)`
cuts metrics.jsonl back to it before the log is reopened, and `purge_step` (per tag
prefix, the first step the resumed job will log again; 0 for the phases and evaluations
still to come) makes TensorBoard hide the discarded steps of the earlier attempt. Without
`purge_step` TensorBoard shows those steps beside the re-logged ones.
"""

from __future__ import annotations

import json
import numbers
import os
import re
import time
from collections.abc import Mapping
from typing import Any

from tqdm import tqdm

ECHO_KEYS = ("loss", "reward", "accuracy", "informative_groups", "clip_fraction",
             "logprob_abs_diff", "tool_call_validity", "decode_tokens_per_s")


def scalar(value: Any) -> float | None:
    """`value` as a float when it is a real number (bools as 0/1), else None."""
    if isinstance(value, numbers.Real):  # bool, int, float, numpy scalars
        return float(value)
    return None


def tensorboard_tag(key: str) -> str:
    """A metric's TensorBoard tag: `accuracy@geometry` (a per-family figure) becomes
    `accuracy/geometry`, any other character TensorBoard refuses (it renames them itself,
    with an INFO line per key) an underscore."""
    return re.sub(r"[^-/\w.]", "_", key.replace("@", "/"))


class MetricsLog:
    """Appends one JSON line per logged step to metrics.jsonl and echoes a short line;
    with `tensorboard_dir`, also writes every numeric metric as a TensorBoard scalar
    (strings, lists and other non-numbers stay in the JSONL only).

    `purge_step`: an int, or a mapping {tag prefix ("sft", "rl", "eval_grpo"...): step},
    naming the first step this job logs again after a resume; TensorBoard then drops that
    prefix's earlier events at or after it (prefixes a mapping leaves out keep theirs).
    E.g. resuming RL with n steps done: {"rl": n, "eval_grpo": 0}.
    """

    def __init__(self, path: str, tensorboard_dir: str | None = None,
                 purge_step: int | Mapping[str, int] | None = None):
        self.path = path
        self.f = open(path, "a", encoding="utf-8")
        self.tensorboard_dir = tensorboard_dir
        self.purge_step = purge_step
        self._writers: dict[str, Any] = {}  # tag prefix -> tensorboardX.SummaryWriter, on first use

    def __call__(self, phase: str, step: int, metrics: dict[str, Any], echo: bool = False):
        rec = {"phase": phase, "step": step, "time": time.time(), **metrics}
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        if self.tensorboard_dir is not None:
            self._write_scalars(phase, step, metrics, rec["time"])
        if echo:
            keys = [k for k in ECHO_KEYS if k in metrics]
            tqdm.write(f"[{phase} {step}] " + " ".join(f"{k}={metrics[k]:.4g}" for k in keys))

    def _write_scalars(self, phase: str, step: int, metrics: dict[str, Any], walltime: float):
        prefix = f"eval_{metrics['policy']}" if phase == "eval" and "policy" in metrics else phase
        writer = self._writer(prefix)
        for key, value in metrics.items():
            v = scalar(value)
            if v is not None:
                writer.add_scalar(tensorboard_tag(f"{prefix}/{key}"), v, global_step=step,
                                  walltime=walltime)

    def _writer(self, prefix: str):
        if prefix not in self._writers:
            from tensorboardX import SummaryWriter

            purge = self.purge_step
            if isinstance(purge, Mapping):
                purge = purge.get(prefix)
            # tensorboardX names a file by the second and host only and opens it "wb": the
            # suffix keeps a writer reopened within the same second (a quick resume) from
            # overwriting the last one's file, and sorts after it as TensorBoard reads them.
            self._writers[prefix] = SummaryWriter(
                os.path.join(self.tensorboard_dir, prefix), purge_step=purge,
                filename_suffix=f".{time.time_ns()}")
        return self._writers[prefix]

    def offset(self) -> int:
        """The byte size of metrics.jsonl with everything logged so far written (TensorBoard
        flushed too): what a checkpoint records to `truncate` back to on resume."""
        self.f.flush()
        for w in self._writers.values():
            w.flush()
        return os.fstat(self.f.fileno()).st_size

    def close(self):
        for w in self._writers.values():
            w.close()
        self._writers.clear()
        self.f.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc):
        self.close()


def truncate(path: str, offset: int) -> None:
    """Cuts an append-only log at `path` (metrics.jsonl, the RL trajectory log) back to
    `offset` bytes (what a checkpoint recorded, e.g. `MetricsLog.offset()`), dropping what a
    resumed job will write again. Call it before opening the log. A missing file is fine for
    offset 0; a file shorter than `offset` is an error (the log lost records)."""
    if not os.path.exists(path):
        if offset:
            raise FileNotFoundError(f"{path}: no metrics log to truncate to {offset} bytes")
        return
    size = os.path.getsize(path)
    if size < offset:
        raise ValueError(f"{path} has {size} bytes, fewer than the checkpoint's offset {offset}")
    with open(path, "r+b") as f:
        f.truncate(offset)
