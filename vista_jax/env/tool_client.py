"""Client of the tool server (tools_server/app.py), as the environment uses it.

`ToolClient` is async (one aiohttp session, created lazily, closed by `aclose()` or
`async with`); `SyncToolClient` offers the same methods, blocking, by running a
`ToolClient` on its own event loop in a background thread, so that it works from plain
code and from inside a running loop (Jupyter).

Tool calls never raise for transport trouble: `call` and `batch` return result dicts, with
`{"ok": false, "error": {"code": "transport_error" | "timeout", ...}}` when the server cannot
be reached or does not answer in time. Tool calls are pure functions of their inputs, so
/v1/call and /v1/batch are retried (connection errors, timeouts, 5xx, and 429/503 after
their Retry-After); items of a batch answered `overloaded` are re-sent alone. Image upload,
download and the tool list are not policy actions: they raise `ToolClientError`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import threading
import weakref
from typing import Any

import aiohttp
from PIL import Image

TRANSPORT_ERROR = "transport_error"
TIMEOUT = "timeout"
OVERLOADED = "overloaded"
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_BATCH_CHUNK = 512  # calls per /v1/batch request (the server accepts 1024 by default)


class ToolClientError(RuntimeError):
    """A non-tool-call request (upload, download, listing) failed."""

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(f"{code}: {message}" + (f" (HTTP {status})" if status else ""))
        self.code, self.message, self.status = code, message, status


def _error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


def _is_overloaded(result: dict[str, Any]) -> bool:
    return not result.get("ok") and (result.get("error") or {}).get("code") == OVERLOADED


@dataclasses.dataclass
class _Reply:
    status: int | None  # None: no HTTP answer at all
    body: bytes = b""
    headers: Any = None
    failure: tuple[str, str] | None = None  # (code, message) when status is None

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None

    def error(self) -> tuple[str, str]:
        """(code, message) of an unsuccessful reply."""
        if self.failure is not None:
            return self.failure
        body = self.json()
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and isinstance(err.get("code"), str):
            return err["code"], str(err.get("message", ""))
        return TRANSPORT_ERROR, f"HTTP {self.status}: {self.body[:200].decode('utf-8', 'replace')}"


def _png_bytes(image: Image.Image | bytes | bytearray) -> tuple[bytes, str]:
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return data, "image/png"
        if data.startswith(b"\xff\xd8"):
            return data, "image/jpeg"
        return data, "application/octet-stream"
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image or encoded bytes, got {type(image).__name__}")
    buf = io.BytesIO()
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue(), "image/png"


class ToolClient:
    def __init__(self, base_url: str, *, timeout_s: float = 30.0, max_retries: int = 2,
                 backoff_s: float = 0.25, max_retry_after_s: float = 10.0,
                 max_connections: int = 32, token: str | None = None):
        self.base_url = base_url.rstrip("/")
        # Bearer token of a server started with one (None: VISTA_TOOLS_TOKEN, if set).
        token = token if token is not None else os.environ.get("VISTA_TOOLS_TOKEN") or None
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> "ToolClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            # A session belongs to one loop; a client reused under a new loop gets a new one.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s), headers=self._auth,
                connector=aiohttp.TCPConnector(limit=self.max_connections))
            self._loop = loop
        return self._session

    def _delay(self, attempt: int, headers: Any) -> float:
        retry_after = headers.get("Retry-After") if headers is not None else None
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), self.max_retry_after_s)
            except ValueError:
                pass
        return self.backoff_s * 2**attempt

    async def _request(self, method: str, path: str, *, retry: bool, **kwargs) -> _Reply:
        """One HTTP exchange, retried (if `retry`) on transport failure, 5xx and 429."""
        url = self.base_url + path
        attempts = self.max_retries + 1 if retry else 1
        reply = _Reply(None, failure=(TRANSPORT_ERROR, "no attempt made"))
        for attempt in range(attempts):
            try:
                async with self._get_session().request(method, url, **kwargs) as resp:
                    reply = _Reply(resp.status, await resp.read(), resp.headers)
            except asyncio.TimeoutError:
                reply = _Reply(None, failure=(TIMEOUT, f"no answer from {url} within "
                                                       f"{self.timeout_s:g} s"))
            except aiohttp.ClientError as exc:
                reply = _Reply(None, failure=(TRANSPORT_ERROR, f"{method} {url} failed: "
                                              f"{type(exc).__name__}: {exc}"))
            if reply.status is not None and reply.status not in _RETRY_STATUSES:
                return reply
            if attempt + 1 < attempts:
                await asyncio.sleep(self._delay(attempt, reply.headers))
        return reply

    # Tool calls: never raise.

    async def call(self, name: str, arguments: dict) -> dict[str, Any]:
        """One tool call -> its result dict (see tools_server.registry)."""
        try:
            payload = json.dumps({"name": name, "arguments": arguments})
        except (TypeError, ValueError) as exc:
            return _error("malformed_request", f"arguments are not JSON-serialisable: {exc}")
        reply = await self._request("POST", "/v1/call", retry=True, data=payload,
                                    headers={"Content-Type": "application/json"})
        body = reply.json() if reply.status is not None else None
        if reply.status in (200, 429) and isinstance(body, dict) and "ok" in body:
            return body
        return _error(*reply.error())

    async def batch(self, calls: list[tuple[str, dict]]) -> list[dict[str, Any]]:
        """Many tool calls in one request (chunked past 512) -> results in the same order."""
        calls = list(calls)
        chunks = [calls[i:i + _BATCH_CHUNK] for i in range(0, len(calls), _BATCH_CHUNK)]
        parts = await asyncio.gather(*(self._batch_chunk(chunk) for chunk in chunks))
        return [r for part in parts for r in part]

    async def _batch_chunk(self, calls: list[tuple[str, dict]]) -> list[dict[str, Any]]:
        results: list[dict[str, Any] | None] = [None] * len(calls)
        todo = list(range(len(calls)))
        for round_ in range(self.max_retries + 1):
            try:
                payload = json.dumps(
                    {"calls": [{"name": calls[i][0], "arguments": calls[i][1]} for i in todo]})
            except (TypeError, ValueError):  # let call() answer the unserialisable items
                return [r if r is not None else await self.call(*calls[i])
                        for i, r in enumerate(results)]
            reply = await self._request("POST", "/v1/batch", retry=True, data=payload,
                                        headers={"Content-Type": "application/json"})
            body = reply.json() if reply.status == 200 else None
            got = body.get("results") if isinstance(body, dict) else None
            if not isinstance(got, list) or len(got) != len(todo):
                err = _error(*reply.error()) if reply.status != 200 else \
                    _error(TRANSPORT_ERROR, "malformed /v1/batch response")
                for i in todo:
                    results[i] = err
                break
            for i, result in zip(todo, got):
                results[i] = result
            todo = [i for i in todo if _is_overloaded(results[i])]
            if not todo or round_ == self.max_retries:
                break
            await asyncio.sleep(self._delay(round_, reply.headers))
        return results  # type: ignore[return-value]

    # Everything else: raises ToolClientError.

    def _raise(self, reply: _Reply, what: str) -> None:
        code, message = reply.error()
        raise ToolClientError(code, f"{what}: {message}", reply.status)

    async def health(self) -> dict[str, Any]:
        reply = await self._request("GET", "/healthz", retry=True)
        if reply.status != 200:
            self._raise(reply, "health check")
        return reply.json()

    async def list_tools(self) -> list[dict[str, Any]]:
        """The tool schemas (OpenAI function-calling entries with a "family")."""
        reply = await self._request("GET", "/v1/tools", retry=True)
        body = reply.json() if reply.status == 200 else None
        if not isinstance(body, dict) or not isinstance(body.get("tools"), list):
            self._raise(reply, "listing tools")
        return body["tools"]

    async def upload_image(self, image: Image.Image | bytes) -> str:
        """Uploads an image (PIL images are PNG-encoded) -> its image_id (sha256 of the PNG)."""
        if isinstance(image, Image.Image) and image.width * image.height > 1_000_000:
            data, content_type = await asyncio.to_thread(_png_bytes, image)
        else:
            data, content_type = _png_bytes(image)
        # Content-addressed, so re-sending after a lost answer is harmless.
        reply = await self._request("POST", "/v1/images", retry=True, data=data,
                                    headers={"Content-Type": content_type})
        body = reply.json() if reply.status == 200 else None
        if not isinstance(body, dict) or "image_id" not in body:
            self._raise(reply, "uploading an image")
        return body["image_id"]

    async def get_image(self, image_id: str) -> Image.Image:
        reply = await self._request("GET", f"/v1/images/{image_id}", retry=True)
        if reply.status != 200:
            self._raise(reply, f"fetching image {image_id!r}")
        try:
            image = Image.open(io.BytesIO(reply.body))
            image.load()
        except Exception as exc:
            raise ToolClientError("invalid_image",
                                  f"image {image_id!r} could not be decoded: {exc}") from None
        return image


def _shutdown(loop: asyncio.AbstractEventLoop, thread: threading.Thread,
              client: ToolClient) -> None:
    if loop.is_running():
        try:
            asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=5)
        except Exception:
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
    if not loop.is_running() and not loop.is_closed():
        loop.close()


class SyncToolClient:
    """Blocking twin of ToolClient (same arguments and methods); `close()` when done."""

    def __init__(self, base_url: str, **kwargs: Any):
        self._client = ToolClient(base_url, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vista-tool-client",
                                        daemon=True)
        self._thread.start()
        self._finalizer = weakref.finalize(self, _shutdown, self._loop, self._thread, self._client)

    @property
    def base_url(self) -> str:
        return self._client.base_url

    def _run(self, coro):
        if not self._finalizer.alive:
            coro.close()
            raise RuntimeError("SyncToolClient is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def call(self, name: str, arguments: dict) -> dict[str, Any]:
        return self._run(self._client.call(name, arguments))

    def batch(self, calls: list[tuple[str, dict]]) -> list[dict[str, Any]]:
        return self._run(self._client.batch(calls))

    def list_tools(self) -> list[dict[str, Any]]:
        return self._run(self._client.list_tools())

    def upload_image(self, image: Image.Image | bytes) -> str:
        return self._run(self._client.upload_image(image))

    def get_image(self, image_id: str) -> Image.Image:
        return self._run(self._client.get_image(image_id))

    def health(self) -> dict[str, Any]:
        return self._run(self._client.health())

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> "SyncToolClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
