"""Progress on long work (encoding a corpus, a training run): a rich bar on a terminal, plain lines
in a log; and data shown as data on a console (`printable`, `literal`, `one_line`).

Rich draws its bar on a console that is not a terminal (a log file, `| tee`, a CI job) only once, at
the end; there a line at most every LOG_EVERY_S seconds, and the last one, tell that the work moves::

    stage1: 1250/100000 steps, loss 0.0123 lr 1.9e-03, 15:02 elapsed, 24:58 left
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

LOG_EVERY_S = 10.0

# advance(n): n more items done; what work that reports as it goes takes (`smap.generate`).
Advance = Callable[[int], None]
# update(advance=0, completed=None, info=None): the amount just done (so an `update` is an `Advance`),
# or the count reached, and the short text beside the count (a rate, a loss), kept until the next one.
Update = Callable[..., None]


def printable(value: object) -> str:
    """`value` as text for one console line: control characters escaped as Python writes them
    (a newline as \\n, a terminal escape as \\x1b), so that a datum (an id, a transcript, a model's
    output) stays on its line and cannot drive the terminal."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def literal(value: object) -> str:
    """`printable(value)` for a place in rich markup: a datum holding '[/INST]' or '[bold]' is shown
    as written, never read as a style (nor refused with a MarkupError)."""
    return escape(printable(value))


def one_line(e: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def silent(n: int) -> None:
    """The `Advance` of work no one watches."""


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def time_left(deadline: float | None, estimate: float | None) -> float | None:
    """Seconds left: the rate's `estimate`, or what is left until `deadline` (monotonic) if that
    comes first (a run with a time budget asks for far more steps than it will make)."""
    if deadline is None:
        return estimate
    left = max(deadline - time.monotonic(), 0.0)
    return left if estimate is None else min(left, estimate)


class BudgetTimeRemaining(TimeRemainingColumn):
    """The bar's time left, capped by a time budget's deadline (see `time_left`)."""

    def __init__(self, deadline: float | None):
        super().__init__()
        self.deadline = deadline

    def render(self, task) -> Text:
        if self.deadline is None or task.finished:
            return super().render(task)
        left = time_left(self.deadline, task.time_remaining)
        minutes, seconds = divmod(int(left), 60)
        return Text(f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}", style="progress.remaining")


@contextlib.contextmanager
def progress(console: Console | None, description: str, total: int, unit: str, completed: int = 0,
             deadline: float | None = None) -> Iterator[Update]:
    """Show work of `total` `unit`s on `console` (None: nothing shown); yields `update`.

    `completed`: the count already done (a resumed run), which the rate of the time left leaves out;
    `deadline`: the monotonic time a time budget runs out, which caps the time left.
    """
    if console is None:
        yield lambda advance=0, completed=None, info=None: None
        return
    if console.is_terminal:
        # the column formats its text with str.format: braces in a folder's name are doubled
        shown = literal(description).replace("{", "{{").replace("}", "}}")
        bar = Progress(TextColumn(f"[bold]{shown}[/]"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                       BudgetTimeRemaining(deadline), console=console)
        with bar:
            task = bar.add_task(description, total=total, completed=completed, info="")

            def update(advance: int = 0, completed: int | None = None, info: str | None = None) -> None:
                fields = {} if info is None else {"info": info}
                bar.update(task, completed=completed, advance=advance or None, **fields)

            yield update
        return

    lines = _Lines(console, description, total, unit, completed, deadline)
    try:
        yield lines.update
    finally:
        lines.close()


class _Lines:
    """The plain-line form of `progress`: a line when LOG_EVERY_S has passed or the work is done,
    and, on closing, the last count if no line has shown it (a run stopped by its time budget)."""

    def __init__(self, console: Console, description: str, total: int, unit: str, completed: int,
                 deadline: float | None):
        self.console, self.description, self.total, self.unit, self.deadline = console, description, total, unit, deadline
        self.start = self.last = time.monotonic()
        self.first = self.done = self.shown = completed
        self.info = ""

    def update(self, advance: int = 0, completed: int | None = None, info: str | None = None) -> None:
        self.done = (self.done if completed is None else completed) + advance
        if info is not None:
            self.info = info
        if time.monotonic() - self.last >= LOG_EVERY_S or self.done >= self.total:
            self._line()

    def close(self) -> None:
        if self.done != self.shown:
            self._line()

    def _line(self) -> None:
        now = self.last = time.monotonic()
        self.shown = self.done
        rate = (self.done - self.first) / (now - self.start) if now > self.start else 0.0
        left = time_left(self.deadline, (self.total - self.done) / rate if rate > 0 else None)
        parts = [f"{self.done}/{self.total} {self.unit}", self.info, f"{_clock(now - self.start)} elapsed",
                 f"{_clock(left)} left" if left is not None and self.done < self.total else ""]
        # soft_wrap: one line however narrow the console (a log's width is rich's default, 80)
        self.console.print(printable(f"{self.description}: " + ", ".join(p for p in parts if p)), markup=False,
                           highlight=False, soft_wrap=True)
