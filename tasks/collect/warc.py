"""Reader for web crawls: WARC `response` records (HTML → main text) and WET `conversion` records.

Crawls written by other tools are read as they are: HTTP bodies stored chunked and gzip/deflate/br/zstd encoded
(wget, warcio, Heritrix keep the wire bytes) are decoded first (tasks.collect.payload), and a `WARC-Target-URI`
in angle brackets (as wget writes it) is unwrapped. Every rejection names the file and the record's index in it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tasks.collect.cache import ItemCache
from tasks.collect.items import Document, Rejection, SourceItem, expand_paths
from tasks.collect.payload import PayloadError, decode_payload
from tasks.readers.compression import open_binary
from tasks.readers.items import raw_excerpt

HTML_TYPES: frozenset[str] = frozenset({"text/html", "application/xhtml+xml"})
_TAIL = 64


def iter_warc(*, paths: Sequence[str], base_dir: Path, min_text_chars: int = 1,
              max_doc_bytes: int = 10_000_000, cache: ItemCache | None = None) -> Iterator[SourceItem]:
    """Streams page text from WARC and WET files (plain, `.gz`, `.zst`), in sorted path and record order.

    HTML responses give their main-content text; `text/plain` responses and WET conversion records give their
    body as is; other responses (images, PDFs, ...) and other record types are skipped without a trace. Paths are
    checked when called, so a bad source fails before any item is read.

    Args:
        paths: Globs, relative to `base_dir` unless absolute; `**` is recursive.
        base_dir: Directory relative globs start from.
        min_text_chars: Pages whose text (stripped) is shorter are rejected as `no_text_extracted`.
        max_doc_bytes: Records with a longer body (stored or decoded) are rejected as `too_long`.
        cache: Where an unchanged file's items come from instead of parsing it again (None: every file is read).

    Returns:
        An iterator of `Document` and `Rejection` items. Their location is `<file>#W<index>` (the record's
        0-based index among all records of the file), their `url` the record's WARC-Target-URI.

    Raises:
        SourceNotFoundError: A glob matches no file.
    """
    files = expand_paths(paths, base_dir)
    if cache is None:
        return _iter_files(files, min_text_chars, max_doc_bytes)
    return _iter_cached(files, min_text_chars, max_doc_bytes, cache)


def _iter_cached(files: list[Path], min_chars: int, limit: int, cache: ItemCache) -> Iterator[SourceItem]:
    for path in files:
        yield from cache.items(path, ("warc", min_chars, limit), lambda p=path: _iter_files([p], min_chars, limit))


class _Watch(io.RawIOBase):
    """Passes a raw stream through to fastwarc, remembering whether it reached the end and its last bytes.

    fastwarc says "Invalid WARC header" both for garbage and for a file that ends a few bytes into a record's
    first line; the end of the input tells the two apart.
    """

    def __init__(self, inner: Any) -> None:
        self._inner, self.eof, self.tail = inner, False, b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._inner.seek(offset, whence))

    def tell(self) -> int:
        return int(self._inner.tell())

    def readinto(self, buf: Any) -> int:
        n = self._inner.readinto(buf)
        if not n:
            self.eof = True
        else:
            self.tail = (self.tail + bytes(memoryview(buf)[max(0, n - _TAIL):n]))[-_TAIL:]
        return n or 0

    def cut_in_record_line(self) -> bool:
        """Whether the input ended inside the version line ("WARC/1.0") a record starts with."""
        line = self.tail.rsplit(b"\n", 1)[-1]
        return self.eof and bool(line) and (b"WARC/1.1".startswith(line) or b"WARC/1.0".startswith(line)
                                            or line.startswith(b"WARC/"))


def _iter_files(files: list[Path], min_chars: int, limit: int) -> Iterator[SourceItem]:
    from fastwarc.warc import ArchiveIterator

    for path in files:
        last: SourceItem | None = None
        index = 0
        watch: _Watch | None = None
        try:
            with open_binary(path) as fh:
                # fastwarc buffers by itself and asks the stream for its position: hand it the unbuffered one.
                # Every record type comes through, so that the index counts every record of the file.
                watch = _Watch(getattr(fh, "raw", fh))
                for record in ArchiveIterator(watch, parse_http=True):
                    last = _record_item(record, path, index, watch.eof, min_chars, limit)
                    index += 1
                    if last is not None:
                        yield last
        except EOFError as exc:  # a compressed file cut short; unless its last record already said so
            if not (isinstance(last, Rejection) and last.reason == "truncated"):
                yield Rejection(f"{path}#W{index}", "truncated", f"file ends early: {exc}", "")
        except OSError as exc:  # fastwarc stops at the first record it cannot parse: nothing after it is readable
            if watch is not None and watch.cut_in_record_line():
                yield Rejection(f"{path}#W{index}", "truncated", f"file ends inside a record's first line: {exc}",
                                "")
            else:
                yield Rejection(f"{path}#W{index}" if index else str(path), "unreadable",
                                f"{type(exc).__name__}: {exc}", "")


def _drain(reader: Any, size: int) -> int:
    """Reads and drops up to `size` bytes, a block at a time; returns how many there were."""
    seen = 0
    while seen < size and (block := reader.read(min(size - seen, 1 << 16))):
        seen += len(block)
    return seen


def target_uri(value: str | None) -> str | None:
    """A WARC-Target-URI as a plain URI: wget (and WARC 1.0's grammar) wrap it in angle brackets."""
    uri = (value or "").strip()
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1].strip()
    return uri or None


def _record_item(record: Any, path: Path, index: int, at_eof: bool, min_chars: int, limit: int) -> SourceItem | None:
    """One record's `Document` or `Rejection`; None for a record that is not text (skipped, not rejected)."""
    from fastwarc.warc import WarcRecordType
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    where = f"{path}#W{index}"
    url = target_uri(record.headers.get("WARC-Target-URI"))
    if not (record.headers.get("Content-Length") or "").strip().isdigit():
        # mandatory; fastwarc hands out a record whose header was cut before (or inside) it
        what = "the file ends inside the record's header" if at_eof else "the record's header has no Content-Length"
        return Rejection(where, "truncated" if at_eof else "unreadable", what, "", url)
    expected = record.content_length  # body bytes still to read (after the HTTP headers, for responses)
    wanted = record.record_type in (WarcRecordType.response, WarcRecordType.conversion)
    is_wet = record.record_type == WarcRecordType.conversion
    content_type = (record.headers.get("Content-Type") if is_wet else record.http_content_type) or ""
    content_type = content_type.split(";")[0].strip().lower()
    if not wanted or (not is_wet and content_type and content_type not in HTML_TYPES and content_type != "text/plain"):
        # skipped; but the last record of a file may be cut (even inside its HTTP headers): check its length
        if at_eof and _drain(record.reader, expected) < expected:
            return Rejection(where, "truncated", f"the file ends inside the record's {expected}-byte body", "", url)
        return None
    if expected > limit:
        return Rejection(where, "too_long", f"body is {expected} bytes, over {limit}", "", url)
    body = record.reader.read(expected)
    # fastwarc does not raise on a record cut short: a short body is the only sign
    if len(body) < expected:
        return Rejection(where, "truncated", f"body has {len(body)} of {expected} bytes", raw_excerpt(body), url)
    if not is_wet and not content_type:  # headers gave no type: not something we know to be text
        return None
    try:
        if is_wet:
            text = body.decode("utf-8")
        else:
            body = decode_payload(body, record.http_headers or {}, limit)
            if len(body) > limit:
                return Rejection(where, "too_long", f"decoded body is over {limit} bytes", "", url)
            text = bytes_to_str(body, detect_encoding(body), errors="strict")
            if content_type in HTML_TYPES:
                text = extract_plain_text(text, main_content=True)
    except PayloadError as exc:
        return Rejection(where, exc.reason, str(exc), raw_excerpt(body), url)
    except (UnicodeError, LookupError) as exc:
        return Rejection(where, "undecodable", str(exc)[:200], raw_excerpt(body), url)
    if len(text.strip()) < max(min_chars, 1):
        return Rejection(where, "no_text_extracted", f"{len(text.strip())} characters of text, need {min_chars}",
                         raw_excerpt(body), url)
    metadata = {"warc_date": record.headers.get("WARC-Date"), "content_type": content_type,
                "record_id": record.record_id, "warc_file": str(path), "warc_record": index}
    return Document(text, where, metadata, url)
