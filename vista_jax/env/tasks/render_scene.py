"""Renderer for shape scenes: flat-coloured shapes of named colours on a white canvas.

The ground truth of counting and spatial tasks, and the images the tool server's classical
`detect_objects` / `count_objects` backend reads back exactly
(`tools_server/tools/perception.py` mirrors `COLORS` and `SHAPES`; a test keeps them in step):

- shapes: `SHAPES` (circle, square, triangle, diamond, star), each filling a square cell
  [x0, y0, x0 + side, y0 + side) so that its pixels' bounding box *is* the cell;
- colours: `COLORS`, ten of the eleven basic colour terms (white is the background), far
  apart so that no two can be confused;
- no antialiasing: every shape pixel has exactly its colour, every other pixel is white;
- shapes never touch: the cells of two shapes are at least `margin` (default 4) px apart.

Save the images losslessly (PNG): the reader relies on exact colours.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "star")
# Basic colour terms (Berlin & Kay) minus white, as flat sRGB values far apart in CIELAB.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (240, 210, 0),
    "green": (30, 160, 50),
    "blue": (30, 80, 220),
    "purple": (140, 50, 180),
    "pink": (255, 105, 180),
    "brown": (130, 80, 30),
    "gray": (128, 128, 128),
    "black": (0, 0, 0),
}
WHITE = (255, 255, 255)
MIN_SIDE = 12  # smallest cell the reader classifies reliably, pixels
_STAR_INNER = 0.42  # inner / outer radius of the star: thick arms, clearly concave


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One shape: its kind, colour name and cell [x0, y0, x1, y1] (x1, y1 exclusive, square)."""

    shape: str
    color: str
    box: tuple[int, int, int, int]

    def to_dict(self) -> dict:
        return {"shape": self.shape, "color": self.color, "box": list(self.box)}


@functools.cache
def shape_mask(shape: str, side: int) -> np.ndarray:
    """The pixels of `shape` drawn in a side x side cell: bool [side, side], read-only.

    Every shape reaches all four edges of its cell (its bounding box is the cell).
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; shapes: {', '.join(SHAPES)}")
    if side < MIN_SIDE:
        raise ValueError(f"side {side} is below the minimum {MIN_SIDE}")
    im = Image.new("1", (side, side), 0)
    draw = ImageDraw.Draw(im)
    e = side - 1  # last pixel index; vertices on it put the shape's edge on the cell's edge
    c = e / 2
    if shape == "square":
        draw.rectangle([0, 0, e, e], fill=1)
    elif shape == "circle":
        draw.ellipse([0, 0, e, e], fill=1)
    elif shape == "triangle":
        draw.polygon([(c, 0), (e, e), (0, e)], fill=1, outline=1)
    elif shape == "diamond":
        draw.polygon([(c, 0), (e, c), (c, e), (0, c)], fill=1, outline=1)
    else:  # star: five points, stretched to fill the cell (a regular one is wider than tall)
        pts = [(math.sin(math.pi * k / 5) * (1 if k % 2 == 0 else _STAR_INNER),
                -math.cos(math.pi * k / 5) * (1 if k % 2 == 0 else _STAR_INNER))
               for k in range(10)]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x_lo, x_hi, y_lo, y_hi = min(xs), max(xs), min(ys), max(ys)
        draw.polygon([((x - x_lo) / (x_hi - x_lo) * e, (y - y_lo) / (y_hi - y_lo) * e)
                      for x, y in pts], fill=1, outline=1)
    mask = np.array(im, dtype=bool)
    assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any(), \
        f"{shape} of side {side} does not fill its cell"
    mask.flags.writeable = False
    return mask


def _as_object(obj: SceneObject | Mapping) -> SceneObject:
    if isinstance(obj, Mapping):
        obj = SceneObject(obj["shape"], obj.get("color", obj.get("colour")), tuple(obj["box"]))
    if obj.shape not in SHAPES:
        raise ValueError(f"unknown shape {obj.shape!r}; shapes: {', '.join(SHAPES)}")
    if obj.color not in COLORS:
        raise ValueError(f"unknown color {obj.color!r}; colors: {', '.join(COLORS)}")
    return SceneObject(obj.shape, obj.color, tuple(int(v) for v in obj.box))


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int], margin: int) -> bool:
    """Whether boxes a and b (exclusive ends) leave at least `margin` px between them."""
    return (a[2] + margin <= b[0] or b[2] + margin <= a[0]
            or a[3] + margin <= b[1] or b[3] + margin <= a[1])


def render_scene(objects: Sequence[SceneObject | Mapping], size: tuple[int, int] = (320, 240),
                 *, margin: int = 4) -> Image.Image:
    """Draws the objects on white; returns an RGB image of `size`.

    Each object (a SceneObject, or a mapping with "shape", "color" and "box") fills its
    square cell `box`. Raises ValueError for an unknown shape or colour, a cell that is not
    square, smaller than MIN_SIDE or outside the canvas, or two cells closer than `margin`.
    """
    width, height = size
    placed = [_as_object(o) for o in objects]
    for i, obj in enumerate(placed):
        x0, y0, x1, y1 = obj.box
        if x1 - x0 != y1 - y0 or x1 - x0 < MIN_SIDE:
            raise ValueError(f"object {i} ({obj.color} {obj.shape}): box {list(obj.box)} must be "
                             f"square with side >= {MIN_SIDE}")
        if not (0 <= x0 and 0 <= y0 and x1 <= width and y1 <= height):
            raise ValueError(f"object {i} ({obj.color} {obj.shape}): box {list(obj.box)} is not "
                             f"inside the canvas {width}x{height}")
        for j in range(i):
            if not _apart(placed[j].box, obj.box, margin):
                raise ValueError(f"objects {j} and {i} are closer than the margin of {margin} px")
    canvas = np.full((height, width, 3), WHITE, dtype=np.uint8)  # [H, W, 3]
    for obj in placed:
        x0, y0, x1, y1 = obj.box
        mask = shape_mask(obj.shape, x1 - x0)
        canvas[y0:y1, x0:x1][mask] = COLORS[obj.color]
    return Image.fromarray(canvas)


def place_objects(specs: Sequence[tuple[str, str, int]], rng: random.Random,
                  size: tuple[int, int] = (320, 240), *, margin: int = 4,
                  max_tries: int = 500) -> list[SceneObject]:
    """Random non-overlapping cells for (shape, color, side) specs, larger ones placed first.

    Raises ValueError when a spec cannot be placed in `max_tries` random positions (the
    layout is impossible or too tight: use fewer or smaller objects, or a larger canvas).
    """
    width, height = size
    order = sorted(range(len(specs)), key=lambda i: -specs[i][2])
    boxes: dict[int, tuple[int, int, int, int]] = {}
    for i in order:
        shape, color, side = specs[i]
        if side > width or side > height:
            raise ValueError(f"object {i} of side {side} does not fit in {width}x{height}")
        for _ in range(max_tries):
            x0, y0 = rng.randint(0, width - side), rng.randint(0, height - side)
            box = (x0, y0, x0 + side, y0 + side)
            if all(_apart(box, other, margin) for other in boxes.values()):
                boxes[i] = box
                break
        else:
            raise ValueError(f"cannot place {len(specs)} objects in {width}x{height} with a "
                             f"margin of {margin} px (object {i}, side {side}, found no room "
                             f"in {max_tries} tries)")
    return [_as_object(SceneObject(s[0], s[1], boxes[i])) for i, s in enumerate(specs)]


def random_scene(rng: random.Random | int, n_objects: int, size: tuple[int, int] = (320, 240), *,
                 shapes: Sequence[str] = SHAPES, colors: Sequence[str] = tuple(COLORS),
                 min_side: int = 20, max_side: int = 44, margin: int = 4
                 ) -> tuple[Image.Image, list[SceneObject]]:
    """A scene of `n_objects` random shapes, colours and sides: (image, objects in draw order).

    `rng` is a random.Random (or an int seed). Raises ValueError for bad options or a layout
    that does not fit (see place_objects).
    """
    if isinstance(rng, int):
        rng = random.Random(rng)
    if n_objects < 0:
        raise ValueError(f"n_objects must be >= 0, got {n_objects}")
    if not MIN_SIDE <= min_side <= max_side:
        raise ValueError(f"need {MIN_SIDE} <= min_side <= max_side, got {min_side}, {max_side}")
    if not shapes or not colors:
        raise ValueError("shapes and colors must not be empty")
    specs = [(rng.choice(list(shapes)), rng.choice(list(colors)), rng.randint(min_side, max_side))
             for _ in range(n_objects)]
    objects = place_objects(specs, rng, size, margin=margin)
    return render_scene(objects, size, margin=margin), objects
