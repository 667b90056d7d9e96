"""Console entry points: `vista-train --config configs/tiny_cpu.py [--config.a.b=value ...]`."""

from __future__ import annotations

import logging
import os
import sys


def _default_config_path() -> str:
    """configs/tiny_cpu.py of the source checkout (the embedded default)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(here, "configs", "tiny_cpu.py")


def load_config(argv: list[str]):
    """Parses --config (a config file) and --config.x.y=value overrides. A bad override or
    an unknown key exits with a message naming it."""
    from absl import flags
    from ml_collections import config_flags

    # absl only registers the --config.x overrides when the file is given as --config=PATH.
    argv = list(argv)
    for i in range(len(argv) - 1):
        if argv[i] == "--config":
            argv[i:i + 2] = [f"--config={argv[i + 1]}", ""]
    argv = [a for a in argv if a != ""]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", _default_config_path(), "config file",
                                    flag_values=fv, lock_config=True, sys_argv=argv)
    try:
        fv(argv)
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
        msg = str(e).strip().strip("'\"").replace("\\n", " ").replace("\n", " ")
        raise SystemExit(f"{os.path.basename(argv[0])}: bad config: {msg}") from None
    return fv.config


def train_main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for name in ("absl", "jax._src", "orbax", "aiohttp.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    config = load_config(argv)
    from vista_jax import config as config_lib
    from vista_jax import pipeline

    try:
        config_lib.validate(config)
    except config_lib.ConfigError as e:
        raise SystemExit(f"vista-train: {e}") from None
    summary = pipeline.run(config)
    run_dir = os.path.join(config.run_root, config.name)
    print(f"\nwrote {run_dir}/report.md")
    print("summary: " + " ".join(f"{k}={summary[k]:.3f}" for k in
                                 ("base_accuracy", "sft_accuracy", "grpo_accuracy",
                                  "tool_call_validity", "mean_turns", "wall_time_s")))


if __name__ == "__main__":
    train_main()
