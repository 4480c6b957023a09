"""Local file readers: every format, compression, rejection reason and error, on tiny files with known answers."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tasks.collect.files import iter_files
from tasks.collect.items import REASONS, Document, Rejection, SourceConfigError, SourceNotFoundError, expand_paths

# one line per reason a JSON line can be rejected for, plus blank lines (skipped) and two good records
JSONL = (b'{"text": "first doc", "other": 1}\n'
         b"\n"
         b"{not json\n"
         b"[1, 2]\n"
         b'{"text": "caf\xe9"}\n'
         b'{"body": "no text field"}\n'
         b'{"text": null}\n'
         b'{"text": 42}\n'
         b'{"text": " \\t "}\n'
         b'{"text": "' + b"x" * 60 + b'"}\n'
         b'{"text": "\\ud800 lone surrogate"}\n'
         b"   \n"
         b'{"text": "last doc"}\n')
JSONL_EXPECTED = [("L1", "first doc"), ("L3", "invalid_json"), ("L4", "not_an_object"), ("L5", "undecodable"),
                  ("L6", "missing_text"), ("L7", "missing_text"), ("L8", "non_string_text"), ("L9", "empty_text"),
                  ("L10", "too_long"), ("L11", "undecodable"), ("L13", "last doc")]


def summary(items: list[Document | Rejection]) -> list[tuple[str, str]]:
    """(locator after '#', text or reason) per item: what a test compares."""
    return [(i.location.rpartition("#")[2], i.text if isinstance(i, Document) else i.reason) for i in items]


def read(tmp_path: Path, *patterns: str, **kwargs: object) -> list[Document | Rejection]:
    return list(iter_files(paths=list(patterns), base_dir=tmp_path, **kwargs))  # type: ignore[arg-type]


def lines(n: int, start: int = 0) -> bytes:
    return b"".join(json.dumps({"text": f"document number {i} " + "word " * (i % 7)}).encode() + b"\n"
                    for i in range(start, start + n))


def test_jsonl_every_record_reason_exactly(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(JSONL)
    items = read(tmp_path, "a.jsonl", max_doc_bytes=50)
    assert summary(items) == JSONL_EXPECTED
    first = items[0]
    assert isinstance(first, Document)
    assert first.location == f"{tmp_path / 'a.jsonl'}#L1" and first.metadata == {"format": "jsonl"}
    undecodable = items[3]
    assert isinstance(undecodable, Rejection) and undecodable.raw == '{"text": "caf\\xe9"}'
    assert all(i.reason in REASONS for i in items if isinstance(i, Rejection))


def test_rejection_raw_is_capped_at_1000_chars(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(b'{"text": 5, "pad": "' + b"p" * 5000 + b'"}\n')
    [item] = read(tmp_path, "a.jsonl")
    assert isinstance(item, Rejection) and item.reason == "non_string_text"
    assert len(item.raw) == 1000 and item.raw.startswith('{"text": 5')


def test_overlong_line_is_rejected_unparsed_and_numbering_continues(tmp_path: Path) -> None:
    huge = b'{"text": "' + b"y" * 200_000 + b'"}\n'
    (tmp_path / "a.ndjson").write_bytes(huge + b'{"text": "after"}\n')
    items = read(tmp_path, "a.ndjson", max_doc_bytes=10)
    assert summary(items) == [("L1", "too_long"), ("L2", "after")]


@pytest.mark.parametrize("suffix", [".gz", ".zst", ".zstd"])
def test_compressed_jsonl_reads_like_plain(tmp_path: Path, suffix: str) -> None:
    packed = gzip.compress(JSONL) if suffix == ".gz" else zstandard.ZstdCompressor().compress(JSONL)
    (tmp_path / f"a.jsonl{suffix}").write_bytes(packed)
    items = read(tmp_path, f"a.jsonl{suffix}", max_doc_bytes=50)
    assert summary(items) == JSONL_EXPECTED
    assert items[0].location == f"{tmp_path / f'a.jsonl{suffix}'}#L1"


def test_multi_frame_zstd_and_multi_member_gzip_are_read_to_the_end(tmp_path: Path) -> None:
    cctx = zstandard.ZstdCompressor()
    (tmp_path / "a.jsonl.zst").write_bytes(cctx.compress(lines(3)) + cctx.compress(lines(2, start=3)))
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(lines(3)) + gzip.compress(lines(2, start=3)))
    items = read(tmp_path, "*.jsonl.*")
    assert [i.location.rpartition("#")[2] for i in items] == ["L1", "L2", "L3", "L4", "L5"] * 2
    assert all(isinstance(i, Document) for i in items)
    assert items[4].text.startswith("document number 4")


def complete_lines(decoded: bytes) -> int:
    return decoded.count(b"\n")


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_truncated_file_yields_what_was_read_then_one_rejection_then_next_file(tmp_path: Path, codec: str) -> None:
    data = lines(400)
    if codec == "gzip":
        packed, oracle = gzip.compress(data), zlib.decompressobj(wbits=31)
    else:
        # one frame, many blocks (a block decodes only when whole): as a streaming writer would make it
        cobj = zstandard.ZstdCompressor().compressobj()
        blocks = [cobj.compress(x + b"\n") + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK) for x in data.splitlines()]
        packed, oracle = b"".join(blocks) + cobj.flush(), zstandard.ZstdDecompressor().decompressobj()
    cut = packed[: len(packed) // 2]
    suffix = ".gz" if codec == "gzip" else ".zst"
    (tmp_path / f"a.jsonl{suffix}").write_bytes(cut)
    (tmp_path / "b.jsonl").write_bytes(lines(2))
    expected_docs = complete_lines(oracle.decompress(cut))  # independent count of the lines the prefix holds
    assert 0 < expected_docs < 400
    items = read(tmp_path, f"a.jsonl{suffix}", "b.jsonl")
    assert len(items) == expected_docs + 1 + 2
    assert all(isinstance(i, Document) for i in items[:expected_docs])
    assert [i.text for i in items[:expected_docs]] == [json.loads(x)["text"] for x in data.splitlines()[:expected_docs]]
    rejection = items[expected_docs]
    assert isinstance(rejection, Rejection)
    assert (rejection.location, rejection.reason) == (str(tmp_path / f"a.jsonl{suffix}"), "truncated")
    assert summary(items[-2:]) == [("L1", "document number 0 "), ("L2", "document number 1 word ")]


def test_corrupt_compressed_file_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl.gz").write_bytes(b"this is not gzip at all\n")
    (tmp_path / "b.txt.zst").write_bytes(b"nor is this zstd\n")
    items = read(tmp_path, "a.jsonl.gz", "b.txt.zst")
    assert [(type(i).__name__, i.reason) for i in items if isinstance(i, Rejection)] == [
        ("Rejection", "unreadable"), ("Rejection", "unreadable")]
    assert len(items) == 2


def test_json_array_streams_items_and_reports_where_it_breaks(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps([{"text": "one"}, "two", {"text": ""}, {"text": 2.5},
                                                 {"text": "five"}]))
    (tmp_path / "b.json").write_bytes(b'\xef\xbb\xbf \n[{"text": "ok"}, {"text": "cut')  # BOM, blanks, then a cut
    items = read(tmp_path, "*.json")
    assert summary(items) == [("I0", "one"), ("I1", "not_an_object"), ("I2", "empty_text"), ("I3", "non_string_text"),
                              ("I4", "five"), ("I0", "ok"), ("I1", "invalid_json")]


def test_truncated_json_array_keeps_the_items_before_the_cut(tmp_path: Path) -> None:
    data = json.dumps([{"text": f"item {i} " + "z" * 50} for i in range(2000)]).encode()
    packed = gzip.compress(data)
    (tmp_path / "a.json.gz").write_bytes(packed[: len(packed) * 3 // 4])
    items = read(tmp_path, "a.json.gz")
    assert isinstance(items[-1], Rejection) and items[-1].reason == "truncated"
    docs = items[:-1]
    assert 100 < len(docs) < 2000
    assert [d.location.rpartition("#")[2] for d in docs] == [f"I{i}" for i in range(len(docs))]


def test_json_object_files(tmp_path: Path) -> None:
    (tmp_path / "a_pretty.json").write_text(json.dumps({"text": "pretty\nprinted", "n": 1}, indent=2))
    (tmp_path / "b_lines.json").write_text('{"text": "l1"}\n{"text": "l2"}\n')
    (tmp_path / "c_string.json").write_text('"just a string"')
    (tmp_path / "d_bad.json").write_text('{"text": \n "unterminated')
    items = read(tmp_path, "*.json")
    assert summary(items) == [(str(tmp_path / "a_pretty.json"), "pretty\nprinted"), ("L1", "l1"), ("L2", "l2"),
                              (str(tmp_path / "c_string.json"), "not_an_object"),
                              (str(tmp_path / "d_bad.json"), "invalid_json")]


def test_parquet_rows_across_batches_and_bad_rows(tmp_path: Path) -> None:
    texts = [f"row {i}" for i in range(2500)]
    texts[3], texts[1500], texts[2499] = None, "", "  \n"
    pq.write_table(pa.table({"text": texts, "n": list(range(2500))}), tmp_path / "a.parquet", row_group_size=700)
    items = read(tmp_path, "a.parquet")
    assert [i.location.rpartition("#")[2] for i in items] == [f"R{i}" for i in range(2500)]
    rejected = {i.location.rpartition("#")[2]: i.reason for i in items if isinstance(i, Rejection)}
    assert rejected == {"R3": "missing_text", "R1500": "empty_text", "R2499": "empty_text"}
    assert items[2498].text == "row 2498" and items[0].metadata == {"format": "parquet"}
    non_string = read(tmp_path, "a.parquet", text_field="n")
    assert len(non_string) == 2500 and {i.reason for i in non_string} == {"non_string_text"}  # type: ignore[union-attr]


def test_parquet_missing_column_and_corrupt_file(tmp_path: Path) -> None:
    pq.write_table(pa.table({"body": ["a", "b"]}), tmp_path / "a.parquet")
    (tmp_path / "b.parquet").write_bytes(b"PAR1 but not really parquet")
    items = read(tmp_path, "*.parquet")
    assert [(i.location, i.reason) for i in items] == [  # type: ignore[union-attr]
        (str(tmp_path / "a.parquet"), "missing_text"), (str(tmp_path / "b.parquet"), "unreadable")]


def test_txt_and_md_whole_file(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"Hello\r\n\r\nworld  \n")
    (tmp_path / "b.md").write_text("# Title\n\nBody.\n")
    (tmp_path / "c.txt").write_bytes(b"bad \xff byte")
    (tmp_path / "d.txt").write_bytes(b" \n\t\n")
    (tmp_path / "e.txt").write_bytes(b"z" * 101)
    (tmp_path / "f.txt.gz").write_bytes(gzip.compress(b"compressed text"))
    items = read(tmp_path, "*.txt", "*.md", "*.txt.gz", max_doc_bytes=100)
    assert summary(items) == [(str(tmp_path / "a.txt"), "Hello\r\n\r\nworld  \n"),
                              (str(tmp_path / "b.md"), "# Title\n\nBody.\n"),
                              (str(tmp_path / "c.txt"), "undecodable"), (str(tmp_path / "d.txt"), "empty_text"),
                              (str(tmp_path / "e.txt"), "too_long"), (str(tmp_path / "f.txt.gz"), "compressed text")]
    assert items[1].metadata == {"format": "md"}


def test_txt_line_unit(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"first line\r\n\n   \nthird \xff\n" + b"w" * 30 + b"\nlast line")
    items = read(tmp_path, "a.txt", text_unit="line", max_doc_bytes=20)
    assert summary(items) == [("L1", "first line"), ("L4", "undecodable"), ("L5", "too_long"), ("L6", "last line")]


def test_truncated_whole_file_gives_no_partial_document(tmp_path: Path) -> None:
    packed = gzip.compress(b"a whole text file " * 100)
    (tmp_path / "a.txt.gz").write_bytes(packed[:-12])
    [item] = read(tmp_path, "a.txt.gz")
    assert isinstance(item, Rejection) and item.reason == "truncated"


def test_expand_paths_recursive_sorted_deduplicated(tmp_path: Path) -> None:
    for name in ["b/z.jsonl", "a/deep/y.jsonl", "a/x.jsonl", "c.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}\n")
    got = expand_paths(["**/*.jsonl", "a/*.jsonl", str(tmp_path / "c.txt")], tmp_path)
    assert got == [tmp_path / "a/deep/y.jsonl", tmp_path / "a/x.jsonl", tmp_path / "b/z.jsonl", tmp_path / "c.txt"]


def test_missing_source_names_every_pattern_and_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "ok.jsonl").write_text("{}\n")
    with pytest.raises(SourceNotFoundError) as err:
        iter_files(paths=["ok.jsonl", "nope/*.jsonl", "data"], base_dir=tmp_path)
    message = str(err.value)
    assert "'nope/*.jsonl'" in message and "'data'" in message and "'ok.jsonl'" not in message
    assert str(tmp_path) in message and "data/**/*.jsonl" in message and "fix the paths" in message


def test_config_errors_come_before_any_item(tmp_path: Path) -> None:
    (tmp_path / "a.parquet.gz").write_bytes(b"")
    (tmp_path / "b.csv").write_text("text\nx\n")
    (tmp_path / "c.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(SourceConfigError, match="compressed parquet"):
        iter_files(paths=["c.jsonl", "a.parquet.gz"], base_dir=tmp_path)
    with pytest.raises(SourceConfigError, match="cannot tell the format"):
        iter_files(paths=["b.csv"], base_dir=tmp_path)
    with pytest.raises(SourceConfigError, match="unknown fmt"):
        iter_files(paths=["c.jsonl"], base_dir=tmp_path, fmt="xml")
    with pytest.raises(SourceConfigError, match="text_unit"):
        iter_files(paths=["c.jsonl"], base_dir=tmp_path, text_unit="page")
    assert summary(read(tmp_path, "b.csv", fmt="txt", text_unit="line")) == [("L1", "text"), ("L2", "x")]


def test_order_is_sorted_by_path_and_repeatable(tmp_path: Path) -> None:
    for name in ["c.jsonl", "a.jsonl", "b.jsonl"]:
        (tmp_path / name).write_bytes(lines(2))
    first, second = read(tmp_path, "*.jsonl"), read(tmp_path, "*.jsonl")
    assert first == second
    assert [Path(i.location.partition("#")[0]).name for i in first] == ["a.jsonl"] * 2 + ["b.jsonl"] * 2 + [
        "c.jsonl"] * 2


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_memory_stays_bounded_by_a_record_not_the_file(tmp_path: Path, suffix: str) -> None:
    import tracemalloc

    record = json.dumps({"text": "m" * 4000}).encode() + b"\n"
    data = record * 3000  # 12 MB of JSON lines that compress about a thousandfold: one read must not inflate it all
    packed = gzip.compress(data, compresslevel=1) if suffix == ".gz" else zstandard.ZstdCompressor().compress(data)
    (tmp_path / f"big.jsonl{suffix}").write_bytes(packed)
    (tmp_path / "big.txt").write_bytes(b"t" * 12_000_000)
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_files(paths=[f"big.jsonl{suffix}"], base_dir=tmp_path))
        [too_long] = list(iter_files(paths=["big.txt"], base_dir=tmp_path, max_doc_bytes=1_000_000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 3000 and isinstance(too_long, Rejection) and too_long.reason == "too_long"
    assert peak < 4_000_000


def test_zstd_framing_variants_whole_and_cut(tmp_path: Path) -> None:
    """Skippable frames, checksums, unknown content sizes, many blocks: whole files read fully, cut ones flagged."""
    import struct

    streamed = zstandard.ZstdCompressor(write_content_size=False, write_checksum=True).compressobj()
    frames = [struct.pack("<II", 0x184D2A5A, 5) + b"skip!",
              zstandard.ZstdCompressor(write_checksum=True).compress(lines(3)),
              b"".join(streamed.compress(x + b"\n") + streamed.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
                       for x in lines(4, start=3).splitlines()) + streamed.flush()]
    whole = b"".join(frames)
    (tmp_path / "a.jsonl.zst").write_bytes(whole)
    assert [i.location.rpartition("#")[2] for i in read(tmp_path, "a.jsonl.zst")] == [f"L{n}" for n in range(1, 8)]
    for cut in (3, len(frames[0]) + 7, len(whole) - 2):  # in the skippable frame, a frame header, the checksum
        (tmp_path / "a.jsonl.zst").write_bytes(whole[:cut])
        last = read(tmp_path, "a.jsonl.zst")[-1]
        assert isinstance(last, Rejection) and last.reason == "truncated", cut
