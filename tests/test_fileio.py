"""smap.fileio: writes that survive a crash (file and folder entry on disk), index names kept inside
their folder, folder locks."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from conftest import child_env
from smap import fileio
from smap.fileio import FolderBusyError, FolderLock, append_lines, atomic_write_dir, atomic_write_text, member, replace_dir


@pytest.fixture()
def fsyncs(monkeypatch):
    """Every os.fsync, as (a folder?, the path's entries then): what reached the disk, in order."""
    calls = []
    real = os.fsync

    def fsync(fd):
        calls.append((stat.S_ISDIR(os.fstat(fd).st_mode), os.readlink(f"/proc/self/fd/{fd}")))
        return real(fd)

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    return calls


def test_an_atomic_write_flushes_the_file_then_the_folder_entry_of_its_rename(tmp_path, fsyncs):
    target = tmp_path / "report.json"
    atomic_write_text(target, "{}")
    assert target.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == ["report.json"]
    # the file's data before the rename (under its temporary name), the folder's entry after it
    assert [d for d, _ in fsyncs] == [False, True]
    assert fsyncs[0][1].endswith(".report.json.tmp%d" % os.getpid()) and fsyncs[1][1] == str(tmp_path)


def test_a_folder_written_whole_is_on_disk_with_its_entry(tmp_path, fsyncs):
    atomic_write_dir(tmp_path / "cache", lambda tmp: (tmp.mkdir(), (tmp / "vocab.json").write_text("v")))
    assert (tmp_path / "cache" / "vocab.json").read_text() == "v"
    assert fsyncs[-1] == (True, str(tmp_path)) and (False, str(tmp_path / f".cache.tmp{os.getpid()}" / "vocab.json")) in fsyncs

    fsyncs.clear()
    (tmp_path / "tmp-ckpt").mkdir()
    (tmp_path / "tmp-ckpt" / "model.safetensors").write_bytes(b"new")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "old.bin").write_bytes(b"old")
    replace_dir(tmp_path / "tmp-ckpt", tmp_path / "ckpt")
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["model.safetensors"] and not (tmp_path / "tmp-ckpt").exists()
    assert fsyncs[0] == (False, str(tmp_path / "tmp-ckpt" / "model.safetensors")) and fsyncs[-1] == (True, str(tmp_path))


def test_appended_lines_are_whole_and_on_disk(tmp_path, fsyncs):
    log = tmp_path / "skips.jsonl"
    append_lines(log, ['{"id": 1}', '{"id": 2}'])
    append_lines(log, [])  # nothing to write: no write, no flush
    append_lines(log, ['{"id": 3}'])
    assert log.read_text() == '{"id": 1}\n{"id": 2}\n{"id": 3}\n' and len(fsyncs) == 2


@pytest.mark.parametrize("name", ["../elsewhere.safetensors", "/etc/passwd", "a/../../b", "", None, 3])
def test_a_name_read_from_an_index_stays_inside_its_folder(tmp_path, name):
    with pytest.raises(ValueError) as e:
        member(tmp_path, name, tmp_path / "index.json")
    assert str(e.value) == f"{tmp_path / 'index.json'}: {name!r} is not a file name inside {tmp_path}"


def test_names_inside_the_folder_are_kept(tmp_path):
    assert member(tmp_path, "shard-00000.safetensors", "x") == tmp_path / "shard-00000.safetensors"
    assert member(tmp_path, "sub/model-00001.safetensors", "x") == tmp_path / "sub" / "model-00001.safetensors"


HOLD = """
import sys, time
from smap.fileio import FolderLock
lock = FolderLock(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""


def test_a_locked_folder_refuses_a_second_holder_and_a_dead_holder_blocks_nothing(tmp_path):
    out = tmp_path / "store"
    with FolderLock(out) as lock:
        assert not out.exists()  # the lock is beside the folder: nothing written in it yet
        with pytest.raises(FolderBusyError) as e:
            FolderLock(out)
        assert str(e.value) == (f"{out}: in use by another smap process (pid {os.getpid()}); "
                                "wait for it to finish, or choose another output folder")
    FolderLock(out).release()  # released on exit

    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderBusyError, match=f"pid {holder.pid}\\)"):
            FolderLock(out)
    finally:
        holder.kill()
        holder.wait()
    assert lock.path.read_text().strip() == str(holder.pid)  # its lock file stays, naming a dead process
    FolderLock(out).release()  # and does not block
