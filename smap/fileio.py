"""Atomic writes: a file or folder is either whole at its path or not there.

Each writer fills a temporary sibling (same folder, so the rename stays on one file system) named
``.NAME.tmpPID`` and renames it into place with `os.replace`; a kill, a full disk or an exception
leaves the old version (or nothing) at the path and removes the temporary.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def _tmp_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


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


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename: never half-written."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` through a temporary file and a rename: never half-written."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_dir(target: str | Path, save: Callable[[Path], object]) -> None:
    """Call `save(tmp_dir)` to fill a temporary folder, then rename it to `target`.

    A folder cannot be renamed over a non-empty one: a `target` that appeared meanwhile (a
    concurrent writer of the same content, e.g. a cache) is kept and the temporary removed."""
    target = Path(target)
    tmp = _tmp_of(target)
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed writer of the same pid
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        save(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after a rename; else what a failure left
