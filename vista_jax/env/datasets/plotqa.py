"""PlotQA (Methani et al., WACV 2020) from its released files.

Layout read (github.com/NiteshMethani/PlotQA `PlotQA_Dataset.md` / `Download_Dataset.md`:
per split a `png` folder of RGBA plots named `<image_index>.png`, `annotations.json`, and
the question files `qa_pairs_V1.json` (8.2M pairs) / `qa_pairs_V2.json` (28.9M pairs)):

    <root>/<split>/qa_pairs_V2.json   (else qa_pairs_V1.json, else qa_pairs.json; or `qa_file`)
    <root>/<split>/png/<image_index>.png
    (<root>/<split>/annotations.json  not read)

with splits `train`, `val`, `test`. The documentation calls the question file "a list of
dictionaries"; a list, or an object wrapping it as `{"qa_pairs": [...]}` as FigureQA does,
is accepted. A pair holds `image_index`, `question_string`, `answer` (a number or a
string), `answer_bbox`, `template` (the question template's name), `type` (vbar_categorical
| hbar_categorical | dot_line | line) and possibly `question_id`. Unlike the other adapters,
this layout was read from the documentation only (no released file was at hand to check);
a mismatch surfaces as a clear missing-file or missing-field error.

Tasks: pairs in file order, record id = position in the list; numeric answers (JSON numbers
or numeric strings) become `number` tasks with 5% relative tolerance (PlotQA, like ChartQA,
scores numbers with a 5% margin; a year answering a question about years is flagged
`meta["answer_is_year"]` and matched exactly, see `chartqa`), other answers `text`;
`meta["question_type"]` = `template`.
Note that the V2 train file is several GB of JSON, all parsed into memory at first use.
"""

from __future__ import annotations

from pathlib import Path

from vista_jax.env.datasets.base import (Dataset, DatasetFormatError, Pending, SplitRecords,
                                         answer_text, asks_for_year, is_number_text, make_pending,
                                         read_json, require, split_dir)
from vista_jax.env.rewards import RELAXED_TOLERANCE

NAME = "plotqa"
QA_FILES = ("qa_pairs_V2.json", "qa_pairs_V1.json", "qa_pairs.json")


def read_split(root: Path, split: str, *, qa_file: str | None = None,
               exact_years: bool = True) -> SplitRecords:
    """`qa_file`: the question file's name inside the split folder (default: the first of
    `QA_FILES` present). `exact_years`: as for ChartQA (`meta["answer_is_year"]`)."""
    folder = split_dir(root, split, NAME, f"{root / split}/{QA_FILES[0]}")
    names = (qa_file,) if qa_file is not None else QA_FILES
    paths = [folder / n for n in names if (folder / n).is_file()]
    if not paths:
        raise FileNotFoundError(f"{NAME}: no question file in {folder} (looked for {list(names)})")
    path = paths[0]
    data = read_json(path, NAME)
    pairs = data.get("qa_pairs") if isinstance(data, dict) else data
    if not isinstance(pairs, list):
        raise DatasetFormatError(f"{NAME}: {path} must hold a list of qa pairs or an object "
                                 "with a 'qa_pairs' list")
    records: list[Pending] = []
    for i, qa in enumerate(pairs):
        where = f"{NAME}: qa pair {i} of {path}"
        image_index = require(qa, "image_index", int, where)
        if image_index < 0:
            raise DatasetFormatError(f"{where}: 'image_index' must be >= 0, got {image_index}")
        question = require(qa, "question_string", str, where).strip()
        answer = answer_text(require(qa, "answer", (str, int, float), where), where)
        numeric = is_number_text(answer)
        template = qa.get("template")
        records.append(make_pending(
            NAME, split, str(i), len(records), question=question, answer=answer,
            answer_type="number" if numeric else "text",
            tolerance=RELAXED_TOLERANCE if numeric else 0.0,
            image_paths=[folder / "png" / f"{image_index}.png"],
            where=f"{where} (image_index {image_index})",
            question_type=str(template) if template else "unknown",
            meta={"image_index": image_index, "template": template, "plot_type": qa.get("type"),
                  "question_id": qa.get("question_id"),
                  "answer_is_year": exact_years and numeric and asks_for_year(question, answer)}))
    return SplitRecords(tuple(records))


DATASET = Dataset(name=NAME, title="PlotQA", splits=("train", "val", "test"),
                  family_splits={"train": "train", "val": "val", "test": "test"},
                  read=read_split)
