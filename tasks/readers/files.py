"""Local files: globs to files, a file's format from its suffix, and one file read record by record.

Formats: jsonl (ndjson), json, csv, tsv, parquet, txt and md, and CoNLL-style token-per-line files (``.conll``:
``tasks.readers.conll``), plain or compressed (``.gz``, ``.zst``, ``.zstd``; parquet compresses its own pages). A stage
names the formats it offers; the suffixes and the rules are the same.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

from tasks.readers import conll, formats, squad
from tasks.readers.compression import COMPRESSIONS
from tasks.readers.errors import PathsNotFoundError, ReadError, SettingsError
from tasks.readers.items import Quarantined, Record

SUFFIXES: dict[str, str] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
                            ".parquet": "parquet", ".pq": "parquet", ".txt": "txt", ".text": "txt", ".md": "md",
                            ".markdown": "md", ".conll": "conll"}
"""Format by suffix (under any compression suffix)."""
FORMATS: tuple[str, ...] = ("jsonl", "json", "csv", "tsv", "parquet", "txt", "md")
"""The formats offered when a stage names none (CoNLL files are offered by the stages that read tagged sentences)."""


def expand_globs(patterns: Sequence[str], base_dir: Path) -> list[tuple[Path, str]]:
    """Every file the globs match (``**`` recursive; relative ones under ``base_dir``), sorted by path, each once, as
    (path, name): the name is relative to ``base_dir`` when inside it (the same on every checkout).

    Raises:
        PathsNotFoundError: naming every pattern that matches no file, and what it was relative to.
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
        raise PathsNotFoundError(missing, Path(base_dir))
    return [(path, _name(path, Path(base_dir))) for path in sorted(found)]


def _name(path: Path, base_dir: Path) -> str:
    try:
        return path.relative_to(base_dir).as_posix()
    except ValueError:
        return path.as_posix()


def check_format(fmt: str, offered: Collection[str] = FORMATS) -> None:
    """Checks that ``fmt`` is ``auto``, ``ndjson`` (jsonl) or one of the ``offered`` formats.

    Raises:
        SettingsError: it is none of them.
    """
    if fmt not in {"auto", "ndjson", *offered}:
        raise SettingsError(f"unknown fmt {fmt!r}; use 'auto' or one of {sorted(offered)}", key="format")


def file_format(path: Path, fmt: str, offered: Collection[str] = FORMATS) -> str:
    """The format of ``path``: ``fmt`` unless it is ``auto``, else told by the suffix under any compression.

    Args:
        path: the file.
        fmt: ``auto``, ``ndjson`` (jsonl) or one of ``offered``.
        offered: the formats the stage reads.

    Raises:
        SettingsError: an unknown ``fmt``, a suffix that names none of ``offered``, or compressed parquet.
    """
    check_format(fmt, offered)
    suffixes = [s.lower() for s in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] in COMPRESSIONS
    if compressed:
        suffixes.pop()
    name = "jsonl" if fmt == "ndjson" else fmt
    if name == "auto":
        name = SUFFIXES.get(suffixes[-1] if suffixes else "", "")
        if name not in offered:
            known = sorted(s for s, f in SUFFIXES.items() if f in offered)
            raise SettingsError(f"{path}: cannot tell the format from the suffix; name it {'/'.join(known)} "
                                f"(optionally .gz/.zst) or set the format to one of {sorted(offered)}", key="format")
    if name == "parquet" and compressed:
        raise SettingsError(f"{path}: compressed parquet is not supported (parquet compresses inside); give the "
                            "plain .parquet file", key="format")
    return name


def read_file(path: Path, fmt: str, *, limit: int | None = None, columns: Collection[str] = (),
              text_unit: str = "file") -> Iterator[Record | Quarantined]:
    """The records of one file, in file order.

    Args:
        path: the file.
        fmt: its format (as :func:`file_format` gives it; ``squad``: SQuAD json, see ``tasks.readers.squad``).
        limit: the longest record in bytes as read (a line, a JSON value, a text file, a CoNLL sentence); None: no
            bound.
        columns: parquet: the columns to read.
        text_unit: txt/md: ``file`` (one record per file) or ``line`` (one per non-blank line).

    Raises:
        ReadError: the file stops being readable (``truncated``, ``unreadable``, or a JSON document that does not
            parse), after the records before that point were yielded.
        MissingColumnsError: parquet without any of ``columns``.
    """
    try:
        if fmt == "jsonl":
            yield from formats.iter_jsonl(path, limit)
        elif fmt == "json":
            yield from formats.iter_json(path, limit)
        elif fmt == "squad":  # a json file of SQuAD articles, one record per question (offered by finetune only)
            yield from squad.flatten(formats.iter_json(path, limit))
        elif fmt in ("csv", "tsv"):
            yield from formats.iter_delimited(path, "\t" if fmt == "tsv" else ",")
        elif fmt == "parquet":
            yield from formats.iter_parquet(path, columns)
        elif fmt == "conll":
            yield from conll.iter_conll(path, limit)
        else:
            yield from (formats.iter_text_lines if text_unit == "line" else formats.iter_text_file)(path, limit)
    except EOFError as exc:  # what came before was yielded; the rest is lost
        raise ReadError("truncated", f"file ends early: {exc}") from None
    except OSError as exc:
        raise ReadError("unreadable", f"{type(exc).__name__}: {exc}") from None
    except UnicodeDecodeError as exc:  # a reader that decodes a stream as it goes (csv/tsv quarantine bad rows instead)
        raise ReadError("undecodable", str(exc)) from None
