"""segloop.fsio: the one atomic, durable write (temp beside, fsync, rename, fsync the folder)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from segloop import fsio


def _fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record what kind of object each os.fsync call flushed ("file" or "dir"), then flush it."""
    seen: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        seen.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return seen


def test_write_creates_folders_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b" / "meta.json"
    fsio.atomic_write_text(dest, "one")
    fsio.atomic_write_text(dest, "two")
    assert dest.read_text(encoding="utf-8") == "two"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["meta.json"]


def test_the_file_and_its_folder_are_flushed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _fsyncs(monkeypatch)
    fsio.atomic_write_bytes(tmp_path / "x.bin", b"data")
    assert seen == ["file", "dir"]  # the data before the rename, the rename after it


def test_an_error_keeps_the_old_file_and_removes_the_temp(tmp_path: Path) -> None:
    dest = tmp_path / "mask.nii.gz"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError), fsio.atomic_path(dest) as tmp:
        assert tmp.parent == dest.parent and tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["mask.nii.gz"]


def test_replace_dir_flushes_every_file_and_overwrites_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "hf"
    dest.mkdir()
    (dest / "stale.txt").write_text("old")
    build = tmp_path / ".build"
    (build / "sub").mkdir(parents=True)
    (build / "config.json").write_text("{}")
    (build / "sub" / "w.bin").write_bytes(b"w")
    with pytest.raises(OSError):
        fsio.replace_dir(build, dest)  # a non-empty destination is never replaced silently
    seen = _fsyncs(monkeypatch)
    fsio.replace_dir(build, dest, overwrite=True)
    assert sorted(p.name for p in dest.rglob("*")) == ["config.json", "sub", "w.bin"]
    assert not build.exists()
    assert seen.count("file") == 2 and seen.count("dir") >= 3
