"""WARC/WET reader on tiny crawl files written here with fastwarc's own record writer."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest
from fastwarc.warc import WarcRecord, WarcRecordType

from tasks.collect.items import Document, Rejection, SourceNotFoundError
from tasks.collect.warc import iter_warc

PAGE = b"<html><head><title>T</title></head><body><p>The quick brown fox jumps over the lazy dog.</p></body></html>"
SCRIPT_ONLY = b"<html><head><script>var x = 1; document.write(x);</script></head><body></body></html>"
SHORT_PAGE = b"<html><body><p>Hi</p></body></html>"
LAST_PAGE = b"<html><body><article><p>" + b"Closing paragraph of the crawl. " * 20 + b"</p></article></body></html>"


def response(uri: str, body: bytes, content_type: str = "text/html; charset=utf-8") -> bytes:
    http = (f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    return _record(WarcRecordType.response, uri, http, "application/http; msgtype=response")


def conversion(uri: str, text: bytes) -> bytes:
    return _record(WarcRecordType.conversion, uri, text, "text/plain")


def _record(kind: WarcRecordType, uri: str, block: bytes, content_type: str) -> bytes:
    record = WarcRecord()
    record.init_headers(kind)
    record.headers["WARC-Target-URI"] = uri
    record.headers["WARC-Date"] = "2024-05-01T12:00:00Z"
    record.headers["Content-Type"] = content_type
    record.set_bytes_content(block)
    out = io.BytesIO()
    record.write(out)
    return out.getvalue()


def warcinfo() -> bytes:
    record = WarcRecord()
    record.init_headers(WarcRecordType.warcinfo)
    record.set_bytes_content(b"software: lmforge tests\r\n")
    out = io.BytesIO()
    record.write(out)
    return out.getvalue()


@pytest.fixture()
def crawl() -> list[bytes]:
    return [warcinfo(), response("http://a.example/", PAGE), response("http://b.example/", SCRIPT_ONLY),
            response("http://c.example/robots.txt", b"User-agent: *\nDisallow:\n", "text/plain"),
            response("http://d.example/logo.png", b"\x89PNG\r\n\x1a\n....", "image/png"),
            response("http://e.example/", SHORT_PAGE), response("http://f.example/", LAST_PAGE)]


def outcome(items: list[Document | Rejection]) -> list[tuple[str, str]]:
    return [(i.location, "doc" if isinstance(i, Document) else i.reason) for i in items]


EXPECTED = [("http://a.example/", "doc"), ("http://b.example/", "no_text_extracted"),
            ("http://c.example/robots.txt", "doc"), ("http://e.example/", "doc"), ("http://f.example/", "doc")]


@pytest.mark.parametrize("compress", [False, True])
def test_warc_responses_plain_and_gzipped(tmp_path: Path, crawl: list[bytes], compress: bool) -> None:
    data = b"".join(gzip.compress(r) for r in crawl) if compress else b"".join(crawl)
    (tmp_path / "crawl.warc.gz" if compress else tmp_path / "crawl.warc").write_bytes(data)
    items = list(iter_warc(paths=["crawl.warc*"], base_dir=tmp_path))
    assert outcome(items) == EXPECTED
    page = items[0]
    assert isinstance(page, Document)
    assert page.text == "The quick brown fox jumps over the lazy dog."
    assert page.metadata["warc_date"] == "2024-05-01T12:00:00Z" and page.metadata["content_type"] == "text/html"
    assert page.metadata["record_id"].startswith("<urn:uuid:")
    assert items[2].text == "User-agent: *\nDisallow:\n"  # type: ignore[union-attr]
    assert "Closing paragraph of the crawl." in items[4].text  # type: ignore[union-attr]


def test_min_text_chars_and_max_doc_bytes(tmp_path: Path, crawl: list[bytes]) -> None:
    (tmp_path / "crawl.warc").write_bytes(b"".join(crawl))
    items = list(iter_warc(paths=["*.warc"], base_dir=tmp_path, min_text_chars=10, max_doc_bytes=300))
    assert outcome(items) == [("http://a.example/", "doc"), ("http://b.example/", "no_text_extracted"),
                              ("http://c.example/robots.txt", "doc"), ("http://e.example/", "no_text_extracted"),
                              ("http://f.example/", "too_long")]


def test_wet_conversion_records(tmp_path: Path) -> None:
    records = [warcinfo(), conversion("http://x.example/", "Extracted text, café.\nSecond line.".encode()),
               conversion("http://y.example/", b"broken \xff\xfe bytes"), conversion("http://z.example/", b"  \n")]
    (tmp_path / "a.warc.wet").write_bytes(b"".join(records))
    (tmp_path / "b.warc.wet.gz").write_bytes(b"".join(gzip.compress(r) for r in records))
    items = list(iter_warc(paths=["*.wet*"], base_dir=tmp_path))
    expected = [("http://x.example/", "doc"), ("http://y.example/", "undecodable"),
                ("http://z.example/", "no_text_extracted")]
    assert outcome(items) == expected * 2
    assert items[0].text == "Extracted text, café.\nSecond line."  # type: ignore[union-attr]
    assert items[0].metadata["content_type"] == "text/plain"
    assert items[1].raw == "broken \\xff\\xfe bytes"  # type: ignore[union-attr]


def test_plain_warc_cut_inside_the_last_body(tmp_path: Path, crawl: list[bytes]) -> None:
    (tmp_path / "cut.warc").write_bytes(b"".join(crawl)[:-100])
    items = list(iter_warc(paths=["cut.warc"], base_dir=tmp_path))
    assert outcome(items) == EXPECTED[:-1] + [("http://f.example/", "truncated")]


def test_gzipped_warc_cut_short_then_next_file(tmp_path: Path, crawl: list[bytes]) -> None:
    members = [gzip.compress(r) for r in crawl]
    (tmp_path / "a.warc.gz").write_bytes(b"".join(members)[: -len(members[-1]) // 2])
    (tmp_path / "b.warc.gz").write_bytes(b"".join(members[:2]))
    items = list(iter_warc(paths=["*.warc.gz"], base_dir=tmp_path))
    assert outcome(items) == EXPECTED[:-1] + [(str(tmp_path / "a.warc.gz"), "truncated"), EXPECTED[0]]


def test_garbage_file_is_unreadable_and_missing_glob_raises(tmp_path: Path, crawl: list[bytes]) -> None:
    (tmp_path / "a.warc").write_bytes(b"this is not a WARC file\n" * 5)
    (tmp_path / "b.warc").write_bytes(b"".join(crawl[:2]))
    items = list(iter_warc(paths=["*.warc"], base_dir=tmp_path))
    assert outcome(items) == [(str(tmp_path / "a.warc"), "unreadable"), EXPECTED[0]]
    with pytest.raises(SourceNotFoundError, match="crawl/\\*.warc.gz"):
        iter_warc(paths=["crawl/*.warc.gz"], base_dir=tmp_path)
