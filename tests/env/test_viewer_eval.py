"""The trajectory viewer (env.viewer.render_html, vista-view) and the vista-eval report, on
logs written with TrajectoryWriter from episodes played with the real tools."""

import json
import os
import re

import pytest
from PIL import Image

from test_taxonomy import BAD_JSON, answer, call, chart_tasks, play
from vista_jax.env import TrajectoryWriter, VistaEnv
from vista_jax.env.viewer import render_html
from vista_jax.eval_cli import eval_main, view_main


@pytest.fixture(scope="module")
def env(client):
    return VistaEnv(client, family="chart_qa", max_turns=4,
                    tools=("bar_values", "chart_to_table", "calculator", "crop"))


@pytest.fixture(scope="module")
def tasks():
    return chart_tasks()


@pytest.fixture(scope="module")
def records(env, tasks):
    """correct (with a crop image), E5, E4, E1 on chart_qa; one hand-made docvqa E5."""
    lookup, diff = tasks["lookup"], tasks["difference"]
    a = lookup.meta["asked"][0]
    read = call("bar_values", {"image": "img_0", "labels": [a]})
    return [
        play(env, lookup, [call("crop", {"image": "img_0", "box": [0, 0, 40, 30]}), read,
                           answer(lookup.answer)]),
        play(env, lookup, [read, answer(int(lookup.answer) + 1)]),
        play(env, lookup, [answer(int(lookup.answer) + 1)]),
        play(env, diff, [BAD_JSON, answer(0)]),
        {"task_id": "docvqa/test/0", "family": "docvqa", "split": "test", "seed": 0,
         "source": "docvqa", "question": "Total?", "question_type": "total",
         "gold_answer": "42", "answer_type": "number", "images": [],
         "turns": [{"kind": "tool_call", "tool_call": {"name": "ocr", "arguments": {}},
                    "tool_result": {"ok": True, "text": "total: 42"}},
                   {"kind": "answer", "answer": "7"}],
         "answer": "7", "correct": False, "terminated": True, "truncated": False},
    ]


@pytest.fixture(scope="module")
def log(records, tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "trajectories" / "eval.jsonl"
    with TrajectoryWriter(path) as w:
        for r in records:
            w.write(r)
    return path


# --- vista-eval --------------------------------------------------------------------------

def test_eval_table(log, capsys):
    assert eval_main(["--trajectories", str(log)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["family", "n", "accuracy", "E1", "E2", "E3", "E4", "E5", "E6",
                                "tool_failure"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    #                      n    acc      E1       E2     E3     E4       E5       E6    tool
    assert rows["chart_qa"] == ["4", "25.0%", "25.0%", "0.0%", "0.0%", "25.0%", "25.0%",
                                "0.0%", "0.0%"]
    assert rows["docvqa"][:2] == ["1", "0.0%"] and rows["docvqa"][6] == "100.0%"
    assert rows["total"][:2] == ["5", "20.0%"]


def test_eval_json_by_question_type_on_a_directory(log, capsys):
    assert eval_main(["--trajectories", str(log.parent.parent), "--json",
                      "--by", "question_type"]) == 0
    report = json.loads(capsys.readouterr().out)
    chart = report["families"]["chart_qa"]
    assert chart["counts"]["correct"] == 1 and chart["counts"]["E4"] == 1
    assert chart["accuracy"] + sum(chart["shares"].values()) == pytest.approx(1.0)
    assert set(chart["by"]) == {"lookup", "difference"}
    assert chart["by"]["difference"]["counts"]["E1"] == 1
    assert report["total"]["n"] == 5 and report["by"] == "question_type"


def test_eval_table_per_policy(records, tmp_path, capsys):
    """The paper's Table 1: one row per policy (record field, else the log's name)."""
    with TrajectoryWriter(tmp_path / "eval_sft.jsonl") as w:  # correct, E5
        for r in records[:2]:
            w.write({**r, "policy": "sft"})
    with TrajectoryWriter(tmp_path / "eval_base.jsonl") as w:  # E4, E1
        for r in records[2:4]:
            w.write({**r, "policy": "base"})
    with TrajectoryWriter(tmp_path / "rl.jsonl") as w:  # no policy field: the file's name
        w.write(records[0])
    assert eval_main(["--trajectories", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.split("\n\n")[0].splitlines()
    assert lines[0].split()[:3] == ["policy", "n", "accuracy"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert list(rows) == ["base", "sft", "rl", "total"]
    #                  n    acc     E1       E2      E3      E4       E5      E6      tool
    assert rows["base"] == ["2", "0.0%", "50.0%", "0.0%", "0.0%", "50.0%", "0.0%", "0.0%", "0.0%"]
    assert rows["sft"] == ["2", "50.0%", "0.0%", "0.0%", "0.0%", "0.0%", "50.0%", "0.0%", "0.0%"]
    assert rows["rl"][:2] == ["1", "100.0%"] and rows["total"][:2] == ["5", "40.0%"]
    assert "family" in out.split("\n\n")[1]  # then the table per family
    assert eval_main(["--trajectories", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["policies"]["sft"]["counts"]["E5"] == 1
    assert eval_main(["--trajectories", str(tmp_path / "eval_sft.jsonl"), "--json"]) == 0
    assert "policies" not in json.loads(capsys.readouterr().out)  # one policy: no such table


def test_eval_keeps_labels_carried_by_records(records, tmp_path, capsys):
    with TrajectoryWriter(tmp_path / "a.jsonl") as w:
        w.write({**records[2], "taxonomy": {"label": "E2", "explanation": "stored", "turn": 0}})
        w.write({**records[2], "taxonomy": "E6"})
    assert eval_main(["--trajectories", str(tmp_path), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)["families"]["chart_qa"]["counts"]
    assert counts["E2"] == 1 and counts["E6"] == 1 and counts["E4"] == 0


def test_eval_errors_name_the_file_and_line(log, tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    assert eval_main(["--trajectories", str(log), str(missing)]) == 2
    assert f"{missing}: no such file or directory" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(log.read_text().splitlines()[0] + "\n{not json\n")
    assert eval_main(["--trajectories", str(bad)]) == 2
    assert f"{bad}:2: not valid JSON" in capsys.readouterr().err
    bad.write_text('{"family": "chart_qa"}\n')
    assert eval_main(["--trajectories", str(bad)]) == 2
    assert f"{bad}:1: record lacks 'turns'" in capsys.readouterr().err
    bad.write_text('[1, 2]\n')
    assert eval_main(["--trajectories", str(bad)]) == 2
    assert "expected a trajectory object" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert eval_main(["--trajectories", str(empty)]) == 2
    assert "no *.jsonl" in capsys.readouterr().err
    bad.write_text(json.dumps({"family": "x", "turns": [], "correct": False,
                               "taxonomy": "E9"}) + "\n")
    assert eval_main(["--trajectories", str(bad)]) == 2
    assert f"{bad}:1: record None carries taxonomy 'E9'" in capsys.readouterr().err


# --- the viewer --------------------------------------------------------------------------

def _data_uris(page):
    return re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', page)


def test_render_live_record_with_images_and_every_turn(records):
    record = records[0]  # crop, bar_values, answer: correct
    page = render_html(record)
    assert page.startswith("<!DOCTYPE html>")
    assert len(_data_uris(page)) == 2  # the task image and the crop's output image
    for i in range(len(record["turns"])):
        assert f'id="turn-{i}"' in page
    assert "&quot;name&quot;: &quot;crop&quot;" in page  # the tool call JSON, escaped
    assert record["turns"][1]["tool_result"]["text"] in page
    assert "img_1" in page and "ms" in page
    assert f"<td>{record['gold_answer']}</td>" in page
    assert '<span class="label correct">correct</span>' in page
    for k in record["reward_components"]:
        assert f"<td>{k}</td>" in page


def test_render_shows_errors_and_blames_a_turn(records):
    page = render_html(records[3])  # bad JSON then a wrong answer: E1 at turn 0
    assert "error: bad_json" in page and "hint: E1" in page
    assert '<div class="turn blamed" id="turn-0">' in page
    assert '<span class="label error">E1</span>' in page


def test_render_escapes_model_text(env, tasks):
    evil = "<script>alert('x')</script>"
    record = play(env, tasks["lookup"], [
        f"<think>{evil}</think><answer>{evil}</answer>"])
    record["question"] = evil + " & more"
    page = render_html(record)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&amp; more" in page


def test_render_from_a_log_embeds_or_links_the_png_files(log, records, tmp_path):
    from vista_jax.eval_cli import iter_records
    raw = [r for _, r in iter_records(str(log))][0]
    page = render_html(raw, image_root=str(log.parent))
    assert len(_data_uris(page)) == 2
    linked = render_html(raw, image_root=str(log.parent), embed_images=False)
    srcs = re.findall(r'<img src="([^"]+)"', linked)
    assert len(srcs) == 2 and all(os.path.isfile(log.parent / s) for s in srcs)
    missing = render_html(raw, image_root=str(tmp_path))
    assert "missing image" in missing and not _data_uris(missing)


def test_vista_view(log, records, tmp_path, capsys):
    out = tmp_path / "view" / "t.html"
    out.parent.mkdir()
    assert view_main([str(log), "--index", "1", "-o", str(out)]) == 0
    page = out.read_text()
    assert '<span class="label error">E5</span>' in page and len(_data_uris(page)) == 1
    assert view_main([str(log), "--task-id", records[3]["task_id"], "-o", str(out)]) == 0
    assert "bad_json" in out.read_text()
    assert view_main([str(log), "--link-images", "-o", str(out)]) == 0
    srcs = re.findall(r'<img src="([^"]+)"', out.read_text())
    assert len(srcs) == 2 and all(os.path.isfile(out.parent / s) for s in srcs)
    capsys.readouterr()
    assert view_main([str(log), "--index", "9"]) == 2
    assert "out of range; the log holds 5 records" in capsys.readouterr().err
    assert view_main([str(log), "--task-id", "chart_qa/train/123456"]) == 2
    assert "no record with task_id" in capsys.readouterr().err
    assert view_main([str(tmp_path / "none.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert view_main([str(log), "--index", "4"]) == 0  # to stdout
    assert capsys.readouterr().out.startswith("<!DOCTYPE html>")


def test_render_record_with_a_pil_output_image():
    img = Image.new("RGB", (4, 3), "red")
    record = {"task_id": "t", "family": "x", "question": "q", "gold_answer": "1",
              "images": [img], "answer": None, "correct": False, "taxonomy": "E6",
              "turns": [{"kind": "tool_call", "tool_call": {"name": "crop", "arguments": {}},
                         "tool_result": {"ok": True, "text": "cropped"}, "images": [img],
                         "image_handles": ["img_1"]}]}
    page = render_html(record)
    assert len(_data_uris(page)) == 2 and "img_1" in page
