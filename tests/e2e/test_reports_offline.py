"""The reports render with no network: GX Data Docs and the evaluation report, opened in headless Chromium.

The browser may load only ``file://`` (every other request is aborted and recorded), so a page that still
needs a CDN shows up as a blocked request, a console error or an empty table.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.datadocs import external_resources
from tasks.evaluate.report import write_report
from tasks.records import COLUMNS
from tasks.validation import validate_records
from tests.browser import copy_screenshots, network_loads, offline_page


def _shard(path: Path, rows: list[dict]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    table = pa.table({c: [r.get(c) for r in rows] for c in COLUMNS},
                     schema=pa.schema([(c, pa.string()) for c in COLUMNS]))
    pq.write_table(table, path / "part-00000.parquet")


def test_data_docs_render_offline(tmp_path: Path) -> None:
    rows = [{"id": f"{i:032x}", "text": "some text", "source": "s", "path": f"f#L{i}", "metadata": "{}"}
            for i in range(6)]
    rows.append(dict(rows[0]))  # a duplicate id: the page must show the failed expectation and the value
    _shard(tmp_path / "raw", rows)
    docs = tmp_path / "reports" / "gx" / "collect"
    report = validate_records(tmp_path / "raw", suite="collect", columns=COLUMNS, min_rows=1, max_rows=None,
                              report_dir=docs)
    assert not report.success and report.docs_index == docs / "index.html"

    pages = sorted(docs.rglob("*.html"))
    assert len(pages) == 3  # index, the suite, the validation result
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert network_loads(html) == [], page
        assert external_resources(html) == [], page
    validation_page = next(p for p in pages if "validations" in p.parts)

    shots = tmp_path / "reports" / "ui"
    shots.mkdir(parents=True)
    with offline_page() as (page, log):
        page.goto((docs / "index.html").as_uri())
        # the index lists the validation result: a row with the suite, its run time and a link to its page
        row = page.locator("table tbody tr", has_text="collect").first
        row.wait_for(timeout=20_000)
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row.inner_text())
        link = row.locator("a.lmforge-row-link").first
        assert link.get_attribute("href") == validation_page.relative_to(docs).as_posix()
        page.screenshot(path=str(shots / "datadocs-index.png"), full_page=True)

        link.click()
        page.wait_for_url(validation_page.as_uri())
        page.get_by_text("Expectation Validation Result").first.wait_for(timeout=20_000)
        body = page.inner_text("body")
        assert "values must be unique" in body  # the expectations table, rendered without a script
        assert "Unsuccessful Expectations" in body and "Failed" in body
        assert rows[0]["id"] in body  # the duplicate id among the unexpected values
        # the status icons (Font Awesome classes) show as characters, not as empty boxes
        assert page.locator("i.fa-times").first.evaluate("e => getComputedStyle(e, '::before').content") != "none"
        page.screenshot(path=str(shots / "datadocs-validation.png"), full_page=True)
    assert log.problems() == []
    copy_screenshots(shots)


def test_evaluate_report_renders_offline(tmp_path: Path) -> None:
    models = [{"name": "base", "bits_per_byte": 1.9, "latency_ms": 3.1},
              {"name": "docstring-sft", "bits_per_byte": 2.1, "rougeL": 0.31, "latency_ms": 3.3},
              {"name": "unigram", "baseline": True, "bits_per_byte": 4.4}]
    index = write_report(out_dir=tmp_path / "reports" / "evaluate", models=models,
                         bar_metrics=("bits_per_byte", "rougeL"),
                         funnel=[{"name": "collect", "docs": 50}, {"name": "clean", "docs": 45}],
                         mlflow_runs={"evaluate run": "http://127.0.0.1:5000/#/experiments/1/runs/abc"})
    assert network_loads(index.read_text(encoding="utf-8")) == []
    shots = tmp_path / "reports" / "ui"
    shots.mkdir(parents=True)
    with offline_page() as (page, log):
        page.goto(index.as_uri())
        page.get_by_text("docstring-sft").first.wait_for(timeout=20_000)
        images = page.locator("img")
        assert images.count() >= 3
        for i in range(images.count()):  # every plot loaded from disk and decoded
            assert images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0"), images.nth(i)
        page.screenshot(path=str(shots / "evaluate-report.png"), full_page=True)
    assert log.problems() == []
    copy_screenshots(shots)
