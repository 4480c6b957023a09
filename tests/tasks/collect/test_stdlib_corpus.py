"""The offline default corpus: exact rendering on a fake standard library, sanity on the real one."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import pytest

from tasks.collect import stdlib_corpus
from tasks.collect.items import Document, Rejection
from tasks.collect.stdlib_corpus import iter_stdlib_corpus

LONG = " ".join(["This sentence is here to carry the module over the two hundred character floor."] * 3)
FAKE_STDLIB = {
    "pkg/__init__.py": f'"""Package docstring.\n\n    {LONG}\n    """\n',
    "pkg/mod.py": (
        '"""Module summary.\n\nMore words."""\nimport os\n\n'
        "class Base:\n    pass\n\n"
        f'class Widget(Base, metaclass=type):\n    """A widget.\n\n    {LONG}\n    """\n\n'
        '    def __init__(self, size: int = 3) -> None:\n        """Make one."""\n\n'
        '    def _hidden(self):\n        """Never shown."""\n\n'
        '    async def spin(self, *turns, **how):\n        """Spin it."""\n\n'
        'def helper(a, b=1, *, c) -> str:\n    """Help.\n\n    Indented continuation.\n    """\n\n'
        'def _private():\n    """Private, left out."""\n'),
    "shadow.py": f'"""Shadowed module. {LONG}"""\n',
    "shadow/__init__.py": f'"""Shadowing package. {LONG}"""\n',
    "short.py": '"""Too short to keep."""\n\ndef f():\n    """Also short."""\n',
    "side_effect.py": f'"""{LONG}"""\nraise SystemExit("imported!")\n',
    "broken.py": f'"""{LONG}"""\ndef (:\n',
    "test/test_thing.py": f'"""{LONG}"""\n',
    "pkg/tests/test_more.py": f'"""{LONG}"""\n',
    "site-packages/third_party.py": f'"""{LONG}"""\n',
    "config-3.11-x86_64-linux-gnu/python-config.py": f'"""{LONG}"""\n',
    "__pycache__/cached.py": f'"""{LONG}"""\n',
}
WIDGET_SECTION = f"""class Widget(Base, metaclass=type)
    A widget.

    {LONG}

    __init__(self, size: int=3) -> None
        Make one.

    async spin(self, *turns, **how)
        Spin it."""


@pytest.fixture()
def fake_stdlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, source in FAKE_STDLIB.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(source)
    monkeypatch.setattr(stdlib_corpus.sysconfig, "get_paths", lambda: {"stdlib": str(tmp_path)})
    return tmp_path


@pytest.fixture(scope="module")
def corpus() -> list[Document | Rejection]:
    return list(iter_stdlib_corpus())


def test_fake_stdlib_rendering_and_selection(fake_stdlib: Path) -> None:
    items = list(iter_stdlib_corpus(include_topics=False))
    assert [i.location for i in items] == ["pydoc:module/pkg", "pydoc:module/pkg.mod", "pydoc:module/shadow",
                                           "pydoc:module/side_effect"]
    assert items[2].text.startswith("Shadowing package.")  # type: ignore[union-attr]
    assert items[0].text == f"Package docstring.\n\n{LONG}"  # type: ignore[union-attr]
    mod = items[1]
    assert isinstance(mod, Document) and mod.metadata == {"format": "pydoc", "kind": "module"}
    assert mod.text == ("Module summary.\n\nMore words.\n\n" + WIDGET_SECTION +
                        "\n\nhelper(a, b=1, *, c) -> str\n    Help.\n\n    Indented continuation.")


def test_modules_are_parsed_not_imported(fake_stdlib: Path) -> None:
    list(iter_stdlib_corpus(include_topics=False))  # side_effect.py would raise SystemExit if imported
    assert "side_effect" not in sys.modules and "antigravity" not in sys.modules


def test_topics_only_and_modules_only(fake_stdlib: Path) -> None:
    from pydoc_data.topics import topics

    only_topics = list(iter_stdlib_corpus(include_docstrings=False))
    assert [i.location for i in only_topics] == [f"pydoc:topics/{name}" for name in sorted(topics)]
    assert all(isinstance(i, Document) for i in only_topics)
    assert list(iter_stdlib_corpus(include_topics=False, include_docstrings=False)) == []


def test_real_corpus_is_substantial_and_clean(corpus: list[Document | Rejection]) -> None:
    docs = [i for i in corpus if isinstance(i, Document)]
    assert len(docs) == len(corpus) > 300
    assert sum(len(d.text.encode()) for d in docs) > 1_000_000
    locations = [d.location for d in docs]
    assert len(set(locations)) == len(locations)
    assert not [loc for loc in locations if ".test." in loc or loc.endswith(".test") or "idle_test" in loc]
    by_location = {d.location: d.text for d in docs}
    assert by_location["pydoc:module/json"].startswith(inspect.cleandoc(json.__doc__ or ""))
    assert "class JSONDecoder(object)\n    Simple JSON" in by_location["pydoc:module/json.decoder"]
    assert "assert_stmt" in by_location["pydoc:topics/assert"]


def test_real_corpus_is_deterministic(corpus: list[Document | Rejection]) -> None:
    assert list(iter_stdlib_corpus()) == corpus
