"""Great Expectations gates on stage outputs.

A stage validates its output *before* publishing it: :func:`validate_records` loads the record shards
(every column but the text, which is replaced by its stripped length, so memory stays small), runs a
suite of expectations in an ephemeral GX context, renders Data Docs HTML under ``reports/``, and returns
a :class:`ValidationReport`; ``report.raise_for_failure()`` turns a failed gate into a
:class:`DataValidationError` with a short readable summary. Later data stages reuse :func:`run_suite` with
suites of their own.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class _DeferredModule(types.ModuleType):
    """Stands in ``sys.modules`` for a module that is imported only on its first attribute access.

    Great Expectations imports ``scipy.stats`` and ``altair`` at its own import (a third of its import time) for
    expectations and renderers no lmforge suite uses (KL divergence, KS tests, their charts). The standard library's
    ``importlib.util.LazyLoader`` does not help on Python 3.11: ``import altair`` itself reads the module's
    ``__spec__`` and so loads it. This stand-in has a real ``__spec__``; any other attribute (a function, a class,
    ``__path__`` for a submodule import) imports the real module, which then takes its place in ``sys.modules``;
    the stand-in forwards to it from then on, so a module that bound the name early still works.
    """

    def __init__(self, name: str, spec: importlib.machinery.ModuleSpec) -> None:
        super().__init__(name)
        self.__spec__ = spec
        self.__dict__["_real"] = None

    def __getattr__(self, attr: str) -> Any:
        real = self.__dict__["_real"]
        if real is None:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = self.__dict__["_real"] = importlib.import_module(self.__name__)
        return getattr(real, attr)


def _defer_import(name: str) -> None:
    if name not in sys.modules and (spec := importlib.util.find_spec(name)) is not None:
        sys.modules[name] = _DeferredModule(name, spec)


for _name in ("scipy.stats", "altair"):
    _defer_import(_name)

# Great Expectations (about 2.8 CPU-s, 4.2 with scipy.stats and altair) at import: every importer runs a suite (the
# data stages and the fine-tuning gate), and `lmforge run` imports the stages' modules while its Prefect API starts
import great_expectations as gx  # noqa: E402
import great_expectations.expectations as gxe  # noqa: E402
from great_expectations.data_context.types.base import (  # noqa: E402
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

TEXT_CHARS = "text_chars"
"""Column standing in for ``text`` in the validation frame: length of the whitespace-stripped text."""


class DataValidationError(Exception):
    """A stage's output failed its Great Expectations suite; the output was not published. Exit code 1."""

    exit_code = 1


@dataclass
class ValidationReport:
    """What a suite found."""

    suite: str
    success: bool
    rows: int
    evaluated: int
    failures: list[str] = field(default_factory=list)
    docs_index: Path | None = None

    def summary(self) -> str:
        """A few lines for the console."""
        head = (f"data validation '{self.suite}' failed: {len(self.failures)} of {self.evaluated} "
                f"expectations ({self.rows} rows)")
        lines = [head, *[f"  - {f}" for f in self.failures]]
        if self.docs_index is not None:
            lines.append(f"  Data Docs: {self.docs_index}")
        return "\n".join(lines)

    def raise_for_failure(self) -> None:
        """Raise :class:`DataValidationError` with the summary if the suite failed."""
        if not self.success:
            raise DataValidationError(self.summary())

    def stats(self) -> dict[str, int]:
        """Counters for the stage metrics."""
        return {"gx_expectations": self.evaluated, "gx_failed": len(self.failures)}


def records_frame(shard_dir: Path | Sequence[Path], text_column: str = "text", hash_text: bool = False) -> Any:
    """A pandas frame of every shard's columns, with ``text`` replaced by ``text_chars``.

    With ``hash_text`` it also has ``text_hash``: the dedup stage's exact hash of the normalised text (as a
    string), so a suite can check that no exact duplicates are left.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    dirs = [shard_dir] if isinstance(shard_dir, Path) else list(shard_dir)
    tables = []
    for shard in [p for d in dirs for p in sorted(d.glob("part-*.parquet"))]:
        pf = pq.ParquetFile(shard)
        for batch in pf.iter_batches(batch_size=8192):
            cols = {}
            for name in batch.schema.names:
                col = batch.column(name)
                if name == text_column:
                    cols[TEXT_CHARS] = pc.utf8_length(pc.utf8_trim_whitespace(col))
                    if hash_text:
                        from tasks.fingerprints import exact_hash, normalize_text

                        cols["text_hash"] = pa.array([str(exact_hash(normalize_text(t or "")))
                                                      for t in col.to_pylist()])
                else:
                    cols[name] = col
            tables.append(pa.table(cols))
    if not tables:
        return pd.DataFrame()
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def record_expectations(columns: Sequence[str], *, min_rows: int, max_rows: int | None, min_chars: int = 1,
                        max_chars: int | None = None, languages: Sequence[str] | None = None,
                        min_language_share: float = 1.0, unique_text: bool = False) -> list[Any]:
    """The records suite: exact schema, text length bounds, unique non-null ids, row count within range.

    Options for later stages: the share of rows whose ``lang`` is in ``languages`` (clean), and no two rows
    with the same normalised text (dedup, through the frame's ``text_hash`` column).
    """
    expected = [TEXT_CHARS if c == "text" else c for c in columns] + (["text_hash"] if unique_text else [])
    suite = [
        gxe.ExpectTableColumnsToMatchSet(column_set=expected, exact_match=True),
        gxe.ExpectTableRowCountToBeBetween(min_value=min_rows, max_value=max_rows),
        gxe.ExpectColumnValuesToNotBeNull(column="id"),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToNotBeNull(column=TEXT_CHARS),
        gxe.ExpectColumnValuesToBeBetween(column=TEXT_CHARS, min_value=min_chars, max_value=max_chars),
        gxe.ExpectColumnValuesToNotBeNull(column="source"),
    ]
    if languages:
        suite.append(gxe.ExpectColumnValuesToBeInSet(column="lang", value_set=list(languages),
                                                     mostly=min_language_share))
    if unique_text:
        suite.append(gxe.ExpectColumnValuesToBeUnique(column="text_hash"))
    return suite


def _describe(result: Any) -> str:
    cfg = result.expectation_config
    kw = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "result_format")}
    where = f"[{kw.pop('column')}]" if "column" in kw else ""
    res = result.result or {}
    seen = []
    if "observed_value" in res:
        seen.append(f"observed {res['observed_value']!r}")
    if res.get("unexpected_count"):
        sample = res.get("partial_unexpected_list") or []
        seen.append(f"{res['unexpected_count']} unexpected, e.g. {sample[:3]!r}")
    if result.exception_info and result.exception_info.get("raised_exception"):
        seen.append(f"error: {result.exception_info.get('exception_message')}")
    args = ", ".join(f"{k}={v!r}" for k, v in kw.items())
    return f"{cfg.type}{where}({args}): {'; '.join(seen) or 'failed'}"


def run_suite(frame: Any, suite: str, expectations: list[Any], report_dir: Path) -> ValidationReport:
    """Validate ``frame`` against ``expectations`` and write Data Docs HTML to ``report_dir``.

    Args:
        frame: a pandas DataFrame.
        suite: suite name (the stage name, or ``stage.part``).
        expectations: GX expectation objects.
        report_dir: replaced by this run's Data Docs site; ``index.html`` is its entry page. Every page is
            self-contained static HTML that renders with no network (:mod:`tasks.datadocs`).
    """
    from tasks import datadocs

    config = DataContextConfig(analytics_enabled=False, progress_bars=ProgressBarsConfig(globally=False),
                               store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False))
    ctx = gx.get_context(mode="ephemeral", project_config=config)
    shutil.rmtree(report_dir, ignore_errors=True)
    report_dir.mkdir(parents=True, exist_ok=True)
    ctx.add_data_docs_site(site_name="lmforge", site_config=datadocs.site_config(report_dir))
    batch_def = ctx.data_sources.add_pandas("lmforge").add_dataframe_asset(suite).add_batch_definition_whole_dataframe(
        "all")
    gx_suite = ctx.suites.add(gx.ExpectationSuite(name=suite))
    for exp in expectations:
        gx_suite.add_expectation(exp)
    vdef = ctx.validation_definitions.add(gx.ValidationDefinition(name=suite, data=batch_def, suite=gx_suite))
    checkpoint = ctx.checkpoints.add(gx.Checkpoint(
        name=suite, validation_definitions=[vdef], result_format="SUMMARY",
        actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["lmforge"])],
    ))
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    results = [r for run in result.run_results.values() for r in run.results]
    failures = [_describe(r) for r in results if not r.success]
    index = report_dir / "index.html"
    return ValidationReport(suite=suite, success=bool(result.success), rows=len(frame), evaluated=len(results),
                            failures=failures, docs_index=index if index.exists() else None)


def validate_records(shard_dir: Path | Sequence[Path], *, suite: str, columns: Sequence[str], min_rows: int,
                     max_rows: int | None, report_dir: Path, **options: Any) -> ValidationReport:
    """Run the records suite (:func:`record_expectations` with ``options``) on the shards in ``shard_dir``."""
    frame = records_frame(shard_dir, hash_text=bool(options.get("unique_text")))
    expectations = record_expectations(columns, min_rows=min_rows, max_rows=max_rows, **options)
    return run_suite(frame, suite, expectations, report_dir)


def validate_splits(counts: dict[str, int], fractions: dict[str, float], *, tolerance: float, suite: str,
                    report_dir: Path) -> ValidationReport:
    """Each split's share of the documents is within ``tolerance`` of its fraction.

    On small corpora a hash split cannot be that exact: the allowed gap is at least three binomial standard
    deviations, ``3 * sqrt(f * (1 - f) / n)``.
    """
    import math

    import pandas as pd

    total = max(sum(counts.values()), 1)
    rows = []
    for split, fraction in fractions.items():
        allowed = max(tolerance, 3 * math.sqrt(fraction * (1 - fraction) / total))
        rows.append({"split": split, "docs": counts.get(split, 0), "share": counts.get(split, 0) / total,
                     "fraction": fraction, "excess_gap": abs(counts.get(split, 0) / total - fraction) - allowed})
    expectations = [gxe.ExpectColumnValuesToBeBetween(column="excess_gap", max_value=0.0),
                    gxe.ExpectColumnValuesToBeBetween(column="docs", min_value=1)]
    return run_suite(pd.DataFrame(rows), suite, expectations, report_dir)
