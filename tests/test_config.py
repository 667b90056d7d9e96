import importlib.util
import os

import pytest

from vista_jax import cli
from vista_jax import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny():
    spec = importlib.util.spec_from_file_location("tiny_cpu", os.path.join(ROOT, "configs", "tiny_cpu.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


def test_tiny_config_is_valid():
    config_lib.validate(tiny())


def test_every_field_has_a_comment():
    src = open(os.path.join(ROOT, "configs", "tiny_cpu.py")).read()
    for line in src.splitlines():
        s = line.strip()
        if s.startswith("c.") and "=" in s and "ConfigDict()" not in s:
            assert "#" in s, f"config field without a comment: {s}"


def test_overrides_from_the_command_line():
    cfg = cli.load_config(["vista-train", "--config", os.path.join(ROOT, "configs/tiny_cpu.py"),
                           "--config.rl.group_size=4", "--config.mesh.shape=(1,1,-1)"])
    assert cfg.rl.group_size == 4 and tuple(cfg.mesh.shape) == (1, 1, -1)


@pytest.mark.parametrize("flag,needle", [
    ("--config.rl.gruop_size=4", "gruop_size"),
    ("--config.rl.group_size=abc", "group_size"),
])
def test_bad_override_names_the_key(flag, needle):
    with pytest.raises(SystemExit, match=needle):
        cli.load_config(["vista-train", "--config", os.path.join(ROOT, "configs/tiny_cpu.py"), flag])


@pytest.mark.parametrize("key,value", [
    ("rl.group_size", 1), ("model.image_size", 50), ("model.mrope_section", (4, 4, 4)),
    ("rl.algorithm", "reinforce"), ("sft.batch_size", 0), ("mesh.shape", (-1, -1, 1)),
    ("sft.copy_weight", 0.5), ("sft.copy_balance", -1.0), ("sft.init_from", "/no/such/run"),
    ("rl.clip_eps_low", 1.0), ("rl.clip_eps_high", -0.1), ("rl.dual_clip", 0.9),
    ("rl.kl_estimator", "k2"), ("rl.overlong_buffer", 600),
    ("sft.expert", "teacher"), ("eval.policies", "base,rl"), ("eval.mixture", "charts"),
    ("env.tools", "none,calculator"), ("eval.tools", "calculator,none"),
])
def test_validation_names_the_bad_key(key, value):
    cfg = tiny()
    section, name = key.split(".")
    cfg[section][name] = value
    with pytest.raises(config_lib.ConfigError, match=key.replace(".", r"\.")):
        config_lib.validate(cfg)


@pytest.mark.parametrize("flag,needle", [
    ("--config.eval.nope=1", "nope"),                      # unknown key
    ("--config.eval.num_tasks=x", "config.eval.num_tasks"),  # wrong type
    ("--config.model.remat=1", "config.model.remat"),        # fails validation
    ("--eval.num_tasks=3", "unrecognized arguments"),
])
def test_run_config_overrides_exit_naming_the_key(tmp_path, flag, needle):
    """vista-eval / vista-export: the run's config.json with overrides; a bad one exits with
    a message naming it, not a traceback."""
    (tmp_path / "config.json").write_text(tiny().to_json_best_effort())
    ok = cli.load_run_config(str(tmp_path), ["--config.eval.num_tasks=7"], "vista-eval")
    assert ok.eval.num_tasks == 7 and ok.rl.group_size == tiny().rl.group_size
    with pytest.raises(SystemExit, match=needle) as e:
        cli.load_run_config(str(tmp_path), [flag], "vista-eval")
    assert str(e.value).startswith("vista-eval: ")


def test_load_with_overrides_for_notebooks_and_scripts():
    path = os.path.join(ROOT, "configs", "tiny_cpu.py")
    cfg = config_lib.load(path, {"rl.group_size": 4, "eval.tools": "none"})
    assert cfg.rl.group_size == 4 and cfg.eval.tools == "none"
    with pytest.raises(config_lib.ConfigError, match="rl.gruop_size"):
        config_lib.load(path, {"rl.gruop_size": 4})
    with pytest.raises(config_lib.ConfigError, match="config.rl.group_size"):
        config_lib.load(path, {"rl.group_size": 1})  # fails validation
    with pytest.raises(config_lib.ConfigError, match="no such config file"):
        config_lib.load(os.path.join(ROOT, "configs", "nope.py"))
    abl = config_lib.load(os.path.join(ROOT, "configs", "ablations", "stages.py"))
    assert abl.ablation.variants and abl.name == "ablations/stages"


def test_resume_config_differences_name_training_keys_only():
    """What a resumed run compares with its checkpoint's config (pipeline.config_differences)."""
    import json

    from vista_jax import pipeline

    cfg = tiny()
    saved = json.loads(cfg.to_json_best_effort())
    assert pipeline.config_differences(saved, cfg) == []
    cfg.rl.learning_rate, cfg.log.every, cfg.name = 1e-4, 1, "elsewhere"  # log, name: resumable
    assert pipeline.config_differences(saved, cfg) == ["rl.learning_rate"]
    # a field added since the checkpoint: fine at its default, named when set
    del saved["eval"]["policies"]
    saved["sft"]["removed_field"] = 3  # a field since removed: ignored
    cfg = tiny()
    assert pipeline.config_differences(saved, cfg) == []
    cfg.eval.policies = "grpo"
    assert pipeline.config_differences(saved, cfg) == ["eval.policies"]
