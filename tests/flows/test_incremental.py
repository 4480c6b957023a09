"""Incremental collect, clean and dedup: what they give equals what a run from scratch gives on the same inputs.

Corpus A is run; then B comes (new files, lines appended to an existing file, a file deleted, bad lines in the new
data, copies of old documents); the run that follows reuses the caches under ``cache/`` and must write the bytes a
run without any cache writes (documents kept, duplicate clusters, every document's split, the quarantine, metrics).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.config import load_params
from pipelines.incremental import last_run
from tests.assets.corpora import edit, prose
from tests.conftest import subprocess_env

pytestmark = pytest.mark.slow
OUTPUTS = ("data/raw", "data/clean", "data/dedup", "metrics/collect.json", "metrics/clean.json", "metrics/dedup.json")


def _setup(repo: Path, shard_records: int = 25) -> None:
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["collect"].update(sources=[{"name": "corpus", "kind": "files", "paths": ["corpus/*.jsonl"]}],
                           shard_max_records=shard_records, validation={"min_rows": 10})
    data["clean"].update(validation={"min_rows": 10, "min_language_share": 0.9}, parallel={"workers": 1})
    data["dedup"].update(validation={"min_rows": 10, "split_tolerance": 1.0}, parallel={"workers": 1},
                         splits={"val": 0.1, "test": 0.1, "seed": 0})
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (repo / "corpus").mkdir()


def _write(path: Path, texts: list[str], mode: str = "w") -> None:
    with path.open(mode, encoding="utf-8") as fh:
        for t in texts:
            fh.write(t if t.startswith("{broken") else json.dumps({"text": t}) + "\n")


def _corpus_a(repo: Path, rng: random.Random) -> list[str]:
    docs = [prose(rng, 12) for _ in range(150)]
    _write(repo / "corpus/c1.jsonl", docs[:60] + [docs[3], edit(rng, docs[5])])
    _write(repo / "corpus/c2.jsonl", docs[60:110] + ["{broken line\n", docs[70]])
    _write(repo / "corpus/c3.jsonl", docs[110:] + [edit(rng, docs[20])])
    return docs


def _corpus_b(repo: Path, rng: random.Random, old: list[str]) -> None:
    new = [prose(rng, 12) for _ in range(60)]
    # appended lines (one bad), a new file with copies of old documents and bad lines, a deleted file
    _write(repo / "corpus/c1.jsonl", new[:20] + ["{broken appended line\n", old[115]], mode="a")
    _write(repo / "corpus/c0.jsonl", new[20:] + ["{broken new line\n", old[8], edit(rng, old[65]), "   "])
    (repo / "corpus/c3.jsonl").unlink()


def _run_all(repo: Path) -> dict[str, dict[str, int]]:
    from flows.clean import clean
    from flows.collect import collect
    from flows.dedup import dedup

    out = {}
    for name, flow in (("collect", collect), ("clean", clean), ("dedup", dedup)):
        out[name] = flow(params=load_params(repo), root=repo)
    return out


def _snapshot(repo: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for rel in OUTPUTS:
        path = repo / rel
        found = sorted(path.rglob("*")) if path.is_dir() else [path]
        files.update({p.relative_to(repo).as_posix(): p.read_bytes() for p in found if p.is_file()})
    return files


def _splits(repo: Path) -> dict[str, str]:
    return {r["id"]: split for split in ("train", "val", "test")
            for r in pq.read_table(repo / "data/dedup" / split, columns=["id"]).to_pylist()}


def _from_scratch(repo: Path) -> dict[str, bytes]:
    """The outputs of a run without any cache, in the same checkout (records name their file by its path)."""
    shutil.rmtree(repo / "cache")
    for rel in ("data/raw", "data/clean", "data/dedup"):
        shutil.rmtree(repo / rel)
    _run_all(repo)
    assert last_run(repo, "collect")["files_reused"] == 0
    return _snapshot(repo)


def test_incremental_run_equals_a_run_from_scratch(repo_copy: Path, prefect_api: str) -> None:
    rng = random.Random(7)
    _setup(repo_copy)
    old = _corpus_a(repo_copy, rng)
    first = _run_all(repo_copy)
    assert first["collect"]["quarantined"] == 1 and first["dedup"]["dropped_exact"] >= 2
    splits_a = _splits(repo_copy)
    from_c3 = {r["id"] for p in (repo_copy / "data/raw").glob("part-*.parquet")
               for r in pq.read_table(p, columns=["id", "path"]).to_pylist() if "c3.jsonl" in (r["path"] or "")}

    _corpus_b(repo_copy, rng, old)
    params = load_params(repo_copy)
    assert params.collect.status_notes(repo_copy)[-1] == (
        "incremental: input files: 1 new, 1 changed, 1 removed, 1 reusable from cache/collect")
    assert params.clean.status_notes(repo_copy) == []  # its input, data/raw, is what the cache was made from
    again = _run_all(repo_copy)
    incremental = _snapshot(repo_copy)
    reuse = {s: last_run(repo_copy, s) for s in ("collect", "clean", "dedup")}
    # c2 was reused; c0 (new) and c1 (appended) read; c3's entry (deleted) went
    assert reuse["collect"] == {"files_reused": 1, "files_read": 2, "entries_pruned": 2}
    assert reuse["clean"]["docs_reused"] > 0 and reuse["clean"]["docs_filtered"] > 0
    assert reuse["dedup"]["docs_reused"] > 0 and reuse["dedup"]["docs_signed"] > 0
    assert again["collect"]["quarantined"] == 4  # two bad lines and an empty text in the new data, as before
    quarantine = (repo_copy / "data/raw/quarantine.jsonl").read_text()
    assert "c3.jsonl" not in quarantine and "broken new line" in quarantine
    raw = [r for p in sorted((repo_copy / "data/raw").glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert not any("c3.jsonl" in (r["path"] or "") for r in raw)  # the deleted file's records left the output
    # a document keeps its split: every one kept before and still kept is in the same split
    assert first["dedup"]["split.moved"] == again["dedup"]["split.moved"] == 0  # the hash alone places them
    splits_b = _splits(repo_copy)
    assert all(splits_b[i] == s for i, s in splits_a.items() if i in splits_b)
    # every document kept before survives unless its file went (c3) or one of B's two copies of old documents
    # (old[8], an edit of old[65]) won its duplicate cluster instead (the survivor rule reads ids, which hash the
    # file's path, so which copy wins depends on where the checkout is)
    survivors = set(splits_a) - from_c3
    assert len(survivors) >= 80 and len(survivors & set(splits_b)) >= len(survivors) - 2

    scratch = _from_scratch(repo_copy)
    assert sorted(scratch) == sorted(incremental)
    # byte for byte: kept documents, removed/ and duplicates.parquet (the clusters), the splits, the metrics
    assert [k for k in scratch if scratch[k] != incremental[k]] == []


def test_sigkill_during_an_incremental_run_keeps_the_outputs_and_the_next_run_is_right(
        repo_copy: Path, prefect_api: str) -> None:
    rng = random.Random(11)
    _setup(repo_copy, shard_records=8)
    old = _corpus_a(repo_copy, rng)
    _run_all(repo_copy)
    from flows.collect import collect

    _corpus_b(repo_copy, rng, old)
    _write(repo_copy / "corpus/a0.jsonl", [prose(rng, 12) for _ in range(300)])  # first in order: every shard moves
    collect(params=load_params(repo_copy), root=repo_copy)
    before = _snapshot(repo_copy)
    proc = subprocess.Popen([sys.executable, "-m", "flows.clean"], cwd=repo_copy, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    markers: list[Path] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and len(markers) < 5:
        markers = list((repo_copy / "data").glob(".clean.staging-*/.done/*.json"))
        time.sleep(0.05)
    assert len(markers) >= 5 and proc.poll() is None, "clean was not caught part way"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _snapshot(repo_copy) == before  # the previous outputs, untouched
    shutil.rmtree(next((repo_copy / "data").glob(".clean.staging-*")))  # no resume: only the cache carries over
    from flows.clean import clean
    from flows.dedup import dedup

    clean(params=load_params(repo_copy), root=repo_copy)
    dedup(params=load_params(repo_copy), root=repo_copy)
    assert last_run(repo_copy, "clean")["docs_reused"] > 0
    incremental = _snapshot(repo_copy)
    assert _from_scratch(repo_copy) == incremental
