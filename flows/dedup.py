"""The dedup stage: data/clean -> data/dedup/{train,val,test} + removed/ + duplicates.parquet.

Exact duplicates (hash of the normalised text) and near duplicates (MinHash LSH, rensa signatures computed
shard by shard on Dask workers) are clustered by union-find; each cluster keeps its smallest id, and every
removed document is listed with the id it duplicates. The kept documents are split into train/val/test by
id hash. Signatures are compact arrays on disk in the staging directory (named after the stage hash, so a
killed run resumes with the shards already signed), gone once the output is published.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from prefect import flow

from pipelines import artifacts, tracking
from pipelines.config import Params
from pipelines.incremental import record_inputs
from pipelines.sharding import map_shards
from tasks.dedup.clusters import apply_dedup, choose_bands_rows, find_clusters
from tasks.dedup.minhash import META_SUFFIX, signature_code, signature_shard
from tasks.dedup.signature_cache import SignatureCache
from tasks.dedup.splits import split_shards
from tasks.records import COLUMNS, EXTRA_COLUMNS, iter_shards
from tasks.validation import validate_records, validate_splits

STAGE = "dedup"
SPLITS = ("train", "val", "test")


@flow(name=STAGE, validate_parameters=False)
def dedup(params: Params, root: Path) -> dict[str, int]:
    """Deduplicate ``data/clean`` and split it; returns the stage counters.

    Args:
        params: the whole validated params.yaml (this stage reads its ``dedup`` section).
        root: the repository.
    """
    cfg = params.dedup
    mh = cfg.minhash
    src = root / artifacts.CLEAN_DIR
    shards = iter_shards(src)
    bands, rows = choose_bands_rows(mh.threshold, mh.num_perm, bands=mh.bands, rows=mh.rows, verify=mh.verify,
                                    verify_margin=mh.verify_margin)
    with tracking.stage_run(STAGE, cfg, root=root, tracking=params.tracking) as run:
        with artifacts.staged_output(root / artifacts.DEDUP_DIR, resume_key=run.stage_hash) as staging:
            work = staging / "_work"
            signatures, kept = work / "signatures", work / "kept"
            signatures.mkdir(parents=True, exist_ok=True)
            todo = [s for s in shards if not (signatures / f"{s.stem}{META_SUFFIX}").exists()]
            cache_dir = artifacts.cache_dir(root, STAGE)
            cache = SignatureCache(cache_dir, num_perm=mh.num_perm, shingle_size=mh.shingle_size, seed=mh.seed,
                                   code=signature_code())
            keys = {s: cache.key(s) for s in shards}
            jobs = [dict(shard_path=s, out_dir=signatures, num_perm=mh.num_perm, shingle_size=mh.shingle_size,
                         seed=mh.seed, cache_dir=cache_dir) for s in todo]
            # a shard signed before is only copied out of the cache: here, without starting the workers for it
            reusable = [cache.store.path(keys[s]).is_file() for s in todo]
            signed = [signature_shard(**j) for j, r in zip(jobs, reusable, strict=True) if r]
            signed += map_shards(signature_shard, [j for j, r in zip(jobs, reusable, strict=True) if not r],
                                 name="dedup-signature", workers=cfg.parallel.workers,
                                 scheduler_address=cfg.parallel.scheduler_address)
            reuse = {"shards_reused": sum(reusable), "shards_changed": len(todo) - sum(reusable),
                     "docs_reused": sum(r.get("incremental.docs_reused", 0) for r in signed),
                     "docs_signed": sum(r.get("incremental.docs_signed", 0) for r in signed)}
            duplicates, found = find_clusters(signatures, bands=bands, rows=rows,
                                              threshold=mh.threshold - mh.verify_margin if mh.verify else None)
            shutil.rmtree(kept, ignore_errors=True)
            kept.mkdir()
            stats = apply_dedup(src, duplicates, kept)
            stats.update({f"lsh.{k}": v for k, v in found.items() if isinstance(v, int)})
            stats.update({"lsh.bands": bands, "lsh.rows": rows, "shards": len(shards),
                          "shards_resumed": len(shards) - len(todo)})
            for split in SPLITS:
                shutil.rmtree(staging / split, ignore_errors=True)
            split_stats = split_shards(kept, staging, val=cfg.splits.val, test=cfg.splits.test, seed=cfg.splits.seed)
            stats.update({f"split.{k}": v for k, v in split_stats.items()})
            shutil.rmtree(staging / "removed", ignore_errors=True)
            os.replace(kept / "removed", staging / "removed")
            os.replace(duplicates, staging / "duplicates.parquet")
            docs = artifacts.report_dir(root, STAGE, "gx")
            report = validate_records(
                [staging / s for s in SPLITS], suite=STAGE, columns=[*COLUMNS, *EXTRA_COLUMNS],
                min_rows=cfg.validation.min_rows, max_rows=cfg.validation.max_rows, unique_text=True,
                report_dir=docs)
            split_report = validate_splits(
                {s: split_stats.get(s, 0) for s in SPLITS},
                {"train": 1 - cfg.splits.val - cfg.splits.test, "val": cfg.splits.val, "test": cfg.splits.test},
                tolerance=cfg.validation.split_tolerance, suite=f"{STAGE}.splits",
                report_dir=artifacts.report_dir(root, f"{STAGE}.splits", "gx"))
            run.log_stats(stats)
            run.log_artifact(docs, "data_docs")
            report.raise_for_failure()
            split_report.raise_for_failure()
            shutil.rmtree(work)
        stats.update(report.stats())
        run.log_stats(report.stats())
        run.log_artifact(artifacts.write_metrics(root, STAGE, dict(sorted(stats.items()))))
        # after the output is in place: a killed run keeps what the previous output was made from
        reuse["entries_pruned"] = cache.store.prune(keys.values())
        run.log_stats({f"incremental.{k}": v for k, v in reuse.items()})
        record_inputs(root, STAGE, {s.name: k for s, k in keys.items()}, reuse)
    return stats


if __name__ == "__main__":
    from pipelines.runner import stage_main

    raise SystemExit(stage_main(STAGE, dedup))
