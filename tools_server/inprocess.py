"""The tool service without HTTP: a blocking client that runs `ToolService` in this process.

    client = InProcessToolClient()            # every tool, classical backends
    env = VistaEnv(client, family="geometry")

Same methods and results as `vista_jax.env.tool_client.SyncToolClient` (`list_tools`,
`call`, `batch`, `upload_image`, `get_image`, `health`, `close`), so the env, the expert
generator and `gymnasium.make("VistaGym/...")` work without a server process. Calls go
through the service's validation, admission, thread pool and deadlines exactly as over HTTP;
what is skipped is the network, auth, the worker pool (model-backed tools run in-process)
and the JSON round trip, so use the HTTP server for anything that measures the service.
"""

from __future__ import annotations

import asyncio
import io
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from PIL import Image

from tools_server.app import ServerConfig, ToolService
from tools_server.images import InvalidImage
from tools_server.registry import ToolRegistry


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread, service: ToolService) -> None:
    service.close()
    if loop.is_running():
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
    if not loop.is_running():
        loop.close()


class InProcessToolClient:
    """A blocking tool client over an in-process `ToolService` (thread-safe)."""

    def __init__(self, registry: ToolRegistry | None = None, *,
                 tool_options: Mapping[str, Mapping[str, Any]] | None = None,
                 config: ServerConfig | None = None):
        """`registry`: the tools (default: all 26, `default_registry(tool_options)`);
        `config`: the service's limits (threads, deadlines, store size; default: the
        server's, with a 120 s per-call deadline)."""
        if registry is None:
            from tools_server.tools import default_registry
            registry = default_registry(tool_options)
        elif tool_options:
            raise ValueError("pass tool_options or a registry, not both")
        # No network and no other clients: the per-call deadline only guards against a hung
        # tool. Model-backed tools (ocr) run unbatched in-process, so a batch of 32 OCR calls
        # on 2 cores takes longer than a server's 10 s default.
        self.service = ToolService(config or ServerConfig(call_timeout_s=120.0), registry)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="vista-inprocess-tools", daemon=True)
        self._thread.start()
        self._finalizer = weakref.finalize(self, _stop, self._loop, self._thread, self.service)

    base_url = "inprocess://"

    def _run(self, coro):
        if not self._finalizer.alive:
            coro.close()
            raise RuntimeError("InProcessToolClient is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def call(self, name: str, arguments: dict) -> dict[str, Any]:
        return self._run(self.service.call(name, arguments))

    def batch(self, calls: list[tuple[str, dict]]) -> list[dict[str, Any]]:
        return self._run(self.service.call_many([tuple(c) for c in calls])) if calls else []

    def list_tools(self) -> list[dict[str, Any]]:
        return self.service.tools.schemas()

    def upload_image(self, image: Image.Image | bytes) -> str:
        """Stores an image (PIL or encoded bytes) and returns its content id; a corrupt or
        oversized image raises `ValueError` (the HTTP client raises `ToolClientError`)."""
        try:
            if isinstance(image, (bytes, bytearray)):
                return self.service.store.put_bytes(bytes(image)).image_id
            return self.service.store.put_image(image).image_id
        except InvalidImage as exc:
            raise ValueError(f"{exc.code}: {exc.message}") from None

    def get_image(self, image_id: str) -> Image.Image:
        item = self.service.store.get(image_id)
        if item is None:
            raise KeyError(f"image {image_id} not found")
        with Image.open(io.BytesIO(item.png)) as im:
            return im.copy()

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "tools": len(self.service.tools)}

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> InProcessToolClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
