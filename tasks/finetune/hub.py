"""A task's Hugging Face datasets (``tasks.readers.hub``): a directory written by ``save_to_disk``, a builder name
(json, csv, parquet...) with data files, another local directory of data files, or a hub id (downloaded by
``datasets``; pin ``revision``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tasks.finetune.errors import UnreadableFileError, task_errors
from tasks.finetune.items import Bad, Raw, split_name
from tasks.readers import hub
from tasks.readers.errors import MissingColumnsError, ReadError


def check_hf(*, path: str, data_files: list[str] | None, base_dir: Path, what: str) -> None:
    """Check what can be checked without opening the dataset or the network: local directory, data-file globs.

    Raises:
        TaskPathError: ``path`` looks local (``./``, ``/``, ``~``) but does not exist; a data-file glob matches
            nothing.
        TaskFormatError: ``path`` is a file, not a directory.
    """
    with task_errors(what, keyed=True):
        hub.check_source(path=path, data_files=data_files, base_dir=Path(base_dir))


def iter_hf(*, path: str, config: str | None, splits: list[str], data_files: list[str] | None,
            revision: str | None, fields: Mapping[str, str | None], base_dir: Path,
            what: str, retry: Callable[..., Any] | None = None) -> Iterator[Raw | Bad]:
    """Records of each split in turn, in dataset order; a split named train/validation/val/dev/test gives the
    records' split (unless a split field does).

    Args:
        path: local directory, builder name or hub id.
        config: dataset configuration name.
        splits: the splits to read.
        data_files: data-file globs for a builder name (relative to ``base_dir``) or a local directory (relative to
            it); every file makes up each split read.
        revision: hub revision.
        fields: field names (passed on to the checks).
        base_dir: the repository.
        what: the data entry named in errors, e.g. ``task 'x' data[0]``.
        retry: calls ``load_dataset`` as ``retry(load_dataset, *args, **kwargs)``, retrying what fails for a moment
            (a network error, HTTP 429/5xx), e.g. a ``tenacity.Retrying``; None: one try.

    Raises:
        TaskPathError: a local path or glob names nothing; a hub id cannot be found or reached.
        TaskFormatError: unknown split or configuration.
        UnreadableFileError: the dataset cannot be built (a data file does not parse) or read on.
    """
    check_hf(path=path, data_files=data_files, base_dir=base_dir, what=what)
    for split in splits:
        with task_errors(what, keyed=True):
            dataset = hub.open_split(path=path, config=config, split=split, data_files=data_files,
                                     revision=revision, base_dir=Path(base_dir), retry=retry)
        yield from _rows(dataset, f"{path}/{split}", split_name(split), fields, what)


def _rows(dataset: Any, prefix: str, split: str | None, fields: Mapping[str, str | None],
          what: str) -> Iterator[Raw]:
    try:
        for record in hub.iter_rows(dataset, {v for v in fields.values() if v}):
            yield Raw(f"{prefix}#{record.at.number}", record.value, fields, split)  # type: ignore[union-attr]
    except MissingColumnsError as exc:  # no wanted column at all: every row misses its fields (the checks say so)
        yield from (Raw(f"{prefix}#{index}", {}, fields, split) for index in range(exc.rows or 0))
    except ReadError as exc:
        row = f"#{exc.at.number}" if exc.at else ""
        raise UnreadableFileError(f"{what}.path: {prefix}{row} cannot be read ({exc.detail}); fix its data "
                                  "files") from None
