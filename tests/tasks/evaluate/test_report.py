"""The HTML report: every model in the table, every plot on disk, no absolute URL but the MLflow links."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from tasks.evaluate.report import write_report

MODELS = [{"name": "base", "bits_per_byte": 1.9, "perplexity": 40.2, "latency_ms": 3.1, "size_mb": 4.2},
          {"name": "docstring <sft>", "bits_per_byte": 2.1, "rougeL": 0.31, "latency_ms": 3.3, "size_mb": 4.2},
          {"name": "unigram (token)", "baseline": True, "bits_per_byte": 4.4, "perplexity": 410.0},
          {"name": "lead-16", "baseline": True, "rougeL": 0.12, "latency_ms": 0.001}]
MLFLOW = {"evaluate run": "http://127.0.0.1:5000/#/experiments/1/runs/abc", "pretrain run": "https://mlflow.example/r/2"}


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self.cells: list[str] = []
        self._in_td = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a["src"] or "")
        if tag in ("a", "link"):
            self.hrefs.append(a.get("href") or "")
        self._in_td = tag == "td"

    def handle_data(self, data: str) -> None:
        if self._in_td:
            self.cells.append(data)


def test_report_is_self_contained_and_complete(tmp_path: Path) -> None:
    curve = tmp_path / "reports" / "finetune" / "learning_curves.png"
    curve.parent.mkdir(parents=True)
    curve.write_bytes(b"\x89PNG\r\n\x1a\n")
    contamination = {"test": {"documents": 15, "too_short": 0, "contaminated": 1, "share": 1 / 15, "ids": ["d7"],
                              "overlap_ngrams": 3}}
    page = write_report(out_dir=tmp_path / "reports" / "evaluate", models=MODELS,
                        bar_metrics=("bits_per_byte", "rougeL"),
                        confusion={"labels": ["a", "b"], "matrix": [[3, 1], [0, 4]], "title": "doc_section"},
                        learning_curves=[curve],
                        funnel=[{"name": "collect", "docs": 500}, {"name": "clean", "docs": 450}],
                        shift=[{"name": "test vs train", "js_divergence": 0.02}], contamination=contamination,
                        mlflow_runs=MLFLOW)
    assert page == tmp_path / "reports" / "evaluate" / "index.html"
    text = page.read_text(encoding="utf-8")
    refs = _Refs()
    refs.feed(text)
    for m in MODELS:
        assert m["name"] in refs.cells  # escaped in the HTML, intact once parsed
    assert "docstring &lt;sft&gt;" in text and "<sft>" not in text
    assert {"collect", "clean", "test vs train", "d7"} <= set(refs.cells)
    assert len(refs.srcs) == 5  # quality vs latency, two bar charts, confusion, the learning curve
    for src in refs.srcs:
        assert not re.match(r"[a-z]+:", src) and (page.parent / src).is_file(), src
        if src.endswith(".png"):
            assert (page.parent / src).read_bytes().startswith(b"\x89PNG")
    assert "../finetune/learning_curves.png" in refs.srcs
    assert sorted(refs.hrefs) == sorted(MLFLOW.values())
    assert sorted(re.findall(r"https?://[^\"'<> ]+", text)) == sorted(MLFLOW.values())
    assert "<script" not in text.lower() and "@import" not in text


def test_report_without_optional_parts_still_renders(tmp_path: Path) -> None:
    page = write_report(out_dir=tmp_path / "r", models=[{"name": "only", "bits_per_byte": 2.0}],
                        bar_metrics=("bits_per_byte", "rougeL"))
    text = page.read_text(encoding="utf-8")
    assert "only" in text and "(none)" in text and not re.search(r"https?://", text)
    assert (tmp_path / "r" / "quality_vs_latency.png").is_file()
    assert (tmp_path / "r" / "compare_bits_per_byte.png").is_file()
    assert not (tmp_path / "r" / "compare_rougeL.png").exists()  # no model has it
