"""Hugging Face datasets: a directory written by ``save_to_disk``, another local directory of data files, or a
builder name (json, csv, parquet...) or hub id given to ``load_dataset`` (pin ``revision``).

:func:`open_split` opens one split, so that a source that cannot be opened fails before any row is read;
:func:`iter_rows` reads it row by row, in dataset order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from tasks.readers.errors import MissingColumnsError, NotFoundError, ReadError, SettingsError
from tasks.readers.files import expand_globs
from tasks.readers.items import At, Record

_BATCH = 1024


def local_dir(path: str, base_dir: Path) -> Path | None:
    """The local directory ``path`` names (relative to ``base_dir`` unless absolute), or None for a builder name or
    hub id.

    Raises:
        NotFoundError: ``path`` looks local (``./``, ``../``, ``/``, ``~``) but does not exist.
        SettingsError: ``path`` is a file, not a directory.
    """
    candidate = Path(base_dir) / os.path.expanduser(path)
    if candidate.exists():
        if not candidate.is_dir():
            raise SettingsError(f"{path!r} is a file; give its directory, or use a builder name (json, csv, parquet) "
                                "with data_files", key="path")
        return candidate
    if path.startswith(("./", "../", "/", "~", ".\\")) or path in (".", ".."):
        raise NotFoundError(f"dataset directory {path!r} does not exist (looked for {candidate}); fix `path`, or "
                            "give a hub id such as 'user/dataset'", key="path")
    return None


def _is_builder(path: str) -> bool:
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    return path in _PACKAGED_DATASETS_MODULES


def check_source(*, path: str, data_files: list[str] | None, base_dir: Path) -> None:
    """Checks what can be checked without opening the dataset or the network: the local directory and the data-file
    globs (a hub id's data files lie inside its repository, unseen here).

    Raises:
        NotFoundError, SettingsError: as :func:`local_dir`; a data-file glob matches nothing.
    """
    local = local_dir(path, Path(base_dir))
    if data_files is not None and (local is not None or _is_builder(path)):
        _data_files(data_files, local if local is not None else Path(base_dir))


def _data_files(patterns: list[str], base_dir: Path) -> list[str]:
    try:
        return [str(p) for p, _ in expand_globs(patterns, base_dir)]
    except NotFoundError as exc:
        exc.key = "data_files"
        raise


def _once(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def open_split(*, path: str, config: str | None, split: str, data_files: list[str] | None, revision: str | None,
               base_dir: Path, streaming: bool = False, retry: Callable[..., Any] | None = None) -> Any:
    """One split of a dataset, opened (a saved one memory-mapped, a streamed one not yet read).

    Args:
        path: local directory (relative to ``base_dir`` unless absolute), builder name or hub id.
        config: dataset configuration name.
        split: the split.
        data_files: globs of data files, relative to ``base_dir`` for a builder name, to the directory for a local
            one, inside the repository for a hub id; every file makes up ``split``.
        revision: hub revision (branch, tag or commit).
        base_dir: where relative local paths start.
        streaming: stream (``load_dataset(..., streaming=True)``) instead of building a local Arrow cache.
        retry: calls ``load_dataset`` as ``retry(load_dataset, *args, **kwargs)``, retrying what fails for a moment
            (a network error, HTTP 429/5xx), e.g. a ``tenacity.Retrying``; None: one try.

    Raises:
        NotFoundError: a local path or glob names nothing; a hub id cannot be found or reached.
        SettingsError: the split or configuration does not exist.
        ReadError: the dataset cannot be built (``unreadable``): a data file does not parse.
    """
    import datasets
    from datasets.exceptions import DatasetBuildError

    local = local_dir(path, Path(base_dir))
    try:
        if local is not None and ((local / "state.json").exists() or (local / "dataset_dict.json").exists()):
            saved = datasets.load_from_disk(str(local))
            if isinstance(saved, datasets.DatasetDict):
                if split not in saved:
                    raise SettingsError(f"{path!r} has no split {split!r}; its splits: {sorted(saved)}", key="splits")
                saved = saved[split]
            return saved
        files: Any = data_files
        if data_files is not None and (local is not None or _is_builder(path)):
            # resolved here, so that a typo is an error naming the glob
            files = {split: _data_files(data_files, local if local is not None else Path(base_dir))}
        # the hub can fail for a moment (network, 429, 5xx): the whole opening is tried again under `retry`
        return (retry or _once)(datasets.load_dataset, str(local) if local is not None else path, config,
                                split=split, data_files=files, streaming=streaming, revision=revision)
    except DatasetBuildError as exc:  # without streaming, one bad record fails the whole Arrow build
        cause = exc.__cause__ or exc
        detail = f"{type(cause).__name__}: {str(cause)[:300]}"
        raise ReadError("unreadable", detail, key="path",
                        message=f"dataset {path!r} cannot be built ({detail}); fix its data files") from None
    except (FileNotFoundError, ConnectionError) as exc:
        raise NotFoundError(f"cannot load dataset {path!r} ({exc}); check the path or hub id and the network, or "
                            "download it beforehand and point `path` at the copy", key="path") from None
    except ValueError as exc:  # what datasets raises for an unknown split or configuration
        raise SettingsError(f"cannot load dataset {path!r} (config {config!r}, split {split!r}): {exc}",
                            key="path") from None


def iter_rows(dataset: Any, columns: Collection[str]) -> Iterator[Record]:
    """The rows of ``columns`` (those the dataset has, in its order; other columns may be large and stay on disk),
    each a dict at its 0-based row.

    Raises:
        MissingColumnsError: the dataset has none of ``columns`` (before the first row).
        ReadError: the dataset stops being readable (``unreadable``, at the row it stops at).
    """
    names = getattr(dataset, "column_names", None)  # None: a streamed dataset whose features are not known yet
    if names is not None:
        wanted = [c for c in names if c in columns]
        if not wanted:
            raise MissingColumnsError(list(names), len(dataset) if hasattr(dataset, "__len__") else None)
        dataset = dataset.select_columns(wanted)
    names_of = class_label_decoders(dataset, columns)
    row = 0
    try:
        for batch in dataset.iter(batch_size=_BATCH):
            present = [c for c in batch if c in columns]
            for i in range(len(next(iter(batch.values()), []))):
                value = {c: batch[c][i] for c in present}
                for c in names_of.keys() & value.keys():
                    value[c] = names_of[c](value[c])
                yield Record(At("row", row), value)
                row += 1
    except Exception as exc:  # datasets' builders raise many types; none lets us go on past it
        raise ReadError("unreadable", f"{type(exc).__name__}: {str(exc)[:300]}", at=At("row", row)) from None


def class_label_decoders(dataset: Any, columns: Collection[str]) -> dict[str, Callable[[Any], Any]]:
    """For each of ``columns`` the dataset stores as ``ClassLabel`` ids (a label, or a list of them: CoNLL-2003's
    ``ner_tags``), what turns its ids into the names the dataset declares; -1 (datasets' "no label", as in GLUE's
    test splits) becomes None, a missing label. Columns of plain ints stay ints."""
    import datasets

    features = getattr(dataset, "features", None) or {}
    decoders: dict[str, Callable[[Any], Any]] = {}
    for column in columns:
        feature = features.get(column)
        inner = getattr(feature, "feature", None)  # List / Sequence / LargeList of ClassLabel
        if isinstance(feature, datasets.ClassLabel):
            decoders[column] = _class_name(feature)
        elif isinstance(inner, datasets.ClassLabel):
            name = _class_name(inner)
            decoders[column] = lambda v, name=name: None if v is None else [name(x) for x in v]
    return decoders


def _class_name(feature: Any) -> Callable[[Any], Any]:
    names = list(feature.names)

    def name(value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return names[value] if 0 <= value < len(names) else None
        return value

    return name
