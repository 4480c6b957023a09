"""Local data named in params as DVC deps: shared by the stages that read user data (collect, finetune).

DVC deps are static and take no globs, while params name data by globs: each glob becomes the directory before its
first wildcard (so a new matching file is new data), the file itself, or the files it matches now where that directory
also holds what the pipeline writes. A path that reaches into what the stage itself or a stage after it writes is an
error (`OutputOverlapError`): the stage would read its own outputs and never be up to date.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

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


class OutputOverlapError(ValueError):
    """A data path in params reaches into what the pipeline writes. Exit code 2: the params must name other data."""

    exit_code = 2


@dataclass(frozen=True)
class Written:
    """What a stage and every stage after it write (dvc.yaml outs), as absolute paths -> the stage writing each:
    the data a stage reads may come from upstream outputs, never from these."""

    stage: str
    outs: dict[str, str]
    root: str = "."

    @classmethod
    def after(cls, root: Path, stage: str) -> Written:
        try:
            stages = (yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8")) or {}).get("stages") or {}
        except (OSError, yaml.YAMLError):
            return cls(stage, {}, str(root))  # no readable dvc.yaml: the stage graph's own check reports it

        def paths(entries: list[Any] | None) -> list[str]:
            return [os.path.normpath(os.path.join(os.path.abspath(root), next(iter(e)) if isinstance(e, dict) else e))
                    for e in entries or [] if isinstance(e, str | dict) and e]

        def overlaps(a: str, b: str) -> bool:
            return a == b or a.startswith(b + os.sep) or b.startswith(a + os.sep)

        def written(body: dict[str, Any]) -> list[str]:
            return [p for key in ("outs", "metrics", "plots") for p in paths(body.get(key))]

        outs = {o: stage for o in written(stages.get(stage) or {})}
        after = {stage}
        grew = True
        while grew:  # every stage whose deps touch an output already in the set runs after it
            grew = False
            for name, body in stages.items():
                if name in after or not isinstance(body, dict):
                    continue
                if any(overlaps(d, o) for d in paths(body.get("deps")) for o in outs):
                    outs.update({o: name for o in written(body)})
                    after.add(name)
                    grew = True
        return cls(stage, outs, os.path.abspath(root))

    def check(self, pattern: str, path: str) -> None:
        """Raise if ``path`` (absolute) is one of the outputs or inside one."""
        for out, stage in self.outs.items():
            if path == out or path.startswith(out + os.sep):
                raise OutputOverlapError(self._message(pattern, out, stage))

    def check_tree(self, pattern: str, path: Path) -> None:
        """Raise if the file or directory ``path`` is an output, inside one, or holds one."""
        full = os.path.normpath(os.path.abspath(path))
        self.check(pattern, full)
        if (hit := self.reachable(full, ["**"])) is not None:
            raise OutputOverlapError(self._message(pattern, *hit))

    def reachable(self, fixed: str, rest: list[str]) -> tuple[str, str] | None:
        """An output under directory ``fixed`` that the glob parts ``rest`` can match (or match files inside)."""
        for out, stage in self.outs.items():
            if not out.startswith(fixed.rstrip(os.sep) + os.sep):
                continue
            parts = Path(os.path.relpath(out, fixed)).parts
            for i, part in enumerate(rest):
                if part == "**":
                    return out, stage  # any depth: it reaches the output (or the files in it)
                if i >= len(parts):
                    return out, stage  # matched every part of the output's path: the glob reads inside it
                if not fnmatch.fnmatchcase(parts[i], part):
                    break
            else:
                if len(rest) == len(parts):
                    return out, stage  # the output itself (a file out)
        return None

    def _message(self, pattern: str, out: str, stage: str) -> str:
        own = "its own output" if stage == self.stage else f"the output of stage '{stage}', which runs after it"
        where = repo_dep(Path(out), Path(self.root))
        return (f"the path {pattern!r} of stage '{self.stage}' reaches into {where} ({own}): the stage would read"
                " what the pipeline writes and never be up to date; name a directory that holds only your "
                "data (e.g. 'corpus/**/*.jsonl')")


def glob_deps(pattern: str, root: Path, base: Path | None = None, written: Written | None = None) -> list[str]:
    """What a source glob reads, as DVC deps: the directory before its first wildcard (so a new matching file is
    new data too), the file itself without a wildcard, or, where that directory also holds outputs of the pipeline
    (the repository's top level, ``data/`` for ``data/*.jsonl``: a directory dep there would change with every run),
    the files it matches now.

    Raises:
        OutputOverlapError: with ``written``, the path is, is inside, or can match an output in it.
    """
    path = Path(os.path.expanduser(pattern))
    if not path.is_absolute():
        path = Path(os.path.abspath(base or root)) / path
    fixed: list[str] = []
    for part in path.parts:
        if _GLOB_MAGIC.search(part):
            break
        fixed.append(part)
    else:
        if written is not None:
            written.check(pattern, os.path.normpath(path))
        return [repo_dep(path, root)]
    directory = repo_dep(Path(*fixed), root)
    holds_outputs = directory == "."
    if written is not None:
        base_dir = os.path.normpath(os.path.join(*fixed))
        written.check(pattern, base_dir)
        rest = list(path.parts[len(fixed):])
        if (hit := written.reachable(base_dir, rest)) is not None:
            raise OutputOverlapError(written._message(pattern, *hit))
        holds_outputs = holds_outputs or any(o.startswith(base_dir + os.sep) for o in written.outs)
    if not holds_outputs:
        return [directory]
    return sorted(repo_dep(Path(m), root) for m in glob.glob(str(path), recursive=True) if os.path.isfile(m))


def hf_local(path: str, root: Path) -> Path | None:
    """The local path a Hugging Face ``path`` names, or None for a hub id."""
    # as the reader decides (tasks/readers/hub.py): an existing path, or one written like a path, is local
    candidate = root / os.path.expanduser(path)
    if candidate.exists() or path.startswith(("./", "../", "/", "~", ".\\")) or path in (".", ".."):
        return candidate
    return None


def hub_pin(what: str, path: str, revision: str | None) -> str:
    """The `lmforge status` line of a hub dataset: the revision it is pinned at, or that it is not pinned."""
    pin = (f"pinned at revision {revision}" if revision else
           "unpinned: hub data can change without notice (set `revision` to pin it)")
    return f"{what}: hub dataset {path}: {pin}"
