"""Classification data in scikit-learn's ``load_files`` layout: one folder per class (``path/LABEL/*``, every
regular file in it, sorted) or one file per class (``path/LABEL.txt``); the label is the folder's or file's name.
An example is a whole file or, with unit ``line``, each non-empty line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tasks.finetune.errors import TaskFormatError, TaskPathError
from tasks.finetune.items import DEFAULT_FIELDS, Bad, Raw


def class_sources(path: str, base_dir: Path, what: str) -> list[tuple[str, list[Path]]]:
    """(label, files) per class, sorted by label; hidden entries are skipped.

    Raises:
        TaskPathError: ``path`` is not a directory, or holds no class folder or ``.txt`` file.
    """
    root = Path(base_dir) / path
    if not root.is_dir():
        raise TaskPathError(f"{what}: {path!r} is not a directory (looked for {root}); give the folder holding "
                            "one folder or .txt file per class")
    classes: dict[str, list[Path]] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            files = sorted(f for f in entry.iterdir() if f.is_file() and not f.name.startswith("."))
            classes.setdefault(entry.name, []).extend(files)
        elif entry.is_file() and entry.suffix == ".txt":
            classes.setdefault(entry.stem, []).append(entry)
    if not classes:
        raise TaskPathError(f"{what}: {path!r} holds no class folder (LABEL/) and no class file (LABEL.txt)")
    return sorted(classes.items())


def iter_folders(*, path: str, unit: str, base_dir: Path, what: str) -> Iterator[Raw | Bad]:
    """The examples of every class, class by class in label order, file by file in name order.

    Args:
        path: the directory holding one folder or file per class, relative to ``base_dir``.
        unit: ``file`` (a file is one example) or ``line`` (each non-empty line is one).
        base_dir: the repository.
        what: the params key named in errors.

    Raises:
        TaskPathError: as :func:`class_sources`, before the first record.
        TaskFormatError: unknown unit.
    """
    if unit not in ("file", "line"):
        raise TaskFormatError(f"{what}: unit {unit!r}; use file or line")
    sources = class_sources(path, base_dir, what)
    return _iter(sources, unit, Path(base_dir))


def _iter(sources: list[tuple[str, list[Path]]], unit: str, base_dir: Path) -> Iterator[Raw | Bad]:
    for label, files in sources:
        for file in files:
            name = _shown(file, base_dir)
            data = file.read_bytes()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Bad(name, "undecodable", str(e), data[:1000].decode("utf-8", "backslashreplace"))
                continue
            if unit == "file":
                yield Raw(name, {"text": text, "label": label}, DEFAULT_FIELDS)
                continue
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    yield Raw(f"{name}:{number}", {"text": line, "label": label}, DEFAULT_FIELDS)


def _shown(file: Path, base_dir: Path) -> str:
    """The name a quarantine row shows: relative to the repository when inside it (the same on every checkout)."""
    try:
        return file.relative_to(base_dir).as_posix()
    except ValueError:
        return file.as_posix()
