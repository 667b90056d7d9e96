"""Orbax checkpoints of a run: one `CheckpointManager` under `<run dir>/checkpoints/`.

A checkpoint at global step s holds two items:
    state  the training state as one pytree of arrays: `params`, `opt_state` and whatever
           else the phase needs (SFT: the best validated params so far; RL: the critic of
           PPO, the base RNG key). Restored onto the shardings of a target pytree, which
           may live on another mesh than the one it was saved from.
    meta   JSON: the phase ("sft" | "rl"), steps done in it, whether it is the phase's end,
           the data iterator's state, byte offsets of the logs written so far, evaluation
           results and timings so far, the config.
Global steps count optimizer steps: SFT steps 1..S, then RL steps S+1..S+R. The newest
`keep` checkpoints are kept, and every phase end besides (`phase_ends`): a later run's
`sft.init_from` and the KL reference restore the SFT end.

Saves are asynchronous by default: `save` returns once the arrays are copied off the
devices, the writing goes on in a thread while training continues, and a checkpoint only
becomes visible (`latest_step`) once it is complete, so a process killed mid-write resumes
from the previous one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm


def manager(directory: str | os.PathLike, max_to_keep: int = 2, *,
            phase_ends: Sequence[int] = (), async_save: bool = False,
            read_only: bool = False) -> ocp.CheckpointManager:
    """A CheckpointManager at `directory` keeping the newest `max_to_keep` checkpoints and
    every step in `phase_ends`."""
    policy = ocm.LatestN(n=max_to_keep)
    if phase_ends:
        policy = ocm.AnyPreservationPolicy([policy, ocm.CustomSteps(list(phase_ends))])
    return ocp.CheckpointManager(
        os.path.abspath(os.fspath(directory)),
        options=ocp.CheckpointManagerOptions(
            preservation_policy=policy, create=not read_only, read_only=read_only,
            enable_async_checkpointing=async_save))


def save_state(mngr: ocp.CheckpointManager, step: int, state, meta: dict[str, Any],
               wait: bool = False) -> None:
    """Saves the pytree `state` and the JSON `meta` at global `step` (asynchronously if the
    manager is; `wait` blocks until it is on disk)."""
    meta = dict(meta, state_keys=sorted(state))
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.PyTreeSave(state),
                                            meta=ocp.args.JsonSave(meta)), force=True)
    if wait:
        mngr.wait_until_finished()


def abstract_like(tree) -> Any:
    """ShapeDtypeStructs with the shardings of `tree`'s arrays: the restore target."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree)


def restore_meta(mngr: ocp.CheckpointManager, step: int) -> dict[str, Any]:
    return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"] or {}


def restore_state(mngr: ocp.CheckpointManager, step: int, target):
    """The `state` item at `step`, laid out like `target` (a pytree of arrays or
    ShapeDtypeStructs with concrete shardings: those of the current mesh, whichever mesh
    the checkpoint was written from). `target` may name a subset of the saved tree's
    top-level keys (e.g. only `params`)."""
    saved = restore_meta(mngr, step).get("state_keys")
    if saved is not None and not set(target) <= set(saved):
        raise KeyError(f"checkpoint step {step} in {mngr.directory} has no "
                       f"{sorted(set(target) - set(saved))} (it holds {saved})")
    out = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            item=abstract_like(target), restore_args=ocp.checkpoint_utils.construct_restore_args(
                abstract_like(target)), partial_restore=True)))
    return out["state"]


def restore_params(mngr: ocp.CheckpointManager, abstract_params, step: int | None = None):
    """The policy params at `step` (default: the newest) onto the shardings of
    `abstract_params`."""
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {mngr.directory}")
    return restore_state(mngr, step, {"params": abstract_params})["params"]


def find_step(mngr: ocp.CheckpointManager, phase: str, *, end: bool = True) -> int:
    """The newest step whose meta says `phase` (e.g. "sft"), by default only the phase's
    final checkpoint."""
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            meta = restore_meta(mngr, step)
        except (KeyError, ValueError, FileNotFoundError):
            continue
        if meta.get("phase") == phase and (meta.get("end", True) or not end):
            return step
    raise FileNotFoundError(f"no {'final ' if end else ''}{phase!r} checkpoint in "
                            f"{mngr.directory} (steps {sorted(mngr.all_steps())})")
