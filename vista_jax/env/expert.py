"""Expert trajectories: a task's reference plan played through the env against the real
tool server, so that expert and policy see identical observations.

Each plan step becomes an assistant turn `<think>…</think><tool_call>…</tool_call>`; its
arguments and think are filled from the results the tools actually returned (see
`tasks.base`), and the final answer too, so an expert trajectory is only as right as the
tools' outputs. As in the paper, the dataset keeps the trajectories whose answer verifies.

Storage: `write_expert_dataset` writes the records as JSONL with the images as PNG files
beside it (`trajectory_log` format) plus `<stem>.stats.json`; `ExpertDataSource` reads them
back with random access, as a grain data source:

    source = ExpertDataSource("data/expert/train.jsonl")
    ds = grain.MapDataset.source(source).shuffle(seed=0).map(to_row)

`vista-expert` (cli.py) generates and writes a dataset from the command line.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Sequence
from typing import Any

from PIL import Image

from vista_jax import protocol
from vista_jax.env.env import VectorVistaEnv, VistaEnv
from vista_jax.env.mixture import TaskMixture, as_mixture
from vista_jax.env.tasks.base import Task, fill_template, get_family
from vista_jax.env.trajectory_log import IMAGE_KEY, TrajectoryWriter


class ExpertScript:
    """Writes the expert's turns for one task, one at a time, from the results so far."""

    def __init__(self, task: Task, *, direct: bool = False):
        self.task = task
        self.direct = direct  # answer at once, no tool calls (the "no tools" expert)
        self.family = get_family(task.family)
        self.results: list[dict[str, Any]] = []
        self.error: str | None = None  # why the plan could not continue

    def next_turn(self) -> str | None:
        """The next assistant turn, or None when a result the plan needs is missing (e.g. a
        tool failed); `error` then says why."""
        if self.direct:  # the gold answer as text, as a policy without tools must give it
            return protocol.render_assistant_turn(None, answer=self.task.answer)
        try:
            bindings = self.family.bindings(self.task, self.results)
            if len(self.results) < len(self.task.reference_plan):
                step = self.task.reference_plan[len(self.results)]
                call = protocol.ToolCall(step.tool, fill_template(step.arguments, bindings))
                return protocol.render_assistant_turn(fill_template(step.think, bindings),
                                                      tool_call=call)
            return protocol.render_assistant_turn(
                fill_template(self.task.final_think, bindings),
                answer=fill_template(self.task.answer_template, bindings))
        except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
            failed = next((r for r in self.results if not r.get("ok")), None)
            self.error = (f"tool_error:{failed['error'].get('code')}" if failed
                          else f"unreadable_result:{type(e).__name__}")
            return None

    def observe(self, info: dict[str, Any]) -> None:
        self.results.append(info["tool_result"] or {})


def _env_kwargs(task_family: str, split: str, plan_len: int, env_kwargs: dict | None) -> dict:
    kw = dict(env_kwargs or {})
    kw.update(family=task_family, split=split)
    # the expert must be able to finish its plan whatever the policy's turn limit
    kw["max_turns"] = max(kw.get("max_turns", 4), plan_len + 1)
    return kw


def _outcome(env: VistaEnv, script: ExpertScript) -> dict[str, Any]:
    traj = env.trajectory()
    return {"verified": bool(traj["correct"]), "answer": traj["answer"],
            "reward": traj["reward"], "reward_components": traj["reward_components"],
            "error": script.error, "task_id": env.task.task_id,
            "question_type": env.task.meta.get("question_type"), "family": env.task.family,
            "difficulty": env.task.difficulty}


def expert_messages(task: Task, client, *, env: VistaEnv | None = None,
                    env_kwargs: dict | None = None) -> tuple[list[dict], dict[str, Any]]:
    """Plays `task`'s reference plan through a VistaEnv on `client` (a SyncToolClient, or an
    async ToolClient outside an event loop). Returns the full message list (system, user,
    assistant, tool, …, assistant answer; images as PIL) and an info dict whose `verified`
    says whether the final answer checks out."""
    env = env or VistaEnv(client, **_env_kwargs(task.family, task.split,
                                                len(task.reference_plan), env_kwargs))
    env.reset(options={"task": task})
    script = ExpertScript(task)
    while not env.done:
        text = script.next_turn()
        if text is None:
            env.truncate()
            break
        _, _, _, _, info = env.step(text)
        if info["parsed"].kind == "tool_call":
            script.observe(info)
    return list(env.messages), _outcome(env, script)


def run_expert_batch(vec_env: VectorVistaEnv, tasks: Sequence[Task], *, direct: bool = False):
    """Plays the reference plans of `tasks` (one per env) in lock step, one batched tool
    request per turn (`direct`: answers at once, no tools). Returns [(messages, info)] in
    task order."""
    vec_env.reset(tasks=list(tasks))
    scripts = [ExpertScript(t, direct=direct) for t in tasks]
    while not all(env.done for env in vec_env.envs):
        actions: list[str | None] = []
        for env, script in zip(vec_env.envs, scripts):
            text = None if env.done else script.next_turn()
            if text is None and not env.done:
                env.truncate()
            actions.append(text)
        for script, action, res in zip(scripts, actions, vec_env.step(actions)):
            if action is not None and res[4]["parsed"].kind == "tool_call":
                script.observe(res[4])
    return [(list(env.messages), _outcome(env, script))
            for env, script in zip(vec_env.envs, scripts)]


def _rate(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def expert_records(tasks: Sequence[Task], client, filter_correct: bool = True, *,
                   env_kwargs: dict | None = None, batch_size: int = 32, direct: bool = False
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Expert trajectories for `tasks`, `batch_size` episodes at a time. Returns (records,
    stats): a record is {task_id, family, difficulty, question_type, messages (PIL images
    kept in memory), verified, answer, reward}; with `filter_correct` only verified ones
    are kept. `direct`: the expert answers at once with the gold answer and calls no tool
    (trajectories for a policy trained without tools). stats: n, verified, pass_rate, kept, failures (reason -> count) and pass
    rates by family, by "family/question_type" and by "family/difficulty"."""
    tasks = list(tasks)
    plan_len = max((len(t.reference_plan) for t in tasks), default=0)
    fams = sorted({t.family for t in tasks})
    kw = _env_kwargs(",".join(fams) or "chart_qa", tasks[0].split if tasks else "train",
                     plan_len, env_kwargs)
    envs: dict[int, VectorVistaEnv] = {}
    outcomes = []
    for start in range(0, len(tasks), batch_size):
        chunk = tasks[start:start + batch_size]
        if len(chunk) not in envs:
            envs[len(chunk)] = VectorVistaEnv(client, len(chunk), **kw)
        outcomes.extend(run_expert_batch(envs[len(chunk)], chunk, direct=direct))
    records, failures = [], collections.Counter()
    groups: dict[str, dict[str, list[bool]]] = {
        "family": collections.defaultdict(list), "type": collections.defaultdict(list),
        "difficulty": collections.defaultdict(list)}
    for messages, info in outcomes:
        ok = info["verified"]
        groups["family"][info["family"]].append(ok)
        groups["type"][f"{info['family']}/{info['question_type']}"].append(ok)
        groups["difficulty"][f"{info['family']}/{info['difficulty']}"].append(ok)
        if not ok:
            failures[info["error"] or "wrong_answer"] += 1
        if ok or not filter_correct:
            records.append({"task_id": info["task_id"], "family": info["family"],
                            "difficulty": info["difficulty"],
                            "question_type": info["question_type"], "messages": messages,
                            "verified": ok, "answer": info["answer"], "reward": info["reward"]})
    verified = sum(info["verified"] for _, info in outcomes)
    n = len(tasks)
    stats = {"n": n, "verified": verified, "pass_rate": verified / n if n else 0.0,
             "kept": len(records), "failures": dict(failures),
             "pass_rate_by_family": {k: _rate(v) for k, v in sorted(groups["family"].items())},
             "pass_rate_by_type": {k: _rate(v) for k, v in sorted(groups["type"].items())},
             "pass_rate_by_difficulty": {k: _rate(v)
                                         for k, v in sorted(groups["difficulty"].items())}}
    if len(fams) == 1:  # single family: also by bare question type, as before
        stats["pass_rate_by_type"] = {k.split("/", 1)[1]: v
                                      for k, v in stats["pass_rate_by_type"].items()}
    return records, stats


def generate_expert_dataset(family: str | TaskMixture, split: str, n: int, client,
                            filter_correct: bool = True, *, seed_offset: int = 0,
                            env_kwargs: dict | None = None, batch_size: int = 32,
                            difficulty: int | None = None
                            ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Expert trajectories for tasks `seed_offset ..+n` of `split` of `family` (a family
    name, a mixture spec such as "chart_qa:2,geometry:1" or "all", or a TaskMixture);
    see `expert_records` for what comes back."""
    tasks = as_mixture(family, split, difficulty).tasks(n, start=seed_offset, split=split)
    return expert_records(tasks, client, filter_correct, env_kwargs=env_kwargs,
                          batch_size=batch_size)


# --- storage ---------------------------------------------------------------------------------

def write_expert_dataset(records: Sequence[dict[str, Any]], path: str | os.PathLike,
                         stats: dict[str, Any] | None = None) -> str:
    """Writes `records` (from `expert_records`) to the JSONL file `path` (replacing it), the
    images to `<stem>_images/` and `stats` to `<stem>.stats.json`. Returns the path."""
    path = os.fspath(path)
    if os.path.exists(path):
        os.remove(path)
    with TrajectoryWriter(path) as w:
        for r in records:
            w.write(r)
    if stats is not None:
        with open(os.path.splitext(path)[0] + ".stats.json", "w", encoding="utf-8") as f:
            json.dump(stats, f, indent=1, sort_keys=True)
    return path


class ExpertDataSource:
    """Random access to a written expert dataset (grain's `RandomAccessDataSource`
    protocol: `__len__`, `__getitem__`). Items are records with PIL images, or image paths
    with `load_images=False`. Holds only the path and line offsets, so it pickles cheaply
    into grain worker processes."""

    def __init__(self, path: str | os.PathLike, *, load_images: bool = True):
        self.path = os.path.abspath(os.fspath(path))
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"no expert dataset at {self.path}")
        self.root = os.path.dirname(self.path)
        self.load_images = load_images
        self.offsets: list[int] = []
        with open(self.path, "rb") as f:
            pos = 0
            for line in f:
                if line.strip():
                    self.offsets.append(pos)
                pos += len(line)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"record {index} of {len(self)} in {self.path}")
        with open(self.path, "rb") as f:
            f.seek(self.offsets[index])
            line = f.readline()
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.path}: record {index} is not valid JSON ({e})") from None
        return self._decode(record)

    def _decode(self, value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {IMAGE_KEY}:
                full = os.path.join(self.root, value[IMAGE_KEY])
                if not self.load_images:
                    return full
                with Image.open(full) as im:
                    return im.convert("RGB") if im.mode not in ("RGB", "L", "RGBA") else im.copy()
            return {k: self._decode(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._decode(v) for v in value]
        return value

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"ExpertDataSource({self.path!r}, {len(self)} records)"
