"""Task mixtures: which family each task of a stream comes from, with weights per family.

    mix = TaskMixture.parse("chart_qa:2,geometry:1", split="train")
    mix.task(0), mix.tasks(64, start=128)

Task `i` of a mixture is task `i` of the family that `i`'s own RNG draws by weight
(`random.Random(f"mixture/{seed}/{i}")`), so a stream is deterministic, any task of it can
be made alone (no state to replay), two indices never give the same task, and a mixture of
one family is exactly that family's task stream (`make_task(family, split, i)`). Train,
val and test stay disjoint because each family's splits draw from disjoint seed ranges.

Used for multi-task vs single-task experiments: `env.mixture` in the configs.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from vista_jax.env.tasks.base import Task, check_difficulty, families, get_family, make_task

ALL = "all"  # a mixture spec naming every built-in family with weight 1


class TaskMixture:
    def __init__(self, weights: Mapping[str, float], split: str = "train",
                 difficulty: int | None = None, seed: int = 0):
        if not weights:
            raise ValueError("a task mixture needs at least one family")
        for name, w in weights.items():
            get_family(name)  # KeyError naming the unknown family and the registered ones
            if not (isinstance(w, (int, float)) and w >= 0):
                raise ValueError(f"mixture weight of {name!r} must be a number ≥ 0, got {w!r}")
        if sum(weights.values()) <= 0:
            raise ValueError(f"mixture weights {dict(weights)} sum to 0")
        check_difficulty(difficulty)
        self.weights = {k: float(v) for k, v in weights.items() if v > 0}
        self.names = list(self.weights)
        self.split, self.difficulty, self.seed = split, difficulty, seed

    @classmethod
    def parse(cls, spec: str, split: str = "train", difficulty: int | None = None,
              seed: int = 0) -> TaskMixture:
        """"chart_qa" | "chart_qa:2,geometry:1" | "all" (every built-in family, weight 1)."""
        spec = (spec or "").strip()
        if spec == ALL:
            return cls({name: 1.0 for name in families()}, split, difficulty, seed)
        weights: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, _, w = part.partition(":")
            name = name.strip()
            if name in weights:
                raise ValueError(f"family {name!r} appears twice in {spec!r}")
            try:
                weights[name] = float(w) if w.strip() else 1.0
            except ValueError:
                raise ValueError(f"bad mixture weight {w!r} for {name!r} in {spec!r} "
                                 "(expected family[:weight],...)") from None
        if not weights:
            raise ValueError(f"empty task mixture {spec!r}; expected family[:weight],... or 'all'")
        return cls(weights, split, difficulty, seed)

    def family_of(self, index: int) -> str:
        if len(self.names) == 1:
            return self.names[0]
        rng = random.Random(f"mixture/{self.seed}/{index}")
        return rng.choices(self.names, [self.weights[n] for n in self.names])[0]

    def task(self, index: int, split: str | None = None) -> Task:
        return make_task(self.family_of(index), split or self.split, index, self.difficulty)

    def tasks(self, n: int, start: int = 0, split: str | None = None) -> list[Task]:
        return [self.task(start + i, split) for i in range(n)]

    def tools(self) -> list[str]:
        """Every tool the mixture's reference plans call, in first-use order."""
        out: list[str] = []
        for name in self.names:
            for tool in getattr(get_family(name), "tools", ()):
                if tool not in out:
                    out.append(tool)
        return out

    def __repr__(self) -> str:
        spec = ",".join(f"{k}:{v:g}" for k, v in self.weights.items())
        return f"TaskMixture({spec!r}, split={self.split!r}, difficulty={self.difficulty})"


def as_mixture(family: str | TaskMixture | Sequence[str], split: str,
               difficulty: int | None = None) -> TaskMixture:
    """A mixture from a spec string, a family list, or a mixture (returned as is)."""
    if isinstance(family, TaskMixture):
        return family
    if isinstance(family, str):
        return TaskMixture.parse(family, split, difficulty)
    return TaskMixture({name: 1.0 for name in family}, split, difficulty)
