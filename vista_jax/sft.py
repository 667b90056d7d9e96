"""SFT on expert trajectories: next-token loss on assistant tokens only.

Copying values out of tool responses is learnt in a sudden phase transition after a loss
plateau (see docs/design.md), so the final step is not necessarily the best policy: with
`validate` given and `validate_every` > 0, the loop evaluates held-out accuracy every `validate_every` steps and
returns the params that scored best (ties go to the later step).

Copying is also what a tiny policy learns last, and under a plain token-mean loss it may
not learn it at all: the copied tokens (a label out of the question, a value out of a tool
response) are a few percent of the assistant tokens and their loss is swamped by the
templated rest. `copy_loss_weights` up-weights them (`sft.copy_weight`,
`sft.copy_balance`); docs/design.md has the measured curves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

CONTEXT_ROLES = ("user", "tool")  # where copied content comes from (not the system prompt)


def copied_mask(tok, messages, seg) -> np.ndarray:
    """Which tokens of `seg = tok.render_conversation(messages)` are assistant tokens that
    copy content from the conversation so far (bool [T]).

    A token counts as copied when its text, stripped of whitespace, holds a letter or digit
    and equals the stripped text of some token of an earlier user or tool message (the
    question, tool responses; not the system prompt, whose tool schemas every conversation
    shares). Comparing stripped texts makes " Plum" in a question and "Plum" in a JSON
    argument the same content although BPE gives them different ids. It is a token-level
    heuristic, not a span alignment: a common word that also occurs in the question ("the")
    counts too; `copy_loss_weights`' balancing gives such frequent tokens little extra weight.
    """
    texts = [t.strip() for t in tok.token_texts]
    copied = np.zeros(len(seg.ids), bool)
    # Assistant turns are the maximal runs of loss_mask > 0, in message order.
    on = np.concatenate([[0], (np.asarray(seg.loss_mask) > 0).astype(np.int8), [0]])
    starts, ends = np.flatnonzero(np.diff(on) == 1), np.flatnonzero(np.diff(on) == -1)
    turns = [m for m in messages if m["role"] == "assistant"]
    if len(turns) != len(starts):
        raise ValueError(f"{len(turns)} assistant messages but {len(starts)} trained token runs")
    context: set[str] = set()
    runs = iter(zip(starts, ends))
    for m in messages:
        if m["role"] in CONTEXT_ROLES:
            context.update(t for t in (texts[i] for i in tok.encode(m["content"]))
                           if any(ch.isalnum() for ch in t))
        elif m["role"] == "assistant":
            start, end = next(runs)
            copied[start:end] = [texts[i] in context for i in seg.ids[start:end]]
    return copied


def copy_loss_weights(rows: list[dict], copy_weight: float, balance: float = 0.0) -> list[np.ndarray]:
    """SFT loss weights for rows holding `tokens`, `loss_mask` (0/1) and `copied`
    (`copied_mask`): 1 on trained tokens, more on copied ones, 0 elsewhere.

    A copied token of id t weighs `copy_weight * (mean_count / count[t]) ** balance`, where
    count[t] is how often t is copied in all `rows` and mean_count the mean over copied ids,
    floored at 1. With balance 0 every copied token weighs `copy_weight`. Balancing matters
    because copied ids are very unequal: in chart QA the ten digits are copied ~1,300 times
    each and each of 36 labels ~200 times, and at one shared weight the digits are learnt
    while the labels are not (docs/design.md).
    """
    copied_ids = [np.asarray(r["tokens"])[np.asarray(r["copied"], bool)] for r in rows]
    counts = np.bincount(np.concatenate(copied_ids + [np.zeros(0, np.int64)]).astype(np.int64))
    seen = counts > 0
    table = np.ones(len(counts), np.float32)  # weight of a copied id
    table[seen] = np.maximum(1.0, copy_weight * (counts[seen].mean() / counts[seen]) ** balance)
    out = []
    for r in rows:
        w = (np.asarray(r["loss_mask"]) > 0).astype(np.float32)
        hit = np.asarray(r["copied"], bool) & (w > 0)
        w[hit] = table[np.asarray(r["tokens"])[hit]]
        out.append(w)
    return out


def run_sft(*, params, opt_state, train_step, batches: Iterator[dict], steps: int,
            to_device: Callable, log: Callable[[int, dict], None], log_every: int = 10,
            validate: Callable[[object], dict[str, float]] | None = None, validate_every: int = 0,
            progress: bool = True, start_step: int = 0, best: dict | None = None,
            on_step: Callable[[int, object, object, dict | None], None] | None = None):
    """Runs SFT updates `start_step + 1 .. steps` (`batches` positioned accordingly).

    `validate(params)` returns {"accuracy": held-out accuracy, which picks the best params,
    and any other validation metrics}; each is logged as `val_<key>`.

    Returns (params, opt_state, info): `info` holds the last logged metrics and, when
    validating, `best_step` / `best_accuracy` and the validation curve `[(step, acc)]`.
    With validation the returned params are the best validated ones, not the last.

    Resuming: `best` is the validation record so far (`{"accuracy", "step", "params",
    "curve"}`, as passed to `on_step`). `on_step(done, params, opt_state, best)` is called
    after every step, after its logging and validation (the caller checkpoints there).
    """
    metrics: dict = {}
    best = dict(best) if best else {"accuracy": None, "step": None, "params": None, "curve": []}
    best["curve"] = [tuple(c) for c in best["curve"]]
    t0 = time.perf_counter()
    bar = tqdm(range(start_step, steps), desc="sft", disable=not progress, dynamic_ncols=True,
               initial=start_step, total=steps)
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
            result = {f"val_{k}": float(v) for k, v in validate(params).items()}
            acc = result["val_accuracy"]
            best["curve"].append((done, acc))
            log(step, {**result, "elapsed_s": time.perf_counter() - t0})
            bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.3f}", val_acc=f"{acc:.3f}")
            if best["accuracy"] is None or acc >= best["accuracy"]:
                # train_step donates its inputs, so keep a copy, not a reference.
                best.update(accuracy=acc, step=done, params=jax.tree.map(jnp.copy, params))
        if on_step is not None:
            on_step(done, params, opt_state, best)
    info = dict(metrics)
    if best["params"] is not None:
        info.update(best_step=best["step"], best_accuracy=best["accuracy"],
                    validation_curve=best["curve"])
        params = best["params"]
    return params, opt_state, info
