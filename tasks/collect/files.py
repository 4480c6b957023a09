"""Readers for local files: jsonl/json/parquet/txt/md globs, plain or .gz/.zst compressed.

Each reader streams its input and yields `Document`s and `Rejection`s (tasks.collect.items) in file order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from tasks.collect.compression import CHUNK as _CHUNK
from tasks.collect.compression import COMPRESSIONS, open_binary
from tasks.collect.items import (
    Document,
    Rejection,
    SourceConfigError,
    SourceItem,
    check_text,
    expand_paths,
    raw_excerpt,
)

FORMATS: dict[str, str] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
                           ".txt": "txt", ".text": "txt", ".md": "md", ".markdown": "md"}

def _object_item(value: Any, location: str, field: str, max_doc_bytes: int, raw: Callable[[], bytes | str],
                 fmt: str) -> SourceItem:
    """A parsed JSON value as an item: it must be an object holding a text field."""
    if not isinstance(value, dict):
        return Rejection(location, "not_an_object", f"JSON {type(value).__name__}, not an object", raw_excerpt(raw()))
    return check_text(value.get(field), location, field, max_doc_bytes, raw, {"format": fmt})


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
        while True:  # step over leading white space and a byte-order mark, which ijson would choke on
            head = fh.peek(1)[:_CHUNK]
            rest = head.lstrip(b" \t\r\n\xef\xbb\xbf")
            fh.read(len(head) - len(rest))
            if rest or not head:
                break
        first = rest[:1]
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
