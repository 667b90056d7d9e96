"""Expert trajectories: played through the env, filled from real tool results, verified.

The fake-client tests always run; the real-server test needs the tool server
(`tools_server.launch.LocalToolServer`) and the HTTP client, and skips without them."""

import pytest

from test_env_contract import FakeToolClient
from vista_jax import protocol
from vista_jax.env import (VectorVistaEnv, VistaEnv, expert_messages, generate_expert_dataset,
                           make_task, make_tasks)
from vista_jax.env.expert import run_expert_batch


def _registered_client(tasks):
    client = FakeToolClient()
    for t in tasks:
        client.register(t)
    return client


def test_expert_messages_shape_and_verification():
    task = next(t for t in make_tasks("chart_qa", "train", 20, difficulty=1)
                if t.meta["question_type"] == "difference")
    client = _registered_client([task])
    messages, info = expert_messages(task, client)
    assert info["verified"] and info["answer"] == task.answer and info["error"] is None
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant",
                                             "tool", "assistant"]
    assert messages[1]["images"] == list(task.images)
    calc = protocol.parse_assistant_turn(messages[4]["content"])
    table = task.meta["table"]
    a, b = task.meta["asked"]
    assert calc.tool_call.arguments == {"expression": f"{table[a]} - {table[b]}"}
    final = protocol.parse_assistant_turn(messages[6]["content"])
    assert final.kind == "answer" and final.well_formed and final.think


def test_expert_uses_tool_results_not_ground_truth():
    task = next(t for t in make_tasks("chart_qa", "train", 20, difficulty=1) if t.meta["question_type"] == "sum")
    client = _registered_client([task])
    a = task.meta["asked"][0]
    misread = dict(task.meta["table"], **{a: task.meta["table"][a] + 1})
    for key in client.tables:
        client.tables[key] = misread  # the "tool" misreads one bar
    messages, info = expert_messages(task, client)
    assert not info["verified"]
    assert info["answer"] == str(int(task.answer) + 1)


def test_expert_reports_tool_failures():
    task = make_task("chart_qa", "train", 0, 1)
    client = _registered_client([task])
    client.fail_tools["bar_values"] = "execution_failed"
    messages, info = expert_messages(task, client)
    assert not info["verified"] and info["error"] == "tool_error:execution_failed"
    assert messages[-1]["role"] == "tool"


def test_batched_expert_one_request_per_turn():
    tasks = make_tasks("chart_qa", "train", 16, difficulty=1)
    client = _registered_client(tasks)
    out = run_expert_batch(VectorVistaEnv(client, 16, difficulty=1, max_turns=4), tasks)
    assert all(info["verified"] for _, info in out)
    max_calls = max(len(t.reference_plan) for t in tasks)
    assert client.requests["batch"] == max_calls and client.requests["call"] == 0


def test_generate_expert_dataset_with_fake_client():
    tasks = make_tasks("chart_qa", "train", 40, difficulty=1)
    client = _registered_client(tasks)
    client.tables[next(iter(client.tables))] = {"Nope": 1}  # one chart misread
    records, stats = generate_expert_dataset("chart_qa", "train", 40, client, difficulty=1, batch_size=16,
                                             env_kwargs={"tools": ("bar_values", "calculator")})
    assert stats["n"] == 40 and stats["verified"] == 39 and stats["kept"] == 39
    assert stats["pass_rate"] == pytest.approx(39 / 40)
    assert sum(stats["failures"].values()) == 1
    assert all(r["verified"] for r in records) and len(records) == 39
    assert records[0]["messages"][0]["role"] == "system"
    everything, _ = generate_expert_dataset("chart_qa", "train", 40, client, difficulty=1, filter_correct=False,
                                            batch_size=16)
    assert len(everything) == 40


@pytest.fixture(scope="module")
def real_client():
    launch = pytest.importorskip("tools_server.launch")
    tool_client = pytest.importorskip("vista_jax.env.tool_client")
    with launch.LocalToolServer() as server:
        client = tool_client.SyncToolClient(server.url)
        yield client
        client.close()


def test_expert_against_the_real_tool_server(real_client):
    """≥ 99% of 200 train tasks verify when the plans run on the real tools."""
    records, stats = generate_expert_dataset("chart_qa", "train", 200, real_client, difficulty=1, filter_correct=False,
        env_kwargs={"tools": ("bar_values", "calculator", "crop")})
    assert stats["pass_rate"] >= 0.99, stats
    assert len(records) == 200
    assert all(set(m) == {"role", "content", "images"} for r in records for m in r["messages"])


def test_env_on_the_real_tool_server(real_client):
    """Real tool errors come back as observations with their codes and taxonomy classes;
    a crop's output image comes back under a new handle."""
    env = VistaEnv(real_client, difficulty=1, max_turns=8, tools=("bar_values", "chart_to_table", "calculator", "crop"))
    env.reset(seed=3)

    def call(name, **arguments):
        text = protocol.render_assistant_turn("t", tool_call=protocol.ToolCall(name, arguments))
        obs, reward, terminated, truncated, info = env.step(text)
        assert reward == 0.0 and not terminated and not truncated
        return obs["messages"][0], info

    msg, info = call("crop", image="img_0", box=[0, 0, 100, 80])
    assert info["tool_result"]["ok"] and msg["content"].endswith("[img_1]</tool_response>")
    assert [im.size for im in msg["images"]] == [(100, 80)]
    for (name, args), code, hint in [
            (("crop", {"image": "img_9", "box": [0, 0, 1, 1]}), "image_not_found", "E3"),
            (("crop", {"image": "img_0", "bx": [0, 0, 1, 1]}), "unknown_argument", "E2"),
            (("calculator", {"expression": "2 +* 3"}), "invalid_argument", "E3"),
            (("chart_to_table", {"image": "img_1"}), "invalid_argument", "E3")]:
        msg, info = call(name, **args)
        assert info["tool_result"]["error"]["code"] == code and info["taxonomy"] == hint
        assert msg["content"].startswith(f"<tool_response>error[{code}]") and not msg["images"]


def test_bindings_that_raise_end_the_plan_with_an_error(monkeypatch):
    """A family whose bindings cannot read a result ends that expert episode with an
    `unreadable_result` error instead of aborting the whole dataset run."""
    from vista_jax.env.tasks.base import get_family
    task = make_task("chart_qa", "train", 0, 1)
    client = _registered_client([task])
    family = get_family("chart_qa")

    def broken(task, results):
        if results:
            raise TypeError("cannot read this result")
        return {}
    monkeypatch.setattr(family, "bindings", broken)
    _, info = expert_messages(task, client)
    assert not info["verified"] and info["error"] == "unreadable_result:TypeError"


def test_direct_expert_answers_without_tools_and_the_env_shows_none():
    """sft.expert=direct with env.tools=none: "No tools." prompt, one answer turn with the
    gold answer (verified, every family), and a tool call then is an unknown_tool error."""
    from vista_jax.env.expert import expert_records
    from vista_jax.env.env import NO_TOOLS

    from tools_server.inprocess import InProcessToolClient

    tasks = [t for fam in ("chart_qa", "counting", "geometry")
             for t in make_tasks(fam, "train", 4, difficulty=1)]
    client = InProcessToolClient()
    records, stats = expert_records(tasks, client, env_kwargs={"tools": (NO_TOOLS,),
                                                               "system_prompt_style": "minimal"},
                                    direct=True)
    assert stats["pass_rate"] == 1.0 and len(records) == len(tasks)
    for r, t in zip(records, tasks):
        roles = [m["role"] for m in r["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert r["messages"][0]["content"] == "No tools."
        assert r["messages"][2]["content"] == f"<answer>{t.answer}</answer>"
    env = VistaEnv(client, family="chart_qa", tools=(NO_TOOLS,), system_prompt_style="compact")
    assert env.tools == [] and "bar_values" not in env.system_prompt
    env.reset(options={"task": tasks[0]})
    _, _, _, _, info = env.step('<tool_call>{"name": "bar_values", "arguments": '
                                '{"image": "img_0"}}</tool_call>')
    assert info["tool_result"]["error"]["code"] == "unknown_tool"
