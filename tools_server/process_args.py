"""What the front (`serve`) and `worker` processes share: their common flags, the bearer-token
check (flag and middleware), the port file, and waiting for SIGTERM or the parent's exit."""

from __future__ import annotations

import argparse
import asyncio
import hmac
import ipaddress
import logging
import os
import signal
from typing import Callable, Collection

from aiohttp import web

log = logging.getLogger("tools_server")


def add_process_arguments(parser: argparse.ArgumentParser, *, drain_timeout_s: float,
                          client: str) -> None:
    """Adds the shared flags; `client` names who must send the token (in the help)."""
    add = parser.add_argument
    add("--auth-token-file",
        help=f"file holding the bearer token {client} must send (or set VISTA_TOOLS_TOKEN)")
    add("--allow-unauthenticated", action="store_true",
        help="allow binding a non-loopback address without a token")
    add("--drain-timeout-s", type=float, default=drain_timeout_s,
        help="on SIGTERM, longest wait for admitted calls to finish, s (default: %(default)s)")
    add("--exit-with-parent", action="store_true",
        help="stop when the process that started this one exits (local subprocess use)")
    add("--access-log", action="store_true", help="log every request")
    add("--log-level", default="INFO", help="logging level (default: %(default)s)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_token(args: argparse.Namespace) -> str | None:
    """The token from --auth-token-file or VISTA_TOOLS_TOKEN (None: no auth).

    SystemExit if the file is unusable, or if there is no token and `--host` is not a
    loopback address (unless --allow-unauthenticated).
    """
    token = os.environ.get("VISTA_TOOLS_TOKEN") or None
    if args.auth_token_file:
        try:
            with open(args.auth_token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise SystemExit(f"--auth-token-file: cannot read {args.auth_token_file}: {exc}")
        if not token:
            raise SystemExit(f"--auth-token-file: {args.auth_token_file} is empty")
    if token is None and not is_loopback(args.host) and not args.allow_unauthenticated:
        raise SystemExit(f"--host {args.host} is not a loopback address: set a bearer token "
                         "(--auth-token-file or VISTA_TOOLS_TOKEN), or pass "
                         "--allow-unauthenticated")
    return token


def bearer_auth_middleware(get_token: Callable[[], str | None], public_paths: Collection[str],
                           realm: str):
    """aiohttp middleware: every path but `public_paths` needs `Authorization: Bearer <token>`
    (401 with a JSON error body otherwise); `get_token()` None turns the check off."""

    @web.middleware
    async def bearer_auth(request: web.Request, handler):
        token = get_token()
        if token is None or request.path in public_paths:
            return await handler(request)
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        # Constant-time comparison: response timing must not reveal a prefix of the token.
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(),
                                                                 token.encode()):
            return web.json_response(
                {"error": {"code": "unauthorized", "message": "missing or wrong bearer token "
                           "(send 'Authorization: Bearer <token>')"}},
                status=401, headers={"WWW-Authenticate": f'Bearer realm="{realm}"'})
        return await handler(request)

    return bearer_auth


def write_port_file(path: str, port: int) -> None:
    """Writes the bound port to `path` for the process that started this one."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, path)  # atomic: a reader never sees a partial number


async def wait_for_stop(exit_with_parent: bool = False, *,
                        ready: Callable[[], None] | None = None, poll_s: float = 1.0) -> None:
    """Returns on SIGTERM or SIGINT, or, with `exit_with_parent`, once the parent has exited.

    `ready` is called once the signal handlers are in place: write the port file there, so
    that whoever waits for it can already stop this process cleanly. The handlers stay
    installed after it returns, so a second signal does not kill the drain that follows.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not on the main thread / platform
            pass
    if ready is not None:
        ready()
    if not exit_with_parent:
        await stop.wait()
        return
    parent = os.getppid()
    while True:
        try:
            await asyncio.wait_for(stop.wait(), poll_s)
            return
        except asyncio.TimeoutError:
            # Orphaned processes are re-parented, so a changed parent id means it exited.
            if os.getppid() != parent:
                log.warning("parent process %d exited; stopping", parent)
                return
