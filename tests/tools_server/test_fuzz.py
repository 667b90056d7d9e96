"""Property-based fuzzing of the request schema (hypothesis) against a real server on 127.0.0.1.

Whatever the body, the server answers with its documented shapes: a tool-call result (200:
`ok` with text/images/data, or an error with a stable code) or a JSON HTTP error (4xx with
`{"error": {"code", "message"}}`); never a 500, a dropped connection or a hang, and it keeps
serving afterwards. Arguments are drawn from each tool's own JSON Schema (right names, values
of the right and wrong types) mixed with arbitrary JSON, so that validation *and* the tools'
own range checks are exercised, not just the unknown-tool path.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import math
import threading

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tools_server.app import ServerConfig, create_app  # noqa: E402
from tools_server.registry import ERROR_CODES, EXECUTION_FAILED, TIMEOUT  # noqa: E402
from tools_server.tools import default_registry  # noqa: E402
from vista_jax.env.tasks.render import render_bar_chart, render_points_diagram  # noqa: E402
from vista_jax.env.tasks.render_scene import random_scene  # noqa: E402

_REGISTRY = default_registry()
_SCHEMAS = {t.name: t.parameters_schema() for t in _REGISTRY}


class _Server:
    """The app on a free port, served by its own event loop in a daemon thread."""

    def __init__(self):
        from aiohttp import web

        self.app = create_app(ServerConfig(call_timeout_s=5.0, max_body_mb=1.0))
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(self.app)
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.port = self.runner.addresses[0][1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(30)

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": content_type})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def close(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _images() -> list[Image.Image]:
    """What the readers really parse (a chart, a diagram, a scene, text) and what they must
    refuse cleanly (noise, a one-pixel image)."""
    rng = np.random.default_rng(0)
    text = Image.new("RGB", (160, 40), "white")
    ImageDraw.Draw(text).text((6, 8), "Total 42", fill="black", font=ImageFont.load_default(size=18))
    return [render_bar_chart(["Red", "Blue", "Gold"], [12, 88, 45], seed=1),
            render_points_diagram({"A": (40, 40), "B": (200, 60), "C": (120, 180)}),
            random_scene(3, 5)[0], text,
            Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)),
            Image.new("RGB", (1, 1), (200, 30, 30))]


@pytest.fixture(scope="module")
def server():
    srv = _Server()
    srv.image_ids = []
    for image in _images():
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        status, body = srv.request("POST", "/v1/images", buf.getvalue(), "image/png")
        assert status == 200
        srv.image_ids.append(json.loads(body)["image_id"])
    yield srv
    srv.close()


json_scalars = (st.none() | st.booleans() | st.integers(-10**6, 10**6)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)


def _valid_for(schema: dict, image_ids: list[str]) -> st.SearchStrategy:
    """Values that follow the property's schema (type, enum, bounds, lengths)."""
    if "anyOf" in schema:
        return st.one_of(*(_valid_for(sub, image_ids) for sub in schema["anyOf"]))
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "string":
        if "image" in json.dumps(schema).lower():
            return st.sampled_from(image_ids)
        return st.sampled_from(["1+1", "x**2 - 4 = 0", "2*x + 3 = 11", "A", "B", "C",
                                "red circle", "circles", "all objects", "value",
                                "point A (0, 0)\npoint B (4, 0)\npoint C (0, 3)\nsegment A B",
                                "length A B", "angle A B C", "area A B C",
                                "print(sum(range(10)))"]) | st.text(max_size=30)
    if kind in ("integer", "number"):
        lo = schema.get("minimum", schema.get("exclusiveMinimum", -50))
        hi = schema.get("maximum", schema.get("exclusiveMaximum", 400))
        ints = st.integers(int(math.ceil(lo)), int(math.floor(hi)))
        if kind == "integer":
            return ints
        return ints | st.floats(lo, hi, allow_nan=False, exclude_min="exclusiveMinimum" in schema,
                                exclude_max="exclusiveMaximum" in schema)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        items = schema.get("items", {})
        lo, hi = schema.get("minItems", 0), min(schema.get("maxItems", 8), 8)
        element = (st.integers(0, 330) if items.get("type") == "integer"
                   else _valid_for(items, image_ids))
        return st.lists(element, min_size=lo, max_size=max(lo, hi))
    return json_values


def _value_for(schema: dict, image_ids: list[str]) -> st.SearchStrategy:
    """Mostly schema-valid values (so the tools' own code runs), else edge cases or anything."""
    edge = st.sampled_from(["0" * 64, "../../etc/passwd", "", -1, 10**9, [], [0, 0, 0, 0]])
    return st.integers(0, 9).flatmap(lambda roll: _valid_for(schema, image_ids) if roll > 1
                                     else edge if roll else json_values)


@st.composite
def tool_calls(draw, image_ids: list[str]):
    name = draw(st.sampled_from(sorted(_SCHEMAS)) if draw(st.integers(0, 9))
                else st.text(max_size=12))
    schema = _SCHEMAS.get(name, {})
    required = set(schema.get("required", ()))
    args = {}
    for key, sub in schema.get("properties", {}).items():
        roll = draw(st.integers(0, 9))
        if roll > (0 if key in required else 4):  # required: mostly present; optional: half
            args[key] = draw(_value_for(sub, image_ids))
    if draw(st.integers(0, 9)) == 0:
        args[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    envelope = {"name": name, "arguments": args}
    if draw(st.integers(0, 19)) == 0:  # sometimes a broken envelope
        envelope = draw(st.sampled_from([{"name": name}, {"arguments": args}, [name, args],
                                         {"name": 3, "arguments": args},
                                         {"name": name, "arguments": [1]}]))
    return envelope


def _check_result(result):
    assert isinstance(result, dict) and isinstance(result.get("ok"), bool), result
    if result["ok"]:
        assert isinstance(result["text"], str) and isinstance(result["images"], list)
        assert isinstance(result["data"], dict)
    else:
        assert result["error"]["code"] in ERROR_CODES, result
        assert isinstance(result["error"]["message"], str) and result["error"]["message"]
        # A call that runs into the deadline here is a denial of service (the fuzz inputs are
        # small), and an exception a tool did not turn into a ToolError is a tool bug.
        assert result["error"]["code"] != TIMEOUT, result
        assert not (result["error"]["code"] == EXECUTION_FAILED
                    and result["error"]["message"].startswith("tool '")), result


def _check_http_error(status, body):
    assert 400 <= status < 500, (status, body[:300])
    err = json.loads(body)["error"]
    assert isinstance(err["code"], str) and isinstance(err["message"], str)


_SETTINGS = settings(max_examples=400, deadline=None, derandomize=True,
                     suppress_health_check=list(HealthCheck))


@_SETTINGS
@given(data=st.data())
def test_fuzz_call(server, data):
    envelope = data.draw(tool_calls(server.image_ids))
    status, body = server.request("POST", "/v1/call", json.dumps(envelope).encode())
    if status == 200:
        _check_result(json.loads(body))
    else:
        _check_http_error(status, body)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_batch(server, data):
    calls = data.draw(st.lists(tool_calls(server.image_ids), max_size=6))
    status, body = server.request("POST", "/v1/batch", json.dumps({"calls": calls}).encode())
    if status == 200:
        results = json.loads(body)["results"]
        assert len(results) == len(calls)
        for result in results:
            _check_result(result)
    else:
        _check_http_error(status, body)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
       path=st.sampled_from(["/v1/call", "/v1/batch", "/v1/images"]))
def test_fuzz_raw_bodies(server, body, path):
    status, reply = server.request("POST", path, body)
    if status == 200:
        reply = json.loads(reply)
        if path == "/v1/call":
            _check_result(reply)
        elif path == "/v1/batch":
            for result in reply["results"]:
                _check_result(result)
        else:
            assert len(reply["image_id"]) == 64
    else:
        _check_http_error(status, reply)


def test_server_still_serves_after_the_fuzzing(server):
    status, body = server.request("GET", "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, body = server.request("POST", "/v1/call", json.dumps(
        {"name": "calculator", "arguments": {"expression": "6*7"}}).encode())
    assert status == 200 and json.loads(body)["text"] == "42"
