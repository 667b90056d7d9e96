"""ocr, detect_objects / count_objects (classical backend), dominant_colors and zoom's minimum
size, against images whose content is known: text drawn at known places, scenes from
vista_jax.env.tasks.render_scene, colours in known proportions."""

import random
import time
import tracemalloc

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from tools_server.registry import INVALID_ARGUMENT, ToolError
from tools_server.tools import chart, default_registry, perception
from tools_server.tools.perception import (CountObjects, DetectObjects, DominantColors, Ocr,
                                           QueryClause, Zoom, classify_shape, parse_scene_query)
from tools_server.testing.contexts import RecordingContext as Context
from vista_jax.env.tasks import render
from vista_jax.env.tasks import render_scene as rs


def call(tool, image, **arguments):
    args = tool.Arguments.model_validate({"image": "x", **arguments})
    return tool.run(args, Context(image))


def error_of(tool, image, **arguments) -> ToolError:
    with pytest.raises(ToolError) as e:
        call(tool, image, **arguments)
    return e.value


def test_the_new_tools_are_registered_as_perception_tools():
    reg = default_registry()
    for name in ("ocr", "detect_objects", "count_objects", "dominant_colors"):
        assert reg.get(name).family == "perception"
    # With the default (classical) backends only ocr needs a model, so only it goes to workers.
    assert {t.name for t in reg if t.model_backed} == {"ocr"}
    assert not DominantColors.model_backed


# ---------------------------------------------------------------------------------- zoom

@pytest.mark.parametrize("box, factor, size, used", [
    ([0, 0, 10, 5], 3, (60, 30), 6),    # 5 px * 3 < 28: raised to ceil(28 / 5) = 6
    ([0, 0, 14, 14], 2, (28, 28), 2),   # exactly 28: unchanged
    ([3, 3, 13, 23], 2, (30, 60), 3),   # 10 px wide: ceil(28 / 10) = 3
    ([0, 0, 40, 30], 4, (160, 120), 4),
])
def test_zoom_output_is_at_least_28_px_on_each_side(box, factor, size, used):
    im = Image.new("RGB", (64, 48), (255, 255, 255))
    im.putpixel((box[0], box[1]), (255, 0, 0))
    ctx = Context(im)
    tool = Zoom()
    out = tool.run(tool.Arguments(image="x", box=box, factor=factor), ctx)
    zoomed = ctx.added[0]
    assert zoomed.size == size and (out.data["width"], out.data["height"]) == size
    assert out.data["factor"] == used and min(zoomed.size) >= Zoom.min_output_side
    # pixels are repeated: the marked pixel becomes a used x used block
    px = np.asarray(zoomed)
    red = (px == (255, 0, 0)).all(-1)
    assert red[:used, :used].all() and red.sum() == used * used


def test_zoom_rejects_boxes_too_elongated_for_the_policy():
    im = Image.new("RGB", (400, 10))
    e = error_of(Zoom(), im, box=[0, 0, 400, 1])
    assert e.code == INVALID_ARGUMENT and "'box'" in e.message and "aspect" in e.message


# ----------------------------------------------------------------------------------- ocr

LINES = [("Hello World", (20, 30)), ("Total 42 items", (40, 100)), ("quick brown fox", (15, 170))]


def text_image(lines=LINES, size=(320, 240), font_size=20):
    """(image, [(text, ink box [x0, y0, x1, y1])]) with black printed text on white."""
    font = ImageFont.load_default(size=font_size)  # a scalable TrueType font (Pillow >= 10.1)
    im = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(im)
    truth = []
    for text, xy in lines:
        draw.text(xy, text, font=font, fill=(0, 0, 0))
        truth.append((text, list(draw.textbbox(xy, text, font=font))))
    return im, truth


@pytest.fixture(scope="module")
def ocr():
    return Ocr()  # one engine (about 1 s to load) for the module


def assert_lines(lines, truth, tol=6):
    """Exact texts; each box holds its ink box (1 px slack) and is within `tol` px of it (the
    detector's boxes are line boxes: they leave room for ascenders and descenders)."""
    assert [ln["text"] for ln in lines] == [t for t, _ in truth]
    for ln, (_, ink) in zip(lines, truth):
        box = np.array(ln["box"])
        assert np.abs(box - ink).max() <= tol, (ln, ink)
        assert box[0] <= ink[0] + 1 and box[1] <= ink[1] + 1, (ln, ink)
        assert box[2] >= ink[2] - 1 and box[3] >= ink[3] - 1, (ln, ink)
        assert 0.5 <= ln["score"] <= 1.0


def test_ocr_reads_printed_lines_exactly_with_their_boxes(ocr):
    im, truth = text_image()
    out = call(ocr, im)
    assert_lines(out.data["lines"], truth)
    first = out.data["lines"][0]
    assert out.text.splitlines()[0] == f"Hello World @ [{', '.join(map(str, first['box']))}]"


def test_ocr_reads_only_the_region_and_keeps_whole_image_coordinates(ocr):
    im, truth = text_image()
    out = call(ocr, im, box=[30, 90, 250, 130])
    assert_lines(out.data["lines"], truth[1:2])


def test_ocr_of_a_blank_image_finds_no_text(ocr):
    out = call(ocr, Image.new("RGB", (320, 240), (255, 255, 255)))
    assert out.data == {"lines": []} and out.text == "no text found"


def test_ocr_min_score_drops_lines(ocr):
    im, _ = text_image()
    assert call(ocr, im, min_score=1.0).data["lines"] == []


def test_ocr_reads_text_on_transparent_images_over_white(ocr):
    im, truth = text_image(LINES[:1], size=(200, 60))
    rgba = im.convert("RGBA")
    px = np.asarray(rgba).copy()
    px[..., 3] = np.where(px[..., 0] > 128, 0, 255)  # background transparent (and black there)
    px[px[..., 3] == 0, :3] = 0
    assert_lines(call(ocr, Image.fromarray(px, "RGBA")).data["lines"], truth)


def test_ocr_batch_equals_single_calls_and_isolates_bad_calls(ocr):
    images = [text_image(lines)[0] for lines in
              (LINES, [("Alpha 7", (10, 10))], [("beta gamma", (100, 150)), ("delta", (5, 60))])]
    images.append(Image.new("RGB", (64, 64), (255, 255, 255)))
    args = [ocr.Arguments(image="x") for _ in images]
    args.append(ocr.Arguments(image="x", box=[0, 0, 500, 500]))  # outside the image
    calls = [(a, Context(im)) for a, im in zip(args, images + images[:1])]
    batch = ocr.run_batch(calls)
    assert isinstance(batch[-1], ToolError) and "'box'" in batch[-1].message
    for (a, ctx), got in zip(calls[:-1], batch[:-1]):
        single = ocr.run(a, ctx)
        assert got.text == single.text
        for x, y in zip(got.data["lines"], single.data["lines"]):
            assert x["box"] == y["box"] and abs(x["score"] - y["score"]) < 0.02


@pytest.mark.parametrize("size, box, argument", [
    ((5, 5), None, "image"), ((0, 0), None, "image"), ((100, 100), [0, 0, 100, 4], "box"),
    ((1000, 8), None, "image"), ((100, 100), [10, 10, 5, 50], "box")])
def test_ocr_rejects_regions_too_small_to_read(ocr, size, box, argument):
    e = error_of(ocr, Image.new("RGB", size, (255, 255, 255)),
                 **({} if box is None else {"box": box}))
    assert e.code == INVALID_ARGUMENT and f"'{argument}'" in e.message


# -------------------------------------------------------------- render_scene + classical

def test_scene_palette_and_shapes_are_mirrored_by_the_reader():
    assert perception.SCENE_COLORS == rs.COLORS and perception.SCENE_SHAPES == rs.SHAPES
    assert perception.WHITE == rs.WHITE == render.WHITE


def test_chart_palette_is_mirrored_with_read_legends_names():
    assert perception.CHART_COLORS == dict(zip(render.COLOUR_NAMES, render.PALETTE))
    assert {rgb: name for name, rgb in perception.CHART_COLORS.items()} == chart.PALETTE_NAMES


def test_every_rendered_shape_is_classified_at_every_size():
    for shape in rs.SHAPES:
        for side in range(rs.MIN_SIDE, 121):
            mask = rs.shape_mask(shape, side)
            assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()
            assert classify_shape(mask) == shape, (shape, side)


def test_blobs_that_are_no_rendered_shape_are_unknown_objects():
    ring = np.zeros((30, 30), np.uint8)
    cv2.circle(ring, (15, 15), 13, 1, 3)
    plus = np.zeros((30, 30), bool)
    plus[10:20] = plus[:, 10:20] = True
    bar = np.ones((10, 40), bool)
    for blob in (ring.astype(bool), plus, bar):
        assert classify_shape(blob) == "unknown"
    px = np.full((60, 60, 3), 255, np.uint8)
    px[10:40, 10:40][plus] = rs.COLORS["black"]
    out = call(DetectObjects(), Image.fromarray(px), query="black objects")
    assert out.data["objects"] == [{"label": "black object", "color": "black", "shape": "unknown",
                                    "box": [10, 10, 40, 40], "score": 1.0}]
    assert call(CountObjects(), Image.fromarray(px), query="stars").data["count"] == 0


def truth_boxes(objects, pred=lambda o: True):
    return sorted(list(o.box) for o in objects if pred(o))


def found_boxes(out):
    return sorted(o["box"] for o in out.data["objects"])


@pytest.mark.parametrize("seed", range(8))
def test_detect_and_count_find_exactly_the_rendered_objects(seed):
    rng = random.Random(seed)
    image, objects = rs.random_scene(rng, rng.randint(3, 10))
    detect, count = DetectObjects(), CountObjects()
    out = call(detect, image, query="all objects")
    assert found_boxes(out) == truth_boxes(objects)
    assert sorted((o["color"], o["shape"], o["box"]) for o in out.data["objects"]) == \
        sorted((o.color, o.shape, list(o.box)) for o in objects)
    assert call(count, image, query="objects").data["count"] == len(objects)
    for obj in objects:
        for query, pred in ((f"{obj.color} {obj.shape}",
                             lambda o: (o.color, o.shape) == (obj.color, obj.shape)),
                            (f"{obj.shape}s", lambda o: o.shape == obj.shape),
                            (obj.color, lambda o: o.color == obj.color)):
            assert found_boxes(call(detect, image, query=query)) == truth_boxes(objects, pred)
            c = call(count, image, query=query)
            assert c.data["count"] == len(truth_boxes(objects, pred))
            assert c.text.startswith(f"{c.data['count']} object")


def test_detect_reads_only_the_region_in_whole_image_coordinates():
    objects = [rs.SceneObject("circle", "red", (10, 10, 40, 40)),
               rs.SceneObject("star", "blue", (60, 20, 90, 50)),
               rs.SceneObject("square", "red", (200, 100, 230, 130))]
    image = rs.render_scene(objects)
    out = call(DetectObjects(), image, query="objects", box=[0, 0, 120, 80])
    assert [(o["label"], o["box"]) for o in out.data["objects"]] == [
        ("red circle", [10, 10, 40, 40]), ("blue star", [60, 20, 90, 50])]
    assert out.text.splitlines() == ["red circle @ [10, 10, 40, 40]",
                                     "blue star @ [60, 20, 90, 50]"]


def test_touching_shapes_of_different_colours_are_told_apart():
    objects = [rs.SceneObject("square", "red", (10, 10, 40, 40)),
               rs.SceneObject("square", "blue", (40, 10, 70, 40)),
               rs.SceneObject("circle", "green", (70, 10, 100, 40))]
    image = rs.render_scene(objects, margin=0)
    out = call(DetectObjects(), image, query="all objects")
    assert [(o["label"], o["box"]) for o in out.data["objects"]] == [
        (f"{o.color} {o.shape}", list(o.box)) for o in objects]


@pytest.mark.parametrize("query, clauses", [
    ("red circle", [("red", "circle")]),
    ("Circles", [(None, "circle")]),
    ("blue", [("blue", None)]),
    ("all objects", [(None, None)]),
    ("the grey stars", [("gray", "star")]),
    ("red and blue squares", [("red", "square"), ("blue", "square")]),
    ("red, blue or green diamonds", [("red", "diamond"), ("blue", "diamond"),
                                     ("green", "diamond")]),
    ("red objects and blue circles", [("red", None), ("blue", "circle")]),
    ("stars, green triangles", [(None, "star"), ("green", "triangle")]),
    ("red and triangles", [("red", None), (None, "triangle")]),
])
def test_query_grammar(query, clauses):
    assert parse_scene_query(query) == [QueryClause(c, s) for c, s in clauses]


@pytest.mark.parametrize("query, words", [
    ("purple hexagon", ["'hexagon'", "circle", "red"]),
    ("red blue circle", ["two colours"]),
    ("circle square", ["two shapes"]),
    ("the", ["no colour or shape"]),
    ("white circles", ["'white'"]),
])
def test_unknown_or_ambiguous_queries_are_errors_listing_the_known_words(query, words):
    e = error_of(DetectObjects(), rs.render_scene([]), query=query)
    assert e.code == INVALID_ARGUMENT and "'query'" in e.message
    assert all(w in e.message for w in words), e.message


def test_detect_errors_bad_boxes_empty_images_and_foreign_images():
    scene = rs.render_scene([rs.SceneObject("circle", "red", (10, 10, 40, 40))])
    for box in ([0, 0, 400, 100], [50, 50, 50, 60], [-1, 0, 10, 10]):
        e = error_of(CountObjects(), scene, query="circles", box=box)
        assert e.code == INVALID_ARGUMENT and "'box'" in e.message
    e = error_of(DetectObjects(), Image.new("RGB", (0, 0)), query="circles")
    assert e.code == INVALID_ARGUMENT and "'image'" in e.message and "empty" in e.message
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), np.uint8))
    e = error_of(DetectObjects(), photo, query="circles")
    assert e.code == INVALID_ARGUMENT and "'image'" in e.message and "renderer" in e.message
    # no objects is an answer, not an error
    blank = call(CountObjects(), Image.new("RGB", (50, 50), (255, 255, 255)), query="objects")
    assert blank.data == {"count": 0, "objects": []}
    assert call(DetectObjects(), scene, query="blue").text == "no objects match 'blue'"


@pytest.mark.parametrize("size, box, argument", [
    ((2001, 2000), None, "image"),            # 4,002,000 pixels
    ((5000, 5000), [0, 0, 2001, 2000], "box"),
])
def test_classical_detector_refuses_regions_over_the_pixel_limit(size, box, argument):
    image = Image.new("RGB", size, (255, 255, 255))
    for tool in (DetectObjects(), CountObjects()):
        e = error_of(tool, image, query="objects", **({} if box is None else {"box": box}))
        assert e.code == INVALID_ARGUMENT and f"'{argument}'" in e.message
        assert "4,000,000" in e.message and "4,002,000" in e.message
    assert "4,000,000 pixels" in DetectObjects().description
    # a box at the limit inside a larger image is read
    assert call(CountObjects(), image, query="objects", box=[0, 0, 2000, 2000]).data["count"] == 0


def test_a_4_megapixel_noise_image_is_refused_quickly_in_little_memory():
    noise = np.random.default_rng(0).integers(0, 256, (2000, 2000, 3), np.uint8)
    perception._palette_labels(noise[:8, :8] * 0 + 255)  # warm up cv2 and numpy
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(perception.SceneReadError, match="renderer"):
        perception._palette_labels(noise)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # before the bound: ~5 s and a [U, 11, 3] float distance matrix (1.5 GB RSS)
    assert elapsed < 1.0, elapsed
    assert peak < 150 * 2**20, peak  # ~80 MB: the packed image, labels and one block


def reference_palette_labels(rgb):
    """The unbounded labelling: every pixel to its nearest palette colour in CIELAB, 0 (white)
    when further than the tolerance; with the off-palette pixel count."""
    lab = perception._to_lab(rgb.reshape(-1, 3))
    d = np.linalg.norm(lab[:, None] - perception._SCENE_LAB[None], axis=-1)  # [N, 11]
    off = d.min(axis=1) > perception._PALETTE_TOLERANCE
    return np.where(off, 0, d.argmin(axis=1)).reshape(rgb.shape[:2]), int(off.sum())


@pytest.mark.parametrize("placement", ["spread", "first", "last"])
def test_palette_labels_match_the_unbounded_labelling_and_decide_the_limit_exactly(placement):
    """Blocks, and stopping after a block, never change the answer: every pixel gets the
    unbounded labelling's label; 5% off the palette is read, one pixel more is not."""
    rng = np.random.default_rng(1)
    n = 300_000  # non-white pixels, none of an exact palette colour: 5 blocks
    colours = np.array([rs.COLORS[c] for c in ("blue", "red", "yellow", "black")], np.int16)
    near = colours[rng.integers(0, 4, n)] + rng.integers(-4, 5, (n, 3))  # lossy palette
    base = np.clip(near, 0, 255).astype(np.uint8)
    for off in (n // 20, n // 20 + 1):
        where = {"spread": rng.choice(n, off, replace=False), "first": np.arange(off),
                 "last": np.arange(n - off, n)}[placement]
        px = base.copy()
        px[where] = (0, 255, 0)  # far from every palette colour
        rgb = px.reshape(500, 600, 3)
        want, want_off = reference_palette_labels(rgb)
        assert want_off == off and not (want.reshape(-1)[np.setdiff1d(np.arange(n), where)]
                                        == 0).any()
        if off == n // 20:
            np.testing.assert_array_equal(perception._palette_labels(rgb), want)
        else:
            with pytest.raises(perception.SceneReadError):
                perception._palette_labels(rgb)


def test_detect_options_are_checked_at_construction(tmp_path):
    with pytest.raises(ValueError, match="'backend'"):
        DetectObjects(backend="yolo")
    with pytest.raises(ValueError, match="'model_path'"):
        DetectObjects(backend="hf")
    with pytest.raises(ValueError, match="'model_path'"):
        CountObjects(backend="hf", model_path=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="'model_path'"):
        DetectObjects(backend="hf", model_path=str(tmp_path))  # no config.json
    with pytest.raises(ValueError, match="'model_path'"):
        DetectObjects(model_path=str(tmp_path))  # classical takes no model
    with pytest.raises(ValueError, match="'threshold'"):
        DetectObjects(threshold=1.5)
    with pytest.raises(ValueError, match="'device'.*for backend 'hf'"):
        CountObjects(device="cuda")  # the classical reader runs on the CPU only
    assert "scene renderer" in DetectObjects().description
    assert not DetectObjects().model_backed and not CountObjects().model_backed


def test_render_scene_rejects_impossible_layouts():
    with pytest.raises(ValueError, match="cannot place"):
        rs.random_scene(0, 60)
    with pytest.raises(ValueError, match="square"):
        rs.render_scene([rs.SceneObject("circle", "red", (0, 0, 20, 30))])
    with pytest.raises(ValueError, match="margin"):
        rs.render_scene([rs.SceneObject("circle", "red", (0, 0, 20, 20)),
                         rs.SceneObject("star", "blue", (22, 0, 42, 20))])
    with pytest.raises(ValueError, match="inside"):
        rs.render_scene([rs.SceneObject("circle", "red", (310, 0, 330, 20))])
    with pytest.raises(ValueError, match="unknown color"):
        rs.render_scene([{"shape": "circle", "color": "teal", "box": (0, 0, 20, 20)}])
    with pytest.raises(ValueError, match="unknown shape"):
        rs.render_scene([{"shape": "heart", "color": "red", "box": (0, 0, 20, 20)}])


def test_random_scene_is_reproducible_and_flat():
    a, objs_a = rs.random_scene(random.Random(5), 6)
    b, objs_b = rs.random_scene(5, 6)
    assert objs_a == objs_b and np.array_equal(np.asarray(a), np.asarray(b))
    colours = {tuple(c) for c in np.asarray(a).reshape(-1, 3).tolist()}
    assert colours <= {rs.WHITE, *rs.COLORS.values()}  # no antialiasing
    assert colours - {rs.WHITE} == {rs.COLORS[o.color] for o in objs_a}


# ------------------------------------------------------------------------ dominant_colors

RED, BLUE, GREEN, WHITE = (220, 30, 30), (30, 80, 220), (30, 160, 50), (255, 255, 255)


def stripes(parts, width=100, height=100, noise=0, seed=0):
    """Horizontal bands: [(rgb, rows)], rows summing to `height`; optional uniform noise."""
    px = np.concatenate([np.tile(np.array(c, np.int16), (rows, width, 1)) for c, rows in parts])
    if noise:
        px = px + np.random.default_rng(seed).integers(-noise, noise + 1, px.shape)
    return Image.fromarray(np.clip(px, 0, 255).astype(np.uint8))


def test_dominant_colors_counts_exactly_when_there_are_few_colours():
    image = stripes([(BLUE, 30), (RED, 50), (GREEN, 20)])
    out = call(DominantColors(), image)
    assert [(c["name"], c["hex"], c["share"]) for c in out.data["colors"]] == [
        ("red", "#dc1e1e", 0.5), ("blue", "#1e50dc", 0.3), ("green", "#1ea032", 0.2)]
    assert out.text.splitlines()[0] == "red #dc1e1e 50.0%"


def test_dominant_colors_ignores_white_background_unless_asked():
    image = stripes([(WHITE, 40), (RED, 45), (BLUE, 15)])
    out = call(DominantColors(), image, k=2)
    assert [(c["name"], c["share"]) for c in out.data["colors"]] == [("red", 0.75), ("blue", 0.25)]
    assert out.data["background_share"] == 0.4 and out.data["pixels"] == 6000
    out = call(DominantColors(), image, ignore_background=False)
    assert [(c["name"], c["share"]) for c in out.data["colors"]] == [
        ("red", 0.45), ("white", 0.4), ("blue", 0.15)]
    region = call(DominantColors(), image, box=[0, 0, 100, 50], ignore_background=False, k=2)
    assert [(c["name"], c["share"]) for c in region.data["colors"]] == [("white", 0.8),
                                                                         ("red", 0.2)]
    e = error_of(DominantColors(), Image.new("RGB", (8, 8), WHITE))
    assert e.code == INVALID_ARGUMENT and "ignore_background" in e.message


def test_dominant_colors_kmeans_finds_noisy_colours_and_their_shares_deterministically():
    image = stripes([(RED, 50), (BLUE, 30), (GREEN, 20)], noise=12)
    tool = DominantColors()
    out = call(tool, image)
    got = out.data["colors"]
    assert [(c["name"], c["share"]) for c in got] == [("red", 0.5), ("blue", 0.3), ("green", 0.2)]
    for c, truth in zip(got, (RED, BLUE, GREEN)):
        assert np.abs(np.array(c["rgb"]) - truth).max() <= 2  # the mean of symmetric noise
    assert call(tool, image).data == out.data
    # k=2: red and green (the closer pair in CIELAB) share a cluster, whose mean is brownish
    two = call(tool, image, k=2).data["colors"]
    assert [c["share"] for c in two] == [0.7, 0.3] and two[1]["name"] == "blue"


def test_dominant_colors_of_a_box_with_one_colour():
    image = stripes([(RED, 50), (BLUE, 50)])
    out = call(DominantColors(), image, box=[0, 60, 100, 100], k=8)
    assert out.data["colors"] == [{"name": "blue", "hex": "#1e50dc", "rgb": [30, 80, 220],
                                   "share": 1.0}]
    with pytest.raises(ToolError) as e:
        default_registry().validate("dominant_colors", {"image": "x", "k": 9})
    assert e.value.code == INVALID_ARGUMENT and "'k'" in e.value.message


# ------------------------------------------------------------------------ colour names

def test_dominant_colors_names_each_legend_swatch_as_read_legend_does():
    """On one of our charts the two tools agree (before: tab10 blue and cyan were "gray")."""
    image = render.render_pie_chart(list("ABCDEFGHI"), [11] * 8 + [12], seed=0)
    entries = call(chart.ReadLegend(), image).data["entries"]
    assert sorted(e["colour"] for e in entries) == sorted(render.COLOUR_NAMES)
    for e in entries:
        (got,) = call(DominantColors(), image, box=e["box"], k=1).data["colors"]
        assert (got["name"], got["hex"]) == (e["colour"], e["hex"])
    # the whole pie (k-means over all nine wedges and the text): the same names
    found = call(DominantColors(), image, k=8).data["colors"]
    legend = {e["hex"]: e["colour"] for e in entries}
    assert all(legend.get(c["hex"], c["name"]) == c["name"] for c in found)


@pytest.mark.parametrize("palette", [render.PALETTE, list(rs.COLORS.values())])
def test_palette_colours_keep_their_names_off_the_exact_value(palette):
    """Not only the exact match: a cluster mean a few levels off (noise, lossy images) is
    named by hue as the renderer's tools name the palette colour."""
    names = dict(zip(render.PALETTE, render.COLOUR_NAMES)) | \
        {rgb: name for name, rgb in rs.COLORS.items()}
    rng = np.random.default_rng(0)
    for rgb in palette:
        want = names[rgb]
        assert perception.color_names(np.array([rgb]))[0] == want
        shifted = np.clip(np.array(rgb) + rng.integers(-6, 7, (20, 3)), 0, 255)
        assert set(perception.color_names(shifted.astype(np.uint8))) == {want}, rgb


CSS_COLOURS = {  # CSS colour: (sRGB, the basic name an English speaker gives it)
    "navy": ((0, 0, 128), "blue"), "teal": ((0, 128, 128), "cyan"),
    "skyblue": ((135, 206, 235), "blue"), "steelblue": ((70, 130, 180), "blue"),
    "olive": ((128, 128, 0), "olive"), "gold": ((255, 215, 0), "yellow"),
    "maroon": ((128, 0, 0), "red"), "salmon": ((250, 128, 114), "pink"),
    "lime": ((0, 255, 0), "green"), "violet": ((238, 130, 238), "pink"),
    "cyan": ((0, 255, 255), "cyan"), "magenta": ((255, 0, 255), "pink"),
    "beige": ((245, 245, 220), "white"), "red": ((255, 0, 0), "red"),
    "blue": ((0, 0, 255), "blue"), "yellow": ((255, 255, 0), "yellow"),
    "green": ((0, 128, 0), "green"), "purple": ((128, 0, 128), "purple"),
    "pink": ((255, 192, 203), "pink"), "hotpink": ((255, 105, 180), "pink"),
    "orange": ((255, 165, 0), "orange"), "darkorange": ((255, 140, 0), "orange"),
    "saddlebrown": ((139, 69, 19), "brown"), "sienna": ((160, 82, 45), "brown"),
    "tan": ((210, 180, 140), "brown"), "crimson": ((220, 20, 60), "red"),
    "tomato": ((255, 99, 71), "red"), "indigo": ((75, 0, 130), "purple"),
    "lavender": ((230, 230, 250), "white"), "ivory": ((255, 255, 240), "white"),
    "turquoise": ((64, 224, 208), "cyan"), "lightblue": ((173, 216, 230), "blue"),
    "royalblue": ((65, 105, 225), "blue"), "dodgerblue": ((30, 144, 255), "blue"),
    "midnightblue": ((25, 25, 112), "blue"), "forestgreen": ((34, 139, 34), "green"),
    "darkgreen": ((0, 100, 0), "green"), "yellowgreen": ((154, 205, 50), "green"),
    "khaki": ((240, 230, 140), "yellow"), "darkkhaki": ((189, 183, 107), "olive"),
    "mediumpurple": ((147, 112, 219), "purple"), "darkviolet": ((148, 0, 211), "purple"),
    "deeppink": ((255, 20, 147), "pink"), "firebrick": ((178, 34, 34), "red"),
    "darkred": ((139, 0, 0), "red"), "seagreen": ((46, 139, 87), "green"),
    "slategray": ((112, 128, 144), "gray"), "goldenrod": ((218, 165, 32), "yellow"),
    "plum": ((221, 160, 221), "pink"), "lightcoral": ((240, 128, 128), "pink"),
    "cornflowerblue": ((100, 149, 237), "blue"), "darkcyan": ((0, 139, 139), "cyan"),
}


def test_css_colours_get_the_basic_names_an_english_speaker_gives_them():
    rgb = np.array([c for c, _ in CSS_COLOURS.values()], np.uint8)
    got = dict(zip(CSS_COLOURS, perception.color_names(rgb)))
    assert got == {css: name for css, (_, name) in CSS_COLOURS.items()}
    assert set(got.values()) <= set(perception.COLOR_NAMES)


@pytest.mark.parametrize("level, name", [
    (0, "black"), (40, "black"), (64, "gray"), (128, "gray"), (192, "gray"), (211, "gray"),
    (230, "white"), (255, "white")])
def test_achromatic_colours_are_named_by_lightness(level, name):
    grey = np.array([[level] * 3], np.uint8)
    assert perception.color_names(grey) == [name]
    # a slight tint (chroma well under the bound) stays achromatic
    tinted = np.clip(grey.astype(int) + [[3, 0, -3]], 0, 255).astype(np.uint8)
    assert perception.color_names(tinted) == [name]


def test_dominant_colors_names_saturated_colours_by_hue_not_as_grey():
    image = stripes([((31, 119, 180), 40), ((23, 190, 207), 30), ((0, 128, 128), 30)])
    got = [(c["name"], c["share"]) for c in call(DominantColors(), image).data["colors"]]
    assert got == [("blue", 0.4), ("cyan", 0.3), ("cyan", 0.3)]


def test_dominant_colors_refuses_huge_regions_before_reading_pixels():
    big = Image.new("RGB", (2001, 2000), (30, 80, 220))
    tool = default_registry().get("dominant_colors")
    err = error_of(tool, big)
    assert err.code == INVALID_ARGUMENT and "argument 'image'" in err.message
    assert "4,000,000" in err.message
    out = call(tool, big, box=[0, 0, 2000, 2000])  # exactly at the limit: read
    assert out.data["colors"][0]["name"] == "blue"
