"""chart_to_table backend "hf": DePlot's table format, and a tiny random Pix2Struct built here.

The parser is tested on hand-written DePlot strings (and against the classical backend's
output for the same chart). The model tests build a tiny random Pix2Struct with a tokenizer
made in code and save it to a temporary directory: nothing is downloaded.
"""

import json

import numpy as np
import pytest
from PIL import Image

from tools_server.registry import EXECUTION_FAILED, IMAGE_NOT_FOUND, ToolError
from tools_server.tools import default_registry, hf_backends
from tools_server.tools.chart import ChartToTable
from tools_server.tools.hf_backends import parse_deplot_table
from vista_jax.env.tasks.render import render_bar_chart, render_grouped_bar_chart, render_line_chart


class Context:
    def __init__(self, images):
        self.images = images

    def image(self, image_id, *, argument="image"):
        if image_id not in self.images:
            raise ToolError(IMAGE_NOT_FOUND, f"argument '{argument}': no image {image_id!r}")
        return self.images[image_id]

    def add_image(self, image):
        raise AssertionError("chart_to_table produces no images")


def classical(image):
    tool, args = default_registry().validate("chart_to_table", {"image": "x"})
    return tool.run(args, Context({"x": image}))


# --- DePlot's linearised tables ------------------------------------------------------------

def test_parse_deplot_single_series_with_title():
    table = parse_deplot_table("TITLE | Sales by fruit <0x0A> Fruit | Sales <0x0A> Apple | 47 "
                               "<0x0A> Pear | 0 <0x0A> Fig | 100")
    assert table.title == "Sales by fruit" and table.label_header == "Fruit"
    assert table.labels == ["Apple", "Pear", "Fig"]
    assert table.columns == {"Sales": [47, 0, 100]}


def test_parse_deplot_multi_series_numbers_and_newlines():
    text = ("TITLE | <0x0A> Year | North | South <0x0A> 2019 | 1,200 | 12.5% <0x0A> "
            "2020 | $3 | n/a\n2021 | -4 | 0.25")
    table = parse_deplot_table(text)
    assert table.title == "" and table.labels == ["2019", "2020", "2021"]
    assert table.columns == {"North": [1200, 3, -4], "South": [12.5, "n/a", 0.25]}
    assert isinstance(table.columns["North"][0], int)
    # No title line at all; blank header names and duplicates stay separate columns.
    table = parse_deplot_table("x | | a | a <0x0A> p | 1 | 2 | 3")
    assert table.columns == {"column1": [1], "a": [2], "a'": [3]}


@pytest.mark.parametrize("text", ["", "TITLE | t", "TITLE | t <0x0A> a | b", "only one cell <0x0A> x",
                                  "a | b <0x0A> x | 1 | 2", "a | b | c <0x0A> x | 1"])
def test_parse_deplot_refuses_what_is_not_a_table(text):
    with pytest.raises(ValueError):
        parse_deplot_table(text)


def test_parsed_tables_match_the_classical_output():
    """The same chart as DePlot would write it gives chart_to_table's classical text and data."""
    from tools_server.tools.chart import series_table_output

    bar = render_bar_chart(["Apple", "Pear", "Fig"], [47, 0, 100], seed=1)
    parsed = parse_deplot_table("TITLE | <0x0A> label | value <0x0A> Apple | 47 <0x0A> Pear | 0 "
                                "<0x0A> Fig | 100")
    out, ref = series_table_output(parsed.labels, parsed.columns), classical(bar)
    assert (out.text, out.data) == (ref.text, ref.data)

    series = {"Sales": [10, 40, 35], "Cost": [20, 0, 50]}
    for image in (render_grouped_bar_chart(["Jan", "Feb", "Mar"], series, seed=2),
                  render_line_chart(["Jan", "Feb", "Mar"], series, seed=2)):
        parsed = parse_deplot_table("TITLE | Money <0x0A> Month | Sales | Cost <0x0A> Jan | 10 | 20 "
                                    "<0x0A> Feb | 40 | 0 <0x0A> Mar | 35 | 50")
        out, ref = series_table_output(parsed.labels, parsed.columns), classical(image)
        assert out.text == ref.text
        assert {k: out.data[k] for k in ("labels", "series")} == {k: ref.data[k] for k in ("labels", "series")}


class FakeReader:
    """Stands in for the model: fixed outputs, and a count of generate calls."""

    def __init__(self, outputs):
        self.outputs, self.calls = outputs, []

    def generate(self, images, max_new_tokens=256):
        self.calls.append(len(images))
        return [self.outputs[im.width] for im in images]


def test_run_batch_parses_each_output_and_isolates_failures(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    tool = ChartToTable(backend="hf", model_path=str(tmp_path))
    fake = FakeReader({10: "TITLE | T <0x0A> a | v <0x0A> Apple | 3", 11: "garbage",
                       12: "x | A | B <0x0A> p | 1 | 2"})
    tool._model = fake
    images = {f"im{w}": Image.new("RGB", (w, 8), "white") for w in (10, 11, 12)}
    ctx = Context(images)
    calls = [(tool.Arguments(image=i), ctx) for i in ("im10", "missing", "im11", "im12")]
    results = tool.run_batch(calls)
    assert fake.calls == [3]  # one generate for the three images found
    assert results[0].text == "Apple | 3"
    assert results[0].data == {"labels": ["Apple"], "values": [3], "title": "T"}
    assert isinstance(results[1], ToolError) and results[1].code == IMAGE_NOT_FOUND
    assert isinstance(results[2], ToolError) and results[2].code == EXECUTION_FAILED
    assert "garbage" in results[2].message
    assert results[3].text == "label | A | B\np | 1 | 2"
    assert results[3].data == {"labels": ["p"], "series": {"A": [1], "B": [2]}}
    assert tool.run(calls[0][0], ctx).text == "Apple | 3"  # run is a batch of one


def test_vqa_checkpoint_without_font_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "processor_config.json").write_text(json.dumps({"image_processor": {"is_vqa": True}}))
    with pytest.raises(ValueError, match="'model_path'.*font"):
        hf_backends.Pix2StructChartReader(tmp_path)
    (tmp_path / "Arial.TTF").write_bytes(b"")
    assert hf_backends.Pix2StructChartReader(tmp_path).font_path.endswith("Arial.TTF")


# --- a tiny random Pix2Struct --------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_pix2struct(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, decoders, models
    from transformers import (Pix2StructConfig, Pix2StructForConditionalGeneration,
                              Pix2StructProcessor, T5Tokenizer)
    from transformers.models.pix2struct.image_processing_pil_pix2struct import (
        Pix2StructImageProcessorPil)

    pieces = ["<pad>", "</s>", "<unk>", "<0x0A>", "TITLE", " | "]
    pieces += list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.% ")
    backend = Tokenizer(models.Unigram([(p, -1.0) for p in pieces], unk_id=2))
    backend.decoder = decoders.Fuse()
    tokenizer = T5Tokenizer(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>", extra_ids=0)
    processor = Pix2StructProcessor(
        image_processor=Pix2StructImageProcessorPil(max_patches=64, patch_size={"height": 16, "width": 16}),
        tokenizer=tokenizer)
    config = Pix2StructConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, d_kv=8, d_ff=64, num_layers=2,
                         num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0),
        vision_config=dict(hidden_size=32, patch_embed_hidden_size=16 * 16 * 3, d_ff=64, d_kv=8,
                           num_hidden_layers=2, num_attention_heads=4, seq_len=64))
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_pix2struct")
    Pix2StructForConditionalGeneration(config).eval().save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)


def chart_images():
    return [render_bar_chart(["Apple", "Pear", "Fig"], [47, 0, 100], seed=1),
            render_line_chart(["Jan", "Feb", "Mar"], {"A": [1, 20, 3], "B": [50, 60, 70]}, seed=2),
            Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 200, 3), dtype=np.uint8)),
            render_grouped_bar_chart(["Jan", "Feb"], {"A": [1, 20], "B": [50, 60]}, seed=3)]


def test_tiny_pix2struct_loads_and_batches_like_single_calls(tiny_pix2struct):
    reader = hf_backends.pix2struct_chart_reader(tiny_pix2struct)
    assert hf_backends.pix2struct_chart_reader(tiny_pix2struct) is reader  # one model per process
    images = chart_images()
    batched = reader.generate(images, max_new_tokens=12)
    single = [reader.generate([im], max_new_tokens=12)[0] for im in images]
    print("tiny model outputs:", batched)
    assert batched == single and all(isinstance(t, str) for t in batched)
    assert len(set(batched)) > 1  # the images do reach the decoder


def test_tiny_pix2struct_tool_run_batch_is_one_generate(tiny_pix2struct, monkeypatch):
    tool = default_registry({"chart_to_table": {"backend": "hf", "model_path": tiny_pix2struct,
                                                "max_new_tokens": 12}}).get("chart_to_table")
    images = {f"im{i}": im for i, im in enumerate(chart_images())}
    ctx = Context(images)
    calls = [(tool.Arguments(image=i), ctx) for i in [*images, "missing"]]
    assert tool.model_backed  # the hf backend goes to the worker pool
    tool.load()  # what a worker does before /readyz passes
    model, _ = tool._model._loaded()
    generate, counted = model.generate, []

    def counting_generate(**kwargs):
        counted.append(tuple(kwargs["flattened_patches"].shape))
        return generate(**kwargs)

    monkeypatch.setattr(model, "generate", counting_generate)
    results = tool.run_batch(calls)
    assert len(counted) == 1 and counted[0][0] == len(images)  # [B, patches, 770]
    assert isinstance(results[-1], ToolError) and results[-1].code == IMAGE_NOT_FOUND
    singles = [tool.run_batch([call])[0] for call in calls[:-1]]
    for batched, single in zip(results[:-1], singles):
        # A random model's text is rarely a table: either way the schema is fixed.
        if isinstance(batched, ToolError):
            assert batched.code == EXECUTION_FAILED and "not a table" in batched.message
            assert isinstance(single, ToolError) and single.message == batched.message
        else:
            assert set(batched.data) >= {"labels"} and batched.images == []
            assert (batched.text, batched.data) == (single.text, single.data)
