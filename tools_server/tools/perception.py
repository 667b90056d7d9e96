"""Perception tools: look closer at part of an image, turn it, make faint detail visible, read
its text, find and count objects, name its main colours.

Backends:
- `ocr`: rapidocr's PP-OCR text detector and recogniser (ONNX models bundled in its wheel),
  for printed horizontal text in any image; a batch of calls shares one recognition pass.
- `detect_objects`, `count_objects`: "classical" (default) reads only scenes of flat-coloured
  shapes on white drawn by `vista_jax.env.tasks.render_scene` (its `COLORS` and `SHAPES` are
  mirrored here as `SCENE_COLORS` and `SCENE_SHAPES`; a test keeps them in step): connected
  regions of one palette colour, each classified by its contour geometry; it refuses images
  (or boxes) over 4,000,000 pixels, as the chart tools do. "hf" runs an OWL-ViT / OWLv2
  checkpoint from a local directory on any image, on CPU or a GPU (`device` option;
  `tools_server.tools.hf_backends`).
- `dominant_colors`: k-means (OpenCV) in CIELAB, or exact counting when an image has at most
  k colours. A colour our renderers draw gets the name their tools use (`RENDERED_COLORS`:
  the scene palette and the chart palette as read_legend names it); any other colour is
  named from its OKLCh lightness, chroma and hue (`color_names`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import threading
from typing import Annotated, Any, ClassVar

import cv2
import numpy as np
from PIL import Image, ImageEnhance, ImageOps
from pydantic import Field

from tools_server.registry import (EXECUTION_FAILED, INVALID_ARGUMENT, Tool, ToolArguments,
                                   ToolContext, ToolError, ToolOutput)

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
    stay sharp. A box so small that a side would stay under 28 px is enlarged by the
    smallest larger factor that reaches 28 px (the result says which factor was used).
    """

    name = "zoom"
    family = "perception"

    class Arguments(ToolArguments):
        image: ImageId
        box: Box
        factor: Annotated[int, Field(ge=2, le=4, description="enlargement factor, 2..4")] = 2

    max_output_pixels = 4_000_000
    # Qwen-VL's image processor needs both sides >= 28 px (14-px patches merged 2 x 2) and
    # an aspect ratio <= 200: a zoom it could not take would fail the next policy turn.
    min_output_side = 28
    max_aspect_ratio = 200

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        image = ctx.image(args.image)
        x0, y0, x1, y1 = _check_box(args.box, image)
        bw, bh = x1 - x0, y1 - y0
        if max(bw, bh) > self.max_aspect_ratio * min(bw, bh):
            raise ToolError(INVALID_ARGUMENT,
                            f"argument 'box': a {bw}x{bh} box is too elongated to show (aspect "
                            f"ratio over {self.max_aspect_ratio}); choose a less elongated box")
        factor = max(args.factor, math.ceil(self.min_output_side / min(bw, bh)))
        w, h = bw * factor, bh * factor
        if w * h > self.max_output_pixels:
            raise ToolError(INVALID_ARGUMENT,
                            f"the zoomed image would be {w}x{h} pixels; choose a smaller box "
                            f"or factor (limit {self.max_output_pixels} pixels)")
        zoomed = image.crop((x0, y0, x1, y1)).resize((w, h), Image.Resampling.NEAREST)
        image_id = ctx.add_image(zoomed)
        note = ("" if factor == args.factor
                else f", factor raised to {factor} to reach {self.min_output_side} px")
        return ToolOutput(f"zoomed image {image_id[:8]} ({w} x {h}{note})", [image_id],
                          {"image_id": image_id, "width": w, "height": h, "box": [x0, y0, x1, y1],
                           "factor": factor})


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


# ----------------------------------------------------------------------------------------
# Shared by the tools below: pixels of an image or of a box in it, and named colours.
# ----------------------------------------------------------------------------------------

OptionalBox = Annotated[list[int] | None, Field(
    min_length=4, max_length=4,
    description="optional region [x0, y0, x1, y1] in pixels of the given image (x1 and y1 "
                "exclusive); omit for the whole image. Coordinates in the result stay in the "
                "whole image's frame")]

# render_scene.COLORS: the renderer's flat colours (a test keeps the two in step).
SCENE_COLORS: dict[str, tuple[int, int, int]] = {
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
SCENE_SHAPES = ("circle", "square", "triangle", "diamond", "star")  # render_scene.SHAPES
WHITE = (255, 255, 255)  # render_scene.WHITE, render.WHITE
# render.PALETTE by render.COLOUR_NAMES: the chart palette as read_legend names it (a test
# keeps this, chart.PALETTE_NAMES and the renderer in step).
CHART_COLORS: dict[str, tuple[int, int, int]] = {
    "blue": (31, 119, 180),
    "orange": (255, 127, 14),
    "green": (44, 160, 44),
    "red": (214, 39, 40),
    "purple": (148, 103, 189),
    "brown": (140, 86, 75),
    "pink": (227, 119, 194),
    "olive": (188, 189, 34),
    "cyan": (23, 190, 207),
}
# Every colour our renderers draw, with the name their own tools give it, so that
# dominant_colors agrees with read_legend and detect_objects on our images.
RENDERED_COLORS: dict[tuple[int, int, int], str] = {
    **{rgb: name for name, rgb in SCENE_COLORS.items()},
    **{rgb: name for name, rgb in CHART_COLORS.items()}, WHITE: "white"}
COLOR_NAMES = ("black", "gray", "white", "red", "orange", "yellow", "olive", "green", "cyan",
               "blue", "purple", "pink", "brown")


def _to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (L in 0..100) of sRGB colours: [..., 3] uint8 -> [..., 3] float32."""
    flat = rgb.reshape(-1, 1, 3).astype(np.float32) / 255.0
    return cv2.cvtColor(flat, cv2.COLOR_RGB2Lab).reshape(rgb.shape)


def _squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared L2 distances [N, k] float32 of points [N, 3] to centres [k, 3]."""
    d2 = np.zeros((len(points), len(centres)), np.float32)  # [N, k]
    for ch in range(points.shape[1]):  # per channel: a 3-wide matmul is slower than this
        d2 += (points[:, ch, None] - centres[None, :, ch]) ** 2
    return d2


# sRGB (linear) -> LMS cone responses -> OKLab (Ottosson 2020).
_OKLAB_M1 = np.array([[0.4122214708, 0.5363325363, 0.0514459929],
                      [0.2119034982, 0.6806995451, 0.1073969566],
                      [0.0883024619, 0.2817188376, 0.6299787005]])
_OKLAB_M2 = np.array([[0.2104542553, 0.7936177850, -0.0040720468],
                      [1.9779984951, -2.4285922050, 0.4505937099],
                      [0.0259040371, 0.7827717662, -0.8086757660]])


def _oklch(rgb: np.ndarray) -> np.ndarray:
    """OKLCh of sRGB colours: [N, 3] uint8 -> [N, 3] float64 (L 0..100, chroma x 100, hue in
    degrees 0..360)."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    lab = np.cbrt(linear @ _OKLAB_M1.T) @ _OKLAB_M2.T  # [N, 3]
    hue = np.degrees(np.arctan2(lab[:, 2], lab[:, 1])) % 360.0
    return np.stack([100 * lab[:, 0], 100 * np.hypot(lab[:, 1], lab[:, 2]), hue], axis=-1)


# Hue bins of OKLCh (upper bounds, degrees), placed between CSS and tab10 colours that
# English speakers name apart: tomato / orangered red, coral orange; goldenrod yellow;
# yellowgreen green; turquoise, teal and tab10 cyan cyan, lightblue and skyblue blue; slate
# blue blue, mediumpurple purple. OKLab, not CIELAB: CIELAB bends blue towards purple
# (pure blue and navy have the hue of mediumpurple there), so no hue bin could part them.
_HUE_BINS = ((10.0, "pink"), (37.0, "red"), (78.0, "orange"), (118.0, "yellow"),
             (180.0, "green"), (217.0, "cyan"), (290.0, "blue"), (335.0, "purple"),
             (360.0, "pink"))
_ACHROMATIC_CHROMA = 3.5  # OKLCh chroma x 100 (about 12 in CIELAB units)


def _name_lch(lightness: float, chroma: float, hue: float) -> str:
    """The basic colour name of one OKLCh colour (see `color_names`)."""
    if chroma < _ACHROMATIC_CHROMA or (lightness >= 94 and chroma < 4.5) \
            or (lightness < 22 and chroma < 8):  # off-whites and near-blacks read as such
        return "black" if lightness < 30 else "white" if lightness >= 92 else "gray"
    name = next(n for bound, n in _HUE_BINS if hue < bound)
    if name == "pink" and lightness < 45:  # dark rose is wine red, dark magenta purple
        return "purple" if 335 <= hue < 350 else "red"
    if name == "red":
        if lightness < 60 and chroma < 13:
            return "brown"
        if lightness >= 70 or (lightness >= 62 and chroma < 12):
            return "pink"  # salmon, light coral, rosy brown
    if name == "orange" and (lightness < 60 or (chroma < 10 and lightness < 82)):
        return "brown"  # sienna, saddle brown, tan, burlywood
    if name == "yellow":
        if hue < 95 and lightness < 65:
            return "brown"  # dark gold
        if hue >= 95 and lightness < 80:
            return "olive"
    if name == "purple" and hue >= 320 and lightness >= 68:
        return "pink"  # violet, plum, orchid, magenta
    return name


def color_names(rgb: np.ndarray) -> list[str]:
    """Basic colour names of sRGB colours [N, 3] uint8.

    A colour our renderers draw gets its name there (`RENDERED_COLORS`). Any other is named
    from OKLCh: black, gray or white by lightness when nearly colourless (chroma under 3.5,
    about 12 in CIELAB units); otherwise by hue bin (`_HUE_BINS`), with brown for dark or
    muted red and orange hues, pink for light red and light magenta hues, olive for dark
    yellow.
    """
    rgb = np.asarray(rgb, np.uint8).reshape(-1, 3)
    lch = _oklch(rgb)  # [N, 3]
    return [RENDERED_COLORS.get(tuple(int(v) for v in c)) or _name_lch(*(float(v) for v in x))
            for c, x in zip(rgb, lch)]


def _rgb_array(image: Image.Image) -> np.ndarray:
    """The image as RGB uint8 [H, W, 3], transparent pixels composited over white."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(image.convert("RGB"))


def _region(image: Image.Image, box: list[int] | None, max_pixels: int | None = None,
            reader: str = "this tool") -> tuple[np.ndarray, int, int]:
    """(RGB pixels [h, w, 3] of `box`, or of the whole image; the region's x0, y0).

    A region over `max_pixels` is refused before any pixel is converted.
    """
    if box is None:
        if image.width == 0 or image.height == 0:
            raise ToolError(INVALID_ARGUMENT, f"argument 'image': the image is empty "
                                              f"({image.width}x{image.height})")
        x0, y0, x1, y1 = 0, 0, image.width, image.height
    else:
        x0, y0, x1, y1 = _check_box(box, image)
    w, h = x1 - x0, y1 - y0
    if max_pixels is not None and w * h > max_pixels:
        what = "image" if box is None else "box"
        raise ToolError(INVALID_ARGUMENT, f"argument '{what}': the {what} is {w}x{h} = "
                        f"{w * h:,} pixels; {reader} reads at most {max_pixels:,}; pass a "
                        "smaller box")
    if box is None:
        return _rgb_array(image), 0, 0
    return _rgb_array(image.crop((x0, y0, x1, y1))), x0, y0


def _run_one(tool: Tool, args: ToolArguments, ctx: ToolContext) -> ToolOutput:
    """`run` of a tool whose work lives in `run_batch`."""
    result = tool.run_batch([(args, ctx)])[0]
    if isinstance(result, ToolError):
        raise result
    return result


def _fmt_box(box: list[int] | tuple[int, ...]) -> str:
    return "[" + ", ".join(str(v) for v in box) + "]"


# ----------------------------------------------------------------------------------------
# ocr: rapidocr's PP-OCR models, with a batch of calls sharing one recognition pass.
# ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TextLine:
    text: str
    score: float
    box: tuple[int, int, int, int]  # axis-aligned, pixels, x1 and y1 exclusive


class OcrEngine:
    """rapidocr's text detector (per image) and recogniser (one pass over every line of every
    image), with the bundled ONNX models.

    The angle classifier is off: it only tells upright from upside-down lines (the rotate
    tool handles those) and cost ~10% of the time. Detection runs at the image's own scale
    up to 960 px a side (PaddleOCR's default) instead of rapidocr's upscale of the short
    side to 736 px, which made a 320x240 image 3x slower to read with no gain in accuracy.
    rapidocr's pipeline object keeps per-call state (its detector's preprocessor, mutable
    parameters), so one call runs at a time; onnxruntime uses every core for it anyway.
    """

    # Text lines per recogniser forward (each padded to the widest of its batch, after a
    # sort by width). 6 (rapidocr's default), 16 and 48 measured the same within noise.
    rec_batch = 16

    def __init__(self):
        from rapidocr import RapidOCR

        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        self._ocr = RapidOCR(params={
            "Global.log_level": "error", "Global.use_cls": False,
            "Det.limit_type": "max", "Det.limit_side_len": 960,
            "Rec.rec_batch_num": self.rec_batch})
        self._ocr._load_det_model()
        self._ocr._load_rec_model()
        self._lock = threading.Lock()

    @staticmethod
    def _pad(bgr: np.ndarray, multiple: int = 32) -> tuple[np.ndarray, tuple[int, int]]:
        """The image [H, W, 3] framed in its own background colour (the median of its edge
        pixels) to sides that are multiples of 32, and the (top, left) offset of the image.

        The detector resizes its input to multiples of 32 otherwise, which squeezes small
        images out of shape: a 220x40 region became 224x32 and its boxes drifted by 8 px.
        """
        h, w = bgr.shape[:2]
        edge = np.concatenate([bgr[0], bgr[-1], bgr[:, 0], bgr[:, -1]])  # [2W + 2H, 3]
        colour = [int(v) for v in np.median(edge, axis=0)]
        ph, pw = -h % multiple, -w % multiple
        top, left = ph // 2, pw // 2
        framed = cv2.copyMakeBorder(np.ascontiguousarray(bgr), top, ph - top, left, pw - left,
                                    cv2.BORDER_CONSTANT, value=colour)
        return framed, (top, left)

    def read(self, images: list[np.ndarray]) -> list[list[TextLine] | Exception]:
        """Lines of each RGB image [H, W, 3] (reading order), or the exception its detection
        raised. Every image must be at least 8 px a side, aspect ratio at most 100."""
        from rapidocr.main import RapidOCRError
        from rapidocr.utils.process_img import map_boxes_to_original

        found: list[np.ndarray | Exception] = []  # per image: polygons [n, 4, 2] in its frame
        crops: list[np.ndarray] = []
        with self._lock:
            for rgb in images:
                h, w = rgb.shape[:2]
                bgr, (top, left) = self._pad(rgb[:, :, ::-1])  # rapidocr takes arrays as BGR
                try:
                    pre, record = self._ocr.preprocess_img(bgr)
                    try:
                        line_crops, det = self._ocr.detect_and_crop(pre, record)
                    except RapidOCRError:  # no text found
                        found.append(np.zeros((0, 4, 2), np.float32))
                        continue
                    polys = map_boxes_to_original(det.boxes, record, *bgr.shape[:2])
                    found.append(polys - np.array([left, top], np.float32))
                    crops.extend(line_crops)
                except Exception as exc:  # noqa: BLE001 - one bad image fails only its call
                    found.append(exc)
            rec = self._ocr.recognize_txt(crops) if crops else None
        results: list[list[TextLine] | Exception] = []
        k = 0
        for rgb, polys in zip(images, found):
            if isinstance(polys, Exception):
                results.append(polys)
                continue
            h, w = rgb.shape[:2]
            lines = []
            for poly in polys:
                text, score = rec.txts[k].strip(), float(rec.scores[k])
                k += 1
                if not text:
                    continue
                x0 = min(max(int(math.floor(poly[:, 0].min())), 0), w - 1)
                y0 = min(max(int(math.floor(poly[:, 1].min())), 0), h - 1)
                x1 = max(min(int(math.ceil(poly[:, 0].max())), w), x0 + 1)
                y1 = max(min(int(math.ceil(poly[:, 1].max())), h), y0 + 1)
                lines.append(TextLine(text, score, (x0, y0, x1, y1)))
            results.append(lines)
        return results


class Ocr(Tool):
    """Reads the printed text in an image: one `text @ [x0, y0, x1, y1]` line per text line.

    Lines come top to bottom, then left to right; boxes are in pixels of the given image
    (x1, y1 exclusive) and hold their line with a few px to spare. `box` reads only that
    region (the boxes stay in the whole image's frame). Lines recognised with a confidence
    below `min_score` (0..1, default 0.5) are left out. Reads horizontal text (rotate
    tilted text first); the image or region needs at least 8 px on each side. No text
    gives "no text found".
    """

    name = "ocr"
    family = "perception"
    model_backed = True

    class Arguments(ToolArguments):
        image: ImageId
        box: OptionalBox = None
        min_score: Annotated[float, Field(ge=0.0, le=1.0, description="drop lines recognised "
                                          "with a lower confidence, 0..1")] = 0.5

    min_side = 8  # the text detector finds nothing useful below this
    max_aspect_ratio = 100  # rapidocr's resizing breaks down for longer, thinner images

    def __init__(self):
        self._engine: OcrEngine | None = None
        self._engine_lock = threading.Lock()

    def load(self) -> None:
        self.engine()

    def engine(self) -> OcrEngine:
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    self._engine = OcrEngine()
        return self._engine

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        return _run_one(self, args, ctx)

    def _prepare(self, args: Arguments, ctx: ToolContext) -> tuple[np.ndarray, int, int]:
        rgb, x0, y0 = _region(ctx.image(args.image), args.box)
        h, w = rgb.shape[:2]
        what = "box" if args.box is not None else "image"
        if min(w, h) < self.min_side:
            raise ToolError(INVALID_ARGUMENT, f"argument '{what}': the {what} is {w}x{h} px; "
                            f"reading text needs at least {self.min_side} px on each side "
                            "(zoom in on small text first)")
        if max(w, h) > self.max_aspect_ratio * min(w, h):
            raise ToolError(INVALID_ARGUMENT, f"argument '{what}': the {what} is {w}x{h} px, too "
                            f"elongated to read (aspect ratio over {self.max_aspect_ratio})")
        return rgb, x0, y0

    def run_batch(self, calls: list[tuple[Arguments, ToolContext]]) -> list[ToolOutput | ToolError]:
        prepared: list[tuple[np.ndarray, int, int] | ToolError] = []
        for args, ctx in calls:
            try:
                prepared.append(self._prepare(args, ctx))
            except ToolError as exc:
                prepared.append(exc)
        todo = [p for p in prepared if not isinstance(p, ToolError)]
        read = iter(self.engine().read([p[0] for p in todo]) if todo else [])
        results: list[ToolOutput | ToolError] = []
        for (args, _), prep in zip(calls, prepared):
            if isinstance(prep, ToolError):
                results.append(prep)
                continue
            lines = next(read)
            if isinstance(lines, Exception):
                results.append(ToolError(EXECUTION_FAILED, f"text detection failed: {lines}"))
                continue
            _, ox, oy = prep
            kept = [{"text": ln.text, "box": [ln.box[0] + ox, ln.box[1] + oy, ln.box[2] + ox,
                                              ln.box[3] + oy], "score": round(ln.score, 4)}
                    for ln in lines if ln.score >= args.min_score]
            text = "\n".join(f"{ln['text']} @ {_fmt_box(ln['box'])}" for ln in kept)
            results.append(ToolOutput(text or "no text found", [], {"lines": kept}))
        return results


# ----------------------------------------------------------------------------------------
# detect_objects / count_objects: the query grammar, the classical scene reader, the tools.
# ----------------------------------------------------------------------------------------

_COLOR_WORDS = {**{c: c for c in SCENE_COLORS}, "grey": "gray"}
_SHAPE_WORDS = {**{s: s for s in SCENE_SHAPES}, **{s + "s": s for s in SCENE_SHAPES}}
_GENERIC_WORDS = frozenset({"object", "objects", "shape", "shapes", "thing", "things", "item",
                            "items", "everything"})
_FILLER_WORDS = frozenset({"a", "an", "the", "all", "every", "each", "any", "of", "in", "image",
                           "picture", "scene"})
_SEPARATORS = frozenset({",", "and", "or"})


@dataclasses.dataclass(frozen=True)
class QueryClause:
    """One phrase of a query: a colour and/or a shape; None matches any."""

    color: str | None
    shape: str | None

    def matches(self, color: str, shape: str) -> bool:
        return self.color in (None, color) and self.shape in (None, shape)


def _query_words_help() -> str:
    return (f"colours: {', '.join(SCENE_COLORS)}; shapes: {', '.join(SCENE_SHAPES)} "
            "(or plurals); 'objects' or 'all objects' for everything")


def parse_scene_query(query: str) -> list[QueryClause]:
    """Clauses of a query such as "red circle", "circles", "blue", "all objects",
    "red and blue squares" (= red squares, blue squares), "stars, green triangles".

    Phrases are separated by commas, "and", "or"; each names at most one colour and one
    shape (or a generic word: objects, shapes, things). A colour-only phrase followed by
    one with a shape takes that shape. Unknown words raise ToolError listing the known ones.
    """
    tokens = [t.strip(".!?;:'\"") for t in re.findall(r"[^\s,]+|,", query.lower())]
    phrases: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for tok in tokens + [","]:
        if not tok or tok in _FILLER_WORDS:
            continue
        if tok in _SEPARATORS:
            if current:
                phrases.append(current)
            current = {}
        elif tok in _COLOR_WORDS:
            if "color" in current:
                raise ToolError(INVALID_ARGUMENT, f"argument 'query': {query!r} names two colours "
                                "in one phrase; separate phrases with commas or 'and', e.g. "
                                "'red circles, blue circles'")
            current["color"] = _COLOR_WORDS[tok]
        elif tok in _SHAPE_WORDS or tok in _GENERIC_WORDS:
            if "shape" in current:
                raise ToolError(INVALID_ARGUMENT, f"argument 'query': {query!r} names two shapes "
                                "in one phrase; separate phrases with commas or 'and'")
            current["shape"] = _SHAPE_WORDS.get(tok)  # None for a generic word: any shape
        else:
            raise ToolError(INVALID_ARGUMENT, f"argument 'query': unknown word {tok!r} in "
                            f"{query!r}; known words: {_query_words_help()}")
    if not phrases:
        raise ToolError(INVALID_ARGUMENT, f"argument 'query': {query!r} names no colour or "
                        f"shape; known words: {_query_words_help()}")
    clauses = []
    for i, ph in enumerate(phrases):
        shape = ph.get("shape")
        if "shape" not in ph:  # colour only: borrow the shape of the next phrase that has one
            for later in phrases[i + 1:]:
                if "shape" in later:
                    shape = later["shape"] if "color" in later else None
                    break
                if "color" not in later:
                    break
        clauses.append(QueryClause(ph.get("color"), shape))
    return clauses


@dataclasses.dataclass(frozen=True)
class FoundShape:
    """A shape the classical reader found: kind, colour name, box (x1, y1 exclusive), pixels."""

    shape: str
    color: str
    box: tuple[int, int, int, int]
    area: int


class SceneReadError(ValueError):
    """The image is not a flat-colour shape scene (the classical reader's only input)."""


_MIN_OBJECT_AREA = 20  # px: specks smaller than the smallest rendered shape (~50 px) are noise
_PALETTE_TOLERANCE = 12.0  # CIELAB distance within which a pixel has a palette colour
_MAX_OFF_PALETTE = 0.05  # share of non-white pixels allowed off the palette
# As chart._MAX_PIXELS: rendered scenes are far smaller, and the reader's arrays grow with
# the pixels (about 25 bytes each: ~100 MB and ~0.1-0.4 s at the limit).
_MAX_SCENE_PIXELS = 4_000_000
_SCENE_RGB = np.array([WHITE, *SCENE_COLORS.values()], np.uint8)  # [11, 3]
_SCENE_LAB = _to_lab(_SCENE_RGB)
_SCENE_NAMES = ("white", *SCENE_COLORS)


def classify_shape(mask: np.ndarray) -> str:
    """The renderer's shape whose geometry fits a component's pixels bool [h, w] (its bounding
    box), or "unknown". Measured over sides 12..120 of the renderer's shapes: extent (area
    over box) is 1.0 square, 0.75-0.80 circle, 0.50-0.55 triangle and diamond, 0.36-0.45
    star; solidity (area over convex hull) is below 0.63 only for the star, which has
    exactly 5 concavities deeper than a tenth of its side; the hull's polygon approximation
    has 3 corners for the triangle, 4 for the diamond. Rendered shapes have no holes.
    """
    h, w = mask.shape
    if min(h, w) < 8 or not 0.8 <= w / h <= 1.25:
        return "unknown"
    m = mask.astype(np.uint8)
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if (hierarchy[0, :, 3] >= 0).any():  # a contour inside another: a hole (a ring, a glyph)
        return "unknown"
    outline = max(contours, key=cv2.contourArea)
    hull = cv2.convexHull(outline)
    hull_mask = np.zeros_like(m)
    cv2.fillConvexPoly(hull_mask, hull, 1)
    area = int(m.sum())
    solidity = area / max(int(hull_mask.sum()), 1)
    extent = area / (h * w)
    if solidity < 0.75:
        defects = cv2.convexityDefects(outline, cv2.convexHull(outline, returnPoints=False))
        depths = np.zeros(0) if defects is None else defects.reshape(-1, 4)[:, 3] / 256.0
        deep = int((depths > 0.1 * min(h, w)).sum())
        return "star" if deep == 5 and 0.3 <= extent <= 0.5 else "unknown"
    if extent >= 0.92:
        return "square"
    if 0.68 <= extent < 0.85:
        return "circle"
    if 0.45 <= extent < 0.62:
        corners = len(cv2.approxPolyDP(hull, 0.04 * cv2.arcLength(hull, True), True))
        return {3: "triangle", 4: "diamond"}.get(corners, "unknown")
    return "unknown"


def _pack(rgb: np.ndarray) -> np.ndarray:
    """sRGB colours [..., 3] uint8 as one uint32 each [...]."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return (r << 16) | (g << 8) | b


def _unpack(packed: np.ndarray) -> np.ndarray:
    return np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], -1).astype(np.uint8)


_SCENE_PACKED = _pack(_SCENE_RGB)  # [11]
_LABEL_BLOCK = 65_536  # off-palette pixels per block of distances: [65536, 11] float32 = 3 MB


def _palette_labels(rgb: np.ndarray) -> np.ndarray:
    """Palette index per pixel, 0 = white: RGB [H, W, 3] -> int8 [H, W]; SceneReadError when
    more than 5% of the non-white pixels are off the palette.

    Pixels of an exact palette colour are labelled directly; the others take the nearest
    palette colour within `_PALETTE_TOLERANCE` (CIELAB) or count as off the palette, in
    blocks of `_LABEL_BLOCK` pixels (bounded memory). Each block is a strided sample of all
    of them, so a photo or noise is refused after a block or two: as soon as the off pixels
    found exceed 5% even if every pixel not yet seen were a palette colour.
    """
    packed = _pack(rgb)  # [H, W]
    labels = np.full(packed.shape, -1, np.int8)
    for i, p in enumerate(_SCENE_PACKED.tolist()):  # the renderer's exact colours: no sort
        labels[packed == p] = i
    rest = np.flatnonzero(labels < 0)  # [R] flat indices of the other pixels
    coloured = int((labels > 0).sum())  # pixels of a non-white palette colour so far
    off_count = 0
    if rest.size:
        rest_packed = packed.ravel()[rest]  # [R]
        rest_labels = np.empty(rest.size, np.int8)
        blocks, seen = -(-rest.size // _LABEL_BLOCK), 0
        for j in range(blocks):
            block = rest_packed[j::blocks]  # [n <= _LABEL_BLOCK]
            # distinct colours only: a noisy or lossy scene has few near each palette colour
            colours, inverse = np.unique(block, return_inverse=True)  # [u], [n]
            d2 = _squared_distances(_to_lab(_unpack(colours)), _SCENE_LAB)  # [u, 11]
            nearest = d2.argmin(axis=1)
            off_colour = d2[np.arange(len(colours)), nearest] > _PALETTE_TOLERANCE ** 2
            found = np.where(off_colour, 0, nearest).astype(np.int8)[inverse]  # [n]
            off = off_colour[inverse]
            rest_labels[j::blocks] = found
            seen += len(block)
            off_count += int(off.sum())
            coloured += int((found > 0).sum())
            if _too_far_off(off_count, coloured + rest.size - seen):
                break
        if not _too_far_off(off_count, coloured):  # else the blocks may have stopped early
            labels.reshape(-1)[rest] = rest_labels
    if _too_far_off(off_count, coloured):
        raise SceneReadError(
            f"over {_MAX_OFF_PALETTE:.0%} of the non-white pixels are not flat palette colours; "
            "the classical detector reads only flat-coloured shapes on white drawn by "
            "vista-jax's scene renderer")
    return labels


def _too_far_off(off: int, coloured: int) -> bool:
    """Whether `off` off-palette pixels are over 5% of the non-white ones, given `coloured`
    pixels of a non-white palette colour."""
    return off > _MAX_OFF_PALETTE * (coloured + off)


def read_scene(rgb: np.ndarray) -> list[FoundShape]:
    """Every shape in a flat-colour scene, RGB [H, W, 3] uint8, in reading order (top, left).

    Pixels take the nearest palette colour (white is background); each connected region of
    one colour (8-connected, >= 20 px) is a shape, classified by `classify_shape`. Raises
    SceneReadError when over 5% of the non-white pixels are off the palette (a photo, an
    antialiased or lossy image): only renderer scenes are read.
    """
    labels = _palette_labels(rgb)  # [H, W]
    found: list[FoundShape] = []
    # Regions of any non-white colour first (one pass); only a region of several colours
    # (shapes touching, which the renderer never draws) is split by colour.
    n, cc, stats, _ = cv2.connectedComponentsWithStats((labels != 0).astype(np.uint8),
                                                        connectivity=8)
    for i in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        if area < _MIN_OBJECT_AREA:
            continue
        inside = cc[y:y + bh, x:x + bw] == i  # [bh, bw]
        sub = np.where(inside, labels[y:y + bh, x:x + bw], 0)
        present = np.unique(sub[inside]).tolist()
        if len(present) == 1:
            parts = [(present[0], inside, x, y, area)]
        else:
            parts = []
            for c in present:
                m, cc2, st2, _ = cv2.connectedComponentsWithStats((sub == c).astype(np.uint8),
                                                                  connectivity=8)
                for j in range(1, m):
                    px, py, pw, ph, pa = (int(v) for v in st2[j])
                    parts.append((c, cc2[py:py + ph, px:px + pw] == j, x + px, y + py, pa))
        for c, mask, px, py, pa in parts:
            if pa >= _MIN_OBJECT_AREA:
                h, w = mask.shape
                found.append(FoundShape(classify_shape(mask), _SCENE_NAMES[c],
                                        (px, py, px + w, py + h), pa))
    found.sort(key=lambda f: (f.box[1], f.box[0]))
    return found


def _pixel_box(box: tuple[float, ...], w: int, h: int) -> list[int]:
    """A float box as integer pixels [x0, y0, x1, y1] inside a w x h image, at least 1 px."""
    x0 = min(max(math.floor(box[0]), 0), w - 1)
    y0 = min(max(math.floor(box[1]), 0), h - 1)
    return [x0, y0, max(min(math.ceil(box[2]), w), x0 + 1), max(min(math.ceil(box[3]), h), y0 + 1)]


def _hf_phrases(query: str) -> list[str]:
    phrases = [p.strip() for p in re.split(r",|\band\b|\bor\b", query) if p.strip()]
    if not phrases or len(phrases) > 16:
        raise ToolError(INVALID_ARGUMENT, f"argument 'query': give 1..16 phrases separated by "
                        f"commas, got {len(phrases)}")
    return phrases


_BACKEND_NOTES = {
    "classical": (
        "This server reads only scenes of flat-coloured shapes on a white background as "
        "vista-jax's scene renderer draws them (other images give an error). `query` names "
        "colours ({colors}) and shapes ({shapes}, or plurals), e.g. \"red circle\", "
        "\"triangles\", \"blue\", \"all objects\", \"red and blue squares\"; "
        "phrases are joined by commas, \"and\", \"or\". Objects come top to bottom. "
        "An image (or box) may have at most {max_pixels:,} pixels."),
    "hf": (
        "Works on any image (an open-vocabulary detector): `query` is one or more short "
        "noun phrases separated by commas, e.g. \"dog, red car\"; each box has the phrase it "
        "answers and a confidence score (0..1), best first."),
}


class DetectObjects(Tool):
    """Finds the objects matching a text query: one `label @ [x0, y0, x1, y1]` line each.

    Boxes are in pixels of the given image (x1, y1 exclusive); `box` searches only that
    region (boxes stay in the whole image's frame).
    """

    name = "detect_objects"
    family = "perception"
    # Set per instance: the "hf" backend needs the worker pool's batching; the classical
    # reader (~1 ms a call) runs in the front, where a pool round trip would cost more.
    model_backed = False
    backends: ClassVar[tuple[str, ...]] = ("classical", "hf")

    class Arguments(ToolArguments):
        image: ImageId
        query: Annotated[str, Field(min_length=1, max_length=200,
                                    description="what to find, e.g. \"red circles\"")]
        box: OptionalBox = None

    def __init__(self, backend: str = "classical", model_path: str | None = None,
                 threshold: float = 0.1, device: str = "cpu"):
        if backend not in self.backends:
            raise ValueError(f"option 'backend' of {self.name}: {backend!r} is not one of "
                             f"{', '.join(self.backends)}")
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"option 'threshold' of {self.name}: {threshold} is not in [0, 1)")
        self.backend, self.threshold = backend, threshold
        self.model_backed = backend == "hf"
        self._detector = None
        if backend == "hf":
            from tools_server.tools import hf_backends

            # ValueError naming the option if unusable; whether the device exists is checked
            # by `load` in the worker (the front, which builds this too, may have no GPU).
            self._detector = hf_backends.zero_shot_detector(model_path, device=device)
        else:
            for option, value, default in (("model_path", model_path, None),
                                           ("device", device, "cpu")):
                if value != default:
                    raise ValueError(f"option '{option}' of {self.name} is for backend 'hf', "
                                     f"not {backend!r}")

    def load(self) -> None:
        if self._detector is not None:
            self._detector._loaded()

    @property
    def description(self) -> str:
        note = _BACKEND_NOTES[self.backend].format(colors=", ".join(SCENE_COLORS),
                                                   shapes=", ".join(SCENE_SHAPES),
                                                   max_pixels=_MAX_SCENE_PIXELS)
        return f"{super().description}\n\n{note}"

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        return _run_one(self, args, ctx)

    def run_batch(self, calls: list[tuple[Arguments, ToolContext]]) -> list[ToolOutput | ToolError]:
        found = (self._find_hf(calls) if self.backend == "hf"
                 else [self._find_classical(args, ctx) for args, ctx in calls])
        return [f if isinstance(f, ToolError) else self._output(args.query, f)
                for (args, _), f in zip(calls, found)]

    def _find_classical(self, args: Arguments, ctx: ToolContext) -> list[dict] | ToolError:
        try:
            clauses = parse_scene_query(args.query)
            rgb, ox, oy = _region(ctx.image(args.image), args.box, _MAX_SCENE_PIXELS,
                                  "the classical detector")
            try:
                shapes = read_scene(rgb)
            except SceneReadError as exc:
                raise ToolError(INVALID_ARGUMENT, f"argument 'image': {exc}") from None
        except ToolError as exc:
            return exc
        return [{"label": f"{s.color} {'object' if s.shape == 'unknown' else s.shape}",
                 "color": s.color, "shape": s.shape,
                 "box": [s.box[0] + ox, s.box[1] + oy, s.box[2] + ox, s.box[3] + oy],
                 "score": 1.0}
                for s in shapes if any(c.matches(s.color, s.shape) for c in clauses)]

    def _find_hf(self, calls: list[tuple[Arguments, ToolContext]]) -> list[list[dict] | ToolError]:
        prepared: list[tuple[Image.Image, int, int, list[str]] | ToolError] = []
        for args, ctx in calls:
            try:
                phrases = _hf_phrases(args.query)
                rgb, ox, oy = _region(ctx.image(args.image), args.box)
                prepared.append((Image.fromarray(rgb), ox, oy, phrases))
            except ToolError as exc:
                prepared.append(exc)
        todo = [p for p in prepared if not isinstance(p, ToolError)]
        detections = iter(self._detector.detect([p[0] for p in todo], [p[3] for p in todo],
                                                self.threshold) if todo else [])
        out: list[list[dict] | ToolError] = []
        for prep in prepared:
            if isinstance(prep, ToolError):
                out.append(prep)
                continue
            im, ox, oy, _ = prep
            objects = []
            for det in next(detections):
                x0, y0, x1, y1 = _pixel_box(det.box, im.width, im.height)
                objects.append({"label": det.label, "box": [x0 + ox, y0 + oy, x1 + ox, y1 + oy],
                                "score": round(det.score, 4)})
            out.append(objects)
        return out

    def _output(self, query: str, objects: list[dict]) -> ToolOutput:
        if not objects:
            return ToolOutput(f"no objects match {query!r}", [], {"count": 0, "objects": []})
        lines = [f"{o['label']}" + ("" if self.backend == "classical" else f" ({o['score']:.2f})")
                 + f" @ {_fmt_box(o['box'])}" for o in objects]
        return ToolOutput("\n".join(lines), [], {"count": len(objects), "objects": objects})


class CountObjects(DetectObjects):
    """Counts the objects matching a text query; the data lists each one's box.

    `box` counts only inside that region (boxes stay in the whole image's frame).
    """

    name = "count_objects"

    def _output(self, query: str, objects: list[dict]) -> ToolOutput:
        n = len(objects)
        return ToolOutput(f"{n} object{'' if n == 1 else 's'} match {query!r}", [],
                          {"count": n, "objects": objects})


# ----------------------------------------------------------------------------------------
# dominant_colors
# ----------------------------------------------------------------------------------------

_BACKGROUND_MIN = 235  # a pixel with every channel >= this is white background
_KMEANS_SAMPLE = 20_000  # pixels k-means is fitted on (a fixed regular sample); all are assigned


def _farthest_first(lab: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """k initial centres [k, 3] from distinct colours lab [U, 3] with pixel counts [U]:
    the most frequent colour, then repeatedly the one maximising count x squared distance to
    the chosen (a deterministic k-means++)."""
    chosen = [int(weights.argmax())]
    d2 = ((lab - lab[chosen[0]]) ** 2).sum(-1)
    for _ in range(1, k):
        i = int((weights * d2).argmax())
        chosen.append(i)
        d2 = np.minimum(d2, ((lab - lab[i]) ** 2).sum(-1))
    return lab[chosen]


def _nearest_centre(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre [N] for points [N, 3] and centres [k, 3] (squared L2)."""
    return _squared_distances(points, centres).argmin(axis=1)


def dominant_colors(pixels: np.ndarray, k: int) -> list[tuple[np.ndarray, int]]:
    """Up to k (mean RGB [3] float, pixel count) clusters of pixels [N, 3] uint8, largest first.

    At most k distinct colours are counted exactly; otherwise k-means in CIELAB (OpenCV,
    deterministic farthest-first start, fixed criteria) on a fixed regular sample of at most
    20,000 pixels, after which every distinct colour goes to its nearest centre (shares count
    every pixel).
    """
    packed = _pack(pixels)  # [N]
    colours, counts = np.unique(packed, return_counts=True)  # [U], [U]
    u_rgb = _unpack(colours)  # [U, 3]
    if len(colours) <= k:
        clusters = [(u_rgb[i].astype(np.float64), int(counts[i])) for i in range(len(colours))]
    else:
        u_lab = _to_lab(u_rgb)  # [U, 3]
        step = max(1, len(pixels) // _KMEANS_SAMPLE)
        s_colours, s_counts = np.unique(packed[::step], return_counts=True)
        s_lab = u_lab[np.searchsorted(colours, s_colours)]  # [S_u, 3]
        sample = np.repeat(s_lab, s_counts, axis=0)  # [S, 3]: the sample, grouped by colour
        init = _farthest_first(s_lab, s_counts.astype(np.float64), k)  # [k, 3]
        init_labels = np.repeat(_nearest_centre(s_lab, init), s_counts)
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 0.05)
        cv2.setRNGSeed(0)  # per thread in OpenCV; only a re-seeded empty cluster would use it
        _, _, centres = cv2.kmeans(sample, k, init_labels.astype(np.int32).reshape(-1, 1),
                                   criteria, 1, cv2.KMEANS_USE_INITIAL_LABELS)
        assign = _nearest_centre(u_lab, centres)  # [U]
        sizes = np.bincount(assign, weights=counts, minlength=k)  # [k]
        sums = np.stack([np.bincount(assign, weights=counts * u_rgb[:, ch], minlength=k)
                         for ch in range(3)], axis=-1)  # [k, 3]
        clusters = [(sums[j] / sizes[j], int(sizes[j])) for j in range(k) if sizes[j] > 0]
    clusters.sort(key=lambda c: (-c[1], tuple(c[0])))
    return clusters


class DominantColors(Tool):
    """Names the main colours of an image (or of a box in it), with their shares of pixels.

    Returns up to `k` (1..8, default 3) colours, largest first, one line each: name, hex
    value (the cluster's mean colour) and share of the counted pixels. With
    `ignore_background` (default true) near-white pixels (every channel >= 235) are not
    counted.

    Names are black, gray, white, red, orange, yellow, olive, green, cyan, blue, purple,
    pink, brown. A colour drawn by vista-jax's renderers gets the name its chart and scene
    tools use (as read_legend says). Any other colour is named by lightness, chroma and hue
    (OKLCh): black, gray or white only when nearly colourless, else by hue, with brown for
    dark or muted red-orange, pink for light red or light magenta, olive for dark yellow.
    An image (or box) may have at most 4,000,000 pixels.
    """

    name = "dominant_colors"
    family = "perception"

    class Arguments(ToolArguments):
        image: ImageId
        box: OptionalBox = None
        k: Annotated[int, Field(ge=1, le=8, description="how many colours, 1..8")] = 3
        ignore_background: Annotated[bool, Field(description="leave near-white background "
                                                 "pixels out")] = True

    def run(self, args: Arguments, ctx: ToolContext) -> ToolOutput:
        # Every pixel is assigned to a cluster (exact shares): bound the arrays that takes.
        rgb, _, _ = _region(ctx.image(args.image), args.box, max_pixels=_MAX_SCENE_PIXELS,
                            reader="dominant_colors")
        pixels = rgb.reshape(-1, 3)  # [N, 3]
        total = len(pixels)
        if args.ignore_background:
            pixels = pixels[(pixels < _BACKGROUND_MIN).any(axis=1)]
            if not len(pixels):
                what = "box" if args.box is not None else "image"
                raise ToolError(INVALID_ARGUMENT, f"argument '{what}': every pixel is white "
                                "background; set ignore_background to false to count it")
        clusters = dominant_colors(pixels, args.k)
        means = np.array([c[0] for c in clusters])
        rgb_means = np.clip(np.rint(means), 0, 255).astype(np.uint8)  # [k, 3]
        colors = []
        for (_, n), name, (r, g, b) in zip(clusters, color_names(rgb_means), rgb_means.tolist()):
            colors.append({"name": name, "hex": f"#{r:02x}{g:02x}{b:02x}",
                           "rgb": [r, g, b], "share": round(n / len(pixels), 4)})
        text = "\n".join(f"{c['name']} {c['hex']} {c['share']:.1%}" for c in colors)
        return ToolOutput(text, [], {"colors": colors, "pixels": len(pixels),
                                     "background_share": round(1 - len(pixels) / total, 4)})
