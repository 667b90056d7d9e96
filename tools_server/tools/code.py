"""The `python` tool: runs a short program written by the policy and returns what it printed.

Each call runs in a fresh, limited interpreter (`tools_server.sandbox`: bubblewrap
namespaces when the machine has working bwrap, else rlimits + an audit hook in a
subprocess; see its docstring for what that stops and what it does not).

Result contract: a program that ran is an `ok: true` result whatever its outcome, because
the policy must see the outcome to correct its code. A raised exception (traceback shown,
exit code 1), `sys.exit(n)`, a timeout, the output cap and a resource kill are all reported
in the text in square brackets and in `data` ({"exit_code", "timed_out", "truncated",
"stdout", "stderr", "duration_s"}; exit_code is negative for a signal, e.g. -9). Only bad
arguments (`invalid_argument`) and a sandbox that cannot start (`execution_failed`, the
service's fault) are errors.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

from pydantic import Field

from tools_server.registry import (EXECUTION_FAILED, INVALID_ARGUMENT, Tool, ToolArguments,
                                   ToolContext, ToolError, ToolOutput)
from tools_server.sandbox import Limits, Result, Sandbox, SandboxError, default_sandbox

MAX_CODE_CHARS = 20_000
MIN_TIMEOUT_S, MAX_TIMEOUT_S, DEFAULT_TIMEOUT_S = 0.1, 10.0, 5.0
STDERR_TAIL_CHARS = 2_000  # of stderr shown in the text (the traceback's end is what matters)
# Beyond timeout_s + start-up: the kill, the reap, the workdir's removal, and a short wait
# for a blocking thread under load.
DEADLINE_MARGIN_S = 1.0


def render_result(result: Result, limits: Limits) -> str:
    """The text the policy sees: stdout, then bracketed notes and the stderr tail."""
    parts = [result.stdout.rstrip("\n")] if result.stdout else []
    if result.truncated:
        parts.append(f"[output truncated at {limits.output_bytes} bytes; the program was "
                     "stopped there]")
    if result.timed_out:
        parts.append(f"[timed out: stopped after {limits.timeout_s:g} s of wall-clock time]")
    elif result.limit and not result.truncated:
        parts.append(f"[stopped: {result.limit}]")
    if result.exit_code not in (0, None) and not (result.timed_out or result.truncated):
        parts.append(f"[exit code {result.exit_code}]")
    if result.stderr:
        tail = result.stderr.rstrip("\n")
        if len(tail) > STDERR_TAIL_CHARS:
            tail = "..." + tail[-STDERR_TAIL_CHARS:]
        parts.append("[stderr]\n" + tail)
    if not parts:
        return "[no output: use print() to show results]"
    return "\n".join(parts)


class Python(Tool):
    """Runs a short Python 3 program and returns what it prints (and the traceback on an error).

    Use print() to show results; the value of the last line is not shown. Available: the
    standard library (math, fractions, decimal, statistics, itertools, collections, re,
    json, ...), sympy and numpy. Every call is a fresh process: nothing persists between
    calls. No network, no subprocesses, no files outside the program's own empty working
    directory. Limits: timeout_s of wall-clock time (default 5, at most 10), 1 GiB of
    memory, 16000 bytes of output. Errors, timeouts and limits are reported in [brackets].
    """

    name = "python"
    family = "math"
    blocking = True  # a thread waits on the sandboxed process for up to timeout_s

    class Arguments(ToolArguments):
        code: Annotated[str, Field(
            min_length=1, max_length=MAX_CODE_CHARS,
            description="the program, e.g. import sympy as sp\\nx = sp.symbols('x')\\n"
                        "print(sp.solve(x**2 - 4, x))")]
        timeout_s: Annotated[float, Field(
            ge=MIN_TIMEOUT_S, le=MAX_TIMEOUT_S,
            description="wall-clock time limit in seconds (importing sympy takes ~0.5 s)")
        ] = DEFAULT_TIMEOUT_S

    def __init__(self, isolation: str = "auto", memory_bytes: int = Limits.memory_bytes,
                 output_bytes: int = Limits.output_bytes):
        """`isolation`: "auto" (bwrap when it works here), "bwrap" or "process"."""
        self.sandbox = default_sandbox() if isolation == "auto" else Sandbox(isolation)
        self.limits = Limits(memory_bytes=memory_bytes, output_bytes=output_bytes)

    def deadline_s(self, args: Arguments) -> float:
        # The sandbox stops the program itself and reports it as an ok result with the
        # partial output; the server must not answer `timeout` before that.
        return args.timeout_s + self.limits.startup_s + DEADLINE_MARGIN_S

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        limits = dataclasses.replace(self.limits, timeout_s=args.timeout_s)
        try:
            result = self.sandbox.run(args.code, limits)
        except ValueError as exc:
            raise ToolError(INVALID_ARGUMENT, f"argument 'code': {exc}") from None
        except SandboxError as exc:
            raise ToolError(EXECUTION_FAILED, f"the sandbox could not run the code: {exc}") \
                from None
        data = {"exit_code": result.exit_code, "timed_out": result.timed_out,
                "truncated": result.truncated, "stdout": result.stdout, "stderr": result.stderr,
                "duration_s": round(result.duration_s, 3)}
        return ToolOutput(render_result(result, limits), [], data)
