"""`smap evaluate` under several processes: two CPU processes (gloo) started by torchrun, as
`accelerate launch --multi_gpu` starts one per GPU, give the table of one process."""

import json
import subprocess
import sys

from conftest import child_env, write_store
from test_evaluate_run import TEXTS, tiny_model  # noqa: F401  (a fixture: a model folder on the tiny Llama)


def _evaluate(processes: int, root, model, out):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
           "-m", "smap.cli", "evaluate", "--suite", "tts/test", "--systems", "smap,transcript", "--model", str(model),
           "--data-root", str(root / "data"), "--out", str(out), "--max-new-tokens", "4"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=child_env(ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES=""))
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def test_two_processes_share_the_records_and_give_the_table_of_one(tmp_path, tiny_model):  # noqa: F811
    write_store(tmp_path / "data" / "tts" / "test", TEXTS + ["we see them", "one two three"])  # 6 records: 3 each
    alone = _evaluate(1, tmp_path, tiny_model, tmp_path / "one")
    shared = _evaluate(2, tmp_path, tiny_model, tmp_path / "two")
    # the main process worked on its share only, and alone printed and wrote the report
    assert "tts/test x smap: 6/6 utterances" in alone and "tts/test x smap: 3/3 utterances" in shared
    assert shared.count("report: ") == 1
    for system in ("smap", "transcript"):
        said = [(tmp_path / run / "outputs" / "tts" / "test" / f"{system}.jsonl").read_text() for run in ("one", "two")]
        assert said[0] == said[1] and len(said[0].splitlines()) == 6
    one, two = (json.loads((tmp_path / run / "results.json").read_text()) for run in ("one", "two"))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert [(r["system"], r["n"], r["scores"]) for r in one["results"]] == \
        [(r["system"], r["n"], r["scores"]) for r in two["results"]]
    # the same command again: every process skips what the first run saved, and the table is the same
    again = _evaluate(2, tmp_path, tiny_model, tmp_path / "two")
    assert "reused tts/test x smap" in again and "reused tts/test x transcript" in again
    assert "tts/test x smap: 3/3 utterances" not in again and again.count("report: ") == 1
    three = json.loads((tmp_path / "two" / "results.json").read_text())
    assert three["reused_outputs"] == ["tts/test x smap", "tts/test x transcript"]
    assert [(r["system"], r["scores"]) for r in three["results"]] == [(r["system"], r["scores"]) for r in two["results"]]
