"""The errors readers raise. Settings errors (``NotFoundError``, ``SettingsError``) come before the first record;
``ReadError`` and ``MissingColumnsError`` come while reading, after every record before the point was yielded.

A stage turns them into its own errors or quarantine rows; each carries an ``exit_code`` so that one reaching the
command line is still a short message, never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

from tasks.readers.items import At


class ReaderError(Exception):
    """Base of the readers' errors. ``key``: the setting it is about (``paths``, ``path``, ``data_files``,
    ``splits``), for a stage that names its params in messages. Exit code 2: the inputs or params need fixing."""

    exit_code = 2

    def __init__(self, message: str, *, key: str = "paths") -> None:
        super().__init__(message)
        self.key = key


class NotFoundError(ReaderError):
    """A path, glob, directory or hub id names nothing that exists (or can be reached)."""


class PathsNotFoundError(NotFoundError):
    """Globs that match no file. ``missing``: those patterns; ``base_dir``: what relative ones start from. The message
    names every one (a relative one with what it was relative to) and hints at a glob for a directory."""

    def __init__(self, missing: list[str], base_dir: Path) -> None:
        named = [repr(p) if os.path.isabs(os.path.expanduser(p)) else f"{p!r} (relative to {base_dir})"
                 for p in missing]
        hints = [f"{p!r} is a directory: use a glob such as '{p.rstrip('/')}/**/*.jsonl'"
                 for p in missing if (base_dir / os.path.expanduser(p)).is_dir()]
        super().__init__(f"no files match {', '.join(named)}; fix the paths in the source's params or create the "
                         "files" + "".join(f"; {h}" for h in hints))
        self.missing, self.base_dir = missing, base_dir


class SettingsError(ReaderError):
    """The settings cannot work: a format that cannot be told, compressed parquet, an unknown split or config."""


class ReadError(ReaderError):
    """A file or dataset cannot be read on from a point: cut short, corrupt, or a JSON document that does not parse.

    Attributes:
        reason: ``truncated``, ``unreadable``, ``invalid_json`` or ``undecodable`` (a quarantine reason).
        detail: what went wrong, in one line.
        at: where reading stopped (None: the file or dataset as a whole).
        raw: an excerpt of the offending input ("" when there is none).
    """

    def __init__(self, reason: str, detail: str, *, at: At | None = None, raw: str = "", message: str = "",
                 key: str = "paths") -> None:
        super().__init__(message or f"{reason}: {detail}", key=key)
        self.reason, self.detail, self.at, self.raw = reason, detail, at, raw


class MissingColumnsError(ReaderError):
    """A table (parquet file, dataset) has none of the columns asked for; raised before its first row.

    Attributes:
        columns: the columns it has.
        rows: how many rows it has (None when a streamed dataset cannot tell).
    """

    def __init__(self, columns: list[str], rows: int | None) -> None:
        super().__init__(f"none of the columns asked for; columns: {columns}")
        self.columns, self.rows = columns, rows
