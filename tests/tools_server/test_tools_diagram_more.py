"""render_geometry -> detect_lines / detect_circles / diagram_to_formal / measure_angle: the
diagrams' known points, segments and circles come back exactly (circles within 1 px)."""

import math
import random
import time

import numpy as np
import pytest
from PIL import Image

from tools_server.registry import INVALID_ARGUMENT, ToolError
from tools_server.tools import default_registry, diagram, formal
from vista_jax.env.tasks import render_geometry as geo

REGISTRY = default_registry()
SEEDS = range(6)


def run(tool_name, ctx, **arguments):
    tool, args = REGISTRY.validate(tool_name, {"image": "x", **arguments})
    return tool.run(args, ctx)


def expected_chains(truth: geo.Geometry) -> list[list[str]]:
    """Drawn segments with labelled points on them, as the ordered runs detect_lines lists."""
    chains = []
    for a, b in truth.segments:
        pa, pb = truth.points[a], truth.points[b]
        inner = sorted((geo.point_segment_distance(p, pa, pb)[1], n) for n, p in truth.points.items()
                       if n not in (a, b) and geo.point_segment_distance(p, pa, pb)[0] <= 1.5
                       and 0 < geo.point_segment_distance(p, pa, pb)[1] < 1)
        if inner:
            chain = [a] + [n for _, n in inner] + [b]
            chains.append(chain if chain[0] <= chain[-1] else chain[::-1])
    return sorted(chains)


@pytest.mark.parametrize("kind", geo.KINDS)
def test_random_diagrams_are_read_back_exactly(kind, one_image_context):
    for seed in SEEDS:
        image, truth = geo.random_geometry(random.Random(seed), kind)
        ctx = one_image_context(image)
        where = f"{kind} seed {seed}"
        points = run("detect_points", ctx).data["points"]
        assert points == {n: list(p) for n, p in sorted(truth.points.items())}, where

        lines = run("detect_lines", ctx).data
        got = sorted((s["a"], s["b"]) for s in lines["segments"])
        assert got == geo.elementary_segments(truth.points, truth.segments), where
        assert lines["straight_lines"] == expected_chains(truth), where

        circles = run("detect_circles", ctx).data["circles"]
        assert len(circles) == len(truth.circles), where
        for found, true in zip(circles, sorted(truth.circles, key=lambda c: (c.label is None,))):
            assert found["centre_label"] == true.label, where
            assert math.dist(found["centre"], true.centre) <= 1.0, where
            assert abs(found["radius"] - true.radius) <= 1.0, where
            on_ring = {n for n, p in truth.points.items()
                       if n != true.label and abs(math.dist(p, true.centre) - true.radius) <= 0.75}
            assert on_ring <= set(found["through"]), where

        text = run("diagram_to_formal", ctx).data["figure"]
        fig = formal.parse(text)
        assert fig.to_text() == text
        assert {n: p for n, p in fig.points.items() if len(n) == 1} == truth.points, where
        assert sorted(tuple(sorted(s)) for s in fig.segments) == got, where
        assert len(fig.circles) == len(truth.circles), where


def test_kinds_show_what_they_promise():
    rng = random.Random(3)
    _, median = geo.random_geometry(rng, "triangle_median")
    assert len(median.points) == 4 and len(median.segments) == 4
    _, right = geo.random_geometry(rng, "right_triangle")
    a, b, c = right.points.values()  # the right angle is at the first point, exactly
    assert (b[0] - a[0]) * (c[0] - a[0]) + (b[1] - a[1]) * (c[1] - a[1]) == 0
    _, circum = geo.random_geometry(rng, "triangle_circumcircle")
    ring = circum.circles[0]
    assert all(abs(math.dist(p, ring.centre) - ring.radius) <= 0.75
               for n, p in circum.points.items() if n != ring.label)
    with pytest.raises(ValueError, match="unknown kind"):
        geo.random_geometry(rng, "hexagon")


def test_collinear_points_define_what_is_drawn(one_image_context):
    pts = {"A": (40, 120), "B": (150, 120), "C": (280, 120), "D": (150, 40)}
    # AB and BC drawn: AC is the line A-B-C, reported as its two pieces and one straight line
    ctx = one_image_context(geo.render_geometry(pts, [("A", "B"), ("B", "C"), ("B", "D")]))
    data = run("detect_lines", ctx).data
    assert [(s["a"], s["b"]) for s in data["segments"]] == [("A", "B"), ("B", "C"), ("B", "D")]
    assert data["straight_lines"] == [["A", "B", "C"]]
    # AC drawn through B looks the same, and reads the same
    same = run("detect_lines", one_image_context(
        geo.render_geometry(pts, [("A", "C"), ("B", "D")]))).data
    assert same == data
    # only AB drawn: C is on AB's line but BC and AC are not drawn
    data = run("detect_lines", one_image_context(geo.render_geometry(pts, [("A", "B")]))).data
    assert [(s["a"], s["b"]) for s in data["segments"]] == [("A", "B")]
    assert data["straight_lines"] == []


def test_no_segment_between_points_that_are_not_joined(one_image_context):
    pts = {"A": (40, 200), "B": (280, 200), "C": (160, 40), "D": (160, 150)}
    ctx = one_image_context(geo.render_geometry(pts, [("A", "B"), ("B", "C"), ("C", "A")],
                                                [("D", 30)]))
    data = run("detect_lines", ctx).data
    assert [(s["a"], s["b"]) for s in data["segments"]] == [("A", "B"), ("A", "C"), ("B", "C")]
    assert data["segments"][0] == {"a": "A", "b": "B", "from": [40, 200], "to": [280, 200],
                                   "length": 240.0}
    circles = run("detect_circles", ctx).data["circles"]
    assert circles == [{"centre": [160.0, 150.0], "centre_label": "D", "radius": 30.0,
                        "through": []}]


def test_circle_about_an_unmarked_centre_and_through_points(one_image_context):
    pts = {"A": (100, 120), "B": (220, 120), "C": (160, 60)}
    image = geo.render_geometry(pts, [("A", "B")], [((160, 120), "A")])
    out = run("detect_circles", one_image_context(image))
    (circle,) = out.data["circles"]
    assert circle["centre_label"] is None and circle["through"] == ["A", "B", "C"]
    assert math.dist(circle["centre"], (160, 120)) <= 1 and abs(circle["radius"] - 60) <= 1
    assert "no labelled point there" in out.text and "through A, B, C" in out.text
    text = run("diagram_to_formal", one_image_context(image)).data["figure"]
    fig = formal.parse(text)
    assert fig.circles == [formal.Circle("c1", through="A")]
    assert formal.Fact("on_circle", ("B", "c1")) in fig.facts
    assert formal.Fact("on_segment", ("c1", "A", "B")) not in fig.facts  # centre is not a dot


def test_diagram_to_formal_relations_and_geometry_solver(one_image_context):
    # right angle at A (exact in pixels), M the midpoint of BC, AM drawn
    pts = {"A": (60, 200), "B": (220, 200), "C": (60, 80), "M": (140, 140)}
    image = geo.render_geometry(pts, [("A", "B"), ("B", "C"), ("C", "A"), ("A", "M")])
    out = run("diagram_to_formal", one_image_context(image))
    assert out.text == ("point A (60, 200)\npoint B (220, 200)\npoint C (60, 80)\n"
                        "point M (140, 140)\nsegment A B\nsegment A C\nsegment A M\n"
                        "segment B M\nsegment C M\non M segment B C\nperpendicular A B A C")
    solver, args = REGISTRY.validate("geometry_solver", {"figure": out.data["figure"],
                                                         "query": "area A B C"})
    assert solver.run(args, None).data["value"] == 160 * 120 / 2
    solver, args = REGISTRY.validate("geometry_solver", {"figure": out.data["figure"],
                                                         "query": "length A M"})
    assert solver.run(args, None).data["exact"] == "100"


def test_measure_angle_on_a_3_4_5_triangle(one_image_context):
    pts = {"A": (60, 200), "B": (220, 200), "C": (220, 80)}
    ctx = one_image_context(geo.render_geometry(pts, [("A", "B"), ("B", "C"), ("C", "A")]))
    out = run("measure_angle", ctx, point_a="C", vertex="A", point_c="B")
    assert out.text == "angle CAB = 36.87 degrees"
    assert out.data["degrees"] == round(math.degrees(math.atan2(3, 4)), 2)
    assert run("measure_angle", ctx, point_a="A", vertex="B", point_c="C").data["degrees"] == 90.0
    assert run("measure_angle", ctx, point_a="B", vertex="C", point_c="A").data["degrees"] == 53.13
    with pytest.raises(ToolError) as info:
        run("measure_angle", ctx, point_a="A", vertex="A", point_c="C")
    assert info.value.code == INVALID_ARGUMENT and "'vertex'" in info.value.message
    with pytest.raises(ToolError) as info:
        run("measure_angle", ctx, point_a="A", vertex="Q", point_c="C")
    assert "argument 'vertex'" in info.value.message and "A, B, C" in info.value.message
    with pytest.raises(ToolError) as info:
        REGISTRY.validate("measure_angle", {"image": "x", "point_a": "a", "vertex": "B",
                                            "point_c": "C"})
    assert "point_a" in info.value.message


def test_measure_angle_is_exact_to_a_tenth_of_a_degree_on_random_triangles(one_image_context):
    for seed in range(4):
        image, truth = geo.random_geometry(random.Random(seed), "triangle")
        a, b, c = truth.points
        out = run("measure_angle", one_image_context(image), point_a=a, vertex=b, point_c=c)
        (xa, ya), (xb, yb), (xc, yc) = truth.points[a], truth.points[b], truth.points[c]
        true = math.degrees(abs(math.atan2(ya - yb, xa - xb) - math.atan2(yc - yb, xc - xb)))
        true = 360 - true if true > 180 else true
        assert abs(out.data["degrees"] - true) <= 0.01


def test_wrong_kinds_of_image(one_image_context):
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    for image in (noise, Image.new("RGB", (1, 1), "white"), Image.new("RGB", (64, 48), "white")):
        ctx = one_image_context(image)
        assert run("detect_lines", ctx).data == {"segments": [], "straight_lines": []}
        assert run("detect_circles", ctx).text == "no circles found"
        assert run("diagram_to_formal", ctx).text == "no labelled points found"
    black = one_image_context(Image.new("RGB", (200, 100), "black"))
    for name in ("detect_lines", "detect_circles", "diagram_to_formal"):
        with pytest.raises(ToolError) as info:
            run(name, black)
        assert info.value.code == INVALID_ARGUMENT and "'image'" in info.value.message


@pytest.mark.parametrize("points, segments, circles, message", [
    ({"a": (50, 50)}, [], [], "one uppercase letter"),
    ({"A": (50, 50), "B": (52, 53)}, [], [], "too close"),
    ({"A": (2, 50)}, [], [], "border"),
    ({"A": ("x", 50)}, [], [], "finite numbers"),
    ({"A": (50, 50)}, [("A", "Z")], [], "not in"),
    ({"A": (50, 50), "B": (150, 50)}, [("A", "A")], [], "no length"),
    ({"A": (50, 50), "B": (70, 52)}, [("A", "B")], [], "shows 7 px"),
    ({"A": (50, 50)}, [], [("Z", 20)], "not a point"),
    ({"A": (50, 50)}, [], [("A", 5)], "below the minimum"),
    ({"A": (50, 50)}, [], [("A", 60)], "leaves the image"),
    ({"A": (50, 50)}, [], [("A", "A")], "cannot pass through"),
    ({"A": (50, 50)}, [], [("A", 2.5)], "integer"),
    ({"A": (100, 100)}, [], [("A", 30), ((100, 100), 30)], "given twice"),
    ({"A": (100, 100)}, [], [("A",)], "expected (centre"),
])
def test_renderer_refuses_what_the_tools_could_not_read(points, segments, circles, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        geo.render_geometry(points, segments, circles)


def test_renderer_draws_the_documented_style():
    image = geo.render_geometry({"A": (100, 100), "B": (200, 100)}, [("A", "B")], [("A", 40)])
    pixels = np.asarray(image)
    assert set(map(tuple, pixels.reshape(-1, 3))) == {(0, 0, 0), (255, 255, 255)}
    row = pixels[100, 107:193]  # the segment between the dots: 1 px, black
    assert (row == 0).all() and (pixels[99, 150:190] == 255).all()
    black = pixels[..., 0] == 0
    black[100] = False  # the segment's row
    ys, xs = np.nonzero(black)
    ring = np.hypot(xs - 100, ys - 100)
    ring = ring[(ring > 20) & (ring < 60)]  # not the dots, nor their labels
    assert len(ring) > 200 and np.abs(ring - 40).max() <= 0.5  # the outline, within 0.5 px


def test_docstrings_state_the_style_caveat():
    for name in ("detect_lines", "detect_circles", "diagram_to_formal", "measure_angle"):
        tool = REGISTRY.get(name)
        assert tool.family == "diagram"
        assert "vista-jax's own rendered style" in " ".join(tool.description.split())
        assert tool.schema()["function"]["parameters"]["required"][0] == "image"


def test_calls_are_light(one_image_context):
    image, _ = geo.random_geometry(random.Random(0), "circle_chords")
    ctx = one_image_context(image)
    for name in ("detect_lines", "detect_circles", "diagram_to_formal"):
        run(name, ctx)
        start = time.perf_counter()
        for _ in range(5):
            run(name, ctx)
        assert (time.perf_counter() - start) / 5 < 0.25, name  # ~10 ms on one core


@pytest.mark.slow
def test_many_random_diagrams_are_read_back_exactly():
    for kind in geo.KINDS:
        for seed in range(100, 250):
            image, truth = geo.random_geometry(random.Random(seed), kind)
            found = diagram.scan(image)
            segments, circles = diagram.find_figure(found)
            assert found.points == dict(sorted(truth.points.items())), (kind, seed)
            assert sorted((s.a, s.b) for s in segments) == geo.elementary_segments(
                truth.points, truth.segments), (kind, seed)
            assert len(circles) == len(truth.circles), (kind, seed)
            for c, t in zip(circles, sorted(truth.circles, key=lambda c: (c.label is None,))):
                assert math.dist(c.centre, t.centre) <= 1 and abs(c.radius - t.radius) <= 1
