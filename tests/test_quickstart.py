"""The embedded quickstart, `--fast`: every stage on the real embedded default, end to end."""

import json
import os
import subprocess

import pytest

from conftest import REPO
from smap.data.store import FeatureStore


@pytest.mark.embedded
@pytest.mark.slow
def test_fast_quickstart_runs_every_stage_and_attaching_lowers_heldout_ce(tmp_path):
    work = tmp_path / "qs"
    run = subprocess.run(["bash", "recipes/quickstart.sh", "--fast"], cwd=REPO, env={**os.environ, "SMAP_WORK": str(work)},
                         capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]

    for split in ("train", "dev", "test", "everyday", "train-qa", "test-qa", "test-flite"):
        assert (work / "data" / "tts" / split / "store.json").is_file(), split
    # Training speech from two synthesiser families; Flite only in its held-out test split.
    families = lambda split: {r["speaker"].split(":")[0] if ":" in r["speaker"] else "espeak"  # noqa: E731
                              for r in FeatureStore(work / "data" / "tts" / split).records}
    assert families("train") == {"espeak", "pico"} and families("test-flite") == {"flite"}
    report = json.loads((work / "data" / "tts" / "train" / "prepare_report.json").read_text())
    assert report["stored"] == 1000 and report["finished"]
    assert (work / "pretrain" / "mapper" / "model.safetensors").is_file()
    assert json.loads((work / "pretrain" / "pretrain_report.json").read_text())["config"]["ctc_align"]
    for name in ("ce", "ce-mse"):
        attach = json.loads((work / f"attach-{name}" / "attach_report.json").read_text())
        # The starting point is the Stage-1 mapper itself: attaching must beat Stage 1 only.
        assert attach["ce"] < attach["initial_ce"], (name, attach)
        # The pooling Stage 1 was trained with travels with the mapper into the attached model.
        assert json.loads((work / f"attach-{name}" / "mapper" / "config.json").read_text())["pool"] == 2
    # --fast also attaches in task mode: the spoken questions, with ASR mixed in.
    task = json.loads((work / "attach-task" / "smap_model.json").read_text())
    assert task["provenance"]["mode"] == "task" and task["provenance"]["asr_mix"] == 0.5
    results = json.loads((work / "eval" / "results.json").read_text())
    rows = {(f"{r['suite']}/{r['split']}", r["system"]) for r in results["results"]}
    systems = ("transcript", "cascade", "stage1", "stage1-nearest", "attach-ce", "attach-ce-mse", "attach-task")
    splits = ("tts/test", "tts/test-flite", "tts/everyday", "tts/test-qa", "real/test")  # real: setup's recordings
    assert {(split, s) for split in splits for s in systems} <= rows
    table = (work / "eval" / "results.md").read_text()
    assert all(s in table for s in systems)
    # The learning curves hold held-out WER for Stage 1 and for each attach run, from its start.
    curves = json.loads((work / "learning_curves.json").read_text())
    assert curves["stage1_wer"] and (work / "learning_curves.png").is_file()
    for name in ("ce", "ce-mse", "task"):
        wer_points = curves[f"attach-{name}_wer"]
        assert len(wer_points) >= 2 and wer_points[0][0] >= curves["stage1_wer"][-1][0], (name, wer_points)


def test_setup_stops_before_installing_when_the_disk_is_too_full(tmp_path):
    # A copy of the repository's set-up files: nothing installed there yet, so setup must install.
    (tmp_path / "recipes").mkdir()
    for name in ("pyproject.toml", "recipes/setup.sh"):
        (tmp_path / name).write_text((REPO / name).read_text())
    run = subprocess.run(["bash", "recipes/setup.sh"], cwd=tmp_path, env={**os.environ, "SMAP_SETUP_MIN_GB": "1000000"},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.startswith("setup: only ") and "GB free under ." in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / ".venv").exists()
