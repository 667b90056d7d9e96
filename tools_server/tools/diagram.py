"""Diagram tools: labelled points of a geometry diagram drawn in vista-jax's own style.

`find_points` reads pixels: a dot is where a 5x5 square of black fits (1-px segments and
bitmap-font strokes never hold one), its centre is the centroid of those square centres
(exact for the renderer's symmetric discs), and its label is the one glyph in the white box
at the position `vista_jax.env.tasks.render.label_origin` picks (mirrored here as
`_label_origin`; a test keeps the two in step). Other diagrams are not supported.
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
from PIL import Image, ImageDraw
from pydantic import Field

from tools_server.registry import (INVALID_ARGUMENT, Tool, ToolArguments, ToolContext, ToolError,
                                   ToolOutput)
from tools_server.tools import glyph_ocr
from tools_server.tools.perception import ImageId

POINT_RADIUS = 4  # render.POINT_RADIUS
_LABEL_BOX = (-1, 2, 6, 10)  # render._LABEL_BOX: white box behind a label, from its glyph origin
_CORE = 5  # side of the black square that fits only inside a dot
_MAX_DOTS = 64


def _label_origin(x: int, y: int, size: tuple[int, int]) -> tuple[int, int] | None:
    """Mirror of render.label_origin: NE, NW, SE, SW, the first whose box fits the image."""
    r, w = POINT_RADIUS, glyph_ocr.CELL_W
    width, height = size
    for ox, oy in ((x + r + 2, y - r - 9), (x - r - 2 - w, y - r - 9),
                   (x + r + 2, y + r - 2), (x - r - 2 - w, y + r - 2)):
        if (ox + _LABEL_BOX[0] >= 0 and oy + _LABEL_BOX[1] >= 0
                and ox + _LABEL_BOX[2] < width and oy + _LABEL_BOX[3] < height):
            return ox, oy
    return None


def _dot_centres(black: np.ndarray) -> list[tuple[int, int]]:
    """Centres (x, y) of the filled dots in a black mask [H, W]."""
    h, w = black.shape
    k = _CORE
    if h < k or w < k:
        return []
    integral = np.pad(black.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    # [H-k+1, W-k+1]: black pixels in each k x k window
    sums = integral[k:, k:] - integral[:-k, k:] - integral[k:, :-k] + integral[:-k, :-k]
    ys, xs = np.nonzero(sums == k * k)
    ys, xs = ys + k // 2, xs + k // 2  # window centres
    # Group the centres into blobs: pixels of one dot's core lie within 2 px of each other.
    clusters: list[list[tuple[int, int]]] = []
    for x, y in zip(xs.tolist(), ys.tolist()):
        for cluster in clusters:
            cx, cy = cluster[0]
            if abs(cx - x) <= POINT_RADIUS and abs(cy - y) <= POINT_RADIUS:
                cluster.append((x, y))
                break
        else:
            clusters.append([(x, y)])
            if len(clusters) > _MAX_DOTS:
                raise ToolError(INVALID_ARGUMENT,
                                f"argument 'image': more than {_MAX_DOTS} dot-like blobs; "
                                "not a labelled-points diagram")
    return [_fit_disc(black, cluster) for cluster in clusters]


def _disc_offsets(r0: float, r1: float) -> tuple[np.ndarray, np.ndarray]:
    d = np.arange(-POINT_RADIUS - 2, POINT_RADIUS + 3)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    dist = np.hypot(dx, dy)
    keep = (dist >= r0) & (dist < r1)
    return dx[keep], dy[keep]


def _drawn_disc() -> tuple[np.ndarray, np.ndarray]:
    r = POINT_RADIUS
    im = Image.new("1", (2 * r + 1, 2 * r + 1), 0)
    ImageDraw.Draw(im).ellipse([0, 0, 2 * r, 2 * r], fill=1)  # as the renderer draws a dot
    dy, dx = np.nonzero(np.array(im))
    return dx - r, dy - r


_DISC = _drawn_disc()  # the renderer's dot, as pixel offsets from its centre
_RING = _disc_offsets(POINT_RADIUS + 1, POINT_RADIUS + 2)  # white around a dot, but for segments


def _fit_disc(black: np.ndarray, cluster: list[tuple[int, int]]) -> tuple[int, int]:
    """The centre near a blob of 5x5-square centres where a whole dot fits with the least
    black around it. Segments meeting at a dot widen the blob, so its centroid alone drifts."""
    h, w = black.shape
    arr = np.array(cluster)
    cx, cy = int(round(arr[:, 0].mean())), int(round(arr[:, 1].mean()))
    best = None
    for y in range(cy - 2, cy + 3):
        for x in range(cx - 2, cx + 3):
            dx, dy = _DISC
            xs, ys = x + dx, y + dy
            if xs.min() < 0 or ys.min() < 0 or xs.max() >= w or ys.max() >= h:
                continue
            missing = int((~black[ys, xs]).sum())
            rx, ry = x + _RING[0], y + _RING[1]
            inside = (rx >= 0) & (ry >= 0) & (rx < w) & (ry < h)
            around = int(black[ry[inside], rx[inside]].sum())
            key = (missing, around, abs(x - cx) + abs(y - cy))
            if best is None or key < best[0]:
                best = (key, (x, y))
    return best[1] if best is not None else (cx, cy)


def find_points(image: Image.Image) -> tuple[dict[str, tuple[int, int]], int]:
    """({label: (x, y)} of the labelled dots, number of dots without a readable label)."""
    rgb = np.asarray(image.convert("RGB"))
    black = rgb.max(axis=-1) < 100
    size = image.size
    points: dict[str, tuple[int, int]] = {}
    unlabelled = 0
    for x, y in _dot_centres(black):
        origin = _label_origin(x, y, size)
        label = None
        if origin is not None:
            ox, oy = origin
            # Only the white box is guaranteed clean: its rows 2..10 of the glyph cell.
            cell = black[oy + _LABEL_BOX[1]:oy + _LABEL_BOX[3] + 1, ox:ox + glyph_ocr.CELL_W]
            reading = glyph_ocr.read_line(cell)
            if reading.distance == 0 and len(reading.text) == 1 and reading.text.isupper():
                label = reading.text
        if label is None or label in points:
            unlabelled += 1
        else:
            points[label] = (x, y)
    return dict(sorted(points.items())), unlabelled


class DetectPoints(Tool):
    """Finds the labelled points of a geometry diagram: one `A (x, y)` line each, in pixels.

    Handles only diagrams drawn in vista-jax's own rendered style (filled black dots with a
    one-letter uppercase label next to each). Coordinates are pixels of the given image,
    origin top-left, y pointing down.
    """

    name = "detect_points"
    family = "diagram"

    class Arguments(ToolArguments):
        image: ImageId

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        points, unlabelled = find_points(ctx.image(args.image))
        lines = [f"{name} ({x}, {y})" for name, (x, y) in points.items()]
        if not lines:
            lines = ["no labelled points found"]
        if unlabelled:
            lines.append(f"({unlabelled} dot(s) without a readable label)")
        data = {"points": {name: [x, y] for name, (x, y) in points.items()},
                "unlabelled": unlabelled}
        return ToolOutput("\n".join(lines), [], data)


Label = Annotated[str, Field(min_length=1, max_length=1, pattern="^[A-Z]$",
                             description="a point's one-letter label")]


class MeasureLength(Tool):
    """Measures the distance in pixels between two labelled points of a geometry diagram.

    Uses the points detect_points finds (same style caveat: diagrams drawn in vista-jax's
    own rendered style only). Returns the Euclidean distance rounded to 2 decimals.
    """

    name = "measure_length"
    family = "diagram"

    class Arguments(ToolArguments):
        image: ImageId
        point_a: Label
        point_b: Label

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        points, _ = find_points(ctx.image(args.image))
        for arg, label in (("point_a", args.point_a), ("point_b", args.point_b)):
            if label not in points:
                found = ", ".join(points) or "none"
                raise ToolError(INVALID_ARGUMENT,
                                f"argument '{arg}': point {label!r} is not in the diagram "
                                f"(labelled points found: {found})")
        (xa, ya), (xb, yb) = points[args.point_a], points[args.point_b]
        length = round(math.hypot(xb - xa, yb - ya), 2)
        return ToolOutput(f"{args.point_a}{args.point_b} = {length:.2f} px", [],
                          {"length": length, "point_a": [xa, ya], "point_b": [xb, yb]})
