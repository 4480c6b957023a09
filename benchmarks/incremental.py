"""Incremental collect + clean + dedup against a full re-run, side by side, after 10% new data.

    .venv/bin/python -m benchmarks.incremental [--docs 50000] [--new 0.1] [--json benchmarks/results/incremental.json]

Generates a web-like corpus (``benchmarks.curation.make_corpus``: prose, exact and edited copies, junk) of ``--docs``
documents in 20 jsonl files and runs the three data stages once with their caches (the run before). Then 10% more
documents arrive: most in two new files, a fifth appended to an existing file (their copies of older documents
included). The stages run again, each side in its own process (CPU seconds and peak RSS from ``resource.getrusage``):

- incremental: with the caches under ``cache/`` the run before left (``tasks.collect.cache``, ``tasks.clean.decisions``,
  ``tasks.dedup.signature_cache``);
- full: the same code without a cache, as a fresh clone computes it.

Both do the stage work the flows do (the readers and the shard writer, the clean shard jobs on one worker, signing,
clustering, the kept shards and the splits) with the repository's params.yaml settings; Prefect, MLflow and the Great
Expectations gates are left out (a fixed cost per stage, the same on both sides: docs/measurements.md). The outputs
of the two sides are compared byte for byte.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = 20
OUTPUTS = ("raw", "clean", "dedup")


def write_corpus(root: Path, texts: list[str], new: float) -> int:
    """Corpus A into ``root/corpus``; returns how many documents B has (written by :func:`append`)."""
    n_a = round(len(texts) / (1 + new))
    (root / "corpus").mkdir(parents=True)
    for f in range(FILES):
        with (root / "corpus" / f"part-{f:02d}.jsonl").open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps({"text": t}) + "\n" for t in texts[f:n_a:FILES])
    return len(texts) - n_a


def append(root: Path, texts: list[str], n_b: int) -> None:
    """Batch B: a fifth appended to an existing file, the rest in two new files."""
    batch = texts[len(texts) - n_b:]
    fifth = len(batch) // 5
    parts = {"part-05.jsonl": batch[:fifth], "part-20.jsonl": batch[fifth::2], "part-21.jsonl": batch[fifth + 1::2]}
    for name, docs in parts.items():
        with (root / "corpus" / name).open("a", encoding="utf-8") as fh:
            fh.writelines(json.dumps({"text": t}) + "\n" for t in docs)


def stage_work(root: Path, out: Path, cache: Path | None, setup: dict) -> dict[str, int]:
    """collect, clean and dedup of ``root/corpus`` into ``out/{raw,clean,dedup}`` (the flows' task calls)."""
    from tasks.clean.shard import DONE_DIR, clean_shard
    from tasks.collect.cache import ItemCache
    from tasks.collect.files import iter_files
    from tasks.collect.shards import SourcePlan, write_records
    from tasks.dedup.clusters import apply_dedup, find_clusters
    from tasks.dedup.minhash import signature_shard
    from tasks.dedup.splits import split_shards
    from tasks.records import iter_shards

    raw, clean, dedup = (out / name for name in OUTPUTS)
    for d in (raw, clean, dedup / "_work" / "signatures", dedup / "_work" / "kept"):
        d.mkdir(parents=True)
    items = ItemCache(cache / "collect") if cache else None
    plan = SourcePlan("bench", lambda: iter_files(paths=["corpus/*.jsonl"], base_dir=root, cache=items))
    stats = {"raw_docs": write_records([plan], raw, seed=0, **setup["collect"])["kept"]}
    for shard in iter_shards(raw):
        clean_shard(shard=str(shard), out_dir=str(clean), **setup["clean"],
                    cache_dir=str(cache / "clean") if cache else None)
    shutil.rmtree(clean / DONE_DIR)
    work = dedup / "_work"
    for shard in iter_shards(clean):
        signature_shard(shard, work / "signatures", **setup["minhash"], cache_dir=cache / "dedup" if cache else None)
    duplicates, _ = find_clusters(work / "signatures", **setup["clusters"])
    stats.update(apply_dedup(clean, duplicates, work / "kept"))
    split_shards(work / "kept", dedup, **setup["splits"])
    os.replace(work / "kept" / "removed", dedup / "removed")
    os.replace(duplicates, dedup / "duplicates.parquet")
    shutil.rmtree(work)
    if items is not None:
        items.store.prune()
    return stats


def _setup() -> dict:
    """The stage settings from the repository's params.yaml, as the flows spell them out for the tasks."""
    from pipelines.config import load_params
    from tasks.dedup.clusters import choose_bands_rows

    params = load_params(REPO)
    c, d = params.collect, params.dedup
    families = {"c4": params.clean.c4, "gopher_quality": params.clean.gopher_quality,
                "gopher_repetition": params.clean.gopher_repetition}
    cfg = params.clean
    order = [name for name in cfg.order if families[name].enabled]
    mh = d.minhash
    bands, rows = choose_bands_rows(mh.threshold, mh.num_perm, bands=mh.bands, rows=mh.rows, verify=mh.verify,
                                    verify_margin=mh.verify_margin)
    return {"collect": {"shard_max_records": c.shard_max_records, "shard_max_bytes": c.shard_max_bytes,
                        "max_doc_bytes": c.max_doc_bytes},
            "clean": {"fix_unicode": cfg.fix_unicode,
                      "languages": cfg.language.languages if cfg.language.enabled else None,
                      "min_language_score": cfg.language.min_score, "language_max_chars": cfg.language.max_chars,
                      "order": order, **{n: f.model_dump(exclude={"enabled"}) if n in order else None
                                         for n, f in families.items()},
                      "pii": cfg.pii.model_dump(exclude={"enabled"}) if cfg.pii.enabled else None},
            "minhash": {"num_perm": mh.num_perm, "shingle_size": mh.shingle_size, "seed": mh.seed},
            "clusters": {"bands": bands, "rows": rows,
                         "threshold": mh.threshold - mh.verify_margin if mh.verify else None},
            "splits": {"val": d.splits.val, "test": d.splits.test, "seed": d.splits.seed}}


def _child(root: Path, out: Path, cache: str) -> None:
    setup = _setup()  # here, not through JSON: the n-gram settings are keyed by integers
    t0 = time.perf_counter()
    stats = stage_work(root, out, Path(cache) if cache != "-" else None, setup)
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mb": ru.ru_maxrss / 1024,
                      "kept": stats["kept"], "raw_docs": stats["raw_docs"]}))


def _measure(root: Path, out: Path, cache: Path | None) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.incremental", "--child", str(root), str(out), str(cache or "-")]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if res.returncode != 0:
        raise SystemExit(f"benchmark side failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=50_000, help="documents before the new data (default 50000)")
    ap.add_argument("--new", type=float, default=0.1, help="new data, as a share of --docs (default 0.1)")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/incremental.json"), help="results file")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(Path(args.child[0]), Path(args.child[1]), args.child[2])
        return 0
    from benchmarks.curation import make_corpus

    with tempfile.TemporaryDirectory(prefix="lmforge-incremental-") as tmp:
        root = Path(tmp)
        texts = make_corpus(round(args.docs * (1 + args.new)), seed=0)["texts"]
        n_b = write_corpus(root, texts, args.new)
        before = _measure(root, root / "before", root / "cache")  # the run before: fills the caches
        append(root, texts, n_b)
        results = {"incremental": _measure(root, root / "incremental", root / "cache"),
                   "full": _measure(root, root / "full", None)}
        identical = all(_tree(root / "incremental" / o) == _tree(root / "full" / o) for o in OUTPUTS)
    inc, full = results["incremental"], results["full"]
    summary = {"docs_before": len(texts) - n_b, "docs_new": n_b, "run_before": before, "results": results,
               "identical_outputs": identical, "ratio_wall": inc["wall_s"] / full["wall_s"],
               "ratio_cpu": inc["cpu_s"] / full["cpu_s"], "ratio_peak_rss": inc["peak_rss_mb"] / full["peak_rss_mb"],
               "goal_ratio": 0.2}
    print(f"incremental benchmark: {summary['docs_before']} documents, then {n_b} new "
          f"(two new files, lines appended to one); collect + clean + dedup")
    print(f"{'side':<14}{'wall s':>9}{'cpu s':>9}{'peak MB':>9}{'kept':>8}")
    for name, r in results.items():
        print(f"{name:<14}{r['wall_s']:>9.2f}{r['cpu_s']:>9.2f}{r['peak_rss_mb']:>9.0f}{r['kept']:>8}")
    print(f"incremental / full: wall {summary['ratio_wall']:.3f}x, CPU {summary['ratio_cpu']:.3f}x, peak RSS "
          f"{summary['ratio_peak_rss']:.2f}x (goal <= 0.2x); outputs identical: {identical}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
