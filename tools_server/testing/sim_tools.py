"""Model-backed test tools whose cost and batching are observable, for the worker-pool tests
and the load benchmark.

A simulated model's `run_batch` sleeps `batch_ms + item_ms * n` (a fixed cost per forward
pass plus a small cost per item, as a GPU model behaves) and reports, in each result's data,
the batch it ran in (`batch_id`, `batch_size`), the process (`pid`) and the tool instance.

    vista-tools worker --port 9001 --registry tools_server.testing.sim_tools:registry \\
        --tool-option sim_double.batch_ms=20
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid

import numpy as np
from PIL import ImageOps

from tools_server.registry import (INVALID_ARGUMENT, Tool, ToolArguments, ToolError, ToolOutput,
                                   ToolRegistry)


class _SimulatedModel(Tool):
    model_backed = True

    def __init__(self, batch_ms: float = 20.0, item_ms: float = 1.0, load_ms: float = 0.0,
                 load_error: str = ""):
        self.batch_ms, self.item_ms = float(batch_ms), float(item_ms)
        self.load_ms, self.load_error = float(load_ms), load_error
        self.loaded = False
        self.instance = uuid.uuid4().hex[:8]
        self._lock = threading.Lock()
        self._batch_ids = itertools.count()
        self._active = 0
        self.max_active = 0  # most run_batch calls ever running at once

    def load(self) -> None:
        """The worker's warm-up hook: 'loads the model' (sleeps `load_ms`, or fails)."""
        time.sleep(self.load_ms / 1000)
        if self.load_error:
            raise OSError(self.load_error)
        self.loaded = True

    def compute(self, args, ctx, info: dict) -> ToolOutput:
        raise NotImplementedError

    def run(self, args, ctx) -> ToolOutput:
        out = self.run_batch([(args, ctx)])[0]
        if isinstance(out, ToolError):
            raise out
        return out

    def run_batch(self, calls):
        with self._lock:
            batch_id = next(self._batch_ids)
            self._active += 1
            self.max_active = max(self.max_active, self._active)
        try:
            time.sleep((self.batch_ms + self.item_ms * len(calls)) / 1000)
            info = {"batch_id": batch_id, "batch_size": len(calls), "pid": os.getpid(),
                    "instance": self.instance}
            outs = []
            for args, ctx in calls:
                try:
                    outs.append(self.compute(args, ctx, info))
                except ToolError as exc:
                    outs.append(exc)
            return outs
        finally:
            with self._lock:
                self._active -= 1


class SimDouble(_SimulatedModel):
    """Doubles a non-negative integer (test tool). 666 crashes the whole batch."""

    name = "sim_double"
    family = "math"

    class Arguments(ToolArguments):
        value: int

    def compute(self, args, ctx, info):
        if args.value == 666:  # a poison input: the batcher must isolate it
            raise RuntimeError("poison input")
        if args.value < 0:
            raise ToolError(INVALID_ARGUMENT, f"argument 'value': {args.value} must be ≥ 0")
        return ToolOutput(str(2 * args.value), data={"value": 2 * args.value, **info})


class SimImageStats(_SimulatedModel):
    """Size and mean colour of an image (test tool)."""

    name = "sim_image_stats"
    family = "perception"

    class Arguments(ToolArguments):
        image: str

    def compute(self, args, ctx, info):
        image = ctx.image(args.image)
        mean = np.asarray(image.convert("RGB"), dtype=np.float64).mean(axis=(0, 1))
        w, h = image.size
        return ToolOutput(f"{w}x{h} mean {mean.round(1).tolist()}",
                          data={"size": [w, h], "mean": mean.round(3).tolist(), **info})


class SimInvert(_SimulatedModel):
    """Returns the colour negative of an image as a new image (test tool)."""

    name = "sim_invert"
    family = "perception"

    class Arguments(ToolArguments):
        image: str

    def compute(self, args, ctx, info):
        image_id = ctx.add_image(ImageOps.invert(ctx.image(args.image).convert("RGB")))
        return ToolOutput(f"inverted image {image_id[:8]}", [image_id],
                          {"image_id": image_id, **info})


class WhoAmI(Tool):
    """The process that runs this light tool (test tool)."""

    name = "whoami"
    family = "math"

    class Arguments(ToolArguments):
        pass

    def run(self, args, ctx):
        return ToolOutput(str(os.getpid()), data={"pid": os.getpid()})


TOOLS = (SimDouble, SimImageStats, SimInvert, WhoAmI)


def registry(options=None) -> ToolRegistry:
    """The `--registry pool_test_tools:registry` factory: options[name] are constructor kwargs."""
    options = dict(options or {})
    unknown = set(options) - {c.name for c in TOOLS}
    if unknown:
        raise ValueError(f"options for unknown tool(s) {sorted(unknown)}")
    return ToolRegistry([cls(**options.get(cls.name, {})) for cls in TOOLS])
