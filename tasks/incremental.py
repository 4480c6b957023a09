"""Content-addressed caches of the data stages: what was computed once for an input is looked up, not recomputed.

A cache entry is a file named after a key: a digest of everything its value depends on (the input's bytes, the
settings, the source code that computes it). Nothing else names it, so a stale entry cannot be found, only left
over; an entry is written under a temporary name and renamed into place (``tasks.atomic``), so a killed run leaves
whole entries or none. A cache is never required: without it every value is computed, and the stage's output is the
same either way (the stages compute a value with the same code whether or not they then store it).

Collect caches a source file's items, clean a shard's filter decisions, dedup a shard's MinHash signatures (see
docs/stages/*.md, "Incremental runs").
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from tasks.atomic import atomic_path

_BLOCK = 1 << 20


def file_digest(path: Path) -> str:
    """128-bit BLAKE2b of a file's bytes, read a megabyte at a time."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def key_of(*parts: object) -> str:
    """A 128-bit key of ``parts`` (each spelled with ``repr``, so ``1`` and ``"1"`` differ)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(repr(part).encode("utf-8", "surrogatepass") + b"\x00")
    return h.hexdigest()


def code_digest(*modules: ModuleType) -> str:
    """Digest of the source files of ``modules`` (a package: every ``.py`` file in its directory, sorted): an edit
    of the code that computes a value changes its key."""
    h = hashlib.blake2b(digest_size=16)
    for module in modules:
        origin = Path(module.__file__ or "")
        files = sorted(origin.parent.glob("*.py")) if origin.name == "__init__.py" else [origin]
        for path in files:
            h.update(f"{module.__name__}/{path.name}\x00".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


class EntryStore:
    """Files named by key under one directory (``<dir>/<key[:2]>/<key><suffix>``), written atomically.

    Args:
        directory: the store's directory; made on the first write.
        suffix: file name suffix of every entry.
    """

    def __init__(self, directory: Path, suffix: str = ".parquet") -> None:
        self.directory, self.suffix = Path(directory), suffix
        self.used: set[str] = set()

    def path(self, key: str) -> Path:
        """Where the entry of ``key`` lives (whether or not it exists)."""
        return self.directory / key[:2] / f"{key}{self.suffix}"

    def get(self, key: str) -> Path | None:
        """The entry of ``key`` when there is one (and marks it used), else None."""
        path = self.path(key)
        if path.is_file():
            self.used.add(key)
            return path
        return None

    @contextmanager
    def put(self, key: str) -> Iterator[Path]:
        """A temporary path to write the entry of ``key`` to; it takes the entry's name when the block ends
        without an error (an error or a kill leaves no entry)."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            yield tmp
        self.used.add(key)

    def keys(self) -> list[str]:
        """Every key with an entry, sorted."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name.removesuffix(self.suffix) for sub in sorted(self.directory.iterdir()) if sub.is_dir()
                      for p in sub.iterdir() if p.name.endswith(self.suffix) and not p.name.startswith("."))

    def prune(self, keep: Iterable[str] | None = None) -> int:
        """Delete every entry but ``keep`` (default: those used through this object), and leftovers of killed
        writes; returns how many entries went. Run after a successful run: the store then holds what it used."""
        wanted = set(self.used if keep is None else keep)
        removed = 0
        if not self.directory.is_dir():
            return 0
        for sub in sorted(self.directory.iterdir()):
            if not sub.is_dir():
                continue
            for p in sub.iterdir():
                if p.name.startswith("."):  # a temporary sibling of an entry a killed run was writing
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                elif p.name.endswith(self.suffix) and p.name.removesuffix(self.suffix) not in wanted:
                    p.unlink(missing_ok=True)
                    removed += 1
            if not any(sub.iterdir()):
                os.rmdir(sub)
        return removed
