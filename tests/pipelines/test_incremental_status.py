"""What `lmforge status` and the CI retrain summary say about the data stages' caches."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pipelines.incremental import (
    changes,
    digests,
    glob_files,
    last_inputs,
    last_run,
    record_inputs,
    reuse_lines,
    status_line,
)
from pipelines.retrain import Report


def test_changes_count_new_changed_removed_and_reusable_inputs() -> None:
    before = {"a": "1", "b": "2", "c": "3"}
    assert changes(before, {"a": "1", "b": "9", "d": "4"}) == {"new": 1, "changed": 1, "removed": 1, "reusable": 1}
    assert changes({}, {"a": "1"}) == {"new": 1, "changed": 0, "removed": 0, "reusable": 0}


def test_status_line_compares_the_files_now_with_the_last_run(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    for name in ("a", "b", "c"):
        (tmp_path / "corpus" / f"{name}.jsonl").write_text(f'{{"text": "{name}"}}\n')
    files = digests(glob_files(["corpus/*.jsonl"], tmp_path), tmp_path)
    assert sorted(files) == ["corpus/a.jsonl", "corpus/b.jsonl", "corpus/c.jsonl"]
    assert "no cache under cache/collect yet: all 3 input files" in status_line(tmp_path, "collect", "input files",
                                                                                files)
    record_inputs(tmp_path, "collect", files, {"files_reused": 0, "files_read": 3})
    assert last_inputs(tmp_path, "collect") == files and last_run(tmp_path, "collect")["files_read"] == 3
    assert status_line(tmp_path, "collect", "input files", files) is None  # all reusable: nothing to say
    (tmp_path / "corpus/a.jsonl").write_text('{"text": "a"}\n{"text": "appended"}\n')
    (tmp_path / "corpus/c.jsonl").unlink()
    (tmp_path / "corpus/d.jsonl").write_text('{"text": "d"}\n')
    now = digests(glob_files(["corpus/*.jsonl"], tmp_path), tmp_path)
    assert status_line(tmp_path, "collect", "input files", now) == (
        "incremental: input files: 1 new, 1 changed, 1 removed, 1 reusable from cache/collect")


def test_retrain_summary_says_what_each_data_stage_reused(tmp_path: Path) -> None:
    started = time.time()
    record_inputs(tmp_path, "collect", {}, {"files_reused": 18, "files_read": 2, "entries_pruned": 1})
    record_inputs(tmp_path, "clean", {}, {"docs_reused": 9000, "docs_filtered": 1000, "shards_reused": 3,
                                          "shards_changed": 2})
    record_inputs(tmp_path, "dedup", {}, {"docs_reused": 1, "docs_signed": 1})
    old = tmp_path / "cache/dedup/last_run.json"
    os.utime(old, (started - 60, started - 60))  # written by an earlier retrain: dedup did not run in this one
    lines = reuse_lines(tmp_path, since=started)
    assert lines == ["collect: 18 of 20 input files reused (90%), 2 read",
                     "clean: 9,000 of 10,000 documents reused (90%), 1,000 filtered; shards 3 reused, 2 changed",
                     "dedup: not run (up to date)"]
    md = Report(base="0" * 40, reuse=lines).markdown()
    assert "### Data stages: reused from their caches\n\n- collect: 18 of 20 input files reused (90%)" in md
