"""VistaEnv as a gymnasium env: check_env on every registered id, seeding, budgets, the
task mixture, and expert datasets on disk read back through grain."""

import json
import warnings

import grain
import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

from vista_jax import protocol
from vista_jax.env import (Budgets, PromptTooLong, TaskMixture, VectorVistaEnv, VistaEnv,
                           get_family, make_task)
from vista_jax.env.budget import ApproxTokenCounter, TokenizerCounter, truncate_response
from vista_jax.env.expert import ExpertDataSource, generate_expert_dataset, write_expert_dataset
from vista_jax.env.registration import PROCEDURAL, env_id
from vista_jax.tokenizer import TRUNCATION_MARKER


@pytest.mark.parametrize("family", sorted(PROCEDURAL))
def test_check_env_passes_for_every_procedural_id(family):
    env = gymnasium.make(env_id(PROCEDURAL[family]), render_mode="ansi")
    assert get_family(family).gym_name == PROCEDURAL[family]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert not [w for w in caught if "WARN" in str(w.message)], [str(w.message) for w in caught]
    obs, info = env.reset(seed=5)
    assert info["family"] == family and obs in env.observation_space
    env.close()


def test_mixture_id_and_seed_determinism():
    env = gymnasium.make("VistaGym/Mixture-v0", family="chart_qa:1,geometry:1")
    obs_a, info_a = env.reset(seed=11)
    obs_b, info_b = env.reset(seed=11)
    assert info_a["task_id"] == info_b["task_id"]
    assert obs_a["messages"][1]["images"][0].tobytes() == obs_b["messages"][1]["images"][0].tobytes()
    _, info_c = env.reset(seed=12)
    assert info_c["task_id"] != info_a["task_id"]
    env.close()


def test_reset_without_seed_walks_the_split_deterministically(client):
    env = VistaEnv(client, family="chart_qa", split="val")
    env.reset(seed=40)
    ids = [env.reset()[1]["task_id"] for _ in range(3)]
    assert ids == [make_task("chart_qa", "val", i).task_id for i in (41, 42, 43)]


def test_gym_step_plays_a_tool_call_and_an_answer(client):
    env = VistaEnv(client, family="chart_qa", render_mode="ansi")
    obs, info = env.reset(seed=0)
    task = env.task
    label = task.meta["asked"][0]
    call = protocol.render_assistant_turn("Read.", tool_call=protocol.ToolCall(
        "bar_values", {"image": "img_0", "labels": [label]}))
    obs, reward, terminated, truncated, info = env.step(call)
    assert info["tool_result"]["ok"] and not terminated and reward == 0.0
    assert obs in env.observation_space and "<tool_response>" in obs["messages"][0]["content"]
    obs, reward, terminated, truncated, info = env.step("<answer>0</answer>")
    assert terminated and not truncated and isinstance(reward, float)
    assert "assistant: <answer>0</answer>" in env.render()
    record = env.trajectory()
    assert set(record["reward_reasons"]) == {"correct", "format", "repetition"}
    assert record["reward_reasons"]["format"] == "ok" and record["taxonomy"]["label"] != "correct"


# --- budgets --------------------------------------------------------------------------------

def test_observation_budget_truncates_with_a_marker(client):
    env = VistaEnv(client, family="chart_qa", budgets=Budgets(observation_tokens=12))
    env.reset(seed=3)
    call = protocol.render_assistant_turn("Read.", tool_call=protocol.ToolCall(
        "chart_to_table", {"image": "img_0"}))
    obs, *_, info = env.step(call)
    content = obs["messages"][0]["content"]
    assert info["observation_truncated"] and content.endswith(TRUNCATION_MARKER + "</tool_response>")
    assert ApproxTokenCounter().count(content) <= 12
    assert env.messages[-1]["content"] == content  # the transcript holds the cut text too


def test_turn_budget_cuts_long_actions_before_parsing(client):
    env = VistaEnv(client, family="chart_qa", budgets=Budgets(turn_tokens=8))
    env.reset(seed=3)
    long_turn = "<think>" + "word " * 50 + "</think><answer>5</answer>"
    *_, info = env.step(long_turn)
    assert info["action_truncated"] and info["parsed"].kind == "invalid"
    assert info["taxonomy"] == "E1"


def test_trajectory_budget_ends_the_episode(client):
    env = VistaEnv(client, family="chart_qa", max_turns=10,
                   budgets=Budgets(trajectory_tokens=1))  # the prompt alone fills it
    with pytest.raises(PromptTooLong, match="trajectory_tokens=1"):
        env.reset(seed=0)
    env = VistaEnv(client, family="chart_qa", max_turns=10, tools=("calculator",),
                   system_prompt_style="minimal", budgets=Budgets(trajectory_tokens=60))
    _, info = env.reset(seed=0)
    used = info["prompt_tokens"]
    steps = 0
    while not env.done:
        *_, truncated, info = env.step('<tool_call>{"name": "calculator", "arguments": '
                                       f'{{"expression": "{steps} + 1"}}}}</tool_call>')
        steps += 1
    assert truncated and steps < 10 and info["tokens_used"] >= 60 > used
    assert env.reward_components["format"] < 0


def test_prompt_budget_refuses_long_prompts_naming_the_task(client):
    env = VistaEnv(client, family="chart_qa", system_prompt_style="full",
                   budgets=Budgets(prompt_tokens=50))
    with pytest.raises(PromptTooLong, match=r"chart_qa/train/\d+.*prompt_tokens=50"):
        env.reset(seed=0)


@pytest.mark.parametrize("bad", [{"turn_tokens": 0}, {"max_turns": -1}, {"prompt_tokens": 2.5},
                                 {"observation_tokens": 4}])
def test_bad_budgets_fail_naming_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Budgets(**bad)


def test_tokenizer_counter_matches_the_policy_tokenizer(tok):
    counter = TokenizerCounter(tok)
    text = "Alpha | 23\nBeta | 41\nGamma | 17"
    assert counter.count(text) == len(tok.encode(text))
    cut = counter.truncate(text, 5)
    assert counter.count(cut) <= 5 and text.startswith(cut)
    content, was_cut = truncate_response("<tool_response>" + text * 5 + "</tool_response>", 20,
                                         counter, "<tool_response>", "</tool_response>")
    assert was_cut and counter.count(content) <= 20 and TRUNCATION_MARKER in content


# --- mixture ----------------------------------------------------------------------------------

def test_mixture_weights_determinism_and_single_family_identity():
    mix = TaskMixture.parse("chart_qa:3,geometry:1", split="train")
    picks = [mix.family_of(i) for i in range(2000)]
    share = picks.count("chart_qa") / len(picks)
    assert 0.71 < share < 0.79
    assert [t.task_id for t in mix.tasks(5, start=7)] == [mix.task(i).task_id for i in range(7, 12)]
    single = TaskMixture.parse("chart_qa", split="test")
    assert single.task(9).task_id == make_task("chart_qa", "test", 9).task_id
    assert {t.difficulty for t in TaskMixture.parse("chart_qa", difficulty=1).tasks(20)} == {1}


@pytest.mark.parametrize("spec,match", [("nope:1", "nope"), ("chart_qa:x", "bad mixture weight"),
                                        ("chart_qa:0", "sum to 0"), ("", "empty"),
                                        ("chart_qa,chart_qa", "twice")])
def test_bad_mixture_specs_fail_clearly(spec, match):
    with pytest.raises((ValueError, KeyError), match=match):
        TaskMixture.parse(spec)


# --- expert dataset on disk, read by grain -------------------------------------------------------

def test_expert_dataset_round_trip_through_grain(client, tmp_path):
    records, stats = generate_expert_dataset("chart_qa", "train", 12, client)
    assert stats["pass_rate_by_family"] == {"chart_qa": 1.0} and len(records) == 12
    path = write_expert_dataset(records, tmp_path / "expert" / "train.jsonl", stats)
    assert json.load(open(tmp_path / "expert" / "train.stats.json"))["kept"] == 12
    source = ExpertDataSource(path)
    assert len(source) == 12
    first = source[0]
    assert first["task_id"] == records[0]["task_id"]
    assert [m["role"] for m in first["messages"]] == [m["role"] for m in records[0]["messages"]]
    assert first["messages"][1]["images"][0].tobytes() == records[0]["messages"][1]["images"][0].tobytes()
    ds = grain.MapDataset.source(source).shuffle(seed=0).map(lambda r: r["task_id"])
    assert sorted(ds) == sorted(r["task_id"] for r in records)
    with pytest.raises(IndexError, match="of 12"):
        source[12]


def test_vector_env_resolves_the_shared_client():
    vec = VectorVistaEnv(None, 2, family="chart_qa")
    out = vec.reset(seeds=[0, 1])
    assert [info["task_id"] for _, info in out] == [make_task("chart_qa", "train", i).task_id
                                                    for i in (0, 1)]
    vec.close()


def test_dataset_id_plays_a_fixture_dataset():
    import os
    root = os.path.join(os.path.dirname(__file__), "..", "fixtures", "datasets", "chartqa")
    env = gymnasium.make("VistaGym/ChartQA-Local-v0", data_root=os.path.abspath(root), split="test")
    obs, info = env.reset(seed=0)
    assert info["task_id"].startswith("chartqa/test/") and obs["messages"][1]["images"]
    _, reward, terminated, _, info = env.step(f"<answer>{env.unwrapped.task.answer}</answer>")
    assert terminated and info["correct"]
    env.close()


def test_vista_expert_cli_writes_a_dataset(tmp_path, capsys):
    from vista_jax.cli import expert_main
    out = tmp_path / "e" / "train.jsonl"
    expert_main(["--mixture", "chart_qa", "--n", "6", "--difficulty", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "verified 6/6" in printed and len(ExpertDataSource(out)) == 6
    with pytest.raises(SystemExit):
        expert_main(["--mixture", "nope", "--n", "2", "--out", str(out)])
    assert "unknown task family 'nope'" in capsys.readouterr().err
