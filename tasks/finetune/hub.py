"""Hugging Face datasets: a directory written by ``save_to_disk``, a builder name (json, csv, parquet...) with data
files, another local directory of data files, or a hub id (downloaded by ``datasets``; pin ``revision``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tasks.finetune.errors import TaskFormatError, TaskPathError, UnreadableFileError
from tasks.finetune.files import expand_globs
from tasks.finetune.items import Bad, Raw, split_name

_BATCH = 1024


def local_dir(path: str, base_dir: Path, what: str) -> Path | None:
    """The local directory ``path`` names, or None for a builder name or hub id.

    Raises:
        TaskPathError: ``path`` looks local (``./``, ``/``, ``~``) but does not exist.
        TaskFormatError: ``path`` is a file, not a directory.
    """
    candidate = Path(base_dir) / os.path.expanduser(path)
    if candidate.exists():
        if not candidate.is_dir():
            raise TaskFormatError(f"{what}.path: {path!r} is a file; give its directory, or use the builder name "
                                  "(json, csv, parquet) with data_files, or data kind files")
        return candidate
    if path.startswith(("./", "../", "/", "~")) or path in (".", ".."):
        raise TaskPathError(f"{what}.path: dataset directory {path!r} does not exist (looked for {candidate}); fix "
                            "`path`, or give a hub id such as 'user/dataset'")
    return None


def check_hf(*, path: str, data_files: list[str] | None, base_dir: Path, what: str) -> None:
    """Check what can be checked without opening the dataset or the network: local directory, data-file globs.

    Raises:
        TaskPathError, TaskFormatError: as :func:`local_dir`; a data-file glob matches nothing.
    """
    local = local_dir(path, base_dir, what)
    if data_files is not None and (local is not None or _is_builder(path)):
        expand_globs(data_files, local if local is not None else base_dir, f"{what}.data_files")


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
        UnreadableFileError: the dataset cannot be built (a data file does not parse).
    """
    check_hf(path=path, data_files=data_files, base_dir=base_dir, what=what)
    for split in splits:
        dataset = _open(path, config, split, data_files, revision, Path(base_dir), what, retry)
        yield from _rows(dataset, f"{path}/{split}", split_name(split), fields)


def _is_builder(path: str) -> bool:
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    return path in _PACKAGED_DATASETS_MODULES


def _once(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def _open(path: str, config: str | None, split: str, data_files: list[str] | None, revision: str | None,
          base_dir: Path, what: str, retry: Callable[..., Any] | None = None) -> Any:
    import datasets
    from datasets.exceptions import DatasetBuildError

    local = local_dir(path, base_dir, what)
    if local is not None and ((local / "state.json").exists() or (local / "dataset_dict.json").exists()):
        saved = datasets.load_from_disk(str(local))
        if isinstance(saved, datasets.DatasetDict):
            if split not in saved:
                raise TaskFormatError(f"{what}.splits: {path!r} has no split {split!r}; its splits: {sorted(saved)}")
            saved = saved[split]
        return saved
    files: Any = data_files
    if data_files is not None and (local is not None or _is_builder(path)):
        # resolved here, so a typo is our error naming the glob; every file makes up the split asked for
        files = {split: [str(p) for p, _ in expand_globs(data_files, local or base_dir, f"{what}.data_files")]}
    try:
        # the hub can fail for a moment (network, 429, 5xx): the whole opening is tried again under `retry`
        return (retry or _once)(datasets.load_dataset, str(local) if local is not None else path, config,
                                split=split, data_files=files, revision=revision)
    except DatasetBuildError as e:
        cause = e.__cause__ or e
        raise UnreadableFileError(f"{what}.path: dataset {path!r} cannot be built ({type(cause).__name__}: "
                                  f"{str(cause)[:300]}); fix its data files") from None
    except (FileNotFoundError, ConnectionError) as e:
        raise TaskPathError(f"{what}.path: cannot load dataset {path!r} ({e}); check the path or hub id and the "
                            "network, or download it beforehand and point `path` at the copy") from None
    except ValueError as e:  # what datasets raises for an unknown split or configuration
        raise TaskFormatError(f"{what}.path: cannot load dataset {path!r} (config {config!r}, split {split!r}): "
                              f"{e}") from None


def _rows(dataset: Any, prefix: str, split: str | None, fields: Mapping[str, str | None]) -> Iterator[Raw]:
    wanted = {v for v in fields.values() if v}
    columns = [c for c in dataset.column_names if c in wanted]  # other columns may be large: leave them on disk
    if not columns:  # no wanted column at all: every row is missing its fields (quarantined by the checks)
        for index in range(len(dataset)):
            yield Raw(f"{prefix}#{index}", {}, fields, split)
        return
    index = 0
    for batch in dataset.select_columns(columns).iter(batch_size=_BATCH):
        for i in range(len(batch[columns[0]])):
            yield Raw(f"{prefix}#{index}", {c: batch[c][i] for c in columns}, fields, split)
            index += 1
