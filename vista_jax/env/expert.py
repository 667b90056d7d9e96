"""Expert trajectories: a task's reference plan played through the env against the real
tool server, so that expert and policy see identical observations.

Each plan step becomes an assistant turn `<think>…</think><tool_call>…</tool_call>`; its
arguments and think are filled from the results the tools actually returned (see
`tasks.base`), and the final answer too, so an expert trajectory is only as right as the
tools' outputs. As in the paper, the dataset keeps the trajectories whose answer verifies.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

from vista_jax import protocol
from vista_jax.env.env import VectorVistaEnv, VistaEnv
from vista_jax.env.tasks.base import Task, fill_template, get_family, make_tasks


class ExpertScript:
    """Writes the expert's turns for one task, one at a time, from the results so far."""

    def __init__(self, task: Task):
        self.task = task
        self.family = get_family(task.family)
        self.results: list[dict[str, Any]] = []
        self.error: str | None = None  # why the plan could not continue

    def next_turn(self) -> str | None:
        """The next assistant turn, or None when a result the plan needs is missing (e.g. a
        tool failed); `error` then says why."""
        bindings = self.family.bindings(self.task, self.results)
        try:
            if len(self.results) < len(self.task.reference_plan):
                step = self.task.reference_plan[len(self.results)]
                call = protocol.ToolCall(step.tool, fill_template(step.arguments, bindings))
                return protocol.render_assistant_turn(fill_template(step.think, bindings),
                                                      tool_call=call)
            return protocol.render_assistant_turn(
                fill_template(self.task.final_think, bindings),
                answer=fill_template(self.task.answer_template, bindings))
        except (KeyError, IndexError, ValueError) as e:
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
            "question_type": env.task.meta.get("question_type")}


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


def run_expert_batch(vec_env: VectorVistaEnv, tasks: Sequence[Task]):
    """Plays the reference plans of `tasks` (one per env) in lock step, one batched tool
    request per turn. Returns [(messages, info)] in task order."""
    vec_env.reset(tasks=list(tasks))
    scripts = [ExpertScript(t) for t in tasks]
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


def generate_expert_dataset(family: str, split: str, n: int, client, filter_correct: bool = True,
                            *, seed_offset: int = 0, env_kwargs: dict | None = None,
                            batch_size: int = 32, difficulty: int | None = None
                            ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Expert trajectories for tasks `seed_offset ..+n` of `split`, `batch_size` episodes at a
    time. Returns (records, stats): a record is {task_id, question_type, messages (PIL
    images kept in memory), verified, answer, reward}; with `filter_correct` only verified
    ones are kept. stats: n, verified, pass_rate, kept, failures (reason -> count) and
    pass_rate per question type."""
    tasks = make_tasks(family, split, n, seed_offset=seed_offset, difficulty=difficulty)
    plan_len = max((len(t.reference_plan) for t in tasks), default=0)
    kw = _env_kwargs(family, split, plan_len, env_kwargs)
    envs: dict[int, VectorVistaEnv] = {}
    outcomes = []
    for start in range(0, n, batch_size):
        chunk = tasks[start:start + batch_size]
        if len(chunk) not in envs:
            envs[len(chunk)] = VectorVistaEnv(client, len(chunk), **kw)
        vec = envs[len(chunk)]
        outcomes.extend(run_expert_batch(vec, chunk))
    records, failures = [], collections.Counter()
    by_type = collections.defaultdict(list)
    for messages, info in outcomes:
        by_type[info["question_type"]].append(info["verified"])
        if not info["verified"]:
            failures[info["error"] or "wrong_answer"] += 1
        if info["verified"] or not filter_correct:
            records.append({"task_id": info["task_id"], "question_type": info["question_type"],
                            "messages": messages, "verified": info["verified"],
                            "answer": info["answer"], "reward": info["reward"]})
    verified = sum(info["verified"] for _, info in outcomes)
    stats = {"n": n, "verified": verified, "pass_rate": verified / n if n else 0.0,
             "kept": len(records), "failures": dict(failures),
             "pass_rate_by_type": {k: sum(v) / len(v) for k, v in sorted(by_type.items())}}
    return records, stats
