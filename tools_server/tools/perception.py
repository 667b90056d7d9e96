"""Perception tools: look closer at part of an image."""

from __future__ import annotations

from typing import Annotated

from PIL import Image
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
