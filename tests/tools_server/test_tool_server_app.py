"""The HTTP contract of tools_server.app, in-process (aiohttp TestServer, plain asyncio.run)."""

import asyncio
import hashlib
import io
import struct
import threading
import time
import zlib

import jsonschema
import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from tools_server import registry as reg
from tools_server.app import SERVICE, ServerConfig, create_app
from tools_server.images import ImageStore, InvalidImage
from tools_server.pool import WorkerPool
from tools_server.registry import Tool, ToolArguments, ToolOutput, ToolRegistry
from tools_server.tools import ALL_TOOLS
from vista_jax.env.tasks.render import render_bar_chart, render_points_diagram


class Sleepy(Tool):
    """Sleeps (test tool)."""

    name = "sleepy"
    family = "math"

    class Arguments(ToolArguments):
        seconds: float

    def run(self, args, ctx):
        time.sleep(args.seconds)
        return ToolOutput(f"slept {args.seconds}")


class Broken(Tool):
    """Raises (test tool)."""

    name = "broken"
    family = "math"

    class Arguments(ToolArguments):
        pass

    def run(self, args, ctx):
        raise RuntimeError("boom")


def _tools(extra=()):
    return ToolRegistry([cls() for cls in ALL_TOOLS] + [cls() for cls in extra])


def serve(fn, config=None, extra_tools=()):
    """Runs `await fn(client)` against a fresh app; returns its result."""

    async def main():
        app = create_app(config or ServerConfig(), _tools(extra_tools))
        async with TestClient(TestServer(app)) as client:
            return await fn(client)

    return asyncio.run(main())


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


async def upload(client, image) -> str:
    resp = await client.post("/v1/images", data=png(image), headers={"Content-Type": "image/png"})
    assert resp.status == 200, await resp.text()
    return (await resp.json())["image_id"]


async def call(client, name, arguments):
    resp = await client.post("/v1/call", json={"name": name, "arguments": arguments})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def healthy(client) -> bool:
    resp = await client.get("/healthz")
    return resp.status == 200 and (await resp.json())["status"] == "ok"


def _bad_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height, with almost no pixel data."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def test_healthz_and_tool_list_shape():
    async def fn(client):
        resp = await client.get("/healthz")
        assert await resp.json() == {"status": "ok", "tools": len(ALL_TOOLS)}
        body = await (await client.get("/v1/tools")).json()
        names = [t["function"]["name"] for t in body["tools"]]
        assert {"crop", "chart_to_table", "detect_points", "measure_length", "calculator"} <= set(names)
        for entry in body["tools"]:
            assert entry["type"] == "function" and entry["family"] in reg.FAMILIES
            fn_ = entry["function"]
            assert set(fn_) == {"name", "description", "parameters"} and fn_["description"]
            params = fn_["parameters"]
            jsonschema.Draft202012Validator.check_schema(params)
            assert params["type"] == "object" and params["additionalProperties"] is False
            assert "title" not in params
        crop = next(t for t in body["tools"] if t["function"]["name"] == "crop")["function"]["parameters"]
        assert crop["required"] == ["image", "box"]
        assert crop["properties"]["box"]["minItems"] == crop["properties"]["box"]["maxItems"] == 4
        charts = await (await client.get("/v1/tools?family=chart")).json()
        assert [t["function"]["name"] for t in charts["tools"]] == [
            "chart_to_table", "bar_values", "chart_type", "read_axes", "read_legend", "line_points"]
        by_family = {f: [t["function"]["name"] for t in body["tools"] if t["family"] == f]
                     for f in reg.FAMILIES}
        assert by_family == {  # the paper's 26 tools in four families
            "perception": ["crop", "zoom", "rotate", "enhance", "ocr", "detect_objects",
                           "count_objects", "dominant_colors"],
            "chart": ["chart_to_table", "bar_values", "chart_type", "read_axes", "read_legend",
                      "line_points"],
            "diagram": ["detect_points", "measure_length", "detect_lines", "detect_circles",
                        "diagram_to_formal", "measure_angle"],
            "math": ["calculator", "statistics", "solve_equation", "simplify", "geometry_solver",
                     "python"]}
        calc = await (await client.get("/v1/tools?name=calculator,crop")).json()
        assert {t["function"]["name"] for t in calc["tools"]} == {"calculator", "crop"}

    serve(fn)


def test_schema_validates_the_calls_the_server_accepts():
    tools = {t.name: t for t in _tools()}
    schema = tools["crop"].parameters_schema()
    jsonschema.validate({"image": "a" * 64, "box": [0, 0, 1, 1]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"image": "a", "box": [0, 0, 1]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"image": "a", "box": [0, 0, 1, 1], "zoom": 2}, schema)


def test_upload_crop_get_image_round_trip():
    async def fn(client):
        image = Image.new("RGB", (64, 48), (10, 200, 30))
        data = png(image)
        resp = await client.post("/v1/images", data=data, headers={"Content-Type": "image/png"})
        body = await resp.json()
        assert body == {"image_id": hashlib.sha256(data).hexdigest(), "width": 64, "height": 48}
        result = await call(client, "crop", {"image": body["image_id"], "box": [8, 4, 40, 36]})
        assert result["ok"], result
        (crop_id,) = result["images"]
        assert result["text"] == f"cropped image {crop_id[:8]} (32 x 32)"
        resp = await client.get(f"/v1/images/{crop_id}")
        assert resp.status == 200 and resp.content_type == "image/png"
        crop = Image.open(io.BytesIO(await resp.read()))
        assert crop.size == (32, 32) and crop.getpixel((0, 0)) == (10, 200, 30)
        # JPEG uploads are stored (and served) as PNG.
        buf = io.BytesIO()
        image.save(buf, format="JPEG")
        resp = await client.post("/v1/images", data=buf.getvalue(), headers={"Content-Type": "image/jpeg"})
        jpeg_id = (await resp.json())["image_id"]
        served = await (await client.get(f"/v1/images/{jpeg_id}")).read()
        assert served.startswith(b"\x89PNG") and hashlib.sha256(served).hexdigest() == jpeg_id
        zoom = await call(client, "zoom", {"image": body["image_id"], "box": [0, 0, 20, 10], "factor": 3})
        assert zoom["ok"] and zoom["data"]["width"] == 60 and zoom["data"]["height"] == 30
        # Qwen-VL needs 28 px a side: a small box's factor is raised until the short side fits.
        zoom = await call(client, "zoom", {"image": body["image_id"], "box": [0, 0, 10, 5], "factor": 3})
        assert zoom["ok"] and zoom["data"]["factor"] == 6 and zoom["data"]["height"] == 30

    serve(fn)


def test_each_tool_known_answer_over_http():
    async def fn(client):
        chart = await upload(client, render_bar_chart(["Apple", "Pear", "Fig"], [47, 0, 100], seed=1))
        result = await call(client, "chart_to_table", {"image": chart})
        assert result == {"ok": True, "text": "Apple | 47\nPear | 0\nFig | 100", "images": [],
                          "data": {"labels": ["Apple", "Pear", "Fig"], "values": [47, 0, 100]}}
        diagram = await upload(client, render_points_diagram(
            {"A": (60, 200), "B": (220, 200), "C": (220, 80)}, [("A", "B"), ("B", "C"), ("C", "A")]))
        result = await call(client, "detect_points", {"image": diagram})
        assert result["text"] == "A (60, 200)\nB (220, 200)\nC (220, 80)"
        result = await call(client, "measure_length", {"image": diagram, "point_a": "A", "point_b": "C"})
        assert result["ok"] and result["data"]["length"] == 200.0
        result = await call(client, "calculator", {"expression": "41 - 23"})
        assert result == {"ok": True, "text": "18", "images": [], "data": {"value": 18.0, "exact": "18"}}
        # The chart tool on something that is not one of our charts: a result, not a crash.
        result = await call(client, "chart_to_table", {"image": diagram})
        assert result["error"]["code"] == "invalid_argument"

    serve(fn)


def test_bad_calls_are_results_with_stable_codes():
    async def fn(client):
        image = await upload(client, Image.new("RGB", (320, 240), "white"))
        cases = [
            ("nope", {}, "unknown_tool", "nope"),
            ("crop", {"image": image, "box": [0, 0, 5, 5], "zoom": 2}, "unknown_argument", "zoom"),
            ("crop", {"image": image}, "missing_argument", "box"),
            ("crop", {"image": image, "box": ["0", 0, 5, 5]}, "invalid_argument", "box"),
            ("crop", {"image": 7, "box": [0, 0, 5, 5]}, "invalid_argument", "image"),
            ("crop", {"image": image, "box": [0, 0, 5]}, "invalid_argument", "box"),
            ("crop", {"image": image, "box": [0, 0, 400, 5]}, "invalid_argument", "320x240"),
            ("crop", {"image": image, "box": [5, 5, 5, 9]}, "invalid_argument", "box"),
            ("crop", {"image": "0" * 64, "box": [0, 0, 5, 5]}, "image_not_found", "0" * 64),
            ("crop", {"image": "../../etc/passwd", "box": [0, 0, 5, 5]}, "image_not_found", "image"),
            ("measure_length", {"image": image, "point_a": "A", "point_b": "b"}, "invalid_argument", "point_b"),
            ("calculator", {"expression": "__import__('os')"}, "invalid_argument", "expression"),
            ("calculator", {"expression": "(1).__class__"}, "invalid_argument", "attribute"),
            ("calculator", {"expression": "9**9**9**9"}, "invalid_argument", "too large"),
        ]
        for name, arguments, code, mention in cases:
            result = await call(client, name, arguments)
            assert result["ok"] is False and result["error"]["code"] == code, (name, arguments, result)
            assert mention in result["error"]["message"], result
            assert await healthy(client)

    serve(fn)


def test_batch_mixed_good_and_bad_in_order():
    async def fn(client):
        image = await upload(client, Image.new("RGB", (50, 40), "white"))
        calls = [{"name": "calculator", "arguments": {"expression": "2+2"}},
                 {"name": "nope", "arguments": {}},
                 {"name": "crop", "arguments": {"image": image, "box": [0, 0, 10, 10]}},
                 {"name": "crop", "arguments": {"image": image, "box": [0, 0, 99, 10]}},
                 {"name": "calculator", "arguments": {"expression": "6*7"}}]
        resp = await client.post("/v1/batch", json={"calls": calls})
        assert resp.status == 200
        results = (await resp.json())["results"]
        assert [r["ok"] for r in results] == [True, False, True, False, True]
        assert results[0]["text"] == "4" and results[4]["text"] == "42"
        assert results[1]["error"]["code"] == "unknown_tool"
        assert results[3]["error"]["code"] == "invalid_argument"
        assert (await (await client.post("/v1/batch", json={"calls": []})).json()) == {"results": []}

    serve(fn)


def test_malformed_requests_are_400_and_the_server_keeps_answering():
    async def fn(client):
        bad = [("/v1/call", b"{not json"), ("/v1/call", b"[1, 2]"), ("/v1/call", b'{"arguments": {}}'),
               ("/v1/call", b'{"name": "crop", "arguments": [1]}'), ("/v1/call", b"\xff\xfe"),
               ("/v1/batch", b'{"calls": {}}'), ("/v1/batch", b'{"calls": [{"name": 3}]}'),
               ("/v1/batch", b"nope"), ("/v1/call", b"[" * 100000)]
        for path, body in bad:
            resp = await client.post(path, data=body, headers={"Content-Type": "application/json"})
            assert resp.status == 400, (path, body[:20])
            assert (await resp.json())["error"]["code"] == "malformed_request"
            assert await healthy(client)
        resp = await client.get("/v1/call")
        assert resp.status == 405 and (await resp.json())["error"]["code"] == "method_not_allowed"
        resp = await client.get("/no/such/route")
        assert resp.status == 404 and "error" in await resp.json()

    serve(fn)


def test_image_ids_and_bad_image_bytes():
    async def fn(client):
        for bad_id in ["xyz", "A" * 64, "0" * 63, "..%2F..%2Fetc%2Fpasswd", "%2E%2E"]:
            resp = await client.get(f"/v1/images/{bad_id}")
            assert resp.status in (400, 404), bad_id
            assert "error" in await resp.json()
        resp = await client.get("/v1/images/../../etc/passwd")
        assert resp.status == 404
        resp = await client.get("/v1/images/" + "0" * 64)
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "image_not_found"

        good = png(Image.new("RGB", (20, 20), "red"))
        for body in [b"", b"not an image at all", good[:40], good[:-20], b"GIF89a" + b"\x00" * 40,
                     _bad_png(50000, 50000), _bad_png(6000, 6000)]:
            resp = await client.post("/v1/images", data=body, headers={"Content-Type": "application/octet-stream"})
            assert resp.status == 400, body[:16]
            assert (await resp.json())["error"]["code"] == "invalid_image"
            assert await healthy(client)
        resp = await client.post("/v1/images", data=_bad_png(50000, 50000))
        assert "pixels" in (await resp.json())["error"]["message"] or "bomb" in (await resp.json())["error"]["message"]

    serve(fn)


def test_oversize_bodies_are_413():
    async def fn(client):
        big = b"\x00" * 300_000
        for path in ["/v1/images", "/v1/call", "/v1/batch"]:
            resp = await client.post(path, data=big)
            assert resp.status == 413, path
            assert (await resp.json())["error"]["code"] == "payload_too_large"
            assert await healthy(client)

        async def chunks():  # no Content-Length: the limit is enforced while reading
            for _ in range(30):
                yield b"\x00" * 10_000

        resp = await client.post("/v1/images", data=chunks())
        assert resp.status == 413
        assert await healthy(client)
        calls = [{"name": "calculator", "arguments": {"expression": "1"}}] * 11
        resp = await client.post("/v1/batch", json={"calls": calls})
        assert resp.status == 413

    serve(fn, ServerConfig(max_body_mb=0.25, max_batch=10))


def test_overloaded_is_429_for_call_and_a_result_in_batch():
    async def fn(client):
        slow = asyncio.ensure_future(client.post("/v1/call", json={"name": "sleepy", "arguments": {"seconds": 0.5}}))
        await asyncio.sleep(0.1)
        resp = await client.post("/v1/call", json={"name": "calculator", "arguments": {"expression": "1+1"}})
        assert resp.status == 429 and resp.headers["Retry-After"] == "1"
        body = await resp.json()
        assert body["ok"] is False and body["error"]["code"] == "overloaded"
        assert (await (await slow).json())["ok"]
        calls = [{"name": "sleepy", "arguments": {"seconds": 0.2}}] * 3
        resp = await client.post("/v1/batch", json={"calls": calls})
        results = (await resp.json())["results"]
        assert [r["ok"] for r in results] == [True, False, False]
        assert results[1]["error"]["code"] == "overloaded" and resp.headers["Retry-After"] == "1"
        # Validation errors need no slot.
        resp = await client.post("/v1/call", json={"name": "nope", "arguments": {}})
        assert resp.status == 200

    serve(fn, ServerConfig(max_pending=1, threads=1), extra_tools=[Sleepy])


def test_deadline_gives_timeout_and_holds_the_slot_until_the_thread_ends():
    async def fn(client):
        start = time.perf_counter()
        result = await call(client, "sleepy", {"seconds": 0.6})
        assert result["error"]["code"] == "timeout" and time.perf_counter() - start < 0.5
        resp = await client.post("/v1/call", json={"name": "calculator", "arguments": {"expression": "1"}})
        assert resp.status == 429  # the runaway call still holds the only slot
        await asyncio.sleep(0.6)
        assert (await call(client, "calculator", {"expression": "1"}))["ok"]
        assert await healthy(client)

    serve(fn, ServerConfig(max_pending=1, threads=1, call_timeout_s=0.2), extra_tools=[Sleepy])


def test_tool_crash_is_execution_failed_and_metrics_count_it():
    async def fn(client):
        result = await call(client, "broken", {})
        assert result["error"]["code"] == "execution_failed" and "boom" in result["error"]["message"]
        await call(client, "calculator", {"expression": "1"})
        text = await (await client.get("/metrics")).text()
        assert 'vista_tool_calls_total{code="execution_failed",tool="broken"} 1.0' in text
        assert 'vista_tool_calls_total{code="ok",tool="calculator"} 1.0' in text

    serve(fn, extra_tools=[Broken])


def test_concurrent_calls_run_off_the_event_loop():
    async def fn(client):
        # While two slow tools run, the server still answers health checks at once.
        calls = [{"name": "sleepy", "arguments": {"seconds": 0.4}}] * 2
        pending = asyncio.ensure_future(client.post("/v1/batch", json={"calls": calls}))
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        assert await healthy(client)
        assert time.perf_counter() - start < 0.2
        resp = await pending
        assert all(r["ok"] for r in (await resp.json())["results"])

    serve(fn, ServerConfig(threads=2), extra_tools=[Sleepy])


def test_image_store_is_bounded_lru_and_thread_safe():
    store = ImageStore(max_images=2, max_bytes=10**9)
    ids = [store.put_image(Image.new("RGB", (8, 8), (i, 0, 0))).image_id for i in range(3)]
    assert ids[0] not in store and ids[1] in store and ids[2] in store
    store.get(ids[1])  # touch: ids[2] is now the oldest
    store.put_image(Image.new("RGB", (8, 8), (9, 9, 9)))
    assert ids[1] in store and ids[2] not in store
    assert store.put_image(Image.new("RGB", (8, 8), (9, 9, 9))).image_id in store  # dedup
    small = ImageStore(max_images=100, max_bytes=5000)
    for i in range(10):
        small.put_image(Image.new("RGB", (20, 20), (i, i, i)))
    assert small.nbytes <= 5000
    with pytest.raises(InvalidImage):
        small.put_image(Image.new("RGB", (100, 100)))

    def hammer(k):
        for i in range(50):
            store.put_image(Image.new("L", (4, 4), (k * 50 + i) % 256))

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(store) == 2


def test_bearer_token_guards_every_route_but_healthz():
    async def fn(client):
        assert await healthy(client)  # probes need no credentials
        denied = await client.get("/v1/tools")
        assert denied.status == 401 and (await denied.json())["error"]["code"] == "unauthorized"
        assert denied.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = await client.post("/v1/call", json={"name": "calculator",
                                                    "arguments": {"expression": "1+1"}},
                                  headers={"Authorization": "Bearer wrong"})
        assert wrong.status == 401
        good = {"Authorization": "Bearer s3cret"}
        resp = await client.post("/v1/call", json={"name": "calculator",
                                                   "arguments": {"expression": "1+1"}},
                                 headers=good)
        assert resp.status == 200 and (await resp.json())["text"].startswith("2")
        assert (await client.get("/metrics", headers=good)).status == 200

    serve(fn, ServerConfig(auth_token="s3cret"))


def test_drain_finishes_admitted_calls_and_refuses_new_ones():
    async def fn(client):
        service = client.app[SERVICE]
        slow = asyncio.create_task(call(client, "sleepy", {"seconds": 0.4}))
        while service.pending == 0:
            await asyncio.sleep(0.005)
        drained = asyncio.create_task(service.drain(timeout_s=5))
        await asyncio.sleep(0.05)
        health = await client.get("/healthz")
        assert health.status == 503 and (await health.json())["status"] == "draining"
        refused = await client.post("/v1/call", json={"name": "sleepy",
                                                      "arguments": {"seconds": 0}})
        assert refused.status == 503 and refused.headers["Retry-After"] == "1"
        assert (await refused.json())["error"]["code"] == reg.OVERLOADED
        assert (await slow)["text"] == "slept 0.4"  # the admitted call was not dropped
        assert await drained is True and service.pending == 0

    serve(fn, extra_tools=(Sleepy,))


class Waiting(Sleepy):
    """Sleeps on the blocking pool, as the python tool waits on its subprocess (test tool)."""

    name = "waiting"
    blocking = True


def test_blocking_tools_cannot_starve_the_cpu_threads():
    async def fn(client):
        waits = [asyncio.create_task(call(client, "waiting", {"seconds": 0.6})) for _ in range(3)]
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        quick = await call(client, "calculator", {"expression": "6*7"})
        assert quick["text"] == "42" and time.perf_counter() - t0 < 0.4
        assert all(r["ok"] for r in await asyncio.gather(*waits))

    serve(fn, ServerConfig(threads=1, blocking_threads=4), extra_tools=[Waiting])


def test_batch_calls_share_threads_and_a_slow_one_does_not_hold_up_the_rest():
    async def fn(client):
        service = client.app[SERVICE]
        calls = [{"name": "sleepy", "arguments": {"seconds": 0.6}}] + [
            {"name": "calculator", "arguments": {"expression": f"{i}+1"}} for i in range(20)]
        resp = await client.post("/v1/batch", json={"calls": calls})
        results = (await resp.json())["results"]
        assert results[0]["error"]["code"] == reg.TIMEOUT  # past the 0.3 s deadline
        assert [r["text"] for r in results[1:]] == [str(i + 1) for i in range(20)]
        assert service.pending >= 1  # the sleeper's slot is held until its thread ends
        await asyncio.sleep(0.5)
        assert service.pending == 0

    serve(fn, ServerConfig(threads=2, call_timeout_s=0.3), extra_tools=[Sleepy])


def test_a_tool_with_its_own_time_limit_reports_the_overrun_itself():
    async def fn(client):
        result = await call(client, "python", {"code": "print('started', flush=True)\n"
                                                       "while True:\n    pass",
                                               "timeout_s": 1.0})
        # The server's 0.5 s deadline would have answered `timeout` with nothing; the
        # sandbox's own limit gives an ok result with the partial output instead.
        assert result["ok"] and result["data"]["timed_out"] is True
        assert result["text"].startswith("started\n[timed out: stopped after 1 s")

    serve(fn, ServerConfig(call_timeout_s=0.5))


class Patient(Sleepy):
    """Sleeps, with a time limit of its own (test tool)."""

    name = "patient"

    class Arguments(ToolArguments):
        seconds: float
        limit: float

    def deadline_s(self, args):
        return args.limit


def test_own_deadlines_hold_per_call_on_the_cpu_threads_and_timeouts_name_them():
    async def fn(client):
        calls = [{"name": "patient", "arguments": {"seconds": 0.4, "limit": 0.9}},
                 {"name": "patient", "arguments": {"seconds": 0.7, "limit": 0.35}},
                 {"name": "sleepy", "arguments": {"seconds": 0.4}},
                 {"name": "patient", "arguments": {"seconds": 0.0, "limit": 0.01}}]
        resp = await client.post("/v1/batch", json={"calls": calls})
        return (await resp.json())["results"]

    results = serve(fn, ServerConfig(threads=4, call_timeout_s=0.2),
                    extra_tools=[Sleepy, Patient])
    assert results[0]["text"] == "slept 0.4"  # past the server's 0.2 s, within its own 0.9 s
    assert results[1]["error"] == {"code": "timeout",
                                   "message": "tool 'patient' did not finish within 0.35 s"}
    assert results[2]["error"]["message"] == "tool 'sleepy' did not finish within 0.2 s"
    assert results[3]["text"] == "slept 0.0"  # a shorter own limit never cuts the server's


class PatientModel(Patient):
    """A model-backed tool with a time limit of its own (test tool)."""

    name = "patient_model"
    model_backed = True


class RecordingPool(WorkerPool):
    """A worker pool that answers at once and records the deadline it was given."""

    def __init__(self):
        self.timeouts = []

    async def call(self, name, arguments, images, *, timeout_s):
        self.timeouts.append(timeout_s)
        return reg.ok_result("pooled"), {}

    def status(self):
        return []


def test_pool_calls_get_the_tools_own_deadline():
    pool = RecordingPool()

    async def main():
        app = create_app(ServerConfig(call_timeout_s=0.2), _tools([PatientModel]), pool)
        async with TestClient(TestServer(app)) as client:
            long = await call(client, "patient_model", {"seconds": 0, "limit": 3.5})
            short = await call(client, "patient_model", {"seconds": 0, "limit": 0.1})
            return long, short

    long, short = asyncio.run(main())
    assert long["text"] == short["text"] == "pooled"
    assert pool.timeouts == [3.5, 0.2]


class BadDeadline(Sleepy):
    """Its deadline_s raises (test tool)."""

    name = "bad_deadline"

    def deadline_s(self, args):
        raise RuntimeError("bug")


def test_a_failing_deadline_s_falls_back_to_the_server_deadline_and_frees_the_slot():
    async def fn(client):
        result = await call(client, "bad_deadline", {"seconds": 0})
        return result, client.app[SERVICE].pending

    result, pending = serve(fn, extra_tools=[BadDeadline])
    assert result["text"] == "slept 0.0" and pending == 0
