"""Readers for local files: the common item types of every source, and jsonl/json/parquet/txt/md globs.

Every reader streams its input and yields `Document`s and `Rejection`s in a deterministic order. A bad record never
raises: it becomes a `Rejection` with a reason from `REASONS`. Only a source that cannot be read at all (nothing
matches, wrong configuration) raises, and it does so before the first item.
"""

from __future__ import annotations

import glob
import io
import json
import os
import zlib
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

REASONS: tuple[str, ...] = ("invalid_json", "not_an_object", "undecodable", "missing_text", "non_string_text",
                            "empty_text", "too_long", "truncated", "unreadable", "no_text_extracted")
FORMATS: dict[str, str] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
                           ".txt": "txt", ".text": "txt", ".md": "md", ".markdown": "md"}
COMPRESSIONS: dict[str, str] = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_CHUNK = 1 << 16  # compressed bytes fed per step: bounds what one step can inflate to
_RAW_CHARS = 1000


class SourceError(Exception):
    """Base of the errors that stop a whole source."""


class SourceNotFoundError(SourceError):
    """A path, glob or directory names nothing that exists."""


class SourceConfigError(SourceError):
    """The source's settings cannot work (unknown format, compressed parquet, ...)."""


@dataclass(frozen=True, slots=True)
class Document:
    """One text read from a source, exactly as read (decoded, never normalised)."""

    text: str
    location: str
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejection:
    """One input record that could not become a `Document`, and why."""

    location: str
    reason: str
    detail: str
    raw: str


SourceItem = Document | Rejection


def raw_excerpt(data: bytes | str) -> str:
    """Returns at most 1000 characters of `data`, undecodable bytes backslash-escaped."""
    if isinstance(data, bytes):
        data = data[: _RAW_CHARS * 4].decode("utf-8", "backslashreplace")
    return data[:_RAW_CHARS]


def check_text(value: Any, location: str, field: str, max_doc_bytes: int, raw: Callable[[], bytes | str],
               metadata: dict[str, Any]) -> SourceItem:
    """Turns one record's text value into a `Document`, or a `Rejection` saying what is wrong with it.

    Args:
        value: The value found under the text field (None when absent).
        location: Where the record came from.
        field: The text field's name, for the rejection detail.
        max_doc_bytes: Largest accepted text, in UTF-8 bytes.
        raw: Called only on rejection, to get the offending input.
        metadata: Extras for the `Document`.
    """
    if value is None:
        return Rejection(location, "missing_text", f"no value for field {field!r}", raw_excerpt(raw()))
    if not isinstance(value, str):
        return Rejection(location, "non_string_text", f"field {field!r} is {type(value).__name__}, not str",
                         raw_excerpt(raw()))
    if not value.strip():
        return Rejection(location, "empty_text", f"field {field!r} is empty or whitespace", raw_excerpt(raw()))
    try:  # JSON may escape lone surrogates, which no UTF-8 writer downstream could store
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        return Rejection(location, "undecodable", str(exc), raw_excerpt(raw()))
    if size > max_doc_bytes:
        return Rejection(location, "too_long", f"text is {size} bytes, over {max_doc_bytes}", raw_excerpt(value))
    return Document(value, location, metadata)


def _object_item(value: Any, location: str, field: str, max_doc_bytes: int, raw: Callable[[], bytes | str],
                 fmt: str) -> SourceItem:
    """A parsed JSON value as an item: it must be an object holding a text field."""
    if not isinstance(value, dict):
        return Rejection(location, "not_an_object", f"JSON {type(value).__name__}, not an object", raw_excerpt(raw()))
    return check_text(value.get(field), location, field, max_doc_bytes, raw, {"format": fmt})


def expand_paths(patterns: Sequence[str], base_dir: Path) -> list[Path]:
    """Expands globs (`**` recursive; relative ones under `base_dir`) to a sorted, de-duplicated list of files.

    Raises:
        SourceNotFoundError: naming every pattern that matches no file.
    """
    found: set[Path] = set()
    missing: list[str] = []
    for pattern in patterns:
        full = str(Path(base_dir) / os.path.expanduser(pattern))
        files = [Path(m) for m in glob.glob(full, recursive=True) if os.path.isfile(m)]
        if not files:
            missing.append(pattern)
        found.update(files)
    if missing:
        hints = [f"{p!r} is a directory: use a glob such as '{p.rstrip('/')}/**/*.jsonl'"
                 for p in missing if (Path(base_dir) / os.path.expanduser(p)).is_dir()]
        raise SourceNotFoundError(f"no files match {', '.join(repr(p) for p in missing)} (relative to {base_dir}); "
                                  "fix the paths in the source's params or create the files" +
                                  "".join(f"; {h}" for h in hints))
    return sorted(found)


class _Stream(io.RawIOBase):
    """A forward-only raw stream over decompressed chunks, for `io.BufferedReader` and fastwarc to read from."""

    def __init__(self, fh: BinaryIO, chunks: Iterator[bytes]) -> None:
        self._fh, self._chunks = fh, chunks
        self._pending, self._pos, self._offset = memoryview(b""), 0, 0

    def readable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        # fastwarc asks where it is (a no-op seek) before it reads; moving is not supported
        if (whence, offset) in ((io.SEEK_CUR, 0), (io.SEEK_SET, self._offset)):
            return self._offset
        raise io.UnsupportedOperation("a compressed stream can only be read forward")

    def tell(self) -> int:
        return self._offset

    def readinto(self, buf: Any) -> int:
        if self._pos >= len(self._pending):
            self._pending, self._pos = memoryview(next(self._chunks, b"")), 0
        out = memoryview(buf).cast("B")
        n = min(len(out), len(self._pending) - self._pos)
        out[:n] = self._pending[self._pos : self._pos + n]
        self._pos += n
        self._offset += n
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def _gzip_chunks(fh: BinaryIO) -> Iterator[bytes]:
    """Inflates gzip members one after another, at most `_CHUNK` bytes at a time (whatever the ratio)."""
    dec, fed = zlib.decompressobj(wbits=31), False
    while data := fh.read(_CHUNK):
        while True:
            if dec.eof:  # the next member starts where the previous one's unused data begins
                dec, fed = zlib.decompressobj(wbits=31), False
            try:
                out = dec.decompress(data, _CHUNK)
            except zlib.error as exc:  # callers handle one kind of error for any unreadable file
                raise OSError(f"corrupt gzip data: {exc}") from exc
            fed = fed or bool(data)
            if out:
                yield out
            data = dec.unused_data if dec.eof else dec.unconsumed_tail
            if not data and (dec.eof or len(out) < _CHUNK):  # a full chunk may leave output inside zlib
                break
    if fed and not dec.eof:
        raise EOFError("gzip stream ends before its end-of-stream marker")


def _zstd_walk() -> Generator[tuple[int, bool], bytes | None, None]:
    """Follows zstd framing (RFC 8878) without decoding: yields (n, between_frames); n > 0 asks for the next n
    bytes, n < 0 skips -n bytes. Input may end only where between_frames is True."""
    while True:
        magic = int.from_bytes((yield 4, True) or b"", "little")
        if 0x184D2A50 <= magic <= 0x184D2A5F:  # skippable frame: a size, then that many bytes
            yield -int.from_bytes((yield 4, False) or b"", "little"), False
            continue
        desc = ((yield 1, False) or b"\0")[0]  # window, dictionary id and content size fields follow
        single = desc >> 5 & 1
        yield -((1 - single) + (0, 1, 2, 4)[desc & 3] + (single, 2, 4, 8)[desc >> 6]), False
        last = 0
        while not last:
            header = int.from_bytes((yield 3, False) or b"", "little")
            last = header & 1
            yield -(1 if header >> 1 & 3 == 1 else header >> 3), False  # an RLE block holds one byte
        if desc & 4:
            yield -4, False  # content checksum


class _ZstdTee:
    """Hands compressed bytes to zstandard's bounded reader while `_zstd_walk` tracks where frames end.

    zstandard's stream_reader returns short data on a truncated file without a word, and its decompressobj has no
    output bound; the walk is what tells a cut file from a whole one.
    """

    def __init__(self, fh: BinaryIO) -> None:
        self._fh, self._walk, self._head = fh, _zstd_walk(), b""
        self._want, self._between = next(self._walk)

    @property
    def complete(self) -> bool:
        return self._between and not self._head

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        view = memoryview(data)
        while view:
            if self._want < 0:
                n = min(-self._want, len(view))
                self._want += n
            else:
                n = self._want - len(self._head)
                self._head += view[:n]
            view = view[n:]
            while self._want == 0 or 0 < self._want == len(self._head):
                sent, self._head = (self._head if self._want else None), b""
                self._want, self._between = self._walk.send(sent)
        return data


def _zstd_chunks(fh: BinaryIO) -> Iterator[bytes]:
    import zstandard

    tee = _ZstdTee(fh)
    reader = zstandard.ZstdDecompressor().stream_reader(tee, read_across_frames=True, closefd=False)
    try:
        while out := reader.read(_CHUNK):
            yield out
    except zstandard.ZstdError as exc:  # callers handle one kind of error for any unreadable file
        raise OSError(f"corrupt zstd data: {exc}") from exc
    if not tee.complete:
        raise EOFError("zstd stream ends inside a frame")


def open_binary(path: Path) -> BinaryIO:
    """Opens `path` for buffered binary reading, decompressing `.gz`/`.zst`/`.zstd` by suffix.

    A compressed file cut short raises EOFError once everything before the cut has been read; corrupt compressed
    data raises OSError.
    """
    compression = COMPRESSIONS.get(path.suffix.lower())
    fh = open(path, "rb")  # the caller closes it (through the wrapper)
    if compression is None:
        return fh
    chunks = _gzip_chunks(fh) if compression == "gzip" else _zstd_chunks(fh)
    return io.BufferedReader(_Stream(fh, chunks), buffer_size=_CHUNK)  # type: ignore[return-value]


def _format_of(path: Path, fmt: str) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes.pop()
    name = fmt if fmt != "auto" else FORMATS.get(suffixes[-1] if suffixes else "", "")
    if not name:
        raise SourceConfigError(f"cannot tell the format of {path} from its suffix; set fmt to one of "
                                f"{sorted(set(FORMATS.values()))}")
    if name == "parquet" and path.suffix.lower() in COMPRESSIONS:
        raise SourceConfigError(f"{path}: compressed parquet is not supported (parquet compresses its own "
                                "pages); decompress the file")
    return name


def iter_files(*, paths: Sequence[str], base_dir: Path, fmt: str = "auto", text_field: str = "text",
               text_unit: str = "file", max_doc_bytes: int = 10_000_000) -> Iterator[SourceItem]:
    """Streams documents from local files matched by globs, in sorted path order.

    Settings are checked when called, so a bad source fails before any item is read.

    Args:
        paths: Globs, relative to `base_dir` unless absolute; `**` is recursive.
        base_dir: Directory relative globs start from.
        fmt: "auto" (by suffix, after a `.gz`/`.zst`/`.zstd` compression suffix), "jsonl", "ndjson", "json",
            "parquet", "txt" or "md".
        text_field: Field (json) or column (parquet) holding the text.
        text_unit: For txt/md: "file" (one document per file) or "line" (one per non-blank line).
        max_doc_bytes: Longer texts are rejected as `too_long`, and never read whole into memory.

    Returns:
        An iterator of `Document` and `Rejection` items.

    Raises:
        SourceNotFoundError: A glob matches no file.
        SourceConfigError: Unknown format or text unit, or a compressed parquet file.
    """
    if fmt not in {"auto", "ndjson", *FORMATS.values()}:
        raise SourceConfigError(f"unknown fmt {fmt!r}; use 'auto' or one of {sorted(set(FORMATS.values()))}")
    if text_unit not in ("file", "line"):
        raise SourceConfigError(f"unknown text_unit {text_unit!r}; use 'file' or 'line'")
    plan = [(path, _format_of(path, "jsonl" if fmt == "ndjson" else fmt)) for path in expand_paths(paths, base_dir)]
    return _iter_plan(plan, text_field, text_unit, max_doc_bytes)


def _iter_plan(plan: list[tuple[Path, str]], field: str, unit: str, limit: int) -> Iterator[SourceItem]:
    for path, fmt in plan:
        try:
            if fmt == "jsonl":
                yield from _iter_jsonl(path, field, limit)
            elif fmt == "json":
                yield from _iter_json(path, field, limit)
            elif fmt == "parquet":
                yield from _iter_parquet(path, field, limit)
            else:
                yield from (_iter_text_lines if unit == "line" else _iter_text_file)(path, fmt, limit)
        except EOFError as exc:  # what came before was yielded; say the rest is lost
            yield Rejection(str(path), "truncated", f"file ends early: {exc}", "")
        except OSError as exc:
            yield Rejection(str(path), "unreadable", f"{type(exc).__name__}: {exc}", "")


def _lines(fh: BinaryIO, limit: int) -> Iterator[tuple[int, bytes, bool]]:
    """Yields (1-based line number, line without terminator, fits); an over-long line is cut and skipped."""
    number = 0
    while line := fh.readline(limit + 2):
        number += 1
        fits = len(line.rstrip(b"\r\n")) <= limit
        if not fits:
            rest = line
            while rest and not rest.endswith(b"\n"):  # skip to the line's end without holding it
                rest = fh.readline(_CHUNK)
        yield number, line.rstrip(b"\n").removesuffix(b"\r") if fits else line, fits


def _parse_record(data: bytes, loc: str, field: str, limit: int, fmt: str) -> SourceItem:
    """One JSON record (a line, or a whole file holding one value) as an item."""
    try:
        value = json.loads(data.decode("utf-8").removeprefix("\ufeff"))
    except UnicodeDecodeError as exc:
        return Rejection(loc, "undecodable", str(exc), raw_excerpt(data))
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting is bad JSON too
        return Rejection(loc, "invalid_json", str(exc)[:200], raw_excerpt(data))
    return _object_item(value, loc, field, limit, lambda: data, fmt)


def _iter_jsonl(path: Path, field: str, limit: int) -> Iterator[SourceItem]:
    # a JSON line may escape its text to twice its size and carry other fields; no valid record is longer
    with open_binary(path) as fh:
        for number, line, fits in _lines(fh, 2 * limit + _CHUNK):
            loc = f"{path}#L{number}"
            if not fits:
                yield Rejection(loc, "too_long", f"line is over {2 * limit + _CHUNK} bytes", raw_excerpt(line))
            elif line.strip():
                yield _parse_record(line, loc, field, limit, "jsonl")


def _iter_json(path: Path, field: str, limit: int) -> Iterator[SourceItem]:
    import ijson

    with open_binary(path) as fh:
        while (head := fh.peek(1)[:_CHUNK]) and not head.lstrip(b" \t\r\n\xef\xbb\xbf"):
            fh.read(len(head))
        first = head.lstrip(b" \t\r\n\xef\xbb\xbf")[:1]
        if first == b"[":
            index = 0
            try:
                for value in ijson.items(fh, "item", use_float=True):
                    loc = f"{path}#I{index}"
                    yield _object_item(value, loc, field, limit, lambda v=value: json.dumps(v, default=str), "json")
                    index += 1
            except ijson.JSONError as exc:
                reason = "undecodable" if "UTF8" in str(exc) else "invalid_json"
                yield Rejection(f"{path}#I{index}", reason, (str(exc).strip().splitlines() or [""])[0][:200], "")
            return
        line = fh.readline(2 * limit + _CHUNK) if first == b"{" else b""
    try:
        one_line_object = isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):
        one_line_object = False
    if one_line_object:  # a `.json` file that is really JSON lines
        yield from _iter_jsonl(path, field, limit)
        return
    data = _read_whole(path, 2 * limit + _CHUNK)  # one value over many lines, e.g. a pretty-printed object
    if len(data) > 2 * limit + _CHUNK:
        yield Rejection(str(path), "too_long", f"JSON value is over {2 * limit + _CHUNK} bytes", raw_excerpt(data))
    elif data.strip():
        yield _parse_record(data, str(path), field, limit, "json")


def _iter_parquet(path: Path, field: str, limit: int) -> Iterator[SourceItem]:
    import pyarrow
    import pyarrow.parquet as pq

    row = 0
    try:
        with pq.ParquetFile(path) as pf:
            if field not in pf.schema_arrow.names:  # one rejection for the file, not one per row
                names = pf.schema_arrow.names
                yield Rejection(str(path), "missing_text", f"no column {field!r}; columns: {names}", "")
                return
            for batch in pf.iter_batches(batch_size=1024, columns=[field]):
                for value in batch.column(0).to_pylist():
                    loc = f"{path}#R{row}"
                    yield check_text(value, loc, field, limit, lambda v=value: repr(v), {"format": "parquet"})
                    row += 1
    except pyarrow.ArrowException as exc:  # a corrupt file or page: rows before it were yielded
        yield Rejection(f"{path}#R{row}" if row else str(path), "unreadable", f"{type(exc).__name__}: {exc}", "")


def _read_whole(path: Path, limit: int) -> bytes:
    """The file's bytes, but never more than `limit` + 1 of them: one more says it is too long."""
    chunks: list[bytes] = []
    size = 0
    with open_binary(path) as fh:
        while size <= limit and (chunk := fh.read(min(_CHUNK * 16, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
    return b"".join(chunks)


def _iter_text_file(path: Path, fmt: str, limit: int) -> Iterator[SourceItem]:
    data = _read_whole(path, limit)
    if len(data) > limit:
        yield Rejection(str(path), "too_long", f"file is over {limit} bytes", raw_excerpt(data))
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        yield Rejection(str(path), "undecodable", str(exc), raw_excerpt(data))
        return
    yield check_text(text, str(path), "text", limit, lambda: data, {"format": fmt})


def _iter_text_lines(path: Path, fmt: str, limit: int) -> Iterator[SourceItem]:
    with open_binary(path) as fh:
        for number, line, fits in _lines(fh, limit):
            loc = f"{path}#L{number}"
            if not fits:
                yield Rejection(loc, "too_long", f"line is over {limit} bytes", raw_excerpt(line))
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield Rejection(loc, "undecodable", str(exc), raw_excerpt(line))
                continue
            text = text.removeprefix("\ufeff") if number == 1 else text
            if text.strip():  # blank lines separate, they are not documents
                yield Document(text, loc, {"format": fmt})
