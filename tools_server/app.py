"""The tool service's aiohttp front.

Routes:
    GET  /healthz                -> {"status": "ok", "tools": n[, "workers": [pool state]]}
    GET  /v1/tools[?family=&name=] -> {"tools": [<OpenAI function entry + "family">, ...]}
    POST /v1/call   {"name", "arguments"}      -> a result (200; 429 + Retry-After if overloaded)
    POST /v1/batch  {"calls": [{"name", "arguments"}, ...]} -> {"results": [...]} (same order)
    POST /v1/images <raw PNG/JPEG bytes>       -> {"image_id", "width", "height"}
    GET  /v1/images/{image_id}                 -> PNG bytes
    GET  /metrics                              -> Prometheus text format

With `auth_token` set, every route but /healthz needs `Authorization: Bearer <token>` (401
otherwise). On SIGTERM the CLI drains: /healthz answers 503 "draining", new calls get 503 +
Retry-After (an `overloaded` result), admitted calls finish, then the port closes.

A bad tool call is a result (`ok: false` with a stable code), never an HTTP error; HTTP
errors are for requests that are not tool calls at all (400 malformed_request, 413
payload_too_large, 404 not_found) and for load (429 overloaded). Every HTTP error body is
`{"error": {"code", "message"}}`.

Where calls run: CPU-bound tools on `threads` threads (one per usable core), tools that
wait on a subprocess (`Tool.blocking`: python) on `blocking_threads` threads of their own,
and model-backed tools on the worker pool when there is one. At most `max_pending` calls are
admitted at once (running or queued); a call beyond that is answered `overloaded` at once.
A call's deadline, queueing included, is `call_timeout_s`, or longer for a tool that
enforces its own time limit (`Tool.deadline_s`); a call that misses it is answered
`timeout`. When a call's admission slot is freed:
    - CPU-bound: one job per thread pulls a request's calls in turn, and the slots of the
      calls a job pulled are freed together when the job ends: a lone call's when it ends
      (even past its deadline), a batch's when that thread finds no call left to pull;
    - blocking: when its thread finishes it (or at its deadline if it never started);
    - worker pool: when the pool answers, which it does by the deadline (`timeout`), though
      the worker may still be running the call then (its bounded queue pushes back there).
So runaway work in this process turns into back-pressure instead of an unbounded queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import json
import logging
import os
import time
from typing import Any

from aiohttp import web

from tools_server import registry as reg
from tools_server.images import IMAGE_ID_RE, ImageStore, InvalidImage
from tools_server.pool import WorkerPool, call_via_pool
from tools_server.process_args import bearer_auth_middleware
from tools_server.registry import ToolError, ToolRegistry, error_result

log = logging.getLogger("tools_server")


def _usable_cores() -> int:
    """Cores this process may run on (CPU affinity / cpusets), not all the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


@dataclasses.dataclass
class ServerConfig:
    host: str = "127.0.0.1"  # bind address; loopback unless you mean to expose the service
    port: int = 8765  # 0 picks a free port
    max_body_mb: float = 32.0  # largest request body (image uploads, batches), MiB
    max_images: int = 4096  # images kept in the store (LRU)
    max_store_mb: float = 1024.0  # PNG bytes + decoded pixels kept in the store, MiB
    max_image_pixels: int = 25_000_000  # larger images are refused (decompression bombs)
    # Threads for CPU-bound tools: one per core this process may use. More only add GIL
    # hand-offs (measured: light calls at 256 in flight, p99 263 ms with 4 threads vs 197 ms
    # with 2 on 2 cores).
    threads: int = dataclasses.field(default_factory=_usable_cores)
    # Threads for tools that mostly wait (`Tool.blocking`: the python sandbox's subprocess),
    # kept apart so that slow programs cannot starve the CPU-bound tools of threads.
    blocking_threads: int = 16
    max_pending: int = 256  # calls admitted at once (running + queued); more are `overloaded`
    call_timeout_s: float = 10.0  # per-call deadline, queueing included
    max_batch: int = 1024  # calls in one /v1/batch request
    retry_after_s: int = 1  # Retry-After sent with 429/503
    # Bearer token every route but /healthz requires (None: no auth, loopback use). The CLI
    # refuses to bind a non-loopback address without one unless told otherwise.
    auth_token: str | None = None
    drain_timeout_s: float = 30.0  # on SIGTERM: longest wait for admitted calls to finish


class _Context:
    """The ToolContext a running tool sees."""

    def __init__(self, store: ImageStore):
        self._store = store

    def image(self, image_id: str, *, argument: str = "image"):
        item = self._store.get(image_id) if IMAGE_ID_RE.match(image_id) else None
        if item is None:
            raise reg.image_not_found(image_id, argument)
        return item.image

    def add_image(self, image) -> str:
        try:
            return self._store.put_image(image).image_id
        except InvalidImage as exc:
            raise ToolError(reg.EXECUTION_FAILED, exc.message) from None


class _Metrics:
    """Prometheus counters, in a registry of this app's own (several apps may share a process)."""

    def __init__(self, service: "ToolService"):
        try:
            import prometheus_client as prom
        except ImportError:  # optional: /metrics then answers 404
            self.enabled = False
            return
        self.enabled = True
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        self.calls = prom.Counter("vista_tool_calls", "Tool calls by tool and result code",
                                  ["tool", "code"], registry=self.registry)
        self.seconds = prom.Histogram(
            "vista_tool_call_seconds", "Tool call latency, admission to result", ["tool"],
            registry=self.registry,
            buckets=(.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        prom.Gauge("vista_tool_calls_pending", "Calls admitted and not finished",
                   registry=self.registry).set_function(lambda: service.pending)
        prom.Gauge("vista_images_stored", "Images in the store",
                   registry=self.registry).set_function(lambda: len(service.store))
        prom.Gauge("vista_image_store_bytes", "Bytes held by the image store",
                   registry=self.registry).set_function(lambda: service.store.nbytes)

    def observe(self, tool: str, result: dict[str, Any], seconds: float) -> None:
        if not self.enabled:
            return
        code = "ok" if result.get("ok") else result["error"]["code"]
        self.calls.labels(tool=tool, code=code).inc()
        self.seconds.labels(tool=tool).observe(seconds)

    def render(self) -> bytes:
        return self._prom.generate_latest(self.registry)


class ToolService:
    """Validation, admission, execution and deadlines of tool calls (no HTTP in here)."""

    def __init__(self, config: ServerConfig, tools: ToolRegistry,
                 worker_pool: WorkerPool | None = None):
        self.config = config
        self.tools = tools
        # Model-backed tools run there when given (tools_server.pool), else in-process.
        self.worker_pool = worker_pool
        self.store = ImageStore(max_images=config.max_images,
                                max_bytes=int(config.max_store_mb * 2**20),
                                max_pixels=config.max_image_pixels)
        self.pool = concurrent.futures.ThreadPoolExecutor(config.threads, thread_name_prefix="tool")
        self.blocking_pool = concurrent.futures.ThreadPoolExecutor(
            config.blocking_threads, thread_name_prefix="tool-blocking")
        self.pending = 0
        self.draining = False  # set on SIGTERM: new calls are refused with 503, admitted ones finish
        self.metrics = _Metrics(self)
        if worker_pool is not None and self.metrics.enabled:
            worker_pool.register_metrics(self.metrics.registry)
        self._context = _Context(self.store)

    def _run_sync(self, tool: reg.Tool, args: reg.ToolArguments) -> dict[str, Any]:
        try:
            return tool.run(args, self._context).result()
        except ToolError as exc:
            return exc.result()
        except Exception as exc:  # a tool bug is the service's fault, reported as a result
            log.exception("tool %s failed", tool.name)
            return error_result(reg.EXECUTION_FAILED,
                                f"tool '{tool.name}' failed: {type(exc).__name__}: {exc}")

    def _admit(self, name: Any, arguments: Any
               ) -> tuple[reg.Tool, reg.ToolArguments, float] | dict[str, Any]:
        """Validation and admission: (tool, args, deadline in s) holding one pending slot, or
        a result."""
        try:
            tool, args = self.tools.validate(name, arguments)
        except ToolError as exc:
            return exc.result()
        timeout_s = self.config.call_timeout_s
        try:
            own = tool.deadline_s(args)
        except Exception:  # a bug there must not leak a slot or fail the request
            log.exception("deadline_s of tool %s failed", tool.name)
            own = None
        if own is not None:
            # A tool with its own time limit (python) reports an overrun itself, in its result.
            timeout_s = max(timeout_s, own)
        if self.draining:
            return error_result(reg.OVERLOADED, "the tool server is shutting down (draining); "
                                "retry on another server")
        if self.pending >= self.config.max_pending:
            return error_result(reg.OVERLOADED,
                                f"the tool server is busy ({self.pending} calls pending); "
                                f"retry in {self.config.retry_after_s} s")
        self.pending += 1
        return tool, args, timeout_s

    @staticmethod
    def _timeout(tool: reg.Tool, seconds: float) -> dict[str, Any]:
        return error_result(reg.TIMEOUT, f"tool '{tool.name}' did not finish within "
                            f"{seconds:g} s")

    async def _call_alone(self, tool: reg.Tool, args: reg.ToolArguments,
                          arguments: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """An admitted call on the worker pool or the blocking threads; frees its slot."""
        if self.worker_pool is not None and tool.model_backed:
            try:  # the pool keeps the deadline and turns every failure into a result
                return await call_via_pool(self.worker_pool, self.store, tool.name, arguments,
                                           timeout_s=timeout_s, executor=self.pool)
            finally:
                self.pending -= 1
        loop = asyncio.get_running_loop()
        try:
            cfut = self.blocking_pool.submit(self._run_sync, tool, args)
        except RuntimeError:  # pool shut down
            self.pending -= 1
            return error_result(reg.EXECUTION_FAILED, "the tool server is shutting down")
        # The slot is freed when the thread really finishes, not at the deadline.
        cfut.add_done_callback(lambda _f: self._release_threadsafe(loop, 1))
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(cfut)), timeout_s)
        except asyncio.TimeoutError:
            cfut.cancel()  # only helps if it is still queued
            return self._timeout(tool, timeout_s)

    def _release_threadsafe(self, loop: asyncio.AbstractEventLoop, n: int) -> None:
        def release() -> None:
            self.pending -= n
        try:
            loop.call_soon_threadsafe(release)
        except RuntimeError:  # loop already closed
            pass

    async def _run_local(self, calls: list[tuple[int, reg.Tool, reg.ToolArguments, float]],
                         results: list[Any], finished: list[float]) -> None:
        """Runs admitted CPU-bound calls (index, tool, args, deadline in s) on the tool threads,
        writing `results[i]`.

        One job per thread pulls the next call from a shared counter until none is left, so a
        batch costs a few thread hand-offs instead of one per call, and a slow call does not
        hold up the others (the other threads go on pulling). A call still queued at its
        deadline is skipped, and one that ends past it leaves no result: the caller answers
        both `timeout`. The slots of a job's calls are freed when the job ends.
        """
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        deadlines = [now + timeout_s for _i, _tool, _args, timeout_s in calls]
        counter = itertools.count()  # next() on it is atomic under the GIL

        def job() -> None:
            ran = 0
            try:
                for k in counter:
                    if k >= len(calls):
                        return
                    i, tool, args, _timeout_s = calls[k]
                    ran += 1
                    if time.monotonic() < deadlines[k]:
                        result = self._run_sync(tool, args)
                        if time.monotonic() <= deadlines[k]:
                            finished[i] = time.perf_counter()  # before the result: see call_many
                            results[i] = result
            finally:
                self._release_threadsafe(loop, ran)

        futures = []
        for _ in range(min(self.config.threads, len(calls))):
            try:
                futures.append(asyncio.wrap_future(self.pool.submit(job)))
            except RuntimeError:  # pool shut down
                break
        if not futures:
            self.pending -= len(calls)
            for i, _tool, _args, _timeout_s in calls:
                results[i] = error_result(reg.EXECUTION_FAILED, "the tool server is shutting down")
            return
        await asyncio.wait(futures, timeout=max(0.0, max(deadlines) - time.monotonic()))

    async def call_many(self, calls: list[tuple[Any, Any]]) -> list[dict[str, Any]]:
        """Tool calls -> their results, in order. Never raises (but for cancellation)."""
        start = time.perf_counter()
        n = len(calls)
        results: list[Any] = [None] * n  # written by tool threads until the deadline
        finished = [0.0] * n
        tools: list[reg.Tool | None] = [None] * n
        timeouts = [0.0] * n
        local, alone = [], []
        for i, (name, arguments) in enumerate(calls):
            admitted = self._admit(name, arguments)
            if isinstance(admitted, dict):
                results[i], finished[i] = admitted, time.perf_counter()
                continue
            tool, args, timeouts[i] = admitted
            tools[i] = tool
            if tool.blocking or (self.worker_pool is not None and tool.model_backed):
                alone.append((i, tool, args, arguments))
            else:
                local.append((i, tool, args, timeouts[i]))

        async def one(i, tool, args, arguments):
            results[i] = await self._call_alone(tool, args, arguments, timeouts[i])
            finished[i] = time.perf_counter()

        await asyncio.gather(*([self._run_local(local, results, finished)] if local else []),
                             *(one(*c) for c in alone))
        out = []
        for i, (name, _arguments) in enumerate(calls):
            result, tool = results[i], tools[i]
            if result is None:  # still running (or skipped) at its deadline
                result, finished[i] = self._timeout(tool, timeouts[i]), time.perf_counter()
            label = tool.name if tool is not None else (
                name if isinstance(name, str) and name in self.tools else "_unknown")
            self.metrics.observe(label, result, finished[i] - start)
            out.append(result)
        return out

    async def call(self, name: Any, arguments: Any) -> dict[str, Any]:
        """One tool call -> its result dict. Never raises (but for cancellation)."""
        return (await self.call_many([(name, arguments)]))[0]

    async def put_image_bytes(self, data: bytes):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self.store.put_bytes, data)

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Stops admitting calls and waits for admitted ones; False if some outlived the wait."""
        self.draining = True
        deadline = time.monotonic() + (self.config.drain_timeout_s if timeout_s is None
                                       else timeout_s)
        while self.pending > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.pending == 0

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.blocking_pool.shutdown(wait=False, cancel_futures=True)


SERVICE = web.AppKey("service", ToolService)


def _error(status: int, code: str, message: str,
           headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status,
                             headers=headers)


_HTTP_CODES = {400: "malformed_request", 404: "not_found", 405: "method_not_allowed",
               413: "payload_too_large", 415: "unsupported_media_type"}


@web.middleware
async def _json_errors(request: web.Request, handler):
    """Every HTTP error as a JSON body; an unexpected exception as a 500, not a dropped socket."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        code = _HTTP_CODES.get(exc.status, f"http_{exc.status}")
        message = exc.reason if exc.text is None else exc.text.removeprefix(f"{exc.status}: ")
        resp = _error(exc.status, code, message)
        for key in ("Allow", "Retry-After"):
            if key in exc.headers:
                resp.headers[key] = exc.headers[key]
        return resp
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, "internal_error", "internal server error")


_PUBLIC_PATHS = frozenset({"/healthz"})  # load balancers probe without credentials


async def _read_body(request: web.Request) -> bytes:
    limit = request.app[SERVICE].config.max_body_mb
    if request.content_length is not None and request.content_length > limit * 2**20:
        raise web.HTTPRequestEntityTooLarge(
            max_size=int(limit * 2**20), actual_size=request.content_length,
            text=f"body of {request.content_length} bytes exceeds {limit:g} MiB")
    return await request.read()  # aiohttp enforces client_max_size while streaming


async def _read_json(request: web.Request) -> Any:
    body = await _read_body(request)
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise web.HTTPBadRequest(text=f"body is not JSON: {exc}") from None


def _envelope(obj: Any, where: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise web.HTTPBadRequest(
            text=f'{where} must be an object {{"name": str, "arguments": {{...}}}}')
    arguments = obj.get("arguments", {})
    if not isinstance(arguments, dict):
        raise web.HTTPBadRequest(text=f'{where}: "arguments" must be an object')
    return obj["name"], arguments


async def healthz(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    if service.draining:  # tells a load balancer to stop sending before the port closes
        return web.json_response({"status": "draining", "tools": len(service.tools)}, status=503,
                                 headers={"Retry-After": str(service.config.retry_after_s)})
    body = {"status": "ok", "tools": len(service.tools)}
    if service.worker_pool is not None:
        body["workers"] = service.worker_pool.status()
    return web.json_response(body)


async def list_tools(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    families = set(request.query.getall("family", [])) or None
    names = {n for v in request.query.getall("name", []) for n in v.split(",") if n} or None
    return web.json_response({"tools": service.tools.schemas(families=families, names=names)})


async def call_tool(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    name, arguments = _envelope(await _read_json(request), "body")
    result = await service.call(name, arguments)
    if not result["ok"] and result["error"]["code"] == reg.OVERLOADED:
        return web.json_response(result, status=503 if service.draining else 429,
                                 headers={"Retry-After": str(service.config.retry_after_s)})
    return web.json_response(result)


async def batch(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    body = await _read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("calls"), list):
        raise web.HTTPBadRequest(
            text='body must be an object {"calls": [{"name": str, "arguments": {...}}, ...]}')
    calls = [_envelope(c, f"calls[{i}]") for i, c in enumerate(body["calls"])]
    if len(calls) > service.config.max_batch:
        raise web.HTTPRequestEntityTooLarge(
            max_size=service.config.max_batch, actual_size=len(calls),
            text=f"{len(calls)} calls in one batch; the limit is {service.config.max_batch}")
    results = await service.call_many(calls)
    headers = None
    if any(not r["ok"] and r["error"]["code"] == reg.OVERLOADED for r in results):
        headers = {"Retry-After": str(service.config.retry_after_s)}
    return web.json_response({"results": results}, headers=headers)


async def upload_image(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    data = await _read_body(request)
    try:
        item = await service.put_image_bytes(data)
    except InvalidImage as exc:
        return _error(exc.status, exc.code, exc.message)
    w, h = item.image.size
    return web.json_response({"image_id": item.image_id, "width": w, "height": h})


async def get_image(request: web.Request) -> web.Response:
    image_id = request.match_info["image_id"]
    if not IMAGE_ID_RE.match(image_id):
        return _error(400, "invalid_image_id",
                      "an image id is 64 lowercase hex characters (sha256)")
    item = request.app[SERVICE].store.get(image_id)
    if item is None:
        return _error(404, "image_not_found", f"image {image_id} not found")
    # Content-addressed: an id always names the same bytes.
    return web.Response(body=item.png, content_type="image/png",
                        headers={"Cache-Control": "public, max-age=31536000, immutable",
                                 "ETag": f'"{image_id}"'})


async def metrics(request: web.Request) -> web.Response:
    m = request.app[SERVICE].metrics
    if not m.enabled:
        raise web.HTTPNotFound(text="metrics need the prometheus_client package")
    return web.Response(body=m.render(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def create_app(config: ServerConfig | None = None,
               tools: ToolRegistry | None = None,
               worker_pool: WorkerPool | None = None) -> web.Application:
    """The aiohttp application; `tools` defaults to every tool of `tools_server.tools`.
    With `worker_pool`, model-backed tools run on it; the app starts and closes it."""
    config = config or ServerConfig()
    if tools is None:
        from tools_server.tools import default_registry
        tools = default_registry()
    bearer_auth = bearer_auth_middleware(lambda: config.auth_token, _PUBLIC_PATHS,
                                         realm="vista-tools")
    app = web.Application(client_max_size=int(config.max_body_mb * 2**20),
                          middlewares=[_json_errors, bearer_auth])
    service = ToolService(config, tools, worker_pool)
    app[SERVICE] = service
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/tools", list_tools)
    app.router.add_post("/v1/call", call_tool)
    app.router.add_post("/v1/batch", batch)
    app.router.add_post("/v1/images", upload_image)
    app.router.add_get("/v1/images/{image_id}", get_image)
    app.router.add_get("/metrics", metrics)

    async def close_service(_app: web.Application) -> None:
        service.close()
        if worker_pool is not None:
            await worker_pool.close()

    if worker_pool is not None:
        async def start_pool(_app: web.Application) -> None:
            await worker_pool.start()

        app.on_startup.append(start_pool)
    app.on_cleanup.append(close_service)
    return app
