"""Orbax checkpoints of the policy (params), optimizer state and step."""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def manager(directory: str | os.PathLike, max_to_keep: int = 2) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        os.path.abspath(os.fspath(directory)),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def save(mngr: ocp.CheckpointManager, step: int, params, opt_state=None,
         extra: dict[str, Any] | None = None) -> None:
    """Saves params (and optionally optimizer state and JSON metadata) at `step`; blocks
    until written so a following process can restore it."""
    items = {"params": ocp.args.StandardSave(params)}
    if opt_state is not None:
        items["opt_state"] = ocp.args.StandardSave(opt_state)
    if extra is not None:
        items["meta"] = ocp.args.JsonSave(extra)
    mngr.save(step, args=ocp.args.Composite(**items))
    mngr.wait_until_finished()


def restore_params(mngr: ocp.CheckpointManager, abstract_params, step: int | None = None):
    """Restores params onto the shardings of `abstract_params` (a pytree of arrays or
    ShapeDtypeStructs with concrete shardings)."""
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {mngr.directory}")
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        abstract_params)
    out = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
    return out["params"]


def find_step(mngr: ocp.CheckpointManager, phase: str) -> int:
    """The latest step whose saved metadata says `{"phase": phase}` (e.g. "sft")."""
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except (KeyError, ValueError, FileNotFoundError):
            continue
        if (meta or {}).get("phase") == phase:
            return step
    raise FileNotFoundError(f"no {phase!r} checkpoint in {mngr.directory} "
                            f"(steps {sorted(mngr.all_steps())})")
