"""What every dataset adapter shares: records, image loading, the loader and the family.

An adapter (one module per dataset) reads a split's annotation files in the dataset's
released layout into `SplitRecords`: one `Pending` per usable record, i.e. a `Task` without
its images plus the paths of those images, and the records it skipped because their answers
cannot be verified. Annotation problems raise at once, naming the file and the record;
nothing is downloaded, ever.

`load_tasks` then opens the images. A missing image is an error (the release is incomplete);
an image that exists but cannot be decoded is skipped and counted, with one
`SkippedRecordsWarning` per load, because released image folders do carry the odd broken file
and one should not cost a whole split. The returned `TaskList` is a `list[Task]` whose
`skipped` names every record left out and why.

Seeds: task `i` of a split is the split's `i`-th usable record in file order (records whose
answers cannot be verified are not counted; a record skipped for an unreadable image keeps
its index, so `load_tasks` leaves a gap there). `DatasetFamily` serves record `i` as seed
`SPLIT_BASE[split] + i`, so `make_task(family, split, i)` and `load_tasks(...)` agree.
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
import json
import re
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from vista_jax.env.tasks.base import SPLIT_BASE, SPLIT_SIZE, AnswerType, Task


class DatasetFormatError(ValueError):
    """A dataset file or record is not in the released format."""


class CorruptImageError(DatasetFormatError):
    """An image file exists but cannot be decoded."""


class SkippedRecordsWarning(UserWarning):
    """A load left records out (unreadable images, answers that cannot be verified)."""


@dataclasses.dataclass(frozen=True)
class Pending:
    """A record read from the annotations: its task without images, and the image files."""

    task: Task
    image_paths: tuple[Path, ...]
    where: str  # names the record and its file, for error messages


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A record a load left out."""

    record: str  # the record's id in the dataset
    where: str
    kind: str  # "unreadable image" | "unverifiable answer"
    reason: str


@dataclasses.dataclass(frozen=True)
class SplitRecords:
    records: tuple[Pending, ...]
    skipped: tuple[Skipped, ...] = ()  # left out at read time (answers we cannot verify)


class TaskList(list):
    """The tasks of a load (a plain `list[Task]`) with `skipped`: the records left out."""

    def __init__(self, tasks: Sequence[Task] = (), skipped: Sequence[Skipped] = ()):
        super().__init__(tasks)
        self.skipped: tuple[Skipped, ...] = tuple(skipped)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A public dataset's adapter. Calling it loads a split: `DATASETS["chartqa"](root, "test")`."""

    name: str  # registry key and `Task.source`, e.g. "chartqa"
    title: str  # as the authors write it, e.g. "ChartQA" (gym ids)
    splits: tuple[str, ...]  # released splits that carry gold answers
    family_splits: Mapping[str, str]  # env split -> released split, `dataset_family`'s default
    read: Callable[..., SplitRecords]  # (root: Path, split: str, **options) -> SplitRecords

    def __call__(self, root: str | Path, split: str, *, limit: int | None = None,
                 **options: Any) -> TaskList:
        return load_tasks(self, root, split, limit=limit, **options)


# --- building records ----------------------------------------------------------------------

def make_pending(dataset: str, split: str, record_id: str, index: int, *, question: str,
                 answer: str, answer_type: AnswerType, image_paths: Sequence[Path], where: str,
                 question_type: str, tolerance: float = 0.0,
                 choices: Sequence[str] | None = None, meta: Mapping[str, Any] = ()) -> Pending:
    """A `Pending` whose task has the fields every adapter shares (no plan, difficulty 0)."""
    task = Task(
        task_id=f"{dataset}/{split}/{record_id}", family=dataset, seed=index, split=split,
        question=question, images=(), answer=answer, answer_type=answer_type,
        tolerance=tolerance, choices=tuple(choices) if choices is not None else None,
        reference_plan=(), difficulty=0, source=dataset,
        meta={"question_type": question_type, "record_id": record_id, "dataset_split": split,
              "index": index, **dict(meta)})
    return Pending(task, tuple(image_paths), where)


def choices_block(choices: Sequence[str]) -> str:
    """"Choices:\\n(A) …\\n(B) …", the layout MathVista's queries use."""
    return "Choices:\n" + "\n".join(f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(choices))


_NUMBER_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def is_number_text(text: str) -> bool:
    """Whether `text` is one plain number ("14", "-0.57", "1e3", "62%"): what ChartQA's relaxed
    accuracy treats as numeric (it tries `float(label)`; "%" is stripped first)."""
    text = text.strip()
    return bool(_NUMBER_RE.fullmatch(text[:-1] if text.endswith("%") else text))


_YEAR_QUESTION_RE = re.compile(r"\byears?\b|\bwhen\b", re.IGNORECASE)


def asks_for_year(question: str, answer: str) -> bool:
    """Whether `answer` is a year the question asks for ("In which year ...?" -> "2014"): a
    four-digit integer 1000–2999 and a question that says "year" or "when". Adapters put it
    in `meta["answer_is_year"]`, which `rewards.verify` matches exactly even under a 5%
    tolerance (2014 ± 5% would accept 1914–2114)."""
    return (re.fullmatch(r"[12]\d{3}", answer.strip()) is not None
            and _YEAR_QUESTION_RE.search(question) is not None)


def answer_text(value: Any, where: str, key: str = "answer") -> str:
    """A gold answer as text: a non-empty string, or a JSON number (not a bool)."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise DatasetFormatError(f"{where}: {key!r} must be a non-empty string or a number, "
                             f"got {value!r}")


def require(record: Mapping[str, Any], key: str, types: type | tuple[type, ...],
            where: str) -> Any:
    """`record[key]`, which must exist and be of `types` (bools are not ints here)."""
    if not isinstance(record, Mapping):
        raise DatasetFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise DatasetFormatError(f"{where}: missing field {key!r} (has {sorted(record)})")
    value = record[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
        names = "/".join(t.__name__ for t in _tuple(types))
        raise DatasetFormatError(f"{where}: field {key!r} must be {names}, got {value!r}")
    if isinstance(value, str) and not value.strip():
        raise DatasetFormatError(f"{where}: field {key!r} is empty")
    return value


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def string_list(value: Any, where: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DatasetFormatError(f"{where}: field {key!r} must be a list of strings, got {value!r}")
    return value


def relative_file(base: Path, name: str, where: str) -> Path:
    """`base / name` for a file name taken from an annotation; refuses absolute paths and
    `..` so that a record cannot point outside the dataset."""
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise DatasetFormatError(f"{where}: image path {name!r} must be relative to {base} "
                                 "without '..'")
    return base / rel


# --- files -----------------------------------------------------------------------------------

def read_json(path: Path, dataset: str) -> Any:
    """The parsed JSON file; a missing file or bad JSON raises naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{dataset}: annotation file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetFormatError(f"{dataset}: {path} is not valid JSON: {e}") from None


def split_dir(root: Path, split: str, dataset: str, expected: str) -> Path:
    """`root / split`, which must be a directory; the error lists the splits that are there."""
    path = root / split
    if not path.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise FileNotFoundError(f"{dataset}: no split {split!r} under {root} (expected "
                                f"{expected}); directories found: {found}")
    return path


def open_image(path: Path, where: str) -> Image.Image:
    """The image at `path` as RGB, transparency flattened onto white (PlotQA's PNGs are RGBA
    with a transparent background, which a plain RGB conversion turns black)."""
    if not path.is_file():
        raise FileNotFoundError(f"{where}: image {path} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                rgba = im.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(white, rgba).convert("RGB")
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise CorruptImageError(f"{where}: image {path} cannot be decoded: "
                                f"{type(e).__name__}: {e}") from None


# --- loading -----------------------------------------------------------------------------

def read_split(dataset: Dataset, root: str | Path, split: str, **options: Any) -> SplitRecords:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{dataset.name}: dataset root {root} is not a directory")
    if not isinstance(split, str) or not split:
        raise ValueError(f"{dataset.name}: split must be a non-empty string, got {split!r}")
    records = dataset.read(root, split, **options)
    if not records.records:
        raise DatasetFormatError(f"{dataset.name}: split {split!r} under {root} has no usable "
                                 f"records ({len(records.skipped)} skipped)")
    return records


def load_tasks(dataset: Dataset, root: str | Path, split: str, *, limit: int | None = None,
               **options: Any) -> TaskList:
    """The split's tasks with their images (the first `limit` that load, when given)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be None or an integer >= 0, got {limit!r}")
    records = read_split(dataset, root, split, **options)
    tasks: list[Task] = []
    skipped = list(records.skipped)
    for rec in records.records:
        if limit is not None and len(tasks) >= limit:
            break
        try:
            images = tuple(open_image(p, rec.where) for p in rec.image_paths)
        except CorruptImageError as e:
            skipped.append(Skipped(rec.task.meta["record_id"], rec.where, "unreadable image",
                                   str(e)))
            continue
        tasks.append(dataclasses.replace(rec.task, images=images))
    if skipped:
        warn_skipped(f"{dataset.name}/{split}", skipped,
                     "The returned list's .skipped names them all.")
    return TaskList(tasks, skipped)


def warn_skipped(what: str, skipped: Sequence[Skipped], more: str = "") -> None:
    """One warning for all the records a load left out, counted by kind."""
    counts = collections.Counter(s.kind for s in skipped)
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    warnings.warn(f"{what}: skipped {len(skipped)} record(s) ({summary}); first: "
                  f"{skipped[0].reason}. {more}".rstrip(), SkippedRecordsWarning, stacklevel=4)


# --- the task family ---------------------------------------------------------------------

class DatasetFamily:
    """A `TaskFamily` over a dataset split on disk. Task `i` of env split `s` (seed
    `SPLIT_BASE[s] + i`) is record `i` of the released split `splits[s]`. A split's
    annotations are read on first use and kept; images are read on each `generate` (the
    same file, so the same bytes) rather than kept, so a large split costs only its
    annotations in memory. An unreadable image raises here (skipping would shift every later
    seed). Records left out at read time (answers that cannot be verified) are announced
    once, by a `SkippedRecordsWarning` on the split's first use. There are no reference plans
    (`tools` is empty) and no difficulty levels."""

    tools: tuple[str, ...] = ()

    def __init__(self, dataset: Dataset, root: str | Path, *, name: str, gym_name: str,
                 splits: Mapping[str, str], options: Mapping[str, Any]):
        self.dataset, self.root = dataset, Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"{dataset.name}: dataset root {self.root} is not a directory")
        unknown = sorted(set(splits) - set(SPLIT_BASE))
        if unknown:
            raise ValueError(f"{name}: split map keys must be env splits {sorted(SPLIT_BASE)}, "
                             f"got {unknown}")
        try:  # a misspelt reader option fails here, not at the first `generate`
            inspect.signature(dataset.read).bind(self.root, "split", **options)
        except TypeError as e:
            raise TypeError(f"{name}: bad options for the {dataset.name} reader: {e}") from None
        self.name, self.gym_name = name, gym_name
        self.splits = dict(splits)
        self.options = dict(options)
        self._records: dict[str, tuple[Pending, ...]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"DatasetFamily({self.name!r}, dataset={self.dataset.name!r}, "
                f"root={str(self.root)!r}, splits={self.splits})")

    def dataset_split(self, split: str) -> str:
        """The released split that env split `split` reads."""
        if split not in SPLIT_BASE:
            raise ValueError(f"unknown split {split!r}; one of {sorted(SPLIT_BASE)}")
        if split not in self.splits:
            raise ValueError(f"{self.name}: {self.dataset.title} has no split for env split "
                             f"{split!r}; this family maps {self.splits}")
        return self.splits[split]

    def records(self, split: str) -> tuple[Pending, ...]:
        """The usable records of env split `split` (read once, then cached)."""
        released = self.dataset_split(split)
        with self._lock:
            if released not in self._records:
                read = read_split(self.dataset, self.root, released, **self.options)
                self._records[released] = read.records
                if read.skipped:
                    warn_skipped(f"{self.name} ({self.dataset.name}/{released})", read.skipped)
            return self._records[released]

    def size(self, split: str) -> int:
        return len(self.records(split))

    def generate(self, seed: int, split: str, difficulty: int | None = None) -> Task:
        if difficulty not in (None, 0):
            raise ValueError(f"{self.name}: dataset tasks have no difficulty levels (their "
                             f"difficulty is 0, unknown); pass None, not {difficulty!r}")
        released = self.dataset_split(split)
        index = seed - SPLIT_BASE[split]
        if not 0 <= index < SPLIT_SIZE:
            raise ValueError(f"{self.name}: seed {seed} is outside split {split!r}'s range "
                             f"[{SPLIT_BASE[split]}, {SPLIT_BASE[split] + SPLIT_SIZE})")
        records = self.records(split)
        if index >= len(records):
            raise IndexError(f"{self.name}: split {split!r} ({self.dataset.title} split "
                             f"{released!r}) has {len(records)} tasks; task {index} "
                             f"(seed {seed}) is past its end")
        rec = records[index]
        images = tuple(open_image(p, rec.where) for p in rec.image_paths)
        return dataclasses.replace(rec.task, family=self.name, seed=seed, split=split,
                                   images=images, meta=dict(rec.task.meta))

    def bindings(self, task: Task, results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {}
