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


def _wide_rows() -> list[dict]:
    """The report rows of a default run (3 language models; 2 tasks x 5 models + baselines), every column filled
    with values as wide as the real ones."""
    from tasks.evaluate.summary import COLUMNS

    rows = [{"name": n, "task": "lm", "baseline": n != "base", "lm_perplexity": 581.23, "bits_per_byte": 1.8734,
             "lm_documents": 15} for n in ("base", "unigram", "unigram_byte")]
    for task in ("doc_section", "docstring"):
        for model in ("finetuned", "student", "magnitude", "structured", "int8", "tfidf_logreg", "lead"):
            rows.append({"name": f"{model}/{task}", "baseline": model in ("tfidf_logreg", "lead"),
                         **{c: 0.123456 for c in COLUMNS}, "task": task, "macro_f1_ci": [0.61234, 0.75432],
                         "examples": 1234, "params": 1054208, "size_bytes": 4216832, "promoted": False,
                         "latency_p50_ms": 3.21, "tokens_per_second": 12345.6})
    return rows


def test_evaluate_report_opens_with_the_decision_and_fits_the_page(tmp_path: Path) -> None:
    # issue 27 item 1: a table wider than a 1,400-pixel window (the latency columns cut off), and no word on which
    # model to use; now the page opens with the decision per task and its tables fit
    from tasks.evaluate.decision import decide
    from tasks.evaluate.summary import TABLES
    from tests.tasks.evaluate.test_decision import GATE, scores, version

    facts = {"doc_section": {"registered_model": "lmforge-doc_section", "gate": GATE, "previous": None,
                             "champion": version("5", "int8", "student v4", 0.685, (0.62, 0.75), this_run=False),
                             "candidates": [{"model": "finetuned", "version": "6", "promoted": False,
                                             "reason": "test.macro_f1 0.67 is not > 0.695 (champion v5 0.685 + "
                                             "margin 0.01)"}]}}
    verdicts = decide(facts, {"doc_section": {"finetuned": scores(0.67, (0.6, 0.73)),
                                              "tfidf_logreg": scores(0.711, (0.65, 0.77))}},
                      {"doc_section": "classification"}, {"doc_section": ["tfidf_logreg"]})
    index = write_report(out_dir=tmp_path / "reports" / "evaluate", models=_wide_rows(), tables=TABLES,
                         decisions=verdicts, quality="macro_f1", latency="latency_p50_ms",
                         bar_metrics=("macro_f1",))
    shots = tmp_path / "reports" / "ui"
    shots.mkdir(parents=True)
    with offline_page(viewport=(1400, 900)) as (page, log):
        page.goto(index.as_uri())
        decision = page.locator("#decision")
        decision.wait_for(timeout=20_000)
        text = decision.inner_text()
        assert "Use lmforge-doc_section v5 (alias champion): int8 model from student v4, test macro_f1 0.685 " \
               "[0.620, 0.750], registered by evaluate run run5 in an earlier run." in text
        assert "Warning: A baseline beats the champion: tfidf_logreg has test macro_f1 0.711" in text
        assert "v6 (fine-tuned): kept out: test.macro_f1 0.67 is not > 0.695" in text
        assert "the tables below show this run's models, not it" in text
        # the decision comes first: above the model tables, within the first screen
        top = decision.bounding_box()
        assert top is not None and top["y"] < 200
        assert page.locator("h2").first.inner_text() == "Decision"
        # nothing runs off a 1,400-pixel window: the page does not scroll sideways, every table ends inside it
        assert page.evaluate("document.documentElement.scrollWidth") <= 1400
        widths = page.locator("table").evaluate_all("ts => ts.map(t => t.getBoundingClientRect().right)")
        assert widths and max(widths) <= 1400, widths
        headers = page.locator("th").all_inner_texts()
        assert "latency_p50_ms" in [h.replace("\u200b", "").replace("\n", "") for h in headers]
        page.screenshot(path=str(shots / "evaluate-decision.png"), full_page=True)
    assert log.problems() == []
    copy_screenshots(shots)


def test_quality_vs_latency_labels_do_not_overlap() -> None:
    # the scatter wrote each model's name at its point: models of one size (a student and its pruned variants) sat
    # together and their labels overlapped; now every name is in a legend beside the axes
    import itertools

    from tasks.evaluate.report import quality_latency_figure

    rows = _wide_rows()
    for i, r in enumerate(rows):  # the five models of a task at nearly the same latency and score
        r["latency_p50_ms"], r["macro_f1"] = 3.2 + (i % 5) * 0.01, 0.68 + (i % 5) * 0.002
    fig = quality_latency_figure(rows, quality="macro_f1", latency="latency_p50_ms")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    [ax] = fig.axes
    drawn_ticks = [label for axis in (ax.xaxis, ax.yaxis) for tick, label in zip(
        axis.get_major_ticks(), axis.get_majorticklabels(), strict=False)
        if min(axis.get_view_interval()) <= tick.get_loc() <= max(axis.get_view_interval())]
    texts = [t for t in [*ax.get_legend().get_texts(), ax.title, ax.xaxis.label, ax.yaxis.label, *drawn_ticks]
             if t.get_text().strip() and t.get_visible()]
    names = {str(r["name"]) for r in rows}
    assert names <= {t.get_text() for t in texts}  # every model is named
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    width, height = fig.canvas.get_width_height()
    for name, box in boxes:
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, f"{name} is cut off"
    overlapping = [(a, b) for (a, x), (b, y) in itertools.combinations(boxes, 2) if x.overlaps(y)]
    assert overlapping == []
