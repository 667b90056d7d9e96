"""VistaEnv: one tool-integrated visual reasoning episode, with Gymnasium's signatures.

    obs, info = env.reset(seed=3)            # obs = {"messages": [system, user]}
    obs, reward, terminated, truncated, info = env.step("<think>…</think><tool_call>…</tool_call>")

A message is `{"role": "system"|"user"|"assistant"|"tool", "content": str, "images": [PIL]}`;
the chat template renders a message's images right after its role header. Images are named
by episode-local handles (`img_0` for the task image, then one per image a tool returns);
the env maps handles to the tool server's content-addressed ids and back, so the policy
never sees a server id.

`VectorVistaEnv` steps N episodes in lock step: all tool calls of one `step` go out as ONE
`/v1/batch` request, and the uploads of one `reset` are deduplicated and sent concurrently.

`VistaEnv` is a `gymnasium.Env` (`check_env` passes; ids `VistaGym/<Family>-v0` are
registered by `vista_jax.env`, e.g. `gymnasium.make("VistaGym/Geometry-v0")`). Its spaces
are permissive: actions are any text (`TextSpace`), observations are message lists
(`MessagesSpace`). Without a client it uses one shared in-process tool service
(`tools_server.inprocess.InProcessToolClient`); pass `tool_url` for a server.

Budgets (`env.budget.Budgets`): prompt, per-turn, per-observation and per-trajectory
tokens and max turns, counted by a `TokenCounter` (the policy's tokenizer in training).

Both classes work with the async `ToolClient` (`areset` / `astep`), the blocking
`SyncToolClient` and `InProcessToolClient` (`reset` / `step`). The episode logic is written once, as generators that
yield I/O requests (`_Request`); `_drive` and `_adrive` perform them with either client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import inspect
import json
import re
import time
from collections.abc import Generator, Sequence
from typing import Any

import atexit
import string
import threading

import gymnasium
from PIL import Image

from vista_jax import protocol
from vista_jax.env.budget import (ApproxTokenCounter, Budgets, PromptTooLong, TokenCounter,
                                  truncate_response)
from vista_jax.env.mixture import TaskMixture, as_mixture
from vista_jax.env.rewards import RewardConfig, reward_details
from vista_jax.env.tasks.base import Task

Message = dict[str, Any]

# Short on purpose: the system prompt is part of every training sequence of a tiny policy.
PROTOCOL_LINES = (
    'Reply <think>...</think> then <tool_call>{"name": ..., "arguments": {...}}</tool_call> '
    "or <answer>...</answer>.",
    "Images: img_0, img_1, ...",
)


# --- spaces --------------------------------------------------------------------------------

ROLES = ("system", "user", "assistant", "tool")


class TextSpace(gymnasium.Space):
    """Any string of at most `max_length` characters (an assistant turn). `sample` draws
    printable text, now and then wrapped in protocol tags, so random actions exercise the
    parser's error paths as well as the tool path."""

    def __init__(self, max_length: int = 4096, seed: int | None = None):
        super().__init__(shape=None, dtype=None, seed=seed)
        self.max_length = max_length

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        rng = self.np_random
        chars = string.ascii_letters + string.digits + " .,:{}\"[]"
        body = "".join(rng.choice(list(chars), size=int(rng.integers(0, 40))))
        kind = int(rng.integers(0, 4))
        text = [body, f"<think>{body}</think><answer>{body}</answer>",
                f'<tool_call>{{"name": "{body}", "arguments": {{}}}}</tool_call>',
                f"<tool_call>{body}</tool_call>"][kind]
        return text[:self.max_length]

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"TextSpace(max_length={self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, TextSpace) and other.max_length == self.max_length


class MessagesSpace(gymnasium.Space):
    """`{"messages": [{"role", "content": str, "images": [PIL.Image]}, ...]}`: what `reset`
    (system + user) and `step` (the tool/error messages of one turn, possibly none) return."""

    def __init__(self, seed: int | None = None):
        super().__init__(shape=None, dtype=None, seed=seed)

    def contains(self, x: Any) -> bool:
        if not isinstance(x, dict) or set(x) != {"messages"} or not isinstance(x["messages"], list):
            return False
        return all(isinstance(m, dict) and m.get("role") in ROLES
                   and isinstance(m.get("content"), str)
                   and isinstance(m.get("images", []), list)
                   and all(isinstance(im, Image.Image) for im in m.get("images", []))
                   for m in x["messages"])

    def sample(self, mask: Any = None, probability: Any = None) -> dict[str, Any]:
        n = int(self.np_random.integers(0, 3))
        return {"messages": [{"role": "tool", "images": [],
                              "content": protocol.render_tool_response({"ok": True, "text": str(i)})}
                             for i in range(n)]}

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "MessagesSpace()"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, MessagesSpace)


_shared_client = None
_shared_lock = threading.Lock()


def shared_inprocess_client():
    """One in-process tool service for every env created without a client (closed at exit)."""
    global _shared_client
    with _shared_lock:
        if _shared_client is None:
            from tools_server.inprocess import InProcessToolClient
            _shared_client = InProcessToolClient()
            atexit.register(_shared_client.close)
        return _shared_client


def resolve_client(tool_client, tool_url: str | None):
    """`tool_client` if given, else a SyncToolClient on `tool_url`, else the shared
    in-process service. Returns (client, whether this env owns and must close it)."""
    if tool_client is not None:
        if tool_url:
            raise ValueError("pass tool_client or tool_url, not both")
        return tool_client, False
    if tool_url:
        from vista_jax.env.tool_client import SyncToolClient
        return SyncToolClient(tool_url), True
    return shared_inprocess_client(), False


# --- system prompt -------------------------------------------------------------------------

def first_clause(text: str) -> str:
    """The description's first sentence without parentheses, cut at its first ', ' or '; '
    ("Reads a bar chart and returns its table, one line per bar." -> "Reads a bar chart and
    returns its table.")."""
    text = " ".join((text or "").split())
    if not text:
        return ""
    m = re.match(r"(.+?[.!?])(\s|$)", text)
    sentence = (m.group(1) if m else text).rstrip(".!?")
    sentence = re.sub(r"\s*\([^)]*\)", "", sentence)
    return re.split(r"[,;]\s", sentence, maxsplit=1)[0] + "."


def _arg_type(schema: dict[str, Any]) -> str:
    t = schema.get("type")
    if t == "array":
        return f"{_arg_type(schema.get('items', {}))}[]"
    if isinstance(t, list):
        return "|".join(t)
    return t or "any"


def compact_tool_line(tool: dict[str, Any]) -> str:
    """`name(arg: type, opt?: type): first clause of the description`."""
    fn = tool["function"]
    params = fn.get("parameters") or {}
    required = set(params.get("required", ()))
    args = ", ".join(f"{name}{'' if name in required else '?'}: {_arg_type(spec)}"
                     for name, spec in (params.get("properties") or {}).items())
    summary = first_clause(fn.get("description", ""))
    return f"{fn['name']}({args})" + (f": {summary}" if summary else "")


NO_TOOLS = "none"  # as the whole tool list: no tools shown or callable (answer directly)


def system_prompt(tools: Sequence[dict[str, Any]], style: str = "compact") -> str:
    """The system message listing `tools` (OpenAI function shape), then the protocol in two
    lines. "minimal": one line of tool signatures, no protocol text (the protocol is learnt
    from expert trajectories; shortest sequences). "compact": one line per tool (`compact_tool_line`), for tiny policies; "full": the
    JSON schemas, as a real VLM's prompt would have."""
    if not tools:  # NO_TOOLS: the policy answers from the image alone
        if style == "minimal":
            return "No tools."
        return "No tools.\nReply <think>...</think> then <answer>...</answer>."
    if style == "minimal":  # tool signatures only: a tiny policy learns the protocol from SFT
        return "Tools: " + ", ".join(
            f"{t['function']['name']}({', '.join((t['function'].get('parameters') or {}).get('properties') or {})})"
            for t in tools) + "."
    if style == "compact":
        lines = ["Tools:"] + [compact_tool_line(t) for t in tools]
    elif style == "full":
        schemas = [{"type": "function", "function": t["function"]} for t in tools]
        lines = ["You can call these tools:", json.dumps(schemas, indent=1)]
    else:
        raise ValueError(f"system_prompt_style must be 'minimal', 'compact' or 'full', not {style!r}")
    return "\n".join(lines + list(PROTOCOL_LINES))


def select_tools(all_tools: Sequence[dict[str, Any]],
                 names: Sequence[str] | None) -> list[dict[str, Any]]:
    """The tools named in `names`, in that order (all of them when `names` is empty/None;
    none for `[NO_TOOLS]`)."""
    if not names:
        return list(all_tools)
    if list(names) == [NO_TOOLS]:
        return []
    by_name = {t["function"]["name"]: t for t in all_tools}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"tools {missing} are not served; the server has {sorted(by_name)}")
    return [by_name[n] for n in names]


# --- I/O: requests the episode logic yields, and the two ways to perform them --------------

@dataclasses.dataclass(frozen=True)
class _Request:
    kind: str  # "batch" (tool calls) | "upload" (PIL images) | "get_images" (server ids)
    items: list[Any]


def _is_async(client) -> bool:
    return inspect.iscoroutinefunction(getattr(client, "batch", None))


def _fetch_sync(client, image_id: str) -> Image.Image | None:
    try:
        return client.get_image(image_id)
    except Exception:  # noqa: BLE001 - an unfetchable output image becomes an error result
        return None


async def _fetch_async(client, image_id: str) -> Image.Image | None:
    try:
        return await client.get_image(image_id)
    except Exception:  # noqa: BLE001
        return None


def _perform(client, req: _Request) -> list[Any]:
    if req.kind == "batch":
        return list(client.batch([tuple(c) for c in req.items])) if req.items else []
    fn = client.upload_image if req.kind == "upload" else functools.partial(_fetch_sync, client)
    if len(req.items) <= 1:
        return [fn(x) for x in req.items]
    # SyncToolClient is thread-safe (it submits to its own loop): threads make these concurrent.
    with concurrent.futures.ThreadPoolExecutor(min(len(req.items), 16)) as pool:
        return list(pool.map(fn, req.items))


async def _aperform(client, req: _Request) -> list[Any]:
    if not _is_async(client):  # a blocking client inside an event loop: keep the loop free
        return await asyncio.to_thread(_perform, client, req)
    if req.kind == "batch":
        return list(await client.batch([tuple(c) for c in req.items])) if req.items else []
    if req.kind == "upload":
        return list(await asyncio.gather(*(client.upload_image(b) for b in req.items)))
    return list(await asyncio.gather(*(_fetch_async(client, i) for i in req.items)))


async def _adrive(gen: Generator, client) -> Any:
    try:
        req = next(gen)
        while True:
            req = gen.send(await _aperform(client, req))
    except StopIteration as stop:
        return stop.value


def _blocking(client, coro) -> Any:
    """Runs `coro`, which uses the async `client`, to completion in a throwaway event loop,
    closing the client's session (bound to that loop) before the loop goes away."""
    async def run():
        try:
            return await coro
        finally:
            if hasattr(client, "aclose"):
                await client.aclose()
    return _run_coroutine(run())


def _drive(gen: Generator, client) -> Any:
    """Runs an episode generator to completion with blocking I/O."""
    if _is_async(client):
        return _blocking(client, _adrive(gen, client))
    try:
        req = next(gen)
        while True:
            req = gen.send(_perform(client, req))
    except StopIteration as stop:
        return stop.value


def _run_coroutine(coro):
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # called from inside a loop
        return pool.submit(asyncio.run, coro).result()


def _list_tools(client) -> list[dict[str, Any]]:
    if _is_async(client):
        return _blocking(client, client.list_tools())
    return list(client.list_tools())


# --- one episode ---------------------------------------------------------------------------

@dataclasses.dataclass
class _Turn:
    """What `_begin_turn` decided; `call` is the (name, server arguments) to send, if any."""

    text: str
    parsed: protocol.ParsedTurn
    call: tuple[str, dict[str, Any]] | None = None
    result: dict[str, Any] | None = None  # set without a call for locally rejected calls
    action_truncated: bool = False  # the action was cut to the turn budget


def _unknown_tool_result(name: str, available: Sequence[str]) -> dict[str, Any]:
    return {"ok": False, "error": {"code": "unknown_tool",
                                   "message": f"no tool {name!r}; tools: {', '.join(available)}"}}


def taxonomy_hint(parsed: protocol.ParsedTurn, result: dict[str, Any] | None) -> str | None:
    """E1 for an unparseable turn, E2/E3 for a tool error that is the policy's fault,
    "service" for one that is the server's, None otherwise."""
    if parsed.kind == "invalid":
        return "E1"
    if result is None or result.get("ok"):
        return None
    code = (result.get("error") or {}).get("code", "")
    if code in protocol.SERVICE_TOOL_ERRORS:
        return "service"
    return protocol.taxonomy_for_tool_error(code)


class VistaEnv(gymnasium.Env):
    """One episode at a time: a task, its images on the tool server, the turn loop and the
    terminal reward. See the module docstring for the observation format."""

    metadata = {"render_modes": ["ansi", "html"], "render_fps": 1}

    def __init__(self, tool_client=None, *, family: str | TaskMixture = "chart_qa",
                 split: str = "train", difficulty: int | None = None,
                 max_turns: int | None = None, budgets: Budgets | None = None,
                 token_counter: TokenCounter | None = None,
                 reward_config: RewardConfig = RewardConfig(),
                 system_prompt_style: str = "compact", tools: Sequence[str] | None = None,
                 tool_specs: Sequence[dict[str, Any]] | None = None,
                 tool_url: str | None = None, render_mode: str | None = None):
        """`family`: a family name, a mixture spec ("chart_qa:2,geometry:1", "all") or a
        `TaskMixture`; `difficulty` fixes the level (None: drawn per seed). `budgets`: token
        budgets (`max_turns`, when given, replaces budgets.max_turns). `tools`: names of the
        tools shown to (and callable by) the policy, None or empty for all the server has.
        `tool_specs`: the server's `/v1/tools` list, when the caller already has it (the
        vector env fetches it once for all its envs). No `tool_client` and no `tool_url`:
        the shared in-process tool service."""
        budgets = budgets or Budgets()
        if max_turns is not None:
            if max_turns < 1:
                raise ValueError(f"max_turns must be ≥ 1, got {max_turns}")
            budgets = dataclasses.replace(budgets, max_turns=max_turns)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, "
                             f"not {render_mode!r}")
        self.client, self._owns_client = resolve_client(tool_client, tool_url)
        self.mixture = as_mixture(family, split, difficulty)
        self.family, self.split = family if isinstance(family, str) else repr(family), split
        self.budgets, self.max_turns = budgets, budgets.max_turns
        self.counter = token_counter or ApproxTokenCounter()
        self.reward_config = reward_config
        self.render_mode = render_mode
        self.tools = select_tools(tool_specs if tool_specs is not None
                                  else _list_tools(self.client), tools)
        self.tool_names = [t["function"]["name"] for t in self.tools]
        self.system_prompt = system_prompt(self.tools, system_prompt_style)
        self.action_space = TextSpace(max_length=max(64, 16 * budgets.turn_tokens))
        self.observation_space = MessagesSpace()
        self._next_index = 0
        self.task: Task | None = None
        self.done = True

    # --- reset -----------------------------------------------------------------------------

    def _pick_task(self, seed: int | None, options: dict[str, Any] | None) -> Task:
        if options and options.get("task") is not None:
            return options["task"]
        index = self._next_index if seed is None else int(seed)
        self._next_index = index + 1
        return self.mixture.task(index)

    def _start(self, task: Task, server_ids: Sequence[str]) -> tuple[dict, dict]:
        self.task = task
        self.handles = {f"img_{i}": sid for i, sid in enumerate(server_ids)}
        self.turns: list[dict[str, Any]] = []
        self.parsed: list[protocol.ParsedTurn] = []
        self.done, self.terminated, self.truncated = False, False, False
        self.reward_components: dict[str, float] = {}
        self.reward_reasons: dict[str, str] = {}
        self.answer: str | None = None
        tags = "".join(f"[{h}]\n" for h in self.handles)
        self.messages: list[Message] = [
            {"role": "system", "content": self.system_prompt, "images": []},
            {"role": "user", "content": tags + task.question, "images": list(task.images)},
        ]
        self.prompt_tokens = sum(self.counter.message_tokens(m) for m in self.messages)
        limit = min(self.budgets.prompt_tokens, self.budgets.trajectory_tokens - 1)
        if self.prompt_tokens > limit:
            self.done = True
            raise PromptTooLong(
                f"task {task.task_id}: the prompt takes {self.prompt_tokens} tokens, over the "
                f"budget prompt_tokens={self.budgets.prompt_tokens} or leaving no room in "
                f"trajectory_tokens={self.budgets.trajectory_tokens} (raise them, show fewer "
                "tools or use a shorter system prompt style)")
        self.tokens_used = self.prompt_tokens
        info = {"task_id": task.task_id, "seed": task.seed, "split": task.split,
                "family": task.family, "question_type": task.meta.get("question_type"),
                "difficulty": task.difficulty, "image_handles": list(self.handles),
                "prompt_tokens": self.prompt_tokens}
        return {"messages": list(self.messages)}, info

    def _reset_gen(self, seed, options):
        task = self._pick_task(seed, options)
        ids = yield _Request("upload", list(task.images))
        return self._start(task, ids)

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
        """Starts an episode: `options={"task": Task}` plays that task; otherwise task
        `seed` of the env's split (the next one when seed is None), so equal seeds give
        equal episodes. Returns (obs, info)."""
        super().reset(seed=seed)
        return _drive(self._reset_gen(seed, options), self.client)

    async def areset(self, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        return await _adrive(self._reset_gen(seed, options), self.client)

    # --- step ------------------------------------------------------------------------------

    def _server_arguments(self, value: Any) -> Any:
        """Replaces image handles by server ids (unknown handles pass through, so the server
        answers `image_not_found`)."""
        if isinstance(value, str):
            return self.handles.get(value, value)
        if isinstance(value, dict):
            return {k: self._server_arguments(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._server_arguments(v) for v in value]
        return value

    def _begin_turn(self, text: str) -> _Turn:
        if self.done:
            raise RuntimeError("the episode is over; call reset() first")
        if not isinstance(text, str):
            raise TypeError(f"an action is the assistant turn's text (str), not {type(text).__name__}")
        n = self.counter.count(text)
        cut = n > self.budgets.turn_tokens
        if cut:  # the sampler cannot produce more; replayed or hand-written text can
            text = self.counter.truncate(text, self.budgets.turn_tokens)
            n = self.counter.count(text)
        self.tokens_used += n
        parsed = protocol.parse_assistant_turn(text)
        self.parsed.append(parsed)
        self.messages.append({"role": "assistant", "content": text, "images": []})
        turn = _Turn(text, parsed, action_truncated=cut)
        if parsed.kind == "tool_call":
            name = parsed.tool_call.name
            if name in self.tool_names:
                turn.call = (name, self._server_arguments(parsed.tool_call.arguments))
            else:
                turn.result = _unknown_tool_result(name, self.tool_names)
        return turn

    def _finish_turn(self, turn: _Turn, result: dict[str, Any] | None,
                     images: Sequence[Image.Image | None] = (), latency_s: float = 0.0):
        """Applies the tool result (and the output images fetched for it) to the episode and
        returns Gymnasium's 5-tuple."""
        parsed = turn.parsed
        result = turn.result if result is None else result
        obs_messages: list[Message] = []
        handles: list[str] = []
        if parsed.kind == "answer":
            self.answer = parsed.answer
        elif parsed.kind == "invalid":
            obs_messages.append({"role": "tool", "images": [],
                                 "content": protocol.render_protocol_error(parsed.error)})
        else:
            if result.get("ok") and any(im is None for im in images):
                result = {"ok": False, "error": {"code": "execution_failed",
                                                 "message": "an output image could not be fetched"}}
            if result.get("ok"):
                for sid in result.get("images") or []:
                    handle = f"img_{len(self.handles)}"
                    self.handles[handle] = sid
                    handles.append(handle)
            obs_messages.append({"role": "tool", "images": list(images) if handles else [],
                                 "content": protocol.render_tool_response(result, handles)})
        obs_cut = False
        for m in obs_messages:
            m["content"], cut = truncate_response(
                m["content"], self.budgets.observation_tokens, self.counter,
                protocol.TOOL_RESPONSE_START, protocol.TOOL_RESPONSE_END)
            obs_cut |= cut
            self.tokens_used += self.counter.message_tokens(m)
        self.messages.extend(obs_messages)
        hint = taxonomy_hint(parsed, result)
        error = parsed.error if parsed.kind == "invalid" else (
            None if result is None or result.get("ok") else (result.get("error") or {}).get("code"))
        self.turns.append({
            "text": turn.text, "kind": parsed.kind, "think": parsed.think,
            "tool_call": (None if parsed.tool_call is None else
                          {"name": parsed.tool_call.name, "arguments": parsed.tool_call.arguments}),
            "tool_result": result, "answer": parsed.answer, "error": error, "taxonomy": hint,
            "latency_s": latency_s, "image_handles": handles,
            "images": list(obs_messages[0]["images"]) if obs_messages else [],
            "action_truncated": turn.action_truncated, "observation_truncated": obs_cut})

        terminated = parsed.kind == "answer"
        out_of_tokens = self.tokens_used >= self.budgets.trajectory_tokens
        truncated = not terminated and (len(self.parsed) >= self.max_turns or out_of_tokens)
        reward = self._end(terminated) if (terminated or truncated) else 0.0
        info = {"parsed": parsed, "tool_result": result, "taxonomy": hint,
                "reward_components": dict(self.reward_components), "task_id": self.task.task_id,
                "turn": len(self.parsed), "truncated": truncated, "tokens_used": self.tokens_used,
                "action_truncated": turn.action_truncated, "observation_truncated": obs_cut}
        if self.done:
            info.update(answer=self.answer, correct=self.reward_components["correct"] > 0)
        return {"messages": obs_messages}, reward, terminated, truncated, info

    def _end(self, answered: bool) -> float:
        self.done, self.terminated, self.truncated = True, answered, not answered
        details = reward_details(self.parsed, self.task, answered=answered,
                                 config=self.reward_config)
        self.reward_components = details.components()
        self.reward_reasons = details.reasons()  # which rule set each component, for logs
        return self.reward_components["total"]

    def _step_gen(self, action_text: str):
        turn = self._begin_turn(action_text)
        if turn.call is None:
            return self._finish_turn(turn, None)
        t0 = time.perf_counter()
        [result] = yield _Request("batch", [turn.call])
        images = []
        if result.get("ok") and result.get("images"):
            images = yield _Request("get_images", list(result["images"]))
        return self._finish_turn(turn, result, images, time.perf_counter() - t0)

    def step(self, action_text: str):
        """Plays one assistant turn; returns (obs, reward, terminated, truncated, info).
        The reward is 0 except on the step that ends the episode."""
        return _drive(self._step_gen(action_text), self.client)

    async def astep(self, action_text: str):
        return await _adrive(self._step_gen(action_text), self.client)

    def truncate(self) -> tuple[float, dict[str, Any]]:
        """Ends the episode now without an answer (e.g. the policy's context is full) and
        returns (reward, info). Idempotent once the episode is over."""
        if not self.done:
            self._end(answered=False)
        return self.reward_components["total"], {
            "truncated": self.truncated, "reward_components": dict(self.reward_components),
            "task_id": self.task.task_id, "answer": self.answer,
            "correct": self.reward_components["correct"] > 0}

    def trajectory(self) -> dict[str, Any]:
        """The episode as a log record (JSON-able apart from PIL images, which
        `TrajectoryWriter` saves as PNG files); once the episode is over it carries its
        taxonomy label ({"label", "explanation", "turn"})."""
        task = self.task
        record = {
            "task_id": task.task_id, "family": task.family, "split": task.split,
            "seed": task.seed, "difficulty": task.difficulty, "source": task.source,
            "question": task.question, "question_type":
            task.meta.get("question_type"), "gold_answer": task.answer,
            "answer_type": task.answer_type, "images": list(task.images),
            "turns": list(self.turns), "answer": self.answer,
            "correct": bool(self.reward_components.get("correct", 0.0) > 0),
            "reward": self.reward_components.get("total"),
            "reward_components": dict(self.reward_components),
            "reward_reasons": dict(self.reward_reasons),
            "terminated": self.terminated, "truncated": self.truncated,
            "num_turns": len(self.turns), "tokens_used": self.tokens_used}
        if self.done:  # the paper's error class of the finished episode (env.taxonomy)
            from vista_jax.env.taxonomy import classify
            record["taxonomy"] = classify(record, task).to_dict()
        return record

    def render(self) -> str | None:
        """"ansi": the episode so far as text; "html": a page with its images
        (`env.viewer.render_html`)."""
        if self.render_mode is None or self.task is None:
            return None
        if self.render_mode == "html":
            from vista_jax.env.viewer import render_html
            return render_html(self.trajectory())
        lines = []
        for m in self.messages:
            images = f" [{len(m['images'])} image(s)]" if m.get("images") else ""
            lines.append(f"{m['role']}{images}: {m['content']}")
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        """Closes the tool client if this env made it (from `tool_url`)."""
        if self._owns_client and hasattr(self.client, "close"):
            self.client.close()
            self._owns_client = False


# --- N episodes in lock step ---------------------------------------------------------------

class VectorVistaEnv:
    """`num_envs` VistaEnvs stepped together; each `step` sends all tool calls as one batch."""

    def __init__(self, tool_client, num_envs: int, *, tools: Sequence[str] | None = None,
                 tool_url: str | None = None, **env_kwargs):
        """`env_kwargs` are VistaEnv's (family, split, difficulty, budgets, token_counter,
        ...). No client and no `tool_url`: the shared in-process tool service."""
        self.client, self._owns_client = resolve_client(tool_client, tool_url)
        specs = _list_tools(self.client)
        self.envs = [VistaEnv(self.client, tools=tools, tool_specs=specs, **env_kwargs)
                     for _ in range(num_envs)]

    @property
    def num_envs(self) -> int:
        return len(self.envs)

    def _reset_gen(self, seeds, tasks):
        if (seeds is None) == (tasks is None):
            raise ValueError("pass exactly one of seeds and tasks")
        items = list(tasks if tasks is not None else seeds)
        if len(items) != self.num_envs:
            raise ValueError(f"{len(items)} seeds/tasks for {self.num_envs} envs")
        picked = [env._pick_task(None, {"task": x}) if tasks is not None else env._pick_task(x, None)
                  for env, x in zip(self.envs, items)]
        # GRPO plays each task G times: upload each distinct image object once.
        unique = {id(im): im for task in picked for im in task.images}
        ids = yield _Request("upload", list(unique.values()))
        server_id = dict(zip(unique, ids))
        return [env._start(task, [server_id[id(im)] for im in task.images])
                for env, task in zip(self.envs, picked)]

    def reset(self, seeds: Sequence[int] | None = None, tasks: Sequence[Task] | None = None):
        """Starts one episode per env, from task indices (`seeds`) or `tasks`; returns
        [(obs, info)] in env order."""
        return _drive(self._reset_gen(seeds, tasks), self.client)

    async def areset(self, seeds: Sequence[int] | None = None,
                     tasks: Sequence[Task] | None = None):
        return await _adrive(self._reset_gen(seeds, tasks), self.client)

    def _step_gen(self, actions: Sequence[str | None]):
        if len(actions) != self.num_envs:
            raise ValueError(f"{len(actions)} actions for {self.num_envs} envs")
        turns = [None if a is None else env._begin_turn(a) for env, a in zip(self.envs, actions)]
        calling = [i for i, t in enumerate(turns) if t is not None and t.call is not None]
        t0 = time.perf_counter()
        results: dict[int, dict] = {}
        if calling:
            batch = yield _Request("batch", [turns[i].call for i in calling])
            results = dict(zip(calling, batch))
        wanted = [(i, sid) for i in calling if results[i].get("ok")
                  for sid in results[i].get("images") or []]
        fetched = (yield _Request("get_images", [sid for _, sid in wanted])) if wanted else []
        images: dict[int, list] = {}
        for (i, _), im in zip(wanted, fetched):
            images.setdefault(i, []).append(im)
        latency = time.perf_counter() - t0
        out = []
        for i, (env, turn) in enumerate(zip(self.envs, turns)):
            if turn is None:  # no action: this env is done (or skipped); nothing happens
                out.append(({"messages": []}, 0.0, env.terminated, env.truncated,
                            {"noop": True, "task_id": env.task.task_id if env.task else None}))
            else:
                out.append(env._finish_turn(turn, results.get(i), images.get(i, []),
                                            latency if i in results else 0.0))
        return out

    def step(self, actions: Sequence[str | None]):
        """One turn for every env whose action is not None; returns Gymnasium 5-tuples in env
        order (a no-op tuple for None)."""
        return _drive(self._step_gen(actions), self.client)

    async def astep(self, actions: Sequence[str | None]):
        return await _adrive(self._step_gen(actions), self.client)

    def truncate(self, index: int) -> tuple[float, dict[str, Any]]:
        """Ends env `index`'s episode without an answer; returns (reward, info)."""
        return self.envs[index].truncate()

    def close(self) -> None:
        if self._owns_client and hasattr(self.client, "close"):
            self.client.close()
            self._owns_client = False
