"""MathVista (Lu et al., ICLR 2024) from its released annotation file.

Layout read (github.com/lupantech/MathVista `data/testmini.json`, which this was checked
against; the Hugging Face release AI4Math/MathVista has the same fields plus `query`):

    <root>/<split>.json      split "testmini" (1,000 problems with answers); "test" withholds them
    <root>/<image>           the record's `image`, e.g. "images/1.jpg"

The JSON is an object keyed by pid (a list of records each carrying `pid` is accepted too),
each record holding `question`, `image`, `choices` (list or null), `unit`, `precision`,
`answer`, `question_type` (multi_choice | free_form), `answer_type` (text | integer | float |
list), `pid`, `metadata` {split, language, source, category, task, context, grade, skills,
...} and, in the Hugging Face release, `query` (the benchmark's prompt: a hint on the answer
format, the question, the choices).

Mapping, following MathVista's own scoring (evaluation/calculate_score.py: multi_choice is
judged by option, integers by `int(float(pred)) == answer`, floats by
`round(pred, precision) == answer`):
- multi_choice -> `choice`; the gold letter is the answer text's index in `choices` (an answer
  that is not one of the choices is an error).
- free_form integer -> `number`, exact.
- free_form float -> `number` with relative tolerance `0.5 * 10**-precision / |answer|`: a
  prediction is accepted iff it rounds to the answer at the given precision (precision null:
  the answer's own decimals). For a gold answer of 0 the tolerance is the half unit itself,
  which `rewards.numbers_match` reads as absolute at gold 0.
- free_form text -> `text`.
- list -> skipped and counted (`TaskList.skipped`, kind "unverifiable answer"): MathVista
  compares lists as exact strings, which no verifier here reproduces.
The question is the record's `query` when present, otherwise built in the same format.
`meta["question_type"]` is `metadata.task` ("figure question answering", "geometry problem
solving", "math word problem", "textbook question answering", "visual question answering");
MathVista's own question/answer types, source, context, grade, skills, unit and precision
are kept in `meta` as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vista_jax.env.datasets.base import (Dataset, DatasetFormatError, Pending, Skipped,
                                         SplitRecords, answer_text, choices_block, make_pending,
                                         read_json, relative_file, require, string_list)

NAME = "mathvista"
QUESTION_TYPES = ("multi_choice", "free_form")
ANSWER_TYPES = ("text", "integer", "float", "list")
_DECIMAL_WORDS = {1: "one decimal place", 2: "two decimal places", 3: "three decimal places"}
_DECIMAL_EXAMPLES = {1: "1.2, 1.3, 1.4", 2: "1.23, 1.34, 1.45", 3: "1.234, 1.345, 1.456"}


def _records(data: Any, path: Path) -> list[tuple[str, Any]]:
    if isinstance(data, dict):
        return [(str(pid), record) for pid, record in data.items()]
    if isinstance(data, list):
        out = []
        for i, record in enumerate(data):
            where = f"{NAME}: record {i} of {path}"
            out.append((str(require(record, "pid", (str, int), where)), record))
        return out
    raise DatasetFormatError(f"{NAME}: {path} must hold a JSON object keyed by pid (or a list "
                             f"of records), got {type(data).__name__}")


def _precision(record: dict[str, Any], answer: str, where: str) -> int:
    precision = record.get("precision")
    if precision is None:
        return len(answer.split(".", 1)[1]) if "." in answer else 0
    if (isinstance(precision, bool) or not isinstance(precision, (int, float))
            or precision != int(precision) or precision < 0):
        raise DatasetFormatError(f"{where}: 'precision' must be a whole number >= 0 or null, "
                                 f"got {precision!r}")
    return int(precision)


def build_query(question: str, unit: str | None, question_type: str, answer_type: str,
                precision: int, choices: list[str] | None) -> str:
    """A prompt in the format of MathVista's `query` field, for records without one."""
    if question_type == "multi_choice":
        hint = ("Please answer the question and provide the correct option letter, e.g., A, B, "
                "C, D, at the end.")
    elif answer_type == "integer":
        hint = ("Please answer the question requiring an integer answer and provide the final "
                "value, e.g., 1, 2, 3, at the end.")
    elif answer_type == "float":
        places = _DECIMAL_WORDS.get(precision)
        hint = ("Please answer the question requiring a floating-point number"
                + (f" with {places}" if places else "") + " and provide the final value, e.g., "
                + _DECIMAL_EXAMPLES.get(precision, "1.2, 1.3, 1.4") + ", at the end.")
    else:
        hint = "Please answer the question and provide the final answer at the end."
    text = f"Hint: {hint}\nQuestion: {question}" + (f" (Unit: {unit})" if unit else "")
    return text + (f"\n{choices_block(choices)}" if question_type == "multi_choice" else "")


def read_split(root: Path, split: str, *, annotation: str | Path | None = None) -> SplitRecords:
    """`annotation`: the JSON file to read instead of `<root>/<split>.json`."""
    path = Path(annotation) if annotation is not None else root / f"{split}.json"
    if annotation is None and not path.is_file():
        found = sorted(p.stem for p in root.glob("*.json"))
        raise FileNotFoundError(f"{NAME}: no split {split!r} under {root} (expected {path}); "
                                f"JSON files found: {found}")
    records: list[Pending] = []
    skipped: list[Skipped] = []
    for pid, record in _records(read_json(path, NAME), path):
        where = f"{NAME}: pid {pid} of {path}"
        question = require(record, "question", str, where).strip()
        image = require(record, "image", str, where)
        qtype = require(record, "question_type", str, where)
        atype = require(record, "answer_type", str, where)
        if qtype not in QUESTION_TYPES:
            raise DatasetFormatError(f"{where}: question_type {qtype!r} is not one of "
                                     f"{QUESTION_TYPES}")
        if atype not in ANSWER_TYPES:
            raise DatasetFormatError(f"{where}: answer_type {atype!r} is not one of {ANSWER_TYPES}")
        if record.get("answer") in (None, ""):
            raise DatasetFormatError(f"{where}: no gold answer (MathVista's test split withholds "
                                     "its answers; use testmini)")
        answer = answer_text(record["answer"], where)
        unit = record.get("unit") or None
        if unit is not None and not isinstance(unit, str):
            raise DatasetFormatError(f"{where}: 'unit' must be a string or null, got {unit!r}")
        metadata = record.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise DatasetFormatError(f"{where}: 'metadata' must be an object, got {metadata!r}")
        if qtype == "free_form" and atype == "list":
            skipped.append(Skipped(pid, where, "unverifiable answer",
                                   f"{where}: answer_type 'list' ({answer!r}) cannot be verified"))
            continue

        choices, tolerance, precision = None, 0.0, 0
        if qtype == "multi_choice":
            choices = string_list(require(record, "choices", list, where), where, "choices")
            if not 2 <= len(choices) <= 26:
                raise DatasetFormatError(f"{where}: needs 2–26 choices, got {choices!r}")
            matches = [i for i, c in enumerate(choices) if c.strip() == answer]
            if not matches:
                raise DatasetFormatError(f"{where}: answer {answer!r} is not one of the choices "
                                         f"{choices!r}")
            gold, answer_type = chr(ord("A") + matches[0]), "choice"
        elif atype == "integer":
            try:
                gold = str(int(answer))
            except ValueError:
                raise DatasetFormatError(f"{where}: integer answer {answer!r} is not an "
                                         "integer") from None
            answer_type = "number"
        elif atype == "float":
            try:
                value = float(answer)
            except ValueError:
                raise DatasetFormatError(f"{where}: float answer {answer!r} is not a "
                                         "number") from None
            precision = _precision(record, answer, where)
            # relative half a unit in the last place; for a gold 0, `numbers_match` reads
            # the tolerance as absolute, so the half unit is passed as it is
            half_unit = 0.5 * 10.0 ** -precision
            tolerance = half_unit / abs(value) if value else half_unit
            gold, answer_type = answer, "number"
        else:
            gold, answer_type = answer, "text"

        query = record.get("query")
        if query is not None and not (isinstance(query, str) and query.strip()):
            raise DatasetFormatError(f"{where}: 'query' must be a non-empty string, got {query!r}")
        prompt = (query.strip() if query else
                  build_query(question, unit, qtype, atype, precision, choices))
        records.append(make_pending(
            NAME, split, pid, len(records), question=prompt, answer=gold,
            answer_type=answer_type, tolerance=tolerance, choices=choices,
            image_paths=[relative_file(root, image, where)], where=f"{where} (image {image!r})",
            question_type=str(metadata.get("task") or qtype),
            meta={"mathvista_question_type": qtype, "mathvista_answer_type": atype,
                  "answer_text": answer, "question_text": question, "unit": unit,
                  "precision": record.get("precision"),
                  **{k: metadata[k] for k in ("source", "category", "task", "context", "grade",
                                              "skills", "language") if k in metadata}}))
    return SplitRecords(tuple(records), tuple(skipped))


DATASET = Dataset(name=NAME, title="MathVista", splits=("testmini",),
                  family_splits={"test": "testmini"}, read=read_split)
