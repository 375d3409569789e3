"""Named configs: `smap pretrain --config FILE`, `smap attach --config FILE` and the recipes' YAML files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import REPO
from smap.cli import app
from smap.config import ConfigError, check_config, read_config

runner = CliRunner()
CONFIGS = sorted((REPO / "recipes" / "configs").rglob("*.yaml"))


@pytest.fixture
def captured(monkeypatch):
    """The config dataclass each training command builds, instead of training."""
    seen = []
    monkeypatch.setattr("smap.pretrain.pretrain", seen.append)
    monkeypatch.setattr("smap.attach.attach", seen.append)
    return seen


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_config_values_reach_the_dataclass(tmp_path, captured):
    cfg = write(tmp_path, "train: [data/a, data/b]\ntime_budget: 16\ncompress: ctc\nctc_align: true\nlr: 2e-3\n"
                          "mixed_precision: bf16\nresume: yes\n")
    result = runner.invoke(app, ["pretrain", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    (got,) = captured
    assert got.train == ["data/a", "data/b"] and got.time_budget == 16.0 and got.compress == "ctc"
    assert got.ctc_align is True and got.lr == 2e-3 and got.mixed_precision == "bf16" and got.resume is True
    assert got.steps == 10000  # not in the file: the command's default


def test_a_flag_given_on_the_command_line_wins_over_the_config(tmp_path, captured):
    cfg = write(tmp_path, "mapper: runs/s1\ntrain: [data/a, data/b]\nsteps: 500\nmse_weight: 0.5\neval_at_start: true\n")
    result = runner.invoke(app, ["attach", "--config", str(cfg), "--steps", "7", "--train", "data/c",
                                 "--no-eval-at-start"])
    assert result.exit_code == 0, result.output
    (got,) = captured
    assert got.steps == 7 and got.train == ["data/c"] and got.eval_at_start is False  # a flag replaces a list too
    assert got.mse_weight == 0.5 and got.mapper == "runs/s1"


@pytest.mark.parametrize("text, message", [
    ("stepz: 3\n", "unknown key 'stepz' (did you mean steps?)"),
    ("phrasings: 1\n", "unknown key 'phrasings'"),  # a field of AttachConfig that is no longer an option
    ("steps: 1.5\n", "steps: Input should be a valid integer"),
    ("steps: 0\n", "steps: Input should be greater than or equal to 1"),
    ("steps: [1, 2]\n", "steps: expected one value, not a list"),
    ("resume: 1\n", "resume: expected true or false, got 1"),
    ("mixed_precision: no\n", "mixed_precision: expected a value, got the YAML boolean False (quote it"),
    ("time_budget: {minutes: 3}\n", "time_budget: expected a value or a list of values"),
])
def test_a_bad_key_or_value_is_one_line_naming_file_and_key_exit_2(tmp_path, captured, text, message):
    cfg = write(tmp_path, "mapper: m\ntrain: [t]\n" + text)
    result = runner.invoke(app, ["attach", "--config", str(cfg)])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {cfg}: {message}")
    assert len(result.output.strip().splitlines()) == 1 and not captured


def test_a_file_that_is_not_a_yaml_mapping_is_named_with_its_line(tmp_path):
    bad = write(tmp_path, "steps: 3\nlr: [1e-3\n")
    with pytest.raises(ConfigError, match=rf"^{bad}:3: not YAML"):
        read_config(bad)
    with pytest.raises(ConfigError, match=r"expected a mapping of option names to values, got a list"):
        read_config(write(tmp_path, "- steps\n"))
    with pytest.raises(ConfigError, match=r"no\.yaml: cannot read"):
        read_config(tmp_path / "no.yaml")
    assert read_config(write(tmp_path, "# nothing set\n")) == {}
    assert check_config("f.yaml", {"steps": 3}, {"steps": lambda v: v * 2}) == {"steps": 6}


def command_of(path: Path) -> str:
    """recipes/configs/*/COMMAND[-NAME].yaml"""
    return path.stem.split("-")[0]


def test_the_recipes_have_configs_for_each_mode():
    names = {p.relative_to(REPO / "recipes" / "configs").as_posix() for p in CONFIGS}
    for mode in ("quickstart", "replicate"):
        for name in ("prepare", "pretrain", "attach-asr-ce", "attach-asr-ce-mse", "attach-task", "evaluate"):
            assert f"{mode}/{name}.yaml" in names
    for name in ("pretrain", "attach-asr-ce", "attach-asr-ce-mse", "attach-task-sqa", "attach-task-st", "evaluate"):
        assert f"paper/{name}.yaml" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(REPO / "recipes" / "configs").as_posix())
def test_every_recipe_config_loads_and_validates_against_its_command(path, captured):
    """A renamed or removed option breaks this test until the configs follow."""
    command = command_of(path)
    result = runner.invoke(app, [command, "--config", str(path), "--help"])
    assert result.exit_code == 0, result.output
    if command not in ("pretrain", "attach"):
        return
    values = yaml.safe_load(path.read_text())
    paths = ["--train", "data/t"] + (["--mapper", "runs/s1"] if command == "attach" else [])
    result = runner.invoke(app, [command, "--config", str(path), *paths])
    assert result.exit_code == 0, result.output
    (cfg,) = captured
    for key, value in values.items():
        assert getattr(cfg, key) == value, key


def test_the_recipe_budgets_are_steps_and_precision_follows_the_machine():
    """Steps, not minutes, so that any machine trains the same run: the step counts the README's minutes bought
    (quickstart: 1,922 / 301 / 297; replication: 4,688 / 359 / 360 / 215); attach precision is auto."""
    configs = {p.relative_to(REPO / "recipes" / "configs").as_posix(): yaml.safe_load(p.read_text()) for p in CONFIGS}
    assert not [name for name, c in configs.items() if "time_budget" in c]
    assert [configs[f"quickstart/{n}.yaml"]["steps"] for n in ("pretrain", "attach-asr-ce", "attach-asr-ce-mse")] \
        == [1900, 300, 300]
    assert [configs[f"replicate/{n}.yaml"]["steps"] for n in ("pretrain", "attach-asr-ce", "attach-asr-ce-mse", "attach-task")] \
        == [4700, 360, 360, 215]
    assert {c["mixed_precision"] for n, c in configs.items() if "mixed_precision" in c} == {"auto"}
