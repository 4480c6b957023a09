"""HTTP payloads as crawlers store them: undo `Transfer-Encoding: chunked` and `Content-Encoding` (gzip, deflate,
br, zstd) of a WARC response body, with a bound on what a small body may inflate to.

WARC writers keep the bytes that came over the wire (wget, warcio, Heritrix), so a response body is often chunked
and compressed; Common Crawl instead stores the decoded body and renames the headers (`X-Crawler-...`), which
leaves nothing to undo here.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

_CHUNK = 1 << 16


class PayloadError(ValueError):
    """A body that its headers say is encoded, but that cannot be decoded. `reason` is a quarantine reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _tokens(value: str | None) -> list[str]:
    """The codings of a header value, in the order they were applied (`identity` and blanks dropped)."""
    return [t.strip().lower() for t in (value or "").split(",") if t.strip() and t.strip().lower() != "identity"]


def dechunk(body: bytes) -> bytes:
    """The data of a `Transfer-Encoding: chunked` body (RFC 9112 section 7.1); trailers are dropped.

    A body that does not start with a chunk-size line is returned as is: some writers de-chunk the body but keep
    the header.

    Raises:
        PayloadError: `truncated` when the body ends inside a chunk or before the last (zero-size) chunk.
    """
    out: list[bytes] = []
    pos = 0
    while True:
        end = body.find(b"\n", pos)
        line = body[pos:end if end >= 0 else len(body)].split(b";", 1)[0].strip()
        try:
            size = int(line, 16)
        except ValueError:
            if pos == 0:  # not chunked at all
                return body
            raise PayloadError("truncated" if end < 0 else "undecodable",
                               f"chunked body: bad chunk-size line at byte {pos}: {raw_line(line)}") from None
        if end < 0:
            raise PayloadError("truncated", f"chunked body ends in the chunk-size line at byte {pos}")
        if size == 0:
            return b"".join(out)
        start = end + 1
        if start + size > len(body):
            raise PayloadError("truncated", f"chunked body ends inside a {size}-byte chunk at byte {start}")
        out.append(body[start:start + size])
        pos = start + size
        pos += 2 if body[pos:pos + 2] == b"\r\n" else 1 if body[pos:pos + 1] == b"\n" else 0


def raw_line(line: bytes) -> str:
    """A short printable excerpt of a header line."""
    return line[:40].decode("latin-1").encode("unicode_escape").decode("ascii")


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    out: list[bytes] = []
    size = 0
    d = zlib.decompressobj(wbits)
    while data:  # gzip may hold several members: go on with what follows the end of each
        chunk = d.decompress(data, limit + 1 - size)
        out.append(chunk)
        size += len(chunk)
        if size > limit:
            break
        if d.unconsumed_tail:
            data = d.unconsumed_tail
            continue
        if not d.eof:
            raise PayloadError("truncated", "compressed payload ends early")
        data = d.unused_data.lstrip(b"\0")
        if data:
            d = zlib.decompressobj(wbits)
    return b"".join(out)


def decompress(data: bytes, coding: str, limit: int) -> bytes:
    """`data` decoded from one content coding; at most `limit` + 1 bytes (one more says the result is too long).

    Raises:
        PayloadError: `undecodable` for corrupt data or an unknown coding, `truncated` for a stream cut short.
    """
    try:
        if coding in ("gzip", "x-gzip"):
            if not data.startswith(b"\x1f\x8b"):  # some writers store the decoded body and keep the header
                return data
            return _inflate(data, 16 + zlib.MAX_WBITS, limit)
        if coding == "deflate":  # RFC 9110 means zlib-wrapped; some servers send raw deflate, browsers take both
            try:
                return _inflate(data, zlib.MAX_WBITS, limit)
            except zlib.error:
                return _inflate(data, -zlib.MAX_WBITS, limit)
        if coding == "br":
            import brotli

            return brotli.Decompressor().process(data, output_buffer_limit=limit + 1)
        if coding == "zstd":
            import zstandard

            with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as reader:
                return reader.read(limit + 1)
    except ImportError:
        raise PayloadError("undecodable", f"Content-Encoding {coding!r} needs a library that is not "
                                          "installed") from None
    except PayloadError:
        raise
    except Exception as exc:  # zlib.error, brotli.error, zstandard.ZstdError: all mean corrupt data
        raise PayloadError("undecodable", f"corrupt {coding} payload: {exc}"[:200]) from None
    raise PayloadError("undecodable", f"unknown Content-Encoding {coding!r}")


def decode_payload(body: bytes, headers: Mapping[str, str], limit: int) -> bytes:
    """The entity an HTTP response body carries: transfer coding removed, then content codings undone in reverse.

    Args:
        body: The response body as stored (after the HTTP headers).
        headers: The response's HTTP headers (case-insensitive `get`).
        limit: Largest accepted result, in bytes; the result is cut at `limit` + 1 bytes.

    Raises:
        PayloadError: A coding that cannot be undone; `reason` says `truncated` or `undecodable`.
    """
    data = body
    transfer = _tokens(headers.get("Transfer-Encoding"))
    if "chunked" in transfer:
        data = dechunk(data)
        transfer.remove("chunked")
    for coding in reversed(transfer + _tokens(headers.get("Content-Encoding"))):
        data = decompress(data, coding, limit)
    return data
