"""Run the tool service as local subprocesses on 127.0.0.1 (the embedded default's topology).

    with LocalToolServer() as server:                 # one front; every tool in-process
        client = SyncToolClient(server.url)
    with LocalToolServer(num_workers=2) as server:    # front + 2 workers for model-backed tools
        ...
    with LocalWorkerGroup(2, worker_args=["--max-batch", "1"]) as workers:   # workers alone
        pool = LocalHttpPool(workers.urls)

Each process is `python -m tools_server.cli serve|worker --port 0`: it binds a free port itself
and reports it through a file, so there is no race for the port. `start()` returns once the
process answers (/healthz for the front, /readyz for a worker: its models are loaded); if it
dies first, or does not come up in time, it raises with the tail of its log. `stop()` sends
SIGTERM (the process drains), then kills after a grace period. Every process also exits by
itself when the process that started it exits (`--exit-with-parent`).

With workers, the front is started with their URLs (`serve --worker URL ...`), and a
supervisor thread restarts a worker that dies on its old port, so its URL stays valid and
the front's health checker re-admits it once its /readyz passes.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Callable, Sequence

log = logging.getLogger("tools_server.launch")

# Loopback never goes through a proxy, whatever the environment says.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ToolServerStartError(RuntimeError):
    pass


class _LocalProcess:
    """A `python -m tools_server.cli <command>` subprocess that reports its port in a file."""

    command = ""  # cli subcommand
    what = "process"  # in messages
    probe = "/healthz"  # answers 200 once the process is up

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, startup_timeout_s: float = 60.0,
                 extra_args: Sequence[str] = (), env: dict[str, str] | None = None):
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
            raise RuntimeError(f"the {self.what} is not running; call start() first")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def log_tail(self, n_chars: int = 4000) -> str:
        """The last characters the process wrote to stdout/stderr."""
        if self._tmp is None:
            return ""
        try:
            with open(self._log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - n_chars))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    @property
    def _log_path(self) -> str:
        return os.path.join(self._tmp.name, f"{self.command}.log")

    @property
    def _port_file(self) -> str:
        return os.path.join(self._tmp.name, "port")

    def _args(self) -> list[str]:
        return []

    def spawn(self) -> None:
        """Starts the process without waiting for it; `self.port` is kept if nonzero (restart)."""
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"vista-{self.command}-")
        if os.path.exists(self._port_file):
            os.remove(self._port_file)
        if self._log_file is None:
            # A log file, not a pipe: nobody reads a pipe while the process runs, and a full
            # one would block it. Appended across restarts.
            self._log_file = open(self._log_path, "ab")
        cmd = [sys.executable, "-m", "tools_server.cli", self.command, "--host", self.host,
               "--port", str(self.port), "--port-file", self._port_file, "--exit-with-parent",
               *self._args(), *self.extra_args]
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log_file,
                                      stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, deadline: float | None = None, *, bound_only: bool = False) -> None:
        """Blocks until the process answers its probe (or with `bound_only`, has bound its
        port); raises ToolServerStartError if it exits or `deadline` (time.monotonic) passes."""
        if deadline is None:
            deadline = time.monotonic() + self.startup_timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                raise ToolServerStartError(
                    f"the {self.what} exited with code {code} during start-up; "
                    f"its output ends with:\n{self.log_tail()}")
            if os.path.exists(self._port_file):
                with open(self._port_file) as f:
                    self.port = int(f.read())
                if bound_only or self.probe_ok():
                    return
            if time.monotonic() > deadline:
                raise ToolServerStartError(
                    f"the {self.what} did not answer {self.probe} within "
                    f"{self.startup_timeout_s:g} s; its output ends with:\n{self.log_tail()}")
            time.sleep(0.05)

    def probe_ok(self) -> bool:
        try:
            with _NO_PROXY.open(f"http://{self.host}:{self.port}{self.probe}", timeout=2) as resp:
                return resp.status == 200 and self._probe_body_ok(json.load(resp))
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def _probe_body_ok(self, body) -> bool:
        return True

    def start(self):
        if self._proc is not None:
            return self
        try:
            self.spawn()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _terminate(self, grace_s: float) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self, grace_s: float = 5.0) -> None:
        self._terminate(grace_s)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):
        try:
            self.stop(grace_s=1.0)
        except Exception:
            pass


def _registry_args(registry: str | None, tool_options: Sequence[str]) -> list[str]:
    args = ["--registry", registry] if registry else []
    for option in tool_options:
        args += ["--tool-option", option]
    return args


class LocalWorker(_LocalProcess):
    """One `vista-tools worker` subprocess; ready once its /readyz passes (tools loaded)."""

    command = "worker"
    what = "tool worker"
    probe = "/readyz"

    def __init__(self, *, registry: str | None = None, tool_options: Sequence[str] = (),
                 startup_timeout_s: float = 120.0, **kwargs):
        super().__init__(startup_timeout_s=startup_timeout_s, **kwargs)
        self.registry, self.tool_options = registry, list(tool_options)

    def _args(self) -> list[str]:
        return _registry_args(self.registry, self.tool_options)


class LocalWorkerGroup:
    """N local workers on free ports, restarted on the same port when one dies.

    `worker_args` go to every worker (e.g. ["--max-batch", "1"]); `registry` and
    `tool_options` ("TOOL.OPTION=VALUE") choose and configure its tools.
    """

    def __init__(self, num_workers: int, *, host: str = "127.0.0.1", registry: str | None = None,
                 tool_options: Sequence[str] = (), worker_args: Sequence[str] = (),
                 env: dict[str, str] | None = None, startup_timeout_s: float = 120.0,
                 restart: bool = True, check_interval_s: float = 0.5,
                 max_restart_delay_s: float = 30.0):
        if num_workers < 1:
            raise ValueError(f"num_workers={num_workers} must be ≥ 1")
        self.workers = [LocalWorker(host=host, registry=registry, tool_options=tool_options,
                                    extra_args=worker_args, env=env,
                                    startup_timeout_s=startup_timeout_s)
                        for _ in range(num_workers)]
        self.restart, self.check_interval_s = restart, check_interval_s
        self.max_restart_delay_s = max_restart_delay_s
        self.restarts = [0] * num_workers
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    @property
    def urls(self) -> list[str]:
        return [w.url for w in self.workers]

    def start(self, *, then: Callable[[], None] | None = None) -> "LocalWorkerGroup":
        """Starts every worker and returns once all are ready. `then` runs as soon as all have
        bound their ports, while their models load (LocalToolServer starts the front there)."""
        try:
            for w in self.workers:  # all load their models at the same time
                w.spawn()
            deadline = time.monotonic() + max(w.startup_timeout_s for w in self.workers)
            for w in self.workers:
                w.wait_ready(deadline, bound_only=True)
            if then is not None:
                then()
            for w in self.workers:
                w.wait_ready(deadline)
        except BaseException:
            self.stop()
            raise
        if self.restart:
            self._stopping.clear()
            self._supervisor = threading.Thread(target=self._supervise, name="worker-supervisor",
                                                daemon=True)
            self._supervisor.start()
        return self

    def _supervise(self) -> None:
        delay = [1.0] * len(self.workers)
        spawned = [time.monotonic()] * len(self.workers)
        while not self._stopping.wait(self.check_interval_s):
            for i, w in enumerate(self.workers):
                code = w.returncode
                if code is None or self._stopping.is_set():
                    continue
                # A worker that keeps dying right after start (bad model path, OOM) is retried
                # with a growing delay instead of a tight loop.
                now = time.monotonic()
                if now - spawned[i] < 10.0:
                    if now - spawned[i] < delay[i]:
                        continue
                    delay[i] = min(delay[i] * 2, self.max_restart_delay_s)
                else:
                    delay[i] = 1.0
                log.warning("tool worker on port %d exited with code %s; restarting it. Its "
                            "output ends with:\n%s", w.port, code, w.log_tail(1500))
                try:
                    w.spawn()
                    spawned[i] = time.monotonic()
                    self.restarts[i] += 1
                except OSError:
                    log.exception("restarting the tool worker on port %d failed", w.port)

    def stop(self, grace_s: float = 5.0) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
            self._supervisor = None
        for w in self.workers:  # SIGTERM all first: they drain in parallel
            if w.running:
                w._proc.terminate()
        for w in self.workers:
            w.stop(grace_s)

    def __enter__(self) -> "LocalWorkerGroup":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LocalToolServer(_LocalProcess):
    """The front (`vista-tools serve`), and with `num_workers` > 0 that many workers for the
    model-backed tools, started first and given to the front as `--worker` URLs.

    `registry` ("module:function") and `tool_options` ("TOOL.OPTION=VALUE") go to every
    process; `worker_args` to the workers only (e.g. ["--max-batch", "8"]).
    """

    command = "serve"
    what = "tool server"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, startup_timeout_s: float = 60.0,
                 extra_args: Sequence[str] = (), env: dict[str, str] | None = None,
                 num_workers: int = 0, registry: str | None = None,
                 tool_options: Sequence[str] = (), worker_args: Sequence[str] = ()):
        super().__init__(host=host, port=port, startup_timeout_s=startup_timeout_s,
                         extra_args=extra_args, env=env)
        if num_workers < 0:
            raise ValueError(f"num_workers={num_workers} must be ≥ 0")
        self.num_workers = num_workers
        self.registry, self.tool_options = registry, list(tool_options)
        self.worker_args = list(worker_args)
        self.workers: LocalWorkerGroup | None = None

    def _args(self) -> list[str]:
        args = _registry_args(self.registry, self.tool_options)
        for url in self.workers.urls if self.workers is not None else ():
            args += ["--worker", url]
        return args

    def _probe_body_ok(self, body) -> bool:
        # Ready once its pool has admitted every worker too: the pool's first health check
        # can run while a worker is still loading, and the next comes a second later.
        workers = body.get("workers") or []
        return body.get("status") == "ok" and all(w.get("healthy") for w in workers)

    def start(self) -> "LocalToolServer":
        if self._proc is not None:
            return self
        if not self.num_workers:
            return super().start()
        try:
            # The front starts once the workers have ports, while they load their tools.
            self.workers = LocalWorkerGroup(
                self.num_workers, host=self.host, registry=self.registry,
                tool_options=self.tool_options, worker_args=self.worker_args, env=self.env,
                startup_timeout_s=max(self.startup_timeout_s, 120.0))
            self.workers.start(then=self.spawn)
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace_s: float = 5.0) -> None:
        super().stop(grace_s)  # the front first: it drains its calls while the workers live
        if self.workers is not None:
            self.workers.stop(grace_s)
            self.workers = None
