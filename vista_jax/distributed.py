"""Multi-host start-up: `jax.distributed.initialize` from the config or the environment.

Every process of a multi-host job runs the same command; they find each other through a
coordinator (process 0's host:port). Values come from `config.distributed`, and the
environment overrides them, so one config file serves every host of a job:

    JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 vista-train ...
    JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 vista-train ...

`distributed.auto_detect=True` (or JAX_DISTRIBUTED_AUTO=1) instead lets JAX find its peers
itself (Cloud TPU pod slices, SLURM, Open MPI, Kubernetes jobsets): that is the usual way
on a TPU pod, where the same command runs on every worker.

Must run before anything touches a JAX device (the first `jax.devices()` fixes the
backend). A single process with no auto detection is a no-op.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
ENV_AUTO = "JAX_DISTRIBUTED_AUTO"

_initialized: DistributedSpec | None = None


@dataclasses.dataclass(frozen=True)
class DistributedSpec:
    """Where this process stands in its job, after env overrides."""

    coordinator_address: str = ""  # "host:port" of process 0 ("" = single process)
    num_processes: int = 1  # processes in the job (one per host, usually)
    process_id: int = 0  # this process's index, 0 .. num_processes - 1
    auto_detect: bool = False  # let jax.distributed find coordinator and ids itself

    @property
    def multi_process(self) -> bool:
        return self.auto_detect or self.num_processes > 1


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def spec_from(config: Any = None, environ: Mapping[str, str] | None = None) -> DistributedSpec:
    """The spec from `config.distributed` (missing fields: single process), overridden by
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID / JAX_DISTRIBUTED_AUTO.
    Raises ValueError naming the key or variable whose value cannot work."""
    env = os.environ if environ is None else environ
    d = getattr(config, "distributed", None) if config is not None else None
    get = (lambda k, default: d.get(k, default)) if d is not None else (lambda k, default: default)
    spec = DistributedSpec(
        coordinator_address=env.get(ENV_COORDINATOR, "") or str(get("coordinator_address", "")),
        num_processes=_env_int(env, ENV_NUM_PROCESSES, int(get("num_processes", 1))),
        process_id=_env_int(env, ENV_PROCESS_ID, int(get("process_id", 0))),
        auto_detect=(env.get(ENV_AUTO, "").lower() in ("1", "true", "yes")
                     or bool(get("auto_detect", False))))
    check(spec)
    return spec


def check(spec: DistributedSpec) -> None:
    """ValueError naming the config key (and its env variable) whose value cannot work."""
    if spec.num_processes < 1:
        raise ValueError(f"config.distributed.num_processes ({ENV_NUM_PROCESSES})="
                         f"{spec.num_processes}: must be ≥ 1")
    if not 0 <= spec.process_id < spec.num_processes:
        raise ValueError(f"config.distributed.process_id ({ENV_PROCESS_ID})={spec.process_id}: "
                         f"must be in [0, num_processes={spec.num_processes})")
    if spec.num_processes > 1 and not spec.auto_detect:
        host, _, port = spec.coordinator_address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"config.distributed.coordinator_address ({ENV_COORDINATOR})="
                             f"{spec.coordinator_address!r}: a multi-process job needs "
                             "'host:port' of process 0")


def maybe_initialize(config: Any = None) -> DistributedSpec:
    """Joins the multi-host job the config / environment describe; a no-op for a single
    process. Idempotent. Returns the spec in force.

    On CPU the cross-process collectives go through gloo (set before initialising; GPUs use
    NCCL and TPUs ICI/DCN regardless of that setting)."""
    global _initialized
    spec = spec_from(config)
    if _initialized is not None:
        if spec != _initialized:
            raise RuntimeError(f"jax.distributed already initialised as {_initialized}, "
                               f"now asked for {spec}")
        return spec
    if not spec.multi_process:
        return spec
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if spec.auto_detect:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator_address=spec.coordinator_address,
                                   num_processes=spec.num_processes, process_id=spec.process_id)
    _initialized = spec
    log.info("jax.distributed: process %d of %d, %d local / %d global devices",
             jax.process_index(), jax.process_count(), jax.local_device_count(),
             jax.device_count())
    return spec
