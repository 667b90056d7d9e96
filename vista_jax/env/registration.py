"""Gymnasium ids for VISTA-Gym, registered when `vista_jax.env` is imported.

    import gymnasium, vista_jax.env
    env = gymnasium.make("VistaGym/Geometry-v0", difficulty=2)
    env = gymnasium.make("VistaGym/Mixture-v0", family="chart_qa:2,counting:1")
    env = gymnasium.make("VistaGym/ChartQA-Local-v0", data_root="/data/ChartQA", split="test")

(`gymnasium.make("vista_jax.env:VistaGym/ChartQA-v0")` imports the package itself.)
Procedural ids take every `VistaEnv` keyword (split, difficulty, budgets, tools, tool_url,
tool_client, ...); without a client or URL the env uses the shared in-process tool service.
Dataset ids (`-Local-`) read a public dataset in its released layout from `data_root`
(`vista_jax.env.datasets`); those tasks have no reference plan, so they serve evaluation
and RL, not expert SFT data.
"""

from __future__ import annotations

from typing import Any

import gymnasium

NAMESPACE = "VistaGym"
# family registry name -> gymnasium name (each family's `gym_name`; a test keeps them equal)
PROCEDURAL = {
    "chart_qa": "ChartQA",
    "geometry": "Geometry",
    "table_reading": "TableReading",
    "counting": "Counting",
    "ocr_text": "OCR",
    "math_word": "MathWord",
    "multi_step": "MultiStep",
}
# dataset adapter name -> gymnasium name
DATASETS = {
    "chartqa": "ChartQA-Local",
    "geometry3k": "Geometry3K-Local",
    "mathvista": "MathVista-Local",
    "figureqa": "FigureQA-Local",
    "plotqa": "PlotQA-Local",
}


def env_id(gym_name: str) -> str:
    return f"{NAMESPACE}/{gym_name}-v0"


def make_dataset_env(dataset: str, data_root: str, **kwargs: Any):
    """A VistaEnv over a public dataset read from `data_root` (registered once per root)."""
    from vista_jax.env.datasets import dataset_family
    from vista_jax.env.env import VistaEnv
    from vista_jax.env.tasks.base import _FAMILIES, register_family

    name = f"{dataset}@{data_root}"
    if name not in _FAMILIES:
        register_family(dataset_family(dataset, data_root, family_name=name))
    return VistaEnv(family=name, **kwargs)


def register_envs() -> None:
    """Registers every id (idempotent)."""
    registered = set(gymnasium.registry)
    for family, gym_name in PROCEDURAL.items():
        if env_id(gym_name) not in registered:
            gymnasium.register(env_id(gym_name), entry_point="vista_jax.env.env:VistaEnv",
                               kwargs={"family": family})
    if env_id("Mixture") not in registered:
        gymnasium.register(env_id("Mixture"), entry_point="vista_jax.env.env:VistaEnv",
                           kwargs={"family": "all"})
    for dataset, gym_name in DATASETS.items():
        if env_id(gym_name) not in registered:
            gymnasium.register(env_id(gym_name),
                               entry_point="vista_jax.env.registration:make_dataset_env",
                               kwargs={"dataset": dataset})
