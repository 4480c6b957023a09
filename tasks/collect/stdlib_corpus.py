"""The offline default corpus: documentation text that ships with every Python installation.

Two parts: the language reference topics behind `help("TOPIC")` (`pydoc_data.topics`), and, for each standard-library
module, its docstrings rendered the way `help()` lays them out. Modules are parsed with `ast` and never imported:
importing is not free of side effects (`antigravity` opens a browser, `this` prints).
"""

from __future__ import annotations

import ast
import inspect
import os
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from tasks.collect.items import SourceItem, check_text

SKIP_DIRS: frozenset[str] = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})
MIN_DOC_CHARS = 200  # below this a module's docstrings are a line or two: noise, not prose
_MAX_DOC_BYTES = 10_000_000
_INDENT = "    "


def iter_stdlib_corpus(*, include_topics: bool = True, include_docstrings: bool = True) -> Iterator[SourceItem]:
    """Streams the standard library's documentation text, in a fixed order for a given Python installation.

    Args:
        include_topics: Yield each `pydoc_data.topics` entry (location `pydoc:topics/<name>`), sorted by name.
        include_docstrings: Then yield one document per standard-library module (location
            `pydoc:module/<dotted.name>`, sorted by that name): its docstring, then each public top-level class and
            function with a docstring, and each class's methods, rendered like `help()` text. Test suites,
            site-packages, unparseable files and modules with under 200 characters of docstrings are left out.

    Returns:
        An iterator of `Document` items (and a `Rejection` only for a text no UTF-8 file could hold).
    """
    if include_topics:
        from pydoc_data.topics import topics

        for name in sorted(topics):
            yield check_text(topics[name], f"pydoc:topics/{name}", "topic", _MAX_DOC_BYTES, lambda n=name: topics[n],
                             {"format": "pydoc", "kind": "topic"})
    if include_docstrings:
        root = Path(sysconfig.get_paths()["stdlib"])
        seen: set[str] = set()
        modules = sorted(_stdlib_modules(root), key=lambda pm: (pm[1], pm[0].name != "__init__.py"))
        for path, module in modules:
            if module in seen:  # `x.py` beside `x/__init__.py`: Python imports the package, so do we
                continue
            seen.add(module)
            text = _module_text(path)
            if text is not None:
                yield check_text(text, f"pydoc:module/{module}", "docstrings", _MAX_DOC_BYTES, lambda t=text: t,
                                 {"format": "pydoc", "kind": "module"})


def _stdlib_modules(root: Path) -> Iterator[tuple[Path, str]]:
    """Yields (file, dotted module name) for every importable-looking `.py` file under `root`."""
    for directory, dirs, files in os.walk(root):
        rel = Path(directory).relative_to(root).parts
        # only package-like directories: skips e.g. config-3.11-x86_64-linux-gnu, whose files are no modules
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and d.isidentifier())
        for name in sorted(files):
            stem = name.removesuffix(".py")
            if not name.endswith(".py") or not stem.isidentifier():
                continue
            parts = rel if stem == "__init__" else (*rel, stem)
            if parts:
                yield Path(directory) / name, ".".join(parts)


def _module_text(path: Path) -> str | None:
    """The module's docstrings laid out like `help()`, or None when unparseable or too short to be worth it."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError, OSError):
        return None
    sections: list[str] = []
    doc = _docstring(tree)
    if doc:
        sections.append(doc)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and _public(node.name):
            sections.extend(_class_text(node))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _public(node.name):
            body = _docstring(node)
            if body:
                sections.append(f"{_signature(node)}\n{_indent(body, 1)}")
    text = "\n\n".join(sections)
    return text if _doc_chars(tree) >= MIN_DOC_CHARS else None


def _class_text(node: ast.ClassDef) -> list[str]:
    bases = [ast.unparse(b) for b in node.bases] + [ast.unparse(k) for k in node.keywords]
    methods = []
    for item in node.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and _public(item.name):
            body = _docstring(item)
            if body:
                methods.append(f"{_indent(_signature(item), 1)}\n{_indent(body, 2)}")
    doc = _docstring(node)
    if not doc and not methods:
        return []
    head = f"class {node.name}" + (f"({', '.join(bases)})" if bases else "")
    return ["\n\n".join([head + (f"\n{_indent(doc, 1)}" if doc else ""), *methods])]


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    prefix = "async " if isinstance(node, ast.AsyncFunctionDef) else ""
    returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    return f"{prefix}{node.name}({ast.unparse(node.args)}){returns}"


def _docstring(node: ast.AST) -> str:
    raw = ast.get_docstring(node, clean=False)  # type: ignore[arg-type]
    return inspect.cleandoc(raw) if raw else ""


def _doc_chars(tree: ast.Module) -> int:
    """Characters of docstring the module's rendering holds: what the 200-character floor is measured on."""
    nodes: list[ast.AST] = [tree]
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and _public(node.name):
            nodes.append(node)
            if isinstance(node, ast.ClassDef):
                nodes.extend(i for i in node.body if isinstance(i, ast.FunctionDef | ast.AsyncFunctionDef)
                             and _public(i.name))
    return sum(len(_docstring(n)) for n in nodes)


def _public(name: str) -> bool:
    """Names `help()` would show: no leading underscore, except dunder methods such as `__init__`."""
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__"))


def _indent(text: str, level: int) -> str:
    return "\n".join(_INDENT * level + line if line.strip() else "" for line in text.splitlines())
