"""LocalToolServer runs the real `python -m tools_server.cli serve` subprocess; the CLI lists tools."""

import json
import os
import subprocess
import sys

import pytest

from tools_server.cli import main as cli_main
from tools_server.launch import LocalToolServer, ToolServerStartError
from vista_jax.env.tasks.render import render_bar_chart, render_points_diagram
from vista_jax.env.tool_client import SyncToolClient


def test_local_server_serves_the_sync_client_and_stops():
    server = LocalToolServer()
    with server:
        assert server.url.startswith("http://127.0.0.1:") and server.running
        with SyncToolClient(server.url) as client:
            assert client.health() == {"status": "ok", "tools": len(client.list_tools())}
            chart = client.upload_image(render_bar_chart(["Red", "Blue", "Green", "Gold"], [12, 88, 0, 45], seed=5))
            diagram = client.upload_image(render_points_diagram({"P": (40, 40), "Q": (100, 120)}))
            results = client.batch([("chart_to_table", {"image": chart}),
                                    ("measure_length", {"image": diagram, "point_a": "P", "point_b": "Q"}),
                                    ("crop", {"image": chart, "box": [0, 0, 999, 10]})])
            assert results[0]["text"] == "Red | 12\nBlue | 88\nGreen | 0\nGold | 45"
            assert results[1]["data"]["length"] == 100.0
            assert results[2]["error"]["code"] == "invalid_argument" and "320x240" in results[2]["error"]["message"]
            assert client.call("calculator", {"expression": "41 - 23"})["text"] == "18"
            assert client.get_image(chart).size == (320, 240)
        proc_pid = server.pid
    assert not server.running and server.pid is None
    with pytest.raises(ProcessLookupError):
        import os
        os.kill(proc_pid, 0)


def test_start_failure_reports_the_server_output():
    server = LocalToolServer(extra_args=["--no-such-flag"], startup_timeout_s=30)
    with pytest.raises(ToolServerStartError) as info:
        server.start()
    assert "no-such-flag" in str(info.value)
    assert not server.running


def test_cli_list_prints_the_tool_schemas(capsys):
    assert cli_main(["list", "--family", "math"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert [t["function"]["name"] for t in body["tools"]] == [
        "calculator", "statistics", "solve_equation", "simplify", "geometry_solver", "python"]
    out = subprocess.run([sys.executable, "-m", "tools_server.cli", "list"], capture_output=True, text=True,
                         check=True).stdout
    assert len(json.loads(out)["tools"]) == 26


def test_sigterm_drains_and_exits_cleanly_and_a_token_is_enforced():
    import os
    env = dict(os.environ, VISTA_TOOLS_TOKEN="tok-123")
    server = LocalToolServer(env=env).start()
    try:
        with SyncToolClient(server.url, token="wrong", max_retries=0) as client:
            assert client.call("calculator", {"expression": "2+2"})["ok"] is False
        with SyncToolClient(server.url, token="tok-123") as client:
            assert client.call("calculator", {"expression": "2+2"})["text"] == "4"
        proc = server._proc
        proc.terminate()
        assert proc.wait(10) == 0  # drained (nothing in flight) and exited by itself
        assert "draining" in server.log_tail()
    finally:
        server.stop()


def test_non_loopback_bind_without_a_token_is_refused():
    out = subprocess.run([sys.executable, "-m", "tools_server.cli", "serve", "--host", "0.0.0.0",
                          "--port", "0"], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in __import__("os").environ.items()
                              if k != "VISTA_TOOLS_TOKEN"})
    assert out.returncode != 0 and "not a loopback address" in out.stderr


def test_write_port_file_leaves_only_the_number(tmp_path):
    from tools_server.process_args import write_port_file

    path = str(tmp_path / "port")
    write_port_file(path, 8123)
    write_port_file(path, 9001)
    assert open(path).read() == "9001" and sorted(os.listdir(tmp_path)) == ["port"]


def test_wait_for_stop_returns_on_sigterm_after_calling_ready():
    import asyncio
    import signal

    import threading

    from tools_server.process_args import wait_for_stop

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread (else the SIGTERM would kill pytest)")
    events = []

    async def main():
        def ready():
            events.append("ready")  # the handler is in place: this SIGTERM must not kill us
            os.kill(os.getpid(), signal.SIGTERM)

        await asyncio.wait_for(wait_for_stop(ready=ready), 5)
        events.append("stopped")

    asyncio.run(main())
    assert events == ["ready", "stopped"]


def test_wait_for_stop_returns_when_the_parent_exits(monkeypatch):
    import asyncio

    from tools_server import process_args

    parents = iter([os.getppid(), os.getppid()])  # then re-parented (to 1, say)
    monkeypatch.setattr(process_args.os, "getppid", lambda: next(parents, 1))

    async def main():
        t0 = asyncio.get_running_loop().time()
        await asyncio.wait_for(process_args.wait_for_stop(exit_with_parent=True, poll_s=0.02), 5)
        return asyncio.get_running_loop().time() - t0

    assert 0.03 < asyncio.run(main()) < 2
