"""The training loop shared by Stage 1 (`pretrain`) and Stage 2 (`attach`).

A stage supplies a model, a batch sampler, a `loss_fn(model, batch) -> (loss, logs)` and an
`evaluate(model) -> metrics`; `fit` does the rest, the same way for both: Accelerate (devices,
mixed precision, accumulation, several processes), AdamW with a cosine schedule after a linear
warm-up, gradient clipping, a NaN/inf guard, progress (`smap.progress`), TensorBoard plus a JSONL log, a
time budget, and checkpoints that `--resume` continues from exactly.

Run folder:
    checkpoints/step-000500/   accelerator.save_state + trainer_state.json (renamed into place whole)
    log.jsonl                  one line every `log_every` steps (and at the last) and per evaluation, with
                               the run's seconds so far, to the millisecond (a resumed run counts on)
    tb/                        TensorBoard

One run per folder: a run takes a lock on it (a second trainer stops at once) and refuses a folder
that holds anything unless told to `resume` the run there or `overwrite` it. Each checkpoint
records its run's id, so that pruning never removes another run's, and the training data's
fingerprint, so that `--resume` refuses stores that changed; a checkpoint that cannot be read is
named and the one before it is resumed from.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import ProjectConfiguration, set_seed
from rich.console import Console

from smap.fileio import FolderLock, append_lines, atomic_write_text, replace_dir
from smap.precision import Precision, resolve
from smap.progress import literal, one_line, progress

console = Console(stderr=True)
STATE_FILE = "trainer_state.json"
# What a run writes in its folder (this loop's, then pretrain's and attach's): what --overwrite removes.
RUN_FILES = ("checkpoints", "log.jsonl", "tb", "mapper", "mapper_config.json", "pretrain_report.json",
             "attach_config.json", "attach_report.json", "samples.jsonl", "smap_model.json")


class TrainingError(RuntimeError):
    """A run that cannot go on (e.g. repeated non-finite losses); the message says why."""


@dataclass
class LoopConfig:
    out: str
    steps: int = 1000
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    grad_accum: int = 1
    clip: float = 1.0
    mixed_precision: str = "auto"  # smap.precision: bf16 only where the device computes it natively
    seed: int = 0
    save_every: int = 500
    eval_every: int = 500
    log_every: int = 10  # steps between log rows (log.jsonl, TensorBoard, the progress line's loss)
    keep: int = 2
    resume: bool = False
    overwrite: bool = False  # remove the run in `out` first
    time_budget: float | None = None  # minutes
    max_bad_steps: int = 5  # consecutive non-finite losses before giving up
    eval_at_start: bool = False  # validate before the first step too (the starting point of the curve)
    workers: int = 0  # DataLoader processes reading batches beside the step (a GPU's data wait)


def make_accelerator(cfg: LoopConfig) -> tuple[Accelerator, Precision]:
    """The run's Accelerator, in the precision `cfg.mixed_precision` resolves to on its device
    (`smap.precision.resolve`: 'auto' is bf16 only where the device computes it natively); printed."""
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    chosen = resolve(cfg.mixed_precision, "cpu" if cpu or not torch.cuda.is_available() else "cuda")
    # Accelerate keeps one state per process; a second run in the same process (tests, notebooks)
    # with another precision would be refused.
    AcceleratorState._reset_state(True)
    acc = Accelerator(
        mixed_precision=chosen.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=cfg.out, logging_dir=str(Path(cfg.out) / "tb")),
    )
    set_seed(cfg.seed)
    claim_run_folder(acc, cfg)
    if acc.is_local_main_process:
        console.print(f"precision: {chosen}", highlight=False)
    return acc, chosen


# The run folders this process has locked, held until it ends: pretrain and attach still write their
# model after `fit`. A process that runs again in a folder it holds (tests, a notebook) keeps its lock.
_held: dict[Path, FolderLock] = {}


def claim_run_folder(acc: Accelerator, cfg: LoopConfig) -> None:
    """Lock `cfg.out` (main process) and make sure that it holds no other run: a folder with
    anything in it is refused unless `cfg.resume` (continue that run) or `cfg.overwrite` (remove
    its files first; anything that is not a run's file is left, and refused)."""
    if cfg.resume and cfg.overwrite:
        raise ValueError("--resume continues the run in --out, --overwrite replaces it: give one of them")
    out = Path(cfg.out)
    if acc.is_main_process and out.resolve() not in _held:
        _held[out.resolve()] = FolderLock(out)
    found = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if found and not (cfg.resume or cfg.overwrite):
        raise TrainingError(f"--out {out} holds another run ({', '.join(found)}): give --resume to continue it, "
                            "--overwrite to replace it, or another --out")
    others = [name for name in found if name not in RUN_FILES and not (name.startswith(".") and ".tmp" in name)]
    if found and cfg.overwrite and others:
        raise TrainingError(f"--out {out}: --overwrite removes a run's files, and {', '.join(others)} is not one; "
                            "move it, or choose another --out")
    acc.wait_for_everyone()  # every process has looked before a file goes
    if found and cfg.overwrite and acc.is_main_process:
        for name in found:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        console.print(f"--overwrite: removed {literal(', '.join(found))} from {literal(out)}", highlight=False)
    acc.wait_for_everyone()


def data_fingerprint(dataset) -> str | None:
    """What a run trains on, for `--resume` to check: the stores' shards (names and checksums), in
    order. None for a dataset not read from stores (no `stores`)."""
    stores = getattr(dataset, "stores", None)
    if stores is None:
        return None
    shards = [[(s["file"], s["sha256"]) for s in store.info.shards] for store in stores]
    return hashlib.sha256(json.dumps(shards).encode()).hexdigest()[:16]


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup: int, total: int,
                       time_progress: Callable[[], float] | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak rate over `warmup` steps, then cosine decay to zero at `total`.

    With `time_progress` (the share of a time budget spent, 0..1), the decay follows whichever of
    steps and time is further along, so a run stopped by its budget still ends at a low rate.
    """

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        spent = (step - warmup) / max(1, total - warmup)
        if time_progress is not None:
            spent = max(spent, time_progress())
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, spent)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def checkpoints(out: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(out) / "checkpoints"
    return sorted(p for p in root.glob("step-*") if (p / STATE_FILE).is_file()) if root.is_dir() else []


# accelerate's file for the first object given to `register_for_checkpointing`: the schedule.
SCHEDULE_FILE = "custom_checkpoint_0.pkl"


def _run_of(checkpoint: Path) -> str | None:
    try:
        return json.loads((checkpoint / STATE_FILE).read_text()).get("run")
    except (OSError, ValueError, AttributeError):
        return None


class Checkpointer:
    """Saves to a temporary folder and renames it into place, so a kill or a full disk never
    leaves a half-written checkpoint where `--resume` would find it; keeps the run's newest `keep`.

    The scheduler is not prepared (see `fit`), so accelerate saves it only as a registered object."""

    def __init__(self, acc: Accelerator, out: str | Path, keep: int, scheduler: torch.optim.lr_scheduler.LRScheduler):
        self.acc, self.root, self.keep, self.scheduler = acc, Path(out) / "checkpoints", keep, scheduler
        self.registered = False

    def _register(self) -> None:
        if not self.registered:
            self.acc.register_for_checkpointing(self.scheduler)
            self.registered = True

    def save(self, step: int, state: dict) -> Path | None:
        """Checkpoint `step` with the trainer `state` (its "run": the run's id; older checkpoints of
        that run beyond `keep` are removed, another run's never)."""
        self._register()
        final = self.root / f"step-{step:06d}"
        tmp = self.root / f".tmp-step-{step:06d}"
        try:
            if self.acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            self.acc.wait_for_everyone()
            self.acc.save_state(str(tmp))
            if self.acc.is_main_process:
                (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}))  # tmp is renamed whole below
                replace_dir(tmp, final)
                ours = [c for c in checkpoints(self.root.parent) if _run_of(c) == state["run"]]
                for old in ours[: -self.keep]:
                    shutil.rmtree(old, ignore_errors=True)
            self.acc.wait_for_everyone()
            return final
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            last = checkpoints(self.root.parent)
            console.print(
                f"[bold yellow]warning:[/] checkpoint at step {step} failed ({literal(e.strerror or e)}); "
                f"the last good one is {literal(last[-1] if last else 'none')} and is intact"
            )
            return None

    def restore(self) -> dict:
        """Load the newest checkpoint that every process can read into the accelerator; return its
        trainer state. One that cannot be read (cut by a crash, damaged) is named in one line and the
        one before it tried."""
        found = checkpoints(self.root.parent)
        if not found:
            raise FileNotFoundError(f"{self.root}: no checkpoint to resume from")
        for n, checkpoint in enumerate(reversed(found)):
            try:
                state, error = self._load(checkpoint), None
            except Exception as e:  # torch, safetensors and pickle each raise their own types
                state, error = None, e
            # All processes resume from the same one, or none does.
            read = self.acc.gather(torch.tensor([int(error is None)], device=self.acc.device)).all()
            if read:
                return state
            why = literal(one_line(error)) if error is not None else "not readable by another process"
            console.print(f"[bold yellow]warning:[/] checkpoint {literal(checkpoint)} cannot be read ({why}); "
                          + ("resuming from the one before" if n + 1 < len(found) else "no other is left"),
                          highlight=False, soft_wrap=True)
        raise TrainingError(f"{self.root}: no checkpoint can be read; start the run anew with --overwrite")

    def _load(self, checkpoint: Path) -> dict:
        state = json.loads((checkpoint / STATE_FILE).read_text())
        older = not (checkpoint / SCHEDULE_FILE).is_file()  # from an smap that prepared the scheduler
        if not older:
            self._register()
        self.acc.load_state(str(checkpoint))
        if older:  # the schedule is a function of the optimiser step: replay it there
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "scheduler stepped before the optimizer"
                for _ in range(state["step"]):
                    self.scheduler.step()
        return state


class JsonlLog:
    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, row: dict) -> None:
        if self.enabled:
            append_lines(self.path, [json.dumps(row)])

    def drop_after(self, step: int) -> None:
        """On resume: rows past the checkpoint's step (and a line cut by a kill) go, as those steps are redone."""
        if not (self.enabled and self.path.is_file()):
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                pass
        atomic_write_text(self.path, "".join(keep))


def fit(
    acc: Accelerator,
    cfg: LoopConfig,
    model: torch.nn.Module,
    sampler,
    loader: torch.utils.data.DataLoader,
    loss_fn: Callable[[torch.nn.Module, object], tuple[torch.Tensor, dict]],
    evaluate: Callable[[torch.nn.Module], dict] | None = None,
    run_name: str = "train",
    hparams: dict | None = None,
) -> dict:
    """Train `model` for `cfg.steps` optimiser steps; returns the last evaluation's metrics.

    With `cfg.eval_at_start`, the result also holds the metrics before training as `initial_*`.
    `loader` iterates `sampler` (a batch sampler with `start_epoch` and `batches(epoch)`); both are unprepared: the
    model, optimiser and loader are prepared here. The schedule follows optimiser steps whatever the number of
    processes (`cosine_with_warmup` at `cfg.steps`).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel per parameter, not a dozen small ones each (a CPU's default): a third of the
    # optimiser's time on a CPU, the same update to float rounding.
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    t0 = time.monotonic()  # moved back by the time already spent when resuming
    budget_s = cfg.time_budget * 60 if cfg.time_budget else None
    scheduler = cosine_with_warmup(optimizer, cfg.warmup, cfg.steps,
                                   (lambda: (time.monotonic() - t0) / budget_s) if budget_s else None)
    # The scheduler stays unprepared: accelerate steps a prepared one once per process at each
    # optimiser step, so on 8 GPUs the rate would reach zero an eighth of the way into the run.
    model, optimizer, loader = acc.prepare(model, optimizer, loader)
    ckpt = Checkpointer(acc, cfg.out, cfg.keep, scheduler)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    log = JsonlLog(Path(cfg.out) / "log.jsonl", acc.is_main_process)

    # (epoch, pos): where the data stands; batches per epoch vary with the packing, so both are kept.
    step, epoch, pos, bad_total, elapsed_before = 0, 0, 0, 0, 0.0
    run_id, data = uuid.uuid4().hex[:12], data_fingerprint(loader.dataset)
    if cfg.resume and checkpoints(cfg.out):
        state = ckpt.restore()
        if state.get("data", data) != data:  # checkpoints from before the fingerprint pass
            raise TrainingError(f"--resume: the --train stores changed since the run in {cfg.out} started (their "
                                "shards differ): resume with the stores it started with, or start anew with --overwrite")
        step, epoch, pos = state["step"], state["epoch"], state["pos"]
        bad_total, elapsed_before = state["bad_steps"], state["elapsed"]
        run_id = state.get("run", run_id)
        log.drop_after(step)
        console.print(f"resuming from step {step}")
    elif cfg.resume:
        console.print(f"[yellow]no checkpoint in {literal(cfg.out)}; starting from scratch[/]")
    acc.init_trackers(run_name, config={k: v for k, v in {**asdict(cfg), **(hparams or {})}.items()
                                        if isinstance(v, (int, float, str, bool))})

    if not sampler.batches(0):
        raise TrainingError("the training data holds no batch")
    t0 -= elapsed_before
    metrics: dict = {}
    bad_run = 0
    running, n_running = 0.0, 0

    def state() -> dict:
        return {"epoch": epoch, "pos": pos, "bad_steps": bad_total, "elapsed": time.monotonic() - t0, "run": run_id,
                "data": data}

    def seconds() -> float:
        """The run's time so far, to the millisecond: step times are differences of it (`--log-every 1`)."""
        return round(time.monotonic() - t0, 3)

    def run_eval() -> dict:
        if evaluate is None:
            return {}
        model.eval()
        with torch.no_grad():
            m = evaluate(acc.unwrap_model(model))
        model.train()
        acc.log({f"valid/{k}": v for k, v in m.items()}, step=step)
        log.write({"step": step, "seconds": seconds(), **{f"valid_{k}": v for k, v in m.items()}})
        console.print(f"step {step}: " + "  ".join(f"{k} {v:.4g}" for k, v in m.items()))
        return m

    initial = run_eval() if cfg.eval_at_start and step == 0 else {}
    model.train()
    shown = console if acc.is_local_main_process else None
    with progress(shown, run_name, cfg.steps, "steps", completed=step, deadline=t0 + budget_s if budget_s else None) as update:
        while step < cfg.steps:
            sampler.start_epoch(epoch)
            epoch_loader = acc.skip_first_batches(loader, pos) if pos else loader
            for batch in epoch_loader:
                with acc.accumulate(model):
                    loss, logs = loss_fn(model, batch)
                    finite = bool(torch.isfinite(loss.detach()).all())
                    if finite:
                        acc.backward(loss)
                        if acc.sync_gradients and cfg.clip > 0:
                            acc.clip_grad_norm_(params, cfg.clip)
                        optimizer.step()
                        # once per optimiser step, none when fp16's scaler skipped it (as accelerate's would)
                        if acc.sync_gradients and not acc.optimizer_step_was_skipped:
                            scheduler.step()
                    optimizer.zero_grad()
                pos += 1
                if not finite:
                    bad_total += 1
                    bad_run += 1
                    console.print(f"[yellow]warning:[/] non-finite loss at step {step}; batch skipped ({bad_total} so far)")
                    if bad_run >= cfg.max_bad_steps:
                        ckpt_list = checkpoints(cfg.out)
                        raise TrainingError(
                            f"{bad_run} non-finite losses in a row at step {step}: lower --lr or check the data; "
                            f"last good checkpoint: {ckpt_list[-1] if ckpt_list else 'none'}"
                        )
                    continue
                bad_run = 0
                running += loss.item()
                n_running += 1
                if not acc.sync_gradients:
                    continue
                step += 1
                if step % cfg.log_every == 0 or step == cfg.steps:
                    avg = running / max(n_running, 1)
                    lr = scheduler.get_last_lr()[0]
                    acc.log({"train/loss": avg, "train/lr": lr, **{f"train/{k}": v for k, v in logs.items()}}, step=step)
                    log.write({"step": step, "seconds": seconds(), "loss": avg, "lr": lr, **logs})
                    running, n_running = 0.0, 0
                    update(completed=step, info=f"loss {avg:.4f} lr {lr:.2e}")
                else:
                    update(completed=step)
                over_budget = budget_s is not None and time.monotonic() - t0 >= budget_s
                if step % cfg.eval_every == 0 and step < cfg.steps:
                    metrics = run_eval()
                if step % cfg.save_every == 0 or step == cfg.steps or over_budget:
                    ckpt.save(step, state())
                if over_budget:
                    console.print(f"time budget of {cfg.time_budget} min reached at step {step}")
                    break
                if step >= cfg.steps:
                    break
            else:
                epoch, pos = epoch + 1, 0
                continue
            break
    metrics = run_eval() or metrics
    acc.end_training()
    return {**metrics, **{f"initial_{k}": v for k, v in initial.items()},
            "steps": step, "bad_steps": bad_total, "seconds": seconds()}
