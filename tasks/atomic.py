"""Atomic writes: a file or a directory appears under its final name complete, or not at all.

Everything is written under a hidden temporary sibling (``.NAME.tmp-PID``), flushed to disk, then renamed into
place; a process killed at any point leaves the previous version or nothing under the final name. Temporary
siblings left behind by killed writers are swept the next time the same name is written.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_TMP = ".{name}.tmp-"
_OLD = ".{name}.old-"


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (a rename inside it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and directory under ``root``: data must be on disk before a rename publishes it, or a
    power cut could publish empty files."""
    for dirpath, _, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def sweep(final: Path, prefixes: tuple[str, ...] = (_TMP, _OLD), keep: Path | None = None) -> None:
    """Remove the temporary siblings of ``final`` that killed writers left (all but ``keep``)."""
    if not final.parent.is_dir():
        return
    for prefix in prefixes:
        for stale in final.parent.glob(prefix.format(name=final.name) + "*"):
            if stale != keep:
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def replace_dir(staging: Path, final: Path) -> None:
    """Publish the complete directory ``staging`` as ``final`` (flushed first), replacing any previous one.

    Between the two renames (microseconds) ``final`` is briefly absent: "the previous output or none".
    """
    fsync_tree(staging)
    old = final.parent / f"{_OLD.format(name=final.name)}{os.getpid()}"
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def tmp_sibling(path: Path) -> Path:
    """The temporary name this process writes ``path`` under (swept by the next writer if left behind)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep(path, (_TMP,))
    return path.with_name(f"{_TMP.format(name=path.name)}{os.getpid()}")


def publish_file(tmp: Path, path: Path) -> None:
    """Flush the complete file ``tmp`` and rename it to ``path``."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of the file ``path`` to write; on success it is flushed and renamed to ``path``,
    on an exception deleted."""
    tmp = tmp_sibling(path)
    try:
        yield tmp
        publish_file(tmp, Path(path))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write a small text file (UTF-8) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a small binary file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a new, empty temporary sibling of the directory ``final``; on success it replaces ``final``
    (:func:`replace_dir`), on an exception it is deleted."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep(final)
    tmp = final.parent / f"{_TMP.format(name=final.name)}{os.getpid()}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, final)
