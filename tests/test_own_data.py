"""Your own data through every stage by the CLI: a manifest of recordings (eSpeak stand-ins from
recipes/example_manifest.py) -> prepare -> pretrain -> attach -> infer -> evaluate on the
user's own test store, scored beside nothing else and keyed by its folder."""

import importlib.util
import json
import math

from typer.testing import CliRunner

from conftest import REPO
from test_encoders import save_tiny_ssl
from smap.cli import app

runner = CliRunner()


def _example_manifest():
    spec = importlib.util.spec_from_file_location("example_manifest", REPO / "recipes" / "example_manifest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ok(args):
    result = runner.invoke(app, args, terminal_width=400)
    assert result.exit_code == 0, result.output
    return result


def test_a_manifest_of_recordings_through_every_stage_to_its_own_row(tmp_path, tiny_llama):
    manifest = _example_manifest().write_manifest(tmp_path / "recordings", train=6, test=3)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [r["split"] for r in rows] == ["train"] * 6 + ["test"] * 3
    assert all((manifest.parent / r["audio"]).is_file() for r in rows)
    assert not {r["text"] for r in rows if r["split"] == "test"} & {r["text"] for r in rows if r["split"] == "train"}

    encoder = tmp_path / "encoder"
    save_tiny_ssl(encoder)
    data = tmp_path / "data" / "mine"
    for split in ("train", "test"):
        _ok(["prepare", "--dataset", str(manifest), "--split", split, "--encoder", str(encoder), "--out", str(data / split)])
    _ok(["pretrain", "--train", str(data / "train"), "--llm", str(tiny_llama), "--preset", "tiny", "--steps", "3",
         "--warmup", "0", "--save-every", "100", "--eval-every", "100", "--out", str(tmp_path / "pre")])
    _ok(["attach", "--mapper", str(tmp_path / "pre"), "--train", str(data / "train"), "--mode", "asr", "--steps", "2",
         "--warmup", "0", "--save-every", "100", "--eval-every", "100", "--out", str(tmp_path / "att")])
    infer = _ok(["infer", "--model", str(tmp_path / "att"), "--store", str(data / "test"), "--max-new-tokens", "4",
                 "--out", str(tmp_path / "rows.jsonl")])
    assert len(infer.stdout.strip().splitlines()) == 3

    # The user's store by its path, beside a built-in suite whose store is not there (named, skipped).
    result = runner.invoke(app, ["evaluate", "--suite", f"librispeech/test-clean,{data / 'test'}", "--model",
                                 str(tmp_path / "att"), "--data-root", str(tmp_path / "nowhere"),
                                 "--max-new-tokens", "4", "--out", str(tmp_path / "eval")], terminal_width=400)
    assert result.exit_code == 1, result.output  # librispeech/test-clean was not prepared
    report = json.loads((tmp_path / "eval" / "results.json").read_text())
    (entry,) = report["results"]
    assert (entry["suite"], entry["split"], entry["task"], entry["system"], entry["n"]) == ("mine", "test", "asr", "smap", 3)
    assert math.isfinite(entry["scores"]["wer"]) and entry["scores"]["wer"] >= 0
    assert report["data"]["mine/test"]["store"] == str(data / "test")
    assert [p["split"] for p in report["problems"]] == ["librispeech/test-clean"]
    md = (tmp_path / "eval" / "results.md").read_text()
    assert "| system | mine/test WER↓ |" in md
    assert (tmp_path / "eval" / "outputs" / "mine" / "test" / "smap.jsonl").is_file()
