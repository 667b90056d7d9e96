"""Public datasets read from local files in their released layouts, as `Task`s.

    tasks = load_dataset("chartqa", "/data/ChartQA Dataset", "test", limit=100)
    register_family(dataset_family("mathvista", "/data/MathVista/data"))   # family "mathvista"
    env = VistaEnv(client, family="mathvista", split="test")               # testmini, in order

Nothing is downloaded: point `root` at the unpacked release. Each module's docstring gives
the layout it reads and where that layout was checked: `chartqa`, `geometry3k`, `mathvista`,
`figureqa`, `plotqa`. Dataset tasks have no reference plan (`reference_plan=()`, so no expert
trajectories) and difficulty 0; `source` is the dataset name; task ids are
`"<dataset>/<released split>/<record id>"`. Loading rules (errors, skipped images, seeds) are
in `vista_jax.env.datasets.base`. Families are not registered at import: the caller does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vista_jax.env.datasets import chartqa, figureqa, geometry3k, mathvista, plotqa
from vista_jax.env.datasets.base import (CorruptImageError, Dataset, DatasetFamily,
                                         DatasetFormatError, Skipped, SkippedRecordsWarning,
                                         TaskList, load_tasks)

DATASETS: dict[str, Dataset] = {d.name: d for d in (
    chartqa.DATASET, geometry3k.DATASET, mathvista.DATASET, figureqa.DATASET, plotqa.DATASET)}


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; one of {sorted(DATASETS)}")
    return DATASETS[name]


def load_dataset(name: str, root: str | Path, split: str, *, limit: int | None = None,
                 **options: Any) -> TaskList:
    """The tasks of released split `split` of dataset `name` under `root`, in file order,
    images loaded as PIL RGB; at most `limit`. `options` go to the dataset's reader (e.g.
    `subsets=("human",)` for ChartQA, `qa_file=` for PlotQA, `annotation=` for MathVista).
    Records left out (unreadable images, unverifiable answers) are in the result's `.skipped`
    and announced by one `SkippedRecordsWarning`."""
    return load_tasks(get_dataset(name), root, split, limit=limit, **options)


def dataset_family(name: str, root: str | Path, *, family_name: str | None = None,
                   gym_name: str | None = None, splits: Mapping[str, str] | None = None,
                   **options: Any) -> DatasetFamily:
    """A `TaskFamily` serving dataset `name` under `root`: task `i` of env split `s` is record
    `i` of released split `splits[s]` (default: the dataset's own mapping, e.g. MathVista's
    test -> testmini, FigureQA's train/val/test -> train1/validation1/validation2). Name
    defaults to the dataset's; `gym_name` to "<Title>-Local", the gymnasium id
    `VistaGym/<Title>-Local-v0` that `vista_jax.env.registration` serves datasets under."""
    dataset = get_dataset(name)
    family_name = family_name or dataset.name
    gym_name = gym_name or f"{dataset.title}-Local"
    return DatasetFamily(dataset, root, name=family_name, gym_name=gym_name,
                         splits=dataset.family_splits if splits is None else splits,
                         options=options)


__all__ = [
    "DATASETS", "CorruptImageError", "Dataset", "DatasetFamily", "DatasetFormatError",
    "Skipped", "SkippedRecordsWarning", "TaskList", "dataset_family", "get_dataset",
    "load_dataset",
]
