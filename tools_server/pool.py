"""Worker pools: where the front sends the calls of model-backed tools.

The front (`tools_server.app.ToolService`) validates a call, and if its tool is model-backed
and the server has a pool, awaits `pool.call(name, arguments, images)`; the pool runs it on a
worker and returns the result dict and the PNG of every image it produced, which the front
stores (same bytes, same content-addressed id). Without a pool the front runs every tool
in-process.

`LocalHttpPool(urls)` talks to `vista-tools worker` processes (tools_server.worker) over HTTP:
    - routing: the healthy worker with the fewest calls outstanding, ties in round robin;
    - retries: tool calls are pure functions of their arguments and images, so a call whose
      worker fails (connection error, 5xx, 503 draining) is sent to another worker, at most
      `max_attempts` workers, always within the call's deadline; a worker answering 503
      overloaded is skipped for that call;
    - ejection: a worker that fails a call is taken out of rotation at once; a background
      checker polls every worker's /readyz and re-admits it when it passes again (a restarted
      worker on the same port comes back by itself);
    - when no worker can take a call, the result is `overloaded` (the front answers 429 with
      Retry-After), at once: never a hang.
Image protocol: see tools_server.worker.

`RayPool` (tools_server.ray_pool) implements the same interface with Ray actors.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import collections
import concurrent.futures
import dataclasses
import itertools
import json
import logging
from typing import Any, Callable, Mapping

import aiohttp

from tools_server import registry as reg
from tools_server.images import IMAGE_ID_RE, ImageStore, InvalidImage
from tools_server.registry import ToolRegistry, error_result
from tools_server.worker import (DEFAULT_REGISTRY, IMAGES_MISSING, BadRequest, WorkerConfig,
                                 b64decode, b64encode, load_registry, offload_if_large,
                                 parse_tool_options)

log = logging.getLogger("tools_server.pool")


class WorkerPool(abc.ABC):
    """Runs calls of model-backed tools somewhere else than the front's process."""

    async def start(self) -> None:
        """Called once in the front's event loop before the first call."""

    @abc.abstractmethod
    async def call(self, name: str, arguments: dict[str, Any], images: Mapping[str, bytes], *,
                   timeout_s: float) -> tuple[dict[str, Any], dict[str, bytes]]:
        """(result dict, {image id: PNG} of the images it produced). `images` holds the PNG of
        every image the arguments name. Never raises (but for cancellation): failures are
        results (`overloaded` when no worker can take the call, `timeout` at the deadline)."""

    @abc.abstractmethod
    def status(self) -> list[dict[str, Any]]:
        """One entry per worker: at least its address, `healthy` and `outstanding` calls."""

    def register_metrics(self, registry: Any) -> None:
        """Adds the pool's Prometheus metrics to `registry` (the front's)."""

    async def close(self) -> None:
        pass


def referenced_image_ids(arguments: Any) -> list[str]:
    """Every string in the arguments that has the form of an image id, in order, once."""
    found: dict[str, None] = {}
    stack = [arguments]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if IMAGE_ID_RE.match(value):
                found[value] = None
        elif isinstance(value, dict):
            stack.extend(reversed(list(value.values())))
        elif isinstance(value, list):
            stack.extend(reversed(value))
    return list(found)


def _store_produced(store: ImageStore, produced: Mapping[str, bytes]) -> None:
    for image_id, png in produced.items():
        if store.put_bytes(png).image_id != image_id:
            raise InvalidImage(f"a worker sent image {image_id} whose PNG hashes differently")


async def call_via_pool(pool: WorkerPool, store: ImageStore, name: str, arguments: dict[str, Any],
                        *, timeout_s: float, executor: Any = None) -> dict[str, Any]:
    """The front's side of a pool call: sends the images the call names, stores what it made."""
    images = {}
    for image_id in referenced_image_ids(arguments):
        item = store.get(image_id)
        if item is not None:  # an unknown id stays unsent: the tool answers image_not_found
            images[image_id] = item.png
    result, produced = await pool.call(name, arguments, images, timeout_s=timeout_s)
    if produced:
        try:
            await asyncio.get_running_loop().run_in_executor(executor, _store_produced, store,
                                                             produced)
        except InvalidImage as exc:
            return error_result(reg.EXECUTION_FAILED,
                                f"tool '{name}' produced an image the server cannot keep: "
                                f"{exc.message}")
    if result.get("ok") and any(i not in store for i in result.get("images", ())):
        return error_result(reg.EXECUTION_FAILED,
                            f"tool '{name}' returned an image its worker did not send")
    return result


# --- routing over several workers ----------------------------------------------------------


@dataclasses.dataclass(eq=False)
class _Worker:
    url: str  # its address, or a name for workers that have none (Ray actors)
    handle: Any = None  # what the subclass talks to (a Ray actor handle)
    healthy: bool = True  # optimistic: the first failure ejects it
    outstanding: int = 0
    last_error: str | None = None
    instance: str | None = None  # the worker's start id, from its readiness probe
    # Ids this worker has confirmed it holds (LRU, bounded); others are inlined.
    confirmed: collections.OrderedDict = dataclasses.field(default_factory=collections.OrderedDict)

    def confirm(self, ids, limit: int) -> None:
        for image_id in ids:
            self.confirmed[image_id] = None
            self.confirmed.move_to_end(image_id)
        while len(self.confirmed) > limit:
            self.confirmed.popitem(last=False)


@dataclasses.dataclass
class _Outcome:
    """One attempt on one worker. ok / error: final result. busy: full queue, try another.
    unavailable: loading or draining, eject without counting a failure. failed: eject, retry
    elsewhere (up to max_attempts). timeout: the call's deadline passed."""
    kind: str
    result: dict[str, Any] | None = None
    produced: dict[str, bytes] = dataclasses.field(default_factory=dict)
    reason: str = ""


class RoutingPool(WorkerPool):
    """Least-outstanding routing, retries, ejection and health checks over a list of workers.

    Subclasses send one call to one worker (`_attempt`) and probe one worker's readiness
    (`_probe`); everything else is here, shared by the HTTP and the Ray pools.
    """

    def __init__(self, *, max_attempts: int = 3, health_interval_s: float = 1.0):
        if max_attempts < 1:
            raise ValueError(f"max_attempts={max_attempts} must be ≥ 1")
        self.workers: list[_Worker] = []
        self.max_attempts = max_attempts
        self.health_interval_s = health_interval_s
        self._rr = itertools.count()
        self._checker: asyncio.Task | None = None
        self._metrics = None

    # -- to implement --

    async def _attempt(self, w: _Worker, name: str, arguments: dict[str, Any],
                       images: Mapping[str, bytes], deadline: float,
                       scratch: dict[str, Any]) -> _Outcome:
        """Sends the call to `w` (deadline in loop time); `scratch` lives for the whole call."""
        raise NotImplementedError

    async def _probe(self, w: _Worker) -> tuple[bool, str, str | None]:
        """(in rotation?, reason, instance id). Must not raise."""
        raise NotImplementedError

    # -- health --

    def _start_checker(self) -> None:
        if self._checker is None:
            self._checker = asyncio.get_running_loop().create_task(self._check_forever(),
                                                                   name="worker-health")

    async def _stop_checker(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            try:
                await self._checker
            except asyncio.CancelledError:
                pass
            self._checker = None

    async def _check(self, w: _Worker) -> None:
        ok, reason, instance = await self._probe(w)
        if ok:
            self._admit(w, instance)
        else:
            self._eject(w, reason)

    async def _check_forever(self) -> None:
        while True:
            try:
                await asyncio.gather(*(self._check(w) for w in self.workers))
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the checker die
                log.exception("worker health check failed")
            await asyncio.sleep(self.health_interval_s)

    # -- state --

    def status(self) -> list[dict[str, Any]]:
        return [{"url": w.url, "healthy": w.healthy, "outstanding": w.outstanding,
                 "error": None if w.healthy else w.last_error} for w in self.workers]

    def _pick(self, exclude: set[_Worker]) -> _Worker | None:
        """The healthy worker with the fewest outstanding calls; ties rotate."""
        n = len(self.workers)
        start = next(self._rr) % n
        best = None
        for k in range(n):
            w = self.workers[(start + k) % n]
            if not w.healthy or w in exclude:
                continue
            if best is None or w.outstanding < best.outstanding:
                best = w
        return best

    def _eject(self, w: _Worker, reason: str) -> None:
        w.last_error = reason
        w.confirmed.clear()  # it may come back as a fresh process with an empty cache
        if w.healthy:
            w.healthy = False
            log.warning("tool worker %s ejected: %s", w.url, reason)
            self._count("ejections", w)

    def _admit(self, w: _Worker, instance: str | None) -> None:
        if instance != w.instance:
            w.confirmed.clear()
            w.instance = instance
        if not w.healthy:
            w.healthy = True
            log.info("tool worker %s re-admitted", w.url)
            self._count("readmissions", w)

    # -- calls --

    async def call(self, name: str, arguments: dict[str, Any], images: Mapping[str, bytes], *,
                   timeout_s: float) -> tuple[dict[str, Any], dict[str, bytes]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        tried: set[_Worker] = set()
        busy = failures = 0
        reasons: list[str] = []
        scratch: dict[str, Any] = {}
        while True:
            if loop.time() >= deadline:
                return self._timeout(name, timeout_s), {}
            w = self._pick(tried)
            if w is None:
                return self._no_worker(name, busy, reasons), {}
            tried.add(w)
            w.outstanding += 1
            try:
                outcome = await self._attempt(w, name, arguments, images, deadline, scratch)
            finally:
                w.outstanding -= 1
            self._count(outcome.kind, w)
            if outcome.kind in ("ok", "error"):
                return outcome.result, outcome.produced
            if outcome.kind == "timeout":
                return self._timeout(name, timeout_s), {}
            reasons.append(f"{w.url}: {outcome.reason}")
            if outcome.kind == "busy":
                busy += 1
                continue
            self._eject(w, outcome.reason)
            if outcome.kind == "failed":
                failures += 1
                if failures >= self.max_attempts:
                    return error_result(
                        reg.EXECUTION_FAILED,
                        f"tool '{name}' failed on {failures} workers; last: {outcome.reason}"), {}

    @staticmethod
    def _timeout(name: str, timeout_s: float) -> dict[str, Any]:
        return error_result(reg.TIMEOUT, f"tool '{name}' did not finish within {timeout_s:g} s")

    def _no_worker(self, name: str, busy: int, reasons: list[str]) -> dict[str, Any]:
        n = len(self.workers)
        if busy:
            why = f"the tool workers are busy ({busy} of {n} full)"
        else:
            healthy = sum(w.healthy for w in self.workers)
            why = f"no tool worker is available ({healthy} of {n} healthy)"
        detail = f"; {'; '.join(reasons[-3:])}" if reasons else ""
        return error_result(reg.OVERLOADED, f"{why} for tool '{name}'{detail}; retry shortly")

    # -- metrics --

    def register_metrics(self, registry: Any) -> None:
        import prometheus_client as prom

        self._metrics = prom.Counter("vista_pool_events", "Worker pool attempts by outcome, "
                                     "and ejections/readmissions, per worker",
                                     ["worker", "event"], registry=registry)
        healthy = prom.Gauge("vista_pool_worker_healthy", "1 if the worker is in rotation",
                             ["worker"], registry=registry)
        outstanding = prom.Gauge("vista_pool_worker_outstanding", "Calls sent and not answered",
                                 ["worker"], registry=registry)
        for w in self.workers:
            healthy.labels(worker=w.url).set_function(lambda w=w: float(w.healthy))
            outstanding.labels(worker=w.url).set_function(lambda w=w: w.outstanding)

    def _count(self, event: str, w: _Worker) -> None:
        if self._metrics is not None:
            self._metrics.labels(worker=w.url, event=event).inc()


class LocalHttpPool(RoutingPool):
    """`vista-tools worker` processes at `urls` (see the module docstring)."""

    def __init__(self, urls: list[str] | tuple[str, ...], *, max_attempts: int = 3,
                 health_interval_s: float = 1.0, connect_timeout_s: float = 2.0,
                 max_connections: int = 256, confirmed_images: int = 512,
                 headers: Mapping[str, str] | None = None,
                 on_close: Callable[[], None] | None = None,
                 executor: concurrent.futures.Executor | None = None):
        """`executor` (de)serialises requests and answers that inline large images (None:
        the loop's default executor); small ones are handled on the event loop."""
        super().__init__(max_attempts=max_attempts, health_interval_s=health_interval_s)
        if not urls:
            raise ValueError("a LocalHttpPool needs at least one worker URL")
        self.workers = [_Worker(u.rstrip("/")) for u in urls]
        self.connect_timeout_s = connect_timeout_s
        self.max_connections = max_connections
        # Fewer than the worker's cache holds (1024 by default), so a confirmed id is rarely
        # evicted there; when it is, the worker's 409 costs one extra round trip.
        self.confirmed_images = confirmed_images
        self.headers = dict(headers or {})
        self._on_close = on_close
        self.executor = executor
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                headers={"Content-Type": "application/json", **self.headers}, trust_env=False)
        self._start_checker()

    async def close(self) -> None:
        await self._stop_checker()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            await asyncio.get_running_loop().run_in_executor(None, on_close)

    async def _probe(self, w: _Worker) -> tuple[bool, str, str | None]:
        timeout = aiohttp.ClientTimeout(total=max(1.0, self.health_interval_s),
                                        sock_connect=self.connect_timeout_s)
        try:
            async with self._session.get(w.url + "/readyz", timeout=timeout) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            return False, f"/readyz: {type(exc).__name__}: {exc}", None
        body = body if isinstance(body, dict) else {}
        reason = body.get("reason") or ""
        # A full queue is load, not failure: the worker answers 503 itself and the call moves
        # on, while ejecting it would idle it until the next check.
        ok = resp.status == 200 or reason == "overloaded"
        return ok, f"/readyz: {resp.status} {reason}".strip(), body.get("instance")

    async def call(self, name, arguments, images, *, timeout_s):
        if self._session is None:
            await self.start()
        return await super().call(name, arguments, images, timeout_s=timeout_s)

    async def _attempt(self, w: _Worker, name: str, arguments: dict[str, Any],
                       images: Mapping[str, bytes], deadline: float,
                       scratch: dict[str, Any]) -> _Outcome:
        loop = asyncio.get_running_loop()
        encoded = scratch.setdefault("base64", {})  # each image encoded once per call
        ids = list(images)
        inline = [i for i in ids if i not in w.confirmed]
        for resend in (False, True):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return _Outcome("timeout")
            data = await offload_if_large(sum(len(images[i]) for i in inline), _encode_request,
                                          name, arguments, ids, images, inline, encoded, remaining,
                                          executor=self.executor)
            remaining = deadline - loop.time()  # encoding a large request takes time
            if remaining <= 0:
                return _Outcome("timeout")
            timeout = aiohttp.ClientTimeout(total=remaining,
                                            sock_connect=min(remaining, self.connect_timeout_s))
            try:
                async with self._session.post(w.url + "/v1/run", data=data,
                                              timeout=timeout) as resp:
                    status, raw = resp.status, await resp.read()
            except asyncio.TimeoutError:
                if loop.time() >= deadline:
                    return _Outcome("timeout")
                return _Outcome("failed", reason="connect timeout")
            except (aiohttp.ClientError, OSError) as exc:
                return _Outcome("failed", reason=f"{type(exc).__name__}: {exc}")
            body, parsed = await offload_if_large(len(raw), _decode_response, status, raw,
                                                  executor=self.executor)
            if status == 200:
                if isinstance(parsed, str):
                    return _Outcome("failed", reason=parsed)
                result, produced = parsed
                w.confirm([*ids, *produced], self.confirmed_images)
                return _Outcome("ok", result, produced)
            err = body.get("error") if isinstance(body, dict) else None
            code = err.get("code") if isinstance(err, dict) else None
            if status == 409 and code == IMAGES_MISSING and not resend:
                missing = err.get("missing")
                if not isinstance(missing, list) or not set(missing) <= set(ids):
                    return _Outcome("failed", reason="409 naming images the call does not use")
                for i in missing:
                    w.confirmed.pop(i, None)
                inline = list(missing)
                continue
            if status == 503:
                kind = "busy" if code == reg.OVERLOADED else "unavailable"
                return _Outcome(kind, reason=f"503 {code}")
            if status >= 500 or status == 409:
                return _Outcome("failed", reason=f"HTTP {status} {code or ''}".strip())
            # Another 4xx: no worker can run this call (e.g. its images are too large).
            message = (err.get("message") if isinstance(err, dict)
                       else raw[:200].decode("utf-8", "replace"))
            return _Outcome("error", error_result(
                reg.EXECUTION_FAILED, f"the tool worker refused the call ({status}): {message}"))
        raise AssertionError("unreachable")


def _encode_request(name: str, arguments: dict[str, Any], ids: list[str],
                    images: Mapping[str, bytes], inline: list[str], encoded: dict[str, str],
                    timeout_s: float) -> str:
    """The /v1/run body of one call; `encoded` caches base64 across the call's attempts."""
    for i in inline:
        if i not in encoded:
            encoded[i] = b64encode(images[i])
    return json.dumps({"calls": [{"name": name, "arguments": arguments, "images": ids}],
                       "images": {i: encoded[i] for i in inline}, "timeout_s": timeout_s})


def _decode_response(status: int, raw: bytes
                     ) -> tuple[Any, tuple[dict[str, Any], dict[str, bytes]] | str | None]:
    """(JSON body or None, and for a 200: (result, {id: PNG} produced) or why it is malformed)."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        body = None
    if status != 200:
        return body, None
    try:
        result = body["results"][0]
        if not isinstance(result, dict) or "ok" not in result:
            raise ValueError("a result must be an object with 'ok'")
        produced = {k: b64decode(v, f"images[{k!r}]") for k, v in body.get("images", {}).items()}
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, BadRequest) as exc:
        return body, f"malformed worker response: {exc}"
    return body, (result, produced)


# --- the front's command line ---------------------------------------------------------------


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """`vista-tools serve` flags for the tool registry and the worker pool."""
    d = WorkerConfig()
    add = parser.add_argument
    add("--registry", default=DEFAULT_REGISTRY,
        help="tool registry factory 'module:function(options)' (default: %(default)s)")
    add("--tool-option", action="append", default=[], metavar="TOOL.OPTION=VALUE",
        help="constructor option of a tool, e.g. detect_objects.backend=hf (repeatable)")
    add("--worker", action="append", default=[], metavar="URL",
        help="a `vista-tools worker` to run model-backed tools on (repeatable)")
    add("--local-workers", type=int, default=0, metavar="N",
        help="start N workers on 127.0.0.1 and supervise them (restarting any that dies)")
    add("--worker-max-batch", type=int, default=d.max_batch, help="--max-batch of local workers")
    add("--worker-max-wait-ms", type=float, default=d.max_wait_ms,
        help="--max-wait-ms of local workers")
    add("--worker-max-queue", type=int, default=d.max_queue, help="--max-queue of local workers")
    add("--ray-actors", type=int, default=0, metavar="N",
        help="run model-backed tools on N Ray actors instead (needs the [ray] extra)")
    add("--ray-num-gpus", type=float, default=0.0, help="GPUs per Ray actor")
    add("--ray-address", default=None, help="Ray cluster address (default: start a local one)")


async def pool_from_args(args: argparse.Namespace, *, token: str | None = None
                         ) -> tuple[ToolRegistry, WorkerPool | None]:
    """The front's tools and worker pool from its `serve` flags; starts local workers (blocking
    start-up runs in a thread). The pool stops them when it closes. With `token`, the pool
    sends it to the workers as a bearer token."""
    options = parse_tool_options(args.tool_option)
    tools = load_registry(args.registry, options)
    if sum(bool(x) for x in (args.worker, args.local_workers, args.ray_actors)) > 1:
        raise SystemExit("give only one of --worker, --local-workers and --ray-actors")
    if args.local_workers < 0 or args.ray_actors < 0:
        raise SystemExit("--local-workers and --ray-actors must be ≥ 0")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    if args.worker:
        return tools, LocalHttpPool(args.worker, headers=headers)
    if args.local_workers:
        from tools_server.launch import LocalWorkerGroup

        group = LocalWorkerGroup(
            args.local_workers, registry=args.registry, tool_options=args.tool_option,
            worker_args=["--max-batch", str(args.worker_max_batch),
                         "--max-wait-ms", str(args.worker_max_wait_ms),
                         "--max-queue", str(args.worker_max_queue)])
        await asyncio.get_running_loop().run_in_executor(None, group.start)
        return tools, LocalHttpPool(group.urls, headers=headers, on_close=group.stop)
    if args.ray_actors:
        from tools_server.ray_pool import RayPool

        return tools, RayPool(args.ray_actors, num_gpus=args.ray_num_gpus, registry=args.registry,
                              tool_options=options, address=args.ray_address,
                              max_batch=args.worker_max_batch,
                              max_wait_ms=args.worker_max_wait_ms,
                              max_queue=args.worker_max_queue)
    return tools, None


__all__ = ["WorkerPool", "RoutingPool", "LocalHttpPool", "call_via_pool", "referenced_image_ids",
           "add_serve_arguments", "pool_from_args"]
