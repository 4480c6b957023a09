"""One set of bad inputs, read by both stages that read files (collect and finetune) through ``tasks.readers``.

Each input is written by another tool (gzip, zstandard, pyarrow, the json and csv modules) and then damaged. Every
case ends in a counted, quarantined record or in the stage's clear error naming the file, never a traceback, and
the good records around a bad one are kept. Where the stages' rules differ it is on purpose and written below: a
file that stops being readable is one ``truncated``/``unreadable``/``invalid_json`` rejection for collect (the
records before it are kept, the next file is read), and :class:`UnreadableFileError` for finetune (nothing of a
task's file is trusted); a field of the wrong type is collect's ``*_text`` reason and finetune's ``*_field`` one.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tasks.collect.files import iter_files as collect_files
from tasks.collect.items import Document
from tasks.finetune.checks import check_record
from tasks.finetune.errors import TaskDataError
from tasks.finetune.files import iter_files as finetune_files
from tasks.finetune.items import DEFAULT_FIELDS, Bad

GOOD = [{"text": f"good record number {i}", "label": "a" if i % 2 else "b"} for i in range(40)]
Outcome = list[tuple[str, ...]]


def locator(where: str) -> str:
    """The line, item or row number a location ends with (collect: ``#L3``, ``#I2``; finetune: ``:3``, ``#2``), or
    ``file`` for a whole file."""
    found = re.search(r"(?:#[LIR]?|:)(\d+)$", where)
    return found.group(1) if found else "file"


def read_collect(base: Path, *patterns: str) -> Outcome:
    """What collect makes of the files: ("kept", text) or ("quarantined", reason, locator)."""
    return [("kept", i.text) if isinstance(i, Document) else ("quarantined", i.reason, locator(i.location))
            for i in collect_files(paths=list(patterns), base_dir=base)]


def read_finetune(base: Path, *patterns: str) -> Outcome:
    """What finetune's data step makes of the files (reader, then its record checks), or ("error", class, message)."""
    out: Outcome = []
    try:
        for item in finetune_files(paths=list(patterns), base_dir=base, fmt="auto", fields=DEFAULT_FIELDS,
                                   what="task 't' data[0].paths"):
            checked = item if isinstance(item, Bad) else check_record(item, task_type="classification", labels=None,
                                                                       max_chars=10_000)
            if isinstance(checked, Bad):
                out.append(("quarantined", checked.reason, locator(checked.where)))
            else:
                out.append(("kept", checked.values["text"]))
    except TaskDataError as err:  # the stage's clear error: anything else fails the test with its traceback
        out.append(("error", type(err).__name__, str(err)))
    return out


STAGES: dict[str, Callable[..., Outcome]] = {"collect": read_collect, "finetune": read_finetune}
stages = pytest.mark.parametrize("stage", list(STAGES))


def jsonl(records: list[Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def kept(records: list[dict[str, Any]]) -> Outcome:
    return [("kept", r["text"]) for r in records]


def one_frame_many_blocks(data: bytes) -> bytes:
    """zstd as a streaming writer makes it: one frame, a block per line (a block decodes only when whole)."""
    cobj = zstandard.ZstdCompressor().compressobj()
    return b"".join(cobj.compress(x + b"\n") + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
                    for x in data.splitlines()) + cobj.flush()


@stages
@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_a_cut_compressed_file(tmp_path: Path, stage: str, codec: str) -> None:
    data = jsonl(GOOD * 10)
    packed = gzip.compress(data) if codec == "gzip" else one_frame_many_blocks(data)
    name = "a.jsonl.gz" if codec == "gzip" else "a.jsonl.zst"
    (tmp_path / name).write_bytes(packed[: len(packed) // 2])
    (tmp_path / "b.jsonl").write_bytes(jsonl(GOOD[:2]))
    got = STAGES[stage](tmp_path, name, "b.jsonl")
    if stage == "collect":  # the records before the cut, one rejection for the rest, then the next file
        cut = next(i for i, o in enumerate(got) if o[0] == "quarantined")
        assert 0 < cut < 400 and got[:cut] == kept((GOOD * 10)[:cut])
        assert got[cut:] == [("quarantined", "truncated", "file")] + kept(GOOD[:2])
    else:  # the task's file is not trusted at all: a clear error naming it (the old zstd reader read on silently)
        [(kind, cls, message)] = [o for o in got if o[0] == "error"]
        assert cls == "UnreadableFileError" and message.startswith(f"{name}: cannot be read as jsonl (file ends early")


@stages
def test_invalid_json_lines_are_quarantined_between_good_ones(tmp_path: Path, stage: str) -> None:
    (tmp_path / "a.jsonl").write_bytes(jsonl(GOOD[:2]) + b'{"text": "unterminated\n{oops}\n' + jsonl(GOOD[2:3]))
    assert STAGES[stage](tmp_path, "a.jsonl") == [*kept(GOOD[:2]), ("quarantined", "invalid_json", "3"),
                                                  ("quarantined", "invalid_json", "4"), *kept(GOOD[2:3])]


@stages
def test_bytes_that_are_not_utf8_are_quarantined(tmp_path: Path, stage: str) -> None:
    latin1 = json.dumps({"text": "café", "label": "a"}, ensure_ascii=False).encode("latin-1")
    (tmp_path / "a.jsonl").write_bytes(jsonl(GOOD[:1]) + latin1 + b"\n\xff\xfe\n" + jsonl(GOOD[1:2]))
    assert STAGES[stage](tmp_path, "a.jsonl") == [*kept(GOOD[:1]), ("quarantined", "undecodable", "2"),
                                                  ("quarantined", "undecodable", "3"), *kept(GOOD[1:2])]


WRONG_TYPES = [{"text": 42, "label": "a"}, {"text": None, "label": "a"}, {"text": ["a", "list"], "label": "a"},
               {"text": {"nested": "object"}, "label": "a"}]
REASONS = {"collect": ["non_string_text", "missing_text", "non_string_text", "non_string_text"],
           "finetune": ["non_string_field", "missing_field", "non_string_field", "non_string_field"]}


@stages
def test_wrong_field_types_in_json_lines(tmp_path: Path, stage: str) -> None:
    (tmp_path / "a.jsonl").write_bytes(jsonl([GOOD[0], *WRONG_TYPES, GOOD[1]]))
    got = STAGES[stage](tmp_path, "a.jsonl")
    assert got == [*kept(GOOD[:1]), *[("quarantined", r, str(n)) for n, r in enumerate(REASONS[stage], 2)],
                   *kept(GOOD[1:2])]


@stages
def test_wrong_field_types_in_parquet_and_json(tmp_path: Path, stage: str) -> None:
    # a number column and a list column, written by pyarrow; a JSON list of records with the json module
    pq.write_table(pa.table({"text": [1, 2], "label": ["a", "b"]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"text": [["x"], None, ["y", "z"]], "label": ["a", "a", "b"]}), tmp_path / "b.parquet")
    (tmp_path / "c.json").write_text(json.dumps([GOOD[0], *WRONG_TYPES, "not an object", GOOD[1]]))
    reasons = REASONS[stage]
    assert [o[:2] for o in STAGES[stage](tmp_path, "*.parquet", "c.json")] == [
        ("quarantined", reasons[0]), ("quarantined", reasons[0]),
        ("quarantined", reasons[2]), ("quarantined", reasons[1]), ("quarantined", reasons[2]),
        *kept(GOOD[:1]), *[("quarantined", r) for r in reasons], ("quarantined", "not_an_object"), *kept(GOOD[1:2])]


@stages
def test_a_json_list_that_stops_parsing(tmp_path: Path, stage: str) -> None:
    (tmp_path / "a.json").write_text(json.dumps(GOOD[:3])[:-20])
    got = STAGES[stage](tmp_path, "a.json")
    if stage == "collect":
        assert got == [*kept(GOOD[:2]), ("quarantined", "invalid_json", "2")]
    else:  # the items before were read, then the error stops the task (nothing of it is written)
        assert got[:2] == kept(GOOD[:2])
        [(_, cls, message)] = got[2:]
        assert cls == "UnreadableFileError" and message.startswith("a.json#2: cannot be read as json")


@stages
@pytest.mark.parametrize("name", ["e.jsonl", "e.jsonl.gz", "e.jsonl.zst", "e.json"])
def test_an_empty_file_gives_nothing(tmp_path: Path, stage: str, name: str) -> None:
    packed = {".gz": gzip.compress(b""), ".zst": zstandard.ZstdCompressor().compress(b"")}.get(Path(name).suffix, b"")
    (tmp_path / name).write_bytes(packed)
    assert STAGES[stage](tmp_path, name) == []


@stages
@pytest.mark.parametrize("name", ["one.jsonl", "one.jsonl.zst", "one.json", "one.parquet"])
def test_a_single_row_file(tmp_path: Path, stage: str, name: str) -> None:
    if name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(GOOD[:1]), tmp_path / name)
    elif name.endswith(".json"):
        (tmp_path / name).write_text(json.dumps(GOOD[:1]))
    else:
        data = jsonl(GOOD[:1])
        (tmp_path / name).write_bytes(zstandard.ZstdCompressor().compress(data) if name.endswith(".zst") else data)
    assert STAGES[stage](tmp_path, name) == kept(GOOD[:1])


def test_collect_counts_each_quarantined_record(tmp_path: Path) -> None:
    from tasks.collect.shards import SourcePlan, write_records

    (tmp_path / "a.jsonl").write_bytes(jsonl(GOOD[:3]) + b"{oops\n\xff\n" + jsonl(WRONG_TYPES))
    packed = one_frame_many_blocks(jsonl(GOOD[3:30]))
    (tmp_path / "b.jsonl.zst").write_bytes(packed[:-9])
    out = tmp_path / "out"
    out.mkdir()
    stats = write_records([SourcePlan("s", lambda: collect_files(paths=["*.jsonl*"], base_dir=tmp_path))], out,
                          seed=1, shard_max_records=1000, shard_max_bytes=10**9, max_doc_bytes=10**6)
    assert stats["quarantined"] == 7 and stats["quarantined_truncated"] == 1
    assert (stats["quarantined_invalid_json"], stats["quarantined_undecodable"]) == (1, 1)
    assert (stats["quarantined_non_string_text"], stats["quarantined_missing_text"]) == (3, 1)
    assert 3 < stats["kept"] < 30  # the records before the cut are kept
    assert len((out / "quarantine.jsonl").read_text().splitlines()) == 7


def test_finetune_counts_each_quarantined_record(tmp_path: Path, tokenizer_dir: Path) -> None:
    from pipelines.config.finetune import TaskParams
    from tasks.finetune.prepare import prepare_tasks

    (tmp_path / "a.jsonl").write_bytes(jsonl(GOOD[:12]) + b"{oops\n\xff\n" + jsonl(WRONG_TYPES) + jsonl(GOOD[12:]))
    task = TaskParams(name="t", type="classification", data=[{"kind": "files", "paths": ["a.jsonl"]}]).model_dump()
    counters = prepare_tasks(tasks=[task], dedup_dir=tmp_path / "dedup", tokenizer_dir=tokenizer_dir, max_length=256,
                             base_dir=tmp_path, out_dir=tmp_path / "out")
    assert counters["t.quarantined"] == 6 and counters["t.kept"] == len(GOOD)
    assert (counters["t.quarantined.invalid_json"], counters["t.quarantined.undecodable"]) == (1, 1)
    assert (counters["t.quarantined.non_string_field"], counters["t.quarantined.missing_field"]) == (3, 1)


def test_an_empty_file_alone_is_the_stages_clear_error(tmp_path: Path, tokenizer_dir: Path) -> None:
    """Nothing to quarantine in an empty file: a finetune task left without examples says so (collect's gate does
    the same for a source that gives no document: its row-count expectation fails)."""
    from pipelines.config.finetune import TaskParams
    from tasks.finetune.errors import NoExamplesError
    from tasks.finetune.prepare import prepare_tasks

    (tmp_path / "e.jsonl.gz").write_bytes(gzip.compress(b""))
    task = TaskParams(name="t", type="classification", data=[{"kind": "files", "paths": ["e.jsonl.gz"]}]).model_dump()
    with pytest.raises(NoExamplesError, match="task 't': no valid example among 0 records"):
        prepare_tasks(tasks=[task], dedup_dir=tmp_path / "dedup", tokenizer_dir=tokenizer_dir, max_length=256,
                      base_dir=tmp_path, out_dir=tmp_path / "out")
