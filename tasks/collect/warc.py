"""Reader for web crawls: WARC `response` records (HTML → main text) and WET `conversion` records."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tasks.collect.compression import open_binary
from tasks.collect.items import Document, Rejection, SourceItem, expand_paths, raw_excerpt

HTML_TYPES: frozenset[str] = frozenset({"text/html", "application/xhtml+xml"})


def iter_warc(*, paths: Sequence[str], base_dir: Path, min_text_chars: int = 1,
              max_doc_bytes: int = 10_000_000) -> Iterator[SourceItem]:
    """Streams page text from WARC and WET files (plain, `.gz`, `.zst`), in sorted path and record order.

    HTML responses give their main-content text; `text/plain` responses and WET conversion records give their
    body as is; other responses (images, PDFs, ...) and other record types are skipped without a trace. Paths are
    checked when called, so a bad source fails before any item is read.

    Args:
        paths: Globs, relative to `base_dir` unless absolute; `**` is recursive.
        base_dir: Directory relative globs start from.
        min_text_chars: Pages whose text (stripped) is shorter are rejected as `no_text_extracted`.
        max_doc_bytes: Records with a longer body are rejected as `too_long` without being read.

    Returns:
        An iterator of `Document` (location: the record's WARC-Target-URI) and `Rejection` items.

    Raises:
        SourceNotFoundError: A glob matches no file.
    """
    return _iter_files(expand_paths(paths, base_dir), min_text_chars, max_doc_bytes)


def _iter_files(files: list[Path], min_chars: int, limit: int) -> Iterator[SourceItem]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    wanted = WarcRecordType.response | WarcRecordType.conversion
    for path in files:
        last: SourceItem | None = None
        try:
            with open_binary(path) as fh:
                # fastwarc buffers by itself and asks the stream for its position: hand it the unbuffered one
                for index, record in enumerate(ArchiveIterator(getattr(fh, "raw", fh), record_types=wanted)):
                    last = _record_item(record, path, index, min_chars, limit)
                    if last is not None:
                        yield last
        except EOFError as exc:  # a compressed file cut short; unless its last record already said so
            if not (isinstance(last, Rejection) and last.reason == "truncated"):
                yield Rejection(str(path), "truncated", f"file ends early: {exc}", "")
        except OSError as exc:  # fastwarc stops at the first record it cannot parse: nothing after it is readable
            yield Rejection(str(path), "unreadable", f"{type(exc).__name__}: {exc}", "")


def _record_item(record: Any, path: Path, index: int, min_chars: int, limit: int) -> SourceItem | None:
    """One record's `Document` or `Rejection`; None for a record that is not text (skipped, not rejected)."""
    from fastwarc.warc import WarcRecordType
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    location = record.headers.get("WARC-Target-URI") or f"{path}#W{index}"
    is_wet = record.record_type == WarcRecordType.conversion
    content_type = (record.headers.get("Content-Type") if is_wet else record.http_content_type) or ""
    content_type = content_type.split(";")[0].strip().lower()
    if not is_wet and content_type and content_type not in HTML_TYPES and content_type != "text/plain":
        return None
    expected = record.content_length  # body bytes still to read (after the HTTP headers, for responses)
    if expected > limit:
        return Rejection(location, "too_long", f"body is {expected} bytes, over {limit}", "")
    body = record.reader.read(expected)
    # fastwarc does not raise on a record cut short: a short body is the only sign
    if len(body) < expected:
        return Rejection(location, "truncated", f"body has {len(body)} of {expected} bytes", raw_excerpt(body))
    if not is_wet and not content_type:  # headers gave no type: not something we know to be text
        return None
    try:
        if is_wet:
            text = body.decode("utf-8")
        else:
            text = bytes_to_str(body, detect_encoding(body), errors="strict")
            if content_type in HTML_TYPES:
                text = extract_plain_text(text, main_content=True)
    except (UnicodeError, LookupError) as exc:
        return Rejection(location, "undecodable", str(exc)[:200], raw_excerpt(body))
    if len(text.strip()) < max(min_chars, 1):
        return Rejection(location, "no_text_extracted", f"{len(text.strip())} characters of text, need {min_chars}",
                         raw_excerpt(body))
    metadata = {"warc_date": record.headers.get("WARC-Date"), "content_type": content_type,
                "record_id": record.record_id}
    return Document(text, location, metadata)
