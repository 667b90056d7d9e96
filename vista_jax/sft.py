"""SFT on expert trajectories: next-token loss on assistant tokens only.

Copying values out of tool responses is learnt in a sudden phase transition after a loss
plateau (see docs/design.md), so the final step is not necessarily the best policy: with
`validate` given and `validate_every` > 0, the loop evaluates held-out accuracy every `validate_every` steps and
returns the params that scored best (ties go to the later step).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm


def run_sft(*, params, opt_state, train_step, batches: Iterator[dict], steps: int,
            to_device: Callable, log: Callable[[int, dict], None], log_every: int = 10,
            validate: Callable[[object], float] | None = None, validate_every: int = 0,
            progress: bool = True):
    """Runs `steps` SFT updates.

    Returns (params, opt_state, info): `info` holds the last logged metrics and, when
    validating, `best_step` / `best_accuracy` and the validation curve `[(step, acc)]`.
    With validation the returned params are the best validated ones, not the last.
    """
    metrics: dict = {}
    best = None  # (accuracy, step, params copy)
    curve: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc="sft", disable=not progress, dynamic_ncols=True)
    for step in bar:
        batch = to_device(next(batches))
        params, opt_state, m = train_step(params, opt_state, batch)
        done = step + 1
        if step % log_every == 0 or done == steps:
            metrics = {k: float(v) for k, v in m.items()}
            metrics["elapsed_s"] = time.perf_counter() - t0
            log(step, metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_acc=f"{metrics['token_accuracy']:.3f}")
        if validate is not None and validate_every > 0 and (done % validate_every == 0 or done == steps):
            acc = float(validate(params))
            curve.append((done, acc))
            log(step, {"val_accuracy": acc, "elapsed_s": time.perf_counter() - t0})
            bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.3f}", val_acc=f"{acc:.3f}")
            if best is None or acc >= best[0]:
                # train_step donates its inputs, so keep a copy, not a reference.
                best = (acc, done, jax.tree.map(jnp.copy, params))
    info = dict(metrics)
    if best is not None:
        info.update(best_step=best[1], best_accuracy=best[0], validation_curve=curve)
        params = best[2]
    return params, opt_state, info
