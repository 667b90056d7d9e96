"""Closed-loop load on the tool server over 127.0.0.1, and the worker pool's batching gain.

    python benchmarks/tool_server_load.py                 # ~1 minute on 2 cores
    python benchmarks/tool_server_load.py --duration 2    # quicker, noisier

The server runs as its own process (`LocalToolServer`, the trainer's topology); the load
generator is this process (aiohttp, one session). Three measurements:

1. Light calls through /v1/batch: `--batch-clients` coroutines each keep one /v1/batch of
   `--batch-size` calls in flight (a mix of calculator, statistics, crop, measure_length,
   detect_points and bar_values on small images) -> `light_calls_per_s`.
2. /v1/call at 64 and 256 calls in flight (closed loop: each coroutine sends its next call
   when the previous one answers), the same mix -> calls/s, p50 and p99 latency in ms, and
   errors (non-200 replies and results that are not `ok`).
3. Batching: a model-backed tool served by one worker process, first with dynamic batching
   (`--max-batch 16`), then the same worker with `--max-batch 1`; `--model-calls` calls,
   `--model-concurrency` in flight, through the front -> calls/s of each and the ratio.
   `batching_speedup` is detect_objects' "hf" backend on a random OWL-ViT of OWL-ViT-B/32's
   widths and depths at 384 px (built locally: the cost of a real detector's forward, not
   its answers); `ocr_batching_speedup` is ocr with rapidocr's real PP-OCR models, which on
   a CPU are compute-bound (recognition is batched, detection runs per image).

Figures are wall-clock on a shared machine, client and server on the same cores: rerun,
and compare only side by side in one run. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import tempfile
import time

import aiohttp
from PIL import Image, ImageDraw, ImageFont

from tools_server.launch import LocalToolServer
from tools_server.testing.random_checkpoints import build_random_owlvit
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


def _light_mix(chart: str, diagram: str, small: str) -> list[dict]:
    return [
        {"name": "calculator", "arguments": {"expression": "(41 - 23) * 3 / 4"}},
        {"name": "statistics", "arguments": {"values": [3, 1, 4, 1, 5, 9, 2, 6]}},
        {"name": "crop", "arguments": {"image": small, "box": [4, 4, 40, 30]}},
        {"name": "measure_length", "arguments": {"image": diagram, "point_a": "P",
                                                 "point_b": "Q"}},
        {"name": "detect_points", "arguments": {"image": diagram}},
        {"name": "bar_values", "arguments": {"image": chart, "labels": ["Red", "Gold"]}},
    ]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _batch_load(session, url, mix, *, clients: int, batch_size: int, duration: float):
    calls = [mix[i % len(mix)] for i in range(batch_size)]
    done, errors = 0, 0
    stop = time.perf_counter() + duration

    async def client():
        nonlocal done, errors
        while time.perf_counter() < stop:
            async with session.post(f"{url}/v1/batch", json={"calls": calls}) as resp:
                body = await resp.json()
            if resp.status != 200:
                errors += batch_size
                continue
            done += sum(r["ok"] for r in body["results"])
            errors += sum(not r["ok"] for r in body["results"])

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return {"calls_per_s": done / (time.perf_counter() - start), "errors": errors}


async def _call_load(session, url, mix, *, in_flight: int, duration: float):
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
    elapsed = time.perf_counter() - start
    return {"calls_per_s": len(latencies) / elapsed,
            "p50_ms": 1e3 * _percentile(latencies, 0.50),
            "p99_ms": 1e3 * _percentile(latencies, 0.99), "errors": errors}


def _text_image(seed: int) -> Image.Image:
    im = Image.new("RGB", (240, 80), "white")
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=20)
    draw.text((8, 8), f"Total {seed * 37 % 1000}", fill="black", font=font)
    draw.text((8, 44), f"Item {seed}", fill="black", font=font)
    return im


async def _model_load(url: str, calls: list[dict], images: list[Image.Image], *, in_flight: int):
    """Sends every call once, `in_flight` at a time, through the front -> calls/s, errors."""
    connector = aiohttp.TCPConnector(limit=in_flight + 4)
    async with aiohttp.ClientSession(connector=connector) as session:
        ids = [await _upload(session, url, im) for im in images]
        calls = [{"name": c["name"], "arguments": {**c["arguments"], "image": ids[i % len(ids)]}}
                 for i, c in enumerate(calls)]
        async with session.post(f"{url}/v1/call", json=calls[0]) as resp:  # warm-up
            body = await resp.json()
            assert body["ok"], f"warm-up call failed: {body}"
        queue: asyncio.Queue = asyncio.Queue()
        for c in calls:
            queue.put_nowait(c)
        latencies, errors = [], 0

        async def client():
            nonlocal errors
            while not queue.empty():
                item = queue.get_nowait()
                t0 = time.perf_counter()
                async with session.post(f"{url}/v1/call", json=item) as resp:
                    body = await resp.json()
                latencies.append(time.perf_counter() - t0)
                errors += resp.status != 200 or not body.get("ok")

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(in_flight)))
        return {"calls_per_s": len(calls) / (time.perf_counter() - start),
                "p50_ms": 1e3 * _percentile(latencies, 0.5), "errors": errors}


def _batching(label: str, tool_options: list[str], call: dict, images, args) -> dict:
    """The same worker with dynamic batching (max batch 16) and without (max batch 1)."""
    runs = {}
    for max_batch in (16, 1):
        server = LocalToolServer(num_workers=1, tool_options=tool_options,
                                 extra_args=["--call-timeout-s", "600"],
                                 worker_args=["--max-batch", str(max_batch), "--max-wait-ms", "10"],
                                 startup_timeout_s=300)
        with server:
            runs[max_batch] = asyncio.run(_model_load(server.url, [call] * args.model_calls,
                                                      images, in_flight=args.model_concurrency))
        r = runs[max_batch]
        print(f"{label} on 1 worker, max batch {max_batch:2d}: {r['calls_per_s']:.2f} calls/s, "
              f"p50 {r['p50_ms']:.0f} ms, errors {r['errors']}", file=sys.stderr)
    return {"batched_calls_per_s": round(runs[16]["calls_per_s"], 2),
            "unbatched_calls_per_s": round(runs[1]["calls_per_s"], 2),
            "speedup": round(runs[16]["calls_per_s"] / runs[1]["calls_per_s"], 2),
            "errors": runs[16]["errors"] + runs[1]["errors"]}


async def _front_load(url: str, args) -> dict:
    connector = aiohttp.TCPConnector(limit=300)
    async with aiohttp.ClientSession(connector=connector) as session:
        chart = await _upload(session, url, render_bar_chart(["Red", "Blue", "Gold"], [12, 88, 45]))
        diagram = await _upload(session, url, render_points_diagram({"P": (40, 40),
                                                                     "Q": (100, 120)}))
        small = await _upload(session, url, Image.new("RGB", (64, 48), (30, 120, 200)))
        mix = _light_mix(chart, diagram, small)
        for item in mix:  # every call of the mix must succeed, or the figures mean nothing
            async with session.post(f"{url}/v1/call", json=item) as resp:
                body = await resp.json()
                assert body["ok"], (item, body)
        await _batch_load(session, url, mix, clients=2, batch_size=args.batch_size,
                          duration=0.5)  # warm-up
        out = {"batch": await _batch_load(session, url, mix, clients=args.batch_clients,
                                          batch_size=args.batch_size, duration=args.duration)}
        for n in (64, 256):
            out[f"call_{n}"] = await _call_load(session, url, mix, in_flight=n,
                                                duration=args.duration)
        return out


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
    parser.add_argument("--skip-batching", action="store_true",
                        help="skip the worker batching comparison")
    args = parser.parse_args(argv)

    with LocalToolServer(extra_args=["--workers", "4"]) as server:
        front = asyncio.run(_front_load(server.url, args))
    result = {
        "light_calls_per_s": round(front["batch"]["calls_per_s"], 1),
        "calls_per_s_64": round(front["call_64"]["calls_per_s"], 1),
        "p50_ms_64": round(front["call_64"]["p50_ms"], 2),
        "p99_ms_64": round(front["call_64"]["p99_ms"], 2),
        "calls_per_s_256": round(front["call_256"]["calls_per_s"], 1),
        "p50_ms_256": round(front["call_256"]["p50_ms"], 2),
        "p99_ms_256": round(front["call_256"]["p99_ms"], 2),
        "errors": front["batch"]["errors"] + front["call_64"]["errors"]
        + front["call_256"]["errors"],
    }
    print(f"light calls via /v1/batch ({args.batch_clients} x {args.batch_size} in flight): "
          f"{result['light_calls_per_s']:.0f} calls/s", file=sys.stderr)
    for n in (64, 256):
        r = front[f"call_{n}"]
        print(f"/v1/call, {n} in flight: {r['calls_per_s']:.0f} calls/s, p50 {r['p50_ms']:.1f} ms, "
              f"p99 {r['p99_ms']:.1f} ms, errors {r['errors']}", file=sys.stderr)

    if not args.skip_batching:
        scenes = [Image.new("RGB", (320, 240), (20 * k % 256, 120, 200)) for k in range(8)]
        with tempfile.TemporaryDirectory() as model_dir:
            # OWL-ViT-B/32 widths and depths (vision 768 x 12, text 512 x 12) at 384 px input,
            # random weights: the cost of a real detector's forward, not its answers.
            build_random_owlvit(model_dir, image_size=384, patch_size=32, vision_hidden=768,
                                vision_layers=12, text_hidden=512, text_layers=12, heads=8)
            detect = _batching(
                "detect_objects (hf, OWL-ViT-B/32-sized, random weights)",
                ["detect_objects.backend=hf", f"detect_objects.model_path={model_dir}"],
                {"name": "detect_objects", "arguments": {"query": "red circle"}}, scenes, args)
        ocr = _batching("ocr (rapidocr PP-OCR)", [], {"name": "ocr", "arguments": {}},
                        [_text_image(s) for s in range(8)], args)
        result.update({
            "detect_batched_calls_per_s": detect["batched_calls_per_s"],
            "detect_unbatched_calls_per_s": detect["unbatched_calls_per_s"],
            "batching_speedup": detect["speedup"],
            "ocr_batched_calls_per_s": ocr["batched_calls_per_s"],
            "ocr_unbatched_calls_per_s": ocr["unbatched_calls_per_s"],
            "ocr_batching_speedup": ocr["speedup"],
        })
        result["errors"] += detect["errors"] + ocr["errors"]
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
