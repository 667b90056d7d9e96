"""Geometry3K (Lu et al., Inter-GPS, ACL 2021) from its released files.

Layout read (the train.zip / val.zip / test.zip of github.com/lupantech/InterGPS, README
"Download the dataset"; one problem's folder is in that repository under
`annotation_tool/data_collection/data_examples/<id>/`, which is what this was checked
against):

    <root>/<split>/<problem id>/data.json         the problem
    <root>/<split>/<problem id>/img_diagram.png   its diagram
    <root>/<split>/<problem id>/logic_form.json   annotated literals (optional here)
    (img_problem.png, img_diagram_point.png       not read)

with splits `train` (ids 0–2100), `val` (2101–2400), `test` (2401–3001). `data.json` holds
`problem_text`, `choices` (four strings), `answer` (the letter), `problem_type_graph` and
`problem_type_goal` (lists such as ["Circle"], ["Angle"]), `id`, `source`, `unit`,
`precise_value`, `compact_text`, ... .

Tasks: problems in numeric id order (the folder name is the record id); `choice` tasks whose
question is `problem_text` followed by the lettered choices (the policy only sees the
question text), gold answer the letter; `meta["question_type"]` is the goal type in lower
case ("angle", "length", "area", "ratio", ...), `meta` also keeps the graph/goal types, the
source and the logic forms when `logic_form.json` is there.
"""

from __future__ import annotations

from pathlib import Path

from vista_jax.env.datasets.base import (Dataset, DatasetFormatError, Pending, SplitRecords,
                                         choices_block, make_pending, read_json, require,
                                         split_dir, string_list)

NAME = "geometry3k"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _problem_order(path: Path) -> tuple[int, int, str]:
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def read_split(root: Path, split: str) -> SplitRecords:
    folder = split_dir(root, split, NAME, f"{root / split}/<problem id>/data.json")
    problems = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=_problem_order)
    if not problems:
        raise DatasetFormatError(f"{NAME}: no problem folders under {folder}")
    records: list[Pending] = []
    for problem in problems:
        path = problem / "data.json"
        data = read_json(path, NAME)
        where = f"{NAME}: problem {problem.name} ({path})"
        text = require(data, "problem_text", str, where).strip()
        choices = [c.strip() for c in
                   string_list(require(data, "choices", list, where), where, "choices")]
        if not 2 <= len(choices) <= len(LETTERS):
            raise DatasetFormatError(f"{where}: needs 2–{len(LETTERS)} choices, got {choices!r}")
        answer = require(data, "answer", str, where).strip().upper()
        if len(answer) != 1 or answer not in LETTERS[:len(choices)]:
            raise DatasetFormatError(f"{where}: answer {data['answer']!r} is not one of the "
                                     f"letters {list(LETTERS[:len(choices)])}")
        goal = string_list(data.get("problem_type_goal", []), where, "problem_type_goal")
        graph = string_list(data.get("problem_type_graph", []), where, "problem_type_graph")
        meta = {"problem_text": text, "problem_type_goal": goal, "problem_type_graph": graph,
                "source": data.get("source"), "unit": data.get("unit"), "data_id": data.get("id")}
        logic_path = problem / "logic_form.json"
        if logic_path.is_file():
            logic = read_json(logic_path, NAME)
            if not isinstance(logic, dict):
                raise DatasetFormatError(f"{NAME}: {logic_path} must hold a JSON object")
            meta["logic_form"] = logic
        records.append(make_pending(
            NAME, split, problem.name, len(records),
            question=f"{text}\n{choices_block(choices)}", answer=answer, answer_type="choice",
            choices=choices, image_paths=[problem / "img_diagram.png"],
            where=where, question_type=goal[0].lower() if goal else "unknown", meta=meta))
    return SplitRecords(tuple(records))


DATASET = Dataset(name=NAME, title="Geometry3K", splits=("train", "val", "test"),
                  family_splits={"train": "train", "val": "val", "test": "test"},
                  read=read_split)
