"""metrics_log (metrics.jsonl + TensorBoard scalars, offset/truncate for resume) and
report (PNG curves from metrics.jsonl, embedded in report.md)."""

import glob
import json
import os
import struct

import ml_collections
import pytest

from vista_jax import metrics_log as ml
from vista_jax import report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- a synthetic run's log ------------------------------------------------------------

def log_synthetic_run(log: ml.MetricsLog, sft_steps=30, rl_steps=12):
    """What pipeline.run logs: base eval, SFT steps + validations, sft eval, RL steps, grpo eval."""
    log("eval", 0, {"policy": "base", "accuracy": 0.1, "tool_calls_per_episode": 0.2,
                    "mean_turns": 1.3})
    for s in range(0, sft_steps, 5):
        log("sft", s, {"loss": 3.0 / (1 + s), "token_accuracy": s / sft_steps, "elapsed_s": s})
        if s % 10 == 0:
            log("sft", s, {"val_accuracy": 0.2 + s / 100, "elapsed_s": s})
    log("eval", 0, {"policy": "sft", "accuracy": 0.4, "tool_calls_per_episode": 1.1,
                    "mean_turns": 2.0})
    for s in range(rl_steps):
        log("rl", s, {"loss": 0.01 * s, "clip_fraction": 0.1, "reward": 0.3 + 0.02 * s,
                      "accuracy": 0.35 + 0.02 * s, "turns": 2.0 + 0.05 * s,
                      "response_tokens": 120.0 - s, "tool_calls": 1.0 + 0.1 * s,
                      "tool_call_validity": 0.9, "tool_calls/chart_to_table": 0.6,
                      "tool_calls/bar_values": 0.4 + 0.1 * s, "errors/E1": 0.05,
                      "reward/correct": 0.35 + 0.02 * s, "reward/format": -0.05,
                      "reward/repetition": 0.0, "reward/overlong": 0.0,
                      "informative_groups": 0.5})
    log("eval", 0, {"policy": "grpo", "accuracy": 0.55, "tool_calls_per_episode": 1.8,
                    "mean_turns": 2.4})


def tiny_config():
    c = ml_collections.ConfigDict()
    c.name = "synthetic"
    c.eval = ml_collections.ConfigDict({"num_tasks": 8})
    c.env = ml_collections.ConfigDict({"mixture": "chart_qa", "difficulty": 1})
    c.rl = ml_collections.ConfigDict({"algorithm": "dapo"})
    return c


def tiny_summary():
    res = {p: {"accuracy": a, "tool_call_validity": 1.0, "tool_calls_per_episode": 1.0,
               "mean_turns": 2.0, "format_ok": 1.0, "answered": 1.0, "mean_reward": a}
           for p, a in (("base", 0.1), ("sft", 0.4), ("grpo", 0.55))}
    return {"results": res, "timings": {"sft_s": 1.0, "grpo_s": 2.0}, "expert_pass_rate": 1.0}


def assert_png(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == PNG_SIGNATURE, path
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    assert width >= 300 and height >= 200, (path, width, height)
    assert len(data) > 5000, (path, len(data))  # axes, curves and text, not a blank canvas


# --- reading TensorBoard event files back -------------------------------------------

def read_events(logdir):
    """Every Event in `logdir`'s event files, in the order TensorBoard reads them, parsed
    from the TFRecord framing by hand (u64 length, u32 masked crc, data, u32 masked crc)."""
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c

    events = []
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            header = data[pos:pos + 8]
            (length,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == masked_crc32c(header)
            body = data[pos + 12:pos + 12 + length]
            assert struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] == \
                masked_crc32c(body)
            events.append(event_pb2.Event.FromString(body))
            pos += 16 + length
    return events


def read_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} as TensorBoard shows them: with tensorboard installed, its
    EventAccumulator; else the hand reader, applying TensorBoard's purge rule (a
    SessionLog START at step s drops the events read so far at step >= s)."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        EventAccumulator = None
    if EventAccumulator is not None:
        acc = EventAccumulator(logdir, size_guidance={"scalars": 0})
        acc.Reload()
        return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    from tensorboardX.proto.event_pb2 import SessionLog

    scalars: dict[str, list[tuple[int, float]]] = {}
    for ev in read_events(logdir):
        if ev.HasField("session_log") and ev.session_log.status == SessionLog.START:
            scalars = {t: [(s, v) for s, v in pts if s < ev.step] for t, pts in scalars.items()}
        for v in ev.summary.value:
            scalars.setdefault(v.tag, []).append((ev.step, v.simple_value))
    return {t: pts for t, pts in scalars.items() if pts}


def rounded(scalars):  # TensorBoard stores float32
    return {t: [(s, round(v, 5)) for s, v in pts] for t, pts in scalars.items()}


# --- report -----------------------------------------------------------------------------

def test_report_embeds_valid_png_plots(tmp_path):
    with ml.MetricsLog(str(tmp_path / "metrics.jsonl")) as log:
        log_synthetic_run(log)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"phase": "rl", "step": 12, "rew')  # a crash cut the last line
    path = report.write_report(str(tmp_path), tiny_config(), tiny_summary())
    text = open(path, encoding="utf-8").read()
    names = ["reward", "accuracy", "response_length", "tool_calls", "sft_loss"]
    for name in names:
        assert f"![{name}](plots/{name}.png)" in text
        assert_png(tmp_path / "plots" / f"{name}.png")
    assert "| accuracy | 0.100 | 0.400 | 0.550 |" in text  # the table is still there
    assert "| SFT → DAPO |" in text  # the RL column is named after rl.algorithm


def test_plots_whose_metrics_are_absent_are_skipped(tmp_path):
    assert report.write_plots(str(tmp_path)) == []  # no metrics.jsonl at all
    report.write_report(str(tmp_path), tiny_config(), tiny_summary())
    assert "## Training curves" not in (tmp_path / "report.md").read_text()

    with ml.MetricsLog(str(tmp_path / "metrics.jsonl")) as log:  # an SFT-only run, one step
        log("sft", 0, {"loss": 2.5, "note": "text", "shape": [1, 2]})
        log("rl", 0, {"loss": "nan-as-text"})  # no plotted key in any usable form
    written = report.write_plots(str(tmp_path))  # from the run dir alone, as vista-eval does
    assert written == [str(tmp_path / "plots" / "sft_loss.png")]
    assert_png(written[0])


def test_series_keep_the_last_value_of_a_re_logged_step():
    recs = [{"phase": "rl", "step": 1, "reward": 0.1}, {"phase": "rl", "step": 0, "reward": 0.0},
            {"phase": "rl", "step": 1, "reward": 0.7}, {"phase": "sft", "step": 2, "reward": 9.0},
            {"phase": "rl", "step": 2, "reward": True}]
    assert report.series(recs, "rl", "reward") == ([0, 1], [0.0, 0.7])


# --- metrics log: TensorBoard -------------------------------------------------------------

def test_tensorboard_scalars_match_the_jsonl(tmp_path):
    tb = tmp_path / "tb"
    with ml.MetricsLog(str(tmp_path / "metrics.jsonl"), tensorboard_dir=str(tb)) as log:
        log("sft", 0, {"loss": 2.5, "token_accuracy": 0.25})
        log("sft", 10, {"loss": 1.5, "token_accuracy": 0.5})
        log("rl", 3, {"reward": 0.75, "tool_calls/zoom": 2, "ok": True,
                      "note": "a string", "curve": [[1, 0.5]], "nested": {"a": 1}})
        log("eval", 0, {"policy": "sft", "accuracy": 0.5, "mean_turns": 2.0,
                        "accuracy@chart_qa": 0.75, "turns (mean)": 1.5})

    sft, rl, ev = (rounded(read_scalars(str(tb / p))) for p in ("sft", "rl", "eval_sft"))
    assert sft == {"sft/loss": [(0, 2.5), (10, 1.5)], "sft/token_accuracy": [(0, 0.25), (10, 0.5)]}
    assert rl == {"rl/reward": [(3, 0.75)], "rl/tool_calls/zoom": [(3, 2.0)], "rl/ok": [(3, 1.0)]}
    assert ev == {"eval_sft/accuracy": [(0, 0.5)], "eval_sft/mean_turns": [(0, 2.0)],
                  "eval_sft/accuracy/chart_qa": [(0, 0.75)], "eval_sft/turns__mean_": [(0, 1.5)]}
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[2]["note"] == "a string" and lines[2]["nested"] == {"a": 1}  # kept in JSONL
    assert lines[3]["policy"] == "sft"


def test_offset_truncate_round_trip_and_purge_on_resume(tmp_path):
    path, tb = str(tmp_path / "metrics.jsonl"), str(tmp_path / "tb")
    log = ml.MetricsLog(path, tensorboard_dir=tb)
    log("sft", 0, {"loss": 2.0})
    log("rl", 0, {"reward": 0.1})
    log("rl", 1, {"reward": 0.2})
    offset = log.offset()  # a checkpoint after RL step 1
    assert offset == os.path.getsize(path)
    kept = open(path, "rb").read()
    log("rl", 2, {"reward": 0.3})
    log("rl", 3, {"reward": 0.4})  # then the job dies
    log.close()

    ml.truncate(path, offset)
    assert open(path, "rb").read() == kept
    with ml.MetricsLog(path, tensorboard_dir=tb, purge_step={"rl": 2}) as log:
        log("rl", 2, {"reward": 0.33})
        assert log.offset() > offset
    steps = [(r["phase"], r["step"]) for r in map(json.loads, open(path))]
    assert steps == [("sft", 0), ("rl", 0), ("rl", 1), ("rl", 2)]
    # the first attempt's steps 2 and 3 are purged; step 2 shows the resumed job's value
    assert rounded(read_scalars(os.path.join(tb, "rl"))) == {
        "rl/reward": [(0, 0.1), (1, 0.2), (2, 0.33)]}
    assert rounded(read_scalars(os.path.join(tb, "sft"))) == {"sft/loss": [(0, 2.0)]}

    with pytest.raises(ValueError, match="fewer than"):
        ml.truncate(path, 10**6)
    ml.truncate(str(tmp_path / "missing.jsonl"), 0)  # nothing logged yet: nothing to cut
    with pytest.raises(FileNotFoundError):
        ml.truncate(str(tmp_path / "missing.jsonl"), 5)
