"""Perception tools: look closer at part of an image, turn it, make faint detail visible."""

from __future__ import annotations

import math
from typing import Annotated

from PIL import Image, ImageEnhance, ImageOps
from pydantic import Field

from tools_server.registry import (INVALID_ARGUMENT, Tool, ToolArguments, ToolContext, ToolError,
                                   ToolOutput)

ImageId = Annotated[str, Field(
    min_length=1, max_length=128,
    description="id of the image (from the task or from an earlier tool result)")]
Box = Annotated[list[int], Field(
    min_length=4, max_length=4,
    description="[x0, y0, x1, y1] in pixels of the given image; x0 < x1 <= width, "
                "y0 < y1 <= height (x1 and y1 exclusive)")]


def _check_box(box: list[int], image: Image.Image) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    w, h = image.size
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise ToolError(INVALID_ARGUMENT,
                        f"argument 'box': {box} is not inside the image of size {w}x{h} "
                        f"(need 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h})")
    return x0, y0, x1, y1


class Crop(Tool):
    """Crops an image to a box and returns the crop as a new image.

    `box` is [x0, y0, x1, y1] in integer pixels of the given image (origin top-left, x1 and
    y1 exclusive). Use it to look at a region in detail; coordinates in later calls on the
    crop are relative to the crop.
    """

    name = "crop"
    family = "perception"

    class Arguments(ToolArguments):
        image: ImageId
        box: Box

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        image = ctx.image(args.image)
        x0, y0, x1, y1 = _check_box(args.box, image)
        image_id = ctx.add_image(image.crop((x0, y0, x1, y1)))
        w, h = x1 - x0, y1 - y0
        return ToolOutput(f"cropped image {image_id[:8]} ({w} x {h})", [image_id],
                          {"image_id": image_id, "width": w, "height": h, "box": [x0, y0, x1, y1]})


class Zoom(Tool):
    """Crops an image to a box and enlarges the crop by an integer factor (nearest neighbour).

    `box` is [x0, y0, x1, y1] in integer pixels of the given image (x1 and y1 exclusive);
    `factor` is 2, 3 or 4. Pixels are repeated, not smoothed, so thin lines and small text
    stay sharp.
    """

    name = "zoom"
    family = "perception"

    class Arguments(ToolArguments):
        image: ImageId
        box: Box
        factor: Annotated[int, Field(ge=2, le=4, description="enlargement factor, 2..4")] = 2

    max_output_pixels = 4_000_000

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        image = ctx.image(args.image)
        x0, y0, x1, y1 = _check_box(args.box, image)
        w, h = (x1 - x0) * args.factor, (y1 - y0) * args.factor
        if w * h > self.max_output_pixels:
            raise ToolError(INVALID_ARGUMENT,
                            f"the zoomed image would be {w}x{h} pixels; choose a smaller box "
                            f"or factor (limit {self.max_output_pixels} pixels)")
        zoomed = image.crop((x0, y0, x1, y1)).resize((w, h), Image.Resampling.NEAREST)
        image_id = ctx.add_image(zoomed)
        return ToolOutput(f"zoomed image {image_id[:8]} ({w} x {h})", [image_id],
                          {"image_id": image_id, "width": w, "height": h, "box": [x0, y0, x1, y1],
                           "factor": args.factor})


class Rotate(Tool):
    """Rotates an image counter-clockwise by `degrees` and returns it as a new image.

    Multiples of 90 are exact pixel transposes; other angles resample bicubically and expand
    the canvas (white fill) so that nothing is cut off. Use it to read rotated text or
    labels, e.g. a vertical axis title (rotate by -90).
    """

    name = "rotate"
    family = "perception"

    class Arguments(ToolArguments):
        image: ImageId
        degrees: Annotated[float, Field(ge=-360, le=360,
                                        description="counter-clockwise angle in degrees, -360..360")]

    max_output_pixels = 4_000_000

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        image = ctx.image(args.image)
        angle = args.degrees % 360
        # the expanded canvas (PIL rounds each side up), checked before any pixel is made
        rad = math.radians(angle)
        c, s = abs(math.cos(rad)), abs(math.sin(rad))
        w, h = image.width * c + image.height * s, image.width * s + image.height * c
        if math.ceil(w) * math.ceil(h) > self.max_output_pixels:
            raise ToolError(INVALID_ARGUMENT, f"the rotated image would be about {w:.0f}x{h:.0f} "
                            f"pixels (limit {self.max_output_pixels})")
        transposes = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180,
                      270: Image.Transpose.ROTATE_270}
        if angle == 0:
            out = image.copy()
        elif angle in transposes:
            out = image.transpose(transposes[int(angle)])
        else:
            out = image.convert("RGB").rotate(angle, resample=Image.Resampling.BICUBIC,
                                              expand=True, fillcolor=(255, 255, 255))
        image_id = ctx.add_image(out)
        return ToolOutput(f"rotated image {image_id[:8]} ({out.width} x {out.height})", [image_id],
                          {"image_id": image_id, "width": out.width, "height": out.height,
                           "degrees": args.degrees})


class Enhance(Tool):
    """Makes faint detail easier to see and returns the result as a new image.

    `contrast` and `sharpness` are factors (1 = unchanged, 2 = twice as strong, 0.5 = half);
    `autocontrast` first stretches the intensities to the full range (ignoring the darkest
    and brightest 1%); `grayscale` drops colour. Applied in that order: grayscale,
    autocontrast, contrast, sharpness.
    """

    name = "enhance"
    family = "perception"

    class Arguments(ToolArguments):
        image: ImageId
        contrast: Annotated[float, Field(ge=0.0, le=5.0, description="contrast factor, 0..5 (1 = unchanged)")] = 1.0
        sharpness: Annotated[float, Field(ge=0.0, le=5.0, description="sharpness factor, 0..5 (1 = unchanged)")] = 1.0
        autocontrast: Annotated[bool, Field(description="stretch intensities to the full range first")] = False
        grayscale: Annotated[bool, Field(description="convert to grayscale first")] = False

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        out = ctx.image(args.image).convert("L" if args.grayscale else "RGB")
        if args.autocontrast:
            out = ImageOps.autocontrast(out, cutoff=1)
        if args.contrast != 1.0:
            out = ImageEnhance.Contrast(out).enhance(args.contrast)
        if args.sharpness != 1.0:
            out = ImageEnhance.Sharpness(out).enhance(args.sharpness)
        image_id = ctx.add_image(out)
        return ToolOutput(f"enhanced image {image_id[:8]} ({out.width} x {out.height})", [image_id],
                          {"image_id": image_id, "width": out.width, "height": out.height})
