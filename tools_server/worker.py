"""A worker process for model-backed tools: a dynamic batcher per tool behind a small HTTP API.

    vista-tools worker --port 9001 [--tools ocr,detect_objects] [--max-batch 16] [--max-wait-ms 5]
        [--tool-option detect_objects.backend=hf] [--registry tools_server.tools:default_registry]

The front (`tools_server.app`) validates a call, then sends it here through a worker pool
(`tools_server.pool`); the worker runs several calls of one tool in one `Tool.run_batch`.

Routes:
    POST /v1/run  {"calls": [{"name", "arguments", "images": [id, ...]}, ...],
                   "images": {id: base64 PNG, ...}, "timeout_s": float}
        200 {"results": [result, ...], "images": {id: base64 PNG}}  (images the tools produced)
        409 {"error": {"code": "images_missing", "message", "missing": [id, ...]}}
        503 + Retry-After {"error": {"code": "overloaded" | "loading" | "draining" | "failed"}}
    GET  /healthz  -> 200 {"status": "ok", "state", "instance"} while the process runs
    GET  /readyz   -> 200 when the tools are loaded, it is not draining and every queue has
                      room; 503 with the reason otherwise
    GET  /metrics  -> Prometheus text: batch sizes, queue depths, latencies

Images are content-addressed: an id is the sha256 of the PNG bytes (tools_server.images), so
it names the same image on every process. Each call lists the ids it uses; the front inlines
the PNG of each id this worker has not yet confirmed (answered a call that used it), and the
worker checks every inlined PNG against its id and keeps it in an LRU cache. If a listed id
is neither inlined nor cached (evicted, or the worker restarted), the worker runs nothing
and answers 409 with the missing ids; the front resends once with them inlined. A call sees
only the images it lists, so the cache never changes a result. Images a tool produces come
back inlined; the front stores the same bytes and so gets the same id.

Batching: calls wait in a bounded queue per tool (a full queue answers 503 at once). A loop
per tool takes up to `max_batch` calls, waiting at most `max_wait_ms` after the oldest one
arrived, and runs them in one `run_batch` in a thread: one batch at a time per tool, since
the model is the bottleneck. A call whose deadline passed while it queued is answered
`timeout` without running. If `run_batch` raises, each call of the batch is rerun alone, so
one poison input fails only its own call. SIGTERM drains: new calls get 503 `draining`
(the front retries them elsewhere), queued and running ones finish, then the process exits.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import concurrent.futures
import dataclasses
import importlib
import json
import logging
import math
import time
import uuid
from typing import Any, Callable, Mapping, Sequence, TypeVar

from aiohttp import web

from tools_server import registry as reg
from tools_server.images import IMAGE_ID_RE, ImageStore, InvalidImage, StoredImage
from tools_server.process_args import (add_process_arguments, auth_token, bearer_auth_middleware,
                                       wait_for_stop, write_port_file)
from tools_server.registry import (Tool, ToolArguments, ToolError, ToolOutput, ToolRegistry,
                                   error_result)

log = logging.getLogger("tools_server.worker")

DEFAULT_REGISTRY = "tools_server.tools:default_registry"
IMAGES_MISSING = "images_missing"  # 409 body code: the worker lacks listed images


@dataclasses.dataclass
class WorkerConfig:
    host: str = "127.0.0.1"  # bind address; loopback unless the front runs on another host
    port: int = 8766  # 0 picks a free port
    max_batch: int = 16  # calls of one tool in one run_batch
    max_wait_ms: float = 5.0  # longest wait for a batch to fill, after its oldest call arrived
    max_queue: int = 256  # calls waiting per tool; more are answered 503 overloaded
    max_body_mb: float = 64.0  # largest /v1/run body (inlined images), MiB
    max_images: int = 1024  # images kept in the LRU cache
    max_store_mb: float = 512.0  # PNG bytes + decoded pixels kept in the cache, MiB
    max_image_pixels: int = 25_000_000  # larger inlined images are refused
    call_timeout_s: float = 30.0  # deadline of a call whose request carries none, s
    retry_after_s: int = 1  # Retry-After sent with 503
    drain_timeout_s: float = 30.0  # longest SIGTERM drain before exiting anyway, s
    # Bearer token the front must send (all routes but /healthz); None on a loopback bind.
    auth_token: str | None = None

    def __post_init__(self):
        for key in ("max_batch", "max_queue", "max_images"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}={getattr(self, key)} must be ≥ 1")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms={self.max_wait_ms} must be ≥ 0")


# --- registries ----------------------------------------------------------------------------


def parse_tool_options(items: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """["detect_objects.backend=hf", "ocr.max_side=960"] -> {"detect_objects": {"backend": "hf"},
    "ocr": {"max_side": 960}}. A value is JSON if it parses as JSON, else a string."""
    options: dict[str, dict[str, Any]] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        tool, dot, option = key.partition(".")
        if not sep or not dot or not tool or not option:
            raise ValueError(f"tool option {item!r} is not TOOL.OPTION=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        options.setdefault(tool, {})[option] = value
    return options


def load_registry(spec: str = DEFAULT_REGISTRY,
                  options: Mapping[str, Mapping[str, Any]] | None = None) -> ToolRegistry:
    """Calls the factory named "module:function" with the per-tool options."""
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise ValueError(f"registry {spec!r} is not 'module:function'")
    factory = getattr(importlib.import_module(module_name), func_name)
    tools = factory(dict(options or {}))
    if not isinstance(tools, ToolRegistry):
        raise TypeError(f"registry factory {spec} returned {type(tools).__name__}, "
                        "not a ToolRegistry")
    return tools


def select_tools(tools: ToolRegistry, names: Sequence[str] | None = None) -> ToolRegistry:
    """The named tools, or by default every model-backed one."""
    if names is None:
        return ToolRegistry([t for t in tools if t.model_backed])
    unknown = [n for n in names if n not in tools]
    if unknown:
        raise ValueError(f"unknown tool(s) {unknown}; tools: {', '.join(tools.names)}")
    return ToolRegistry([tools.get(n) for n in names])


# --- the dynamic batcher -------------------------------------------------------------------


class QueueFull(Exception):
    pass


@dataclasses.dataclass(eq=False)
class _Queued:
    args: ToolArguments
    ctx: Any  # a ToolContext
    future: asyncio.Future
    enqueued: float  # loop time
    deadline: float  # loop time


def _as_result(tool: Tool, out: Any) -> dict[str, Any]:
    if isinstance(out, (ToolOutput, ToolError)):
        return out.result()
    if isinstance(out, Exception):
        return error_result(reg.EXECUTION_FAILED,
                            f"tool '{tool.name}' failed: {type(out).__name__}: {out}")
    return error_result(reg.EXECUTION_FAILED,
                        f"tool '{tool.name}' returned {type(out).__name__}, not a ToolOutput")


_STOPPED = error_result(reg.EXECUTION_FAILED, "the tool worker stopped")


class DynamicBatcher:
    """Runs one tool's calls in batches of up to `max_batch`, one batch at a time.

    A batch starts when it is full or `max_wait_s` after its oldest call arrived, whichever
    comes first. `submit` never blocks: beyond `max_queue` waiting calls it raises QueueFull.
    Futures resolve to result dicts; `observe(size, seconds)` sees each batch run.
    """

    def __init__(self, tool: Tool, *, max_batch: int, max_wait_s: float, max_queue: int,
                 executor: concurrent.futures.Executor,
                 observe: Callable[[int, float], None] | None = None):
        self.tool = tool
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self._executor = executor
        self._observe = observe
        self._queue: collections.deque[_Queued] = collections.deque()
        self._arrived = asyncio.Event()
        self._running: list[_Queued] = []
        self._task: asyncio.Task | None = None
        self.batches = 0

    @property
    def depth(self) -> int:
        """Calls waiting (not counting the batch that runs)."""
        return len(self._queue)

    @property
    def idle(self) -> bool:
        return not self._queue and not self._running

    def has_room(self, n: int = 1) -> bool:
        return len(self._queue) + n <= self.max_queue

    def start(self) -> "DynamicBatcher":
        self._task = asyncio.get_running_loop().create_task(self._loop(),
                                                            name=f"batcher:{self.tool.name}")
        return self

    def submit(self, args: ToolArguments, ctx: Any, *, deadline: float) -> asyncio.Future:
        if not self.has_room():
            raise QueueFull(self.tool.name)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append(_Queued(args, ctx, future, loop.time(), deadline))
        self._arrived.set()
        return future

    async def _next_batch(self) -> list[_Queued]:
        loop = asyncio.get_running_loop()
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        flush_at = self._queue[0].enqueued + self.max_wait_s
        while len(self._queue) < self.max_batch:
            remaining = flush_at - loop.time()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            now = loop.time()
            live = []
            for item in batch:
                if item.future.done():  # its caller gave up
                    continue
                if item.deadline <= now:
                    item.future.set_result(error_result(
                        reg.TIMEOUT, f"tool '{self.tool.name}' call expired in the worker's queue"))
                    continue
                live.append(item)
            if not live:
                continue
            self._running = live
            start = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._run, live)
            except asyncio.CancelledError:  # close(): nobody will wait for this batch's thread
                for item in live:
                    if not item.future.done():
                        item.future.set_result(_STOPPED)
                raise
            except Exception as exc:  # the executor is shut down
                results = [error_result(reg.EXECUTION_FAILED, f"the tool worker is stopping: {exc}")
                           for _ in live]
            finally:
                self._running = []
            self.batches += 1
            if self._observe is not None:
                self._observe(len(live), time.perf_counter() - start)
            for item, result in zip(live, results):
                if not item.future.done():
                    item.future.set_result(result)

    def _run(self, items: list[_Queued]) -> list[dict[str, Any]]:
        """Runs in the executor: one run_batch, or each call alone if the batch raises."""
        calls = [(item.args, item.ctx) for item in items]
        try:
            outs = self.tool.run_batch(calls)
            if len(outs) != len(calls):
                raise RuntimeError(f"run_batch returned {len(outs)} results for {len(calls)} calls")
            return [_as_result(self.tool, out) for out in outs]
        except Exception as exc:
            if len(calls) == 1:
                log.exception("tool %s failed", self.tool.name)
                return [_as_result(self.tool, exc)]
            log.exception("tool %s failed on a batch of %d; rerunning each call alone",
                          self.tool.name, len(calls))
        results = []
        for call in calls:
            try:
                out = self.tool.run_batch([call])
                results.append(_as_result(self.tool, out[0] if len(out) == 1 else RuntimeError(
                    f"run_batch returned {len(out)} results for 1 call")))
            except Exception as exc:
                results.append(_as_result(self.tool, exc))
        return results

    async def close(self) -> None:
        """Stops the loop; calls still queued or running are answered with an error."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for item in [*self._running, *self._queue]:
            if not item.future.done():
                item.future.set_result(_STOPPED)
        self._queue.clear()


# --- the service (no HTTP in here) -------------------------------------------------------


class Unavailable(Exception):
    """The worker cannot take calls now: 503 with `code` (overloaded, loading, draining, failed)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class ImagesMissing(Exception):
    def __init__(self, ids: list[str]):
        super().__init__(f"{len(ids)} listed image(s) are neither inlined nor cached")
        self.ids = ids


class BadRequest(Exception):
    pass


class _CallContext:
    """The ToolContext of one call: only its listed images (pinned), and what it produces."""

    def __init__(self, images: dict[str, StoredImage], store: ImageStore):
        self._images = images
        self._store = store
        self.produced: dict[str, bytes] = {}

    def image(self, image_id: str, *, argument: str = "image"):
        item = self._images.get(image_id)
        if item is None:
            raise reg.image_not_found(image_id, argument)
        return item.image

    def add_image(self, image) -> str:
        try:
            item = self._store.put_image(image)
        except InvalidImage as exc:
            raise ToolError(reg.EXECUTION_FAILED, exc.message) from None
        self.produced[item.image_id] = item.png
        return item.image_id


class _Metrics:
    def __init__(self, service: "WorkerService"):
        try:
            import prometheus_client as prom
        except ImportError:
            self.enabled = False
            return
        self.enabled = True
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        self.calls = prom.Counter("vista_worker_calls", "Calls by tool and result code",
                                  ["tool", "code"], registry=self.registry)
        self.call_seconds = prom.Histogram(
            "vista_worker_call_seconds", "Call latency in the worker, admission to result",
            ["tool"], registry=self.registry,
            buckets=(.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.batch_size = prom.Histogram(
            "vista_worker_batch_size", "Calls per run_batch", ["tool"], registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_seconds = prom.Histogram(
            "vista_worker_batch_seconds", "run_batch duration", ["tool"], registry=self.registry,
            buckets=(.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.queue_depth = prom.Gauge("vista_worker_queue_depth", "Calls waiting per tool",
                                      ["tool"], registry=self.registry)
        self.rejected = prom.Counter("vista_worker_rejected",
                                     "Requests answered 503/409, by reason", ["reason"],
                                     registry=self.registry)
        self.images_received = prom.Counter("vista_worker_images_received",
                                            "Images inlined by the front", registry=self.registry)
        prom.Gauge("vista_worker_requests_inflight", "Requests being served",
                   registry=self.registry).set_function(lambda: service.inflight)

    def watch_queue(self, name: str, batcher: DynamicBatcher) -> None:
        if self.enabled:
            self.queue_depth.labels(tool=name).set_function(lambda: batcher.depth)

    def batch(self, name: str, size: int, seconds: float) -> None:
        if self.enabled:
            self.batch_size.labels(tool=name).observe(size)
            self.batch_seconds.labels(tool=name).observe(seconds)

    def call(self, name: str, result: dict[str, Any], seconds: float) -> None:
        if self.enabled:
            code = "ok" if result.get("ok") else result["error"]["code"]
            self.calls.labels(tool=name, code=code).inc()
            self.call_seconds.labels(tool=name).observe(seconds)

    def received(self, n_images: int) -> None:
        if self.enabled:
            self.images_received.inc(n_images)

    def reject(self, reason: str) -> None:
        if self.enabled:
            self.rejected.labels(reason=reason).inc()

    def render(self) -> bytes:
        return self._prom.generate_latest(self.registry)


# A call as the worker receives it: tool name, JSON arguments, ids of the images it uses.
WorkCall = tuple[str, dict[str, Any], list[str]]


class WorkerService:
    """Admission, image cache and batching of a worker's calls; shared by the HTTP worker and
    the Ray actor. Give `tools`, or `load` (called in a thread by `start`: models load there)."""

    def __init__(self, config: WorkerConfig, tools: ToolRegistry | None = None, *,
                 load: Callable[[], ToolRegistry] | None = None):
        if (tools is None) == (load is None):
            raise ValueError("give exactly one of tools and load")
        self.config = config
        self.tools = tools
        self._load = load
        self.instance = uuid.uuid4().hex[:12]  # changes on restart: the front drops its cache view
        self.state = "loading"  # loading | ready | draining | failed
        self.load_error: str | None = None
        self.store = ImageStore(max_images=config.max_images,
                                max_bytes=int(config.max_store_mb * 2**20),
                                max_pixels=config.max_image_pixels)
        self.batchers: dict[str, DynamicBatcher] = {}
        self.inflight = 0
        self.metrics = _Metrics(self)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self.tools is None:
                self.tools = await loop.run_in_executor(None, self._load)
        except Exception as exc:
            self.state = "failed"
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("loading the worker's tools failed")
            raise
        if not len(self.tools):
            log.warning("this worker serves no tools (no model-backed tool in the registry)")
        try:
            await loop.run_in_executor(None, self._load_models)
        except Exception as exc:
            self.state = "failed"
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("loading the models of the worker's tools failed")
            raise
        # One thread per tool: tools batch independently, each runs one batch at a time.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max(1, len(self.tools)), thread_name_prefix="batch")
        for tool in self.tools:
            batcher = DynamicBatcher(
                tool, max_batch=self.config.max_batch, max_wait_s=self.config.max_wait_ms / 1000,
                max_queue=self.config.max_queue, executor=self._executor,
                observe=lambda n, s, name=tool.name: self.metrics.batch(name, n, s))
            self.batchers[tool.name] = batcher.start()
            self.metrics.watch_queue(tool.name, batcher)
        if self.state == "loading":
            self.state = "ready"
        log.info("worker %s serving %s (max_batch=%d, max_wait_ms=%g, max_queue=%d)",
                 self.instance, ", ".join(self.tools.names) or "no tools", self.config.max_batch,
                 self.config.max_wait_ms, self.config.max_queue)

    def _load_models(self) -> None:
        """Calls `load()` of every tool that has one, so /readyz passes only once models are
        in memory (a tool without it loads lazily, on its first batch)."""
        for tool in self.tools:
            load = getattr(tool, "load", None)
            if callable(load):
                load()

    def readiness(self) -> tuple[bool, str]:
        if self.state != "ready":
            return False, self.state
        if any(not b.has_room() for b in self.batchers.values()):
            return False, "overloaded"
        return True, "ready"

    def _unavailable(self) -> Unavailable | None:
        if self.state == "ready":
            return None
        messages = {"loading": "the worker is still loading its tools",
                    "draining": "the worker is shutting down",
                    "failed": f"the worker failed to load its tools: {self.load_error}"}
        return Unavailable(self.state, messages[self.state])

    def _store_inlined(self, images: Mapping[str, bytes]) -> None:
        for image_id, png in images.items():
            if not IMAGE_ID_RE.match(image_id):
                raise BadRequest(f"image id {image_id!r} is not 64 lowercase hex characters")
            if image_id in self.store:  # its bytes were checked against the id when cached
                continue
            try:
                item = self.store.put_bytes(png)
            except InvalidImage as exc:
                raise BadRequest(f"image {image_id}: {exc.message}") from None
            if item.image_id != image_id:
                raise BadRequest(f"image {image_id}: its PNG bytes hash to {item.image_id}")

    async def run_calls(self, calls: Sequence[WorkCall], images: Mapping[str, bytes], *,
                        timeout_s: float | None = None
                        ) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
        """Results (in order) and the PNG of every image they produced.

        Raises Unavailable (nothing admitted), ImagesMissing or BadRequest.
        """
        self.inflight += 1
        try:
            return await self._run_calls(calls, images, timeout_s)
        finally:
            self.inflight -= 1

    async def _run_calls(self, calls, images, timeout_s):
        if (exc := self._unavailable()) is not None:
            self.metrics.reject(exc.code)
            raise exc
        loop = asyncio.get_running_loop()
        if images:
            self.metrics.received(len(images))
            await loop.run_in_executor(None, self._store_inlined, images)
        pinned: dict[str, StoredImage] = {}
        missing = []
        for _, _, ids in calls:
            for image_id in ids:
                if image_id not in pinned:
                    item = self.store.get(image_id)
                    if item is None:
                        missing.append(image_id)
                    else:
                        pinned[image_id] = item
        if missing:
            self.metrics.reject(IMAGES_MISSING)
            raise ImagesMissing(sorted(set(missing)))

        results: list[dict[str, Any] | None] = [None] * len(calls)
        admitted: list[tuple[int, reg.Tool, ToolArguments, _CallContext]] = []
        per_tool: collections.Counter[str] = collections.Counter()
        for i, (name, arguments, ids) in enumerate(calls):
            try:
                tool, args = self.tools.validate(name, arguments)
            except ToolError as exc:
                results[i] = exc.result()
                continue
            ctx = _CallContext({k: pinned[k] for k in ids}, self.store)
            admitted.append((i, tool, args, ctx))
            per_tool[tool.name] += 1
        full = [n for n, k in per_tool.items() if not self.batchers[n].has_room(k)]
        if full:  # checked for all before queueing any: a request is admitted whole or not at all
            self.metrics.reject("overloaded")
            raise Unavailable("overloaded", f"the queue of {', '.join(full)} is full "
                              f"({self.config.max_queue} calls)")
        start = time.perf_counter()
        deadline = loop.time() + (self.config.call_timeout_s if timeout_s is None else timeout_s)
        futures = [self.batchers[tool.name].submit(args, ctx, deadline=deadline)
                   for _, tool, args, ctx in admitted]
        produced: dict[str, bytes] = {}
        for (i, tool, _, ctx), result in zip(admitted, await asyncio.gather(*futures)):
            results[i] = result
            self.metrics.call(tool.name, result, time.perf_counter() - start)
            if result.get("ok"):
                produced.update({k: ctx.produced[k] for k in result["images"] if k in ctx.produced})
        return results, produced

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Stops admitting calls and waits for those admitted; False if `timeout_s` ran out."""
        if self.state in ("loading", "ready"):
            self.state = "draining"
        loop = asyncio.get_running_loop()
        end = loop.time() + (self.config.drain_timeout_s if timeout_s is None else timeout_s)
        while self.inflight or any(not b.idle for b in self.batchers.values()):
            if loop.time() >= end:
                return False
            await asyncio.sleep(0.02)
        return True

    async def close(self) -> None:
        for batcher in self.batchers.values():
            await batcher.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


# --- HTTP ----------------------------------------------------------------------------------


def b64decode(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise BadRequest(f"{where} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"{where} is not valid base64: {exc}") from None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# (De)serialising more than this many bytes of images runs in a thread, so that the event loop
# keeps answering meanwhile; less costs under ~0.2 ms, cheaper than the thread hand-off.
OFFLOAD_BYTES = 64 * 1024

_T = TypeVar("_T")


async def offload_if_large(nbytes: int, fn: Callable[..., _T], *args: Any,
                           executor: concurrent.futures.Executor | None = None) -> _T:
    """`fn(*args)`: inline when `nbytes` ≤ OFFLOAD_BYTES, else on `executor` (None: the loop's
    default one). Exceptions propagate either way."""
    if nbytes <= OFFLOAD_BYTES:
        return fn(*args)
    return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)


def decode_run_body(raw: bytes) -> tuple[list[WorkCall], dict[str, bytes], float | None]:
    """The raw /v1/run body -> parse_run_request's answer, or BadRequest."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    return parse_run_request(body)


def encode_run_response(results: list[dict[str, Any]], produced: Mapping[str, bytes]) -> str:
    """The JSON text of a 200 /v1/run answer."""
    return json.dumps({"results": results,
                       "images": {k: b64encode(v) for k, v in produced.items()}})


def parse_run_request(body: Any) -> tuple[list[WorkCall], dict[str, bytes], float | None]:
    """The /v1/run body -> (calls, inlined images, timeout_s), or BadRequest."""
    if not isinstance(body, dict) or not isinstance(body.get("calls"), list) or not body["calls"]:
        raise BadRequest('body must be {"calls": [{"name", "arguments", "images": [id]}, ...], '
                         '"images": {id: base64 PNG}, "timeout_s": seconds}')
    calls: list[WorkCall] = []
    for i, call in enumerate(body["calls"]):
        if (not isinstance(call, dict) or not isinstance(call.get("name"), str)
                or not isinstance(call.get("arguments", {}), dict)):
            raise BadRequest(f'calls[{i}] must be {{"name": str, "arguments": {{...}}, '
                             '"images": [id, ...]}')
        ids = call.get("images", [])
        if not isinstance(ids, list) or not all(isinstance(x, str) and IMAGE_ID_RE.match(x)
                                                for x in ids):
            raise BadRequest(f"calls[{i}].images must be a list of image ids")
        calls.append((call["name"], call.get("arguments", {}), ids))
    raw = body.get("images", {})
    if not isinstance(raw, dict):
        raise BadRequest('"images" must be an object {id: base64 PNG}')
    images = {k: b64decode(v, f"images[{k!r}]") for k, v in raw.items()}
    timeout_s = body.get("timeout_s")
    if timeout_s is not None and (isinstance(timeout_s, bool)
                                  or not isinstance(timeout_s, (int, float))
                                  or not math.isfinite(timeout_s) or timeout_s <= 0):
        raise BadRequest('"timeout_s" must be a positive number')
    return calls, images, timeout_s


def create_worker_app(config: WorkerConfig | None = None, tools: ToolRegistry | None = None, *,
                      load: Callable[[], ToolRegistry] | None = None):
    """The worker's aiohttp application. With `load`, the tools load in the background after
    start-up (/healthz answers at once, /readyz once they are loaded)."""
    from tools_server.app import _json_errors  # imported here: app imports this module

    config = config or WorkerConfig()
    service = WorkerService(config, tools, load=load)

    bearer_auth = bearer_auth_middleware(lambda: config.auth_token, frozenset({"/healthz"}),
                                         realm="vista-tools-worker")
    app = web.Application(client_max_size=int(config.max_body_mb * 2**20),
                          middlewares=[_json_errors, bearer_auth])
    app[WORKER] = service
    retry = {"Retry-After": str(config.retry_after_s)}

    def error(status: int, code: str, message: str, **extra) -> web.Response:
        return web.json_response({"error": {"code": code, "message": message, **extra}},
                                 status=status, headers=retry if status == 503 else None)

    async def run(request: web.Request) -> web.Response:
        if (exc := service._unavailable()) is not None:  # before reading a large body
            service.metrics.reject(exc.code)
            return error(503, exc.code, exc.message)
        raw = await request.read()
        try:
            calls, images, timeout_s = await offload_if_large(len(raw), decode_run_body, raw)
            results, produced = await service.run_calls(calls, images, timeout_s=timeout_s)
        except BadRequest as exc:
            return error(400, "malformed_request", str(exc))
        except Unavailable as exc:
            return error(503, exc.code, exc.message)
        except ImagesMissing as exc:
            return error(409, IMAGES_MISSING, str(exc), missing=exc.ids)
        text = await offload_if_large(sum(map(len, produced.values())), encode_run_response,
                                      results, produced)
        return web.Response(text=text, content_type="application/json")

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "state": service.state,
                                  "instance": service.instance})

    async def readyz(_request: web.Request) -> web.Response:
        ready, reason = service.readiness()
        body = {"ready": ready, "reason": reason, "instance": service.instance,
                "tools": service.tools.names if service.tools is not None else [],
                "queues": {n: b.depth for n, b in service.batchers.items()}}
        if service.load_error:
            body["error"] = service.load_error
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(_request: web.Request) -> web.Response:
        if not service.metrics.enabled:
            raise web.HTTPNotFound(text="metrics need the prometheus_client package")
        return web.Response(body=service.metrics.render(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app.router.add_post("/v1/run", run)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)

    async def on_startup(app: web.Application) -> None:
        task = asyncio.get_running_loop().create_task(service.start())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # logged in start()
        app[LOADING] = task

    async def on_cleanup(_app: web.Application) -> None:
        await service.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


WORKER = web.AppKey("worker", WorkerService)
LOADING = web.AppKey("worker_loading", asyncio.Task)


# --- command line --------------------------------------------------------------------------


def add_worker_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The `vista-tools worker` subcommand."""
    d = WorkerConfig()
    p = sub.add_parser("worker", help="run a worker process for model-backed tools",
                       description="Serves model-backed tools to a vista-tools front, batching "
                       "concurrent calls (see tools_server/worker.py).")
    add = p.add_argument
    add("--host", default=d.host, help="bind address (default: %(default)s)")
    add("--port", type=int, default=d.port, help="port; 0 picks a free one (default: %(default)s)")
    add("--port-file", help="write the bound port to this file once the worker accepts connections")
    add("--registry", default=DEFAULT_REGISTRY,
        help="tool registry factory 'module:function(options)' (default: %(default)s)")
    add("--tools", help="comma-separated tools to serve (default: every model-backed tool)")
    add("--tool-option", action="append", default=[], metavar="TOOL.OPTION=VALUE",
        help="constructor option of a tool, e.g. detect_objects.backend=hf (repeatable; "
             "JSON values are parsed)")
    add("--max-batch", type=int, default=d.max_batch,
        help="calls per run_batch; 1 turns batching off (default: %(default)s)")
    add("--max-wait-ms", type=float, default=d.max_wait_ms,
        help="longest wait for a batch to fill, ms (default: %(default)s)")
    add("--max-queue", type=int, default=d.max_queue,
        help="calls waiting per tool before answering 503 (default: %(default)s)")
    add("--max-body-mb", type=float, default=d.max_body_mb, help="largest request body, MiB")
    add("--max-images", type=int, default=d.max_images, help="images kept in the cache")
    add("--max-store-mb", type=float, default=d.max_store_mb, help="image cache budget, MiB")
    add_process_arguments(p, drain_timeout_s=d.drain_timeout_s, client="the front")
    return p


async def _serve(args: argparse.Namespace) -> int:
    token = auth_token(args)
    config = WorkerConfig(host=args.host, port=args.port, max_batch=args.max_batch,
                          max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                          max_body_mb=args.max_body_mb, max_images=args.max_images,
                          max_store_mb=args.max_store_mb, drain_timeout_s=args.drain_timeout_s,
                          auth_token=token)
    options = parse_tool_options(args.tool_option)
    names = [n.strip() for n in args.tools.split(",") if n.strip()] if args.tools else None
    app = create_worker_app(config, load=lambda: select_tools(load_registry(args.registry, options),
                                                              names))
    runner = web.AppRunner(app, access_log=log if args.access_log else None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, config.host, config.port).start()
    port = runner.addresses[0][1]
    log.info("vista-tools worker listening on http://%s:%d", config.host, port)

    def announce() -> None:
        if args.port_file:
            write_port_file(args.port_file, port)

    loop = asyncio.get_running_loop()
    loading = app[LOADING]
    stopping = loop.create_task(wait_for_stop(args.exit_with_parent, ready=announce))
    code = 0
    try:
        await asyncio.wait([loading, stopping], return_when=asyncio.FIRST_COMPLETED)
        if loading.done() and (loading.cancelled() or loading.exception() is not None):
            code = 1  # the tools did not load: exit so a supervisor sees it
        else:
            await stopping
            service = app[WORKER]
            log.info("draining: %d request(s) in flight", service.inflight)
            if not await service.drain():
                log.warning("drain timed out after %g s; exiting anyway", config.drain_timeout_s)
    finally:
        stopping.cancel()
        await runner.cleanup()
    return code


def run_worker(args: argparse.Namespace) -> int:
    """Entry point of `vista-tools worker` (logging is configured by the caller)."""
    try:
        return asyncio.run(_serve(args))
    except KeyboardInterrupt:
        return 0
