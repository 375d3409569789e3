"""Several processes: two CPU processes (gloo) on a tiny `smap pretrain` run and a small `smap prepare`,
started by torchrun as `accelerate launch --multi_gpu --num_processes 8` starts the paper's 8-GPU runs
(`accelerate launch --cpu` starts several CPU processes only through mpirun)."""

import json
import subprocess
import sys

import pytest
import torch
from test_prepare import tiny_encoder  # noqa: F401  (a fixture; tests/ is on sys.path)

from conftest import child_env, write_store
from smap.data.store import FeatureStore
from smap.mapper import SpeechMapper
from smap.training import cosine_with_warmup

# The log has a row every 10 steps. The warm-up spans the first half, whose rates do not depend on
# --steps: a run of STEPS // 2 steps is the first half of a run of STEPS.
STEPS, WARMUP, LR, LOG_EVERY = 40, 20, 1e-3, 10


def _launch(tmp_path, train, llm, out, steps, extra=()):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "smap.cli",
           "pretrain", "--train", str(train), "--llm", str(llm), "--out", str(out), "--preset", "tiny",
           "--steps", str(steps), "--warmup", str(WARMUP), "--lr", str(LR), "--max-frames", "200",
           "--save-every", "20", "--eval-every", "1000", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=child_env(ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _single_process_lrs(steps: int) -> list[float]:
    """The rate after each of `steps` optimiser steps, as one process schedules it."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = cosine_with_warmup(optimizer, WARMUP, steps)
    lrs = []
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    return lrs


def test_two_processes_follow_the_schedule_per_optimiser_step_and_resume_exactly(tmp_path, sentences, tiny_llama):
    train = write_store(tmp_path / "train", sentences[:32])
    expected = _single_process_lrs(STEPS)
    assert expected[WARMUP - 1] == pytest.approx(LR) and expected[-1] == pytest.approx(0.0, abs=1e-12)

    logged = list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    log = _launch(tmp_path, train, tiny_llama, tmp_path / "run", STEPS)
    rows = [r for r in log if "lr" in r]
    assert [r["step"] for r in rows] == logged
    # A prepared scheduler steps once per process at each optimiser step: at step 20 of 40 it
    # would stand at 40, a rate of zero.
    assert [r["lr"] for r in rows] == pytest.approx([expected[s - 1] for s in logged], rel=1e-6)

    # A run of 20 steps, continued to 40 from its checkpoint: the schedule picks up at step 20 of
    # the 40-step cosine, from the scheduler state that the checkpoint holds, and the mapper ends
    # bit for bit as the uninterrupted run's.
    resumed = tmp_path / "resumed"
    _launch(tmp_path, train, tiny_llama, resumed, STEPS // 2)
    log = _launch(tmp_path, train, tiny_llama, resumed, STEPS, extra=["--resume"])
    rows = [r for r in log if "lr" in r and r["step"] > STEPS // 2]
    assert [r["step"] for r in rows] == logged[len(logged) // 2:]
    assert [r["lr"] for r in rows] == pytest.approx([expected[s - 1] for s in logged[len(logged) // 2:]], rel=1e-6)
    straight = SpeechMapper.from_pretrained(tmp_path / "run").state_dict()
    continued = SpeechMapper.from_pretrained(resumed).state_dict()
    assert straight.keys() == continued.keys()
    assert [k for k in straight if not torch.equal(straight[k], continued[k])] == []


def _prepare(out, encoder, processes: int) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else []
    cmd = [sys.executable, *launcher, "-m", "smap.cli", "prepare", "--dataset", "tts", "--split", "test",
           "--tts-train", "10", "--tts-dev", "0", "--tts-test", "12", "--shard-size", "3", "--encoder", encoder,
           "--out", str(out)]
    # On the CPU (two processes on a one-GPU machine would each want a GPU of their own), one thread
    # each: the single process computes as each of the two does.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=child_env(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES=""))
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_two_processes_share_prepare_and_store_what_one_process_stores(tmp_path, tiny_encoder):  # noqa: F811
    """Each process encodes every other chunk of `--shard-size` clips, in the batches one process
    would form from that chunk: its features are the one process's, bit for bit."""
    two, one = tmp_path / "two", tmp_path / "one"
    _prepare(two, tiny_encoder, processes=2)
    names = sorted(p.name for p in two.glob("shard-*.safetensors"))
    assert names == ["shard-r0-00000.safetensors", "shard-r0-00001.safetensors",
                     "shard-r1-00000.safetensors", "shard-r1-00001.safetensors"]
    report = json.loads((two / "prepare_report.json").read_text())
    assert (report["stored"], report["encoded_now"], report["skipped"]) == (12, 12, 0)

    _prepare(one, tiny_encoder, processes=1)
    shared, alone = FeatureStore(two), FeatureStore(one)  # one index over both processes' shards
    assert sorted(r["id"] for r in shared.records) == [f"tts-test-{i:05d}" for i in range(12)]
    by_id = {r["id"]: (r, f) for r, f in alone}
    assert {r["id"]: r for r, _ in shared} == {uid: r for uid, (r, _) in by_id.items()}
    assert [r["id"] for r, f in shared if not torch.equal(f, by_id[r["id"]][1])] == []
