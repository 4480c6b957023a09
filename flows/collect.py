"""The collect stage: every configured source -> Parquet record shards + quarantine, gated by GX.

Reads only its sources (params), writes only ``data/raw`` (through a staging directory renamed into place
after validation passes) and ``metrics/collect.json``. ``python -m flows.collect`` runs it alone; that is the
dvc.yaml cmd.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from prefect import flow

from pipelines import artifacts, operations, tracking
from pipelines.config import Params, RetryParams
from pipelines.config.collect import CollectParams, DefaultSource, FilesSource, HFSource, WarcSource
from pipelines.incremental import digests_of, record_inputs
from tasks.collect.cache import ItemCache
from tasks.collect.files import iter_files
from tasks.collect.hub import check_hf_source, iter_hf_dataset
from tasks.collect.items import SourceError
from tasks.collect.shards import SourcePlan, write_records
from tasks.collect.stdlib_corpus import iter_stdlib_corpus
from tasks.collect.warc import iter_warc
from tasks.records import COLUMNS
from tasks.validation import validate_records

STAGE = "collect"


def source_plans(params: CollectParams, root: Path, retries: RetryParams, cache: ItemCache | None = None
                 ) -> list[SourcePlan]:
    """Map each configured source to its reader (the tasks never see the params objects); a hub source is opened
    under ``retries`` (operations.retries); file and WARC sources read an unchanged file's items from ``cache``."""
    plans = []
    for src in params.sources:
        if isinstance(src, DefaultSource):
            read = partial(iter_stdlib_corpus, include_topics=src.include_topics,
                           include_docstrings=src.include_docstrings)
        elif isinstance(src, FilesSource):
            read = partial(iter_files, paths=src.paths, base_dir=root, fmt=src.format, text_field=src.text_field,
                           text_unit=src.text_unit, max_doc_bytes=params.max_doc_bytes, cache=cache)
        elif isinstance(src, HFSource):
            read = partial(iter_hf_dataset, path=src.path, name=src.config, split=src.split,
                           text_field=src.text_field, streaming=src.streaming, data_files=src.data_files,
                           revision=src.revision, base_dir=root,
                           retry=operations.retrying(retries, f"opening hub dataset {src.path!r}"))
        elif isinstance(src, WarcSource):
            read = partial(iter_warc, paths=src.paths, base_dir=root, min_text_chars=src.min_text_chars,
                           max_doc_bytes=params.max_doc_bytes, cache=cache)
        else:  # pragma: no cover - the schema admits no other kind
            raise TypeError(f"unknown source kind {src!r}")
        plans.append(SourcePlan(name=src.name, read=read, weight=src.weight, max_docs=src.max_docs))
    return plans


def preflight(params: Params, root: Path) -> None:
    """Check every source before anything is written (no MLflow run, no output): the pipeline calls it before
    its parent run opens, the flow before its stage run.

    Local sources are resolved (globs, files, formats); a hub dataset is only checked as far as it can be without
    the network (its local data files), the rest fails when it is opened.

    Raises:
        SourceNotFoundError: a source names nothing that exists; the message names the source and the paths.
        SourceConfigError: a source's settings cannot work.
        OutputOverlapError: a source reaches into what the pipeline writes.
    """
    cfg = params.collect
    cfg.data_deps(root)  # a source reaching into the pipeline's outputs is refused (OutputOverlapError)
    for src, plan in zip(cfg.sources, source_plans(cfg, root, params.operations.retries), strict=True):
        try:
            if isinstance(src, HFSource):
                check_hf_source(path=src.path, data_files=src.data_files, base_dir=root)
            elif isinstance(src, FilesSource | WarcSource):
                plan.read()  # resolves globs and formats when called; reads nothing until iterated
        except SourceError as err:
            raise type(err)(f"source '{src.name}': {err}") from None


@flow(name=STAGE, validate_parameters=False)
def collect(params: Params, root: Path) -> dict[str, int]:
    """Collect every source into ``data/raw``; returns the stage counters.

    Args:
        params: the whole validated params.yaml (this stage reads its ``collect`` section).
        root: the repository.
    """
    preflight(params, root)
    cfg = params.collect
    out_dir = root / artifacts.RAW_DIR
    docs = artifacts.report_dir(root, STAGE, "gx")
    cache = ItemCache(artifacts.cache_dir(root, STAGE))
    with tracking.stage_run(STAGE, cfg, root=root, tracking=params.tracking) as run:
        with artifacts.staged_output(out_dir) as staging:
            stats = write_records(source_plans(cfg, root, params.operations.retries, cache), staging, seed=cfg.seed,
                                  shard_max_records=cfg.shard_max_records, shard_max_bytes=cfg.shard_max_bytes,
                                  max_doc_bytes=cfg.max_doc_bytes)
            report = validate_records(staging, suite=STAGE, columns=COLUMNS, min_rows=cfg.validation.min_rows,
                                      max_rows=cfg.validation.max_rows, report_dir=docs)
            run.log_stats(stats)
            run.log_artifact(docs, "data_docs")
            report.raise_for_failure()
        stats.update(report.stats())
        run.log_stats(report.stats())
        run.log_artifact(artifacts.write_metrics(root, STAGE, stats))
        # after the output is in place: a killed run keeps the entries the previous output was made from
        reuse = {"files_reused": cache.counts["reused"], "files_read": cache.counts["read"],
                 "entries_pruned": cache.store.prune()}
        run.log_stats({f"incremental.{k}": v for k, v in reuse.items()})
        record_inputs(root, STAGE, digests_of(cache.digests, root), reuse)
    return stats


if __name__ == "__main__":
    from pipelines.runner import stage_main

    raise SystemExit(stage_main(STAGE, collect))
