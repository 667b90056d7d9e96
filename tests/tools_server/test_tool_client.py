"""ToolClient / SyncToolClient: results per contract, no exceptions for transport trouble."""

import asyncio
import socket
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image

from tools_server.app import ServerConfig, create_app
from vista_jax.env.tasks.render import render_bar_chart
from vista_jax.env.tool_client import SyncToolClient, ToolClient, ToolClientError


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


def with_server(app_factory, fn):
    async def main():
        server = TestServer(app_factory())
        await server.start_server()
        try:
            return await fn(str(server.make_url("")).rstrip("/"))
        finally:
            await server.close()

    return asyncio.run(main())


def test_async_client_against_the_real_app():
    async def fn(url):
        async with ToolClient(url) as client:
            tools = await client.list_tools()
            assert "chart_to_table" in {t["function"]["name"] for t in tools}
            image_id = await client.upload_image(render_bar_chart(["Aa", "Bb", "Cc"], [4, 8, 15], seed=2))
            assert len(image_id) == 64
            result = await client.call("chart_to_table", {"image": image_id})
            assert result["data"] == {"labels": ["Aa", "Bb", "Cc"], "values": [4, 8, 15]}
            results = await client.batch([("calculator", {"expression": "4+8"}), ("nope", {}),
                                          ("crop", {"image": image_id, "box": [0, 0, 100, 50]})])
            assert [r["ok"] for r in results] == [True, False, True]
            crop = await client.get_image(results[2]["images"][0])
            assert crop.size == (100, 50)
            assert await client.batch([]) == []
            bad = await client.call("calculator", {"expression": object()})
            assert bad["ok"] is False
            with pytest.raises(ToolClientError) as info:
                await client.upload_image(b"not an image")
            assert info.value.code == "invalid_image" and info.value.status == 400
            with pytest.raises(ToolClientError) as info:
                await client.get_image("0" * 64)
            assert info.value.code == "image_not_found"

    with_server(create_app, fn)


def test_dead_url_gives_transport_error_results_not_exceptions():
    async def fn():
        async with ToolClient(_dead_url(), max_retries=1, backoff_s=0.01) as client:
            result = await client.call("calculator", {"expression": "1"})
            assert result["ok"] is False and result["error"]["code"] == "transport_error"
            results = await client.batch([("calculator", {"expression": "1"})] * 3)
            assert [r["error"]["code"] for r in results] == ["transport_error"] * 3
            with pytest.raises(ToolClientError):
                await client.upload_image(Image.new("RGB", (4, 4)))
            with pytest.raises(ToolClientError):
                await client.list_tools()

    asyncio.run(fn())


def _fake_app(responses, seen):
    """An app answering /v1/call and /v1/batch from a script of (status, body, headers)."""

    async def handler(request):
        seen.append(await request.json())
        status, body, headers, delay = responses.pop(0)
        await asyncio.sleep(delay)
        return web.json_response(body, status=status, headers=headers)

    app = web.Application()
    app.router.add_post("/v1/call", handler)
    app.router.add_post("/v1/batch", handler)
    return app


OK = {"ok": True, "text": "1", "images": [], "data": {}}
OVERLOADED = {"ok": False, "error": {"code": "overloaded", "message": "busy"}}


def test_retries_honour_retry_after_on_429_and_503():
    seen = []
    script = [(429, OVERLOADED, {"Retry-After": "0.2"}, 0), (503, {"error": {"code": "x"}}, {}, 0), (200, OK, {}, 0)]

    async def fn(url):
        async with ToolClient(url, max_retries=2, backoff_s=0.01) as client:
            start = time.perf_counter()
            assert await client.call("t", {}) == OK
            assert time.perf_counter() - start >= 0.2
        assert len(seen) == 3

    with_server(lambda: _fake_app(script, seen), fn)


def test_overloaded_after_all_retries_is_returned_as_the_result():
    seen = []
    script = [(429, OVERLOADED, {"Retry-After": "0"}, 0)] * 3

    async def fn(url):
        async with ToolClient(url, max_retries=2) as client:
            assert await client.call("t", {}) == OVERLOADED
        assert len(seen) == 3

    with_server(lambda: _fake_app(list(script), seen), fn)


def test_batch_resends_only_overloaded_items():
    seen = []
    script = [(200, {"results": [OK, OVERLOADED, OK]}, {"Retry-After": "0"}, 0),
              (200, {"results": [{"ok": True, "text": "2", "images": [], "data": {}}]}, {}, 0)]

    async def fn(url):
        async with ToolClient(url) as client:
            results = await client.batch([("a", {}), ("b", {}), ("c", {})])
        assert [r["text"] for r in results] == ["1", "2", "1"]
        assert [c["name"] for c in seen[1]["calls"]] == ["b"]

    with_server(lambda: _fake_app(script, seen), fn)


def test_client_timeout_is_a_timeout_result():
    seen = []
    script = [(200, OK, {}, 1.0)]

    async def fn(url):
        async with ToolClient(url, timeout_s=0.2, max_retries=0) as client:
            result = await client.call("t", {})
        assert result["ok"] is False and result["error"]["code"] == "timeout"

    with_server(lambda: _fake_app(script, seen), fn)


def test_server_5xx_after_retries_is_transport_error():
    seen = []
    script = [(500, {"error": {"code": "internal_error", "message": "x"}}, {}, 0)] * 2

    async def fn(url):
        async with ToolClient(url, max_retries=1, backoff_s=0.01) as client:
            results = await client.batch([("t", {})])
        assert results[0]["ok"] is False and len(seen) == 2

    with_server(lambda: _fake_app(script, seen), fn)


def test_sync_client_works_inside_a_running_event_loop():
    # SyncToolClient runs its own loop in a thread, so even a caller inside a loop (Jupyter) can block on it.
    config = ServerConfig()

    async def fn(url):
        def blocking():
            with SyncToolClient(url) as client:
                return client.call("calculator", {"expression": "6*7"})

        return await asyncio.to_thread(blocking)

    assert with_server(lambda: create_app(config), fn)["text"] == "42"

    async def inside_loop():
        client = SyncToolClient(_dead_url(), max_retries=0)
        try:
            return client.call("calculator", {"expression": "1"})
        finally:
            client.close()

    assert asyncio.run(inside_loop())["error"]["code"] == "transport_error"
    client = SyncToolClient(_dead_url())
    client.close()
    with pytest.raises(RuntimeError):
        client.call("calculator", {"expression": "1"})
