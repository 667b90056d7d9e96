"""Model backends of the tools, loaded from local Hugging Face checkpoint directories.

Nothing here downloads: every model is read from a directory given as a tool's
`model_path` option (`from_pretrained(..., local_files_only=True)`). torch and transformers
are imported only when a backend is built, so the tool server runs without them until a
model-backed backend is configured. Each section below is one backend and self-contained;
a backend's model is loaded once per directory and process (on first use, thread-safely)
and shared by every tool that uses it.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image


def check_model_dir(model_path: str | os.PathLike | None, option: str = "model_path") -> str:
    """The absolute path of a local checkpoint directory; ValueError naming `option` if unusable."""
    if model_path is None:
        raise ValueError(f"option '{option}' is required for a model backend (a local "
                         "Hugging Face checkpoint directory)")
    path = os.path.abspath(os.fspath(model_path))
    if not os.path.isdir(path):
        raise ValueError(f"option '{option}': {path} is not a directory")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"option '{option}': {path} has no config.json (not a saved "
                         "Hugging Face model)")
    return path


# ----------------------------------------------------------------------------------------
# Zero-shot object detection (OWL-ViT / OWLv2): backend "hf" of detect_objects and
# count_objects.
# ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Detection:
    """One detected box: the text query it answers, its score and [x0, y0, x1, y1] in pixels."""

    label: str
    score: float
    box: tuple[float, float, float, float]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression; indices kept, best score first.

    boxes: [N, 4] (x0, y0, x1, y1); scores: [N].
    """
    order = np.argsort(-scores, kind="stable")
    x0, y0, x1, y1 = boxes.T  # [N] each
    areas = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        h = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return keep


def check_device(device: Any, option: str = "device") -> str:
    """`device` if it names a torch device we run on ("cpu", "cuda", "cuda:N", "mps");
    ValueError naming `option` otherwise. Only the spelling: whether the device exists is
    `check_device_available`'s, in the process that loads the model."""
    kind, colon, index = device.partition(":") if isinstance(device, str) else ("", "", "")
    if not ((kind in ("cpu", "mps") and not colon)
            or (kind == "cuda" and (not colon or (index.isascii() and index.isdigit())))):
        raise ValueError(f"option '{option}': {device!r} is not a device; use \"cpu\", "
                         "\"cuda\", \"cuda:N\" (N = GPU index) or \"mps\"")
    return device


def check_device_available(device: str, option: str = "device") -> None:
    """ValueError naming `option` when this process's torch cannot use `device`."""
    import torch

    kind, _, index = device.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"option '{option}': {device!r} but torch {torch.__version__} sees "
                             "no CUDA device here (a CPU-only build, or no GPU visible); use "
                             "\"cpu\"")
        if int(index or 0) >= count:
            raise ValueError(f"option '{option}': {device!r} but torch sees only {count} CUDA "
                             f"device(s), cuda:0..cuda:{count - 1}")
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"option '{option}': 'mps' but torch has no Apple GPU here; use \"cpu\"")


class ZeroShotDetector:
    """An OWL-ViT / OWLv2 checkpoint answering free-text queries with boxes.

    `detect` runs ONE forward pass for a whole batch of (image, queries) pairs; each image
    is scored against its own queries only. Boxes with score > threshold are kept, then
    per-query non-maximum suppression (IoU > `nms_iou` drops the weaker box), since OWL
    models emit one box per image patch and neighbouring patches find the same object.
    """

    def __init__(self, model_path: str | os.PathLike, *, device: str = "cpu",
                 nms_iou: float = 0.5):
        self.model_path = check_model_dir(model_path)
        self.device = check_device(device)
        self.nms_iou = nms_iou
        self._model: Any = None
        self._processor: Any = None
        self._load_lock = threading.Lock()
        # One forward at a time: torch already uses every core for one, and a pool worker
        # batches calls before they get here.
        self._run_lock = threading.Lock()

    def _loaded(self) -> tuple[Any, Any]:
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor
                    check_device_available(self.device)
                    processor = AutoProcessor.from_pretrained(self.model_path,
                                                              local_files_only=True)
                    model = AutoModelForZeroShotObjectDetection.from_pretrained(
                        self.model_path, local_files_only=True)
                    self._processor = processor
                    self._model = model.to(self.device).eval()
        return self._model, self._processor

    def detect(self, images: Sequence[Image.Image], queries: Sequence[Sequence[str]],
               threshold: float) -> list[list[Detection]]:
        """Detections per image (best score first), for images [B] and their queries [B][Q_b]."""
        if len(images) != len(queries):
            raise ValueError(f"{len(images)} images but {len(queries)} query lists")
        if not images:
            return []
        if any(not q for q in queries):
            raise ValueError("every image needs at least one query")
        import torch

        model, processor = self._loaded()
        rgb = [im.convert("RGB") for im in images]
        with self._run_lock, torch.inference_mode():
            # The processor pads each image's queries to the longest list; the padding
            # queries are sliced off below, so they never produce boxes.
            inputs = processor(text=[list(q) for q in queries], images=rgb, return_tensors="pt")
            outputs = model(**inputs.to(self.device))
        results = []
        for i, (im, qs) in enumerate(zip(rgb, queries)):
            own = type(outputs)(logits=outputs.logits[i:i + 1, :, :len(qs)],
                                pred_boxes=outputs.pred_boxes[i:i + 1])
            post = processor.post_process_grounded_object_detection(
                outputs=own, threshold=threshold, target_sizes=[(im.height, im.width)],
                text_labels=[list(qs)])[0]
            boxes = post["boxes"].float().cpu().numpy().reshape(-1, 4)  # [N, 4]
            scores = post["scores"].float().cpu().numpy().reshape(-1)  # [N]
            labels = post["labels"].cpu().numpy().reshape(-1)  # [N] query index
            boxes[:, 0::2] = boxes[:, 0::2].clip(0, im.width)
            boxes[:, 1::2] = boxes[:, 1::2].clip(0, im.height)
            found: list[Detection] = []
            for q in np.unique(labels):
                idx = np.flatnonzero(labels == q)
                for j in nms(boxes[idx], scores[idx], self.nms_iou):
                    k = idx[j]
                    found.append(Detection(qs[int(q)], float(scores[k]),
                                           tuple(float(v) for v in boxes[k])))
            found.sort(key=lambda d: (-d.score, d.box))
            results.append(found)
        return results


_DETECTORS: dict[tuple[str, str, float], ZeroShotDetector] = {}
_DETECTORS_LOCK = threading.Lock()


def zero_shot_detector(model_path: str | os.PathLike, *, device: str = "cpu",
                       nms_iou: float = 0.5) -> ZeroShotDetector:
    """The process-wide detector for this checkpoint directory and device (one model in
    memory); ValueError naming the option when `model_path` or `device` is unusable."""
    key = (check_model_dir(model_path), check_device(device), nms_iou)
    with _DETECTORS_LOCK:
        if key not in _DETECTORS:
            _DETECTORS[key] = ZeroShotDetector(key[0], device=device, nms_iou=nms_iou)
        return _DETECTORS[key]


# ----------------------------------------------------------------------------------------
# Chart to table (Pix2Struct / DePlot): backend "hf" of chart_to_table.
# ----------------------------------------------------------------------------------------

DEPLOT_PROMPT = "Generate underlying data table of the figure below:"
_NEWLINE_TOKEN = "<0x0A>"  # how DePlot's sentencepiece vocabulary spells a line break


@dataclasses.dataclass(frozen=True)
class DeplotTable:
    """A parsed linearised table: row labels and one value list per column (header order)."""

    title: str
    label_header: str
    labels: list[str]
    columns: dict[str, list[Any]]


def _cell_value(cell: str) -> Any:
    """"12" -> 12, "1,234.5" -> 1234.5, "45%" -> 45, "$3" -> 3; other text stays a string."""
    text = cell.strip()
    number = text.replace(",", "").lstrip("$€£").rstrip("%").strip()
    try:
        value = float(number)
    except ValueError:
        return text
    if not np.isfinite(value):
        return text
    return int(value) if value.is_integer() and "." not in number and "e" not in number.lower() \
        else value


def parse_deplot_table(text: str) -> DeplotTable:
    """Parses DePlot's linearised table, `TITLE | t <0x0A> col | col <0x0A> a | 1 <0x0A> ...`.

    The title line is optional; the next line is the header (first cell: the label column),
    every later line one row with as many cells as the header. Numbers become int / float
    (see `_cell_value`). ValueError when there is no header with >= 2 cells or no row, or a
    row's cell count differs from the header's.
    """
    lines = [ln.strip() for ln in text.replace(_NEWLINE_TOKEN, "\n").splitlines()]
    lines = [ln for ln in lines if ln]
    title = ""
    if lines and lines[0].split("|", 1)[0].strip().upper() == "TITLE":
        title = lines.pop(0).split("|", 1)[1].strip() if "|" in lines[0] else ""
    if len(lines) < 2:
        raise ValueError("no header and data rows")
    header = [c.strip() for c in lines[0].split("|")]
    if len(header) < 2:
        raise ValueError(f"header {lines[0]!r} has fewer than 2 cells")
    names: list[str] = []
    for j, name in enumerate(header[1:], start=1):
        name = name or f"column{j}"
        while name in names:  # duplicate headers would merge columns
            name += "'"
        names.append(name)
    labels: list[str] = []
    columns: dict[str, list[Any]] = {n: [] for n in names}
    for k, line in enumerate(lines[1:], start=1):
        cells = [c.strip() for c in line.split("|")]
        if len(cells) != len(header):
            raise ValueError(f"row {k} has {len(cells)} cells, the header {len(header)}")
        labels.append(cells[0])
        for name, cell in zip(names, cells[1:]):
            columns[name].append(_cell_value(cell))
    return DeplotTable(title, header[0], labels, columns)


def _processor_config(path: str) -> dict[str, Any]:
    """The image-processor settings saved in a checkpoint directory ({} if none)."""
    import json

    for file, key in (("processor_config.json", "image_processor"),
                      ("preprocessor_config.json", None)):
        full = os.path.join(path, file)
        if os.path.isfile(full):
            with open(full, encoding="utf-8") as fh:
                config = json.load(fh)
            return config.get(key, {}) if key else config
    return {}


class Pix2StructChartReader:
    """A Pix2Struct checkpoint that writes a chart's table (DePlot), batched.

    `generate` runs ONE greedy `generate` for a whole batch of images. VQA-style checkpoints
    (DePlot: `is_vqa` in the image processor) render the prompt `DEPLOT_PROMPT` above the
    image with a TrueType font, which the processor would download; here it must be a
    `.ttf` file inside the checkpoint directory (checked at construction).
    """

    def __init__(self, model_path: str | os.PathLike, *, device: str = "cpu"):
        self.model_path = check_model_dir(model_path)
        self.device = device
        config = _processor_config(self.model_path)
        self.is_vqa = bool(config.get("is_vqa", False))
        self.max_patches = int(config.get("max_patches", 2048))
        fonts = sorted(f for f in os.listdir(self.model_path) if f.lower().endswith((".ttf", ".otf")))
        self.font_path = os.path.join(self.model_path, fonts[0]) if fonts else None
        if self.is_vqa and self.font_path is None:
            raise ValueError(f"option 'model_path': {self.model_path} is a VQA Pix2Struct "
                             "checkpoint (DePlot), which renders its prompt with a TrueType font; "
                             "put the font (e.g. Arial.TTF) in that directory")
        self._model: Any = None
        self._processor: Any = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()  # one generate at a time (it uses every core)

    def _loaded(self) -> tuple[Any, Any]:
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    from transformers import Pix2StructForConditionalGeneration, Pix2StructProcessor
                    processor = Pix2StructProcessor.from_pretrained(self.model_path,
                                                                    local_files_only=True)
                    model = Pix2StructForConditionalGeneration.from_pretrained(
                        self.model_path, local_files_only=True)
                    self._processor = processor
                    self._model = model.to(self.device).eval()
        return self._model, self._processor

    def generate(self, images: Sequence[Image.Image], max_new_tokens: int = 256) -> list[str]:
        """The decoded output (a linearised table, unparsed) for each image [B]."""
        if not images:
            return []
        import torch

        model, processor = self._loaded()
        rgb = [im.convert("RGB") for im in images]
        kwargs: dict[str, Any] = {"max_patches": self.max_patches}
        if self.is_vqa:
            kwargs.update(text=[DEPLOT_PROMPT] * len(rgb), font_path=self.font_path)
        with self._run_lock, torch.inference_mode():
            inputs = processor(images=rgb, return_tensors="pt", **kwargs).to(self.device)
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 num_beams=1, use_cache=True)  # [B, T]
        return processor.tokenizer.batch_decode(out, skip_special_tokens=True)


_CHART_READERS: dict[tuple[str, str], Pix2StructChartReader] = {}
_CHART_READERS_LOCK = threading.Lock()


def pix2struct_chart_reader(model_path: str | os.PathLike, *,
                            device: str = "cpu") -> Pix2StructChartReader:
    """The process-wide chart reader for this checkpoint directory (one model in memory)."""
    key = (check_model_dir(model_path), device)
    with _CHART_READERS_LOCK:
        if key not in _CHART_READERS:
            _CHART_READERS[key] = Pix2StructChartReader(key[0], device=device)
        return _CHART_READERS[key]
