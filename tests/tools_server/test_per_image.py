"""images.per_image: pixel analyses run once per image object, and only while it lives."""

import gc

import pytest
from PIL import Image

from tools_server.images import per_image
from tools_server.tools import chart, diagram
from vista_jax.env.tasks.render import render_bar_chart, render_points_diagram


def test_results_are_shared_per_image_and_dropped_with_it():
    calls = []

    @per_image
    def size_of(image):
        calls.append(image.size)
        if image.size == (1, 1):
            raise ValueError("too small")
        return image.size

    a, b = Image.new("RGB", (3, 2)), Image.new("RGB", (3, 2))  # equal pixels, other objects
    assert size_of(a) == size_of(a) == (3, 2) and len(calls) == 1
    assert size_of(b) == (3, 2) and len(calls) == 2
    tiny = Image.new("RGB", (1, 1))
    for _ in range(2):  # errors are not cached
        with pytest.raises(ValueError):
            size_of(tiny)
    assert len(calls) == 4 and size_of.cache_size() == 2
    del a, b, tiny
    gc.collect()
    assert size_of.cache_size() == 0


def test_readers_analyse_an_image_once_and_share_read_only_results():
    bar = render_bar_chart(["Red", "Blue"], [12, 88])
    assert chart.analyse_chart(bar) is chart.analyse_chart(bar)
    dia = render_points_diagram({"P": (40, 40), "Q": (100, 120)})
    found = diagram.scan(dia)
    assert diagram.scan(dia) is found
    with pytest.raises(ValueError):  # shared between calls: a reader must not write into it
        found.black[0, 0] = True
    points, _ = diagram.find_points(dia)
    points["Z"] = (0, 0)  # callers get their own copy
    assert "Z" not in diagram.find_points(dia)[0]
