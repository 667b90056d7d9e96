"""Closed-loop load on the tool server over 127.0.0.1, and the worker pool's batching gain.

    python benchmarks/tool_server_load.py                 # ~2 minutes on 2 cores
    python benchmarks/tool_server_load.py --duration 2    # quicker, noisier

The server runs as its own process (`LocalToolServer`, the trainer's topology); the load
generator is this process (aiohttp, one session), on the same cores. Measurements:

1. Light calls through /v1/batch: `--batch-clients` requests of `--batch-size` calls kept in
   flight; the light mix is calculator, statistics, crop, zoom, rotate and dominant_colors
   on a small image -> `light_calls_per_s`.
2. Latency at 64 and 256 calls in flight (closed loop: a client sends again when answered),
   light mix, two ways:
   - carried in /v1/batch requests of 16 calls, as the env sends one turn's calls
     -> `p50_ms_64`, `p99_ms_64`, `p50_ms_256`, `p99_ms_256` (a call's latency is its
     request's round trip);
   - one call per /v1/call request -> `call_p50_ms_256`, `call_p99_ms_256`, ...
3. Readers through /v1/batch: the pixel readers and sympy solvers (bar_values, chart_type,
   detect_points, measure_length, detect_lines, solve_equation) -> `reader_calls_per_s`.
   The mix reads the same chart and diagram again and again, so the readers' per-image
   cache (`tools_server.images.per_image`) serves all but the first analysis, as it does
   for the G samples of one task; `--fresh-reader-images` uploads a new image per request
   instead, which measures the pixel analysis itself.
4. Batching on a worker: a model-backed tool served by one worker process, first with
   dynamic batching (`--max-batch 16`), then the same worker with `--max-batch 1`;
   `--model-calls` calls, `--model-concurrency` in flight, through the front.
   - `batching_speedup`: ocr with rapidocr's real PP-OCR models. On a CPU these are
     compute-bound (recognition is batched across calls, detection runs per image), so
     batching gains little here; the gain that batching is for shows on a GPU.
   - `sim_batching_speedup` against `sim_ideal_speedup`: `sim_double`
     (tools_server.testing.sim_tools), whose batch costs 20 ms + 1 ms per call, as a GPU
     forward does; how close the batcher and the pool come to the ideal.

`errors` counts non-200 replies and results that are not `ok` in every phase. Figures are
wall-clock on a shared machine: rerun, and compare only side by side in one run. The last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time

import aiohttp
from PIL import Image, ImageDraw, ImageFont

from tools_server.launch import LocalToolServer
from vista_jax.env.tasks.render import render_bar_chart, render_points_diagram


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


async def _upload(session: aiohttp.ClientSession, url: str, image: Image.Image) -> str:
    async with session.post(f"{url}/v1/images", data=_png(image),
                            headers={"Content-Type": "image/png"}) as resp:
        resp.raise_for_status()
        return (await resp.json())["image_id"]


def _light_mix(small: str) -> list[dict]:
    return [
        {"name": "calculator", "arguments": {"expression": "(41 - 23) * 3 / 4"}},
        {"name": "statistics", "arguments": {"values": [3, 1, 4, 1, 5, 9, 2, 6]}},
        {"name": "crop", "arguments": {"image": small, "box": [4, 4, 40, 30]}},
        {"name": "zoom", "arguments": {"image": small, "box": [4, 4, 40, 30], "factor": 2}},
        {"name": "rotate", "arguments": {"image": small, "degrees": 90}},
        {"name": "dominant_colors", "arguments": {"image": small}},
    ]


def _reader_mix(chart: str, diagram: str) -> list[dict]:
    return [
        {"name": "bar_values", "arguments": {"image": chart, "labels": ["Red", "Gold"]}},
        {"name": "chart_type", "arguments": {"image": chart}},
        {"name": "detect_points", "arguments": {"image": diagram}},
        {"name": "measure_length", "arguments": {"image": diagram, "point_a": "P",
                                                 "point_b": "Q"}},
        {"name": "detect_lines", "arguments": {"image": diagram}},
        {"name": "solve_equation", "arguments": {"equations": ["2*x + 3 = 11"]}},
    ]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _summary(latencies: list[float], n_calls: int, errors: int, elapsed: float) -> dict:
    return {"calls_per_s": n_calls / elapsed, "p50_ms": 1e3 * _percentile(latencies, 0.50),
            "p99_ms": 1e3 * _percentile(latencies, 0.99), "errors": errors}


async def _fresh_images(session, url, mix: list[dict], k: int) -> list[dict]:
    """`mix` on a newly rendered chart and diagram (pixels no call has seen)."""
    labels = ["Red", "Blue", "Gold"]
    chart = await _upload(session, url, render_bar_chart(labels, [12 + k % 80, 88, 45], seed=k))
    diagram = await _upload(session, url, render_points_diagram(
        {"P": (40 + k % 100, 40), "Q": (100, 120)}))
    return _reader_mix(chart, diagram)


async def _batch_load(session, url, mix, *, clients: int, batch_size: int, duration: float,
                      fresh=None):
    """`clients` /v1/batch requests of `batch_size` calls in flight for `duration` s; with
    `fresh`, each request's mix is `await fresh(session, url, mix, k)` (upload not timed)."""
    calls = [mix[i % len(mix)] for i in range(batch_size)]
    counter = iter(range(10**9))
    latencies: list[float] = []  # one entry per call: its request's round trip
    errors = 0
    stop = time.perf_counter() + duration

    async def client():
        nonlocal errors
        while time.perf_counter() < stop:
            todo = calls
            if fresh is not None:
                new = await fresh(session, url, mix, next(counter))
                todo = [new[i % len(new)] for i in range(batch_size)]
            t0 = time.perf_counter()
            async with session.post(f"{url}/v1/batch", json={"calls": todo}) as resp:
                body = await resp.json()
            latencies.extend([time.perf_counter() - t0] * batch_size)
            if resp.status != 200:
                errors += batch_size
            else:
                errors += sum(not r["ok"] for r in body["results"])

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return _summary(latencies, len(latencies), errors, time.perf_counter() - start)


async def _call_load(session, url, mix, *, in_flight: int, duration: float):
    """`in_flight` single /v1/call requests in flight for `duration` s."""
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + duration

    async def client(k: int):
        nonlocal errors
        i = k
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            async with session.post(f"{url}/v1/call", json=mix[i % len(mix)]) as resp:
                body = await resp.json()
            latencies.append(time.perf_counter() - t0)
            errors += resp.status != 200 or not body.get("ok")
            i += 1

    start = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(in_flight)))
    return _summary(latencies, len(latencies), errors, time.perf_counter() - start)


async def _front_load(url: str, args) -> dict:
    connector = aiohttp.TCPConnector(limit=300)
    async with aiohttp.ClientSession(connector=connector) as session:
        chart = await _upload(session, url, render_bar_chart(["Red", "Blue", "Gold"], [12, 88, 45]))
        diagram = await _upload(session, url, render_points_diagram({"P": (40, 40),
                                                                     "Q": (100, 120)}))
        small = await _upload(session, url, Image.new("RGB", (64, 48), (30, 120, 200)))
        light, readers = _light_mix(small), _reader_mix(chart, diagram)
        for item in light + readers:  # every call must succeed, or the figures mean nothing
            async with session.post(f"{url}/v1/call", json=item) as resp:
                body = await resp.json()
                assert body["ok"], (item, body)
        await _batch_load(session, url, light, clients=2, batch_size=args.batch_size,
                          duration=0.5)  # warm-up
        out = {"light": await _batch_load(session, url, light, clients=args.batch_clients,
                                          batch_size=args.batch_size, duration=args.duration)}
        for n in (64, 256):
            out[f"batch_{n}"] = await _batch_load(session, url, light, clients=n // 16,
                                                  batch_size=16, duration=args.duration)
            out[f"call_{n}"] = await _call_load(session, url, light, in_flight=n,
                                                duration=args.duration)
        out["readers"] = await _batch_load(session, url, readers, clients=args.batch_clients,
                                           batch_size=args.batch_size, duration=args.duration,
                                           fresh=_fresh_images if args.fresh_reader_images
                                           else None)
        return out


def _text_image(seed: int) -> Image.Image:
    im = Image.new("RGB", (240, 80), "white")
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=20)
    draw.text((8, 8), f"Total {seed * 37 % 1000}", fill="black", font=font)
    draw.text((8, 44), f"Item {seed}", fill="black", font=font)
    return im


async def _model_load(url: str, calls: list[dict], images: list[Image.Image], *, in_flight: int):
    """Sends every call once, `in_flight` at a time, through the front."""
    connector = aiohttp.TCPConnector(limit=in_flight + 4)
    async with aiohttp.ClientSession(connector=connector) as session:
        ids = [await _upload(session, url, im) for im in images] if images else []
        if ids:
            calls = [{"name": c["name"], "arguments": {**c["arguments"],
                                                       "image": ids[i % len(ids)]}}
                     for i, c in enumerate(calls)]
        async with session.post(f"{url}/v1/call", json=calls[0]) as resp:  # warm-up
            body = await resp.json()
            assert body["ok"], f"warm-up call failed: {body}"
        queue = list(reversed(calls))
        latencies, errors = [], 0

        async def client():
            nonlocal errors
            while queue:
                item = queue.pop()
                t0 = time.perf_counter()
                async with session.post(f"{url}/v1/call", json=item) as resp:
                    body = await resp.json()
                latencies.append(time.perf_counter() - t0)
                errors += resp.status != 200 or not body.get("ok")

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(in_flight)))
        return _summary(latencies, len(calls), errors, time.perf_counter() - start)


def _batching(label: str, calls: list[dict], images: list[Image.Image], args, *,
              registry: str | None = None, tool_options: tuple[str, ...] = ()) -> dict:
    """The same worker with dynamic batching (max batch 16) and without (max batch 1)."""
    runs = {}
    for max_batch in (16, 1):
        server = LocalToolServer(num_workers=1, registry=registry, tool_options=tool_options,
                                 extra_args=["--call-timeout-s", "600"],
                                 worker_args=["--max-batch", str(max_batch), "--max-wait-ms", "10"],
                                 startup_timeout_s=300)
        with server:
            runs[max_batch] = asyncio.run(_model_load(server.url, calls, images,
                                                      in_flight=args.model_concurrency))
        r = runs[max_batch]
        print(f"{label} on 1 worker, max batch {max_batch:2d}: {r['calls_per_s']:.2f} calls/s, "
              f"p50 {r['p50_ms']:.0f} ms, errors {r['errors']}", file=sys.stderr)
    return {"batched": round(runs[16]["calls_per_s"], 2),
            "unbatched": round(runs[1]["calls_per_s"], 2),
            "speedup": round(runs[16]["calls_per_s"] / runs[1]["calls_per_s"], 2),
            "errors": runs[16]["errors"] + runs[1]["errors"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--batch-size", type=int, default=64, help="calls per /v1/batch")
    parser.add_argument("--batch-clients", type=int, default=4,
                        help="/v1/batch requests kept in flight")
    parser.add_argument("--model-calls", type=int, default=48,
                        help="calls per run of the batching comparison")
    parser.add_argument("--model-concurrency", type=int, default=16,
                        help="model-backed calls in flight in the batching comparison")
    parser.add_argument("--fresh-reader-images", action="store_true",
                        help="readers on a new chart and diagram per request (no cache hits)")
    parser.add_argument("--skip-batching", action="store_true",
                        help="skip the worker batching comparison")
    args = parser.parse_args(argv)

    with LocalToolServer() as server:
        front = asyncio.run(_front_load(server.url, args))
    result = {"light_calls_per_s": round(front["light"]["calls_per_s"], 1),
              "reader_calls_per_s": round(front["readers"]["calls_per_s"], 1)}
    for n in (64, 256):
        for key, prefix in ((f"batch_{n}", ""), (f"call_{n}", "call_")):
            result[f"{prefix}calls_per_s_{n}"] = round(front[key]["calls_per_s"], 1)
            result[f"{prefix}p50_ms_{n}"] = round(front[key]["p50_ms"], 2)
            result[f"{prefix}p99_ms_{n}"] = round(front[key]["p99_ms"], 2)
    result["errors"] = sum(r["errors"] for r in front.values())
    print(f"light calls via /v1/batch ({args.batch_clients} x {args.batch_size} in flight): "
          f"{front['light']['calls_per_s']:.0f} calls/s; readers: "
          f"{front['readers']['calls_per_s']:.0f} calls/s", file=sys.stderr)
    for n in (64, 256):
        for key, how in ((f"batch_{n}", "in /v1/batch of 16"), (f"call_{n}", "one per /v1/call")):
            r = front[key]
            print(f"{n} light calls in flight, {how}: {r['calls_per_s']:.0f} calls/s, "
                  f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, errors {r['errors']}",
                  file=sys.stderr)

    if not args.skip_batching:
        ocr = _batching("ocr (rapidocr PP-OCR)", [{"name": "ocr", "arguments": {}}] * args.model_calls,
                        [_text_image(s) for s in range(8)], args)
        sim = _batching("sim_double (20 ms + 1 ms per call)",
                        [{"name": "sim_double", "arguments": {"value": i}}
                         for i in range(args.model_calls * 4)], [], args,
                        registry="tools_server.testing.sim_tools:registry",
                        tool_options=("sim_double.batch_ms=20", "sim_double.item_ms=1"))
        k = min(16, args.model_concurrency)
        result.update({
            "ocr_batched_calls_per_s": ocr["batched"], "ocr_unbatched_calls_per_s": ocr["unbatched"],
            "batching_speedup": ocr["speedup"],
            "sim_batching_speedup": sim["speedup"],
            "sim_ideal_speedup": round((20 + 1) * k / (20 + k), 2),
        })
        result["errors"] += ocr["errors"] + sim["errors"]
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
