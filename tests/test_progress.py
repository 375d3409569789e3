import io
import time

from rich.console import Console
from rich.progress import Progress

from smap.progress import BudgetTimeRemaining, progress


def _log() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200), out  # a file: not a terminal, as a log or a pipe is


def test_a_log_gets_plain_lines_as_the_work_goes_and_at_the_end(monkeypatch):
    monkeypatch.setattr("smap.progress.LOG_EVERY_S", 0.0)
    console, out = _log()
    with progress(console, "prepare train", 10, "utterances") as update:
        update(advance=4, info="12.5 utt/s")
        update(6)  # an update is an Advance: what generation and the systems call
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("prepare train: 4/10 utterances, 12.5 utt/s, 0:00 elapsed, ")
    assert lines[0].endswith(" left")
    assert lines[1].startswith("prepare train: 10/10 utterances, 12.5 utt/s")  # the info is kept
    assert "left" not in lines[1]


def test_a_log_line_is_not_wrapped_on_a_narrow_console(monkeypatch):
    monkeypatch.setattr("smap.progress.LOG_EVERY_S", 0.0)
    out = io.StringIO()
    with progress(Console(file=out, width=40), "prepare train -> train", 10336, "utterances") as update:
        update(2048, info="83.9 utt/s")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prepare train -> train: 2048/10336 utterances, 83.9 utt/s")
    assert lines[0].endswith(" left")


def test_a_log_is_not_flooded_and_the_last_line_always_comes():
    console, out = _log()
    with progress(console, "pretrain", 1000, "steps") as update:
        for step in range(1, 1001):
            update(completed=step)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pretrain: 1000/1000 steps")

    console, out = _log()  # stopped early (a time budget, an error): where it stopped is still told
    with progress(console, "pretrain", 100_000, "steps") as update:
        for step in range(1, 301):
            update(completed=step, info="loss 0.5")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pretrain: 300/100000 steps, loss 0.5")


def test_a_resumed_budgeted_run_counts_from_where_it_stands(monkeypatch):
    monkeypatch.setattr("smap.progress.LOG_EVERY_S", 0.0)
    console, out = _log()
    with progress(console, "attach-asr", 100_000, "steps", completed=500, deadline=time.monotonic() + 90) as update:
        time.sleep(0.05)
        update(completed=501, info="loss 2.1")
    line = out.getvalue().strip()
    assert line.startswith("attach-asr: 501/100000 steps, loss 2.1")
    left = line.rsplit(", ", 1)[1].removesuffix(" left")
    minutes, seconds = map(int, left.split(":"))
    assert 80 <= 60 * minutes + seconds <= 90  # the budget, not 99,499 steps at the measured rate


def test_a_terminal_gets_the_bar():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with progress(console, "pretrain", 4, "steps") as update:
        update(completed=4, info="loss 0.5")
    assert "4/4" in out.getvalue() and "loss 0.5" in out.getvalue()


def test_eta_is_capped_by_the_time_budget():
    column = BudgetTimeRemaining(time.monotonic() + 90)
    with Progress(column, disable=True) as bar:
        task = bar.add_task("run", total=100_000)
        for k in range(1, 4):  # a step rate that would take hours for 100,000 steps
            time.sleep(0.05)
            bar.update(task, completed=k)
        h, m, s = map(int, column.render(bar.tasks[0]).plain.split(":"))
        assert 80 <= 3600 * h + 60 * m + s <= 90
        assert BudgetTimeRemaining(None).render(bar.tasks[0]).plain != column.render(bar.tasks[0]).plain
