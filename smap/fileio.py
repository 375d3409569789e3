"""Files on disk: atomic writes, appended lines, names read from files, and folder locks.

Each writer fills a temporary sibling (same folder, so the rename stays on one file system) named
``.NAME.tmpPID``, flushes it to disk and renames it into place with `os.replace`, then flushes the
folder entry, so that after a crash or a power cut the path holds the old version or the new one,
never an empty or half-written file; a kill, a full disk or an exception leaves the old version
(or nothing) at the path and removes the temporary.

A folder that one command writes (a feature store, a run) is locked against a second command
for as long as the first runs (`FolderLock`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path, PurePath


class FolderBusyError(RuntimeError):
    """Another process holds a folder's lock; the message names the folder and its pid."""


def _tmp_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entries to disk: what makes a rename or a new file in it survive a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
    for path in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]:
        _fsync_dir(path)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp)` to make the file at a temporary path, then rename it to `path`.

    For writers that take a path (safetensors' save_file, matplotlib's savefig, soundfile)."""
    path = Path(path)
    tmp = _tmp_of(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # on disk before the rename, so a crash cannot leave an empty file
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename: never half-written."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` through a temporary file and a rename: never half-written."""
    atomic_write_bytes(path, text.encode("utf-8"))


def append_lines(path: str | Path, lines: Iterable[str]) -> None:
    """Append `lines` (each without its newline) to a log file, in one write, flushed to disk.

    A log grows by whole batches of lines: a kill can cut at most the batch being written."""
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    if not data:
        return
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def replace_dir(tmp: str | Path, target: str | Path) -> None:
    """Make the folder filled at `tmp` the one at `target` (an old `target` is removed first), on disk.

    For folders that several processes fill together (a checkpoint), so not `atomic_write_dir`'s
    own temporary. A crash between the removal and the rename leaves `tmp` whole, and no `target`."""
    tmp, target = Path(tmp), Path(target)
    _fsync_tree(tmp)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    _fsync_dir(target.parent)


def atomic_write_dir(target: str | Path, save: Callable[[Path], object], replace: bool = False) -> None:
    """Call `save(tmp_dir)` to fill a temporary folder, then rename it to `target`.

    A folder cannot be renamed over a non-empty one: a `target` that appeared meanwhile (a
    concurrent writer of the same content, e.g. a cache) is kept and the temporary removed; with
    `replace`, an old `target` gives way to the new folder instead (`replace_dir`)."""
    target = Path(target)
    tmp = _tmp_of(target)
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed writer of the same pid
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        save(tmp)
        if replace:
            replace_dir(tmp, target)
            return
        _fsync_tree(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
        _fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after a rename; else what a failure left


def member(folder: str | Path, name: object, source: str | Path) -> Path:
    """`folder / name` for a file name read from `source` (an index listing the folder's files).

    A name that is not a relative path staying inside `folder` (absolute, with '..', empty, not a
    string) is refused in one line naming `source`: an index must not send a reader elsewhere."""
    if not isinstance(name, str) or not name or PurePath(name).is_absolute() or ".." in PurePath(name).parts:
        raise ValueError(f"{source}: {name!r} is not a file name inside {folder}")
    return Path(folder) / name


class FolderLock:
    """An exclusive lock on a folder, held by this process until `release` (or its end).

    The lock is `fcntl.flock` on ``.NAME.smap-lock`` beside the folder (so that the folder itself
    is not created before the command has checked its input), with the holder's pid in it for the
    error message. The system drops the lock when its holder dies, so a lock file left by a killed
    process does not block. A second lock on a locked folder, from any process, raises
    `FolderBusyError` at once."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).resolve()
        self.path = self.folder.with_name(f".{self.folder.name}.smap-lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            self.release()
            raise FolderBusyError(f"{self.folder}: in use by another smap process (pid {holder}); "
                                  "wait for it to finish, or choose another output folder") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the lock; the file stays (see above)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
