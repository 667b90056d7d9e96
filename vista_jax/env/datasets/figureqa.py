"""FigureQA (Kahou et al., ICLR 2018 workshop) from its released files.

Layout read (github.com/Maluuba/FigureQA `docs/json_png_format.md`, "With the combiner
script", which is how the released archives figureqa-<split>-v1.tar.gz unpack; split names
as in github.com/vmichals/FigureQA-baseline `data/figureqa.py`):

    <root>/<split>/qa_pairs.json        {"qa_pairs": [...], "total_distinct_questions": ..., ...}
    <root>/<split>/png/<image_index>.png
    (<root>/<split>/annotations.json    not read)

with splits `train1`, `validation1`, `validation2`, `sample_train1`; `no_annot_test1` and
`no_annot_test2` carry no answers and are refused. A qa pair is `{"question_string": "Is
Light Gold the minimum?", "question_id": 0, "answer": 1, "color1_name": ..., "color2_name":
..., "image_index": 0, ...}`; `question_id` names the template (`docs/question_id_map.txt`).

Tasks: qa pairs in file order, record id = the pair's position in `qa_pairs`; answers 1/0
become the `text` answers "Yes"/"No"; `meta["question_type"]` is the template name
("min", "max", "less", "greater", "low median", "high median", "min auc", "max auc",
"smoothest", "roughest", "global min", "global max", "intersect"), prefixed with "line "
for the continuous-plot templates whose names repeat ("line less", "line greater").
"""

from __future__ import annotations

from pathlib import Path

from vista_jax.env.datasets.base import (Dataset, DatasetFormatError, Pending, SplitRecords,
                                         make_pending, read_json, require, split_dir)

NAME = "figureqa"
QUESTION_TEMPLATES = {
    0: "min", 1: "max", 2: "less", 3: "greater", 4: "low median", 5: "high median",
    6: "min auc", 7: "max auc", 8: "smoothest", 9: "roughest", 10: "global min",
    11: "global max", 12: "line less", 13: "line greater", 14: "intersect",
}


def read_split(root: Path, split: str) -> SplitRecords:
    folder = split_dir(root, split, NAME, f"{root / split}/qa_pairs.json")
    path = folder / "qa_pairs.json"
    data = read_json(path, NAME)
    if not isinstance(data, dict) or not isinstance(data.get("qa_pairs"), list):
        raise DatasetFormatError(f"{NAME}: {path} must hold an object with a 'qa_pairs' list")
    records: list[Pending] = []
    for i, qa in enumerate(data["qa_pairs"]):
        where = f"{NAME}: qa pair {i} of {path}"
        if isinstance(qa, dict) and "answer" not in qa:
            raise DatasetFormatError(f"{where}: no 'answer' (FigureQA's no_annot_test "
                                     "partitions withhold answers)")
        image_index = require(qa, "image_index", int, where)
        question = require(qa, "question_string", str, where).strip()
        answer = require(qa, "answer", (int, bool), where)
        if answer not in (0, 1):
            raise DatasetFormatError(f"{where}: 'answer' must be 1 or 0, got {answer!r}")
        question_id = qa.get("question_id")
        if question_id is not None and (isinstance(question_id, bool)
                                        or not isinstance(question_id, int)):
            raise DatasetFormatError(f"{where}: 'question_id' must be an integer, got "
                                     f"{question_id!r}")
        if image_index < 0:
            raise DatasetFormatError(f"{where}: 'image_index' must be >= 0, got {image_index}")
        records.append(make_pending(
            NAME, split, str(i), len(records), question=question,
            answer="Yes" if answer else "No", answer_type="text",
            image_paths=[folder / "png" / f"{image_index}.png"],
            where=f"{where} (image_index {image_index})",
            question_type=QUESTION_TEMPLATES.get(question_id, f"template {question_id}"),
            meta={"question_id": question_id, "image_index": image_index,
                  "color1_name": qa.get("color1_name"), "color2_name": qa.get("color2_name")}))
    return SplitRecords(tuple(records))


DATASET = Dataset(name=NAME, title="FigureQA",
                  splits=("train1", "validation1", "validation2", "sample_train1"),
                  family_splits={"train": "train1", "val": "validation1", "test": "validation2"},
                  read=read_split)
