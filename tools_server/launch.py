"""Run the tool server as a local subprocess on 127.0.0.1 (the embedded default's topology).

    with LocalToolServer() as server:
        client = SyncToolClient(server.url)

The subprocess is `python -m tools_server.cli serve --port 0`: it binds a free port itself
and reports it through a file, so there is no race for the port. `start()` returns once
/healthz answers; if the process dies first, or does not come up in time, it raises with
the tail of the server's log. `stop()` sends SIGTERM, then kills after a grace period.
The server also exits by itself when this process exits (`--exit-with-parent`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


# Loopback never goes through a proxy, whatever the environment says.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ToolServerStartError(RuntimeError):
    pass


class LocalToolServer:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, startup_timeout_s: float = 60.0,
                 extra_args: list[str] | tuple[str, ...] = (), env: dict[str, str] | None = None):
        self.host, self.port = host, port
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = list(extra_args)
        self.env = env
        self._proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._log_file = None

    @property
    def url(self) -> str:
        if self._proc is None:
            raise RuntimeError("the tool server is not running; call start() first")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, n_chars: int = 4000) -> str:
        """The last characters the server wrote to stdout/stderr."""
        if self._tmp is None:
            return ""
        try:
            with open(os.path.join(self._tmp.name, "server.log"), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - n_chars))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def start(self) -> "LocalToolServer":
        if self._proc is not None:
            return self
        self._tmp = tempfile.TemporaryDirectory(prefix="vista-tools-")
        port_file = os.path.join(self._tmp.name, "port")
        self._log_file = open(os.path.join(self._tmp.name, "server.log"), "wb")
        cmd = [sys.executable, "-m", "tools_server.cli", "serve", "--host", self.host,
               "--port", str(self.port), "--port-file", port_file, "--exit-with-parent",
               *self.extra_args]
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        # A log file, not a pipe: nobody reads a pipe while the server runs, and a full one
        # would block it.
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log_file,
                                      stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.startup_timeout_s
        try:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise ToolServerStartError(
                        f"the tool server exited with code {code} during start-up; "
                        f"its output ends with:\n{self.log_tail()}")
                if os.path.exists(port_file):
                    with open(port_file) as f:
                        self.port = int(f.read())
                    if self._healthy():
                        return self
                if time.monotonic() > deadline:
                    raise ToolServerStartError(
                        f"the tool server did not answer /healthz within "
                        f"{self.startup_timeout_s:g} s; its output ends with:\n{self.log_tail()}")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def _healthy(self) -> bool:
        try:
            with _NO_PROXY.open(f"http://{self.host}:{self.port}/healthz", timeout=2) as resp:
                return resp.status == 200 and json.load(resp).get("status") == "ok"
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def stop(self, grace_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "LocalToolServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):
        try:
            self.stop(grace_s=1.0)
        except Exception:
            pass
