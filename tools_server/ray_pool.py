"""Ray backend of the worker pool: model-backed tools on Ray actors, one per GPU.

    pool = RayPool(4, num_gpus=1, tool_options={"detect_objects": {"backend": "hf"}})
    app = create_app(config, tools, worker_pool=pool)        # or: vista-tools serve --ray-actors 4

Each actor is an asyncio actor holding the same `WorkerService` as the HTTP worker
(tools_server.worker): a registry of model-backed tools and a dynamic batcher per tool. We
chose that over Ray Serve's `@serve.batch` because it needs no Serve controller or HTTP
proxy, reuses (and so is tested by) the batcher, the per-call failure isolation, deadlines
and the bounded queue of the HTTP worker, and behaves the same under both backends.

Routing, retries, ejection and re-admission are those of `RoutingPool` (tools_server.pool):
least outstanding calls first; a call whose actor dies is retried on another one; a dead
actor is restarted by Ray (`max_restarts=-1`) and re-admitted once its `ready()` answers.
Images travel as bytes in every call (Ray's object store moves them; an actor skips decoding
ids it has cached), so there is no cache protocol here. Needs the `[ray]` extra.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Mapping, Sequence

from tools_server import registry as reg
from tools_server.pool import RoutingPool, _Outcome, _Worker
from tools_server.registry import error_result
from tools_server.worker import (DEFAULT_REGISTRY, BadRequest, ImagesMissing, Unavailable,
                                 WorkerConfig, WorkerService, load_registry, select_tools)

log = logging.getLogger("tools_server.ray_pool")


class ToolActor:
    """The body of a Ray actor: a WorkerService, started on the actor's event loop."""

    def __init__(self, registry: str, tool_options: Mapping[str, Mapping[str, Any]],
                 tool_names: Sequence[str] | None, config: dict[str, Any]):
        self._service = WorkerService(
            WorkerConfig(**config),
            load=lambda: select_tools(load_registry(registry, tool_options), tool_names))
        self._started: asyncio.Future | None = None

    async def _start(self) -> None:
        if self._started is None:
            self._started = asyncio.ensure_future(self._service.start())
        await asyncio.shield(self._started)

    async def ready(self) -> dict[str, Any]:
        """Loads the tools (first call) and reports readiness, as the worker's /readyz."""
        try:
            await self._start()
        except Exception:
            pass  # the state says "failed"
        ready, reason = self._service.readiness()
        return {"ready": ready, "reason": reason, "instance": self._service.instance,
                "pid": os.getpid(), "error": self._service.load_error,
                "tools": self._service.tools.names if self._service.tools is not None else []}

    async def run(self, name: str, arguments: dict[str, Any], images: dict[str, bytes],
                  timeout_s: float) -> dict[str, Any]:
        try:
            await self._start()
            results, produced = await self._service.run_calls(
                [(name, arguments, list(images))], images, timeout_s=timeout_s)
        except Unavailable as exc:
            return {"status": exc.code, "message": exc.message}
        except (BadRequest, ImagesMissing) as exc:  # cannot happen with every image inlined
            return {"status": "bad_request", "message": str(exc)}
        except Exception as exc:
            return {"status": "failed", "message": f"{type(exc).__name__}: {exc}"}
        return {"status": "ok", "result": results[0], "images": produced}


class RayPool(RoutingPool):
    """`num_actors` Ray actors, each with `num_gpus` GPUs and `num_cpus` CPUs, serving the
    model-backed tools of `registry` (or `tools`, by name). Starts a local Ray instance
    (`ray.init(address=address, **init_kwargs)`) unless one is running."""

    def __init__(self, num_actors: int = 1, *, num_gpus: float = 0.0, num_cpus: float = 1.0,
                 registry: str = DEFAULT_REGISTRY,
                 tool_options: Mapping[str, Mapping[str, Any]] | None = None,
                 tools: Sequence[str] | None = None, max_batch: int = 16,
                 max_wait_ms: float = 5.0, max_queue: int = 256, address: str | None = None,
                 init_kwargs: Mapping[str, Any] | None = None, max_attempts: int = 3,
                 health_interval_s: float = 2.0, ready_timeout_s: float = 600.0):
        super().__init__(max_attempts=max_attempts, health_interval_s=health_interval_s)
        if num_actors < 1:
            raise ValueError(f"num_actors={num_actors} must be ≥ 1")
        self.num_actors, self.num_gpus, self.num_cpus = num_actors, num_gpus, num_cpus
        self.registry, self.tool_options = registry, dict(tool_options or {})
        self.tool_names = list(tools) if tools is not None else None
        self.worker_config = dict(max_batch=max_batch, max_wait_ms=max_wait_ms,
                                  max_queue=max_queue)
        WorkerConfig(**self.worker_config)  # validates now, not in the actors
        self.address, self.init_kwargs = address, dict(init_kwargs or {})
        self.ready_timeout_s = ready_timeout_s
        self.workers = [_Worker(f"ray-actor-{i}") for i in range(num_actors)]
        self._owns_ray = False
        self._started = False

    async def start(self) -> None:
        import ray

        if self._started:
            return
        loop = asyncio.get_running_loop()
        if not ray.is_initialized():
            await loop.run_in_executor(None, lambda: ray.init(address=self.address,
                                                              **self.init_kwargs))
            self._owns_ray = True
        actor_class = ray.remote(ToolActor).options(
            num_gpus=self.num_gpus, num_cpus=self.num_cpus, max_restarts=-1,
            max_concurrency=1000)
        for w in self.workers:
            w.handle = actor_class.remote(self.registry, self.tool_options, self.tool_names,
                                          self.worker_config)
        replies = await asyncio.wait_for(
            asyncio.gather(*(w.handle.ready.remote() for w in self.workers)),
            self.ready_timeout_s)
        failed = [r for r in replies if not r["ready"]]
        if failed:
            raise RuntimeError(f"Ray tool actors did not get ready: {failed}")
        for w, reply in zip(self.workers, replies):
            w.instance = reply["instance"]
        log.info("%d Ray tool actors serving %s", self.num_actors, ", ".join(replies[0]["tools"]))
        self._started = True
        self._start_checker()

    async def close(self) -> None:
        import ray

        await self._stop_checker()
        for w in self.workers:
            if w.handle is not None:
                ray.kill(w.handle, no_restart=True)
                w.handle = None
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False
        self._started = False

    async def call(self, name, arguments, images, *, timeout_s):
        if not self._started:
            await self.start()
        return await super().call(name, arguments, images, timeout_s=timeout_s)

    async def _probe(self, w: _Worker) -> tuple[bool, str, str | None]:
        import ray

        try:
            reply = await asyncio.wait_for(w.handle.ready.remote(),
                                           max(1.0, self.health_interval_s))
        except (ray.exceptions.RayError, asyncio.TimeoutError) as exc:
            return False, f"ready(): {type(exc).__name__}: {exc}", None
        ok = reply["ready"] or reply["reason"] == "overloaded"
        return ok, f"ready(): {reply['reason']}", reply["instance"]

    async def _attempt(self, w: _Worker, name: str, arguments: dict[str, Any],
                       images: Mapping[str, bytes], deadline: float,
                       scratch: dict[str, Any]) -> _Outcome:
        import ray

        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return _Outcome("timeout")
        ref = w.handle.run.remote(name, arguments, dict(images), remaining)
        try:
            reply = await asyncio.wait_for(ref, remaining)
        except asyncio.TimeoutError:
            ray.cancel(ref)
            return _Outcome("timeout")
        except ray.exceptions.RayError as exc:  # the actor died or is restarting
            return _Outcome("failed", reason=f"{type(exc).__name__}: {exc}")
        status = reply["status"]
        if status == "ok":
            return _Outcome("ok", reply["result"], reply["images"])
        if status == reg.OVERLOADED:
            return _Outcome("busy", reason=reply["message"])
        if status in ("loading", "draining"):
            return _Outcome("unavailable", reason=reply["message"])
        if status == "bad_request":
            return _Outcome("error", error_result(reg.EXECUTION_FAILED, reply["message"]))
        return _Outcome("failed", reason=reply["message"])
