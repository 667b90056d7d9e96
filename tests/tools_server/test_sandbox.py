"""The sandbox and the `python` tool: known answers, and hostile programs that must fail cleanly.

Every hostile run is checked for a clear result, for no process left behind (the code is on
the child's command line, so a leftover shows up in /proc with its marker; and the test
process must have no unreaped child), and that the sandbox still runs a normal program.
Hostile cases run under both isolations when bwrap works on this machine.
"""

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tools_server.registry import INVALID_ARGUMENT, MISSING_ARGUMENT, UNKNOWN_ARGUMENT, ToolError
from tools_server.sandbox import Limits, Sandbox, SandboxError
from tools_server.tools import ALL_TOOLS
from tools_server.tools.code import Python

SHORT = Limits(timeout_s=0.2, startup_s=0.25)  # hostile runs: killed after 0.45 s


@pytest.fixture(scope="module", params=["process", "bwrap"])
def sandbox(request):
    try:
        return Sandbox(request.param)
    except SandboxError as exc:
        pytest.skip(f"no bwrap here: {exc}")


@pytest.fixture(scope="module")
def tool():
    return Python(isolation="process")


def _pids_with(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        pids.append(int(entry))
            except OSError:
                pass  # exited while we looked
    return pids


def assert_none_left(marker: str) -> None:
    """No live process of the run (a SIGKILLed one may take a moment to free its memory)."""
    deadline = time.monotonic() + 2
    while _pids_with(marker) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _pids_with(marker) == [], "a process of the run survived it"


def run_checked(sandbox: Sandbox, code: str, limits: Limits = Limits()):
    """Runs `code`; asserts nothing of it survives and the sandbox still works afterwards."""
    marker = f"marker-{uuid.uuid4().hex}"
    result = sandbox.run(f"# {marker}\n{code}", limits)
    assert_none_left(marker)
    with pytest.raises(ChildProcessError):  # no child at all: everything was reaped
        os.waitpid(-1, os.WNOHANG)
    after = sandbox.run("print(6 * 7)")
    assert (after.exit_code, after.stdout) == (0, "42\n")
    return result


def refused_lines(stdout: str) -> list[str]:
    lines = stdout.strip().splitlines()
    assert lines and all(": refused " in line for line in lines), stdout
    return lines


TRY = """
def attempt(name, fn):
    try:
        fn()
        print(name + ": ALLOWED")
    except BaseException as exc:
        print(f"{name}: refused {type(exc).__name__}: {exc}")
"""


# ------------------------------------------------------------------------ normal programs


def test_arithmetic_and_stdlib_modules(sandbox):
    code = """
import math, fractions, decimal, statistics, itertools, collections, re, json
print(2 ** 100, math.comb(10, 3), fractions.Fraction(1, 3) + fractions.Fraction(1, 6))
print(decimal.Decimal('0.1') + decimal.Decimal('0.2'), statistics.median([3, 1, 2]))
print(list(itertools.permutations('ab')), collections.Counter('aab').most_common(1))
print(re.findall(r'\\d+', 'a1b22'), json.dumps({'x': [1, 2]}))
"""
    result = sandbox.run(code)
    assert result.exit_code == 0 and result.stderr == "" and not result.timed_out
    assert result.stdout.splitlines() == [
        "1267650600228229401496703205376 120 1/2", "0.3 2",
        "[('a', 'b'), ('b', 'a')] [('a', 2)]", "['1', '22'] {\"x\": [1, 2]}"]


def test_sympy_and_numpy(sandbox):
    code = """
import sympy as sp, numpy as np
x = sp.symbols('x')
print(sp.solve(x**2 - 4, x), sp.factor(x**2 - 1), sp.integrate(2 * x, (x, 0, 3)))
print(np.linalg.det(np.array([[2.0, 1.0], [1.0, 3.0]])).round(6), np.arange(10).sum())
"""
    result = sandbox.run(code, Limits(timeout_s=10))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["[-2, 2] (x - 1)*(x + 1) 9", "5.0 45"]


def test_exception_shows_the_users_traceback(sandbox):
    result = sandbox.run("def f(n):\n    return n / 0\n\nf(1)")
    assert result.exit_code == 1 and not result.timed_out and result.limit is None
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert 'File "<code>", line 2, in f' in result.stderr and "return n / 0" in result.stderr
    assert result.stderr.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "<sandbox>" not in result.stderr  # the launcher's frame is not shown


def test_syntax_error_exit_code_and_stdin(sandbox):
    syntax = sandbox.run("def f(:\n    pass")
    assert syntax.exit_code == 1 and "SyntaxError" in syntax.stderr
    exited = sandbox.run("import sys\nprint(repr(sys.stdin.read()))\nsys.exit(3)")
    assert (exited.exit_code, exited.stdout) == (3, "''\n")  # stdin is empty


def test_fresh_private_workdir_is_removed(sandbox):
    code = "import os\nprint(os.listdir('.'))\nopen('a.txt', 'w').write('hi')\n" \
           "print(open('a.txt').read(), os.getcwd())"
    result = sandbox.run(code)
    listing, last = result.stdout.splitlines()
    text, cwd = last.split(" ")
    assert (listing, text) == ("[]", "hi")
    assert not os.path.exists(cwd)


# ------------------------------------------------------------------------ hostile programs


def test_infinite_loop_times_out(sandbox):
    start = time.monotonic()
    result = run_checked(sandbox, "print('started')\nwhile True:\n    pass", SHORT)
    assert result.timed_out and result.exit_code == -9 and "wall-clock" in result.limit
    assert result.stdout == "started\n"  # output before the kill is kept
    assert time.monotonic() - start < SHORT.timeout_s + SHORT.startup_s + 1.5


def test_sleep_and_leaving_the_process_group_still_killed(sandbox):
    result = run_checked(sandbox, "import os, time\ntry:\n    os.setsid()\nexcept OSError:\n"
                                  "    pass\ntime.sleep(100)", SHORT)
    assert result.timed_out


def test_cpu_bound_loop_hits_the_cpu_limit(sandbox):
    start = time.monotonic()
    result = run_checked(sandbox, "while True:\n    pass", Limits(timeout_s=5, cpu_s=1))
    assert not result.timed_out and result.exit_code in (-24, -9)  # SIGXCPU
    assert "CPU time limit" in result.limit
    assert time.monotonic() - start < 4


@pytest.mark.parametrize("code", ["x = bytearray(10**10)",
                                  "x = []\nwhile True:\n    x.append(bytearray(10**7))"])
def test_memory_bomb(sandbox, code):
    result = run_checked(sandbox, code, Limits(memory_bytes=256 << 20))
    assert result.exit_code != 0 and not result.timed_out
    assert "MemoryError" in result.stderr or "memory" in (result.limit or "")


def test_processes_are_refused(sandbox):
    code = TRY + """
import os, subprocess, _posixsubprocess
attempt("fork", os.fork)
attempt("fork loop", lambda: [os.fork() for _ in range(100)])
attempt("popen", lambda: subprocess.Popen(["sleep", "100"]))
attempt("run", lambda: subprocess.run(["id"]))
attempt("system", lambda: os.system("sleep 100 &"))
attempt("posix_spawn", lambda: os.posix_spawn("/bin/sleep", ["sleep", "100"], {}))
attempt("execv", lambda: os.execv("/bin/sh", ["sh"]))
attempt("fork_exec", lambda: _posixsubprocess.fork_exec())
attempt("kill parent", lambda: os.kill(os.getppid(), 9))
attempt("killpg", lambda: os.killpg(0, 9))
"""
    result = run_checked(sandbox, code)
    assert len(refused_lines(result.stdout)) == 10 and result.exit_code == 0


def test_thread_bomb_is_contained(sandbox):
    code = "import threading, time\nfor _ in range(100000):\n" \
           "    threading.Thread(target=time.sleep, args=(100,)).start()"
    result = run_checked(sandbox, code, SHORT)
    assert result.timed_out or result.exit_code != 0


def test_files_outside_the_workdir_are_refused(sandbox):
    code = TRY + """
import os, sys, pathlib, shutil
site = sys.path[-1]
attempt("read passwd", lambda: open("/etc/passwd").read())
attempt("read relative", lambda: open("../" * 12 + "etc/passwd").read())
attempt("os.open", lambda: os.open("/etc/passwd", os.O_RDONLY))
attempt("pathlib", lambda: pathlib.Path("/etc/hostname").read_text())
attempt("environ", lambda: open("/proc/self/environ").read())
attempt("parent environ", lambda: open(f"/proc/{os.getppid()}/environ").read())
attempt("listdir /", lambda: os.listdir("/"))
attempt("scandir /etc", lambda: list(os.scandir("/etc")))
attempt("write site", lambda: open(site + "/evil.py", "w").write("x"))
attempt("write tmp", lambda: open("/tmp/evil.txt", "w").write("x"))
attempt("mkdir", lambda: os.mkdir("/tmp/evil-dir"))
attempt("remove", lambda: os.remove(site + "/README.txt"))
open("mine.txt", "w").write("x")
attempt("copy out", lambda: shutil.copy("mine.txt", "/tmp/evil.txt"))
attempt("symlink", lambda: os.symlink("/etc/passwd", "p"))
attempt("hardlink", lambda: os.link("/etc/passwd", "p"))
attempt("chdir", lambda: os.chdir("/"))
attempt("open dir fd", lambda: os.open(site, os.O_RDONLY))
attempt("pyc", lambda: open("x.pyc", "wb") and open("x.pyc", "rb"))
"""
    result = run_checked(sandbox, code)
    assert len(refused_lines(result.stdout)) == 18
    assert not os.path.exists("/tmp/evil.txt") and not os.path.exists("/tmp/evil-dir")


def test_huge_file_and_many_files_hit_limits(sandbox):
    big = run_checked(sandbox, "f = open('big', 'wb')\nfor _ in range(100):\n"
                               "    f.write(b'x' * 10**6)", Limits(file_bytes=8 << 20))
    assert big.exit_code == 1 and "File too large" in big.stderr
    many = run_checked(sandbox, "for i in range(1000):\n    open(f'f{i}', 'w').write('x')")
    assert many.exit_code == 1 and "may not create more than 64 files" in many.stderr


def test_network_is_refused_and_never_reaches_the_host(sandbox):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(0)
        port = listener.getsockname()[1]
        code = TRY + f"""
import socket, urllib.request
attempt("socket", lambda: socket.socket())
attempt("connect", lambda: socket.create_connection(("127.0.0.1", {port}), timeout=1))
attempt("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(
    b"x", ("127.0.0.1", {port})))
attempt("dns", lambda: socket.getaddrinfo("example.com", 80))
attempt("urllib", lambda: urllib.request.urlopen("http://127.0.0.1:{port}/", timeout=1))
"""
        result = run_checked(sandbox, code)
        assert len(refused_lines(result.stdout)) == 5
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected


@pytest.mark.parametrize("code", ["print('x' * 10**8)", "while True:\n    print('y' * 100)",
                                  "import sys\nwhile True:\n    sys.stderr.write('e' * 1000)"])
def test_huge_output_is_truncated_quickly(sandbox, code):
    start = time.monotonic()
    result = run_checked(sandbox, code, Limits(output_bytes=4000))
    assert result.truncated and not result.timed_out and result.exit_code == -9
    assert len(result.stdout) <= 4000 and len(result.stderr) <= 4000
    assert max(len(result.stdout), len(result.stderr)) == 4000
    assert time.monotonic() - start < 3


def test_ctypes_and_native_code_are_refused(sandbox):
    code = TRY + """
import ctypes, sys, glob, importlib.util
lib = glob.glob(sys.path[2] + "/_ctypes*.so")[0]
attempt("CDLL", lambda: ctypes.CDLL(None))
attempt("pythonapi", lambda: ctypes.pythonapi)
attempt("memmove", lambda: ctypes.memmove)
attempt("import _ctypes", lambda: __import__("_ctypes"))
attempt("reimport", lambda: (sys.modules.pop("ctypes"), __import__("ctypes")))
attempt("load .so", lambda: importlib.util.module_from_spec(
    importlib.util.spec_from_file_location("_ctypes", lib)))
attempt("cffi", lambda: __import__("_cffi_backend"))
attempt("subinterpreter", lambda: __import__("_xxsubinterpreters"))
attempt("testcapi", lambda: __import__("_testcapi"))
"""
    result = run_checked(sandbox, code)
    assert len(refused_lines(result.stdout)) == 9


def test_server_environment_is_not_visible(sandbox, monkeypatch):
    monkeypatch.setenv("VISTA_TEST_SECRET", "hunter2-secret")
    result = run_checked(sandbox, "import os\nprint(sorted(os.environ))\n"
                                  "print([k for k in os.environ if 'SECRET' in k])")
    assert result.exit_code == 0 and "hunter2" not in result.stdout
    assert result.stdout.splitlines()[1] == "[]"


def test_removing_the_hook_or_escaping_through_builtins_fails(sandbox):
    code = TRY + """
import gc, sys, builtins, marshal, resource, types
hooks = [o for o in gc.get_objects()
         if isinstance(o, types.FunctionType) and o.__code__.co_filename == "<sandbox>"]
assert hooks, "the sandbox's functions are reachable through gc"
noop = (lambda *a: None).__code__
attempt("replace __code__", lambda: [setattr(h, "__code__", noop) for h in hooks])
attempt("clear __defaults__", lambda: [setattr(h, "__defaults__", None) for h in hooks])
attempt("code.replace", lambda: (lambda: 1).__code__.replace(co_code=b"\\x00" * 4))
attempt("marshal", lambda: marshal.loads(marshal.dumps((lambda: 1).__code__)))
attempt("settrace", lambda: sys.settrace(lambda *a: None))
attempt("raise rlimit", lambda: resource.setrlimit(resource.RLIMIT_CPU, (1000, 1000)))
attempt("builtins import", lambda: __builtins__.__import__("os").system("id"))
attempt("sys.modules", lambda: sys.modules["posix"].system("id"))
sys.addaudithook(lambda *a: None)
builtins.isinstance = lambda *a: True
sys.modules["posix"].getcwd = lambda: "/"
attempt("after tampering", lambda: open("/etc/passwd").read())
"""
    result = run_checked(sandbox, code)
    assert len(refused_lines(result.stdout)) == 9


def test_concurrent_runs_are_independent(sandbox):
    cases = [("print(sum(range({i})))", Limits(), lambda r, i: r.stdout == f"{sum(range(i))}\n"),
             ("while True:\n    pass", SHORT, lambda r, i: r.timed_out),
             ("print('z' * 10**7)", Limits(output_bytes=1000), lambda r, i: r.truncated)]
    jobs = [(cases[i % 3], i) for i in range(9)]
    marker = f"marker-{uuid.uuid4().hex}"

    def one(job):
        (code, limits, check), i = job
        return check(sandbox.run(f"# {marker}\n" + code.format(i=i), limits), i)

    with ThreadPoolExecutor(9) as pool:
        assert all(pool.map(one, jobs))
    assert_none_left(marker)
    assert threading.active_count() < 10


def test_server_death_takes_the_run_with_it(sandbox):
    """The server is SIGKILLed mid-run: bwrap's die-with-parent / setpriv's pdeathsig act."""
    marker = f"marker-{uuid.uuid4().hex}"
    code = f"# {marker}\nprint('in', flush=True)\nimport time\ntime.sleep(100)"
    server = subprocess.Popen(
        [sys.executable, "-c", "import sys; from tools_server.sandbox import Sandbox, Limits; "
         "Sandbox(sys.argv[1]).run(sys.argv[2], Limits(timeout_s=30))", sandbox.isolation, code],
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    try:
        deadline = time.monotonic() + 10
        while len(_pids_with(marker)) < 2 and time.monotonic() < deadline:  # server + run
            time.sleep(0.02)
        assert len(_pids_with(marker)) >= 2, "the run did not start"
    finally:
        server.kill()
        server.wait()
    assert_none_left(marker)
    left = [n for n in os.listdir(sandbox.tmp_root) if n.startswith(f"pysandbox-{server.pid}-")]
    assert left, "the killed server's workdir should still be there"
    Sandbox("process")  # a new server removes workdirs of dead ones
    assert not [n for n in os.listdir(sandbox.tmp_root) if n in left]


def test_auto_falls_back_when_bwrap_cannot_run(tmp_path, monkeypatch):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert Sandbox("auto").isolation == "process"
    with pytest.raises(SandboxError, match="No permissions to create new namespace"):
        Sandbox("bwrap")


# ------------------------------------------------------------------------ the tool


def _call(tool, **arguments):
    args = tool.Arguments.model_validate(arguments)
    return tool.run(args, None)


def test_tool_result_contract(tool):
    out = _call(tool, code="print(1 + 1)")
    assert out.text == "2" and out.images == []
    assert set(out.data) == {"exit_code", "timed_out", "truncated", "stdout", "stderr",
                             "duration_s"}
    assert (out.data["exit_code"], out.data["stdout"], out.data["timed_out"]) == (0, "2\n", False)
    assert _call(tool, code="x = 1").text == "[no output: use print() to show results]"


def test_tool_reports_errors_timeouts_and_truncation_as_results(tool):
    error = _call(tool, code="print('partial')\nraise ValueError('bad value')")
    assert error.text.startswith("partial\n[exit code 1]\n[stderr]\nTraceback")
    assert error.text.endswith("ValueError: bad value") and error.data["exit_code"] == 1
    slow = _call(tool, code="while True:\n    pass", timeout_s=0.2)
    assert slow.data["timed_out"] and "[timed out: stopped after 0.2 s" in slow.text
    flood = _call(tool, code="print('x' * 10**8)")
    assert flood.data["truncated"] and "[output truncated at 16000 bytes" in flood.text
    assert len(flood.text) < 16_200


@pytest.mark.parametrize("arguments, code, where", [
    ({"code": "x" * 20_001}, INVALID_ARGUMENT, "'code'"),
    ({"code": ""}, INVALID_ARGUMENT, "'code'"),
    ({"code": "print(1)\x00"}, INVALID_ARGUMENT, "'code'"),
    ({"code": "print('\ud800')"}, INVALID_ARGUMENT, "'code'"),
    ({"code": "print(1)", "timeout_s": 0.01}, INVALID_ARGUMENT, "'timeout_s'"),
    ({"code": "print(1)", "timeout_s": 60}, INVALID_ARGUMENT, "'timeout_s'"),
    ({"code": "print(1)", "timeout_s": "5"}, INVALID_ARGUMENT, "'timeout_s'"),
    ({"code": 5}, INVALID_ARGUMENT, "'code'"),
    ({}, MISSING_ARGUMENT, "'code'"),
    ({"code": "print(1)", "stdin": "x"}, UNKNOWN_ARGUMENT, "'stdin'"),
])
def test_tool_bad_arguments(arguments, code, where):
    from tools_server.registry import ToolRegistry

    registry = ToolRegistry([Python(isolation="process")])
    with pytest.raises(ToolError) as info:
        tool, args = registry.validate("python", arguments)
        tool.run(args, None)
    assert info.value.code == code and where in info.value.message


def test_tool_is_the_last_math_tool():
    math_tools = [c for c in ALL_TOOLS if c.family == "math"]
    assert math_tools[-1] is Python and Python.name == "python"


def test_tool_deadline_covers_its_own_limit_up_to_the_maximum(tool):
    from tools_server.app import ServerConfig
    from tools_server.tools.code import MAX_TIMEOUT_S

    for timeout_s in (0.1, 5.0, MAX_TIMEOUT_S):
        args = tool.Arguments(code="pass", timeout_s=timeout_s)
        # The sandbox's kill comes at timeout_s + startup_s; the server waits longer than that.
        assert tool.deadline_s(args) > timeout_s + tool.limits.startup_s
    # At the maximum the server's default deadline alone would answer `timeout` first.
    assert tool.deadline_s(tool.Arguments(code="pass", timeout_s=MAX_TIMEOUT_S)) \
        > ServerConfig().call_timeout_s
