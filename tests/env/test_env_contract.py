"""VistaEnv / VectorVistaEnv against a fake tool client: Gymnasium signatures and types,
termination and truncation, terminal-only rewards, image handles, tool errors as
observations, one batch request per vector step, the async path, and the trajectory log.

`FakeToolClient` (imported by test_expert.py) speaks the ToolClient contract in memory."""

import asyncio
import hashlib
import io
import re

import numpy as np
import pytest
from PIL import Image

from tools_server.registry import ToolError
from tools_server.images import encode_png
from tools_server.tools.chart import select_bars
from vista_jax import protocol
from vista_jax.env import (RewardConfig, TrajectoryWriter, VectorVistaEnv, VistaEnv, make_task,
                           read_trajectories, system_prompt)

TOOLS = [
    {"type": "function", "family": "chart", "function": {
        "name": "chart_to_table", "description": "Extract a bar chart as a table. One line per bar.",
        "parameters": {"type": "object", "properties": {"image": {"type": "string"}},
                       "required": ["image"]}}},
    {"type": "function", "family": "math", "function": {
        "name": "calculator", "description": "Evaluate an arithmetic expression. Exact.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                       "required": ["expression"]}}},
    {"type": "function", "family": "perception", "function": {
        "name": "crop", "description": "Crop an image to a box. Returns a new image.",
        "parameters": {"type": "object", "properties": {
            "image": {"type": "string"}, "box": {"type": "array", "items": {"type": "number"}}},
            "required": ["image", "box"]}}},
    {"type": "function", "family": "diagram", "function": {
        "name": "detect_points", "description": "Find labelled points.",
        "parameters": {"type": "object", "properties": {"image": {"type": "string"}},
                       "required": ["image"]}}},
    {"type": "function", "family": "chart", "function": {
        "name": "bar_values", "description": "Read chosen bars of a bar chart. Sorted on request.",
        "parameters": {"type": "object", "properties": {
            "image": {"type": "string"}, "labels": {"type": "array", "items": {"type": "string"}},
            "order": {"type": "string", "enum": ["chart", "descending", "ascending"]}},
            "required": ["image"]}}},
]


def _err(code, message=""):
    return {"ok": False, "error": {"code": code, "message": message}}


class FakeToolClient:
    """The SyncToolClient contract in memory. chart_to_table / bar_values answer from the
    task tables registered with `register` (keyed by the image bytes the env uploads), with
    the real bar_values selection logic."""

    def __init__(self, tables=None):
        self.store: dict[str, Image.Image] = {}
        self.tables: dict[str, dict] = {}
        self.requests = {"list_tools": 0, "call": 0, "batch": 0, "upload_image": 0,
                         "get_image": 0}
        self.batch_sizes: list[int] = []
        self.fail_tools: dict[str, str] = {}  # tool name -> error code to answer with

    def _id(self, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def register(self, task):
        for im in task.images:  # keyed as upload_image keys them
            self.tables[self._id(encode_png(im))] = task.meta["table"]

    def list_tools(self):
        self.requests["list_tools"] += 1
        return [dict(t) for t in TOOLS]

    def upload_image(self, image):
        self.requests["upload_image"] += 1
        data = image if isinstance(image, bytes) else encode_png(image)
        iid = self._id(data)
        self.store[iid] = Image.open(io.BytesIO(data)).convert("RGB")
        return iid

    def get_image(self, image_id):
        self.requests["get_image"] += 1
        return self.store[image_id].copy()

    def _run(self, name, args):
        if name in self.fail_tools:
            return _err(self.fail_tools[name], "injected")
        if name not in {t["function"]["name"] for t in TOOLS}:
            return _err("unknown_tool")
        if name == "calculator":
            expr = args.get("expression")
            if not isinstance(expr, str) or not re.fullmatch(r"[\d\s.+\-*/()]+", expr):
                return _err("invalid_argument", "bad expression")
            value = float(eval(expr))  # noqa: S307 - digits and operators only
            return {"ok": True, "text": f"{value:g}", "images": [], "data": {"value": value}}
        image_id = args.get("image")
        if image_id not in self.store:
            return _err("image_not_found", str(image_id))
        if name in ("chart_to_table", "bar_values"):
            table = self.tables.get(image_id)
            if table is None:
                return _err("execution_failed", "not a chart")
            try:
                rows = select_bars(list(table), list(table.values()), args.get("labels"),
                                   args.get("order", "chart"))
            except ToolError as exc:
                return exc.result()
            text = "\n".join(f"{k} | {v}" for k, v in rows)
            return {"ok": True, "text": text, "images": [],
                    "data": {"labels": [r[0] for r in rows], "values": [r[1] for r in rows]}}
        if name == "crop":
            box = args.get("box")
            if not (isinstance(box, list) and len(box) == 4):
                return _err("invalid_argument", "box needs 4 numbers")
            out = self.store[image_id].crop(tuple(int(b) for b in box))
            return {"ok": True, "text": f"cropped to {out.size[0]}x{out.size[1]}",
                    "images": [self.upload_image(out)], "data": {}}
        return {"ok": True, "text": "no points", "images": [], "data": {"points": []}}

    def call(self, name, arguments):
        self.requests["call"] += 1
        return self._run(name, arguments)

    def batch(self, calls):
        self.requests["batch"] += 1
        self.batch_sizes.append(len(calls))
        return [self._run(name, args) for name, args in calls]


class FakeAsyncToolClient:
    """The async ToolClient contract over a FakeToolClient."""

    def __init__(self, sync: FakeToolClient):
        self.sync = sync

    async def list_tools(self):
        return self.sync.list_tools()

    async def upload_image(self, image):
        await asyncio.sleep(0)
        return self.sync.upload_image(image)

    async def get_image(self, image_id):
        return self.sync.get_image(image_id)

    async def call(self, name, arguments):
        return self.sync.call(name, arguments)

    async def batch(self, calls):
        await asyncio.sleep(0)
        return self.sync.batch(calls)


def tool_turn(name, **arguments):
    return protocol.render_assistant_turn("t", tool_call=protocol.ToolCall(name, arguments))


def answer_turn(answer):
    return protocol.render_assistant_turn("t", answer=answer)


@pytest.fixture
def client():
    return FakeToolClient()


@pytest.fixture
def task(client):
    t = make_task("chart_qa", "train", 1, 1)  # lookup: "What value does the Sigma bar show?"
    client.register(t)
    return t


def _check_message(m):
    assert set(m) == {"role", "content", "images"}
    assert m["role"] in ("system", "user", "assistant", "tool")
    assert isinstance(m["content"], str)
    assert all(isinstance(im, Image.Image) for im in m["images"])


def test_reset_and_step_contract(client, task):
    env = VistaEnv(client, difficulty=1, tools=("chart_to_table", "calculator"))
    obs, info = env.reset(options={"task": task})
    system, user = obs["messages"]
    for m in obs["messages"]:
        _check_message(m)
    assert system["role"] == "system" and user["role"] == "user"
    assert "chart_to_table(image: string): Extract a bar chart as a table." in system["content"]
    assert "crop" not in system["content"]  # only the env's tools are listed
    assert user["images"] == list(task.images) and task.question in user["content"]
    assert "[img_0]" in user["content"] and info["task_id"] == task.task_id

    obs, reward, terminated, truncated, info = env.step(tool_turn("chart_to_table", image="img_0"))
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert info["reward_components"] == {} and info["tool_result"]["ok"]
    [tool_msg] = obs["messages"]
    _check_message(tool_msg)
    assert tool_msg["role"] == "tool" and "Sigma | 98" in tool_msg["content"]
    assert tool_msg["content"].startswith(protocol.TOOL_RESPONSE_START)

    obs, reward, terminated, truncated, info = env.step(answer_turn("98"))
    assert obs == {"messages": []}
    assert (terminated, truncated) == (True, False) and reward == pytest.approx(1.0)
    assert info["reward_components"] == {"correct": 1.0, "format": 0.0, "repetition": 0.0,
                                         "total": 1.0}
    assert info["correct"] and info["answer"] == "98"
    assert [m["role"] for m in env.messages] == ["system", "user", "assistant", "tool", "assistant"]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(answer_turn("98"))


def test_truncated_at_max_turns_with_format_penalty(client, task):
    env = VistaEnv(client, difficulty=1, max_turns=2, tools=("chart_to_table", "calculator"))
    env.reset(options={"task": task})
    rewards = []
    _, r, term, trunc, _ = env.step(tool_turn("calculator", expression="1 + 1"))
    rewards.append(r)
    assert not term and not trunc
    _, r, term, trunc, info = env.step(tool_turn("calculator", expression="2 + 2"))
    rewards.append(r)
    assert not term and trunc and info["truncated"]
    assert rewards[0] == 0.0 and rewards[1] == pytest.approx(-0.1)
    assert info["reward_components"]["format"] == pytest.approx(-0.1)
    assert info["reward_components"]["correct"] == 0.0
    traj = env.trajectory()
    assert traj["truncated"] and not traj["terminated"] and traj["answer"] is None


def test_reward_config_weights(client, task):
    env = VistaEnv(client, difficulty=1, tools=("chart_to_table",),
                   reward_config=RewardConfig(correct_weight=2.0, format_penalty=0.2))
    env.reset(options={"task": task})
    _, r, *_ = env.step("oops " + answer_turn("98"))  # stray text: answered, but malformed
    assert r == pytest.approx(2.0 - 0.2)


def test_invalid_turn_and_tool_errors_are_observations(client, task):
    env = VistaEnv(client, difficulty=1, max_turns=8, tools=("chart_to_table", "calculator", "crop"))
    env.reset(options={"task": task})
    obs, r, term, trunc, info = env.step("<tool_call>{not json</tool_call>")
    assert info["taxonomy"] == "E1" and info["parsed"].error == protocol.E1_BAD_JSON
    assert "error[bad_json]" in obs["messages"][0]["content"] and not (term or trunc)

    obs, *_, info = env.step(tool_turn("chart_to_table", image="img_7"))  # unknown handle
    assert info["tool_result"]["error"]["code"] == "image_not_found"
    assert info["taxonomy"] == "E3" and "error[image_not_found]" in obs["messages"][0]["content"]

    obs, *_, info = env.step(tool_turn("detect_points", image="img_0"))  # served, not offered
    assert info["tool_result"]["error"]["code"] == "unknown_tool" and info["taxonomy"] == "E2"
    assert client.requests["batch"] == 1  # rejected locally, never sent

    client.fail_tools["calculator"] = "timeout"
    obs, *_, info = env.step(tool_turn("calculator", expression="1 + 2"))
    assert info["taxonomy"] == "service" and "error[timeout]" in obs["messages"][0]["content"]

    _, r, term, _, info = env.step(answer_turn("98"))
    assert term and info["reward_components"]["format"] == pytest.approx(-0.1)  # the E1 turn
    assert info["reward_components"]["correct"] == 1.0
    errors = [t["error"] for t in env.trajectory()["turns"]]
    assert errors == ["bad_json", "image_not_found", "unknown_tool", "timeout", None]


def test_tool_images_get_handles_and_are_fetched(client, task):
    env = VistaEnv(client, difficulty=1, max_turns=8, tools=("chart_to_table", "crop"))
    env.reset(options={"task": task})
    obs, *_, info = env.step(tool_turn("crop", image="img_0", box=[0, 0, 20, 10]))
    [msg] = obs["messages"]
    assert msg["content"].endswith("[img_1]" + protocol.TOOL_RESPONSE_END)
    assert len(msg["images"]) == 1 and msg["images"][0].size == (20, 10)
    # the new handle is usable in later calls, and the repeated call is penalised at the end
    obs, *_ = env.step(tool_turn("crop", image="img_1", box=[0, 0, 5, 5]))
    assert obs["messages"][0]["images"][0].size == (5, 5)
    env.step(tool_turn("crop", image="img_1", box=[0, 0, 5, 5]))
    _, r, *_, info = env.step(answer_turn("98"))
    assert info["reward_components"]["repetition"] == pytest.approx(-0.1)
    assert r == pytest.approx(0.9)


def test_reset_by_seed_is_deterministic(client):
    a, b = VistaEnv(client, difficulty=1), VistaEnv(client, difficulty=1)
    obs_a, info_a = a.reset(seed=5)
    obs_b, info_b = b.reset(seed=5)
    assert info_a["task_id"] == info_b["task_id"] == "chart_qa/train/5"
    assert obs_a["messages"][1]["content"] == obs_b["messages"][1]["content"]
    assert encode_png(obs_a["messages"][1]["images"][0]) == encode_png(obs_b["messages"][1]["images"][0])
    _, info_next = a.reset()
    assert info_next["task_id"] == "chart_qa/train/6"
    _, info_test = VistaEnv(client, difficulty=1, split="test").reset(seed=5)
    assert info_test["task_id"] == "chart_qa/test/20000005"


def test_system_prompt_styles():
    compact = system_prompt(TOOLS[:3], "compact")
    assert compact.splitlines()[1:4] == [
        "chart_to_table(image: string): Extract a bar chart as a table.",
        "calculator(expression: string): Evaluate an arithmetic expression.",
        "crop(image: string, box: number[]): Crop an image to a box."]
    assert len(compact.splitlines()) == 1 + 3 + 2  # header, one line per tool, protocol
    described = dict(TOOLS[0], function=dict(TOOLS[0]["function"], description=(
        "Reads a chart (bars only), returns a table; one line per bar. More.")))
    assert system_prompt([described]).splitlines()[1] == (
        "chart_to_table(image: string): Reads a chart.")
    full = system_prompt(TOOLS[:3], "full")
    assert '"parameters"' in full and '"family"' not in full
    with pytest.raises(ValueError):
        system_prompt(TOOLS, "long")
    with pytest.raises(ValueError, match="zoom"):
        VistaEnv(FakeToolClient(), difficulty=1, tools=("zoom",))


def _vector_setup(client, n):
    tasks = [make_task("chart_qa", "train", i, 1) for i in range(n)]
    for t in tasks:
        client.register(t)
    return tasks


def test_vector_env_one_batch_per_step(client):
    tasks = _vector_setup(client, 3)
    vec = VectorVistaEnv(client, 4, difficulty=1, tools=("chart_to_table", "calculator", "crop"))
    assert client.requests["list_tools"] == 1  # fetched once for all envs
    resets = vec.reset(tasks=tasks + [tasks[0]])  # a GRPO-style repeat: uploaded once
    assert len(resets) == 4 and client.requests["upload_image"] == 3
    assert resets[3][0]["messages"][1]["content"] == resets[0][0]["messages"][1]["content"]

    actions = [tool_turn("chart_to_table", image="img_0"), "garbage",
               tool_turn("crop", image="img_0", box=[0, 0, 8, 8]), answer_turn("0")]
    results = vec.step(actions)
    assert client.requests["batch"] == 1 and client.batch_sizes == [2]
    assert client.requests["call"] == 0
    assert results[0][4]["tool_result"]["ok"] and results[1][4]["taxonomy"] == "E1"
    assert results[2][0]["messages"][0]["images"][0].size == (8, 8)
    assert results[3][2] is True  # terminated
    assert all(r[1] == 0.0 for r in results[:3])

    results = vec.step([answer_turn(tasks[0].answer), None, None, None])
    assert client.requests["batch"] == 1  # no tool call this step: no request at all
    assert results[0][1] == pytest.approx(1.0) and results[0][2]
    assert results[3][4]["noop"] and results[3][2] is True and results[3][1] == 0.0
    reward, info = vec.truncate(1)
    assert info["truncated"] and reward == pytest.approx(-0.1)


def test_vector_env_async_path(client):
    tasks = _vector_setup(client, 3)
    aclient = FakeAsyncToolClient(client)

    async def play():
        vec = VectorVistaEnv(aclient, 3, difficulty=1, tools=("chart_to_table", "calculator"))
        await vec.areset(tasks=tasks)
        out = await vec.astep([tool_turn("chart_to_table", image="img_0")] * 3)
        return vec, out

    vec, out = asyncio.run(play())
    assert client.requests["batch"] == 1 and client.batch_sizes == [3]
    assert all(o[4]["tool_result"]["ok"] for o in out)
    # the blocking API also works on an async client (outside an event loop)
    out = vec.step([answer_turn(t.answer) for t in tasks])
    assert [o[1] for o in out] == [1.0, 1.0, 1.0]


def test_trajectory_log_round_trip(client, task, tmp_path):
    env = VistaEnv(client, difficulty=1, tools=("chart_to_table", "crop"))
    env.reset(options={"task": task})
    env.step(tool_turn("crop", image="img_0", box=[0, 0, 12, 9]))
    env.step(answer_turn("98"))
    traj = env.trajectory()
    path = tmp_path / "logs" / "eval.jsonl"
    with TrajectoryWriter(path) as w:
        w.write({**traj, "policy": "sft"})
        w.write({**traj, "policy": "grpo"})
    assert len(list((tmp_path / "logs" / "eval_images").iterdir())) == 2  # deduplicated
    recs = read_trajectories(path, load_images=True)
    assert [r["policy"] for r in recs] == ["sft", "grpo"]
    r = recs[0]
    assert r["task_id"] == task.task_id and r["correct"] and r["answer"] == "98"
    assert r["reward_components"] == traj["reward_components"]
    assert r["turns"][0]["tool_call"] == {"name": "crop", "arguments":
                                          {"image": "img_0", "box": [0, 0, 12, 9]}}
    np.testing.assert_array_equal(np.asarray(r["images"][0]), np.asarray(task.images[0].convert("RGB")))
    assert r["turns"][0]["images"][0].size == (12, 9)
    paths = read_trajectories(path)[0]["images"]
    assert paths[0].endswith(".png") and (tmp_path / "logs").as_posix() in paths[0]
