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
import threading

import pytest
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tools_server.app import ServerConfig, create_app  # noqa: E402
from tools_server.registry import ERROR_CODES, EXECUTION_FAILED  # noqa: E402
from tools_server.tools import default_registry  # noqa: E402

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


@pytest.fixture(scope="module")
def server():
    srv = _Server()
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 30, 30)).save(buf, format="PNG")
    status, body = srv.request("POST", "/v1/images", buf.getvalue(), "image/png")
    assert status == 200
    srv.image_id = json.loads(body)["image_id"]
    yield srv
    srv.close()


json_scalars = (st.none() | st.booleans() | st.integers(-10**6, 10**6)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)


def _value_for(schema: dict, image_id: str) -> st.SearchStrategy:
    """Mostly plausible values for one property (right type, edge-ish sizes), else anything."""
    kind = schema.get("type")
    if "image" in json.dumps(schema).lower() and kind == "string":
        plausible = st.sampled_from([image_id, "0" * 64, "../../etc/passwd", ""])
    elif kind == "integer":
        plausible = st.integers(-5, 2000)
    elif kind == "number":
        plausible = st.floats(-1e3, 1e3, allow_nan=False) | st.integers(-50, 50)
    elif kind == "boolean":
        plausible = st.booleans()
    elif kind == "array":
        plausible = st.lists(st.integers(-5, 80) | st.text(max_size=6), max_size=6)
    elif kind == "string":
        plausible = (st.sampled_from(["1+1", "x**2 - 4 = 0", "A", "B", "red circle", "(1,2)"])
                     | st.text(max_size=30))
    else:
        plausible = json_values
    return st.one_of(plausible, plausible, json_values)


@st.composite
def tool_calls(draw, image_id: str):
    name = draw(st.sampled_from(sorted(_SCHEMAS)) | st.text(max_size=12))
    props = _SCHEMAS.get(name, {}).get("properties", {})
    args = {}
    for key, sub in props.items():
        if draw(st.integers(0, 4)):  # usually present, sometimes missing
            args[key] = draw(_value_for(sub, image_id))
    if draw(st.integers(0, 5)) == 0:
        args[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    envelope = {"name": name, "arguments": args}
    if draw(st.integers(0, 9)) == 0:  # sometimes a broken envelope
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
        # An exception a tool did not turn into a ToolError is a tool bug, not bad input.
        assert not (result["error"]["code"] == EXECUTION_FAILED
                    and result["error"]["message"].startswith("tool '")), result


def _check_http_error(status, body):
    assert 400 <= status < 500, (status, body[:300])
    err = json.loads(body)["error"]
    assert isinstance(err["code"], str) and isinstance(err["message"], str)


_SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                     suppress_health_check=list(HealthCheck))


@_SETTINGS
@given(data=st.data())
def test_fuzz_call(server, data):
    envelope = data.draw(tool_calls(server.image_id))
    status, body = server.request("POST", "/v1/call", json.dumps(envelope).encode())
    if status == 200:
        _check_result(json.loads(body))
    else:
        _check_http_error(status, body)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_batch(server, data):
    calls = data.draw(st.lists(tool_calls(server.image_id), max_size=6))
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
