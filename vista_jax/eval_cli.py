"""`vista-eval`: the error taxonomy's distribution per task family from trajectory logs, and
`vista-view`: one logged trajectory as an HTML page.

    vista-eval --trajectories runs/tiny/trajectories/            # per policy, per family
    vista-eval --trajectories a.jsonl b.jsonl --by question_type --json
    vista-eval --checkpoint runs/tiny_cpu --phase sft --config.eval.num_tasks=200
    vista-view runs/tiny/trajectories/eval.jsonl --index 3 -o traj.html
    vista-view runs/tiny/trajectories/eval.jsonl --task-id chart_qa/val/10000004 -o t.html

With `--checkpoint RUN_DIR` it first plays the run's checkpointed policy (newest, `--step`
or `--phase`) greedily on `eval.num_tasks` tasks of `--split` with a local tool server (or
`--config.tools.url`), restored onto this machine's mesh, prints its accuracy and writes
the episodes (`--out`, default `RUN_DIR/trajectories/eval_step<N>.jsonl`), then reports on
them as below.

Trajectories of more than one policy (a run's eval_base / eval_sft / eval_grpo logs, each
record's "policy" field, else the log's file name) first get one row per policy: accuracy
and the E1–E6 / tool_failure shares, as the paper's Table 1; then the table per family.

Logs are `TrajectoryWriter` JSONL files (one `VistaEnv.trajectory()` record a line); a
directory is searched recursively for `*.jsonl`. Records carrying a "taxonomy" label keep
it; the others are classified (`vista_jax.env.taxonomy`), rebuilding procedural tasks from
their family, split and seed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from vista_jax.env.trajectory_log import IMAGE_KEY

_REQUIRED = {"family": str, "turns": list, "correct": bool}


class LogError(Exception):
    """A trajectory log that cannot be read: the message names the file (and line)."""


def find_logs(paths: Sequence[str]) -> list[str]:
    """The JSONL files named by `paths` (files as given, directories searched for *.jsonl)."""
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(root, name) for root, _, names in os.walk(path)
                           for name in names if name.endswith(".jsonl"))
            if not found:
                raise LogError(f"{path}: directory holds no *.jsonl trajectory logs")
            files.extend(found)
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise LogError(f"{path}: no such file or directory")
    return files


def iter_records(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-blank line of the log `path`, images left as
    their `{"$image": ...}` references; a malformed line raises LogError naming it."""
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise LogError(f"{path}: cannot open: {e.strerror or e}") from e
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise LogError(f"{path}:{lineno}: not valid JSON ({e.msg} at column "
                               f"{e.colno})") from e
            if not isinstance(record, dict):
                raise LogError(f"{path}:{lineno}: expected a trajectory object, got "
                               f"{type(record).__name__}")
            for key, kind in _REQUIRED.items():
                if not isinstance(record.get(key), kind):
                    raise LogError(f"{path}:{lineno}: record lacks {key!r} (a {kind.__name__})"
                                   f"; is this a trajectory log?")
            yield lineno, record


# --- vista-eval --------------------------------------------------------------------------

def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vista-eval", description="Accuracy and the E1-E6 / tool_failure error taxonomy "
        "per task family, from trajectory logs (shares are of all trajectories).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--trajectories", nargs="+", metavar="PATH",
                     help="JSONL trajectory logs, or directories searched for *.jsonl")
    src.add_argument("--checkpoint", metavar="RUN_DIR",
                     help="evaluate this run's checkpointed policy first (takes --config.x=y "
                          "overrides of the run's config, e.g. --config.eval.num_tasks=200)")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--step", type=int, help="with --checkpoint: global step (default newest)")
    pick.add_argument("--phase", choices=("sft", "rl"),
                      help="with --checkpoint: the end of this phase")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="with --checkpoint: task split (default test)")
    p.add_argument("--out", help="with --checkpoint: where to write the episodes")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--by", metavar="FIELD",
                   help="also break each family down by this record field, e.g. "
                        "question_type or difficulty")
    return p


def report_from_logs(paths: Sequence[str], by: str | None = None) -> dict[str, Any]:
    """The vista-eval report of the trajectory logs `paths` (files, or directories searched
    for *.jsonl): `taxonomy.summarize`'s {"families", "total"} (broken down `by` a record
    field if given), plus "policies" (one row per policy, the paper's Table 1) when the
    records come from more than one (each record's "policy" field, else its log's name).
    Raises LogError naming the file (and line) of unreadable input, or when there are no
    trajectories."""
    from vista_jax.env import taxonomy

    records, labels, sources = [], [], []
    for path in find_logs(paths):
        for lineno, record in iter_records(path):
            try:
                labels.append(taxonomy.label_of(record))
            except ValueError as e:
                raise LogError(f"{path}:{lineno}: {e}") from e
            records.append(record)
            # the policy that played it: the record's own field (a run's eval logs), else
            # the log's name (rl.jsonl: the RL rollouts)
            sources.append(str(record.get("policy")
                               or os.path.splitext(os.path.basename(path))[0]))
    if not records:
        raise LogError(f"no trajectories in {' '.join(paths)}")
    dist = taxonomy.tally(records, labels)
    by_dist = taxonomy.tally(records, labels, by=by) if by else None
    report = taxonomy.summarize(dist, by_dist, by)
    per_policy = taxonomy.tally([{"family": s} for s in sources], labels)
    if len(per_policy) > 1:
        order = {"base": 0, "sft": 1, "grpo": 2}
        report["policies"] = {p: taxonomy.summary_row(per_policy[p]) for p in sorted(
            per_policy, key=lambda p: (order.get(p, len(order)), p))}
    return report


def eval_main(argv: Sequence[str] | None = None) -> int:
    """The `vista-eval` command; returns the exit status (2 for unreadable input)."""
    from vista_jax.env import taxonomy

    parser = _eval_parser()
    args, rest = parser.parse_known_args(argv)
    if args.checkpoint is None and (rest or args.step is not None or args.phase or args.out):
        parser.error("--step, --phase, --out and --config.x=y go with --checkpoint"
                     + (f" (unrecognized: {' '.join(rest)})" if rest else ""))
    if args.checkpoint is not None:
        args.trajectories = [_evaluate_checkpoint(args, rest)]
    try:
        report = report_from_logs(args.trajectories, by=args.by)
    except LogError as e:
        print(f"vista-eval: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        if "policies" in report:
            print(taxonomy.format_distribution(report, "policies", "policy"))
            print()
        print(taxonomy.format_distribution(report))
    return 0


def _evaluate_checkpoint(args, overrides: list[str]) -> str:
    """Plays the checkpointed policy; prints its summary; returns the episodes' log path."""
    from vista_jax import cli, pipeline

    cli._setup_logging()
    config = cli.load_run_config(args.checkpoint, overrides, "vista-eval")
    out = args.out
    try:
        if out is None:
            which = args.phase or (f"step{args.step}" if args.step is not None else "latest")
            out = os.path.join(args.checkpoint, "trajectories", f"eval_ckpt_{which}.jsonl")
        summary = pipeline.evaluate_checkpoint(config, args.checkpoint, step=args.step,
                                               phase=args.phase, split=args.split, out=out)
    except (FileNotFoundError, KeyError) as e:
        raise SystemExit(f"vista-eval: {e}") from None
    print(f"checkpoint step {summary['step']} of {args.checkpoint}, {config.eval.num_tasks} "
          f"{args.split} tasks: " + " ".join(
              f"{k}={v:.3f}" for k, v in summary.items()
              if k in ("accuracy", "tool_call_validity", "mean_turns", "format_ok")))
    print(f"episodes: {out}")
    return out


# --- vista-view --------------------------------------------------------------------------

def _view_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vista-view",
                                description="One logged trajectory as an HTML page.")
    p.add_argument("log", metavar="LOG.jsonl", help="a trajectory log (TrajectoryWriter)")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--index", type=int, default=None,
                      help="the record's position in the log, from 0; negative counts from the end "
                           "(default 0)")
    pick.add_argument("--task-id", help="the first record with this task_id")
    p.add_argument("-o", "--output", help="where to write the page (default: stdout)")
    p.add_argument("--link-images", action="store_true",
                   help="link the PNG files beside the log instead of embedding them")
    return p


def _relink(value: Any, log_dir: str, out_dir: str) -> Any:
    """Image references relative to the log -> paths relative to the page's directory."""
    if isinstance(value, dict):
        if set(value) == {IMAGE_KEY}:
            return os.path.relpath(os.path.join(log_dir, value[IMAGE_KEY]), out_dir)
        return {k: _relink(v, log_dir, out_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_relink(v, log_dir, out_dir) for v in value]
    return value


def _pick(path: str, index: int | None, task_id: str | None) -> dict[str, Any]:
    records = [r for _, r in iter_records(path)]
    if task_id is not None:
        for record in records:
            if record.get("task_id") == task_id:
                return record
        some = ", ".join(str(r.get("task_id")) for r in records[:5])
        raise LogError(f"{path}: no record with task_id {task_id!r} among {len(records)} "
                       f"(e.g. {some})")
    index = 0 if index is None else index
    if not -len(records) <= index < len(records):
        raise LogError(f"{path}: --index {index} is out of range; the log holds "
                       f"{len(records)} records")
    return records[index]


def view_main(argv: Sequence[str] | None = None) -> int:
    """The `vista-view` command; returns the exit status (2 for unreadable input)."""
    from vista_jax.env.viewer import render_html

    args = _view_parser().parse_args(argv)
    try:
        if not os.path.isfile(args.log):
            raise LogError(f"{args.log}: no such file")
        record = _pick(args.log, args.index, args.task_id)
    except LogError as e:
        print(f"vista-view: error: {e}", file=sys.stderr)
        return 2
    log_dir = os.path.dirname(os.path.abspath(args.log))
    image_root = log_dir
    if args.link_images:
        out_dir = os.path.dirname(os.path.abspath(args.output)) if args.output else os.getcwd()
        record, image_root = _relink(record, log_dir, out_dir), out_dir
    page = render_html(record, image_root=image_root, embed_images=not args.link_images)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(page)
        print(f"wrote {args.output} ({record.get('task_id')}, "
              f"{len(record.get('turns') or [])} turns)", file=sys.stderr)
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":  # python -m vista_jax.eval_cli ... runs vista-eval
    sys.exit(eval_main())
