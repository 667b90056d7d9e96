"""render_bar_chart -> chart_to_table is exact: the renderer and the reader agree."""

import io
import random
import string
import time

import pytest
from PIL import Image

from tools_server.tools.chart import ChartReadError, read_bar_chart
from vista_jax.env.tasks.render import render_bar_chart


def _png_roundtrip(image: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    out = Image.open(io.BytesIO(buf.getvalue()))
    out.load()
    return out


def random_chart_spec(seed: int):
    rng = random.Random(seed)
    n = rng.randint(3, 6)
    labels = ["".join([rng.choice(string.ascii_uppercase)]
                      + rng.choices(string.ascii_lowercase, k=rng.randint(2, 5))) for _ in range(n)]
    vmax = rng.choice([3, 10, 25, 60, 100])
    values = [rng.randint(0, vmax) for _ in range(n)]
    title = rng.choice([None, "Sales by month", "Votes"])
    return labels, values, title


def test_chart_to_table_is_exact_on_200_random_charts():
    failures, elapsed = [], 0.0
    for seed in range(200):
        labels, values, title = random_chart_spec(seed)
        image = _png_roundtrip(render_bar_chart(labels, values, title=title, seed=seed))
        start = time.perf_counter()
        chart = read_bar_chart(image)
        elapsed += time.perf_counter() - start
        if (chart.labels, chart.values) != (labels, values):
            failures.append((seed, labels, values, chart.labels, chart.values))
    assert not failures, failures[:3]
    assert elapsed / 200 < 0.1  # about 10 ms per chart on one core


@pytest.mark.parametrize("size", [(320, 240), (400, 300), (480, 360)])
def test_extremes_and_sizes(size):
    cases = [(["Aa", "Bb", "Cc"], [0, 0, 0]), (["Max", "Min", "Mid"], [100, 1, 50]),
             (["One", "Two", "Three", "Four", "Five", "Six"], [1, 2, 3, 97, 98, 99]),
             (["Jan", "Feb.", "8%", "x-1"], [13, 0, 7, 100])]
    for labels, values in cases:
        chart = read_bar_chart(render_bar_chart(labels, values, size=size, seed=3))
        assert (chart.labels, chart.values) == (labels, values)


def test_renderer_refuses_what_the_reader_could_not_read():
    with pytest.raises(ValueError):
        render_bar_chart(["A", "B"], [101, 3])  # out of range
    with pytest.raises(ValueError):
        render_bar_chart(["New York", "B"], [1, 3])  # a space splits a label
    with pytest.raises(ValueError):
        render_bar_chart(["Abcdefghijkl"] * 6, [1] * 6)  # labels wider than their slots
    with pytest.raises(ValueError):
        render_bar_chart(["A", "B"], [1])


def test_not_a_chart_is_a_read_error():
    with pytest.raises(ChartReadError):
        read_bar_chart(Image.new("RGB", (200, 100), "white"))
    chart = render_bar_chart(["Aa", "Bb", "Cc"], [5, 6, 7])
    with pytest.raises(ChartReadError):
        read_bar_chart(chart.crop((60, 0, 320, 240)))  # a crop without the y axis


def _bar_values(context, image, **arguments):
    from tools_server.tools import default_registry
    tool, args = default_registry().validate("bar_values", {"image": "x", **arguments})
    return tool.run(args, context(image))


def test_bar_values_selects_and_sorts(one_image_context):
    image = render_bar_chart(["Plum", "Beta", "Ash", "Oak"], [83, 70, 5, 41], seed=1)
    out = _bar_values(one_image_context, image, labels=["Beta", "plum"])  # request order, case-insensitive
    assert out.text == "Beta | 70\nPlum | 83"
    assert out.data == {"labels": ["Beta", "Plum"], "values": [70, 83]}
    assert _bar_values(one_image_context, image, order="descending").text.splitlines()[0] == "Plum | 83"
    assert _bar_values(one_image_context, image, order="ascending").data["labels"] == ["Ash", "Oak", "Beta", "Plum"]
    assert _bar_values(one_image_context, image).data["labels"] == ["Plum", "Beta", "Ash", "Oak"]  # left to right
    assert _bar_values(one_image_context, image, labels=["Oak", "Ash"], order="descending").text == "Oak | 41\nAsh | 5"


def test_bar_values_bad_arguments_are_coded_errors(one_image_context):
    from tools_server.registry import INVALID_ARGUMENT, UNKNOWN_ARGUMENT, ToolError
    image = render_bar_chart(["Plum", "Beta", "Ash"], [83, 70, 5], seed=1)
    with pytest.raises(ToolError) as info:
        _bar_values(one_image_context, image, labels=["Kiwi"])
    assert info.value.code == INVALID_ARGUMENT and "'Kiwi'" in info.value.message
    assert "Plum, Beta, Ash" in info.value.message  # tells the policy what it could ask for
    for bad, code in [({"order": "biggest"}, INVALID_ARGUMENT), ({"labels": "Plum"}, INVALID_ARGUMENT),
                      ({"labels": []}, INVALID_ARGUMENT), ({"sort": "ascending"}, UNKNOWN_ARGUMENT)]:
        with pytest.raises(ToolError) as info:
            _bar_values(one_image_context, image, **bad)
        assert info.value.code == code, bad
