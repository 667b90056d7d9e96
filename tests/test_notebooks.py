"""The tutorial notebooks in notebooks/, executed top to bottom in a Jupyter kernel.

Each runs with nbclient in a python3 kernel (ipykernel), in a temporary working directory,
offline. `train_and_inspect` trains the tiny run into `VISTA_RUN_DIR` (under tmp_path);
`restore_checkpoint` is given the same `VISTA_RUN_DIR`, so it restores that run instead of
training its own. A fast test checks that every notebook is stored with cleared outputs.
"""

import os
import pathlib
import re

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def test_notebooks_are_stored_with_cleared_outputs():
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert {"quickstart.ipynb", "train_and_inspect.ipynb",
            "restore_checkpoint.ipynb"} <= {p.name for p in paths}
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.get("kernelspec", {}).get("name") == "python3", path.name
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (
                    f"{path.name}, cell {i}: outputs not cleared (Jupyter: Edit > Clear "
                    "Outputs of All Cells, then save)")


def execute(name: str, cwd: pathlib.Path, run_dir: pathlib.Path):
    """Runs notebooks/<name> in a fresh kernel started in `cwd`; a cell that raises fails
    the test with its traceback (CellExecutionError). Returns the executed notebook."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    with pytest.MonkeyPatch.context() as mp:  # the kernel inherits this environment
        mp.setenv("VISTA_RUN_DIR", str(run_dir))
        mp.setenv("HF_HUB_OFFLINE", "1")  # nothing may be downloaded
        # one CPU device, as a user's kernel has (conftest's optimisation level stays)
        mp.setenv("XLA_FLAGS", " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                                        if "device_count" not in f))
        NotebookClient(nb, kernel_name="python3", timeout=600,
                       resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def stdout(nb) -> str:
    return "".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def mime_outputs(nb, mime: str) -> list[str]:
    return [o["data"][mime] for cell in nb.cells if cell.cell_type == "code"
            for o in cell.outputs if mime in o.get("data", {})]


def number_after(text: str, label: str, *, regex: bool = False) -> float:
    """The first number printed right after `label` (e.g. "accuracy = ")."""
    m = re.search((label if regex else re.escape(label)) + r"(-?[0-9.]+(?:e[-+]?[0-9]+)?)",
                  text, re.M)
    assert m, f"no {label!r} in the notebook's output:\n{text[-3000:]}"
    return float(m.group(1))


@pytest.mark.slow
def test_quickstart(tmp_path):
    nb = execute("quickstart.ipynb", tmp_path, tmp_path / "unused")
    out = stdout(nb)
    assert "reward 1.0 terminated True correct True" in out  # the hand-played episode
    assert "'pass_rate': 1.0" in out  # every expert trajectory verified
    assert 0.0 <= number_after(out, r"^accuracy\s+", regex=True) <= 1.0  # evaluate()'s summary
    assert len(mime_outputs(nb, "image/png")) >= 1  # the task's chart, inline
    assert list(tmp_path.iterdir()) == []  # wrote nothing in its working directory


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """train_and_inspect executed: (the notebook, its run dir)."""
    tmp = tmp_path_factory.mktemp("notebooks")
    run_dir = tmp / "runs" / "notebook"
    return execute("train_and_inspect.ipynb", tmp, run_dir), run_dir


@pytest.mark.slow
def test_train_and_inspect(trained):
    nb, run_dir = trained
    out = stdout(nb)
    assert 0.0 <= number_after(out, "final accuracy = ") <= 1.0
    assert (run_dir / "summary.json").is_file() and (run_dir / "checkpoints").is_dir()
    # The notebook's own figures (curves, taxonomy bars), the run's PNG plots and a chart.
    assert len(mime_outputs(nb, "image/png")) >= 2 + len(list((run_dir / "plots").glob("*.png"))) + 1
    assert any("<iframe srcdoc=" in page for page in mime_outputs(nb, "text/html"))  # vista-view
    assert re.search(r"^grpo\s+8\s", out, re.M)  # Table 1: a row per policy, 8 eval trajectories each


@pytest.mark.slow
def test_restore_checkpoint_of_that_run(trained, tmp_path):
    _, run_dir = trained
    nb = execute("restore_checkpoint.ipynb", tmp_path, run_dir)
    out = stdout(nb)
    assert "not training" in out  # it found the run's checkpoints
    accuracy = number_after(out, ": accuracy = ")
    assert 0.0 <= accuracy <= 1.0
    # The greedy evaluation of the restored final policy is the run's own final evaluation.
    assert accuracy == number_after(out, "the run's final evaluation: accuracy = ")
    assert "exported weights equal checkpoint step 14's: True" in out  # 12 SFT + 2 RL steps
    assert number_after(out, "max abs difference (ours vs transformers) = ") < 1e-3
    assert (run_dir / "hf_export" / "model.safetensors").is_file()
