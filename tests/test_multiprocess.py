"""Training under several processes: two CPU processes (gloo) on a tiny `smap pretrain` run, started
by torchrun as `accelerate launch --multi_gpu --num_processes 8` starts the paper's 8-GPU runs
(`accelerate launch --cpu` starts several CPU processes only through mpirun)."""

import json
import subprocess
import sys

import pytest
import torch

from conftest import child_env, write_store
from smap.training import cosine_with_warmup

STEPS, WARMUP, LR, LOG_EVERY = 40, 15, 1e-3, 10  # the log has a row every 10 steps


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
    # the 40-step cosine, from the scheduler state that the checkpoint holds.
    resumed = tmp_path / "resumed"
    _launch(tmp_path, train, tiny_llama, resumed, STEPS // 2)
    log = _launch(tmp_path, train, tiny_llama, resumed, STEPS, extra=["--resume"])
    rows = [r for r in log if "lr" in r and r["step"] > STEPS // 2]
    assert [r["step"] for r in rows] == logged[len(logged) // 2:]
    assert [r["lr"] for r in rows] == pytest.approx([expected[s - 1] for s in logged[len(logged) // 2:]], rel=1e-6)
