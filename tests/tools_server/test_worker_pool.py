"""The worker pool for model-backed tools: dynamic batching, the bounded queue, routing,
retries when a worker dies, re-admission, the image protocol, and the launch topology.

In-process tests run workers and fronts as aiohttp TestServers in one event loop; the
process tests start real `vista-tools worker` / `serve` subprocesses serving the simulated
models of tools_server/testing/sim_tools.py.
"""

import asyncio
import collections
import concurrent.futures
import hashlib
import io
import os
import signal
import socket
import threading
import time

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image, ImageDraw, ImageFont, ImageOps

from tools_server.testing import sim_tools as T
from tools_server.app import ServerConfig, create_app
from tools_server.images import ImageStore, encode_png
from tools_server.launch import LocalToolServer, LocalWorker
from tools_server.pool import LocalHttpPool, referenced_image_ids
from tools_server.worker import (WORKER, DynamicBatcher, WorkerConfig, create_worker_app,
                                 load_registry, parse_tool_options, select_tools)
from vista_jax.env.tool_client import SyncToolClient

HERE = os.path.dirname(os.path.abspath(__file__))
REGISTRY = "tools_server.testing.sim_tools:registry"
ENV = dict(os.environ)


def _batcher(tool, **kw):
    kw = {"max_batch": 8, "max_wait_s": 0.2, "max_queue": 1000, **kw}
    return DynamicBatcher(tool, executor=concurrent.futures.ThreadPoolExecutor(1), **kw).start()


def _image(seed=0, size=(40, 30)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


# --- the batcher ---------------------------------------------------------------------------


def test_batcher_runs_n_concurrent_calls_in_ceil_n_over_max_batch_batches():
    async def main():
        tool = T.SimDouble(batch_ms=20, item_ms=0)
        batcher = _batcher(tool, max_batch=8)
        deadline = asyncio.get_running_loop().time() + 10
        futures = [batcher.submit(tool.Arguments(value=i), None, deadline=deadline)
                   for i in range(20)]
        results = await asyncio.gather(*futures)
        await batcher.close()
        return tool, batcher, results

    tool, batcher, results = asyncio.run(main())
    assert [r["data"]["value"] for r in results] == [2 * i for i in range(20)]
    sizes = collections.Counter(r["data"]["batch_id"] for r in results)
    assert sorted(sizes.values()) == [4, 8, 8] and batcher.batches == 3
    assert tool.max_active == 1  # one batch at a time


def test_batcher_waits_at_most_max_wait_and_dispatches_a_full_batch_at_once():
    async def main():
        loop = asyncio.get_running_loop()
        tool = T.SimDouble(batch_ms=0, item_ms=0)
        # A lone call waits max_wait for company, then runs alone.
        batcher = _batcher(tool, max_batch=8, max_wait_s=0.15)
        t0 = time.perf_counter()
        lone = await batcher.submit(tool.Arguments(value=1), None, deadline=loop.time() + 10)
        lone_s = time.perf_counter() - t0
        # A call that arrives within the wait joins the first one's batch.
        first = batcher.submit(tool.Arguments(value=2), None, deadline=loop.time() + 10)
        await asyncio.sleep(0.05)
        second = batcher.submit(tool.Arguments(value=3), None, deadline=loop.time() + 10)
        pair = await asyncio.gather(first, second)
        await batcher.close()
        # A full batch does not wait: max_wait of 5 s, answered at once.
        batcher = _batcher(tool, max_batch=4, max_wait_s=5.0)
        t0 = time.perf_counter()
        full = await asyncio.gather(*(batcher.submit(tool.Arguments(value=i), None,
                                                     deadline=loop.time() + 10) for i in range(4)))
        full_s = time.perf_counter() - t0
        await batcher.close()
        return lone, lone_s, pair, full, full_s

    lone, lone_s, pair, full, full_s = asyncio.run(main())
    assert lone["data"]["batch_size"] == 1 and 0.14 <= lone_s < 0.6
    assert [r["data"]["batch_size"] for r in pair] == [2, 2]
    assert [r["data"]["batch_size"] for r in full] == [4] * 4 and full_s < 1.0


def test_batcher_isolates_failures_and_skips_expired_calls():
    async def main():
        loop = asyncio.get_running_loop()
        tool = T.SimDouble(batch_ms=0, item_ms=0)
        batcher = _batcher(tool, max_batch=8, max_wait_s=0.05)
        results = await asyncio.gather(*(batcher.submit(tool.Arguments(value=v), None,
                                                        deadline=loop.time() + 10)
                                         for v in (1, -1, 666, 3)))
        before = batcher.batches
        expired = await batcher.submit(tool.Arguments(value=5), None, deadline=loop.time() - 1)
        ran = batcher.batches - before
        await batcher.close()
        return results, expired, ran

    results, expired, ran = asyncio.run(main())
    assert [r["ok"] for r in results] == [True, False, False, True]
    assert results[0]["text"] == "2" and results[3]["text"] == "6"
    assert results[1]["error"]["code"] == "invalid_argument"
    assert results[2]["error"]["code"] == "execution_failed" and "poison" in results[2]["error"]["message"]
    assert expired["error"]["code"] == "timeout" and ran == 0


# --- one worker over HTTP ------------------------------------------------------------------


async def _run(client, calls, images=None, timeout_s=10.0):
    from tools_server.worker import b64encode
    payload = {"calls": [{"name": n, "arguments": a, "images": ids} for n, a, ids in calls],
               "images": {k: b64encode(v) for k, v in (images or {}).items()},
               "timeout_s": timeout_s}
    resp = await client.post("/v1/run", json=payload)
    return resp.status, await resp.json(), resp.headers


def _worker_app(**kw):
    options = kw.pop("options", {})
    return create_worker_app(WorkerConfig(**kw), select_tools(T.registry(options)))


def test_worker_batches_concurrent_requests_and_reports_metrics():
    async def main():
        app = _worker_app(max_batch=8, max_wait_ms=100, options={"sim_double": {"batch_ms": 30}})
        async with TestClient(TestServer(app)) as client:
            while (await client.get("/readyz")).status != 200:
                await asyncio.sleep(0.01)
            replies = await asyncio.gather(*(_run(client, [("sim_double", {"value": i}, [])])
                                             for i in range(16)))
            metrics = await (await client.get("/metrics")).text()
            health = await (await client.get("/healthz")).json()
        return replies, metrics, health

    replies, metrics, health = asyncio.run(main())
    assert all(status == 200 for status, _, _ in replies)
    results = [body["results"][0] for _, body, _ in replies]
    assert [r["text"] for r in results] == [str(2 * i) for i in range(16)]
    batches = collections.Counter(r["data"]["batch_id"] for r in results)
    assert len(batches) <= 4 and max(batches.values()) > 1
    assert 'vista_worker_batch_size_count{tool="sim_double"}' in metrics
    assert 'vista_worker_queue_depth{tool="sim_double"} 0.0' in metrics
    assert health["status"] == "ok" and health["state"] == "ready"


def test_worker_serves_only_model_backed_tools_by_default():
    tools = select_tools(T.registry())
    assert tools.names == ["sim_double", "sim_image_stats", "sim_invert"]
    assert select_tools(T.registry(), ["whoami"]).names == ["whoami"]
    with pytest.raises(ValueError, match="unknown tool"):
        select_tools(T.registry(), ["nope"])
    assert parse_tool_options(["sim_double.batch_ms=5", "sim_invert.item_ms=0.5", "a.b=hf"]) == {
        "sim_double": {"batch_ms": 5}, "sim_invert": {"item_ms": 0.5}, "a": {"b": "hf"}}
    with pytest.raises(ValueError, match="TOOL.OPTION=VALUE"):
        parse_tool_options(["batch_ms=5"])
    assert load_registry(REGISTRY, {"sim_double": {"batch_ms": 7}}).get("sim_double").batch_ms == 7
    with pytest.raises(ValueError, match="module:function"):
        load_registry("tools_server.testing.sim_tools")


def test_readyz_waits_for_the_models_and_reports_a_failed_load():
    async def probe(options):
        app = create_worker_app(WorkerConfig(), load=lambda: select_tools(T.registry(options)))
        async with TestClient(TestServer(app)) as client:
            health = (await client.get("/healthz")).status
            early = await client.get("/readyz")
            early = early.status, (await early.json())["reason"]
            run = (await _run(client, [("sim_double", {"value": 1}, [])]))[:2]
            while app[WORKER].state == "loading":
                await asyncio.sleep(0.01)
            late = await client.get("/readyz")
            return health, early, run, (late.status, await late.json())

    health, early, run, late = asyncio.run(probe({"sim_double": {"load_ms": 300}}))
    assert health == 200 and early == (503, "loading")
    assert run[0] == 503 and run[1]["error"]["code"] == "loading"
    assert late[0] == 200 and late[1]["reason"] == "ready"
    _, _, _, late = asyncio.run(probe({"sim_invert": {"load_error": "no weights at /x"}}))
    assert late[0] == 503 and late[1]["reason"] == "failed"
    assert "no weights at /x" in late[1]["error"]


def test_full_queue_answers_503_at_once():
    async def main():
        app = _worker_app(max_batch=1, max_wait_ms=0, max_queue=2,
                          options={"sim_double": {"batch_ms": 400}})
        async with TestClient(TestServer(app)) as client:
            while (await client.get("/readyz")).status != 200:
                await asyncio.sleep(0.01)

            async def timed(i):
                t0 = time.perf_counter()
                status, body, headers = await _run(client, [("sim_double", {"value": i}, [])])
                return status, body, headers, time.perf_counter() - t0

            tasks = [asyncio.create_task(timed(i)) for i in range(8)]
            await asyncio.sleep(0.15)
            ready = await client.get("/readyz")
            ready = ready.status, await ready.json()
            replies = await asyncio.gather(*tasks)
            after = (await client.get("/readyz")).status
        return replies, ready, after

    replies, ready, after = asyncio.run(main())
    rejected = [r for r in replies if r[0] == 503]
    accepted = [r for r in replies if r[0] == 200]
    assert 2 <= len(accepted) <= 3 and len(rejected) == 8 - len(accepted)
    for _, body, headers, seconds in rejected:
        assert body["error"]["code"] == "overloaded" and headers["Retry-After"] == "1"
        assert seconds < 0.35  # refused at once, not after the queue's 400 ms batches
    assert all(r[1]["results"][0]["ok"] for r in accepted)
    assert ready == (503, ready[1]) and ready[1]["reason"] == "overloaded"
    assert after == 200


def test_worker_refuses_an_inlined_image_whose_bytes_do_not_match_its_id():
    async def main():
        async with TestClient(TestServer(_worker_app())) as client:
            while (await client.get("/readyz")).status != 200:
                await asyncio.sleep(0.01)
            png = encode_png(_image())
            return await _run(client, [("sim_image_stats", {"image": "a" * 64}, ["a" * 64])],
                              images={"a" * 64: png})

    status, body, _ = asyncio.run(main())
    assert status == 400 and "hash to" in body["error"]["message"]


# --- fronts with in-process workers -------------------------------------------------------


class _Cluster:
    """A front and `n` workers, all TestServers in this loop."""

    def __init__(self, n=2, pool_kw=None, **worker_kw):
        self.n, self.pool_kw, self.worker_kw = n, pool_kw or {}, worker_kw

    async def __aenter__(self):
        self.worker_apps = [_worker_app(**self.worker_kw) for _ in range(self.n)]
        self.worker_servers = [TestServer(app) for app in self.worker_apps]
        for server in self.worker_servers:
            await server.start_server()
        urls = [str(s.make_url("")).rstrip("/") for s in self.worker_servers]
        self.pool = LocalHttpPool(urls, **{"health_interval_s": 0.1, **self.pool_kw})
        self.front = TestClient(TestServer(create_app(ServerConfig(), T.registry(), self.pool)))
        await self.front.start_server()
        # Ready workers, and a pool that knows it (its first probe may have seen them loading).
        while not (all(app[WORKER].readiness()[0] for app in self.worker_apps)
                   and all(w["healthy"] for w in self.pool.status())):
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc):
        await self.front.close()
        for server in self.worker_servers:
            await server.close()

    async def call(self, name, arguments):
        resp = await self.front.post("/v1/call", json={"name": name, "arguments": arguments})
        return await resp.json()

    async def upload(self, image):
        resp = await self.front.post("/v1/images", data=encode_png(image))
        return (await resp.json())["image_id"]


def test_least_outstanding_routing_spreads_calls_over_two_workers():
    async def main():
        async with _Cluster(2, max_batch=1, options={"sim_double": {"batch_ms": 80}}) as c:
            results = await asyncio.gather(*(c.call("sim_double", {"value": i}) for i in range(8)))
            light = await c.call("whoami", {})
            health = await (await c.front.get("/healthz")).json()
        return results, light, health

    results, light, health = asyncio.run(main())
    assert [r["text"] for r in results] == [str(2 * i) for i in range(8)]
    per_worker = collections.Counter(r["data"]["instance"] for r in results)
    assert sorted(per_worker.values()) == [4, 4]
    assert light["data"]["pid"] == os.getpid()  # light tools stay in the front
    assert [w["healthy"] for w in health["workers"]] == [True, True]


def test_pick_prefers_fewest_outstanding_and_rotates_ties():
    pool = LocalHttpPool(["http://a", "http://b", "http://c"])
    a, b, c = pool.workers
    a.outstanding, b.outstanding, c.outstanding = 2, 0, 1
    assert pool._pick(set()) is b
    assert pool._pick({b}) is c
    b.healthy = False
    assert pool._pick(set()) is c
    a.outstanding = b.outstanding = c.outstanding = 0
    b.healthy = True
    assert {pool._pick(set()).url for _ in range(3)} == {"http://a", "http://b", "http://c"}


def test_model_backed_tools_run_in_process_without_workers():
    async def main():
        app = create_app(ServerConfig(), T.registry())
        async with TestClient(TestServer(app)) as client:
            resp = await client.post("/v1/call", json={"name": "sim_double", "arguments": {"value": 4}})
            body = await resp.json()
            health = await (await client.get("/healthz")).json()
        return body, health

    body, health = asyncio.run(main())
    assert body["text"] == "8" and body["data"]["pid"] == os.getpid()
    assert "workers" not in health


def test_images_round_trip_through_a_worker_with_the_cache_protocol():
    async def main():
        async with _Cluster(1, options={"sim_invert": {"batch_ms": 0},
                                        "sim_image_stats": {"batch_ms": 0}}) as c:
            worker = c.worker_apps[0][WORKER]
            image = _image(1)
            image_id = await c.upload(image)
            stats = await c.call("sim_image_stats", {"image": image_id})
            inverted = await c.call("sim_invert", {"image": image_id})
            png = await (await c.front.get(f"/v1/images/{inverted['images'][0]}")).read()
            received_after_two = worker.metrics.images_received._value.get()
            # The worker restarted (empty cache): it answers 409, the front resends the image.
            worker.store = ImageStore()
            again = await c.call("sim_image_stats", {"image": image_id})
            missing = worker.metrics.rejected.labels(reason="images_missing")._value.get()
            # A produced image is usable in the next call (the front holds it now).
            back = await c.call("sim_invert", {"image": inverted["images"][0]})
            unknown = await c.call("sim_image_stats", {"image": "f" * 64})
        return image, stats, inverted, png, received_after_two, again, missing, back, unknown

    image, stats, inverted, png, received, again, missing, back, unknown = asyncio.run(main())
    mean = np.asarray(image, dtype=np.float64).mean(axis=(0, 1)).round(3).tolist()
    assert stats["ok"] and stats["data"]["size"] == [40, 30] and stats["data"]["mean"] == mean
    assert inverted["images"][0] == hashlib.sha256(png).hexdigest()
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))),
                          np.asarray(ImageOps.invert(image)))
    assert received == 1  # the second call used the worker's cached copy
    assert again["ok"] and again["text"] == stats["text"] and missing == 1
    assert back["ok"]
    restored = back["images"][0]
    assert restored == hashlib.sha256(encode_png(image)).hexdigest()
    assert unknown["error"]["code"] == "image_not_found" and "'image'" in unknown["error"]["message"]


def test_bad_arguments_are_answered_by_the_front_and_never_reach_a_worker():
    async def main():
        async with _Cluster(1) as c:
            bad = await c.call("sim_double", {"value": "seven"})
            extra = await c.call("sim_double", {"value": 1, "nope": 2})
            return bad, extra, c.worker_apps[0][WORKER].batchers["sim_double"].batches

    bad, extra, batches = asyncio.run(main())
    assert bad["error"]["code"] == "invalid_argument" and "'value'" in bad["error"]["message"]
    assert extra["error"]["code"] == "unknown_argument"
    assert batches == 0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_available_worker_is_overloaded_at_once():
    async def main():
        pool = LocalHttpPool([f"http://127.0.0.1:{_closed_port()}"], health_interval_s=0.1)
        app = create_app(ServerConfig(), T.registry(), pool)
        async with TestClient(TestServer(app)) as client:
            t0 = time.perf_counter()
            resp = await client.post("/v1/call", json={"name": "sim_double", "arguments": {"value": 1}})
            seconds = time.perf_counter() - t0
            body = await resp.json()
            health = await (await client.get("/healthz")).json()
        return resp.status, resp.headers, body, seconds, health

    status, headers, body, seconds, health = asyncio.run(main())
    assert status == 429 and headers["Retry-After"] == "1" and seconds < 1.0
    assert body["error"]["code"] == "overloaded" and "no tool worker is available" in body["error"]["message"]
    assert health["status"] == "ok" and health["workers"][0]["healthy"] is False
    assert health["workers"][0]["error"]


def test_busy_workers_move_calls_on_and_then_answer_overloaded():
    async def main():
        async with _Cluster(2, max_batch=1, max_queue=1, max_wait_ms=0,
                            options={"sim_double": {"batch_ms": 300}}) as c:
            results = await asyncio.gather(*(c.call("sim_double", {"value": i}) for i in range(6)))
            health = await (await c.front.get("/healthz")).json()
        return results, health

    results, health = asyncio.run(main())
    codes = collections.Counter("ok" if r["ok"] else r["error"]["code"] for r in results)
    # 2 workers hold at most 2 calls each (1 running + 1 queued); the rest are refused.
    assert 2 <= codes["ok"] <= 4 and codes["ok"] + codes["overloaded"] == 6
    assert all(w["healthy"] for w in health["workers"])  # load is not failure


@pytest.mark.parametrize("num_workers,url,needle", [
    (-1, "", "integer ≥ 0"), (2, "http://tools:8765", "external")])
def test_config_validates_tools_num_workers(num_workers, url, needle):
    import importlib.util

    from vista_jax import config as config_lib

    path = os.path.join(HERE, "..", "..", "configs", "tiny_cpu.py")
    spec = importlib.util.spec_from_file_location("tiny_cpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config_lib.validate(config)
    config.tools.url = url
    config.tools.num_workers = num_workers
    with pytest.raises(config_lib.ConfigError, match=rf"tools\.num_workers.*{needle}"):
        config_lib.validate(config)


def test_referenced_image_ids():
    a, b = "a" * 64, "b" * 64
    assert referenced_image_ids({"image": a, "more": [b, {"x": a}], "n": 3, "s": "A" * 64}) == [a, b]


# --- real processes ------------------------------------------------------------------------


def _pool_events(url) -> collections.Counter:
    """The front's vista_pool_events counters by (worker, event)."""
    from prometheus_client.parser import text_string_to_metric_families
    from tools_server.launch import _NO_PROXY

    with _NO_PROXY.open(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    events = collections.Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vista_pool_events_total":
                events[(sample.labels["worker"], sample.labels["event"])] += int(sample.value)
    return events


def test_killed_worker_loses_no_call_and_its_restart_is_readmitted():
    server = LocalToolServer(num_workers=2, registry=REGISTRY, env=ENV,
                             tool_options=["sim_double.batch_ms=150", "sim_double.item_ms=2"],
                             worker_args=["--max-batch", "8", "--max-wait-ms", "20"])
    with server, SyncToolClient(server.url, timeout_s=30) as client:
        victim = server.workers.workers[0]
        old_pid = victim.pid
        n = 96
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            future = ex.submit(client.batch, [("sim_double", {"value": i}) for i in range(n)])
            time.sleep(0.3)  # the first batches are running on both workers
            os.kill(old_pid, signal.SIGKILL)
            results = future.result(timeout=60)
        assert [r.get("text") for r in results] == [str(2 * i) for i in range(n)]
        pids = collections.Counter(r["data"]["pid"] for r in results)
        survivor = server.workers.workers[1].pid
        assert pids[survivor] >= n // 2  # the survivor took over the killed worker's calls
        events = _pool_events(server.url)
        assert events[(victim.url, "failed")] >= 1  # calls in flight on it were retried
        assert events[(victim.url, "ejections")] == 1

        deadline = time.monotonic() + 30
        while True:  # the supervisor restarts it on its port; the front re-admits it
            health = client.health()
            if (victim.pid != old_pid and health.get("workers")
                    and all(w["healthy"] for w in health["workers"])):
                break
            assert time.monotonic() < deadline, health
            time.sleep(0.1)
        assert victim.url in {w["url"] for w in health["workers"]}
        results = client.batch([("sim_double", {"value": i}) for i in range(32)])
        assert all(r["ok"] for r in results)
        assert {r["data"]["pid"] for r in results} == {victim.pid, survivor}
        image = _image(3)
        inverted = client.call("sim_invert", {"image": client.upload_image(image)})
        assert np.array_equal(np.asarray(client.get_image(inverted["images"][0])),
                              np.asarray(ImageOps.invert(image)))
    assert not victim.running


def test_default_model_backed_tools_run_on_a_local_worker():
    from tools_server.tools import default_registry
    from vista_jax.env.tasks.render import render_bar_chart

    chart = render_bar_chart(["Red", "Blue", "Green", "Gold"], [12, 88, 0, 45], seed=5)
    text = Image.new("RGB", (200, 48), "white")
    ImageDraw.Draw(text).text((10, 12), "Total 4520", fill="black",
                              font=ImageFont.load_default(size=20))
    with LocalWorker() as worker:  # every model-backed tool of the package
        url = worker.url

        async def main():
            pool = LocalHttpPool([url])
            app = create_app(ServerConfig(), default_registry(), pool)
            async with TestClient(TestServer(app)) as client:
                resp = await client.post("/v1/images", data=encode_png(chart))
                image_id = (await resp.json())["image_id"]
                resp = await client.post("/v1/images", data=encode_png(text))
                text_id = (await resp.json())["image_id"]
                resp = await client.post("/v1/batch", json={"calls": [
                    {"name": "ocr", "arguments": {"image": text_id}},
                    {"name": "chart_to_table", "arguments": {"image": image_id}},
                    {"name": "crop", "arguments": {"image": image_id, "box": [0, 0, 999, 10]}}]})
                results = (await resp.json())["results"]
                return results, pool.status(), await (await client.get("/metrics")).text()

        (ocr, table, crop), status, metrics = asyncio.run(main())
    assert [line["text"] for line in ocr["data"]["lines"]] == ["Total 4520"]
    # The classical chart reader is not model-backed: it runs in the front.
    assert table["text"] == "Red | 12\nBlue | 88\nGreen | 0\nGold | 45"
    assert crop["error"]["code"] == "invalid_argument"  # light tools run (and fail) in the front
    assert status[0]["healthy"]
    assert f'vista_pool_events_total{{event="ok",worker="{url}"}} 1.0' in metrics


def test_worker_drains_on_sigterm():
    worker = LocalWorker(registry=REGISTRY, env=ENV, tool_options=["sim_double.batch_ms=250"],
                         extra_args=["--max-batch", "2", "--max-wait-ms", "0"])
    with worker:
        async def main():
            async with aiohttp.ClientSession(base_url=worker.url) as session:
                async def call(i):
                    async with session.post("/v1/run", json={
                            "calls": [{"name": "sim_double", "arguments": {"value": i}}]}) as r:
                        return r.status, await r.json()

                tasks = [asyncio.create_task(call(i)) for i in range(6)]
                await asyncio.sleep(0.15)
                os.kill(worker.pid, signal.SIGTERM)
                await asyncio.sleep(0.1)
                late = await call(99)
                return await asyncio.gather(*tasks), late

        replies, late = asyncio.run(main())
        code = worker._proc.wait(10)
    assert [body["results"][0]["text"] for _, body in replies] == [str(2 * i) for i in range(6)]
    assert late[0] == 503 and late[1]["error"]["code"] == "draining"
    assert code == 0


# --- large payloads and auth ---------------------------------------------------------------


def test_offload_if_large_runs_small_work_inline_and_large_work_in_a_thread():
    from tools_server.worker import OFFLOAD_BYTES, offload_if_large

    def where(fail=False):
        if fail:
            raise ValueError("boom")
        return threading.current_thread() is threading.main_thread()

    async def main():
        small = await offload_if_large(OFFLOAD_BYTES, where)
        large = await offload_if_large(OFFLOAD_BYTES + 1, where)
        with pytest.raises(ValueError, match="boom"):
            await offload_if_large(OFFLOAD_BYTES + 1, where, True)
        return small, large

    assert asyncio.run(main()) == (True, False)


def test_large_images_are_serialised_off_the_event_loop_with_the_same_results(monkeypatch):
    import tools_server.pool as pool_mod
    import tools_server.worker as worker_mod

    seen = []  # (function, ran on the event loop's thread)
    for module, fn in ((pool_mod, "_encode_request"), (pool_mod, "_decode_response"),
                       (worker_mod, "decode_run_body"), (worker_mod, "encode_run_response")):
        def spy(*args, _real=getattr(module, fn), _name=fn):
            seen.append((_name, threading.current_thread() is threading.main_thread()))
            return _real(*args)
        monkeypatch.setattr(module, fn, spy)

    async def main():
        out = []
        async with _Cluster(1, options={"sim_invert": {"batch_ms": 0}}) as c:
            for image in (_image(3), _image(4, size=(200, 200))):  # ~3.6 KB and ~120 KB PNGs
                seen.clear()
                image_id = await c.upload(image)
                inverted = await c.call("sim_invert", {"image": image_id})
                png = await (await c.front.get(f"/v1/images/{inverted['images'][0]}")).read()
                out.append((image, len(encode_png(image)), inverted, png, list(seen)))
        return out

    results = asyncio.run(main())
    assert results[0][1] < 64 * 1024 < results[1][1]
    for image, size, inverted, png, calls in results:
        assert inverted["ok"] and inverted["images"][0] == hashlib.sha256(png).hexdigest()
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))),
                              np.asarray(ImageOps.invert(image)))
        assert sorted(name for name, _ in calls) == ["_decode_response", "_encode_request",
                                                     "decode_run_body", "encode_run_response"]
        on_loop = {on for _, on in calls}
        assert on_loop == ({True} if size < 64 * 1024 else {False}), (size, calls)


def test_worker_bearer_token_guards_every_route_but_healthz():
    async def main():
        app = _worker_app(auth_token="w0rker")
        async with TestClient(TestServer(app)) as client:
            health = (await client.get("/healthz")).status
            payload = {"calls": [{"name": "sim_double", "arguments": {"value": 2}, "images": []}]}
            denied = await client.post("/v1/run", json=payload)
            wrong = await client.get("/readyz", headers={"Authorization": "Bearer nope"})
            good = {"Authorization": "Bearer w0rker"}
            while (await client.get("/readyz", headers=good)).status != 200:
                await asyncio.sleep(0.01)
            ok = await client.post("/v1/run", json=payload, headers=good)
            return (health, denied.status, denied.headers["WWW-Authenticate"],
                    (await denied.json())["error"]["code"], wrong.status,
                    (await ok.json())["results"][0]["text"])

    assert asyncio.run(main()) == (200, 401, 'Bearer realm="vista-tools-worker"',
                                   "unauthorized", 401, "4")
