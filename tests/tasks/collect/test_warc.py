"""WARC/WET reader on tiny crawl files written with fastwarc's record writer, with warcio (another tool's writer,
as crawlers use it: gzip-encoded and chunked payloads), as wget writes records, and by a real wget crawl."""

from __future__ import annotations

import functools
import gzip
import http.server
import io
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
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
    """(page URL, or the location of a file-level rejection; "doc" or the rejection reason) per item."""
    return [(getattr(i, "url", None) or i.location, "doc" if isinstance(i, Document) else i.reason) for i in items]


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
    # the cut is named by file and record: the 7th record (index 6) of a.warc.gz
    assert outcome(items) == EXPECTED[:-1] + [(f"{tmp_path / 'a.warc.gz'}#W6", "truncated"), EXPECTED[0]]


def test_garbage_file_is_unreadable_and_missing_glob_raises(tmp_path: Path, crawl: list[bytes]) -> None:
    (tmp_path / "a.warc").write_bytes(b"this is not a WARC file\n" * 5)
    (tmp_path / "b.warc").write_bytes(b"".join(crawl[:2]))
    items = list(iter_warc(paths=["*.warc"], base_dir=tmp_path))
    assert outcome(items) == [(str(tmp_path / "a.warc"), "unreadable"), EXPECTED[0]]
    with pytest.raises(SourceNotFoundError, match="crawl/\\*.warc.gz"):
        iter_warc(paths=["crawl/*.warc.gz"], base_dir=tmp_path)


# ------------------------------------------------------------------ crawls written by other tools (issue 11, item 8)
BIG_PAGE = b"<html><body><article>" + b"".join(
    b"<p>Paragraph %d of a long article, written to fill more than one chunk of the transfer.</p>" % i
    for i in range(120)) + b"</article></body></html>"


def chunked(body: bytes, size: int = 0x1C37) -> bytes:
    """`Transfer-Encoding: chunked` as servers send it, chunk sizes zero-padded like "001c37"."""
    parts = [b"%06x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


def warcio_crawl(gzip_records: bool) -> bytes:
    """Responses as a crawler writes them with warcio: the wire bytes, encoded as the server sent them."""
    import zlib

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    out = io.BytesIO()
    writer = WARCWriter(out, gzip=gzip_records)
    pages = [("http://gzip.example/", gzip.compress(PAGE), [("Content-Encoding", "gzip")]),
             ("http://deflate.example/", zlib.compress(PAGE), [("Content-Encoding", "deflate")]),
             ("http://chunked.example/", chunked(BIG_PAGE), [("Transfer-Encoding", "chunked")]),
             ("http://both.example/", chunked(gzip.compress(BIG_PAGE), 100),
              [("Transfer-Encoding", "chunked"), ("Content-Encoding", "gzip")]),
             ("http://corrupt.example/", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 20,
              [("Content-Encoding", "gzip")])]
    for uri, body, extra in pages:
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8"), *extra],
                                   protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record(uri, "response", payload=io.BytesIO(body),
                                                      http_headers=headers))
    return out.getvalue()


@pytest.mark.parametrize("gzip_records", [False, True])
def test_warcio_gzip_deflate_and_chunked_payloads_are_decoded(tmp_path: Path, gzip_records: bool) -> None:
    name = "crawl.warc.gz" if gzip_records else "crawl.warc"
    (tmp_path / name).write_bytes(warcio_crawl(gzip_records))
    items = list(iter_warc(paths=[name], base_dir=tmp_path))
    assert outcome(items) == [("http://gzip.example/", "doc"), ("http://deflate.example/", "doc"),
                              ("http://chunked.example/", "doc"), ("http://both.example/", "doc"),
                              ("http://corrupt.example/", "undecodable")]
    texts = [i.text for i in items if isinstance(i, Document)]
    assert texts[:2] == ["The quick brown fox jumps over the lazy dog."] * 2
    for text in texts[2:]:  # no chunk-size lines left in the text
        assert text.startswith("Paragraph 0 of a long article") and text.endswith("Paragraph 119 of a long article, "
                                                                                   "written to fill more than one "
                                                                                   "chunk of the transfer.")
        assert "001c37" not in text and "\n0" not in text
    assert "corrupt gzip payload" in items[4].detail  # type: ignore[union-attr]


WGET_RESPONSE = (b"WARC/1.0\r\nWARC-Type: response\r\n"
                 b"WARC-Record-ID: <urn:uuid:ea30b44c-575d-46f5-8b69-fcc16034b492>\r\n"
                 b"WARC-Target-URI: <http://127.0.0.1:18777/index.html>\r\nWARC-Date: 2026-12-02T00:40:26Z\r\n"
                 b"WARC-IP-Address: 127.0.0.1\r\nContent-Type: application/http;msgtype=response\r\n"
                 b"Content-Length: %d\r\n\r\n%s\r\n\r\n")


def wget_record(body: bytes) -> bytes:
    """A response record byte for byte as wget 1.21 writes it (the URI in angle brackets)."""
    http = b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6\r\nContent-type: text/html\r\n\r\n" + body
    return WGET_RESPONSE % (len(http), http)


def test_wget_style_target_uri_in_angle_brackets(tmp_path: Path) -> None:
    (tmp_path / "wget.warc").write_bytes(warcinfo() + wget_record(PAGE))
    items = list(iter_warc(paths=["wget.warc"], base_dir=tmp_path))
    assert outcome(items) == [("http://127.0.0.1:18777/index.html", "doc")]
    assert items[0].text == "The quick brown fox jumps over the lazy dog."  # type: ignore[union-attr]


@pytest.mark.skipif(shutil.which("wget") is None, reason="wget is not installed")
def test_a_real_wget_crawl_of_a_local_server(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_bytes(LAST_PAGE)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
        subprocess.run(["wget", "-q", "--warc-file=crawl", "-O", os.devnull, url], cwd=tmp_path, check=True,
                       timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    items = list(iter_warc(paths=["crawl.warc.gz"], base_dir=tmp_path))
    assert outcome(items) == [(url, "doc")]
    assert "Closing paragraph of the crawl." in items[0].text  # type: ignore[union-attr]


def test_quarantine_names_file_and_record(tmp_path: Path) -> None:
    from tasks.collect.shards import SourcePlan, write_records

    # the same page fetched three times: three entries that must be told apart
    (tmp_path / "a.warc").write_bytes(warcinfo() + response("http://b.example/", SCRIPT_ONLY) * 3)
    out = tmp_path / "out"
    out.mkdir()
    write_records([SourcePlan("cc", lambda: iter_warc(paths=["a.warc"], base_dir=tmp_path))], out, seed=0,
                  shard_max_records=10, shard_max_bytes=10**6, max_doc_bytes=10**6)
    entries = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert [(e["location"], e["url"], e["reason"]) for e in entries] == [
        (f"{tmp_path / 'a.warc'}#W{i}", "http://b.example/", "no_text_extracted") for i in (1, 2, 3)]


def _cuts(records: list[bytes]) -> Iterator[tuple[int, bytes]]:
    """Every way to cut the file inside its last record (short of its closing blank line)."""
    head = b"".join(records[:-1])
    for cut in range(1, len(records[-1]) - 4):
        yield cut, head + records[-1][:cut]


@pytest.mark.parametrize("writer", ["fastwarc", "warcio", "wget"])
def test_a_file_cut_anywhere_in_a_record_is_truncated(tmp_path: Path, writer: str) -> None:
    if writer == "warcio":
        data = warcio_crawl(False)
        records = [data[: data.index(b"WARC/1.", 10)], data[data.index(b"WARC/1.", 10):data.index(b"WARC/1.", 1000)]]
    elif writer == "wget":
        records = [wget_record(PAGE), wget_record(LAST_PAGE)]
    else:
        records = [response("http://a.example/", PAGE), response("http://f.example/", LAST_PAGE)]
    wrong = []
    for cut, data in _cuts(records):
        (tmp_path / "cut.warc").write_bytes(data)
        got = [(i.location, "doc" if isinstance(i, Document) else i.reason)
               for i in iter_warc(paths=["cut.warc"], base_dir=tmp_path)]
        if got != [(f"{tmp_path / 'cut.warc'}#W0", "doc"), (f"{tmp_path / 'cut.warc'}#W1", "truncated")]:
            wrong.append((cut, got[1:]))
    assert wrong == []
