"""What the data stages' caches can reuse, for `lmforge status` and the CI retrain summary.

Each data stage records, after a successful run, the digests of the inputs it was made from (``cache/STAGE/
last_run.json``: ``inputs``, name -> BLAKE2b of the bytes) and what it reused. Comparing those digests with the inputs
there are now says, before anything runs, how many are new, changed, removed and reusable. A support module: it
reads files and hashes them with the stages' own digest (``tasks.incremental.file_digest``), imports no flow.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipelines.artifacts import REUSE_FILE, cache_dir
from tasks.incremental import file_digest


def record_inputs(root: Path, stage: str, inputs: Mapping[str, str], reuse: Mapping[str, int]) -> None:
    """Write ``cache/STAGE/last_run.json``: what the run reused (``reuse``) and the digest of each input."""
    from tasks.atomic import atomic_write_text

    path = cache_dir(root, stage) / REUSE_FILE
    atomic_write_text(path, json.dumps({**reuse, "inputs": dict(sorted(inputs.items()))}, indent=2,
                                       sort_keys=True) + "\n")


def last_run(root: Path, stage: str) -> dict[str, int]:
    """What the stage's last successful run reused and computed (counts; empty when it recorded nothing)."""
    try:
        data: Any = json.loads((cache_dir(root, stage) / REUSE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, int)} if isinstance(data, dict) else {}


def last_inputs(root: Path, stage: str) -> dict[str, str] | None:
    """The input digests the stage's last successful run recorded, or None when it recorded none."""
    try:
        data: Any = json.loads((cache_dir(root, stage) / REUSE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    inputs = data.get("inputs") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in inputs.items()} if isinstance(inputs, dict) else None


def digests(paths: Iterable[Path], root: Path) -> dict[str, str]:
    """Name (relative to ``root`` when inside it) -> content digest of each file."""
    return digests_of({str(path): file_digest(path) for path in paths}, root)


def digests_of(by_path: Mapping[str, str], root: Path) -> dict[str, str]:
    """Digests by absolute path as digests by name (relative to ``root`` when inside it)."""
    out = {}
    for path, digest in by_path.items():
        rel = os.path.relpath(path, root)
        out[Path(rel).as_posix() if not rel.startswith("..") else path] = digest
    return out


def changes(previous: Mapping[str, str], current: Mapping[str, str]) -> dict[str, int]:
    """How many inputs are new (no digest recorded under the name), changed, removed and reusable (same bytes)."""
    return {"new": sum(n not in previous for n in current),
            "changed": sum(n in previous and previous[n] != d for n, d in current.items()),
            "removed": sum(n not in current for n in previous),
            "reusable": sum(previous.get(n) == d for n, d in current.items())}


def status_line(root: Path, stage: str, what: str, current: Mapping[str, str]) -> str | None:
    """One `lmforge status` line: the stage's inputs against those its cache was made from; None when they are the
    same (nothing to say: the stage has nothing new to process)."""
    previous = last_inputs(root, stage)
    if previous is None:
        return f"incremental: no cache under cache/{stage} yet: all {len(current)} {what} are processed"
    c = changes(previous, current)
    if c["reusable"] == len(current) and not c["removed"]:
        return None
    return (f"incremental: {what}: {c['new']} new, {c['changed']} changed, {c['removed']} removed, "
            f"{c['reusable']} reusable from cache/{stage}")


def glob_files(patterns: Iterable[str], root: Path) -> list[Path]:
    """The files the globs (relative to ``root`` unless absolute, ``**`` recursive) match now, sorted."""
    found = {Path(m) for p in patterns for m in glob.glob(str(root / os.path.expanduser(p)), recursive=True)
             if os.path.isfile(m)}
    return sorted(found)


def shard_files(directory: Path) -> list[Path]:
    """The record shards of a stage's input directory."""
    return sorted(directory.glob("part-*.parquet"))


DATA_STAGES = ("collect", "clean", "dedup")
_REUSE = {"collect": ("files_reused", "files_read", "input files", "read"),
          "clean": ("docs_reused", "docs_filtered", "documents", "filtered"),
          "dedup": ("docs_reused", "docs_signed", "documents", "signed")}


def reuse_lines(root: Path, *, since: float) -> list[str]:
    """Per data stage, what the run just made took from the stage's cache (``cache/STAGE/last_run.json``, written by
    the stage after a successful run): a stage that did not run (up to date) says so."""
    lines = []
    for stage in DATA_STAGES:
        path = cache_dir(root, stage) / REUSE_FILE
        if not path.is_file() or path.stat().st_mtime < since:
            lines.append(f"{stage}: not run (up to date)")
            continue
        counts = last_run(root, stage)
        reused_key, done_key, what, done = _REUSE[stage]
        reused, computed = counts.get(reused_key, 0), counts.get(done_key, 0)
        share = f" ({reused / (reused + computed):.0%})" if reused + computed else ""
        shards = (f"; shards {counts.get('shards_reused', 0)} reused, {counts.get('shards_changed', 0)} changed"
                  if "shards_reused" in counts else "")
        lines.append(f"{stage}: {reused:,} of {reused + computed:,} {what} reused{share}, {computed:,} {done}{shards}")
    return lines


def shard_notes(root: Path, stage: str, inputs: str, what: str) -> list[str]:
    """``stage``'s `lmforge status` lines: how many shards under ``inputs`` (its input, as it is now) are new,
    changed, removed or reusable from its cache; nothing when all are reusable or before a first run."""
    shards = root / inputs
    found = shard_files(shards)
    line = status_line(root, stage, what, digests(found, shards)) if found else None
    return [line] if line else []
