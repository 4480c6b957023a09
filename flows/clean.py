"""The clean stage: data/raw -> data/clean (+ data/clean/rejected with the reason), shard-parallel, resumable.

Each raw shard is cleaned by one Prefect task on a Dask worker (``tasks.clean.shard.clean_shard``): Unicode
repair, language identification, the C4 and Gopher rules, optional PII masking. Work happens in a staging
directory named after the stage hash, so a run killed part way and started again redoes only the shards
without a finished marker. The output is gated by Great Expectations, then renamed into place.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

from prefect import flow

from pipelines import artifacts, tracking
from pipelines.config import Params
from pipelines.config.clean import CleanParams
from pipelines.incremental import record_inputs
from pipelines.sharding import map_shards
from tasks.clean.decisions import DecisionCache, shard_key
from tasks.clean.shard import DONE_DIR, clean_shard
from tasks.plots import funnel_plot
from tasks.records import COLUMNS, EXTRA_COLUMNS, iter_shards
from tasks.validation import validate_records

STAGE = "clean"


def shard_jobs(cfg: CleanParams, shards: list[Path], out_dir: Path, cache_dir: Path | None = None) -> list[dict]:
    """One ``clean_shard`` call per shard, with the params spelled out as plain keyword arguments."""
    families = {"c4": cfg.c4, "gopher_quality": cfg.gopher_quality, "gopher_repetition": cfg.gopher_repetition}
    order = [name for name in cfg.order if families[name].enabled]
    kwargs = {name: fam.model_dump(exclude={"enabled"}) for name, fam in families.items() if name in order}
    pii = cfg.pii.model_dump(exclude={"enabled"}) if cfg.pii.enabled else None
    return [dict(shard=str(s), out_dir=str(out_dir), fix_unicode=cfg.fix_unicode,
                 languages=cfg.language.languages if cfg.language.enabled else None,
                 min_language_score=cfg.language.min_score, language_max_chars=cfg.language.max_chars,
                 order=order, c4=kwargs.get("c4"), gopher_quality=kwargs.get("gopher_quality"),
                 gopher_repetition=kwargs.get("gopher_repetition"), pii=pii,
                 cache_dir=str(cache_dir) if cache_dir else None) for s in shards]


def funnel_steps(stats: dict[str, int], order: list[str]) -> list[tuple[str, int, int]]:
    """The funnel in step order, from the summed counters."""
    steps = ["input", "unicode", "language", *order]
    return [(s, stats.get(f"funnel.{s}.docs", 0), stats.get(f"funnel.{s}.chars", 0)) for s in steps
            if f"funnel.{s}.docs" in stats] + [("kept", stats.get("kept", 0), stats.get("chars_kept", 0))]


@flow(name=STAGE, validate_parameters=False)
def clean(params: Params, root: Path) -> dict[str, int]:
    """Clean ``data/raw`` into ``data/clean``; returns the stage counters.

    Args:
        params: the whole validated params.yaml (this stage reads its ``clean`` section).
        root: the repository.
    """
    cfg = params.clean
    shards = iter_shards(root / artifacts.RAW_DIR)
    with tracking.stage_run(STAGE, cfg, root=root, tracking=params.tracking) as run:
        with artifacts.staged_output(root / artifacts.CLEAN_DIR, resume_key=run.stage_hash) as staging:
            jobs = shard_jobs(cfg, shards, staging, artifacts.cache_dir(root, STAGE))
            cache = DecisionCache(artifacts.cache_dir(root, STAGE), jobs[0]) if jobs else None
            keys = [shard_key(s) for s in shards] if cache else []
            # a shard decided before is only written out: here, without starting the workers for it
            reusable = [cache is not None and cache.store.path(k).is_file() for k in keys]
            results = [clean_shard(**j) for j, r in zip(jobs, reusable, strict=True) if r]
            results += map_shards(clean_shard, [j for j, r in zip(jobs, reusable, strict=True) if not r],
                                  name="clean-shard", workers=cfg.parallel.workers,
                                  scheduler_address=cfg.parallel.scheduler_address)
            stats: Counter[str] = Counter({"shards": len(shards)})
            for r in results:
                stats.update(r)
            reuse = {"shards_reused": sum(reusable), "shards_changed": len(shards) - sum(reusable),
                     **{k.removeprefix("incremental."): stats.pop(k) for k in list(stats) if k.startswith("incr")}}
            steps = funnel_steps(dict(stats), jobs[0]["order"] if jobs else [])
            plot = funnel_plot(steps, artifacts.report_dir(root, STAGE, "plots") / "funnel.png",
                               f"clean funnel: {stats['kept']:,} of {stats['docs_in']:,} documents kept")
            run.log_artifact(plot, "plots")
            report = validate_records(
                staging, suite=STAGE, columns=[*COLUMNS, *EXTRA_COLUMNS], min_rows=cfg.validation.min_rows,
                max_rows=cfg.validation.max_rows, min_chars=cfg.validation.min_chars,
                max_chars=cfg.validation.max_chars,
                languages=cfg.language.languages if cfg.language.enabled else None,
                min_language_share=cfg.validation.min_language_share,
                report_dir=artifacts.report_dir(root, STAGE, "gx"))
            run.log_stats(stats)
            run.log_artifact(artifacts.report_dir(root, STAGE, "gx"), "data_docs")
            report.raise_for_failure()
            shutil.rmtree(staging / DONE_DIR, ignore_errors=True)
        stats.update(report.stats())
        run.log_stats(report.stats())
        run.log_artifact(artifacts.write_metrics(root, STAGE, dict(sorted(stats.items()))))
        if cache is not None:  # after the output is in place: a killed run keeps what the previous output used
            reuse["entries_pruned"] = cache.store.prune(keys)
            run.log_stats({f"incremental.{k}": v for k, v in reuse.items()})
            record_inputs(root, STAGE, {s.name: k for s, k in zip(shards, keys, strict=True)}, reuse)
    return dict(stats)


if __name__ == "__main__":
    from pipelines.runner import stage_main

    raise SystemExit(stage_main(STAGE, clean))
