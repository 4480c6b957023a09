"""Headless Chromium for the tests: Debian's ``chromium`` driven by playwright, never a browser download.

:func:`offline_page` opens a page with every request that is not ``file://`` or ``127.0.0.1`` aborted, and
records what went wrong in the page (failed or blocked requests, console errors, uncaught exceptions), so a
test can assert that a report renders with no network and no error. Tests skip when Chromium is not installed
(``infra/bootstrap.sh`` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

CHROMIUM = os.environ.get("LMFORGE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def require_chromium() -> str:
    """The Chromium binary, or skip the test (with the reason) when it is missing."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Debian's chromium is not installed ({CHROMIUM}); infra/bootstrap.sh installs it")
    pytest.importorskip("playwright.sync_api")
    return CHROMIUM


@dataclass
class PageLog:
    """What went wrong while a page was open."""

    blocked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return ([f"blocked (network): {u}" for u in self.blocked] + [f"failed: {u}" for u in self.failed]
                + [f"console error: {m}" for m in self.console_errors]
                + [f"uncaught: {m}" for m in self.page_errors])


def _local(url: str) -> bool:
    parsed = urlparse(url)
    if parsed.scheme in ("file", "data", "blob", "about"):
        return True
    return parsed.scheme in ("http", "https", "ws") and parsed.hostname in LOCAL_HOSTS


@contextmanager
def offline_page(viewport: tuple[int, int] = (1400, 1000)) -> Iterator[tuple[Any, PageLog]]:
    """A headless Chromium page that may only load ``file://`` and 127.0.0.1; yields (page, log)."""
    from playwright.sync_api import sync_playwright

    exe = require_chromium()
    log = PageLog()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})

            def route(r: Any) -> None:
                if _local(r.request.url):
                    r.continue_()
                else:
                    log.blocked.append(r.request.url)
                    r.abort()

            context.route("**/*", route)
            page = context.new_page()
            page.on("requestfailed", lambda req: log.failed.append(f"{req.url} ({req.failure})"))
            page.on("console", lambda msg: log.console_errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: log.page_errors.append(str(exc)))
            yield page, log
        finally:
            browser.close()


def copy_screenshots(src: Path) -> None:
    """Copy the PNGs under ``src`` into ``$LMFORGE_UI_SCREENSHOTS`` when it is set (for a reviewer to look at)."""
    dest = os.environ.get("LMFORGE_UI_SCREENSHOTS")
    if not dest:
        return
    Path(dest).mkdir(parents=True, exist_ok=True)
    for png in sorted(src.glob("*.png")):
        shutil.copy2(png, Path(dest) / png.name)


EXTERNAL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.I)


class _Loads(HTMLParser):
    """Every resource a page loads by itself (scripts, stylesheets, images, frames, media), and its scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.scripts = 0
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "style":
            self._in_style = True
        for name in ("src", "srcset", "poster", "data"):
            if a.get(name):
                self.loads.append(a[name] or "")
        if tag == "link" and a.get("href"):
            self.loads.append(a["href"] or "")
        if a.get("style"):
            self.styles.append(a["style"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def network_loads(html: str) -> list[str]:
    """What ``html`` would fetch from the network by itself (external src/href/CSS url, @import), and a
    ``<script>`` entry per script: a static, offline page has none."""
    parser = _Loads()
    parser.feed(html)
    css_urls = [u for s in parser.styles for u in re.findall(r"url\(\s*['\"]?([^)'\"]+)", s)]
    imports = [s for s in parser.styles if "@import" in s]
    return [u for u in parser.loads + css_urls if EXTERNAL.match(u)] + imports + ["<script>"] * parser.scripts
