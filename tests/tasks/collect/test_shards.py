"""Record shards: ids, sampling, bounds, quarantine, determinism."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from tasks.collect.items import Document, Rejection, SourceItem
from tasks.collect.shards import SourcePlan, keep_sample, record_id, write_records
from tasks.records import COLUMNS


def _docs(n: int, prefix: str = "doc") -> list[SourceItem]:
    return [Document(text=f"{prefix} {i} " + "word " * (i % 7 + 1), location=f"f.jsonl#L{i + 1}", metadata={"i": i})
            for i in range(n)]


def _write(tmp_path: Path, plans: list[SourcePlan], name: str = "out", **kw: int) -> tuple[Path, dict[str, int]]:
    out = tmp_path / name
    out.mkdir()
    opts = {"seed": 7, "shard_max_records": 1000, "shard_max_bytes": 10**9, "max_doc_bytes": 10**6, **kw}
    return out, write_records(plans, out, **opts)


def _rows(out: Path) -> list[dict]:
    return [row for shard in sorted(out.glob("part-*.parquet")) for row in pq.read_table(shard).to_pylist()]


def test_ids_are_stable_content_derived_and_unique_per_location() -> None:
    a = record_id("s", "f#L1", "hello")
    assert a == record_id("s", "f#L1", "hello") and len(a) == 32
    assert len({a, record_id("s", "f#L2", "hello"), record_id("t", "f#L1", "hello"), record_id("s", "f#L1", "hi")}) == 4


def test_rows_schema_counts_and_quarantine(tmp_path: Path) -> None:
    items: list[SourceItem] = [*_docs(5), Rejection("f.jsonl#L6", "invalid_json", "Expecting value", "{oops"),
                               Document("x" * 50, "https://example.org/a", {"warc_date": "2024"}),
                               Rejection("f.jsonl#L8", "empty_text", "blank", "  ")]
    out, stats = _write(tmp_path, [SourcePlan("web", lambda: iter(items))], max_doc_bytes=40)
    rows = _rows(out)
    assert [r["path"] for r in rows] == [f"f.jsonl#L{i}" for i in range(1, 6)]
    assert list(rows[0]) == list(COLUMNS) and json.loads(rows[0]["metadata"]) == {"i": 0}
    assert rows[0]["url"] is None and rows[0]["source"] == "web"
    assert stats["docs_in"] == 8 and stats["kept"] == 5 and stats["quarantined"] == 3
    assert stats["quarantined_invalid_json"] == 1 and stats["quarantined_empty_text"] == 1
    assert stats["quarantined_too_long"] == 1  # the 50-byte page is over max_doc_bytes=40
    quarantined = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert [q["reason"] for q in quarantined] == ["invalid_json", "too_long", "empty_text"]
    assert quarantined[0] == {"source": "web", "location": "f.jsonl#L6", "url": None, "reason": "invalid_json",
                              "detail": "Expecting value", "raw": "{oops"}


def test_shards_are_bounded_by_records_and_bytes(tmp_path: Path) -> None:
    out, stats = _write(tmp_path, [SourcePlan("s", lambda: iter(_docs(2500)))], shard_max_records=1000)
    sizes = [pq.ParquetFile(p).metadata.num_rows for p in sorted(out.glob("part-*.parquet"))]
    assert sizes == [1000, 1000, 500] and stats["shards"] == 3
    out2, _ = _write(tmp_path, [SourcePlan("s", lambda: iter(_docs(100)))], "bytes", shard_max_bytes=1000)
    shard_bytes = [sum(len(t.encode()) for t in pq.read_table(p)["text"].to_pylist())
                   for p in sorted(out2.glob("part-*.parquet"))]
    assert len(shard_bytes) == 3 and all(b < 1000 + 60 for b in shard_bytes)  # closed right after crossing 1000


def test_max_docs_weight_and_determinism(tmp_path: Path) -> None:
    plans = [SourcePlan("a", lambda: iter(_docs(1000, "a")), weight=0.3), SourcePlan("b", lambda: iter(_docs(50, "b")),
                                                                                   max_docs=10)]
    out, stats = _write(tmp_path, plans)
    assert 240 <= stats["source.a.kept"] <= 360  # Bernoulli(0.3) of 1000
    assert stats["source.b.kept"] == 10 and stats["sampled_out"] == 1000 - stats["source.a.kept"]
    again, _ = _write(tmp_path, plans, "again")
    assert [p.read_bytes() for p in sorted(out.iterdir())] == [p.read_bytes() for p in sorted(again.iterdir())]
    ids = [r["id"] for r in _rows(out) if r["source"] == "a"]
    assert all(keep_sample(i, 0.3, 7) for i in ids) and not all(keep_sample(i, 0.3, 8) for i in ids)


def test_empty_input_writes_no_shard(tmp_path: Path) -> None:
    def nothing() -> Iterator[SourceItem]:
        yield from ()

    out, stats = _write(tmp_path, [SourcePlan("s", nothing)])
    assert stats["kept"] == 0 and stats["shards"] == 0 and not list(out.glob("part-*"))
    assert (out / "quarantine.jsonl").read_text() == ""
