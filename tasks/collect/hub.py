"""Collect's Hugging Face source: one split of a dataset (``tasks.readers.hub``), row by row as documents."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tasks.collect.items import Rejection, SourceItem, check_text, location, source_errors
from tasks.readers import hub
from tasks.readers.errors import MissingColumnsError, ReadError


def iter_hf_dataset(*, path: str, name: str | None = None, split: str = "train", text_field: str = "text",
                    streaming: bool = True, data_files: list[str] | None = None, revision: str | None = None,
                    base_dir: Path, max_doc_bytes: int = 10_000_000,
                    retry: Callable[..., Any] | None = None) -> Iterator[SourceItem]:
    """Streams one split of a Hugging Face dataset, row by row in dataset order.

    `path` is, in this order: a directory written by `Dataset.save_to_disk`/`DatasetDict.save_to_disk` (read
    memory-mapped with `load_from_disk`); another local directory of data files; or a builder name ("json",
    "parquet", ...) or hub id, both given to `load_dataset`. The dataset is opened when called, so a source that
    cannot be opened fails before any item is read.

    Args:
        path: Local directory (relative to `base_dir` unless absolute), builder name or hub id.
        name: Dataset configuration name.
        split: Split to read.
        text_field: Column holding the text.
        streaming: Stream with `load_dataset(..., streaming=True)` instead of building a local Arrow cache.
        data_files: Globs of data files: relative to `base_dir` for a builder name, to the directory for a local
            directory, and inside the repository for a hub id. All of them make up `split`.
        revision: Hub revision (branch, tag or commit) to pin.
        base_dir: Directory relative local paths start from.
        max_doc_bytes: Longer texts are rejected as `too_long`.
        retry: Calls `load_dataset` as `retry(load_dataset, *args, **kwargs)`, retrying what fails for a moment (a
            network error, HTTP 429/5xx), e.g. a `tenacity.Retrying`; None: one try.

    Returns:
        An iterator of `Document` (location `hf:<path>/<split>#R<row>`) and `Rejection` items.

    Raises:
        SourceNotFoundError: A local-looking path or a data-file glob names nothing; a hub id cannot be found or
            reached.
        SourceConfigError: The split or configuration does not exist.
    """
    prefix = f"hf:{path}/{split}"
    try:
        with source_errors():
            dataset = hub.open_split(path=path, config=name, split=split, data_files=data_files, revision=revision,
                                     base_dir=Path(base_dir), streaming=streaming, retry=retry)
    except ReadError as exc:  # without streaming, one bad record fails the whole Arrow build
        return iter([Rejection(prefix, exc.reason, exc.detail, "")])
    return _iter_rows(dataset, prefix, split, text_field, max_doc_bytes)


def check_hf_source(*, path: str, data_files: list[str] | None = None, base_dir: Path) -> None:
    """Checks, without opening the dataset or the network, what can be checked locally about a source.

    Raises:
        SourceNotFoundError: A local-looking path or a data-file glob names nothing.
        SourceConfigError: `path` is a file, not a directory.
    """
    with source_errors():
        hub.check_source(path=path, data_files=data_files, base_dir=Path(base_dir))


def _iter_rows(dataset: Any, prefix: str, split: str, field: str, limit: int) -> Iterator[SourceItem]:
    metadata = {"format": "hf", "split": split}
    try:
        for record in hub.iter_rows(dataset, (field,)):
            value = record.value.get(field)
            yield check_text(value, location(prefix, record.at), field, limit, lambda v=value: repr(v), dict(metadata))
    except MissingColumnsError as exc:  # one rejection for the dataset, not one per row
        yield Rejection(prefix, "missing_text", f"no column {field!r}; columns: {exc.columns}", "")
    except ReadError as exc:
        yield Rejection(location(prefix, exc.at), exc.reason, exc.detail, "")
