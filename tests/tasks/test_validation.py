"""The GX records gate: passes good shards, names each failed expectation, renders Data Docs."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.records import COLUMNS
from tasks.validation import DataValidationError, validate_records


def _shard(path: Path, rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> None:
    path.mkdir(parents=True, exist_ok=True)
    table = pa.table({c: [r.get(c) for r in rows] for c in columns}, schema=pa.schema([(c, pa.string())
                                                                                      for c in columns]))
    pq.write_table(table, path / f"part-{len(list(path.glob('part-*'))):05d}.parquet")


def _row(i: int, text: str = "some text") -> dict:
    return {"id": f"{i:032x}", "text": text, "source": "s", "path": f"f#L{i}", "metadata": "{}"}


def test_good_records_pass(tmp_path: Path) -> None:
    _shard(tmp_path / "raw", [_row(i) for i in range(5)])
    _shard(tmp_path / "raw", [_row(i) for i in range(5, 8)])
    rep = validate_records(tmp_path / "raw", suite="collect", columns=COLUMNS, min_rows=8, max_rows=8,
                           report_dir=tmp_path / "docs")
    assert rep.success and rep.rows == 8 and rep.evaluated == 7 and rep.failures == []
    assert (tmp_path / "docs" / "index.html").is_file()
    rep.raise_for_failure()


def test_each_kind_of_bad_output_is_named(tmp_path: Path) -> None:
    rows = [_row(1), _row(1), _row(2, "   "), _row(3)]  # duplicate id, blank text
    _shard(tmp_path / "raw", rows)
    rep = validate_records(tmp_path / "raw", suite="collect", columns=COLUMNS, min_rows=10, max_rows=None,
                           report_dir=tmp_path / "docs")
    assert not rep.success
    joined = "\n".join(rep.failures)
    assert "expect_column_values_to_be_unique[id]" in joined
    assert "expect_column_values_to_be_between[text_chars]" in joined
    assert "expect_table_row_count_to_be_between" in joined and "observed 4" in joined
    assert len(rep.failures) == 3
    with pytest.raises(DataValidationError) as info:
        rep.raise_for_failure()
    assert "data validation 'collect' failed: 3 of 7 expectations (4 rows)" in str(info.value)
    assert str(tmp_path / "docs" / "index.html") in str(info.value)


def test_schema_drift_fails(tmp_path: Path) -> None:
    _shard(tmp_path / "raw", [_row(1)], columns=("id", "text", "source"))
    rep = validate_records(tmp_path / "raw", suite="collect", columns=COLUMNS, min_rows=1, max_rows=None,
                           report_dir=tmp_path / "docs")
    assert not rep.success and any(f.startswith("expect_table_columns_to_match_set") for f in rep.failures)


def test_no_shards_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    rep = validate_records(tmp_path / "raw", suite="collect", columns=COLUMNS, min_rows=1, max_rows=None,
                           report_dir=tmp_path / "docs")
    assert not rep.success and rep.rows == 0


def test_offline_pages_keep_no_script_and_nothing_from_the_network() -> None:
    # every way a page can pull from a CDN, as a later GX template might: all gone, local files and links kept
    from tasks.datadocs import external_resources, make_offline

    page = ('<html><head><link rel="stylesheet" href="https://cdn.example/b.css">'
            '<script src="https://cdn.example/j.js"></script><script>$("#t").bootstrapTable()</script>'
            "<style>.l{background:url('https://cdn.example/l.png')} @import url(\"//cdn.example/f.css\");</style>"
            '</head><body><img src="https://cdn.example/logo.png" alt="Great Expectations">'
            "<iframe src='//cdn.example/f'></iframe><video poster=https://cdn.example/p.jpg></video>"
            '<tr data-href="https://example.org/row">row</tr><img src="static/images/local.png" alt="local">'
            '<a href="https://greatexpectations.io">GX</a></body></html>')
    assert len(external_resources(page)) >= 7
    offline = make_offline(page)
    assert external_resources(offline) == []
    assert "<script" not in offline and "cdn.example" not in offline
    assert "<span>Great Expectations</span>" in offline  # an external image becomes its alt text
    assert 'src="static/images/local.png"' in offline and 'href="https://greatexpectations.io"' in offline
    assert 'data-href="https://example.org/row">row</tr>' in offline  # not a load: the element stays whole
    assert offline.index("<style>body{") < offline.index("</head>")


def test_scipy_stats_and_altair_load_only_when_used() -> None:
    """GX's import no longer loads scipy.stats and altair (which no lmforge suite uses); a suite still runs, and the
    modules work in full for whoever uses them later, through GX's early-bound names and through a plain import."""
    import subprocess
    import sys

    from tests.conftest import REPO, subprocess_env

    script = r"""
import sys, tempfile
from pathlib import Path
import pandas as pd
from tasks.validation import run_suite
import great_expectations.expectations as gxe
assert "scipy.stats._stats_py" not in sys.modules and "altair.vegalite" not in sys.modules
rep = run_suite(pd.DataFrame({"n": [1, 2, 3]}), "t", [gxe.ExpectColumnValuesToBeBetween(column="n", min_value=1)],
                Path(tempfile.mkdtemp()) / "docs")
assert rep.success and rep.evaluated == 1 and rep.docs_index.is_file()
assert "scipy.stats._stats_py" not in sys.modules and "altair.vegalite" not in sys.modules
from great_expectations.expectations.core import expect_column_kl_divergence_to_be_less_than as kl
assert abs(kl.stats.entropy([0.5, 0.5], base=2) - 1.0) < 1e-12  # GX's own early-bound name forwards
import scipy.stats
from scipy.stats import norm
assert type(sys.modules["scipy.stats"]) is type(sys) and scipy.stats.norm is norm and norm.cdf(0.0) == 0.5
import scipy.stats.distributions  # a submodule import needs the package's real __path__
import altair as alt
assert alt.Chart(pd.DataFrame({"x": [1]})).mark_point().to_dict()["mark"]["type"] == "point"
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=subprocess_env(), capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stdout + res.stderr
