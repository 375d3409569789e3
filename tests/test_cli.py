"""The command line as a whole: every command's help, its panels, and one meaning per option name."""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.testing import CliRunner

from smap.cli import app

runner = CliRunner()
COMMANDS = ("prepare", "pretrain", "attach", "infer", "evaluate")


def options(command: str) -> dict[str, object]:
    """--name -> the click parameter, for one command."""
    params = typer.main.get_command(app).commands[command].params
    return {opt: p for p in params for opt in [*p.opts, *p.secondary_opts] if opt.startswith("--")}


@pytest.mark.parametrize("command", COMMANDS)
def test_help_renders_with_a_config_option_and_panels(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--config" in result.output
    panels = re.findall(r"╭─ (.+?) ─", result.output)
    assert "Options" in panels and len(panels) >= 3, panels
    # Help texts say what an option does; results belong in the README.
    assert "README" not in result.output


def test_the_training_loop_options_mean_the_same_in_pretrain_and_attach():
    pretrain, attach = options("pretrain"), options("attach")
    for name in ("--steps", "--lr", "--warmup", "--weight-decay", "--grad-accum", "--clip", "--mixed-precision", "--seed",
                 "--save-every", "--eval-every", "--log-every", "--eval-at-start", "--keep", "--resume", "--time-budget",
                 "--workers", "--max-frames"):
        assert pretrain[name].rich_help_panel == attach[name].rich_help_panel == "Training loop", name
        if name not in ("--steps", "--warmup"):  # each states the paper's value beside its own
            assert pretrain[name].help == attach[name].help, name


@pytest.mark.parametrize("command", ["pretrain", "attach"])
def test_log_every_is_in_the_help_with_its_default(command):
    """The training loop's log interval is an option of both training commands, defaulting to the loop's own."""
    from smap.training import LoopConfig

    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--log-every" in result.output and "log.jsonl" in result.output
    assert options(command)["--log-every"].default == LoopConfig.log_every == 10


def test_evaluate_takes_systems_and_system_is_a_system_message_everywhere(tmp_path):
    assert "--systems" in options("evaluate") and "--system" not in options("evaluate")
    for command in ("attach", "infer"):
        assert "system message" in options(command)["--system"].help.lower()
    old = runner.invoke(app, ["evaluate", "--suite", "tts", "--system", "smap", "--out", str(tmp_path / "o")])
    assert old.exit_code == 2 and "--system" in old.output
    new = runner.invoke(app, ["evaluate", "--suite", "tts", "--systems", "smap", "--out", str(tmp_path / "o")],
                        terminal_width=400)
    assert new.exit_code == 2 and "needs --model DIR" in new.output  # parsed: the systems need a model


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_says_what_it_does(command):
    """An option without help text passes any test that only checks it exists; each must explain itself."""
    silent = [opt for opt, p in options(command).items() if opt != "--help" and len((p.help or "").split()) < 3]
    assert not silent, f"smap {command}: options without help text: {silent}"


def test_prepare_tts_augment_reaches_the_training_corpus_and_a_wrong_effect_is_one_line(tmp_path):
    import json

    bad = runner.invoke(app, ["prepare", "--dataset", "tts", "--split", "train", "--tts-train", "4",
                              "--tts-augment", "speed,reverb", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "augment ('speed', 'reverb')" in bad.output and "Traceback" not in bad.output, bad.output
    ok = runner.invoke(app, ["prepare", "--dataset", "tts", "--split", "train", "--tts-train", "4",
                             "--tts-augment", "noise, band", "--limit", "2", "--out", str(tmp_path / "train")])
    assert ok.exit_code == 0, ok.output
    info = json.loads((tmp_path / "train" / "store.json").read_text())
    assert json.dumps(info).count('"augment": ["noise", "band"]') == 1, info
