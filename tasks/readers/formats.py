"""One parser per format, each streaming one file (plain or compressed) record by record.

Each yields ``Record``s and ``Quarantined`` ones in file order (``tasks.readers.items``). What stops a file is raised
where it happens, after everything before it was yielded: ``EOFError`` (cut short) and ``OSError`` (corrupt) from the
stream, ``ReadError`` for a JSON document that stops parsing, ``MissingColumnsError`` for a table without the columns
asked for. ``tasks.readers.files.read_file`` turns the first two into ``ReadError`` as well.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import BinaryIO

from tasks.readers.compression import CHUNK, open_binary
from tasks.readers.errors import MissingColumnsError, ReadError
from tasks.readers.items import At, Quarantined, Record, as_object, parse_json, raw_excerpt

Item = Record | Quarantined


def _lines(fh: BinaryIO, limit: int | None) -> Iterator[tuple[int, bytes, bool]]:
    """Yields (1-based line number, line without terminator, fits); an over-long line is cut and skipped."""
    number = 0
    while line := fh.readline(-1 if limit is None else limit + 2):
        number += 1
        fits = limit is None or len(line.rstrip(b"\r\n")) <= limit
        if not fits:
            rest = line
            while rest and not rest.endswith(b"\n"):  # skip to the line's end without holding it
                rest = fh.readline(CHUNK)
        yield number, line.rstrip(b"\n").removesuffix(b"\r") if fits else line, fits


def iter_jsonl(path: Path, limit: int | None) -> Iterator[Item]:
    """JSON lines; blank lines are skipped; a line over ``limit`` bytes (None: no bound) is ``too_long``."""
    with open_binary(path) as fh:
        for number, line, fits in _lines(fh, limit):
            at = At("line", number)
            if not fits:
                yield Quarantined(at, "too_long", f"line is over {limit} bytes", raw_excerpt(line))
            elif line.strip():
                yield parse_json(line, at)


def _only_blank_left(fh: BinaryIO) -> bool:
    """Whether the rest of the stream is white space (read a chunk at a time, stopping at the first other byte)."""
    while chunk := fh.read(CHUNK):
        if chunk.strip():
            return False
    return True


def _items(values: list[object]) -> Iterator[Item]:
    for index, value in enumerate(values):
        yield as_object(value, At("item", index), lambda v=value: json.dumps(v, default=str))


def iter_json(path: Path, limit: int | None) -> Iterator[Item]:
    """A JSON file: a list of records (streamed), ``{"data": [...]}`` (the records are the list), JSON lines (the
    first line is a whole object), or one value over many lines (a record). A list or document that stops parsing
    raises ``ReadError`` there; a value over ``limit`` bytes (None: no bound) is ``too_long``.
    """
    import ijson

    bound = -1 if limit is None else limit
    with open_binary(path) as fh:
        while True:  # step over leading white space and a byte-order mark, which ijson would choke on
            head = fh.peek(1)[:CHUNK]
            rest = head.lstrip(b" \t\r\n\xef\xbb\xbf")
            fh.read(len(head) - len(rest))
            if rest or not head:
                break
        first = rest[:1]
        if first == b"[":
            index = 0
            try:
                for value in ijson.items(fh, "item", use_float=True):
                    yield as_object(value, At("item", index), lambda v=value: json.dumps(v, default=str))
                    index += 1
            except ijson.JSONError as exc:
                reason = "undecodable" if "UTF8" in str(exc) else "invalid_json"
                raise ReadError(reason, (str(exc).strip().splitlines() or [""])[0][:200],
                                at=At("item", index)) from None
            return
        line = fh.readline(bound) if first == b"{" else b""
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):
            value = None
        one_line_wrapper = isinstance(value, dict) and isinstance(value.get("data"), list) and _only_blank_left(fh)
    if one_line_wrapper:
        yield from _items(value["data"])  # type: ignore[index]
        return
    if isinstance(value, dict):  # a `.json` file that is really JSON lines
        yield from iter_jsonl(path, limit)
        return
    data = read_whole(path, limit)  # one value over many lines, e.g. a pretty-printed object
    if limit is not None and len(data) > limit:
        yield Quarantined(None, "too_long", f"JSON value is over {limit} bytes", raw_excerpt(data))
        return
    if not data.strip():
        return
    item = parse_json(data, None)
    if isinstance(item, Quarantined) and item.reason != "not_an_object":  # nothing of the document can be read
        raise ReadError(item.reason, item.detail, raw=item.raw)
    if isinstance(item, Record) and isinstance(item.value.get("data"), list):
        yield from _items(item.value["data"])
    else:
        yield item


def _undecodable(values: list[str]) -> str | None:
    """What is not UTF-8 in a row decoded with ``surrogateescape`` (each such byte became a lone surrogate), or None."""
    for column, value in enumerate(values):
        for offset, char in enumerate(value):
            if "\udc80" <= char <= "\udcff":
                return f"byte 0x{ord(char) - 0xDC00:02x} at character {offset} of field {column + 1} is not UTF-8"
    return None


def iter_delimited(path: Path, delimiter: str) -> Iterator[Item]:
    """CSV/TSV with a header row: each row a dict (``at``: the physical line it ends on). A short row leaves its last
    fields None (missing); a long one's extra values are dropped. A row with a byte that is not UTF-8 is
    ``undecodable`` (the rows around it are read); a header that is not UTF-8, or text the csv module cannot parse
    (a NUL byte, a field over its size limit), stops the file with a ``ReadError`` at that line."""
    # surrogateescape: a bad byte becomes a lone surrogate in its row instead of an error somewhere in a decoded chunk
    # (whose offset names no line); newline="": the csv module handles quoted line breaks itself
    with io.TextIOWrapper(open_binary(path), encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader, None)
            if header is None:
                return
            if bad := _undecodable(header):
                raise ReadError("undecodable", f"header row: {bad}", at=At("line", reader.line_num))
            for values in reader:
                at = At("line", reader.line_num)
                if bad := _undecodable(values):
                    raw = delimiter.join(values).encode("utf-8", "surrogateescape")
                    yield Quarantined(at, "undecodable", bad, raw_excerpt(raw))
                elif values:  # a blank line is no row (as csv.DictReader has it)
                    row = dict(zip(header, values, strict=False))
                    yield Record(at, row | {k: None for k in header[len(values):]})
        except csv.Error as exc:
            raise ReadError("unreadable", f"csv: {exc}", at=At("line", reader.line_num)) from None
        except EOFError as exc:  # the rows before it were yielded; the line after them is cut
            raise ReadError("truncated", f"file ends early: {exc}", at=At("line", reader.line_num + 1)) from None
        except OSError as exc:
            raise ReadError("unreadable", f"{type(exc).__name__}: {exc}", at=At("line", reader.line_num + 1)) from None


def iter_parquet(path: Path, columns: Collection[str]) -> Iterator[Item]:
    """The rows of ``columns`` (those the file has, in its order; others may be large and stay on disk).

    Raises:
        MissingColumnsError: the file has none of ``columns``.
        ReadError: a corrupt file or page (``unreadable``, at the row it stops at).
    """
    import pyarrow
    import pyarrow.parquet as pq

    row = 0
    try:
        with pq.ParquetFile(path) as pf:
            names = pf.schema_arrow.names
            wanted = [c for c in names if c in columns]
            if not wanted:
                raise MissingColumnsError(names, pf.metadata.num_rows)
            for batch in pf.iter_batches(batch_size=1024, columns=wanted):
                for record in batch.to_pylist():
                    yield Record(At("row", row), record)
                    row += 1
    except pyarrow.ArrowException as exc:  # rows before it were yielded
        raise ReadError("unreadable", f"{type(exc).__name__}: {exc}", at=At("row", row) if row else None) from None


def read_whole(path: Path, limit: int | None) -> bytes:
    """The file's bytes, but never more than ``limit`` + 1 of them: one more says it is too long."""
    if limit is None:
        with open_binary(path) as fh:
            return fh.read()
    chunks: list[bytes] = []
    size = 0
    with open_binary(path) as fh:
        while size <= limit and (chunk := fh.read(min(CHUNK * 16, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
    return b"".join(chunks)


def iter_text_file(path: Path, limit: int | None) -> Iterator[Item]:
    """A whole text file as one record (a str, byte-order mark dropped); over ``limit`` bytes it is ``too_long``."""
    data = read_whole(path, limit)
    if limit is not None and len(data) > limit:
        yield Quarantined(None, "too_long", f"file is over {limit} bytes", raw_excerpt(data))
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        yield Quarantined(None, "undecodable", str(exc), raw_excerpt(data))
        return
    yield Record(None, text, lambda: data)


def iter_text_lines(path: Path, limit: int | None) -> Iterator[Item]:
    """Each non-blank line of a text file as a record (a str); blank lines separate, they are not records."""
    with open_binary(path) as fh:
        for number, line, fits in _lines(fh, limit):
            at = At("line", number)
            if not fits:
                yield Quarantined(at, "too_long", f"line is over {limit} bytes", raw_excerpt(line))
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield Quarantined(at, "undecodable", str(exc), raw_excerpt(line))
                continue
            text = text.removeprefix("\ufeff") if number == 1 else text
            if text.strip():
                yield Record(at, text, lambda data=line: data)
