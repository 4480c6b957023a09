"""Reader for Hugging Face datasets: `save_to_disk` directories, local data files, builder names and hub ids."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tasks.collect.items import Rejection, SourceConfigError, SourceItem, SourceNotFoundError, check_text, expand_paths

_BATCH = 1024


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
    from datasets.exceptions import DatasetBuildError

    prefix = f"hf:{path}/{split}"
    try:
        dataset = _open(path, name, split, streaming, data_files, revision, Path(base_dir), retry)
    except (FileNotFoundError, ConnectionError) as exc:
        raise SourceNotFoundError(f"cannot load dataset {path!r}: {exc}; check the path or hub id and the network "
                                  "(or download it beforehand and point `path` at the copy)") from exc
    except ValueError as exc:  # what datasets raises for an unknown split or configuration
        raise SourceConfigError(f"cannot load dataset {path!r} (config {name!r}, split {split!r}): {exc}") from exc
    except DatasetBuildError as exc:  # without streaming, one bad record fails the whole Arrow build
        cause = exc.__cause__ or exc
        return iter([Rejection(prefix, "unreadable", f"{type(cause).__name__}: {str(cause)[:300]}", "")])
    return _iter_rows(dataset, prefix, split, text_field, max_doc_bytes)


def check_hf_source(*, path: str, data_files: list[str] | None = None, base_dir: Path) -> None:
    """Checks, without opening the dataset or the network, what can be checked locally about a source.

    Raises:
        SourceNotFoundError: A local-looking path or a data-file glob names nothing.
        SourceConfigError: `path` is a file, not a directory.
    """
    local = _local_dir(path, Path(base_dir))
    if local is not None and not local.is_dir():
        raise SourceConfigError(f"dataset path {path!r} is a file; give its directory, or use builder 'json' / "
                                "'parquet' with data_files")
    if data_files is None:
        return
    if local is not None:
        expand_paths(data_files, local)
        return
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    if path in _PACKAGED_DATASETS_MODULES:  # a hub id's data_files lie inside the hub repository
        expand_paths(data_files, Path(base_dir))


def _local_dir(path: str, base_dir: Path) -> Path | None:
    """The local path meant by `path`, or None for a builder name / hub id; raises if it should exist but does not."""
    candidate = base_dir / os.path.expanduser(path)
    if candidate.exists():
        return candidate
    if path.startswith(("./", "../", "/", "~", ".\\")) or path in (".", ".."):
        raise SourceNotFoundError(f"dataset path {path!r} does not exist (looked for {candidate}); fix `path` in "
                                  "the source's params, or give a hub id such as 'user/dataset'")
    return None


def _once(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def _open(path: str, name: str | None, split: str, streaming: bool, data_files: list[str] | None,
          revision: str | None, base_dir: Path, retry: Callable[..., Any] | None = None) -> Any:
    import datasets

    local = _local_dir(path, base_dir)
    if local is not None and not local.is_dir():
        raise SourceConfigError(f"dataset path {path!r} is a file; give its directory, or use builder 'json' / "
                                "'parquet' with data_files")
    if local is not None and ((local / "state.json").exists() or (local / "dataset_dict.json").exists()):
        saved = datasets.load_from_disk(str(local))
        if isinstance(saved, datasets.DatasetDict):
            if split not in saved:
                raise SourceConfigError(f"{path!r} has no split {split!r}; splits: {sorted(saved)}")
            saved = saved[split]
        return saved
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    if data_files is not None and (local is not None or path in _PACKAGED_DATASETS_MODULES):
        # builder names and local folders: resolve the globs here, so a typo is an error that names them
        files = [str(p) for p in expand_paths(data_files, local if local is not None else base_dir)]
        data_files_arg: Any = {split: files}
    else:
        data_files_arg = data_files
    # the hub can fail for a moment (network, 429, 5xx): the whole opening is tried again under `retry`
    return (retry or _once)(datasets.load_dataset, str(local) if local is not None else path, name, split=split,
                            data_files=data_files_arg, streaming=streaming, revision=revision)


def _iter_rows(dataset: Any, prefix: str, split: str, field: str, limit: int) -> Iterator[SourceItem]:
    columns = getattr(dataset, "column_names", None)
    if columns is not None and field not in columns:  # one rejection for the dataset, not one per row
        yield Rejection(prefix, "missing_text", f"no column {field!r}; columns: {columns}", "")
        return
    if columns is not None:  # other columns may be large (images, token ids): leave them on disk
        dataset = dataset.select_columns([field])
    metadata = {"format": "hf", "split": split}
    row = 0
    try:
        for batch in dataset.iter(batch_size=_BATCH):
            values = batch.get(field) or [None] * len(next(iter(batch.values()), []))
            for value in values:
                yield check_text(value, f"{prefix}#R{row}", field, limit, lambda v=value: repr(v), dict(metadata))
                row += 1
    except Exception as exc:  # datasets' builders raise many types; none lets us go on past it
        yield Rejection(f"{prefix}#R{row}", "unreadable", f"{type(exc).__name__}: {str(exc)[:300]}", "")
