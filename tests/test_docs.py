"""The README and docs/: every relative link reaches a file (and a heading, where it names one), and the README
stays a front door: its two commands first, within about 200 lines."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.M)


def _prose(text: str) -> str:
    """The page without fenced code blocks and inline code, where ``](...)`` is not a link."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    anchors = set()
    for title in HEADING.findall(_prose(page.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", title.replace("`", "").strip().lower()).replace(" ", "-")
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _broken(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if "://" in target or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading '{anchor}' in {path or page.name})")
    return broken


def test_every_relative_link_resolves() -> None:
    assert len(PAGES) > 10, "the docs pages are missing"
    problems = {str(p.relative_to(REPO)): b for p in PAGES if (b := _broken(p))}
    assert problems == {}


def test_the_checker_catches_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("# Real heading\n", encoding="utf-8")
    page = tmp_path / "a.md"
    page.write_text("[x](b.md#real-heading) [y](missing.md) [z](b.md#nope) `[w](gone.md)`\n"
                    "```\n[v](gone.md)\n```\n", encoding="utf-8")
    assert _broken(page) == ["missing.md (no such file)", "b.md#nope (no heading 'nope' in b.md)"]


def test_every_docs_page_is_reachable_from_the_index() -> None:
    index = REPO / "docs" / "index.md"
    linked = {(index.parent / t.partition("#")[0]).resolve() for t in LINK.findall(_prose(index.read_text()))}
    assert [str(p.relative_to(REPO)) for p in PAGES[1:] if p != index and p not in linked] == []


def test_readme_is_a_front_door() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "# lmforge"
    assert len(lines) <= 220, f"README.md is {len(lines)} lines: move reference material to docs/"
    first_block = FENCE.search(text)
    assert first_block is not None
    commands = [line for line in first_block.group(0).splitlines()[1:-1] if line.strip()]
    assert commands == ["bash infra/bootstrap.sh && .venv/bin/lmforge run",
                        "bash infra/bootstrap.sh && .venv/bin/python -m pytest"]
