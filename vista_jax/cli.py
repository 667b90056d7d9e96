"""Console entry points, each taking `--config FILE` and `--config.a.b=value` overrides:

    vista-train  --config configs/tiny_cpu.py          SFT then RL (resumes a killed run)
    vista-train  --config configs/ablations/stages.py  every variant x seed of an ablation
    vista-sft    --config configs/tiny_cpu.py          SFT only (evaluated); RL from it later
                                                       with --config.sft.init_from=RUN_DIR
    vista-export --checkpoint RUN_DIR --out DIR        a checkpoint as an HF Qwen2.5-VL dir
    vista-expert ...                                   expert trajectories to JSONL + images

`vista-eval` (also `--checkpoint RUN_DIR`) and `vista-view` live in `eval_cli.py`."""

from __future__ import annotations

import logging
import os
import sys


def _default_config_path() -> str:
    """configs/tiny_cpu.py of the source checkout (the embedded default)."""
    from vista_jax import config as config_lib
    return config_lib.default_path()


def load_config(argv: list[str]):
    """Parses --config (a config file) and --config.x.y=value overrides. A bad override or
    an unknown key exits with a message naming it."""
    from ml_collections import config_flags

    # absl only registers the --config.x overrides when the file is given as --config=PATH.
    argv = list(argv)
    for i in range(len(argv) - 1):
        if argv[i] == "--config":
            argv[i:i + 2] = [f"--config={argv[i + 1]}", ""]
    argv = [a for a in argv if a != ""]
    return _parse(lambda fv: config_flags.DEFINE_config_file(
        "config", _default_config_path(), "config file", flag_values=fv, lock_config=True,
        sys_argv=argv), argv, os.path.basename(argv[0]))


def _parse(define, argv: list[str], prog: str):
    """The config flag `define(flag_values)` registers, parsed from `argv`; a bad override or
    an unknown key (found at registration or at parsing) exits naming it."""
    from absl import flags

    fv = flags.FlagValues()
    try:
        define(fv)
        fv(argv)
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
        msg = str(e).strip().strip("'\"").replace("\\n", " ").replace("\n", " ")
        raise SystemExit(f"{prog}: bad config: {msg}") from None
    return fv.config


def load_run_config(run_dir: str, overrides: list[str], prog: str):
    """A run directory's config.json with `--config.x.y=value` overrides (typed and checked
    like vista-train's). Exits with a message naming a bad key."""
    from ml_collections import config_flags

    from vista_jax import pipeline

    try:
        base = pipeline.load_run_config(run_dir)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"{prog}: {e}") from None
    bad = [a for a in overrides if not a.startswith("--config.")]
    if bad:
        raise SystemExit(f"{prog}: unrecognized arguments: {' '.join(bad)}")
    argv = [prog] + list(overrides)
    config = _parse(lambda fv: config_flags.DEFINE_config_dict(
        "config", base, "the run's config", flag_values=fv, lock_config=True, sys_argv=argv),
        argv, prog)
    from vista_jax import config as config_lib
    try:
        config_lib.validate(config)
    except config_lib.ConfigError as e:
        raise SystemExit(f"{prog}: {e}") from None
    return config


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for name in ("absl", "jax._src", "orbax", "aiohttp.access"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _run_job(argv: list[str] | None, prog: str, stop_after: str) -> dict:
    argv = list(sys.argv if argv is None else argv)
    _setup_logging()
    config = load_config(argv)
    from vista_jax import config as config_lib
    from vista_jax import pipeline

    if "ablation" in config:  # configs/ablations/*.py: every variant x seed, then the tables
        if stop_after != "rl":
            raise SystemExit(f"{prog}: ablation configs run with vista-train")
        from vista_jax import ablation
        try:
            config_lib.validate(config)
            result = ablation.run(config)
        except (config_lib.ConfigError, ValueError) as e:
            raise SystemExit(f"{prog}: {e}") from None
        out = os.path.join(config.run_root, config.name)
        print(f"\nwrote {out}/report.md and {os.path.dirname(out)}/summary.md")
        for v in result["variants"]:
            s = v["stats"]["accuracy"]
            per_seed = ", ".join(f"seed {k} {r['results']['accuracy']:.3f}"
                                 for k, r in v["seeds"].items())
            print(f"{v['label']}: accuracy {s['mean']:.3f} ± {s['std']:.3f} ({s['n']} seeds: "
                  f"{per_seed})")
        return result
    try:
        config_lib.validate(config)
        summary = pipeline.run(config, stop_after=stop_after)
    except config_lib.ConfigError as e:
        raise SystemExit(f"{prog}: {e}") from None
    run_dir = os.path.join(config.run_root, config.name)
    print(f"\nwrote {run_dir}/report.md")
    keys = ("base_accuracy", "sft_accuracy", "grpo_accuracy", "tool_call_validity",
            "mean_turns", "wall_time_s")
    print("summary: " + " ".join(f"{k}={summary[k]:.3f}" for k in keys
                                 if summary.get(k) is not None))
    return summary


def train_main(argv: list[str] | None = None) -> None:
    """`vista-train`: the whole job, SFT then RL (or RL only, from `sft.init_from`)."""
    _run_job(argv, "vista-train", "rl")


def sft_main(argv: list[str] | None = None) -> None:
    """`vista-sft`: expert data, tokenizer, SFT and its evaluation; no RL. A later
    `vista-train --config.sft.init_from=<this run dir>` runs RL from its checkpoint."""
    _run_job(argv, "vista-sft", "sft")


def export_main(argv: list[str] | None = None) -> None:
    """`vista-export --checkpoint RUN_DIR --out DIR [--step N | --phase sft|rl]
    [--dtype bfloat16] [--config.x=y ...]`: a run's checkpointed policy as an HF
    Qwen2.5-VL checkpoint (safetensors, config.json, tokenizer) that transformers loads."""
    import argparse

    parser = argparse.ArgumentParser(prog="vista-export", description=export_main.__doc__)
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR",
                        help="a vista-train / vista-sft run directory")
    parser.add_argument("--out", required=True, help="the HF checkpoint directory to write")
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument("--step", type=int, help="global step (default: the newest)")
    pick.add_argument("--phase", choices=("sft", "rl"), help="the end of this phase")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"),
                        help="tensor dtype written (default: the params')")
    args, rest = parser.parse_known_args(argv)
    _setup_logging()
    config = load_run_config(args.checkpoint, rest, "vista-export")
    from vista_jax import pipeline

    try:
        path = pipeline.export_checkpoint(config, args.checkpoint, args.out, step=args.step,
                                          phase=args.phase, dtype=args.dtype)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise SystemExit(f"vista-export: {e}") from None
    print(f"wrote {path}")


def expert_main(argv: list[str] | None = None) -> None:
    """`vista-expert --mixture chart_qa:2,geometry:1 --n 1000 --out data/expert/train.jsonl`:
    plays reference plans against the real tools, keeps the verified trajectories (all with
    --keep-failed), writes JSONL + images + stats and prints pass rates by family, question
    type and difficulty."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="vista-expert", description=expert_main.__doc__)
    parser.add_argument("--mixture", default="all",
                        help="family[:weight],... or 'all' (default: every family, equal weights)")
    parser.add_argument("--split", default="train", choices=("train", "val", "test"))
    parser.add_argument("--n", type=int, default=256, help="tasks to play")
    parser.add_argument("--start", type=int, default=0, help="index of the first task")
    parser.add_argument("--difficulty", type=int, default=0, choices=(0, 1, 2, 3),
                        help="task level; 0 = drawn per task")
    parser.add_argument("--out", required=True, help="output .jsonl (images go beside it)")
    parser.add_argument("--tools-url", default="",
                        help="tool server URL; empty = the tools in this process")
    parser.add_argument("--keep-failed", action="store_true",
                        help="also write trajectories whose answer does not verify")
    parser.add_argument("--batch-size", type=int, default=32, help="episodes played together")
    parser.add_argument("--system-prompt-style", default="compact",
                        choices=("minimal", "compact", "full"),
                        help="the tool list's form in the system prompt; match the policy's "
                             "env.system_prompt_style when the file feeds sft.data")
    parser.add_argument("--tools", default="",
                        help="comma-separated tools shown to the policy (default: all 26); "
                             "match env.tools when the file feeds sft.data")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be ≥ 1")

    from vista_jax.env.expert import expert_records, write_expert_dataset
    from vista_jax.env.mixture import TaskMixture

    try:
        mixture = TaskMixture.parse(args.mixture, args.split, args.difficulty or None)
    except (ValueError, KeyError) as e:
        parser.error(f"--mixture: {e.args[0] if e.args else e}")
    if args.tools_url:
        from vista_jax.env.tool_client import SyncToolClient
        client = SyncToolClient(args.tools_url)
    else:
        from tools_server.inprocess import InProcessToolClient
        client = InProcessToolClient()
    try:
        env_kwargs = {"system_prompt_style": args.system_prompt_style}
        if args.tools:
            env_kwargs["tools"] = tuple(t.strip() for t in args.tools.split(",") if t.strip())
        records, stats = expert_records(mixture.tasks(args.n, start=args.start), client,
                                        filter_correct=not args.keep_failed,
                                        env_kwargs=env_kwargs, batch_size=args.batch_size)
    finally:
        client.close()
    path = write_expert_dataset(records, args.out, stats)
    print(f"wrote {len(records)} trajectories to {path}")
    print(f"verified {stats['verified']}/{stats['n']} ({stats['pass_rate']:.1%})")
    for key in ("pass_rate_by_family", "pass_rate_by_difficulty", "pass_rate_by_type"):
        print(f"{key}: " + json.dumps({k: round(v, 4) for k, v in stats[key].items()}))
    if stats["failures"]:
        print("failures: " + json.dumps(stats["failures"]))


if __name__ == "__main__":
    train_main()
