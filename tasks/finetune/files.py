"""Local files: jsonl / json / csv / tsv (plain, .gz or .zst) and parquet, found by glob patterns.

A line or row that cannot be parsed is quarantined (``invalid_json``, ``not_an_object``, ``undecodable``); a file
that cannot be read at all (corrupt parquet, truncated archive, a JSON document that does not parse) raises
:class:`UnreadableFileError` naming it, because nothing of it can be trusted.
"""

from __future__ import annotations

import csv
import glob
import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from tasks.finetune.errors import TaskFormatError, TaskPathError, UnreadableFileError
from tasks.finetune.items import Bad, Raw

SUFFIXES: dict[str, str] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
                            ".parquet": "parquet", ".pq": "parquet"}
COMPRESSED: tuple[str, ...] = (".gz", ".zst", ".zstd")


def expand_globs(patterns: list[str], base_dir: Path, what: str) -> list[tuple[Path, str]]:
    """Every file the patterns match, as (path, name shown in ``where``), sorted, each once.

    Args:
        patterns: glob patterns (``**`` allowed), relative to ``base_dir`` unless absolute.
        base_dir: the repository.
        what: the key named in errors, e.g. ``task 'x' data[0].paths``.

    Raises:
        TaskPathError: a pattern matches no file.
    """
    found: dict[str, Path] = {}
    for pattern in patterns:
        names = sorted(glob.glob(pattern, root_dir=base_dir, recursive=True))
        files = [n for n in names if (Path(base_dir) / n).is_file()]
        if not files:
            raise TaskPathError(f"{what}: {pattern!r} matches no file under {base_dir}; fix the pattern or add the "
                                "files")
        for name in files:
            found.setdefault(Path(name).as_posix(), Path(base_dir) / name)
    return [(path, name) for name, path in sorted(found.items())]


def file_format(path: Path, fmt: str) -> str:
    """The format of ``path``: ``fmt`` unless it is ``auto``, else told by the suffix under any compression.

    Raises:
        TaskFormatError: unknown suffix, or parquet inside gzip/zstd (parquet compresses inside).
    """
    suffixes = [s.lower() for s in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] in COMPRESSED
    if compressed:
        suffixes = suffixes[:-1]
    if fmt == "auto":
        if not suffixes or suffixes[-1] not in SUFFIXES:
            raise TaskFormatError(f"{path}: cannot tell the format from the suffix; name it .jsonl/.json/.csv/"
                                  ".tsv/.parquet (optionally .gz/.zst) or set `format`")
        fmt = SUFFIXES[suffixes[-1]]
    if fmt == "parquet" and compressed:
        raise TaskFormatError(f"{path}: parquet compresses inside; give the plain .parquet file")
    return fmt


def iter_files(*, paths: list[str], base_dir: Path, fmt: str, fields: Mapping[str, str | None],
               what: str) -> Iterator[Raw | Bad]:
    """Records of every matching file, file by file in name order, record by record in file order.

    Args:
        paths: glob patterns relative to ``base_dir``.
        base_dir: the repository.
        fmt: ``auto`` or one of jsonl, json, csv, tsv, parquet.
        fields: field names (passed on to the checks).
        what: the params key named in errors.

    Raises:
        TaskPathError, TaskFormatError: before the first record (globs and formats are resolved first).
        UnreadableFileError: while reading, for a file that cannot be read at all.
    """
    plan = [(path, name, file_format(path, fmt)) for path, name in expand_globs(paths, base_dir, what)]
    return _iter_plan(plan, fields)


def _iter_plan(plan: list[tuple[Path, str, str]], fields: Mapping[str, str | None]) -> Iterator[Raw | Bad]:
    for path, name, fmt in plan:
        reader = {"jsonl": _jsonl, "json": _json, "csv": _delimited, "tsv": _delimited, "parquet": _parquet}[fmt]
        try:
            yield from reader(path, name, fmt, fields)
        except (OSError, EOFError, ValueError, csv.Error) as e:  # zstd, gzip, arrow and decoding errors are these
            raise UnreadableFileError(f"{name}: cannot be read as {fmt} ({type(e).__name__}: {e}); fix or remove "
                                      "the file") from None


def _open_binary(path: Path) -> IO[bytes]:
    suffix = path.suffix.lower()
    if suffix == ".gz":
        import gzip

        return gzip.open(path, "rb")
    if suffix in (".zst", ".zstd"):
        import zstandard

        # buffered: the zstd reader has no readline, and lines are what jsonl and csv read
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def _jsonl(path: Path, name: str, fmt: str, fields: Mapping[str, str | None]) -> Iterator[Raw | Bad]:
    with _open_binary(path) as f:
        for number, raw in enumerate(f, 1):
            where = f"{name}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Bad(where, "undecodable", str(e), raw[:1000].decode("utf-8", "backslashreplace"))
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield Bad(where, "invalid_json", str(e), line[:1000])
                continue
            yield _record(where, record, fields)


def _json(path: Path, name: str, fmt: str, fields: Mapping[str, str | None]) -> Iterator[Raw | Bad]:
    with _open_binary(path) as f:
        data = f.read()
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UnreadableFileError(f"{name}: not a JSON document ({e}); fix it, or name a JSON-lines file "
                                  ".jsonl") from None
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):  # {"data": [...]}, as some dumps wrap it
        doc = doc["data"]
    if not isinstance(doc, list):
        raise UnreadableFileError(f"{name}: a JSON file must hold a list of objects (or {{\"data\": [...]}}), "
                                  f"found {type(doc).__name__}")
    for index, record in enumerate(doc):
        yield _record(f"{name}#{index}", record, fields)


def _delimited(path: Path, name: str, fmt: str, fields: Mapping[str, str | None]) -> Iterator[Raw | Bad]:
    # newline="": the csv module handles quoted line breaks itself; a strict decoder: a bad byte is a bad file
    with io.TextIOWrapper(_open_binary(path), encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",")
        for row in reader:
            # a short row leaves its last fields None (missing); a long one puts the rest under None: drop those
            yield Raw(f"{name}:{reader.line_num}", {k: v for k, v in row.items() if k is not None}, fields)


def _parquet(path: Path, name: str, fmt: str, fields: Mapping[str, str | None]) -> Iterator[Raw | Bad]:
    import pyarrow.parquet as pq

    wanted = {v for v in fields.values() if v}
    pf = pq.ParquetFile(path)
    columns = [c for c in pf.schema_arrow.names if c in wanted]  # other columns may be large: leave them on disk
    row = 0
    for batch in pf.iter_batches(batch_size=1024, columns=columns):
        for record in batch.to_pylist():
            yield Raw(f"{name}#{row}", record, fields)
            row += 1


def _record(where: str, record: Any, fields: Mapping[str, str | None]) -> Raw | Bad:
    if not isinstance(record, dict):
        return Bad(where, "not_an_object", f"a record must be a JSON object, found {type(record).__name__}", record)
    return Raw(where, record, fields)
