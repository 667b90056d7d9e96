"""The "hf" backend of detect_objects / count_objects (tools_server.tools.hf_backends'
ZeroShotDetector) on a tiny random OWL-ViT built here: loading from a local directory, one
batched forward equal to single calls, the output schema, boxes inside the image.

`tools_server.testing.random_checkpoints.build_random_owlvit` is the pattern for testing any
transformers-backed tool offline: a config with tiny sub-configs, random weights, a tokenizer
from a vocab written in code, an image processor with a small size, all saved with
save_pretrained and loaded back the way the server loads a real checkpoint.
"""

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tools_server.testing.random_checkpoints import build_random_owlvit  # noqa: E402
from tools_server.registry import INVALID_ARGUMENT, ToolError  # noqa: E402
from tools_server.tools import hf_backends  # noqa: E402
from tools_server.tools.perception import CountObjects, DetectObjects, _hf_phrases  # noqa: E402


def build_tiny_owlvit(directory) -> str:
    """A random OWL-ViT of ~10k parameters with its processor, saved to `directory`."""
    return build_random_owlvit(directory)


@pytest.fixture(scope="module")
def tiny_owlvit(tmp_path_factory):
    return build_tiny_owlvit(tmp_path_factory.mktemp("tiny_owlvit"))


class Context:
    def __init__(self, image):
        self.source = image

    def image(self, image_id, *, argument="image"):
        return self.source

    def add_image(self, image):
        raise AssertionError("detection produces no images")


def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            for w, h in ((64, 48), (100, 80), (37, 90))]


QUERIES = [["red circle"], ["blue square", "star", "cat"], ["dog", "car"]]


def test_detector_batch_equals_single_calls(tiny_owlvit):
    det = hf_backends.zero_shot_detector(tiny_owlvit)
    ims = images()
    batch = det.detect(ims, QUERIES, threshold=0.1)
    assert any(batch), "the random model should find something at threshold 0.1"
    for im, queries, got in zip(ims, QUERIES, batch):
        single = det.detect([im], [queries], threshold=0.1)[0]
        assert [d.label for d in got] == [d.label for d in single]
        assert len(got) == len(single)
        for a, b in zip(got, single):
            assert abs(a.score - b.score) < 1e-5
            scale = np.array([im.width, im.height] * 2)
            np.testing.assert_allclose(np.array(a.box) / scale, np.array(b.box) / scale, atol=1e-5)
        for d in got:
            assert d.label in queries and 0.1 < d.score <= 1.0
            x0, y0, x1, y1 = d.box
            assert 0 <= x0 <= x1 <= im.width and 0 <= y0 <= y1 <= im.height


def test_hf_tool_output_schema_and_batched_run(tiny_owlvit):
    tool = DetectObjects(backend="hf", model_path=tiny_owlvit, threshold=0.1)
    assert tool.model_backed and "open-vocabulary" in tool.description
    ims = images()
    queries = ["red circle", "blue square, star and cat", "dog or car"]
    calls = [(tool.Arguments(image="x", query=q), Context(im)) for q, im in zip(queries, ims)]
    calls.append((tool.Arguments(image="x", query="dog", box=[0, 0, 500, 10]), Context(ims[0])))
    calls.append((tool.Arguments(image="x", query="dog", box=[10, 5, 50, 40]), Context(ims[1])))
    batch = tool.run_batch(calls)
    assert isinstance(batch[3], ToolError) and batch[3].code == INVALID_ARGUMENT
    for (args, ctx), got in zip(calls[:3] + calls[4:], batch[:3] + batch[4:]):
        single = tool.run(args, ctx)
        labels = [o["label"] for o in single.data["objects"]]
        assert [o["label"] for o in got.data["objects"]] == labels
        for a, b in zip(got.data["objects"], single.data["objects"]):
            assert np.abs(np.array(a["box"]) - b["box"]).max() <= 1  # floats rounded to pixels
        assert got.data["count"] == len(got.data["objects"])
        x0, y0, x1, y1 = args.box or [0, 0, ctx.source.width, ctx.source.height]
        for o in got.data["objects"]:
            assert set(o) == {"label", "box", "score"} and 0 <= o["score"] <= 1
            bx0, by0, bx1, by1 = o["box"]
            assert all(isinstance(v, int) for v in o["box"])
            assert x0 <= bx0 < bx1 <= x1 and y0 <= by0 < by1 <= y1
        lines = got.text.splitlines()
        assert len(lines) == got.data["count"] or got.text.startswith("no objects match")


def test_count_objects_shares_the_detector_and_counts_its_boxes(tiny_owlvit):
    detect = DetectObjects(backend="hf", model_path=tiny_owlvit)
    count = CountObjects(backend="hf", model_path=tiny_owlvit)
    assert count._detector is detect._detector  # one model in memory per checkpoint
    im = images()[1]
    found = detect.run(detect.Arguments(image="x", query="star"), Context(im))
    counted = count.run(count.Arguments(image="x", query="star"), Context(im))
    assert counted.data == found.data


def test_hf_queries_are_checked():
    with pytest.raises(ToolError) as e:
        _hf_phrases(" , and ")
    assert "'query'" in e.value.message


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 4]], float)
    scores = np.array([0.5, 0.9, 0.3, 0.8])
    assert hf_backends.nms(boxes, scores, 0.5) == [1, 3, 2]  # IoU(0, 1) = 0.68; box 3 is thin


def test_model_dir_is_checked(tmp_path):
    with pytest.raises(ValueError, match="'model_path'.*not a directory"):
        hf_backends.zero_shot_detector(tmp_path / "nope")
    with pytest.raises(ValueError, match="config.json"):
        hf_backends.check_model_dir(tmp_path)


def test_device_option_reaches_the_detector(tiny_owlvit, monkeypatch):
    cpu = DetectObjects(backend="hf", model_path=tiny_owlvit, device="cpu")
    cpu.load()
    assert cpu._detector.device == "cpu"
    assert {p.device.type for p in cpu._detector._model.parameters()} == {"cpu"}
    seen = []
    monkeypatch.setattr(hf_backends, "zero_shot_detector",
                        lambda path, **options: seen.append((path, options)) or "detector")
    for tool in (DetectObjects, CountObjects):
        assert tool(backend="hf", model_path=tiny_owlvit, device="cuda:1")._detector == "detector"
    assert seen == [(tiny_owlvit, {"device": "cuda:1"})] * 2


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "CUDA", "cpu:0", "", 0, None])
def test_a_misspelt_device_fails_at_construction_naming_the_option(tiny_owlvit, device):
    with pytest.raises(ValueError, match="option 'device'.*cuda:N"):
        DetectObjects(backend="hf", model_path=tiny_owlvit, device=device)


def test_a_device_this_process_lacks_fails_when_the_model_loads(tiny_owlvit):
    """The front builds the tool too and may have no GPU, so the spelling is checked there
    and the device itself where the model loads (a pool worker's `load`)."""
    import torch

    device = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    tool = CountObjects(backend="hf", model_path=tiny_owlvit, device=device)
    with pytest.raises(ValueError, match=f"option 'device': '{device}' but torch"):
        tool.load()


def test_the_detector_runs_on_a_gpu_with_the_cpu_results(tiny_owlvit):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    ims = images()
    tools = {d: DetectObjects(backend="hf", model_path=tiny_owlvit, device=d)
             for d in ("cpu", "cuda")}
    raw = {}
    for device, tool in tools.items():
        tool.load()
        model, processor = tool._detector._loaded()
        assert {p.device.type for p in model.parameters()} == {device}
        inputs = processor(text=[["red circle", "star"]] * len(ims), images=ims,
                           return_tensors="pt").to(device)
        with torch.inference_mode():
            out = model(**inputs)
        raw[device] = (out.logits.float().cpu(), out.pred_boxes.float().cpu())
    # cuDNN may use TF32 for the patch convolution: equal to ~1e-3, not bit for bit
    for a, b in zip(raw["cpu"], raw["cuda"]):
        torch.testing.assert_close(b, a, atol=1e-2, rtol=1e-2)
    tool = tools["cuda"]
    batch = tool.run_batch([(tool.Arguments(image="x", query="red circle, star"), Context(im))
                            for im in ims])
    for im, out in zip(ims, batch):
        assert out.data["count"] == len(out.data["objects"])
        for o in out.data["objects"]:
            x0, y0, x1, y1 = o["box"]
            assert o["label"] in ("red circle", "star") and 0 <= x0 < x1 <= im.width
            assert 0 <= y0 < y1 <= im.height
