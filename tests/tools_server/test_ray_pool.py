"""RayPool on a small local Ray instance: batching inside the actors, images, and a killed actor.

Starting Ray takes most of this test's time; it is skipped without the [ray] extra.
"""

import asyncio
import collections

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image, ImageOps

ray = pytest.importorskip("ray")

from tools_server.testing import sim_tools as T  # noqa: E402
from tools_server.app import ServerConfig, create_app  # noqa: E402
from tools_server.images import encode_png  # noqa: E402
from tools_server.ray_pool import RayPool  # noqa: E402


def test_ray_pool_batches_round_trips_images_and_survives_a_killed_actor():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        asyncio.run(_scenario())
    finally:
        ray.shutdown()


async def _scenario():
    pool = RayPool(2, num_cpus=0.5, registry="tools_server.testing.sim_tools:registry",
                   tool_options={"sim_double": {"batch_ms": 100}, "sim_invert": {"batch_ms": 0}},
                   max_batch=8, max_wait_ms=20, health_interval_s=0.2)
    app = create_app(ServerConfig(call_timeout_s=30), T.registry(), pool)
    async with TestClient(TestServer(app)) as client:
        async def call(name, arguments):
            resp = await client.post("/v1/call", json={"name": name, "arguments": arguments})
            return await resp.json()

        results = await asyncio.gather(*(call("sim_double", {"value": i}) for i in range(32)))
        assert [r["text"] for r in results] == [str(2 * i) for i in range(32)]
        assert len({r["data"]["pid"] for r in results}) == 2  # both actors served
        assert max(r["data"]["batch_size"] for r in results) > 1  # and batched

        rng = np.random.default_rng(0)
        image = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
        resp = await client.post("/v1/images", data=encode_png(image))
        inverted = await call("sim_invert", {"image": (await resp.json())["image_id"]})
        png = await (await client.get(f"/v1/images/{inverted['images'][0]}")).read()
        assert np.array_equal(np.asarray(Image.open(__import__("io").BytesIO(png))),
                              np.asarray(ImageOps.invert(image)))

        # Kill one actor while calls run on both: every call still gets its answer.
        victim = pool.workers[0]
        tasks = [asyncio.create_task(call("sim_double", {"value": i})) for i in range(32)]
        await asyncio.sleep(0.15)
        ray.kill(victim.handle, no_restart=False)  # Ray restarts it
        results = await asyncio.gather(*tasks)
        assert [r.get("text") for r in results] == [str(2 * i) for i in range(32)], results
        metrics = await (await client.get("/metrics")).text()
        assert 'vista_pool_events_total{event="failed",worker="ray-actor-0"}' in metrics  # retried
        for _ in range(300):  # re-admitted once the restarted actor answers ready()
            if all(w["healthy"] for w in pool.status()):
                break
            await asyncio.sleep(0.1)
        assert all(w["healthy"] for w in pool.status()), pool.status()
        results = await asyncio.gather(*(call("sim_double", {"value": i}) for i in range(16)))
        assert all(r["ok"] for r in results)
        counts = collections.Counter(r["data"]["instance"] for r in results)
        assert len(counts) == 2
