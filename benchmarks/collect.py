"""collect throughput, side by side: lmforge's reader + shard writer vs Hugging Face `datasets`.

    .venv/bin/python -m benchmarks.collect [--docs 100000] [--json benchmarks/results/collect.json]

Generates a deterministic gzipped jsonl corpus (with 1% bad lines), then turns it into Parquet with
(a) lmforge: `tasks.collect.files.iter_files` -> `tasks.collect.shards.write_records` (streaming, bounded shards,
quarantine), and (b) the baseline: `datasets.load_dataset("json", ...)` + `Dataset.to_parquet` (how one
usually does it with the Hugging Face stack; it cannot skip bad lines, so it reads a copy without them).
Each side runs in its own process; we report wall time, CPU seconds, docs and MB per CPU-second and peak RSS,
and the ratio ours/baseline.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("the of and to in is was for on are with as by at be this from that not have or which one had "
         "data model train token corpus text pipeline learning language python function value return "
         "system process memory shard stream record quality filter hash minhash dedup index").split()


def make_corpus(path: Path, docs: int, seed: int = 0, bad_every: int = 100) -> tuple[int, int]:
    """Write ``docs`` jsonl lines (gzip); every ``bad_every``-th line is broken JSON. Returns (good, bytes)."""
    rng = random.Random(seed)
    good = nbytes = 0
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as fh:
        for i in range(docs):
            if bad_every and i % bad_every == bad_every - 1:
                fh.write('{"text": "broken\n')
                continue
            text = " ".join(rng.choices(WORDS, k=rng.randint(50, 400)))
            fh.write(json.dumps({"id": i, "text": text}) + "\n")
            good += 1
            nbytes += len(text)
    return good, nbytes


def run_ours(corpus: Path, out: Path) -> int:
    from tasks.collect.files import iter_files
    from tasks.collect.shards import SourcePlan, write_records

    plan = SourcePlan("bench", lambda: iter_files(paths=[str(corpus)], base_dir=corpus.parent))
    stats = write_records([plan], out, seed=0, shard_max_records=50_000, shard_max_bytes=64_000_000,
                          max_doc_bytes=10_000_000)
    return stats["kept"]


def run_baseline(corpus: Path, out: Path) -> int:
    import datasets

    datasets.disable_progress_bars()
    ds = datasets.load_dataset("json", data_files=str(corpus), split="train", cache_dir=str(out / "cache"))
    ds.to_parquet(str(out / "all.parquet"))
    return len(ds)


def _child(side: str, corpus: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    kept = (run_ours if side == "ours" else run_baseline)(corpus, out)
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"kept": kept, "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime,
                      "peak_rss_mb": ru.ru_maxrss / 1024}))


def _measure(side: str, corpus: Path, out: Path) -> dict:
    res = subprocess.run([sys.executable, "-m", "benchmarks.collect", "--child", side, str(corpus), str(out)],
                         capture_output=True, text=True, check=True, env={**os.environ, "HF_DATASETS_OFFLINE": "1"})
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=100_000, help="documents to generate (default 100000)")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/collect.json"), help="results file")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return 0
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as tmp:
        tmp_path = Path(tmp)
        corpus = tmp_path / "corpus.jsonl.gz"
        good, nbytes = make_corpus(corpus, args.docs)
        clean = tmp_path / "clean.jsonl.gz"  # the baseline cannot skip bad lines
        with gzip.open(corpus, "rt") as src, gzip.open(clean, "wt", compresslevel=1) as dst:
            dst.writelines(line for line in src if line.endswith("}\n"))
        results = {"ours": _measure("ours", corpus, tmp_path / "ours"),
                   "baseline_hf_datasets": _measure("baseline", clean, tmp_path / "base")}
    for r in results.values():
        r["docs_per_cpu_s"] = r["kept"] / r["cpu_s"]
        r["mb_per_cpu_s"] = nbytes / 1e6 / r["cpu_s"]
    ours, base = results["ours"], results["baseline_hf_datasets"]
    summary = {"docs": args.docs, "good_docs": good, "text_mb": nbytes / 1e6, "results": results,
               "ratio_docs_per_cpu_s": ours["docs_per_cpu_s"] / base["docs_per_cpu_s"],
               "ratio_peak_rss": ours["peak_rss_mb"] / base["peak_rss_mb"]}
    print(f"collect benchmark: {args.docs} docs ({good} good), {nbytes / 1e6:.1f} MB of text, gzipped jsonl")
    print(f"{'side':<24}{'kept':>9}{'wall s':>9}{'cpu s':>9}{'docs/cpu-s':>12}{'MB/cpu-s':>10}{'peak MB':>9}")
    for name, r in results.items():
        print(f"{name:<24}{r['kept']:>9}{r['wall_s']:>9.2f}{r['cpu_s']:>9.2f}{r['docs_per_cpu_s']:>12.0f}"
              f"{r['mb_per_cpu_s']:>10.2f}{r['peak_rss_mb']:>9.0f}")
    print(f"ratio ours/baseline: docs per CPU-second {summary['ratio_docs_per_cpu_s']:.2f}x, "
          f"peak memory {summary['ratio_peak_rss']:.2f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
