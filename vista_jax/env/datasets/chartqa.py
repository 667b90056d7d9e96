"""ChartQA (Masry et al., Findings of ACL 2022) from its released files.

Layout read (the "ChartQA Dataset" folder of github.com/vis-nlp/ChartQA, README "Full
Version", the same tree as huggingface.co/datasets/ahmed-masry/ChartQA):

    <root>/<split>/<split>_human.json       ChartQA-H, human-authored questions
    <root>/<split>/<split>_augmented.json   ChartQA-M, machine-generated questions
    <root>/<split>/png/<imgname>            the chart images
    (<root>/<split>/tables/, annotations/   not read)

with splits `train`, `val`, `test`. Each JSON file is a list of records
`{"imgname": "41699051005347.png", "query": "...", "label": "0.57"}` (checked against
`ChartQA Dataset/test/test_human.json` and `test_augmented.json` in that repository). A label
given as a one-element list (the Hugging Face conversions) is accepted too.

Tasks: human records first, then augmented, each in file order; record id
`"<subset>_<position in its file>"`, `meta["question_type"]` = "human" / "augmented",
`meta["imgname"]`. A label that is one plain number (what ChartQA's relaxed accuracy can
`float()`, "%" stripped) becomes a `number` task with the benchmark's 5% relative tolerance;
every other label is `text` (exact after normalisation). Differences from the official
metric (pix2struct's relaxed_correctness): it reads "62%" as 0.62, `verify` reads 62; and a
year answering a question about years ("In which year ...?" -> "2014") is flagged
`meta["answer_is_year"]`, which `verify` matches exactly (2014 ± 5% spans two centuries);
`exact_years=False` turns the flag off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vista_jax.env.datasets.base import (Dataset, DatasetFormatError, Pending, SplitRecords,
                                         answer_text, asks_for_year, is_number_text, make_pending,
                                         read_json, relative_file, require, split_dir)
from vista_jax.env.rewards import RELAXED_TOLERANCE

NAME = "chartqa"
SUBSETS = ("human", "augmented")


def _label(record: dict[str, Any], where: str) -> str:
    label = require(record, "label", (str, int, float, list), where)
    if isinstance(label, list):
        if len(label) != 1:
            raise DatasetFormatError(f"{where}: 'label' list must hold exactly one answer, "
                                     f"got {label!r}")
        label = label[0]
    return answer_text(label, where, "label")


def read_split(root: Path, split: str, *, subsets: tuple[str, ...] = SUBSETS,
               exact_years: bool = True) -> SplitRecords:
    """`subsets`: which question files to read, a sub-tuple of ("human", "augmented").
    `exact_years`: flag year answers to questions about years (`meta["answer_is_year"]`) so
    they must match exactly; False keeps the official metric's 5% on them too."""
    bad = [s for s in subsets if s not in SUBSETS]
    if bad or not subsets:
        raise ValueError(f"{NAME}: subsets must be a non-empty tuple of {SUBSETS}, got {subsets!r}")
    folder = split_dir(root, split, NAME, f"{root / split}/{split}_human.json")
    records: list[Pending] = []
    for subset in subsets:
        path = folder / f"{split}_{subset}.json"
        data = read_json(path, NAME)
        if not isinstance(data, list):
            raise DatasetFormatError(f"{NAME}: {path} must hold a JSON list of records, "
                                     f"got {type(data).__name__}")
        for i, record in enumerate(data):
            where = f"{NAME}: record {i} of {path}"
            imgname = require(record, "imgname", str, where)
            query = require(record, "query", str, where).strip()
            label = _label(record, where)
            numeric = is_number_text(label)
            records.append(make_pending(
                NAME, split, f"{subset}_{i}", len(records), question=query, answer=label,
                answer_type="number" if numeric else "text",
                tolerance=RELAXED_TOLERANCE if numeric else 0.0,
                image_paths=[relative_file(folder / "png", imgname, where)],
                where=f"{where} (imgname {imgname!r})", question_type=subset,
                meta={"imgname": imgname,
                      "answer_is_year": exact_years and numeric and asks_for_year(query, label)}))
    return SplitRecords(tuple(records))


DATASET = Dataset(name=NAME, title="ChartQA", splits=("train", "val", "test"),
                  family_splits={"train": "train", "val": "val", "test": "test"},
                  read=read_split)
