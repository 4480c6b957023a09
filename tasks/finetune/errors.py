"""The errors that stop the data step, one class per failure kind. A bad record never raises (it is quarantined);
these are the cases no record-level answer fits: params pointing at nothing, a file that cannot be read at all, a
task left without examples or with too few of a class. The readers' errors (``tasks.readers.errors``) become these,
named after the task's params key (:func:`task_errors`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tasks.readers.errors import NotFoundError, PathsNotFoundError, ReaderError, SettingsError


class TaskDataError(Exception):
    """Base of the data step's errors. Exit code 2: the params or the inputs need fixing, not the code."""

    exit_code = 2


class TaskPathError(TaskDataError):
    """A path, glob or directory of a task's data names nothing that exists; the message names the task and key."""

    exit_code = 2


class TaskFormatError(TaskDataError):
    """A file's format cannot be told or read (unknown suffix, compressed parquet). Exit code 2."""

    exit_code = 2


class UnreadableFileError(TaskDataError):
    """A whole file (or dataset) cannot be read: corrupt parquet, truncated archive, invalid JSON document.
    Exit code 2."""

    exit_code = 2


class NoExamplesError(TaskDataError):
    """A task ended with no valid example at all. Exit code 2."""

    exit_code = 2


class TooFewExamplesError(TaskDataError):
    """A class of a classification task has fewer training examples than ``min_per_class``. Exit code 2."""

    exit_code = 2


class TokenizerMissingError(TaskDataError):
    """``tokenizer.json`` is not where the tokenizer stage writes it. Exit code 2."""

    exit_code = 2


class DefaultCorpusError(TaskDataError):
    """The default tasks' input (data/dedup) is missing. Exit code 2."""

    exit_code = 2


@contextmanager
def task_errors(what: str, *, keyed: bool = False) -> Iterator[None]:
    """Turns the readers' errors into the data step's, their message led by ``what`` (the params key; ``keyed``:
    followed by the setting the error is about, e.g. ``task 'x' data[0]`` + ``.path``)."""
    try:
        yield
    except ReaderError as exc:
        lead = f"{what}.{exc.key}" if keyed else what
        message = str(exc)
        if isinstance(exc, PathsNotFoundError):  # one clause per pattern, each naming the task's key first
            message = "; ".join(f"{p!r} matches no file under {exc.base_dir}" for p in exc.missing) + (
                "; fix the pattern or add the files")
        kind = (TaskPathError if isinstance(exc, NotFoundError) else
                TaskFormatError if isinstance(exc, SettingsError) else UnreadableFileError)
        raise kind(f"{lead}: {message}") from None
