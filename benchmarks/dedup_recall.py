"""Dedup recall against true Jaccard: lmforge's MinHash (its params.yaml defaults) next to datatrove 0.10.1's.

    .venv/bin/python -m benchmarks.dedup_recall [--pairs 2000] [--seed 0] [--base zipf|prose]
        [--json benchmarks/results/dedup_recall.json] [--ours-only] [--sweep]

The corpus has a known answer and a spread of edit strengths, from a generator no dedup setting was tuned on:

- base documents: ``zipf`` (default) draws sentences of words from a Zipf-distributed vocabulary of 5000
  synthetic words, with punctuation and capitals; ``prose`` takes ``benchmarks.curation.prose`` (templated English);
- for each of ``--pairs`` base documents one copy: 10% exact up to case and spacing, the rest edited by random
  word-level operations (substitution with a random vocabulary word, insertion, deletion, swap of two sentences),
  ``round(strength * words)`` of them, strength uniform in [0, 0.07]: true Jaccard from about 0.45 to 1;
- as many unrelated documents again, and hard negatives: pairs of different documents sharing 20-60% of their
  words as a common block (a site's boilerplate; true Jaccard 0.1-0.45), which must not be removed.

Every pair's true Jaccard is computed on the sets of word 5-grams of ``tasks.fingerprints.normalize_text`` (what
lmforge's threshold refers to). Both sides dedup the same documents: lmforge signs the Parquet shards once and
clusters them with the params.yaml ``dedup.minhash`` defaults (``--sweep`` adds a grid of other settings on the same
signatures); datatrove runs ``MinhashDedupSignature -> Buckets -> Cluster -> Filter`` with ``MinhashConfig()``'s
defaults (5-grams, 14 buckets x 8 hashes, its own normalisation and spaCy word splitting) in its own venv
(``benchmarks.curation.ensure_datatrove_venv``).

Scores: a pair is found when one of its two documents was removed; recall per Jaccard bucket and overall; a
removal is right when its document has a copy and at most one per pair counts (precision). The ratio column is
lmforge's recall over datatrove's.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUCKETS: tuple[tuple[float, float], ...] = ((0.0, 0.5), (0.5, 0.6), (0.6, 0.65), (0.65, 0.7), (0.7, 0.75),
                                            (0.75, 0.8), (0.8, 0.85), (0.85, 0.9), (0.9, 0.95), (0.95, 1.0),
                                            (1.0, 1.01))
MAX_STRENGTH = 0.07
SHINGLE = 5

# Run by the datatrove venv's python: argv = root. Only datatrove's public API and MinhashConfig's defaults.
DATATROVE_CHILD = r'''
import json, sys, time
from pathlib import Path

t0 = time.perf_counter()
root = Path(sys.argv[1])
out = root / "datatrove-dedup"
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

config = MinhashConfig()  # the defaults, nothing set

def run(pipeline, name, tasks=1):
    LocalPipelineExecutor(pipeline, tasks=tasks, workers=1, logging_dir=str(out / "logs" / name)).run()

reader = lambda: JsonlReader(str(root), glob_pattern="corpus.jsonl")
run([reader(), MinhashDedupSignature(output_folder=str(out / "signatures"), config=config)], "signatures")
run([MinhashDedupBuckets(input_folder=str(out / "signatures"), output_folder=str(out / "buckets"), config=config)],
    "buckets", tasks=config.num_buckets)
run([MinhashDedupCluster(input_folder=str(out / "buckets"), output_folder=str(out / "remove_ids"), config=config)],
    "cluster")
run([reader(), MinhashDedupFilter(input_folder=str(out / "remove_ids"),
                                  exclusion_writer=JsonlWriter(str(out / "removed"), compression=None))], "filter")
removed = [json.loads(line)["id"] for p in sorted((out / "removed").rglob("*.jsonl")) for line in open(p)]
print(json.dumps({"removed": removed, "seconds": time.perf_counter() - t0,
                  "config": {"n_grams": config.n_grams, "num_buckets": config.num_buckets,
                             "hashes_per_bucket": config.hashes_per_bucket}}))
'''


# ---------------------------------------------------------------------------------------------------- the corpus
def _vocabulary(rng: random.Random, size: int = 5000) -> list[str]:
    syll = ("ka", "lo", "mi", "ren", "tu", "sa", "dor", "el", "na", "po", "ris", "van", "qe", "zul", "ho", "tek",
            "a", "e", "i", "o", "ba", "ce", "fi", "gu", "ly", "str", "on", "ar", "is", "um")
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choices(syll, k=rng.choice((1, 2, 2, 3, 3, 4)))))
    return sorted(words)


class Generator:
    """Base documents and random word edits, from one seeded RNG."""

    def __init__(self, seed: int, base: str) -> None:
        self.rng = random.Random(seed)
        self.base = base
        self.vocab = _vocabulary(random.Random(seed + 7919))
        # Zipf's law, exponent 1: a few words are everywhere (cumulative once: choices() is O(vocab) otherwise)
        self.cum_weights = list(itertools.accumulate(1 / r for r in range(1, len(self.vocab) + 1)))

    def word(self) -> str:
        return self.rng.choices(self.vocab, cum_weights=self.cum_weights)[0]

    def document(self) -> str:
        """One base document of about 150-450 words."""
        if self.base == "prose":
            from benchmarks.curation import prose

            return prose(self.rng)
        sentences = []
        for _ in range(self.rng.randint(12, 30)):
            words = [self.word() for _ in range(self.rng.randint(6, 18))]
            sentences.append(" ".join(words).capitalize() + self.rng.choice((".", ".", ".", "?", "!", ";")))
        return " ".join(sentences)

    def edited(self, text: str, strength: float) -> str:
        """``round(strength * words)`` random word operations (substitute, insert, delete, swap two sentences)."""
        sentences = [s.split() for s in re.split(r"(?<=[.?!;])\s+", text) if s.strip()]
        n_words = sum(len(s) for s in sentences)
        for _ in range(round(strength * n_words)):
            op = self.rng.random()
            s = self.rng.choice([s for s in sentences if s] or sentences)
            if op < 0.1 and len(sentences) > 1:
                i, j = self.rng.sample(range(len(sentences)), 2)
                sentences[i], sentences[j] = sentences[j], sentences[i]
            elif op < 0.5 and s:
                s[self.rng.randrange(len(s))] = self.word()
            elif op < 0.75:
                s.insert(self.rng.randrange(len(s) + 1), self.word())
            elif len(s) > 1:
                del s[self.rng.randrange(len(s))]
        return " ".join(" ".join(s) for s in sentences if s)

    def exact_variant(self, text: str) -> str:
        """The same normalised text: case and spacing changed only."""
        words = text.split()
        return "  ".join(w.upper() if self.rng.random() < 0.1 else w for w in words) + "\n"


def shingles(text: str, size: int = SHINGLE) -> set[tuple[str, ...]]:
    """Word ``size``-grams of the normalised text (a shorter text is one shingle), as lmforge's MinHash sees it."""
    from tasks.fingerprints import normalize_text

    words = normalize_text(text).split(" ")
    return {tuple(words[i:i + size]) for i in range(max(1, len(words) - size + 1))}


def jaccard(a: str, b: str) -> float:
    """True Jaccard of the two texts' word 5-gram sets."""
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def make_corpus(pairs: int, seed: int = 0, base: str = "zipf") -> dict:
    """``pairs`` (original, copy) pairs with their true Jaccard, ``pairs`` unrelated documents, ``pairs // 4``
    hard-negative pairs; shuffled. Returns ``texts``, ``pairs`` as ``[a, b, jaccard]`` and ``negatives``."""
    gen = Generator(seed, base)
    texts: list[str] = []
    pair_list: list[tuple[int, int, float]] = []
    for k in range(pairs):
        orig = gen.document()
        copy = gen.exact_variant(orig) if k % 10 == 0 else gen.edited(orig, gen.rng.uniform(0, MAX_STRENGTH))
        texts += [orig, copy]
        pair_list.append((len(texts) - 2, len(texts) - 1, jaccard(orig, copy)))
    texts += [gen.document() for _ in range(pairs)]
    negatives = []
    for _ in range(pairs // 4):
        a, b = gen.document().split(" "), gen.document().split(" ")
        share = gen.rng.uniform(0.2, 0.6)
        block = gen.document().split(" ")[: round(share * len(a))]
        cut_a, cut_b = gen.rng.randrange(len(a) + 1), gen.rng.randrange(len(b) + 1)
        texts += [" ".join(a[:cut_a] + block + a[cut_a:]), " ".join(b[:cut_b] + block + b[cut_b:])]
        negatives.append((len(texts) - 2, len(texts) - 1, jaccard(texts[-2], texts[-1])))
    order = list(range(len(texts)))
    gen.rng.shuffle(order)
    where = {old: new for new, old in enumerate(order)}
    return {"texts": [texts[i] for i in order],
            "pairs": [(where[a], where[b], j) for a, b, j in pair_list],
            "negatives": [(where[a], where[b], j) for a, b, j in negatives]}


# ---------------------------------------------------------------------------------------------------- the sides
def lmforge_settings(sweep: bool) -> dict[str, dict]:
    """The params.yaml defaults (the schema's), and with ``sweep`` a grid of alternatives on the same signatures."""
    from pipelines.config.dedup import MinHashParams

    d = MinHashParams()
    out = {"defaults": {"threshold": d.threshold, "bands": d.bands, "rows": d.rows, "verify": d.verify,
                        "verify_margin": d.verify_margin}}
    if sweep:
        for t in (0.6, 0.65, 0.7, 0.75, 0.8):
            for margin in (0.0, 0.05):
                out[f"t{t}-m{margin}"] = {"threshold": t, "bands": None, "rows": None, "verify": True,
                                          "verify_margin": margin}
        for bands, rows in ((14, 8), (14, 9), (16, 8), (21, 6), (25, 5)):
            out[f"{bands}x{rows}-noverify"] = {"threshold": 0.8, "bands": bands, "rows": rows, "verify": False,
                                               "verify_margin": 0.0}
            for t in (0.65, 0.7):
                out[f"{bands}x{rows}-verify{t}"] = {"threshold": t, "bands": bands, "rows": rows, "verify": True,
                                                    "verify_margin": 0.0}
    return out


def run_lmforge(root: Path, settings: dict[str, dict]) -> dict[str, dict]:
    """Removed ids per setting: the shards signed once (schema defaults: num_perm, shingle_size, seed)."""
    import pyarrow.parquet as pq

    from pipelines.config.dedup import MinHashParams
    from tasks.dedup.clusters import choose_bands_rows, find_clusters
    from tasks.dedup.minhash import signature_shard

    d = MinHashParams()
    sigs = root / "lmforge-signatures"
    sigs.mkdir()
    t0 = time.perf_counter()
    for shard in sorted((root / "raw").glob("part-*.parquet")):
        signature_shard(shard, sigs, num_perm=d.num_perm, shingle_size=d.shingle_size, seed=d.seed)
    sign_s = time.perf_counter() - t0
    out = {}
    for name, s in settings.items():
        bands, rows = choose_bands_rows(s["threshold"], d.num_perm, bands=s["bands"], rows=s["rows"],
                                        verify=s["verify"], verify_margin=s["verify_margin"])
        t0 = time.perf_counter()
        path, found = find_clusters(sigs, bands=bands, rows=rows,
                                    threshold=s["threshold"] - s["verify_margin"] if s["verify"] else None)
        out[name] = {"removed": set(pq.read_table(path, columns=["id"]).column("id").to_pylist()),
                     "seconds": sign_s + time.perf_counter() - t0,
                     "config": {**s, "bands": bands, "rows": rows, "num_perm": d.num_perm}}
    return out


def run_datatrove(root: Path, python: Path) -> dict:
    res = subprocess.run([str(python), "-c", DATATROVE_CHILD, str(root)], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"datatrove failed:\n{res.stderr[-4000:]}")
    result = json.loads(res.stdout.strip().splitlines()[-1])
    result["removed"] = set(result["removed"])
    return result


# ---------------------------------------------------------------------------------------------------- the scores
def score(removed: set[str], pairs: list[tuple[str, str, float]], negatives: list[tuple[str, str, float]]) -> dict:
    """Recall per Jaccard bucket and overall, precision (at most one right removal per pair)."""
    in_pair = {d for a, b, _ in pairs for d in (a, b)}
    right = sum(min(1, (a in removed) + (b in removed)) for a, b, _ in pairs)
    found = [(a in removed or b in removed, j) for a, b, j in pairs]
    buckets = []
    for lo, hi in BUCKETS:
        mine = [f for f, j in found if lo <= j < hi]
        buckets.append({"jaccard": [lo, min(hi, 1.0)], "pairs": len(mine),
                        "recall": sum(mine) / len(mine) if mine else None})
    return {"removed": len(removed), "right_removals": right, "wrong_removals": len(removed) - right,
            "precision": right / len(removed) if removed else 1.0, "recall": right / len(pairs),
            "recall_jaccard_ge_0.7": _recall_above(found, 0.7), "recall_jaccard_ge_0.8": _recall_above(found, 0.8),
            "non_duplicates_removed": len(removed - in_pair),
            "hard_negatives_removed": sum((a in removed) + (b in removed) for a, b, _ in negatives),
            "buckets": buckets}


def _recall_above(found: list[tuple[bool, float]], bar: float) -> float:
    mine = [f for f, j in found if j >= bar]
    return sum(mine) / len(mine) if mine else 1.0


def run_benchmark(pairs: int, seed: int, base: str, tmp: Path, *, datatrove: bool, sweep: bool) -> dict:
    from benchmarks.curation import DATATROVE_VENV, ensure_datatrove_venv, write_inputs

    dt_python = ensure_datatrove_venv(DATATROVE_VENV) if datatrove else None
    corpus = make_corpus(pairs, seed, base)
    ids = write_inputs({"texts": corpus["texts"]}, tmp)
    as_ids = lambda rows: [(ids[a], ids[b], j) for a, b, j in rows]  # noqa: E731
    pair_ids, negative_ids = as_ids(corpus["pairs"]), as_ids(corpus["negatives"])
    sides = {f"lmforge.{k}": v for k, v in run_lmforge(tmp, lmforge_settings(sweep)).items()}
    if dt_python is not None:
        sides["datatrove"] = run_datatrove(tmp, dt_python)
    results = {name: {"config": side["config"], "seconds": round(side["seconds"], 2),
                      **score(side["removed"], pair_ids, negative_ids)} for name, side in sides.items()}
    negj = [j for _, _, j in corpus["negatives"]]
    return {"pairs": pairs, "seed": seed, "base": base, "docs": len(corpus["texts"]),
            "hard_negatives": {"pairs": len(negj), "jaccard_max": max(negj, default=None)}, "results": results}


def report(r: dict) -> None:
    """Print recall per Jaccard bucket, lmforge's defaults next to datatrove's, then the overall scores."""
    res = r["results"]
    ours, theirs = res["lmforge.defaults"], res.get("datatrove")
    c = ours["config"]
    print(f"dedup recall vs true word-5-gram Jaccard: {r['docs']} docs, {r['pairs']} (original, copy) pairs, "
          f"{r['hard_negatives']['pairs']} hard-negative pairs (Jaccard <= {r['hard_negatives']['jaccard_max']:.2f}),"
          f" base '{r['base']}', seed {r['seed']}")
    print(f"lmforge defaults: threshold {c['threshold']}, {c['bands']} bands x {c['rows']} rows, verify "
          f"{c['verify']} (bar {c['threshold'] - c['verify_margin']:.2f}); datatrove: "
          + (f"MinhashConfig() = {theirs['config']}" if theirs else "not run"))
    print(f"{'jaccard':<12}{'pairs':>6}{'lmforge':>9}{'datatrove':>11}{'ratio':>7}")
    for i, b in enumerate(ours["buckets"]):
        lo, hi = b["jaccard"]
        label = "1.0 (exact)" if lo == 1.0 else f"{lo:.2f}-{hi:.2f}"
        dt = theirs["buckets"][i]["recall"] if theirs else None
        fmt = lambda v: f"{v:.3f}" if v is not None else "-"  # noqa: E731
        ratio = f"{b['recall'] / dt:.2f}" if b["recall"] is not None and dt else "-"
        print(f"{label:<12}{b['pairs']:>6}{fmt(b['recall']):>9}{fmt(dt):>11}{ratio:>7}")
    print(f"\n{'side':<34}{'removed':>8}{'wrong':>6}{'precision':>10}{'recall':>8}{'rec J>=.7':>10}"
          f"{'rec J>=.8':>10}{'seconds':>9}")
    for name, s in res.items():
        print(f"{name:<34}{s['removed']:>8}{s['wrong_removals']:>6}{s['precision']:>10.4f}{s['recall']:>8.4f}"
              f"{s['recall_jaccard_ge_0.7']:>10.4f}{s['recall_jaccard_ge_0.8']:>10.4f}{s['seconds']:>9.2f}")
    if theirs:
        print(f"ratio lmforge/datatrove: recall {ours['recall'] / theirs['recall']:.3f}, precision "
              f"{ours['precision'] / theirs['precision']:.4f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=2000, help="(original, copy) pairs (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base", choices=("zipf", "prose"), default="zipf", help="base document generator")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/dedup_recall.json"), help="results file")
    ap.add_argument("--ours-only", action="store_true", help="skip datatrove (no venv needed)")
    ap.add_argument("--sweep", action="store_true", help="also score a grid of lmforge settings")
    args = ap.parse_args()
    if args.pairs < 10:
        ap.error("--pairs must be at least 10")
    with tempfile.TemporaryDirectory(prefix="lmforge-dedup-recall-") as tmp:
        result = run_benchmark(args.pairs, args.seed, args.base, Path(tmp), datatrove=not args.ours_only,
                               sweep=args.sweep)
    report(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
