"""Runs untrusted Python source in a limited subprocess: the isolation behind the `python` tool.

Each run gets a fresh interpreter (`python -I -S`: no user site, no PYTHON* variables, no
.pth files; the stdlib and site-packages directories are put on sys.path explicitly), a
fresh private temp dir as cwd (deleted after), an empty stdin, a scrubbed environment
(PATH, a UTF-8 locale, one BLAS thread, HOME/TMPDIR = the workdir) and these layers,
outermost first:

1. bubblewrap (`bwrap`), when it is installed and a whole run works under it here (probed
   once, at construction; Docker's default seccomp profile, for one, forbids the user
   namespace it needs): new user, pid, network, ipc, uts and cgroup namespaces; a read-only
   view of /usr, the Python prefix and site-packages only (no /etc, /home, /root, host
   /tmp); the workdir is a size-capped tmpfs; all capabilities dropped; the interpreter is
   the namespace's pid 1 and dies with the server. This is the only layer meant as a
   boundary. Firejail is not supported: bwrap is what the project tests.
   Without bwrap, `setpriv` (util-linux), when present, gives no_new_privs, an empty
   capability bounding set (so root cannot raise its hard rlimits, chroot, mknod, ...) and
   a parent-death SIGKILL.
2. rlimits, set in the child before the code runs: CPU seconds (SIGXCPU, then SIGKILL a
   second later; under bwrap SIGKILL at once, as pid 1 never gets SIGXCPU), address space,
   file size, open files, no core dumps, and process count (RLIMIT_NPROC is not enforced
   for uid 0, so it only counts when the server is not root: against fork bombs as root,
   the hook and the process-group kill are what work).
3. An audit hook (PEP 578), installed before the code runs. Python offers no way to remove
   an audit hook; this one's state is immutable (default arguments holding tuples,
   frozensets and builtin functions captured before the code runs, so monkeypatching `os`,
   `builtins` or `sys.modules` does not change its checks), and changing the `__code__` /
   `__defaults__` of the sandbox's own functions (found through `gc`) is refused. It
   refuses: creating processes (fork, exec, spawn, system, subprocess), signalling
   processes, every socket operation, opening a file outside the workdir except to read the
   stdlib and site-packages (writes only in the workdir; .pyc files there are refused;
   opening directories or device files with os.open is refused, so no dir_fd tricks),
   symlinks and hard links, listing directories outside the readable roots, changing files
   outside the workdir, creating more than `max_created_files` files, importing ctypes /
   cffi / the CPython test and subinterpreter modules or any extension module outside the
   stdlib and site-packages, building code objects (`CodeType`, `code.replace`),
   `marshal.loads` outside the import system, `sys.settrace` / `setprofile` /
   `addaudithook`, and changing rlimits. Two denied modules are replaced by stand-ins,
   because libraries import them unconditionally: `_posixsubprocess` (which would fork
   without an audit event; `subprocess` imports it) by one whose fork_exec refuses, and
   `ctypes` (sympy asks it for sizeof(c_long)) by one that knows only C type sizes. So
   `import ctypes` succeeds but every foreign call or memory access is refused, and scipy,
   which needs real ctypes, does not import.
4. The parent: a wall-clock deadline (`timeout_s` plus a start-up allowance), an output cap
   (it reads at most cap+1 bytes of each stream, then kills), and on every exit path it
   SIGKILLs the process group and the process before reaping it (an unreaped pid cannot be
   reused, so the kill cannot hit a stranger). It is safe to call from many threads at once.

Threat model, honestly: this is defence in depth for a training cluster, against buggy or
reward-hacking policy code (infinite loops, memory bombs, fork bombs, huge outputs, reading
the host's files or environment, network calls), not a security boundary against a
determined attacker without bwrap. In-process hooks share the attacker's address space:
numpy's `as_strided` (or any CPython memory-safety bug, cf. Lib/test/crashers) gives raw
memory access from which the hook can be disabled, and monkeypatching the import system's
helpers can still feed it crafted bytecode. `os.stat` and friends have no audit event, so
the code can learn whether a path exists. Without bwrap, the process runs as the server's
user (root in our containers: the hook alone keeps it from protected files), shares the
host's network namespace (the hook alone refuses sockets), and can fill the disk with
`max_created_files` files of `file_bytes` each. No cgroup is used: RLIMIT_AS (virtual
memory) is the only memory limit, and a pid limit across runs does not exist. Under bwrap,
CPU time is not reported (bwrap does not pass its child's rusage on), an exit status of
129..192 reads as a signal, and a run killed at a limit may stay a zombie for a moment
until the container's init reaps it.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import threading
import time

_WORKDIR_PREFIX = "pysandbox-"  # then the server's pid: a dead server's dirs can be removed
_SETUP_FAILED_EXIT = 112  # the child's exit code when the sandbox itself failed to start
_SETUP_FAILED_PREFIX = "sandbox setup failed:"
_DENIED_MODULES = (  # top-level modules that give native-code, process or interpreter escapes
    "ctypes", "_ctypes", "_ctypes_test", "cffi", "_cffi_backend", "_posixsubprocess",
    "_testcapi", "_testinternalcapi", "_testbuffer", "_testmultiphase", "_testsinglephase",
    "_testimportmultiple", "_testclinic", "_xxtestfuzz", "_xxsubinterpreters",
    "_xxinterpchannels", "_interpreters", "_interpchannels", "_interpqueues")
_READABLE_DEVICES = ("/dev/null", "/dev/urandom", "/dev/random")
_CHILD_ENV = {  # everything else of the server's environment stays out
    "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
    "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one run may use. Sizes in bytes, times in seconds."""

    timeout_s: float = 5.0  # wall clock of the code (startup_s is added)
    startup_s: float = 0.5  # allowance for interpreter (and bwrap) start-up, under load
    cpu_s: int | None = None  # RLIMIT_CPU; None: ceil(timeout_s) + 1
    memory_bytes: int = 1 << 30  # RLIMIT_AS (virtual); sympy + numpy need ~300 MiB
    file_bytes: int = 16 << 20  # RLIMIT_FSIZE: the largest file the code may write
    max_created_files: int = 64  # files and directories the code may create in its workdir
    disk_bytes: int = 64 << 20  # size of the workdir tmpfs (bwrap only)
    open_files: int = 64  # RLIMIT_NOFILE
    processes: int = 64  # RLIMIT_NPROC (threads count too; not enforced for root)
    output_bytes: int = 16_000  # cap of each of stdout and stderr

    def cpu_limit(self) -> int:
        return self.cpu_s if self.cpu_s is not None else math.ceil(self.timeout_s) + 1


@dataclasses.dataclass(frozen=True)
class Result:
    """How a run ended. `exit_code` is negative for a signal (-9: SIGKILL)."""

    exit_code: int
    timed_out: bool  # killed at the wall-clock deadline
    truncated: bool  # an output stream passed the cap: the process was killed there
    stdout: str
    stderr: str
    duration_s: float
    cpu_s: float | None  # user + system CPU time of the child; None under bwrap (not known)
    limit: str | None  # which limit stopped it, in words, or None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.truncated


class SandboxError(RuntimeError):
    """The sandbox itself could not run the code (not the code's fault)."""


# --------------------------------------------------------------------------------------------
# Child side. These two functions run inside the sandboxed interpreter: their source is sent
# with `-c`, so they import what they need themselves and use no module globals.


def _make_audit_hook(workdir: str, read_roots: tuple[str, ...], import_roots: tuple[str, ...],
                     readable_devices: tuple[str, ...], denied_modules: tuple[str, ...],
                     max_created_files: int):
    """The audit hook, and the path resolver it uses; all their state is in default args."""
    import posix
    import sys

    importlib_external = sys.modules["_frozen_importlib_external"]  # the import system's own

    def resolve(path, _getcwd=posix.getcwd, _lstat=posix.lstat, _readlink=posix.readlink,
                _OSError=OSError, _PermissionError=PermissionError, _type=type, _str=str,
                _bytes=bytes):
        """The absolute, symlink-free form of a str/bytes path, as the kernel would see it."""
        if _type(path) is _bytes:
            path = path.decode("utf-8", "surrogateescape")
        if _type(path) is not _str:
            raise _PermissionError("sandbox: paths must be plain strings")
        if not path.startswith("/"):
            path = _getcwd() + "/" + path
        todo = path.split("/")[::-1]
        done = []
        hops = 0
        while todo:
            name = todo.pop()
            if name in ("", "."):
                continue
            if name == "..":
                if done:
                    done.pop()
                continue
            candidate = "/" + "/".join(done + [name])
            try:
                mode = _lstat(candidate).st_mode
            except _OSError:
                done.append(name)  # does not exist (yet): nothing to resolve
                continue
            if mode & 0o170000 == 0o120000:
                hops += 1
                if hops > 40:
                    raise _PermissionError("sandbox: too many symbolic links")
                target = _readlink(candidate)
                if target.startswith("/"):
                    done = []
                todo.extend(target.split("/")[::-1])
            else:
                done.append(name)
        return "/" + "/".join(done)

    def under(path, roots, _len=len):
        for root in roots:
            if path == root or (path.startswith(root) and path[_len(root)] == "/"):
                return True
        return False

    def hook(event, args, _resolve=resolve, _under=under, _workdir=(workdir,),
             _read_roots=read_roots + (workdir,), _import_roots=import_roots,
             _devices=frozenset(readable_devices), _denied=frozenset(denied_modules),
             _created=[0], _max_created=max_created_files, _stat=posix.stat,
             _getframe=sys._getframe, _type=type, _int=int, _str=str,
             _function=type(resolve), _own_filename=resolve.__code__.co_filename,
             _compile_bytecode=importlib_external._compile_bytecode.__code__,
             _PermissionError=PermissionError, _ImportError=ImportError, _OSError=OSError,
             _tmpfile=getattr(posix, "O_TMPFILE", 0),
             _write_flags=posix.O_WRONLY | posix.O_RDWR | posix.O_APPEND | posix.O_CREAT
             | posix.O_TRUNC,
             _process_events=frozenset({
                 "os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                 "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill",
                 "os.startfile", "pty.spawn"}),
             _refused_events=frozenset({
                 "code.__new__", "sys.settrace", "sys.setprofile", "sys.addaudithook",
                 "resource.setrlimit", "resource.prlimit", "os.link", "os.symlink",
                 "sys.remote_exec", "sys._setprofileallthreads", "sys._settraceallthreads"}),
             _mutating_events=frozenset({
                 "os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.utime",
                 "os.truncate", "os.chflags", "os.lchflags", "os.setxattr", "os.removexattr",
                 "os.rename", "os.chdir", "os.mkfifo", "os.mknod"}),
             _listing_events=frozenset({"os.listdir", "os.scandir", "glob.glob", "glob.glob/2",
                                        "os.getxattr", "os.listxattr"})):
        if event == "open":
            path, mode, flags = args[0], args[1], args[2]
            if _type(path) is _int:
                return  # an fd it already holds
            real = _resolve(path)
            if real in _devices:
                return
            writing = ((_type(mode) is _str and ("w" in mode or "a" in mode or "x" in mode
                                                  or "+" in mode))
                       or (_type(flags) is _int and flags & _write_flags != 0))
            if not _under(real, _workdir if writing else _read_roots):
                raise _PermissionError(f"sandbox: may not {'write' if writing else 'read'} "
                                       f"{path!r}: only files in its working directory")
            if real.endswith(".pyc") and _under(real, _workdir):
                raise _PermissionError("sandbox: may not use .pyc files it wrote")
            try:
                kind = _stat(real).st_mode & 0o170000
            except _OSError:
                kind = None  # to be created
            if kind is None and writing:
                _created[0] += 1
                if _created[0] > _max_created:
                    raise _PermissionError(f"sandbox: may not create more than {_max_created} "
                                           "files")
            if kind == 0o040000 and (_type(mode) is _str or (
                    writing and _tmpfile and flags & _tmpfile == _tmpfile)):
                pass  # io.open never yields a directory fd; O_TMPFILE gives an unnamed file
            elif kind is not None and kind != 0o100000:  # dir fds would allow dir_fd escapes
                raise _PermissionError(f"sandbox: may only open regular files, not {path!r}")
        elif event == "import":
            name = args[0]
            if _type(name) is _str and name.partition(".")[0] in _denied:
                raise _ImportError(f"sandbox: importing {name!r} is not allowed")
            if args[1] is not None and not _under(_resolve(args[1]), _import_roots):
                raise _ImportError(f"sandbox: may not load the extension module {args[1]!r}")
        elif event == "marshal.loads" or event == "marshal.load":
            if _getframe(1).f_code is not _compile_bytecode:
                raise _PermissionError("sandbox: marshal.loads is only for the import system")
        elif event == "object.__setattr__" or event == "object.__delattr__":
            if args[1] in ("__code__", "__defaults__", "__kwdefaults__") \
                    and _type(args[0]) is _function \
                    and args[0].__code__.co_filename == _own_filename:
                raise _PermissionError(f"sandbox: may not change {args[1]} of its own functions")
        elif event in _process_events:
            raise _PermissionError(f"sandbox: {event} is not allowed (no processes or signals)")
        elif event.startswith("socket.") or event.startswith("ctypes."):
            raise _PermissionError(f"sandbox: {event} is not allowed (no network, no ctypes)")
        elif event in _refused_events:
            raise _PermissionError(f"sandbox: {event} is not allowed")
        elif event in _mutating_events:
            if event == "os.mkdir":
                _created[0] += 1
                if _created[0] > _max_created:
                    raise _PermissionError(f"sandbox: may not create more than {_max_created} "
                                           "files")
            for path in args[:2] if event == "os.rename" else args[:1]:
                if _type(path) is not _int and not _under(_resolve(path), _workdir):
                    raise _PermissionError(f"sandbox: {event} outside its working directory "
                                           "is not allowed")
        elif event in _listing_events:
            path = args[0] if args else None
            if path is not None and _type(path) is not _int \
                    and not _under(_resolve(path), _read_roots):
                raise _PermissionError(f"sandbox: may not list {path!r}")

    return hook


def _child_main() -> None:
    """Sets limits, installs the hook and runs the code; argv: config JSON, code."""
    import sys

    try:
        import json
        import linecache
        import resource
        import struct
        import traceback
        import types

        config = json.loads(sys.argv[1])
        code_text = sys.argv[2]
        for name, (soft, hard) in config["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (soft, hard))
        sys.dont_write_bytecode = True
        sys.path.extend(config["site_dirs"])
        # Stand-ins for two denied modules that libraries import unconditionally:
        # `subprocess` imports _posixsubprocess, sympy asks ctypes for sizeof(c_long).
        fork_stub = types.ModuleType("_posixsubprocess", "sandbox stand-in: no processes")

        def fork_exec(*args, **kwargs):
            raise PermissionError("sandbox: subprocesses are not allowed")

        fork_stub.fork_exec = fork_exec
        ctypes_stub = types.ModuleType(
            "ctypes", "sandbox stand-in: sizes of C types only; no foreign calls or memory")
        for name, fmt in (("c_bool", "?"), ("c_char", "c"), ("c_byte", "b"), ("c_ubyte", "B"),
                          ("c_short", "h"), ("c_ushort", "H"), ("c_int", "i"), ("c_uint", "I"),
                          ("c_long", "l"), ("c_ulong", "L"), ("c_longlong", "q"),
                          ("c_ulonglong", "Q"), ("c_size_t", "N"), ("c_ssize_t", "n"),
                          ("c_float", "f"), ("c_double", "d"), ("c_void_p", "P")):
            setattr(ctypes_stub, name, type(name, (), {"_sandbox_size": struct.calcsize(fmt)}))

        def sizeof(obj):
            try:
                return obj._sandbox_size
            except AttributeError:
                raise TypeError("this type has no size") from None

        def unavailable(name):
            raise AttributeError(f"sandbox: ctypes.{name} is not available (only C type sizes; "
                                 "no foreign calls or raw memory)")

        ctypes_stub.sizeof = sizeof
        ctypes_stub.__getattr__ = unavailable
        sys.modules["_posixsubprocess"] = fork_stub
        sys.modules["ctypes"] = ctypes_stub
        sys.stdout.reconfigure(line_buffering=True, errors="backslashreplace")
        lines = code_text.splitlines(keepends=True)
        linecache.cache["<code>"] = (len(code_text), None, lines, "<code>")
        sys.argv = ["<code>"]
        hook = _make_audit_hook(config["workdir"], tuple(config["read_roots"]),
                                tuple(config["import_roots"]), tuple(config["devices"]),
                                tuple(config["denied_modules"]), config["max_created_files"])
        sys.addaudithook(hook)
        del hook, config
    except BaseException as exc:  # any failure here is the sandbox's, not the code's
        sys.stderr.write(f"{_SETUP_FAILED_PREFIX} {type(exc).__name__}: {exc}\n")
        sys.stderr.flush()
        raise SystemExit(_SETUP_FAILED_EXIT) from None

    module = types.ModuleType("__main__")
    module.__builtins__ = sys.modules["builtins"]
    sys.modules["__main__"] = module
    try:
        exec(compile(code_text, "<code>", "exec"), module.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:  # the code's own error: show it, exit 1
        tb = exc.__traceback__.tb_next if exc.__traceback__ else None  # drop this frame
        traceback.print_exception(type(exc), exc, tb)
        sys.stderr.flush()
        raise SystemExit(1) from None


_CHILD_SOURCE = "\n".join([
    f"_SETUP_FAILED_PREFIX = {_SETUP_FAILED_PREFIX!r}",
    f"_SETUP_FAILED_EXIT = {_SETUP_FAILED_EXIT!r}",
    textwrap.dedent(inspect.getsource(_make_audit_hook)),
    textwrap.dedent(inspect.getsource(_child_main)),
    "_child_main()", ""])
# Compiled under its own file name: the hook protects the functions that carry it.
_CHILD_LAUNCHER = "import sys; exec(compile(sys.argv.pop(1), '<sandbox>', 'exec'))"


# --------------------------------------------------------------------------------------------
# Parent side.


def _real_dirs(paths) -> tuple[str, ...]:
    out: list[str] = []
    for path in paths:
        if path and os.path.isdir(path):
            real = os.path.realpath(path)
            if real not in out:
                out.append(real)
    return tuple(out)


class Sandbox:
    """Runs code under `Limits`; thread-safe. `isolation`: "auto", "bwrap" or "process".

    "auto" uses bwrap when it works here (probed once, now), else "process" (layers 2-4 of
    the module docstring). "bwrap" raises SandboxError if bwrap does not work.
    """

    def __init__(self, isolation: str = "auto", *, tmp_root: str | None = None):
        if isolation not in ("auto", "bwrap", "process"):
            raise ValueError(f"isolation must be 'auto', 'bwrap' or 'process', not {isolation!r}")
        self.python = sys.executable
        self.tmp_root = os.path.realpath(tmp_root or tempfile.gettempdir())
        paths = sysconfig.get_paths()
        self.site_dirs = _real_dirs([paths.get("purelib"), paths.get("platlib")])
        self.import_roots = _real_dirs([paths.get("stdlib"), paths.get("platstdlib"),
                                        *self.site_dirs])
        self._is_root = os.geteuid() == 0
        _remove_orphaned_workdirs(self.tmp_root)
        self._setpriv = shutil.which("setpriv")
        self._bwrap = shutil.which("bwrap")
        self.isolation = "process"
        if isolation != "process":
            problem = self._probe_bwrap()
            if problem is None:
                self.isolation = "bwrap"
            elif isolation == "bwrap":
                raise SandboxError(f"bwrap isolation is not available: {problem}")

    def _probe_bwrap(self) -> str | None:
        """None if a whole run works under bwrap here (namespaces allowed...), else why not."""
        if not self._bwrap:
            return "bwrap is not installed"
        self.isolation = "bwrap"
        try:
            result = self.run("print('ok')", Limits(timeout_s=20))
        except SandboxError as exc:
            return str(exc)
        finally:
            self.isolation = "process"
        if result.stdout != "ok\n":
            return f"exit {result.exit_code}: {result.stderr.strip()[-500:]}"
        return None

    def _bwrap_argv(self, workdir: str, limits: Limits) -> list[str]:
        # --as-pid-1: no bwrap init in the namespace, so on a normal exit bwrap itself reaps
        # the interpreter (an init would be orphaned, for the container's init to reap).
        argv = [self._bwrap, "--unshare-all", "--die-with-parent", "--as-pid-1",
                "--ro-bind", "/usr", "/usr"]
        if self._is_root:
            argv += ["--cap-drop", "ALL"]
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
            if os.path.islink(top):
                argv += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                argv += ["--ro-bind", top, top]
        for path in ("/etc/ld.so.cache", "/etc/localtime"):
            argv += ["--ro-bind-try", path, path]
        binds = _real_dirs([sys.prefix, sys.base_prefix, *self.import_roots,
                            os.path.dirname(self.python)])
        for path in binds:
            if not any(path != other and path.startswith(other + "/") for other in binds):
                argv += ["--ro-bind", path, path]
        if os.path.realpath(self.python) != self.python:  # a venv's symlinked interpreter
            real = os.path.realpath(self.python)
            argv += ["--ro-bind", real, real]
        argv += ["--proc", "/proc", "--dev", "/dev",
                 "--size", str(limits.disk_bytes), "--tmpfs", workdir, "--chdir", workdir, "--"]
        return argv

    def _argv(self, workdir: str, limits: Limits, code: str) -> list[str]:
        cpu = limits.cpu_limit()
        # SIGXCPU at the soft limit, SIGKILL at the hard one; a namespace's pid 1 (bwrap)
        # never gets SIGXCPU, so there the two are equal.
        rlimits = {"RLIMIT_CPU": (cpu, cpu if self.isolation == "bwrap" else cpu + 1),
                   "RLIMIT_AS": (limits.memory_bytes,) * 2,
                   "RLIMIT_FSIZE": (limits.file_bytes,) * 2,
                   "RLIMIT_NOFILE": (limits.open_files,) * 2, "RLIMIT_CORE": (0, 0)}
        if not self._is_root:
            rlimits["RLIMIT_NPROC"] = (limits.processes,) * 2
        config = {"rlimits": rlimits, "site_dirs": list(self.site_dirs), "workdir": workdir,
                  "read_roots": list(self.import_roots), "import_roots": list(self.import_roots),
                  "devices": list(_READABLE_DEVICES), "denied_modules": list(_DENIED_MODULES),
                  "max_created_files": limits.max_created_files}
        child = [self.python, "-I", "-S", "-c", _CHILD_LAUNCHER, _CHILD_SOURCE,
                 json.dumps(config), code]
        if self.isolation == "bwrap":
            return self._bwrap_argv(workdir, limits) + child
        if self._setpriv:
            wrapper = [self._setpriv, "--no-new-privs", "--pdeathsig", "KILL"]
            if self._is_root:
                wrapper += ["--bounding-set=-all", "--inh-caps=-all"]
            return wrapper + ["--"] + child
        return child

    def run(self, code: str, limits: Limits = Limits()) -> Result:
        """Runs `code` as a program; returns how it ended. SandboxError if it could not start.

        ValueError if `code` cannot be passed to a process (a NUL character, a lone surrogate).
        """
        if "\x00" in code:
            raise ValueError("the code contains a NUL character")
        try:
            code.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"the code is not valid text: {exc.reason}") from None
        workdir = tempfile.mkdtemp(prefix=f"{_WORKDIR_PREFIX}{os.getpid()}-", dir=self.tmp_root)
        try:
            return self._run_in(workdir, code, limits)
        finally:
            _remove_tree(workdir)

    def _run_in(self, workdir: str, code: str, limits: Limits) -> Result:
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                self._argv(workdir, limits, code), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir,
                env=dict(_CHILD_ENV, HOME=workdir, TMPDIR=workdir),
                start_new_session=True)  # own process group: one killpg reaches all of it
        except OSError as exc:
            raise SandboxError(f"could not start the interpreter: {exc}") from exc
        try:
            out, err, timed_out, truncated = _collect(
                proc, start + limits.timeout_s + limits.startup_s, limits.output_bytes)
        finally:
            _kill(proc)  # whatever happened: stragglers of its group die before the reap
            _, status, rusage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
            proc.stdout.close()
            proc.stderr.close()
        duration = time.monotonic() - start
        exit_code = proc.returncode
        cpu: float | None = rusage.ru_utime + rusage.ru_stime
        if self.isolation == "bwrap":
            cpu = None  # bwrap does not pass its children's rusage on
            if 128 < exit_code <= 128 + 64:  # bwrap reports a signal death as 128 + signal
                exit_code = 128 - exit_code
        stdout = out[:limits.output_bytes].decode("utf-8", errors="replace")
        stderr = err[:limits.output_bytes].decode("utf-8", errors="replace")
        if exit_code == _SETUP_FAILED_EXIT and stderr.startswith(_SETUP_FAILED_PREFIX):
            raise SandboxError(stderr.strip())
        limit = _limit_hit(exit_code, timed_out, truncated, cpu, limits)
        return Result(exit_code=exit_code, timed_out=timed_out, truncated=truncated,
                      stdout=stdout, stderr=stderr, duration_s=duration, cpu_s=cpu, limit=limit)


def _collect(proc: subprocess.Popen, deadline: float, cap: int):
    """Reads both pipes until the process exits, the deadline passes or a stream passes `cap`.

    Never holds more than cap+1 bytes per stream. Returns (stdout, stderr, timed_out,
    truncated). It does not reap the process: while it is an unreaped zombie its pid (and
    process group id) cannot be reused, so the caller's kill cannot hit another process.
    """
    buffers = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    open_pipes = set(buffers)
    for fd in open_pipes:
        os.set_blocking(fd, False)
    timed_out = truncated = exited = False
    with selectors.DefaultSelector() as selector:
        for fd in open_pipes:
            selector.register(fd, selectors.EVENT_READ)
        try:
            pidfd = os.pidfd_open(proc.pid)  # readable when it exits (Linux >= 5.3)
        except (AttributeError, OSError):
            pidfd = None  # poll instead
        if pidfd is not None:
            selector.register(pidfd, selectors.EVENT_READ)
        try:
            while open_pipes or not exited:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = not exited
                    break
                slice_s = remaining if pidfd is not None else min(remaining, 0.02)
                for key, _ in selector.select(slice_s):
                    if key.fd == pidfd:
                        selector.unregister(pidfd)
                        continue
                    try:
                        chunk = os.read(key.fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        selector.unregister(key.fd)
                        open_pipes.discard(key.fd)
                        continue
                    buffer = buffers[key.fd]
                    buffer += chunk[:cap + 1 - len(buffer)]
                    if len(buffer) > cap:
                        truncated = True
                if truncated:
                    break
                if not exited:
                    exited = os.waitid(os.P_PID, proc.pid,
                                       os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
                    if exited:  # pipes still open now can only be held by strays: brief grace
                        deadline = min(deadline, time.monotonic() + 0.2)
        finally:
            if pidfd is not None:
                os.close(pidfd)
    return (bytes(buffers[proc.stdout.fileno()]), bytes(buffers[proc.stderr.fileno()]),
            timed_out, truncated)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILLs the run's process group and the process itself (it may have left the group)."""
    for kill, target in ((os.killpg, proc.pid), (os.kill, proc.pid)):
        try:
            kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # the group is already empty


def _limit_hit(exit_code: int, timed_out: bool, truncated: bool, cpu: float | None,
               limits: Limits) -> str | None:
    if timed_out:
        return f"wall-clock time limit ({limits.timeout_s:g} s)"
    if truncated:
        return f"output limit ({limits.output_bytes} bytes per stream)"
    if exit_code == -signal.SIGXCPU or (exit_code == -signal.SIGKILL and cpu is not None
                                         and cpu >= limits.cpu_limit() - 0.05):  # handled XCPU
        return f"CPU time limit ({limits.cpu_limit()} s)"
    if exit_code == -signal.SIGKILL:
        if cpu is None:  # bwrap: the CPU limit kills with SIGKILL, and we cannot see CPU time
            return f"CPU time limit ({limits.cpu_limit()} s) or out of memory"
        return "killed (out of memory?)"
    if exit_code < 0:
        return f"killed by signal {signal.Signals(-exit_code).name}"
    return None


def _remove_orphaned_workdirs(tmp_root: str) -> None:
    """Removes workdirs left by servers that were killed mid-run (named after their pid)."""
    try:
        entries = list(os.scandir(tmp_root))
    except OSError:
        return
    for entry in entries:
        pid, _, rest = entry.name.removeprefix(_WORKDIR_PREFIX).partition("-")
        if entry.name.startswith(_WORKDIR_PREFIX) and pid.isdigit() and rest:
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                _remove_tree(entry.path)
            except OSError:
                pass  # alive (another user's): not ours to touch


def _remove_tree(path: str) -> None:
    try:
        shutil.rmtree(path)
    except OSError:  # the code may have made its directories read-only (matters when not root)
        try:
            os.chmod(path, 0o700)
        except OSError:
            pass
        for root, dirs, _ in os.walk(path):
            for name in dirs:
                try:
                    os.chmod(os.path.join(root, name), 0o700)
                except OSError:
                    pass
        shutil.rmtree(path, ignore_errors=True)


_default_lock = threading.Lock()
_default: Sandbox | None = None


def default_sandbox() -> Sandbox:
    """One shared auto-isolation Sandbox (the bwrap probe runs once per process)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Sandbox()
        return _default


__all__ = ["Limits", "Result", "Sandbox", "SandboxError", "default_sandbox"]
