"""Local files of a task: jsonl / json / csv / tsv / CoNLL (plain, .gz or .zst) and parquet, found by glob patterns
and read by ``tasks.readers`` (a CoNLL file gives one record ``{"tokens", "tags"}`` per sentence).

A line or row that cannot be parsed is quarantined (``invalid_json``, ``not_an_object``, ``undecodable``: a csv row
with a byte that is not UTF-8 too, ``tasks.readers.items``), with its file and line; a file that cannot be read on
(cut short, corrupt parquet, a JSON document that does not parse, a csv header that is not UTF-8) raises
:class:`UnreadableFileError` naming it and the line or row where reading stopped, because nothing of it can be
trusted.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from tasks.finetune.errors import TaskFormatError, UnreadableFileError, task_errors
from tasks.finetune.items import Bad, Raw
from tasks.readers import files
from tasks.readers.errors import MissingColumnsError, ReadError, SettingsError
from tasks.readers.items import At, Quarantined

OFFERED: tuple[str, ...] = ("jsonl", "json", "csv", "tsv", "parquet", "conll", "squad")
"""The formats a task's files may have (its params' ``format``; ``squad``: SQuAD json articles, a record per question,
never told by the suffix)."""


def expand_globs(patterns: list[str], base_dir: Path, what: str) -> list[tuple[Path, str]]:
    """Every file the patterns match, as (path, name shown in ``where``), sorted, each once.

    Args:
        patterns: glob patterns (``**`` allowed), relative to ``base_dir`` unless absolute.
        base_dir: the repository.
        what: the key named in errors, e.g. ``task 'x' data[0].paths``.

    Raises:
        TaskPathError: a pattern matches no file.
    """
    with task_errors(what):
        return files.expand_globs(patterns, base_dir)


def file_format(path: Path, fmt: str) -> str:
    """The format of ``path``: ``fmt`` unless it is ``auto``, else told by the suffix under any compression.

    Raises:
        TaskFormatError: unknown suffix, or parquet inside gzip/zstd (parquet compresses inside).
    """
    try:
        return files.file_format(path, fmt, OFFERED)
    except SettingsError as exc:
        raise TaskFormatError(str(exc)) from None


def where(name: str, at: At | None) -> str:
    """A record's ``where``: ``name:line`` for a line, ``name#index`` for a JSON item or a table row."""
    if at is None:
        return name
    return f"{name}:{at.number}" if at.unit == "line" else f"{name}#{at.number}"


def iter_files(*, paths: list[str], base_dir: Path, fmt: str, fields: Mapping[str, str | None],
               what: str, split: str | None = None) -> Iterator[Raw | Bad]:
    """Records of every matching file, file by file in name order, record by record in file order.

    Args:
        paths: glob patterns relative to ``base_dir``.
        base_dir: the repository.
        fmt: ``auto`` or one of jsonl, json, csv, tsv, parquet, conll.
        fields: field names (passed on to the checks).
        what: the params key named in errors.
        split: the split of every record (unless its split field names another), or None.

    Raises:
        TaskPathError, TaskFormatError: before the first record (globs and formats are resolved first).
        UnreadableFileError: while reading, for a file that cannot be read at all.
    """
    plan = [(path, name, file_format(path, fmt)) for path, name in expand_globs(paths, base_dir, what)]
    return _iter_plan(plan, fields, split)


def _iter_plan(plan: list[tuple[Path, str, str]], fields: Mapping[str, str | None],
               split: str | None = None) -> Iterator[Raw | Bad]:
    wanted = {v for v in fields.values() if v}
    for path, name, fmt in plan:
        try:
            for item in files.read_file(path, fmt, columns=wanted):
                if isinstance(item, Quarantined):
                    record = item.value if item.reason == "not_an_object" else item.raw
                    yield Bad(where(name, item.at), item.reason, item.detail, record)
                else:
                    yield Raw(where(name, item.at), item.value, fields, split)
        except MissingColumnsError as exc:  # every row misses its fields: the checks quarantine each one
            yield from (Raw(f"{name}#{row}", {}, fields) for row in range(exc.rows or 0))
        except ReadError as exc:
            raise UnreadableFileError(f"{where(name, exc.at)}: cannot be read as {fmt} ({exc.detail}); fix or "
                                      "remove the file") from None
