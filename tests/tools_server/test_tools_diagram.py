"""render_points_diagram -> detect_points / measure_length are exact."""

import random
import string

import pytest

from tools_server.registry import INVALID_ARGUMENT, ToolError
from tools_server.tools import diagram
from vista_jax.env.tasks import render


def random_diagram(seed: int, size=(320, 240)):
    rng = random.Random(seed)
    names = rng.sample(string.ascii_uppercase, rng.randint(3, 8))
    while True:
        points = {n: (rng.randint(5, size[0] - 6), rng.randint(5, size[1] - 6)) for n in names}
        segments = [(a, b) for a in names for b in names if a < b and rng.random() < 0.5]
        try:
            return points, render.render_points_diagram(points, segments, size=size)
        except ValueError:
            continue


def test_detect_points_exact_on_random_diagrams():
    for seed in range(100):
        points, image = random_diagram(seed)
        found, unlabelled = diagram.find_points(image)
        assert found == dict(sorted(points.items())) and unlabelled == 0, seed


def test_detect_points_and_measure_length_on_a_known_triangle(one_image_context):
    points = {"A": (60, 200), "B": (220, 200), "C": (220, 80)}
    ctx = one_image_context(render.render_points_diagram(points, [("A", "B"), ("B", "C"), ("C", "A")]))
    out = diagram.DetectPoints().run(diagram.DetectPoints.Arguments(image="x"), ctx)
    assert out.text == "A (60, 200)\nB (220, 200)\nC (220, 80)"
    assert out.data["points"] == {"A": [60, 200], "B": [220, 200], "C": [220, 80]}
    tool = diagram.MeasureLength()
    out = tool.run(tool.Arguments(image="x", point_a="A", point_b="C"), ctx)  # a 3-4-5 triangle
    assert out.text == "AC = 200.00 px" and out.data["length"] == 200.0
    out = tool.run(tool.Arguments(image="x", point_a="A", point_b="B"), ctx)
    assert out.data["length"] == 160.0
    with pytest.raises(ToolError) as info:
        tool.run(tool.Arguments(image="x", point_a="A", point_b="Q"), ctx)
    assert info.value.code == INVALID_ARGUMENT
    assert "'Q'" in info.value.message and "A, B, C" in info.value.message


def test_label_placement_rule_is_the_same_in_renderer_and_reader():
    for size in [(320, 240), (100, 80)]:
        for x in range(5, size[0] - 5, 3):
            for y in range(5, size[1] - 5, 3):
                try:
                    expected = render.label_origin(x, y, size)
                except ValueError:
                    expected = None
                assert diagram._label_origin(x, y, size) == expected
    assert diagram.POINT_RADIUS == render.POINT_RADIUS and diagram._LABEL_BOX == render._LABEL_BOX


def test_renderer_refuses_crowded_or_bad_points():
    with pytest.raises(ValueError):
        render.render_points_diagram({"A": (50, 50), "B": (55, 52)})
    with pytest.raises(ValueError):
        render.render_points_diagram({"AB": (50, 50)})
    with pytest.raises(ValueError):
        render.render_points_diagram({"A": (1, 50)})
    with pytest.raises(ValueError):
        render.render_points_diagram({"A": (50, 50)}, [("A", "Z")])
