"""`vista-tools`: run the tool server, or print the tool schemas.

    vista-tools serve --host 127.0.0.1 --port 8765 [--max-body-mb 32] [--threads 2] ...
    vista-tools serve --local-workers 2 [--worker-max-batch 16] ...   # + workers for model-backed tools
    vista-tools serve --worker http://10.0.0.5:9001 --worker ...        # workers on other hosts
    vista-tools worker --port 9001 [--tools ocr,detect_objects] [--max-batch 16] [--max-wait-ms 5]
    vista-tools list [--family chart]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from tools_server import pool as pool_lib
from tools_server import worker as worker_lib
from tools_server.app import SERVICE, ServerConfig, create_app
from tools_server.process_args import (add_process_arguments, auth_token, wait_for_stop,
                                       write_port_file)

log = logging.getLogger("tools_server")


def _parser() -> argparse.ArgumentParser:
    defaults = ServerConfig()
    parser = argparse.ArgumentParser(prog="vista-tools", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the tool server")
    add = serve.add_argument
    add("--host", default=defaults.host, help="bind address (default: %(default)s, loopback only)")
    add("--port", type=int, default=defaults.port,
        help="port; 0 picks a free one (default: %(default)s)")
    add("--port-file", help="write the bound port to this file once the server accepts connections")
    add("--max-body-mb", type=float, default=defaults.max_body_mb, help="largest request body, MiB")
    add("--max-images", type=int, default=defaults.max_images, help="images kept in the store")
    add("--max-store-mb", type=float, default=defaults.max_store_mb, help="image store budget, MiB")
    add("--max-image-pixels", type=int, default=defaults.max_image_pixels,
        help="largest image accepted, pixels")
    add("--threads", type=int, default=defaults.threads,
        help="threads for CPU-bound tools (default: one per CPU this process may use)")
    add("--blocking-threads", type=int, default=defaults.blocking_threads,
        help="threads for tools that wait on a subprocess (python)")
    add("--max-pending", type=int, default=defaults.max_pending,
        help="calls admitted at once before answering 'overloaded'")
    add("--call-timeout-s", type=float, default=defaults.call_timeout_s, help="call deadline, s")
    add("--max-batch", type=int, default=defaults.max_batch, help="calls per /v1/batch request")
    add_process_arguments(serve, drain_timeout_s=defaults.drain_timeout_s, client="clients")
    pool_lib.add_serve_arguments(serve)
    worker_lib.add_worker_parser(sub)
    lst = sub.add_parser("list", help="print the tool schemas (the /v1/tools body) as JSON")
    lst.add_argument("--family", action="append", help="only tools of this family (repeatable)")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    token = auth_token(args)
    config = ServerConfig(host=args.host, port=args.port, max_body_mb=args.max_body_mb,
                          max_images=args.max_images, max_store_mb=args.max_store_mb,
                          max_image_pixels=args.max_image_pixels, threads=args.threads,
                          blocking_threads=args.blocking_threads,
                          max_pending=args.max_pending, call_timeout_s=args.call_timeout_s,
                          max_batch=args.max_batch, auth_token=token,
                          drain_timeout_s=args.drain_timeout_s)
    tools, worker_pool = await pool_lib.pool_from_args(args, token=token)
    app = create_app(config, tools, worker_pool)
    runner = web.AppRunner(app, access_log=log if args.access_log else None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = runner.addresses[0][1]
    log.info("vista-tools serving %d tools on http://%s:%d", len(app[SERVICE].tools),
             config.host, port)

    def announce() -> None:
        if args.port_file:
            write_port_file(args.port_file, port)

    try:
        await wait_for_stop(args.exit_with_parent, ready=announce)
        log.info("draining: %d calls in flight", app[SERVICE].pending)
        if not await app[SERVICE].drain():
            log.warning("drain timed out with %d calls in flight", app[SERVICE].pending)
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "list":
        from tools_server.tools import default_registry

        families = set(args.family) if args.family else None
        json.dump({"tools": default_registry().schemas(families=families)}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "worker":
        return worker_lib.run_worker(args)
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
