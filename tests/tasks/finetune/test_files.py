"""Local file readers, on files written by other tools (pandas, pyarrow, the csv and json modules, gzip, zstd)."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from tasks.finetune.errors import TaskFormatError, TaskPathError, UnreadableFileError
from tasks.finetune.files import expand_globs, file_format, iter_files
from tasks.finetune.items import DEFAULT_FIELDS, Bad, Raw
from tests.tasks.finetune.conftest import labelled, write_jsonl

RECORDS = labelled({"a": 2, "b": 1})


def read(tmp_path: Path, pattern: str, fmt: str = "auto", fields: dict | None = None) -> list[Raw | Bad]:
    return list(iter_files(paths=[pattern], base_dir=tmp_path, fmt=fmt, fields=fields or DEFAULT_FIELDS, what="k"))


def test_jsonl_from_pandas(tmp_path: Path) -> None:
    import pandas as pd

    pd.DataFrame(RECORDS).to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    items = read(tmp_path, "*.jsonl")
    assert [i.record for i in items] == RECORDS
    assert [i.where for i in items] == ["d.jsonl:1", "d.jsonl:2", "d.jsonl:3"]


def test_json_list_and_data_wrapper(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(RECORDS))
    (tmp_path / "b.json").write_text(json.dumps({"data": RECORDS[:1]}))
    items = read(tmp_path, "*.json")
    assert [i.record for i in items] == RECORDS + RECORDS[:1]
    assert items[-1].where == "b.json#0"


def test_json_not_a_document_raises_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("[{\"text\": ")
    with pytest.raises(UnreadableFileError, match="bad.json"):
        read(tmp_path, "*.json")


def test_csv_module_and_tsv_from_pandas(tmp_path: Path) -> None:
    import pandas as pd

    with open(tmp_path / "d.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label", "extra"])
        writer.writeheader()
        writer.writerow({"text": "line one\nline two, quoted", "label": "a", "extra": "x"})
        writer.writerow({"text": "plain", "label": "b", "extra": ""})
    pd.DataFrame(RECORDS).to_csv(tmp_path / "d.tsv", sep="\t", index=False)
    items = read(tmp_path, "d.csv")
    assert [i.record["text"] for i in items] == ["line one\nline two, quoted", "plain"]
    assert items[1].where == "d.csv:4"  # physical line: the first record spans two
    assert [i.record for i in read(tmp_path, "d.tsv")] == RECORDS


def test_parquet_from_pyarrow_and_pandas_integer_labels(tmp_path: Path) -> None:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"text": ["x y", "z w"], "label": [0, 1], "big": [b"\0" * 10, b""]})
    pq.write_table(table, tmp_path / "a.parquet")
    pd.DataFrame({"text": ["p q"], "label": [3]}).to_parquet(tmp_path / "b.parquet")
    items = read(tmp_path, "*.parquet")
    assert [i.record for i in items] == [{"text": "x y", "label": 0}, {"text": "z w", "label": 1},
                                         {"text": "p q", "label": 3}]  # unused columns are not read
    assert items[2].where == "b.parquet#0"


def test_corrupt_parquet_raises_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "c.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    with pytest.raises(UnreadableFileError, match="c.parquet"):
        read(tmp_path, "c.parquet")


def test_gzip_and_zstd_jsonl(tmp_path: Path) -> None:
    import zstandard

    data = "".join(json.dumps(r) + "\n" for r in RECORDS).encode()
    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(data))
    (tmp_path / "e.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    assert [i.record for i in read(tmp_path, "*.gz")] == RECORDS
    assert [i.record for i in read(tmp_path, "*.zst")] == RECORDS


def test_gzip_tsv_from_pandas(tmp_path: Path) -> None:
    import pandas as pd

    pd.DataFrame(RECORDS).to_csv(tmp_path / "d.tsv.gz", sep="\t", index=False, compression="gzip")
    assert [i.record for i in read(tmp_path, "d.tsv.gz")] == RECORDS


def test_truncated_gzip_raises_naming_the_file(tmp_path: Path) -> None:
    blob = gzip.compress(("".join(json.dumps(r) + "\n" for r in RECORDS) * 50).encode())
    (tmp_path / "t.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UnreadableFileError, match="t.jsonl.gz"):
        read(tmp_path, "*.gz")


def sentences_csv(rows: int) -> bytes:
    """A labelled CSV as the csv module writes it (CRLF, quoted fields with commas), header on line 1."""
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["sentence", "label"])
    writer.writerows([f"sentence {i}, with a comma", "pos" if i % 2 else "neg"] for i in range(rows))
    return buf.getvalue().encode()


def test_one_latin1_line_in_a_csv_is_quarantined_with_file_and_line(tmp_path: Path) -> None:
    # issue 27 item 5: one latin-1 line at line 606 (byte offset ~20k) rejected the whole file as "cannot be read as
    # csv", pointing at a position in a decoded chunk; now that row alone is quarantined, the others are read
    lines = sentences_csv(700).split(b"\r\n")
    lines[605] = '"café au lait, bitte",pos'.encode("latin-1")
    data = b"\r\n".join(lines)
    assert data.index(b"caf\xe9") > 8192  # past the first chunk a text decoder reads
    (tmp_path / "s.csv").write_bytes(data)
    items = read(tmp_path, "s.csv", fields={**DEFAULT_FIELDS, "text": "sentence"})
    [bad] = [i for i in items if isinstance(i, Bad)]
    assert (bad.where, bad.reason) == ("s.csv:606", "undecodable")
    assert bad.detail == "byte 0xe9 at character 3 of field 1 is not UTF-8"
    assert bad.record == "caf\\xe9 au lait, bitte,pos"
    assert len(items) == 700 and [i.where for i in items[603:606]] == ["s.csv:605", "s.csv:606", "s.csv:607"]
    # inside a quoted field that spans lines, the row is quarantined at the line it ends on
    (tmp_path / "m.csv").write_bytes(b'text,label\nok,a\n"two\nlines \xff",b\nfine,c\n')
    assert [(i.where, getattr(i, "reason", "kept")) for i in read(tmp_path, "m.csv")] == [
        ("m.csv:2", "kept"), ("m.csv:4", "undecodable"), ("m.csv:5", "kept")]


def test_a_csv_that_cannot_be_read_names_the_right_line(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_bytes(b"text,lab\xe9l\nok,a\n")
    with pytest.raises(UnreadableFileError, match=r"^h.csv:1: cannot be read as csv \(header row: byte 0xe9 "):
        read(tmp_path, "h.csv")
    data = sentences_csv(700)
    cut = gzip.compress(data)[: len(gzip.compress(data)) // 2]
    (tmp_path / "c.csv.gz").write_bytes(cut)
    import zlib

    readable = zlib.decompressobj(31)
    whole = readable.decompress(cut) + readable.flush()
    line = whole.count(b"\n") + 1  # the line the readable bytes stop in
    with pytest.raises(UnreadableFileError, match=rf"^c.csv.gz:{line}: cannot be read as csv \(file ends early"):
        read(tmp_path, "c.csv.gz", fields={**DEFAULT_FIELDS, "text": "sentence"})
    csv.field_size_limit(100)
    try:
        (tmp_path / "big.csv").write_bytes(b"text,label\nok,a\n" + b"x" * 200 + b",b\n")
        with pytest.raises(UnreadableFileError, match=r"^big.csv:3: cannot be read as csv \(csv: field larger"):
            read(tmp_path, "big.csv")
    finally:
        csv.field_size_limit(131072)


def test_bad_lines_are_quarantined_not_raised(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", RECORDS[:1])
    with open(path, "ab") as f:
        f.write(b"{not json\n[1, 2]\n\xff\xfe\n\n")
    items = read(tmp_path, "d.jsonl")
    assert isinstance(items[0], Raw)
    assert [(b.where, b.reason) for b in items[1:]] == [("d.jsonl:2", "invalid_json"), ("d.jsonl:3", "not_an_object"),
                                                       ("d.jsonl:4", "undecodable")]


def test_empty_file_gives_nothing(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text("")
    assert read(tmp_path, "e.jsonl") == []


def test_globs_recursive_sorted_once_and_missing(tmp_path: Path) -> None:
    for name in ("b/x.jsonl", "a/y.jsonl", "a/deep/z.jsonl"):
        write_jsonl(tmp_path / name, [])
    found = [name for _, name in expand_globs(["**/*.jsonl", "a/*.jsonl"], tmp_path, "k")]
    assert found == ["a/deep/z.jsonl", "a/y.jsonl", "b/x.jsonl"]
    with pytest.raises(TaskPathError, match=r"task 'x' data\[0\].paths: 'nope/\*.csv' matches no file"):
        expand_globs(["nope/*.csv"], tmp_path, "task 'x' data[0].paths")


def test_formats_by_suffix(tmp_path: Path) -> None:
    assert file_format(Path("a.JSONL.gz"), "auto") == "jsonl"
    assert file_format(Path("a.txt"), "csv") == "csv"
    with pytest.raises(TaskFormatError, match="cannot tell the format"):
        file_format(Path("a.txt"), "auto")
    with pytest.raises(TaskFormatError, match="parquet compresses inside"):
        file_format(Path("a.parquet.gz"), "auto")
