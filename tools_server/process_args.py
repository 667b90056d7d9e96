"""Command-line options and checks shared by the front (`serve`) and `worker` processes:
bearer-token auth, drain on SIGTERM, parent watch, logging."""

from __future__ import annotations

import argparse
import ipaddress
import os


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
