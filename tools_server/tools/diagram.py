"""Diagram tools: points, segments, circles and angles of a geometry diagram drawn in
vista-jax's own style (`vista_jax.env.tasks.render.render_points_diagram` and
`vista_jax.env.tasks.render_geometry.render_geometry`). Other diagrams are not supported:
every reader here is classical image processing tuned to that style.

`find_points` reads pixels: a dot is where a 5x5 square of black fits (1-px segments and
bitmap-font strokes never hold one), its centre is the centroid of those square centres
(exact for the renderer's symmetric discs), and its label is the one glyph in the white box
at the position `vista_jax.env.tasks.render.label_origin` picks (mirrored here as
`_label_origin`; a test keeps the two in step).

`find_segments` tests every pair of labelled points: the pair is joined when >= 90% of the
straight line between them is black within 1 px, counting only pixels outside the dots and
label boxes (which hide lines). A pair with a third labelled point on its line is never
reported; its pieces are (pixels cannot tell "AC through B" from "AB and BC"), and
`straight_chains` lists such runs (A-B-C). `find_circles` removes dots, label boxes and
the found segments from the black pixels, fits a circle to each remaining arc (least
squares), refines it on all nearby arc pixels and keeps it when >= 90% of its ring is
black; a labelled point within 2 px of the centre becomes the centre. A segment joining two
points of a circle must show apart from the arc (> 2 px off the ring) to count: a short
chord hugs its arc. `diagram_figure`
writes all of it in the formal language of `tools_server.tools.formal`.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Annotated

import cv2
import numpy as np
from PIL import Image, ImageDraw
from pydantic import Field

from tools_server.images import per_image
from tools_server.registry import (INVALID_ARGUMENT, Tool, ToolArguments, ToolContext, ToolError,
                                   ToolOutput)
from tools_server.tools import formal, glyph_ocr
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


@dataclasses.dataclass(frozen=True)
class DiagramScan:
    """What one pass over a diagram's pixels finds; shared by the diagram tools."""

    black: np.ndarray  # [H, W] bool, the black pixels
    points: dict[str, tuple[int, int]]  # labelled dots, by label
    dots: list[tuple[int, int]]  # every dot centre, labelled or not
    unlabelled: int
    hidden: np.ndarray  # [H, W] bool: dots and label boxes, where lines do not show


@per_image
def scan(image: Image.Image) -> DiagramScan:
    rgb = np.asarray(image.convert("RGB"))
    black = rgb.max(axis=-1) < 100
    size = image.size
    points: dict[str, tuple[int, int]] = {}
    unlabelled = 0
    dots = _dot_centres(black)
    hidden = np.zeros_like(black)
    for x, y in dots:
        origin = _label_origin(x, y, size)
        label = None
        if origin is not None:
            ox, oy = origin
            # Only the white box is guaranteed clean: its rows 2..10 of the glyph cell.
            cell = black[oy + _LABEL_BOX[1]:oy + _LABEL_BOX[3] + 1, ox:ox + glyph_ocr.CELL_W]
            reading = glyph_ocr.read_line(cell)
            if reading.distance == 0 and len(reading.text) == 1 and reading.text.isupper():
                label = reading.text
            hidden[max(0, oy + _LABEL_BOX[1] - 1):oy + _LABEL_BOX[3] + 2,
                   max(0, ox + _LABEL_BOX[0] - 1):ox + _LABEL_BOX[2] + 2] = True
        if label is None or label in points:
            unlabelled += 1
        else:
            points[label] = (x, y)
        _stamp(hidden, x, y, _HIDE_RADIUS)
    black.flags.writeable = hidden.flags.writeable = False  # cached and shared: read-only
    return DiagramScan(black, dict(sorted(points.items())), dots, unlabelled, hidden)


def find_points(image: Image.Image) -> tuple[dict[str, tuple[int, int]], int]:
    """({label: (x, y)} of the labelled dots, number of dots without a readable label)."""
    found = scan(image)
    return dict(found.points), found.unlabelled  # a copy: the scan is cached


_HIDE_RADIUS = POINT_RADIUS + 2  # a line's pixels this close to a dot's centre merge with it


def _stamp(mask: np.ndarray, x: int, y: int, radius: int) -> None:
    """Sets a filled disc of `radius` at (x, y) in mask [H, W], clipped to the mask."""
    h, w = mask.shape
    y0, y1 = max(0, y - radius), min(h, y + radius + 1)
    x0, x1 = max(0, x - radius), min(w, x + radius + 1)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.ogrid[y0:y1, x0:x1]
    mask[y0:y1, x0:x1] |= (xx - x) ** 2 + (yy - y) ** 2 <= radius * radius


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


# ------------------------------------------------------------------ segments

ON_SEGMENT_PX = 1.5  # a labelled point this close to a segment's interior lies on it
_LINE_TOLERANCE_PX = 1.5  # drawn pixels lie within 0.5 px of the ideal line; a point on a
# segment may sit up to ON_SEGMENT_PX off it, which bends its pieces by about 1 px more
_MIN_COVERAGE = 0.9  # share of a segment's visible samples that must be black
_MIN_VISIBLE = 6  # samples outside dots and label boxes needed to judge a segment


@dataclasses.dataclass(frozen=True)
class Segment:
    a: str
    b: str
    pa: tuple[int, int]
    pb: tuple[int, int]


def _point_segment(p, a, b) -> tuple[float, float]:
    """(distance from p to segment ab, position t in [0, 1] of the nearest point)."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    t = ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / float(dx * dx + dy * dy)
    t = min(1.0, max(0.0, t))
    return math.hypot(p[0] - a[0] - t * dx, p[1] - a[1] - t * dy), t


def _line_samples(p: tuple[int, int], q: tuple[int, int]
                  ) -> tuple[np.ndarray, np.ndarray, bool]:
    """One sample per pixel step along pq: (major-axis ints [N], minor-axis floats [N],
    whether x is the major axis)."""
    dx, dy = q[0] - p[0], q[1] - p[1]
    n = max(abs(dx), abs(dy))
    t = np.arange(n + 1) / n
    if abs(dx) >= abs(dy):
        return np.rint(p[0] + t * dx).astype(np.int64), p[1] + t * dy, True
    return np.rint(p[1] + t * dy).astype(np.int64), p[0] + t * dx, False


def _coverage(found: DiagramScan, p: tuple[int, int], q: tuple[int, int]) -> tuple[int, int]:
    """(visible samples, black ones among them) along the straight line pq."""
    visible, covered, _, _ = _line_hits(found, p, q)
    return int(visible.sum()), int((covered & visible).sum())


def _line_hits(found: DiagramScan, p: tuple[int, int], q: tuple[int, int]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per sample along pq [N]: visible (outside dots and labels), covered (black within
    _LINE_TOLERANCE_PX), and the sample's x and y."""
    major, minor, x_major = _line_samples(p, q)
    h, w = found.black.shape
    covered = np.zeros(major.shape, dtype=bool)
    base = np.floor(minor).astype(np.int64)
    for k in (-1, 0, 1, 2):
        other = base + k
        ok = (np.abs(other - minor) <= _LINE_TOLERANCE_PX) & (other >= 0)
        ok &= other < (h if x_major else w)
        other = np.where(ok, other, 0)
        pix = found.black[other, major] if x_major else found.black[major, other]
        covered |= ok & pix
    nearest = np.rint(minor).astype(np.int64)
    hidden = found.hidden[nearest, major] if x_major else found.hidden[major, nearest]
    xs, ys = (major, minor) if x_major else (minor, major)
    return ~hidden, covered, xs, ys


def find_segments(found: DiagramScan) -> list[Segment]:
    """The drawn segments between labelled points, split at labelled points lying on them.

    A pair is drawn when >= 90% of the visible samples of the straight line between the two
    dots (outside every dot and label box) are black within 1.5 px. A pair with a third
    labelled point on it (within ON_SEGMENT_PX) is never reported: its pieces are tested
    instead, since pixels cannot tell "AC drawn through B" from "AB and BC drawn".
    """
    names = list(found.points)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pa, pb = found.points[a], found.points[b]
            if any(0.0 < t < 1.0 and d <= ON_SEGMENT_PX
                   for d, t in (_point_segment(p, pa, pb)
                                for n, p in found.points.items() if n not in (a, b))):
                continue
            visible, covered = _coverage(found, pa, pb)
            if visible >= _MIN_VISIBLE and covered >= _MIN_COVERAGE * visible:
                out.append(Segment(a, b, pa, pb))
    return out


def straight_chains(points: dict[str, tuple[int, int]], segments: list[Segment]
                    ) -> list[list[str]]:
    """Runs of >= 3 labelled points joined by segments along one straight line, in order.

    A-B-C means AB and BC are drawn with B on the straight line AC: the drawing shows the
    segment AC with B on it.
    """
    parent = list(range(len(segments)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, s in enumerate(segments):
        for j in range(i + 1, len(segments)):
            t = segments[j]
            shared = {s.a, s.b} & {t.a, t.b}
            if len(shared) != 1:
                continue
            (mid,) = shared
            ends = [n for n in (s.a, s.b, t.a, t.b) if n != mid]
            d, u = _point_segment(points[mid], points[ends[0]], points[ends[1]])
            if d <= ON_SEGMENT_PX and 0.0 < u < 1.0:
                parent[root(j)] = root(i)
    groups: dict[int, set[str]] = {}
    for i, s in enumerate(segments):
        groups.setdefault(root(i), set()).update((s.a, s.b))
    chains = []
    for members in groups.values():
        if len(members) < 3:
            continue
        # order along the line: by projection on the direction of the two farthest points
        ms = sorted(members)
        a, b = max(((p, q) for p in ms for q in ms),
                   key=lambda pq: math.dist(points[pq[0]], points[pq[1]]))
        (ax, ay), (bx, by) = points[a], points[b]
        chain = sorted(ms, key=lambda n: (points[n][0] - ax) * (bx - ax)
                       + (points[n][1] - ay) * (by - ay))
        chains.append(chain if chain[0] <= chain[-1] else chain[::-1])
    return sorted(chains)


# ------------------------------------------------------------------- circles

MIN_CIRCLE_RADIUS = 8  # px
_RING_TOLERANCE_PX = 1.0
_MIN_ARC_PIXELS = 10
_MAX_FIT_RMS = 0.8  # px, of an arc's pixels around its fitted circle
_MIN_RING_COVERAGE = 0.9
_MIN_RING_VISIBLE = 0.4  # share of a ring outside dots and label boxes needed to judge it
_SNAP_CENTRE_PX = 2.0  # a labelled point this close to a fitted centre is the centre
_MAX_ARCS = 64


@dataclasses.dataclass(frozen=True)
class Circle:
    centre: tuple[float, float]  # pixels; exactly the labelled point's when `label` is set
    radius: float
    label: str | None  # the labelled point at the centre, if any
    through: tuple[str, ...]  # labelled points on the circle (within ON_CIRCLE_PX)


ON_CIRCLE_PX = 1.5


def _fit_circle(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float, float, float]:
    """Least-squares (Kasa) circle through pixels xs, ys [N]: (cx, cy, r, rms distance)."""
    mx, my = xs.mean(), ys.mean()
    u, v = xs - mx, ys - my
    a = np.stack([u, v, np.ones_like(u)], axis=1)  # [N, 3]
    sol, *_ = np.linalg.lstsq(a, u * u + v * v, rcond=None)
    cx, cy = sol[0] / 2, sol[1] / 2
    r2 = sol[2] + cx * cx + cy * cy
    if not np.isfinite(r2) or r2 <= 0:
        return 0.0, 0.0, 0.0, math.inf
    r = math.sqrt(r2)
    rms = float(np.sqrt(np.mean((np.hypot(u - cx, v - cy) - r) ** 2)))
    return float(cx + mx), float(cy + my), r, rms


def _segment_mask(shape: tuple[int, int], segments: list[Segment]) -> np.ndarray:
    """[H, W] bool: the drawn segments, widened by 1 px."""
    canvas = np.zeros(shape, dtype=np.uint8)
    for s in segments:
        cv2.line(canvas, s.pa, s.pb, 1, thickness=3)
    return canvas.astype(bool)


def _ring_coverage(found: DiagramScan, cx: float, cy: float, r: float) -> tuple[float, float]:
    """(visible share, black share of the visible) of samples every ~1 px around a ring."""
    h, w = found.black.shape
    n = max(16, int(2 * math.pi * r))
    theta = np.arange(n) * (2 * math.pi / n)
    sx, sy = cx + r * np.cos(theta), cy + r * np.sin(theta)  # [n]
    ix, iy = np.rint(sx).astype(np.int64), np.rint(sy).astype(np.int64)
    inside = (ix >= 0) & (iy >= 0) & (ix < w) & (iy < h)
    if not inside.all():
        return 0.0, 0.0
    visible = ~found.hidden[iy, ix]
    covered = np.zeros(n, dtype=bool)
    for ddy in (-1, 0, 1):
        for ddx in (-1, 0, 1):
            px, py = np.clip(ix + ddx, 0, w - 1), np.clip(iy + ddy, 0, h - 1)
            near = np.abs(np.hypot(px - cx, py - cy) - r) <= _RING_TOLERANCE_PX
            covered |= near & found.black[py, px]
    n_visible = int(visible.sum())
    if n_visible == 0:
        return 0.0, 0.0
    return n_visible / n, float((covered & visible).sum()) / n_visible


def find_circles(found: DiagramScan, segments: list[Segment]) -> list[Circle]:
    """Circle outlines: black pixels that no dot, label box or drawn segment explains are cut
    into arcs (8-connected), each arc fitted with a circle; a fit is refined on every
    unexplained pixel near it and kept when >= 90% of its visible ring is black."""
    h, w = found.black.shape
    residual = found.black & ~found.hidden & ~_segment_mask((h, w), segments)
    n_labels, labels = cv2.connectedComponents(residual.astype(np.uint8), connectivity=8)
    ys, xs = np.nonzero(residual)
    arcs = []
    if n_labels > 1:
        lab = labels[ys, xs]
        order = np.argsort(lab, kind="stable")
        bounds = np.searchsorted(lab[order], np.arange(1, n_labels + 1))
        for k in range(n_labels - 1):
            idx = order[bounds[k]:bounds[k + 1]]
            if idx.size >= _MIN_ARC_PIXELS:
                arcs.append(idx)
    arcs.sort(key=len, reverse=True)
    arcs = arcs[:_MAX_ARCS]  # the longest: a noisy photo must not cost a fit per speck
    max_r = min(h, w) / 2
    used = np.zeros(xs.shape, dtype=bool)
    circles: list[Circle] = []
    fx, fy = xs.astype(float), ys.astype(float)
    for idx in arcs:
        if used[idx].mean() > 0.5:
            continue
        cx, cy, r, rms = _fit_circle(fx[idx], fy[idx])
        if rms > _MAX_FIT_RMS or not MIN_CIRCLE_RADIUS <= r <= max_r:
            continue
        for tol in (4.0, 3.0, 2.0, 1.5):  # refine on every unexplained pixel near the ring
            near = np.abs(np.hypot(fx - cx, fy - cy) - r) <= tol
            if near.sum() < _MIN_ARC_PIXELS:
                break
            cx, cy, r, rms = _fit_circle(fx[near], fy[near])
        if not MIN_CIRCLE_RADIUS <= r <= max_r:
            continue
        visible, covered = _ring_coverage(found, cx, cy, r)
        if visible < _MIN_RING_VISIBLE or covered < _MIN_RING_COVERAGE:
            continue
        used |= np.abs(np.hypot(fx - cx, fy - cy) - r) <= 2.0
        label = None
        near_centre = [(math.dist((cx, cy), p), n) for n, p in found.points.items()]
        if near_centre and min(near_centre)[0] <= _SNAP_CENTRE_PX:
            label = min(near_centre)[1]
            cx, cy = (float(v) for v in found.points[label])
            d = np.hypot(fx - cx, fy - cy)  # the radius again, about the exact centre
            on = np.abs(d - r) <= 1.5
            if on.any():
                r = float(d[on].mean())
        if any(math.dist(c.centre, (cx, cy)) <= 2 and abs(c.radius - r) <= 2 for c in circles):
            continue
        through = tuple(n for n, p in found.points.items()
                        if n != label and abs(math.dist(p, (cx, cy)) - r) <= ON_CIRCLE_PX)
        circles.append(Circle((round(cx, 1), round(cy, 1)), round(r, 1), label, through))
    return sorted(circles, key=lambda c: (c.label is None, c.label or "", c.centre, c.radius))


def _hugs_an_arc(found: DiagramScan, s: Segment, circles: list[Circle]) -> bool:
    """Whether segment s joins two points of a circle and never shows apart from its arc:
    a short chord is within a pixel or two of the arc it cuts off, so its pixels prove
    nothing. It must show >= _MIN_VISIBLE samples more than 2 px off the ring, >= 90% black."""
    for c in circles:
        if s.a not in c.through or s.b not in c.through:
            continue
        visible, covered, xs, ys = _line_hits(found, s.pa, s.pb)
        visible &= np.abs(np.hypot(xs - c.centre[0], ys - c.centre[1]) - c.radius) > 2.0
        n = int(visible.sum())
        if n < _MIN_VISIBLE or (covered & visible).sum() < _MIN_COVERAGE * n:
            return True
    return False


def find_figure(found: DiagramScan) -> tuple[list[Segment], list[Circle]]:
    """Segments and circles, less the segments that may just be a circle's arc."""
    segments = find_segments(found)
    circles = find_circles(found, segments)
    return [s for s in segments if not _hugs_an_arc(found, s, circles)], circles


# --------------------------------------------------------------------- tools

def _lines(points: dict[str, tuple[int, int]], segments: list[Segment]
           ) -> list[tuple[str, ...]]:
    """Every drawn straight line as its labelled points in order: the chains, then the
    segments that are in no chain."""
    chains = [tuple(c) for c in straight_chains(points, segments)]
    in_chain = {frozenset(p) for c in chains for p in zip(c, c[1:])}
    return chains + [(s.a, s.b) for s in segments if frozenset((s.a, s.b)) not in in_chain]


class DetectLines(Tool):
    """Finds the drawn segments of a geometry diagram, as pairs of labelled endpoints.

    Handles only diagrams drawn in vista-jax's own rendered style (black 1-px segments
    between filled dots with one-letter labels). Each segment is reported between two
    labelled points with no labelled point on it: a straight line A-B-C through B is
    reported as AB and BC, and listed under "straight lines" (AC is drawn, with B on it;
    pixels cannot tell that from AB and BC drawn separately). A segment showing fewer than
    6 px outside the dots and labels, or a chord never 2 px away from its circle's arc,
    cannot be told apart and is not reported. Coordinates are pixels, origin top-left,
    y down.
    """

    name = "detect_lines"
    family = "diagram"

    class Arguments(ToolArguments):
        image: ImageId

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        found = scan(ctx.image(args.image))
        segments, _ = find_figure(found)
        chains = straight_chains(found.points, segments)
        lines = [f"{s.a}{s.b}: {s.a} {s.pa} - {s.b} {s.pb}, {math.dist(s.pa, s.pb):.2f} px"
                 for s in segments]
        if not found.points:
            lines = ["no labelled points found, so no segments"]
        elif not segments:
            lines = ["no segments between labelled points found"]
        if chains:
            lines.append("straight lines through 3 or more points: "
                         + ", ".join("-".join(c) for c in chains))
        data = {"segments": [{"a": s.a, "b": s.b, "from": list(s.pa), "to": list(s.pb),
                              "length": round(math.dist(s.pa, s.pb), 2)} for s in segments],
                "straight_lines": chains}
        return ToolOutput("\n".join(lines), [], data)


class DetectCircles(Tool):
    """Finds the circles of a geometry diagram: centre, radius in pixels, points on each.

    Handles only diagrams drawn in vista-jax's own rendered style (black 1-px circle
    outlines, filled dots with one-letter labels). The centre is a labelled point when one
    lies within 2 px of the fitted centre (its pixel position is then used), else the fitted
    pixel centre; centre and radius are accurate to about 1 px. "through" lists the labelled
    points within 1.5 px of the circle. Coordinates are pixels, origin top-left, y down.
    """

    name = "detect_circles"
    family = "diagram"

    class Arguments(ToolArguments):
        image: ImageId

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        found = scan(ctx.image(args.image))
        _, circles = find_figure(found)
        lines = []
        for c in circles:
            centre = (f"{c.label} ({c.centre[0]:g}, {c.centre[1]:g})" if c.label
                      else f"({c.centre[0]:g}, {c.centre[1]:g}) (no labelled point there)")
            through = f", through {', '.join(c.through)}" if c.through else ""
            lines.append(f"circle about {centre}, radius {c.radius:g} px{through}")
        data = {"circles": [{"centre": list(c.centre), "centre_label": c.label,
                             "radius": c.radius, "through": list(c.through)} for c in circles]}
        return ToolOutput("\n".join(lines) or "no circles found", [], data)


def _fraction(x: float) -> Fraction:
    return Fraction(str(round(x, 1)))  # as the text shows it, exactly


def diagram_figure(found: DiagramScan) -> formal.Figure:
    """The figure a diagram shows, in pixel coordinates, with the relations that hold in
    its pixels: labelled points on drawn lines and circles, exact right angles and parallels."""
    segments, circles = find_figure(found)
    fig = formal.Figure()
    pts: dict[str, tuple[float, float]] = dict(found.points)
    for name, (x, y) in found.points.items():
        fig.points[name] = (Fraction(x), Fraction(y))
    fig.segments = [(s.a, s.b) for s in segments]
    for k, c in enumerate((c for c in circles if c.label is None), start=1):
        fig.points[f"c{k}"] = (_fraction(c.centre[0]), _fraction(c.centre[1]))
    unnamed = iter(f"c{k}" for k in range(1, len(circles) + 1))
    for c in circles:
        centre = c.label or next(unnamed)
        pts[centre] = c.centre
        if c.through:
            fig.circles.append(formal.Circle(centre, through=c.through[0]))
        else:
            fig.circles.append(formal.Circle(centre, radius=_fraction(c.radius)))
        fig.facts += [formal.Fact("on_circle", (p, centre)) for p in c.through[1:]]
    lines = _lines(found.points, segments)
    for line in lines:
        fig.facts += [formal.Fact("on_segment", (p, line[0], line[-1])) for p in line[1:-1]]
    for i, l1 in enumerate(lines):
        for l2 in lines[i + 1:]:
            (ax, ay), (bx, by) = found.points[l1[0]], found.points[l1[-1]]
            (cx, cy), (dx, dy) = found.points[l2[0]], found.points[l2[-1]]
            u, v = (bx - ax, by - ay), (dx - cx, dy - cy)
            meet = set(l1) & set(l2)
            if meet and u[0] * v[0] + u[1] * v[1] == 0:
                fig.facts.append(formal.Fact("perpendicular", (l1[0], l1[-1], l2[0], l2[-1])))
            elif not meet and u[0] * v[1] - u[1] * v[0] == 0:
                fig.facts.append(formal.Fact("parallel", (l1[0], l1[-1], l2[0], l2[-1])))
    return fig


class DiagramToFormal(Tool):
    """Reads a geometry diagram into the formal figure language geometry_solver takes.

    Handles only diagrams drawn in vista-jax's own rendered style. Emits `point A (x, y)`
    in pixels (x right, y down; an unlabelled circle centre is named c1, c2, ...),
    `segment A B` for each drawn segment (split at labelled points on it), `circle O
    through A` or `circle O r=R`, and the relations that hold in the pixels: `on M segment
    A B` for labelled points on a drawn straight line, `on P circle O` for labelled points
    on a circle (within 1.5 px), `perpendicular A B C D` for drawn lines meeting at exactly
    90 degrees and `parallel A B C D` for exactly parallel drawn lines (in integer pixel
    coordinates). Add given facts (`length A B = 5`, `angle A B C = 60`) from the problem
    before solving: the pixels are the picture, not necessarily to scale.
    """

    name = "diagram_to_formal"
    family = "diagram"

    class Arguments(ToolArguments):
        image: ImageId

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        fig = diagram_figure(scan(ctx.image(args.image)))
        text = fig.to_text()
        return ToolOutput(text.rstrip("\n") or "no labelled points found", [],
                          {"figure": text, "points": len(fig.points),
                           "segments": len(fig.segments), "circles": len(fig.circles)})


class MeasureAngle(Tool):
    """Measures the angle ABC in degrees at vertex B between labelled points of a diagram.

    Uses the points detect_points finds (same style caveat: diagrams drawn in vista-jax's
    own rendered style only) and their pixel positions; returns the unsigned angle between
    rays BA and BC, 0..180, rounded to 2 decimals (the picture's angle, which is the true
    one only if the diagram is drawn to scale).
    """

    name = "measure_angle"
    family = "diagram"

    class Arguments(ToolArguments):
        image: ImageId
        point_a: Annotated[Label, Field(description="label of a point on the first arm (A)")]
        vertex: Annotated[Label, Field(description="label of the angle's vertex (B)")]
        point_c: Annotated[Label, Field(description="label of a point on the second arm (C)")]

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        names = {"point_a": args.point_a, "vertex": args.vertex, "point_c": args.point_c}
        if args.vertex in (args.point_a, args.point_c) or args.point_a == args.point_c:
            raise ToolError(INVALID_ARGUMENT, "arguments 'point_a', 'vertex', 'point_c': an "
                            f"angle needs three different points, got {args.point_a}, "
                            f"{args.vertex}, {args.point_c}")
        points, _ = find_points(ctx.image(args.image))
        for arg, label in names.items():
            if label not in points:
                found = ", ".join(points) or "none"
                raise ToolError(INVALID_ARGUMENT,
                                f"argument '{arg}': point {label!r} is not in the diagram "
                                f"(labelled points found: {found})")
        (ax, ay), (bx, by), (cx, cy) = (points[n] for n in names.values())
        u, v = (ax - bx, ay - by), (cx - bx, cy - by)
        degrees = round(math.degrees(math.atan2(abs(u[0] * v[1] - u[1] * v[0]),
                                                u[0] * v[0] + u[1] * v[1])), 2)
        name = f"{args.point_a}{args.vertex}{args.point_c}"
        return ToolOutput(f"angle {name} = {degrees:.2f} degrees", [],
                          {"degrees": degrees, "point_a": [ax, ay], "vertex": [bx, by],
                           "point_c": [cx, cy]})
