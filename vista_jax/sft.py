"""SFT on expert trajectories: next-token loss on assistant tokens only."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from tqdm.auto import tqdm


def run_sft(*, params, opt_state, train_step, batches: Iterator[dict], steps: int,
            to_device: Callable, log: Callable[[int, dict], None], log_every: int = 10,
            progress: bool = True):
    """Runs `steps` SFT updates. Returns (params, opt_state, last metrics)."""
    metrics: dict = {}
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc="sft", disable=not progress, dynamic_ncols=True)
    for step in bar:
        batch = to_device(next(batches))
        params, opt_state, m = train_step(params, opt_state, batch)
        if step % log_every == 0 or step == steps - 1:
            metrics = {k: float(v) for k, v in m.items()}
            metrics["elapsed_s"] = time.perf_counter() - t0
            log(step, metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_acc=f"{metrics['token_accuracy']:.3f}")
    return params, opt_state, metrics
