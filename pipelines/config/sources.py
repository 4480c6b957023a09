"""Local data named in params as DVC deps: shared by the stages that read user data (collect, finetune).

DVC deps are static and take no globs, while params name data by globs: each glob becomes the directory before its
first wildcard (so a new matching file is new data), the file itself, or the files a top-level glob matches now.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

_GLOB_MAGIC = re.compile(r"[*?\[]")
# datasets' packaged builder names (datasets.packaged_modules): with data_files they read local files. Spelled out
# here because this module must stay light (the CLI reads it without importing datasets).
HF_BUILDERS = frozenset({"json", "csv", "parquet", "text", "arrow", "pandas", "sql", "xml", "webdataset",
                         "imagefolder", "audiofolder", "videofolder", "pdffolder", "niftifolder", "hdf5", "eval"})


def repo_dep(path: Path, root: Path) -> str:
    """A path as a DVC dep: relative (posix) inside the repository, absolute outside it."""
    base = os.path.abspath(root)
    full = os.path.normpath(os.path.join(base, path))
    rel = os.path.relpath(full, base)
    return Path(rel).as_posix() if rel != ".." and not rel.startswith(".." + os.sep) else full


def glob_deps(pattern: str, root: Path, base: Path | None = None) -> list[str]:
    """What a source glob reads, as DVC deps: the directory before its first wildcard (so a new matching file is
    new data too), the file itself without a wildcard, or, for a wildcard at the repository's top level (a
    directory dep there would hold the stage's own outputs), the files it matches now."""
    path = Path(os.path.expanduser(pattern))
    if not path.is_absolute():
        path = (base or root) / path
    fixed: list[str] = []
    for part in path.parts:
        if _GLOB_MAGIC.search(part):
            break
        fixed.append(part)
    else:
        return [repo_dep(path, root)]
    directory = repo_dep(Path(*fixed), root)
    if directory != ".":
        return [directory]
    return sorted(repo_dep(Path(m), root) for m in glob.glob(str(path), recursive=True) if os.path.isfile(m))


def hf_local(path: str, root: Path) -> Path | None:
    """The local path a Hugging Face ``path`` names, or None for a hub id."""
    # as the reader decides (tasks/collect/hub.py): an existing path, or one written like a path, is local
    candidate = root / os.path.expanduser(path)
    if candidate.exists() or path.startswith(("./", "../", "/", "~", ".\\")) or path in (".", ".."):
        return candidate
    return None


def hub_pin(what: str, path: str, revision: str | None) -> str:
    """The `lmforge status` line of a hub dataset: the revision it is pinned at, or that it is not pinned."""
    pin = (f"pinned at revision {revision}" if revision else
           "unpinned: hub data can change without notice (set `revision` to pin it)")
    return f"{what}: hub dataset {path}: {pin}"
