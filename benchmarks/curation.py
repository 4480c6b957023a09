"""clean + dedup, side by side: lmforge's shard jobs vs datatrove 0.10.1's pipeline steps, on one generated corpus.

    .venv/bin/python -m benchmarks.curation [--docs 10000] [--json benchmarks/results/curation.json] [--ours-only]

Generates a deterministic web-like corpus with a known answer: English prose documents, exact copies and edited
near copies of some of them (5-gram shingle Jaccard 0.80-0.95 to the original), and junk the filters should drop
(lorem ipsum, curly-brace code, very short, repeated lines, symbol-heavy, non-English). Then, each in its own
process (CPU seconds and peak RSS from ``resource.getrusage``, the process's children included):

- filter: lmforge's ``tasks.clean.shard.clean_shard`` on the Parquet record shards (no Unicode repair, no language
  id, no PII; rule families gopher_repetition, gopher_quality, c4 with their published defaults) vs datatrove's
  ``JsonlReader -> GopherRepetitionFilter -> GopherQualityFilter -> C4QualityFilter -> JsonlWriter`` (default
  arguments, an exclusion writer after each filter, uncompressed output), one task, one worker.
- dedup, on the *unfiltered* corpus so that both sides see the same input: ``tasks.dedup.minhash_dedup``
  (the params.yaml ``dedup.minhash`` defaults) vs datatrove's MinhashDedupSignature -> Buckets -> Cluster ->
  Filter with 5-grams and the same bands x rows (``choose_bands_rows(0.8, 128)``); one worker (the buckets stage
  runs one task per band, in sequence, as datatrove requires).

Reported: docs and MB per CPU-second and peak RSS per stage and side; clean+dedup docs per CPU-second (corpus
docs over the two stages' CPU seconds) and the ratio ours/datatrove; duplicate precision and recall against the
known groups (a group is a document and its copies: dedup is right when it keeps exactly one of each); the share
of documents on which the two filter chains make the same keep/drop decision; our peak RSS at N and N/10 docs.

datatrove is not installed into the project venv (it pins xxhash<4): the first run creates
``benchmarks/.venv-datatrove`` with ``datatrove[processing]==0.10.1`` and ``spacy`` under the project's
``infra/constraints.txt`` minus its xxhash pin (a few minutes, needs pip's registry). ``--ours-only`` skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATATROVE_VENV = Path(__file__).resolve().parent / ".venv-datatrove"
DATATROVE_PINS = ("datatrove[processing]==0.10.1", "spacy", "orjson")  # orjson: its JsonlReader
ORDER = ("gopher_repetition", "gopher_quality", "c4")
NUM_PERM, SHINGLE, THRESHOLD = 128, 5, 0.8
SHARD_RECORDS = 10_000  # the collect stage's default shard size
NEAR_RANGE = (0.80, 0.95)  # Jaccard of a near copy to its original

# ---------------------------------------------------------------------------------------------------- the corpus
ADJ = ("small", "large", "quiet", "busy", "local", "national", "modern", "ancient", "careful", "simple", "useful",
       "rare", "common", "bright", "narrow", "wide", "gentle", "strong", "fragile", "public", "private", "early",
       "late", "northern", "southern", "coastal", "rural", "urban", "detailed", "rough", "steady", "sudden", "fresh",
       "hidden", "famous", "humble", "curious", "patient", "generous", "practical")
NOUN = ("river", "bridge", "library", "garden", "market", "village", "museum", "harbor", "school", "factory",
        "festival", "report", "survey", "budget", "council", "railway", "forest", "valley", "hospital", "bakery",
        "theater", "archive", "workshop", "kitchen", "orchard", "stadium", "newspaper", "committee", "project",
        "painting", "recipe", "harvest", "journey", "camera", "bicycle", "engine", "lantern", "meadow", "island",
        "castle", "tunnel", "courtyard", "studio", "gallery", "warehouse", "vineyard", "lighthouse", "cathedral",
        "network", "program", "policy", "election", "climate", "economy", "schedule", "contract", "machine",
        "village hall", "reservoir", "highway")
VERB = ("described", "approved", "questioned", "rebuilt", "studied", "announced", "measured", "improved",
        "documented", "compared", "visited", "explained", "painted", "repaired", "funded", "opened", "closed",
        "moved", "replaced", "inspected", "expanded", "celebrated", "photographed", "restored", "mapped", "tested",
        "delayed", "planned", "praised", "criticized")
VERB_BASE = ("describe", "approve", "question", "rebuild", "study", "announce", "measure", "improve", "compare",
             "visit", "explain", "repair", "fund", "open", "close", "move", "replace", "inspect", "expand", "restore")
NAME = ("Anna", "Marcus", "Priya", "Tomas", "Elena", "Kwame", "Sofia", "Hiroshi", "Laura", "Daniel", "Fatima",
        "Oliver", "Ingrid", "Mateo", "Grace", "Yusuf", "Clara", "Nikolai", "Amara", "Jonas")
SURNAME = ("Okafor", "Lindqvist", "Moreau", "Tanaka", "Schmidt", "Alvarez", "Novak", "Brennan", "Rossi", "Haddad",
           "Kowalski", "Nguyen", "Fischer", "Duarte", "Sato", "Mensah")
DET = ("the", "a", "this", "that", "every", "one", "their", "our", "its")
PREP = ("near", "behind", "across", "beside", "inside", "around", "beyond", "under", "along", "toward")
MONTH = ("January", "February", "March", "April", "May", "June", "July", "September", "October", "November")
TAIL = ("before the end of the year", "with great care and patience", "in front of a large audience",
        "after several months of work", "because the old version had failed", "to the surprise of many residents",
        "in a detailed report", "during the long winter", "despite the heavy rain", "for the first time in decades",
        "without any public funding", "as the local paper reported", "while the volunteers watched",
        "at the request of the mayor", "over a single weekend", "with help from the neighbors")
CLAUSE = ("nobody expected it to last", "the work took longer than planned", "most people were pleased",
          "the costs kept rising", "the old records were incomplete", "the weather changed quickly",
          "the results surprised the experts", "several families moved away", "the plan needed more support")
FILLER = ("notably", "indeed", "quietly", "finally", "also", "perhaps", "still", "often", "again", "clearly",
          "slowly", "really", "certainly", "mostly", "usually")


def _c(rng: random.Random, items: tuple[str, ...]) -> str:
    return items[rng.randrange(len(items))]


def _sentence(rng: random.Random) -> str:
    """One English sentence from a dozen shapes, with the punctuation, numbers and clitics of web prose."""
    c = lambda items: _c(rng, items)  # noqa: E731
    kind = rng.randrange(12)
    if kind == 0:
        return f"{c(DET).capitalize()} {c(ADJ)} {c(NOUN)} {c(VERB)} {c(DET)} {c(NOUN)} {c(PREP)} the {c(NOUN)}."
    if kind == 1:
        return f"In {rng.randint(1890, 2024)}, {c(NAME)} {c(SURNAME)} {c(VERB)} the {c(ADJ)} {c(NOUN)} {c(TAIL)}."
    if kind == 2:
        return (f"{c(NAME)} said the {c(NOUN)} wasn't {c(ADJ)} enough, so the {c(NOUN)} team {c(VERB)} "
                f"{c(DET)} {c(NOUN)} again.")
    if kind == 3:
        return (f"About {rng.randint(2, 98)}% of the {c(NOUN)}s, roughly {rng.randint(1, 60) * 100:,} in total, "
                f"were {c(VERB)} by {c(MONTH)}.")
    if kind == 4:
        return f"Why did the {c(ADJ)} {c(NOUN)} {c(VERB_BASE)} the {c(NOUN)} {c(TAIL)}?"
    if kind == 5:
        return (f"It's a {c(ADJ)}, {c(ADJ)} {c(NOUN)} (the {c(NOUN)} is {c(ADJ)} too), and most visitors "
                f"{c(VERB)} it.")
    if kind == 6:
        return (f"Dr. {c(SURNAME)} {c(VERB)} the long-term cost of the {c(NOUN)}, about ${rng.randint(2, 90)}."
                f"{rng.randint(0, 9)}0 per {c(('day', 'visitor', 'meter', 'family', 'ticket'))}.")
    if kind == 7:
        return (f"Some places, e.g. the {c(NOUN)} and the {c(NOUN)}, were {c(VERB)} {c(TAIL)} while "
                f"{c(CLAUSE)}.")
    if kind == 8:
        return f"The {c(NOUN)} {c(VERB)} {c(DET)} {c(ADJ)} {c(NOUN)}; {c(CLAUSE)}."
    if kind == 9:
        adj = c(ADJ)
        ending = c(("was", "turned out to be", "became"))
        return f"What {'an' if adj[0] in 'aeiou' else 'a'} {adj} {c(NOUN)} that {ending}!"
    if kind == 10:
        return (f"When the {c(NOUN)} {c(VERB)} the {c(NOUN)} {c(PREP)} the {c(NOUN)}, {c(NAME)} and "
                f"{c(NAME)} didn't agree about what to do {c(('next', 'first', 'with it', 'about the cost'))}.")
    return f"According to {c(NAME)}, {c(CLAUSE)} and the {c(NOUN)} was {c(VERB)} {c(TAIL)}."


def prose(rng: random.Random) -> str:
    """A web-page-like English document (about 1-3 KB): maybe a title line, then paragraphs of lines of sentences."""
    paragraphs = []
    for _ in range(rng.randint(3, 6)):
        lines = [" ".join(_sentence(rng) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 3))]
        paragraphs.append("\n".join(lines))
    while sum(p.count(".") + p.count("?") + p.count("!") for p in paragraphs) < 8:
        paragraphs.append(" ".join(_sentence(rng) for _ in range(3)))
    title = [f"{_c(rng, ADJ).capitalize()} {_c(rng, NOUN)} news"] if rng.random() < 0.3 else []
    return "\n\n".join(title + paragraphs)


def _junk(rng: random.Random, kind: str) -> str:
    """A document the C4/Gopher rules should drop."""
    if kind == "lorem":
        latin = ("dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore "
                 "magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea "
                 "commodo consequat duis aute irure in reprehenderit voluptate velit esse cillum fugiat nulla "
                 "pariatur excepteur sint occaecat cupidatat non proident sunt culpa qui officia deserunt").split()
        lines = [" ".join(rng.choices(latin, k=rng.randint(8, 16))).capitalize() + "."
                 for _ in range(rng.randint(6, 12))]
        return "Lorem ipsum " + "\n".join(lines)
    if kind == "code":
        name = lambda: "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9)))  # noqa: E731
        body = []
        for _ in range(rng.randint(4, 9)):
            body += [f"function {name()}({name()}, {name()}) {{",
                     f"  var {name()} = {name()}.{name()}({rng.randint(0, 99)});",
                     f"  if ({name()} > {rng.randint(0, 9)}) {{ return {name()}; }}", "}"]
        return "\n".join(body)
    if kind == "short":
        return " ".join(_sentence(rng) for _ in range(rng.randint(1, 2)))
    if kind == "repeated":
        line = _sentence(rng)
        return "\n".join([line] * rng.randint(12, 30) + [_sentence(rng)])
    if kind == "symbols":
        lines = []
        for _ in range(rng.randint(10, 20)):
            tags = " ".join(f"#{_c(rng, ADJ)}{_c(rng, NOUN).replace(' ', '')}" for _ in range(rng.randint(3, 6)))
            lines.append(f"{_c(rng, NAME)} {_c(rng, VERB)} the {_c(rng, NOUN)} {tags} ...")
        return "\n".join(lines)
    # non-English: pseudo-words without English stop words
    syll = ("ka", "lo", "mi", "ren", "tu", "sva", "dor", "eli", "na", "po", "ris", "van", "qe", "zul", "ho", "tek")
    word = lambda: "".join(rng.choices(syll, k=rng.randint(1, 4)))  # noqa: E731
    lines = [" ".join(word() for _ in range(rng.randint(8, 16))).capitalize() + "." for _ in range(rng.randint(6, 14))]
    return "\n".join(lines)


JUNK_KINDS = ("lorem", "code", "short", "repeated", "symbols", "foreign")


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i:i + SHINGLE]) for i in range(max(1, len(words) - SHINGLE + 1))}


def jaccard(a: str, b: str) -> float:
    """Jaccard similarity of the two texts' lower-cased 5-word shingle sets."""
    sa, sb = _shingles(a), _shingles(b)
    return len(sa & sb) / len(sa | sb)


def near_copy(rng: random.Random, text: str, target: float) -> tuple[str, float]:
    """An edited copy: plain words substituted, inserted or deleted one at a time until Jaccard <= ``target`` (the
    edit that would take it below ``NEAR_RANGE`` is not made). Returns the copy and its Jaccard to ``text``.
    """
    lines = [line.split(" ") for line in text.split("\n")]
    base = _shingles(text)
    edited, sim = text, 1.0
    while sim > target:
        line = lines[rng.choice([i for i, words in enumerate(lines) if len(words) > 3])]
        pos = rng.randrange(1, len(line) - 1)  # not the first or last word: lines keep their start and end mark
        op = rng.randrange(3)
        if op == 0 and line[pos].isalpha():
            line[pos] = _c(rng, FILLER)
        elif op == 1:
            line.insert(pos, _c(rng, FILLER))
        elif line[pos].isalpha():
            del line[pos]
        candidate = "\n".join(" ".join(words) for words in lines)
        new = _shingles(candidate)
        if len(base & new) / len(base | new) < NEAR_RANGE[0]:
            break  # this edit went too far: keep the copy before it
        edited, sim = candidate, len(base & new) / len(base | new)
    return edited, sim


def make_corpus(docs: int, seed: int = 0) -> dict:
    """``docs`` documents, shuffled: 70% prose originals, 20% copies of some of them (half exact, half edited), 10%
    junk. Returns texts, kinds (``prose``, ``exact``, ``near``, ``junk.<kind>``), the duplicate groups (lists of
    indices, original first) and the Jaccard of each near copy to its original.
    """
    rng = random.Random(seed)
    n_junk, n_copies = docs // 10, docs // 5
    n_orig = docs - n_junk - n_copies
    seen: set[str] = set()
    texts, kinds = [], []
    while len(texts) < n_orig:
        text = prose(rng)
        if text not in seen:
            seen.add(text)
            texts.append(text)
            kinds.append("prose")
    groups: dict[int, list[int]] = {}
    near_sims = []
    while sum(len(g) - 1 for g in groups.values()) < n_copies:
        src = rng.randrange(n_orig)
        group = groups.setdefault(src, [src])
        if len(group) >= 4 or len(texts) - n_orig >= n_copies:
            continue
        for _ in range(min(rng.randint(1, 3), 4 - len(group), n_copies - (len(texts) - n_orig))):
            if rng.random() < 0.5:
                texts.append(texts[src])
                kinds.append("exact")
            else:
                copy, sim = near_copy(rng, texts[src], rng.uniform(*NEAR_RANGE))
                texts.append(copy)
                kinds.append("near")
                near_sims.append(sim)
            group.append(len(texts) - 1)
    while len(texts) < docs:
        kind = JUNK_KINDS[len(texts) % len(JUNK_KINDS)]
        text = _junk(rng, kind)
        if text not in seen:
            seen.add(text)
            texts.append(text)
            kinds.append(f"junk.{kind}")
    order = list(range(docs))
    rng.shuffle(order)
    where = {old: new for new, old in enumerate(order)}
    return {"texts": [texts[i] for i in order], "kinds": [kinds[i] for i in order],
            "groups": [[where[i] for i in g] for g in groups.values() if len(g) > 1], "near_sims": near_sims}


def write_inputs(corpus: dict, root: Path) -> list[str]:
    """The corpus as collect-stage record shards (``root/raw``) and as jsonl (``root/corpus.jsonl``); returns ids."""
    import pyarrow.parquet as pq

    from tasks.collect.items import Document
    from tasks.collect.shards import SourcePlan, write_records

    raw = root / "raw"
    raw.mkdir(parents=True)
    docs = [Document(text=t, location=f"doc-{i:07d}", metadata={}) for i, t in enumerate(corpus["texts"])]
    write_records([SourcePlan("bench", lambda: iter(docs))], raw, seed=0, shard_max_records=SHARD_RECORDS,
                  shard_max_bytes=10**9, max_doc_bytes=10**8)
    by_path = {}
    for shard in sorted(raw.glob("part-*.parquet")):
        table = pq.read_table(shard, columns=["id", "path"])
        by_path.update(zip(table.column("path").to_pylist(), table.column("id").to_pylist(), strict=True))
    ids = [by_path[f"doc-{i:07d}"] for i in range(len(docs))]
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for rid, text in zip(ids, corpus["texts"], strict=True):
            fh.write(json.dumps({"id": rid, "text": text}) + "\n")
    return ids


# ---------------------------------------------------------------------------------------------------- the sides
def run_ours(stage: str, root: Path) -> None:
    """One stage of lmforge on ``root/raw`` into ``root/ours-<stage>``."""
    out = root / f"ours-{stage}"
    out.mkdir()
    if stage == "filter":
        from tasks.clean.shard import clean_shard

        for shard in sorted((root / "raw").glob("part-*.parquet")):
            clean_shard(shard=str(shard), out_dir=str(out), fix_unicode=False, languages=None, min_language_score=0.0,
                        language_max_chars=1000, order=ORDER, c4=None, gopher_quality=None, gopher_repetition=None,
                        pii=None)
    else:
        from tasks.dedup.clusters import minhash_dedup

        (out / "kept").mkdir()
        (out / "work").mkdir()
        from pipelines.config.dedup import MinHashParams

        d = MinHashParams()  # the params.yaml defaults, as the issue measured them
        minhash_dedup(root / "raw", out / "kept", work_dir=out / "work", num_perm=d.num_perm,
                      shingle_size=d.shingle_size, threshold=d.threshold, bands=d.bands, rows=d.rows, verify=d.verify,
                      verify_margin=d.verify_margin, seed=d.seed)


# Run by the datatrove venv's python: argv = stage, root, bands, rows. Only datatrove's public pipeline API.
DATATROVE_CHILD = r'''
import json, resource, sys, time
from pathlib import Path

t0 = time.perf_counter()
stage, root, bands, rows = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = root / f"datatrove-{stage}"
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

def reader():
    return JsonlReader(str(root), glob_pattern="corpus.jsonl")

def run(pipeline, name, tasks=1):
    LocalPipelineExecutor(pipeline, tasks=tasks, workers=1, logging_dir=str(out / "logs" / name)).run()

if stage == "filter":
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter

    def dropped(name):
        return JsonlWriter(str(out / "dropped" / name), compression=None)

    run([reader(), GopherRepetitionFilter(exclusion_writer=dropped("gopher_repetition")),
         GopherQualityFilter(exclusion_writer=dropped("gopher_quality")),
         C4QualityFilter(exclusion_writer=dropped("c4")),
         JsonlWriter(str(out / "kept"), compression=None)], "filter")
else:
    from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                          MinhashDedupSignature)
    from datatrove.pipeline.dedup.minhash import MinhashConfig

    config = MinhashConfig(n_grams=5, num_buckets=bands, hashes_per_bucket=rows)
    run([reader(), MinhashDedupSignature(output_folder=str(out / "signatures"), config=config)], "signatures")
    run([MinhashDedupBuckets(input_folder=str(out / "signatures"), output_folder=str(out / "buckets"), config=config)],
        "buckets", tasks=bands)
    run([MinhashDedupCluster(input_folder=str(out / "buckets"), output_folder=str(out / "remove_ids"), config=config)],
        "cluster")
    run([reader(), MinhashDedupFilter(input_folder=str(out / "remove_ids"),
                                      exclusion_writer=JsonlWriter(str(out / "removed"), compression=None)),
         JsonlWriter(str(out / "kept"), compression=None)], "filter")
wall = time.perf_counter() - t0
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall_s": wall, "cpu_s": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
                  "peak_rss_mb": max(me.ru_maxrss, kids.ru_maxrss) / 1024}))
'''


def ensure_datatrove_venv(venv: Path) -> Path:
    """The python of a venv holding datatrove 0.10.1 and spaCy, created (a few minutes) when missing."""
    python, marker = venv / "bin" / "python", venv / ".lmforge-ready"
    if marker.is_file() and marker.read_text().split() == list(DATATROVE_PINS):
        return python
    print(f"creating {venv} with {' '.join(DATATROVE_PINS)} (first run only) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (venv / ".gitignore").write_text("*\n")  # as virtualenv and uv do: git, ruff and repo copies skip the venv
    constraints = venv / "constraints.txt"  # the project's pins, but datatrove needs xxhash<4
    lines = (REPO / "infra" / "constraints.txt").read_text().splitlines()
    constraints.write_text("\n".join(line for line in lines if not line.lower().startswith("xxhash")) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(constraints), *DATATROVE_PINS], check=True)
    marker.write_text(" ".join(DATATROVE_PINS) + "\n")
    return python


def _child(stage: str, root: Path) -> None:
    t0 = time.perf_counter()
    run_ours(stage, root)
    wall = time.perf_counter() - t0
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"wall_s": wall, "cpu_s": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
                      "peak_rss_mb": max(me.ru_maxrss, kids.ru_maxrss) / 1024}))


def _measure(label: str, cmd: list[str]) -> dict:
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if res.returncode != 0:
        raise SystemExit(f"{label} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------- the scores
def _parquet_ids(paths: list[Path], *columns: str) -> list[dict]:
    import pyarrow.parquet as pq

    return [row for p in paths for row in pq.read_table(p, columns=list(columns)).to_pylist()]


def _jsonl_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(folder.rglob("*.jsonl")) for line in p.open(encoding="utf-8")]


def dedup_scores(removed: set[str], groups: list[list[str]], kinds: dict[str, str]) -> dict:
    """Precision and recall of removals against the groups: of a group of g, any g-1 removed are right.

    A removal is right when its group still has another member kept (at most g-1 per group count); a removed
    document outside every group is wrong. Pair recall by kind: a copy counts as found when it or its original
    was removed.
    """
    group_of = {doc: gi for gi, group in enumerate(groups) for doc in group}
    removed_in = Counter(group_of[d] for d in removed if d in group_of)
    right = sum(min(removed_in[gi], len(group) - 1) for gi, group in enumerate(groups))
    should = sum(len(group) - 1 for group in groups)
    pairs: dict[str, list[int]] = {"exact": [0, 0], "near": [0, 0]}
    for group in groups:
        for copy in group[1:]:
            found = pairs[kinds[copy]]
            found[0] += copy in removed or group[0] in removed
            found[1] += 1
    return {"removed": len(removed), "should_remove": should, "right_removals": right,
            "precision": right / len(removed) if removed else 1.0, "recall": right / should if should else 1.0,
            "groups_exactly_one_kept": sum(removed_in[gi] == len(g) - 1 for gi, g in enumerate(groups)),
            "groups": len(groups), "non_duplicates_removed": sum(d not in group_of for d in removed),
            "exact_pair_recall": pairs["exact"][0] / max(1, pairs["exact"][1]),
            "near_pair_recall": pairs["near"][0] / max(1, pairs["near"][1])}


def filter_scores(kept: set[str], kinds: dict[str, str]) -> dict:
    """How many documents were kept, and the share of prose kept and of junk dropped."""
    prose_ids = [d for d, k in kinds.items() if not k.startswith("junk")]
    junk_ids = [d for d, k in kinds.items() if k.startswith("junk")]
    return {"kept": len(kept), "prose_kept": sum(d in kept for d in prose_ids) / max(1, len(prose_ids)),
            "junk_dropped": sum(d not in kept for d in junk_ids) / max(1, len(junk_ids))}


def ours_outputs(root: Path) -> tuple[set[str], dict[str, str], set[str]]:
    """Our filter's kept ids and drop reasons, and our dedup's removed ids."""
    fdir = root / "ours-filter"
    kept = {r["id"] for r in _parquet_ids(sorted(fdir.glob("part-*.parquet")), "id")}
    rejected = _parquet_ids(sorted((fdir / "rejected").glob("*.parquet")), "id", "reason")
    reasons = {r["id"]: r["reason"] for r in rejected}
    removed = {r["id"] for r in _parquet_ids(sorted((root / "ours-dedup" / "kept" / "removed").glob("*.parquet")),
                                             "id")}
    return kept, reasons, removed


def datatrove_outputs(root: Path) -> tuple[set[str], dict[str, str], set[str]]:
    """datatrove's filter kept ids and drop reasons (``family.reason``), and its dedup's removed ids."""
    fdir = root / "datatrove-filter"
    kept = {r["id"] for r in _jsonl_rows(fdir / "kept")}
    reasons = {}
    for family in ORDER:
        for r in _jsonl_rows(fdir / "dropped" / family):
            reasons[r["id"]] = f"{family}.{r.get('metadata', {}).get('filter_reason', '?')}"
    removed = {r["id"] for r in _jsonl_rows(root / "datatrove-dedup" / "removed")}
    return kept, reasons, removed


# ---------------------------------------------------------------------------------------------------- the run
def _prepare(docs: int, root: Path) -> tuple[dict, list[str], int]:
    corpus = make_corpus(docs)
    ids = write_inputs(corpus, root)
    return corpus, ids, sum(len(t.encode("utf-8")) for t in corpus["texts"])


def _rates(r: dict, docs: int, nbytes: int) -> dict:
    return {**r, "docs": docs, "docs_per_cpu_s": docs / r["cpu_s"], "mb_per_cpu_s": nbytes / 1e6 / r["cpu_s"]}


def run_benchmark(docs: int, tmp: Path, *, ours_only: bool, venv: Path) -> dict:
    from tasks.dedup.clusters import choose_bands_rows

    bands, rows = choose_bands_rows(THRESHOLD, NUM_PERM)
    dt_python = None if ours_only else ensure_datatrove_venv(venv)
    root, small = tmp / "full", tmp / "tenth"
    root.mkdir()
    small.mkdir()
    corpus, ids, nbytes = _prepare(docs, root)
    small_docs = max(1, docs // 10)
    _, _, small_bytes = _prepare(small_docs, small)
    ours_cmd = [sys.executable, "-m", "benchmarks.curation", "--child"]
    stages: dict[str, dict[str, dict]] = {"filter": {}, "dedup": {}}
    for stage in stages:
        stages[stage]["lmforge"] = _rates(_measure(f"lmforge {stage}", [*ours_cmd, stage, str(root)]), docs, nbytes)
        if dt_python is not None:
            cmd = [str(dt_python), "-c", DATATROVE_CHILD, stage, str(root), str(bands), str(rows)]
            stages[stage]["datatrove"] = _rates(_measure(f"datatrove {stage}", cmd), docs, nbytes)
    memory = {}
    for stage in stages:
        tenth = _rates(_measure(f"lmforge {stage} (N/10)", [*ours_cmd, stage, str(small)]), small_docs, small_bytes)
        memory[stage] = {"docs": [docs, small_docs], "peak_rss_mb": [stages[stage]["lmforge"]["peak_rss_mb"],
                                                                     tenth["peak_rss_mb"]],
                         "ratio": stages[stage]["lmforge"]["peak_rss_mb"] / tenth["peak_rss_mb"], "run_at_tenth": tenth}

    kinds = dict(zip(ids, corpus["kinds"], strict=True))
    groups = [[ids[i] for i in g] for g in corpus["groups"]]
    sides = {"lmforge": ours_outputs(root)}
    if dt_python is not None:
        sides["datatrove"] = datatrove_outputs(root)
    quality = {}
    for side, (kept, _, removed) in sides.items():
        quality[side] = {"filter": filter_scores(kept, kinds), "dedup": dedup_scores(removed, groups, kinds)}
    combined = {side: docs / (stages["filter"][side]["cpu_s"] + stages["dedup"][side]["cpu_s"]) for side in sides}
    result = {
        "docs": docs, "text_mb": nbytes / 1e6, "kinds": dict(sorted(Counter(corpus["kinds"]).items())),
        "near_copy_jaccard": {"min": min(corpus["near_sims"], default=None),
                              "max": max(corpus["near_sims"], default=None)},
        "bands": bands, "rows": rows, "stages": stages, "clean_dedup_docs_per_cpu_s": combined, "quality": quality,
        "memory_lmforge": memory, "dedup_input": "the unfiltered corpus, for both sides",
    }
    if "datatrove" in sides:
        (ours_kept, ours_reasons, _), (dt_kept, dt_reasons, _) = sides["lmforge"], sides["datatrove"]
        differ = [d for d in ids if (d in ours_kept) != (d in dt_kept)]
        result["filter_agreement"] = 1 - len(differ) / docs
        result["filter_disagreement_counts"] = [
            {"kind": kind, "lmforge": ours, "datatrove": theirs, "docs": n} for (kind, ours, theirs), n in Counter(
                (kinds[d], ours_reasons.get(d, "kept"), dt_reasons.get(d, "kept")) for d in differ).most_common()]
        result["filter_disagreements"] = [{"id": d, "kind": kinds[d], "lmforge": ours_reasons.get(d, "kept"),
                                           "datatrove": dt_reasons.get(d, "kept")} for d in differ[:50]]
        result["ratios"] = {"filter": stages["filter"]["lmforge"]["docs_per_cpu_s"]
                            / stages["filter"]["datatrove"]["docs_per_cpu_s"],
                            "dedup": stages["dedup"]["lmforge"]["docs_per_cpu_s"]
                            / stages["dedup"]["datatrove"]["docs_per_cpu_s"],
                            "clean_dedup": combined["lmforge"] / combined["datatrove"]}
    return result


def report(r: dict) -> None:
    """Print the result as tables."""
    kinds = r["kinds"]
    junk = sum(v for k, v in kinds.items() if k.startswith("junk"))
    print(f"curation benchmark: {r['docs']} docs ({kinds.get('prose', 0)} prose, {kinds.get('exact', 0)} exact and "
          f"{kinds.get('near', 0)} near copies, {junk} junk), {r['text_mb']:.1f} MB of text; "
          f"MinHash {r['bands']} bands x {r['rows']} rows")
    print(f"{'stage':<13}{'side':<11}{'wall s':>8}{'cpu s':>8}{'docs/cpu-s':>12}{'MB/cpu-s':>10}{'peak MB':>9}")
    for stage, sides in r["stages"].items():
        for side, m in sides.items():
            print(f"{stage:<13}{side:<11}{m['wall_s']:>8.2f}{m['cpu_s']:>8.2f}{m['docs_per_cpu_s']:>12.0f}"
                  f"{m['mb_per_cpu_s']:>10.2f}{m['peak_rss_mb']:>9.0f}")
    for side, rate in r["clean_dedup_docs_per_cpu_s"].items():
        print(f"{'clean+dedup':<13}{side:<11}{'':>16}{rate:>12.0f}")
    if "ratios" in r:
        ratios = r["ratios"]
        verdict = "met" if ratios["clean_dedup"] >= 3 else "NOT met"
        print(f"ratio ours/datatrove, docs per CPU-second: filter {ratios['filter']:.2f}x, dedup "
              f"{ratios['dedup']:.2f}x, clean+dedup {ratios['clean_dedup']:.2f}x (target >= 3x: {verdict})")
    print(f"\n{'dedup vs truth':<14}{'removed':>8}{'precision':>10}{'recall':>8}{'groups ok':>11}{'exact rec':>10}"
          f"{'near rec':>9}   (on the unfiltered corpus; {next(iter(r['quality'].values()))['dedup']['groups']} "
          f"groups, {next(iter(r['quality'].values()))['dedup']['should_remove']} docs to remove)")
    for side, q in r["quality"].items():
        d = q["dedup"]
        print(f"{side:<14}{d['removed']:>8}{d['precision']:>10.4f}{d['recall']:>8.4f}{d['groups_exactly_one_kept']:>11}"
              f"{d['exact_pair_recall']:>10.4f}{d['near_pair_recall']:>9.4f}")
    print(f"\n{'filters':<14}{'kept':>8}{'prose kept':>12}{'junk dropped':>14}")
    for side, q in r["quality"].items():
        f = q["filter"]
        print(f"{side:<14}{f['kept']:>8}{f['prose_kept']:>12.4f}{f['junk_dropped']:>14.4f}")
    if "filter_agreement" in r:
        n_diff = round((1 - r["filter_agreement"]) * r["docs"])
        verdict = "met" if r["filter_agreement"] >= 0.99 else "NOT met"
        print(f"keep/drop agreement lmforge vs datatrove: {r['filter_agreement']:.2%} ({n_diff} of {r['docs']} "
              f"differ; target >= 99%: {verdict})")
        for row in r["filter_disagreement_counts"][:6]:
            print(f"  {row['docs']:>5} {row['kind']}: lmforge {row['lmforge']}, datatrove {row['datatrove']}")
    print("\nlmforge peak RSS at N and N/10 docs:", ", ".join(
        f"{stage} {m['peak_rss_mb'][0]:.0f} MB at {m['docs'][0]} / {m['peak_rss_mb'][1]:.0f} MB at {m['docs'][1]} "
        f"({m['ratio']:.2f}x)" for stage, m in r["memory_lmforge"].items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=10_000, help="documents to generate (default 10000)")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/curation.json"), help="results file")
    ap.add_argument("--ours-only", action="store_true", help="skip datatrove (no venv needed): lmforge's side only")
    ap.add_argument("--datatrove-venv", type=Path, default=DATATROVE_VENV, help=f"default {DATATROVE_VENV}")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child[0], Path(args.child[1]))
        return 0
    if args.docs < 20:
        ap.error("--docs must be at least 20")
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as tmp:
        result = run_benchmark(args.docs, Path(tmp), ours_only=args.ours_only, venv=args.datatrove_venv.resolve())
    report(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
