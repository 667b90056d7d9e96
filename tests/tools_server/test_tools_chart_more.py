"""Line, grouped-bar and pie charts: render with known data, read back with every chart tool.

Each known-answer test draws random charts (several seeds per kind), saves them as PNG, runs
chart_type / read_axes / read_legend / line_points / chart_to_table through the registry and
compares exactly: values, labels, series names, colours, swatch boxes and pixel positions
(against the renderer's own layout).
"""

import hashlib
import io
import random
import string
import time

import numpy as np
import pytest
from PIL import Image

from tools_server.registry import INVALID_ARGUMENT, ToolError
from tools_server.tools import chart, default_registry
from vista_jax.env.tasks import render
from vista_jax.env.tasks.render import (render_bar_chart, render_grouped_bar_chart,
                                        render_line_chart, render_pie_chart, render_points_diagram)

REGISTRY = default_registry()
TIMINGS: dict[str, list[float]] = {}


class Context:
    def __init__(self, image):
        self._image = image

    def image(self, image_id, *, argument="image"):
        return self._image

    def add_image(self, image):
        raise AssertionError("chart tools produce no images")


def call(name, image, **arguments):
    tool, args = REGISTRY.validate(name, {"image": "x", **arguments})
    start = time.perf_counter()
    try:
        return tool.run(args, Context(image))
    finally:
        TIMINGS.setdefault(name, []).append(time.perf_counter() - start)


def png(image):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    out = Image.open(io.BytesIO(buf.getvalue()))
    out.load()
    return out


def words(rng, n, lo=1, hi=4):
    out = []
    while len(out) < n:
        w = "".join([rng.choice(string.ascii_uppercase)]
                    + rng.choices(string.ascii_lowercase + string.digits, k=rng.randint(lo, hi)))
        if w.casefold() not in {o.casefold() for o in out}:
            out.append(w)
    return out


def series_spec(seed, min_series, max_series):
    rng = random.Random(seed)
    n, k = rng.randint(2, 6), rng.randint(min_series, max_series)
    labels, names = words(rng, n, 1, 3), words(rng, k, 2, 6)
    vmax = rng.choice([5, 10, 30, 60, 100])
    series = {name: [rng.randint(0, vmax) for _ in labels] for name in names}
    return labels, series, rng.choice([None, "Sales by month"]), rng.choice([(320, 240), (400, 300)])


def drawn(renderer, seed, min_series, max_series):
    """A chart the renderer accepts (line charts refuse dots drawn over each other)."""
    for attempt in range(100):
        labels, series, title, size = series_spec(1000 * seed + attempt, min_series, max_series)
        try:
            image = renderer(labels, series, title=title, size=size, seed=seed)
        except ValueError:
            continue
        legend = list(series) if len(series) > 1 else None
        layout = render._value_axes(labels, max(max(v) for v in series.values()), size, title,
                                    legend)
        return labels, series, title, size, png(image), layout
    raise AssertionError("no drawable spec")


def pie_spec(seed):
    rng = random.Random(seed)
    k = rng.randint(1, 9)
    cuts = sorted(rng.sample(range(1, 100), k - 1))
    values = [b - a for a, b in zip([0, *cuts], [*cuts, 100])]
    return words(rng, k, 2, 6), values, rng.choice([None, "Share"]), rng.choice([(320, 240), (400, 300)])


def expected_legend(names, seed, title, size):
    colours = random.Random(seed).sample(render.PALETTE, len(names))
    top = 12 + (render.GLYPH_H + 5 if title else 0)
    x = size[0] - 6 - render._legend_width(names)
    return [{"name": n, "colour": render.COLOUR_NAMES[render.PALETTE.index(c)],
             "hex": "#%02x%02x%02x" % c, "box": [x, top + 14 * i, x + 8, top + 14 * i + 8]}
            for i, (n, c) in enumerate(zip(names, colours))]


def check_axes(image, labels, layout, kind):
    out = call("read_axes", image)
    d = out.data
    assert d["chart_type"] == kind
    assert d["y_axis"]["column"] == layout.left and d["x_axis"]["row"] == layout.axis_y
    assert d["x_axis"]["right_column"] == layout.right
    assert d["ticks"] == [{"value": k * layout.step, "row": layout.row(k * layout.step)}
                          for k in range(layout.n_steps, -1, -1)]
    assert d["value_range"] == [0, layout.step * layout.n_steps]
    assert [l["text"] for l in d["labels"]] == labels
    for i, l in enumerate(d["labels"]):  # the ink's centre, within a glyph's side bearing
        assert abs(l["column"] - layout.centre(i)) <= 2, (l, layout.centre(i))


@pytest.mark.parametrize("seed", range(12))
def test_line_charts_read_back_exactly(seed):
    labels, series, title, size, image, layout = drawn(render_line_chart, seed, 1, 4)
    names = list(series)
    out = call("chart_type", image)
    assert out.data["chart_type"] == "line" and out.text.startswith("line")
    assert out.data["evidence"]["marker_series"] == len(names)
    check_axes(image, labels, layout, "line")

    legend = call("read_legend", image)
    if len(names) == 1:
        assert legend.data["entries"] == [] and legend.text.startswith("no legend")
    else:
        assert legend.data["entries"] == expected_legend(names, seed, title, size)

    points = call("line_points", image)
    read_names = names if len(names) > 1 else [chart.SINGLE_SERIES]
    assert [s["name"] for s in points.data["series"]] == read_names
    colours = random.Random(seed).sample(render.PALETTE, len(names))
    for s, values, colour in zip(points.data["series"], series.values(), colours):
        assert s["values"] == values and s["hex"] == "#%02x%02x%02x" % colour
        assert [(p["x"], p["y"]) for p in s["points"]] == [
            (round(layout.centre(i)), layout.row(v)) for i, v in enumerate(values)]
    one = call("line_points", image, series=read_names[-1].upper())  # case-insensitive
    assert [s["name"] for s in one.data["series"]] == [read_names[-1]]
    assert one.text == f"{read_names[-1]}: " + ", ".join(
        f"{label} {v}" for label, v in zip(labels, list(series.values())[-1]))

    table = call("chart_to_table", image)
    if len(names) == 1:
        assert table.text == "\n".join(f"{l} | {v}" for l, v in zip(labels, series[names[0]]))
        assert table.data["values"] == series[names[0]]
    else:
        lines = table.text.splitlines()
        assert lines[0] == "label | " + " | ".join(names)
        assert lines[1:] == [" | ".join([l, *(str(series[n][i]) for n in names)])
                             for i, l in enumerate(labels)]
        assert table.data["series"] == series
    assert table.data["labels"] == labels and table.data["chart_type"] == "line"


@pytest.mark.parametrize("seed", range(12))
def test_grouped_bar_charts_read_back_exactly(seed):
    labels, series, title, size, image, layout = drawn(render_grouped_bar_chart, seed, 2, 4)
    out = call("chart_type", image)
    assert out.data["chart_type"] == "grouped_bar"
    assert out.data["evidence"]["bars"] == sum(v > 0 for vs in series.values() for v in vs)
    check_axes(image, labels, layout, "grouped_bar")
    assert call("read_legend", image).data["entries"] == expected_legend(list(series), seed,
                                                                         title, size)
    table = call("chart_to_table", image)
    assert table.data == {"labels": labels, "series": series, "chart_type": "grouped_bar"}
    assert table.text.splitlines()[0] == "label | " + " | ".join(series)
    with pytest.raises(ToolError) as info:
        call("line_points", image)
    assert info.value.code == INVALID_ARGUMENT and "grouped bar chart" in info.value.message


@pytest.mark.parametrize("seed", range(12))
def test_pie_charts_read_back_exactly(seed):
    labels, values, title, size = pie_spec(seed)
    image = png(render_pie_chart(labels, values, title=title, size=size, seed=seed))
    kind = call("chart_type", image)
    assert kind.data["chart_type"] == "pie" and kind.data["evidence"]["wedges"] == len(labels)
    assert call("read_legend", image).data["entries"] == expected_legend(labels, seed, title, size)
    table = call("chart_to_table", image)
    assert table.text == "\n".join(f"{l} | {v}" for l, v in zip(labels, values))
    assert table.data == {"labels": labels, "values": values, "chart_type": "pie",
                          "unit": "percent"}
    with pytest.raises(ToolError) as info:
        call("read_axes", image)
    assert "pie" in info.value.message


def test_extreme_values():
    # all zeros (dots on the x axis), a flat top, a 1% wedge, one wedge, 9 series
    image = png(render_line_chart(["A", "B", "C"], {"Lo": [0, 0, 0], "Hi": [100, 100, 100]}))
    assert call("line_points", image).data["series"][0]["values"] == [0, 0, 0]
    assert call("chart_to_table", image).data["series"] == {"Lo": [0, 0, 0], "Hi": [100, 100, 100]}
    zero = png(render_grouped_bar_chart(["A", "B"], {"X": [0, 0], "Y": [0, 0]}))
    assert call("chart_type", zero).data["chart_type"] == "grouped_bar"
    assert call("chart_to_table", zero).data["series"] == {"X": [0, 0], "Y": [0, 0]}
    for values in ([1, 99], [100], [1, 1, 1, 1, 1, 1, 1, 1, 92]):
        labels = [f"P{i}" for i in range(len(values))]
        assert call("chart_to_table", png(render_pie_chart(labels, values))).data["values"] == values
    names = [f"S{i}" for i in range(9)]
    wide = png(render_grouped_bar_chart(["A", "B"], {n: [10 * i + 5, 90 - 10 * i] for i, n in
                                                     enumerate(names)}, size=(480, 360)))
    assert list(call("chart_to_table", wide).data["series"]) == names


def test_single_series_bar_charts_are_unchanged():
    image = render_bar_chart(["Apple", "Pear", "Fig"], [47, 0, 100], seed=1)
    assert call("chart_type", image).data["chart_type"] == "bar"
    out = call("chart_to_table", image)
    assert (out.text, out.images, out.data) == ("Apple | 47\nPear | 0\nFig | 100", [],
                                                {"labels": ["Apple", "Pear", "Fig"],
                                                 "values": [47, 0, 100]})
    axes = call("read_axes", image).data
    assert [l["text"] for l in axes["labels"]] == ["Apple", "Pear", "Fig"]
    assert call("read_legend", image).text == "no legend (this bar chart has a single series)"
    empty = render_bar_chart(["Aa", "Bb"], [0, 0])
    assert call("chart_type", empty).data["chart_type"] == "bar"
    assert call("chart_to_table", empty).text == "Aa | 0\nBb | 0"


def test_chart_to_table_and_bar_values_agree_with_read_bar_chart():
    # The tools answer bar charts from the shared analysis; read_bar_chart is the reference
    # reader (tests/tools_server/test_tools_chart.py); their outputs must not drift apart.
    for seed in range(40):
        rng = random.Random(seed)
        n = rng.randint(1, 6)
        labels = words(rng, n, 1, 5)
        values = [rng.randint(0, rng.choice([3, 10, 60, 100])) for _ in labels]
        image = png(render_bar_chart(labels, values, title=rng.choice([None, "Votes"]),
                                     size=rng.choice([(320, 240), (400, 300)]), seed=seed))
        ref = chart.read_bar_chart(image)
        assert (ref.labels, ref.values) == (labels, values)
        table_text = "\n".join(f"{l} | {v}" for l, v in zip(labels, values))
        out = call("chart_to_table", image)
        assert (out.text, out.data) == (table_text, {"labels": labels, "values": values})
        assert call("bar_values", image).text == table_text


def test_existing_renderers_pixels_unchanged():
    # Bytes of the renders every existing test and task depends on (Pillow 11-13 agree).
    def digest(image):
        return hashlib.sha256(image.tobytes()).hexdigest()[:16]

    assert digest(render_bar_chart(["Apple", "Pear", "Fig"], [47, 0, 100], seed=1)) == "3e27b03513a10717"
    assert digest(render_bar_chart(["Jan", "Feb.", "8%", "x-1"], [13, 0, 7, 100],
                                   title="Sales by month", size=(400, 300), seed=3)) == "26813ab3c1249b71"
    assert digest(render_points_diagram({"A": (60, 200), "B": (220, 200), "C": (220, 80)},
                                        [("A", "B"), ("B", "C"), ("C", "A")])) == "c32a107c43291bb8"


def test_bar_values_refuses_other_chart_kinds():
    image = render_line_chart(["A", "B", "C"], {"Lo": [1, 2, 3], "Hi": [50, 60, 70]})
    with pytest.raises(ToolError) as info:
        call("bar_values", image)
    assert info.value.code == INVALID_ARGUMENT and "line chart" in info.value.message
    assert "'image'" in info.value.message


def noise(seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (240, 320, 3), dtype=np.uint8))


@pytest.mark.parametrize("name", ["chart_type", "read_axes", "read_legend", "line_points",
                                  "chart_to_table"])
@pytest.mark.parametrize("image", [Image.new("RGB", (320, 240), "white"), noise(),
                                   render_points_diagram({"A": (60, 200), "B": (220, 200),
                                                          "C": (220, 40)}, [("A", "B"), ("B", "C")]),
                                   Image.new("L", (5, 3), 0)],
                         ids=["blank", "noise", "diagram", "tiny"])
def test_not_a_chart_is_an_invalid_argument(name, image):
    with pytest.raises(ToolError) as info:
        call(name, image)
    assert info.value.code == INVALID_ARGUMENT
    assert info.value.message.startswith("argument 'image': not a chart in our style")


def test_wrong_series_and_wrong_kind():
    image = render_line_chart(["A", "B", "C"], {"Lo": [1, 2, 3], "Hi": [50, 60, 70]})
    with pytest.raises(ToolError) as info:
        call("line_points", image, series="Mid")
    assert info.value.code == INVALID_ARGUMENT and info.value.message.startswith("argument 'series'")
    assert "'Mid'" in info.value.message and "Lo, Hi" in info.value.message
    single = render_line_chart(["A", "B", "C"], {"Lo": [1, 2, 3]})
    assert call("line_points", single, series="value").data["series"][0]["values"] == [1, 2, 3]
    with pytest.raises(ToolError) as info:
        call("line_points", single, series="Lo")
    assert "no legend" in info.value.message
    for bad in ({"series": ""}, {"series": 3}):
        with pytest.raises(ToolError) as info:
            REGISTRY.validate("line_points", {"image": "x", **bad})
        assert "series" in info.value.message
    with pytest.raises(ToolError) as info:
        call("line_points", render_bar_chart(["A", "B"], [3, 4]))
    assert "bar chart, not a line chart" in info.value.message


def test_renderers_refuse_what_the_tools_could_not_read():
    for bad in [lambda: render_line_chart(["A", "B"], {"A": [1, 2], "B": [2, 60]}),  # dots overlap
                lambda: render_line_chart(["A", "B"], {"A": [1, 101]}),
                lambda: render_line_chart(["A", "B"], {"A": [1]}),
                lambda: render_line_chart(["A", "B"], {"A b": [1, 2]}),
                lambda: render_line_chart(["A", "a"], {"X": [1, 2]}),
                lambda: render_line_chart(["A"], {"X": [1]}),
                lambda: render_line_chart(["A", "B"], {"X": [1, True]}),
                lambda: render_grouped_bar_chart(["A", "B"], {"A": [1, 2]}),  # one series
                lambda: render_grouped_bar_chart(  # bars under 3 px wide
                    [f"L{i}" for i in range(12)], {f"S{j}": [1] * 12 for j in range(9)}),
                lambda: render_grouped_bar_chart(  # labels wider than their slots
                    [f"Abcdefghi{i}" for i in range(6)], {"A": [1] * 6, "B": [2] * 6}),
                lambda: render_pie_chart(["A", "B"], [50, 49]),
                lambda: render_pie_chart(["A", "B"], [100, 0]),
                lambda: render_pie_chart(["A", "B"], [50, 50], size=(120, 100)),
                lambda: render_pie_chart([f"L{i}" for i in range(10)], [10] * 10)]:
        with pytest.raises(ValueError):
            bad()


def test_mirrored_constants_in_step_and_tools_registered():
    assert chart.PALETTE_NAMES == dict(zip(render.PALETTE, render.COLOUR_NAMES))
    assert (chart.SWATCH, chart.MARKER_RADIUS) == (render.SWATCH, render.MARKER_RADIUS)
    names = [t.name for t in REGISTRY if t.family == "chart"]
    assert names[:2] == ["chart_to_table", "bar_values"]
    assert set(names) >= {"chart_type", "read_axes", "read_legend", "line_points"}
    for name in ("chart_type", "read_axes", "read_legend", "line_points", "chart_to_table"):
        assert "vista-jax's own rendered style" in " ".join(REGISTRY.get(name).description.split())


def test_chart_to_table_options():
    from tools_server.tools.chart import ChartToTable
    with pytest.raises(ValueError, match="'backend'"):
        ChartToTable(backend="deplot")
    with pytest.raises(ValueError, match="'model_path'"):
        ChartToTable(backend="hf")
    with pytest.raises(ValueError, match="'model_path'"):
        ChartToTable(backend="hf", model_path="/nonexistent/deplot")
    with pytest.raises(ValueError, match="'model_path'"):
        ChartToTable(model_path="/tmp")  # only for backend="hf"
    with pytest.raises(ValueError, match="'max_new_tokens'"):
        ChartToTable(max_new_tokens=0)
    assert not ChartToTable().model_backed  # the classical reader runs in the front


def test_timings_per_call():
    """Runs last in this module: mean time per call of each tool over the calls above."""
    image = render_line_chart(["Jan", "Feb", "Mar", "Apr"], {"Lo": [1, 20, 3, 4], "Hi": [50, 60, 70, 99]})
    for name in ("chart_type", "read_axes", "read_legend", "line_points", "chart_to_table"):
        call(name, image)
    report = {name: 1000 * sum(t) / len(t) for name, t in TIMINGS.items()}
    print("mean ms per call:", {k: round(v, 1) for k, v in sorted(report.items())})
    assert max(report.values()) < 100  # ~5-20 ms each on one core
