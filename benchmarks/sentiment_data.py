"""The public labelled set of ``benchmarks.checkpoint``: movie-review sentences with human sentiment ratings.

Source: the data set of Hutto & Gilbert, "VADER: A Parsimonious Rule-based Model for Sentiment Analysis of Social Media
Text" (ICWSM 2014), ``movieReviewSnippets_GroundTruth.txt``: 10,605 sentences from Rotten Tomatoes reviews (the
sentences of Pang & Lee's sentence polarity data), each with the mean of at least 20 human ratings from -4 (extremely
negative) to +4 (extremely positive). It ships inside the source distribution of ``vaderSentiment`` 3.3.2 on PyPI
(``additional_resources/hutto_ICWSM_2014.tar.gz``), under that package's MIT license; the wheel does not carry it, so
the source distribution is fetched with pip (``pip download --no-binary :all:``) and checked against its SHA-256.

Labels: ``positive`` where the mean rating is above 0, ``negative`` where it is below; the 37 sentences rated exactly 0
are left out, and so is every text that occurs twice (lmforge would quarantine the later copy as a duplicate). Splits:
stratified by label, seeded, the same for every seed-and-limit pair on every machine. Each split is written as
``DIR/{train,val,test}.csv`` with columns ``text,label,split``: the split column lets ``lmforge run finetune`` keep
exactly these splits (``fields: {split: split}``), so every model of the benchmark sees the same examples.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

PACKAGE, VERSION = "vaderSentiment", "3.3.2"
SDIST = f"{PACKAGE}-{VERSION}.tar.gz"
SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER = f"{PACKAGE}-{VERSION}/additional_resources/hutto_ICWSM_2014.tar.gz"
MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
LICENSE = (f"MIT (the {PACKAGE} {VERSION} source distribution that ships the data set); data set: Hutto & Gilbert, "
           "ICWSM 2014; texts: Rotten Tomatoes sentences of Pang & Lee's sentence polarity data")
LABELS = ("negative", "positive")
SPLITS = ("train", "val", "test")
VAL, TEST = 0.1, 0.1
"""Shares of each label's examples in val and test; the rest is train."""


class DataError(Exception):
    """The source distribution cannot be fetched, or is not the one this benchmark was written for."""


def fetch_sdist(cache: Path) -> Path:
    """``cache/vaderSentiment-3.3.2.tar.gz``, fetched with pip unless it is there; its SHA-256 is checked.

    Raises:
        DataError: pip failed (no registry and no cached copy), or the file is not the expected one.
    """
    path = cache / SDIST
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "-q", f"{PACKAGE}=={VERSION}", "-d", str(cache)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if res.returncode != 0 or not path.is_file():
            raise DataError(f"could not fetch {SDIST} with `{' '.join(cmd[2:])}`: "
                            f"{(res.stderr or res.stdout).strip()[-800:]}; give a copy with --source FILE")
    check_sdist(path)
    return path


def check_sdist(path: Path) -> None:
    """Raise :class:`DataError` unless ``path`` is the expected source distribution (by SHA-256)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHA256:
        raise DataError(f"{path} has SHA-256 {digest}, not {SHA256} ({SDIST} as published); remove it or give "
                        "the published file with --source")


def read_ratings(sdist: Path) -> list[tuple[str, str, float]]:
    """(id, text, mean rating) of every line of the movie-review file inside ``sdist``, in file order."""
    with tarfile.open(sdist, "r:gz") as outer:
        inner_file = outer.extractfile(INNER)
        if inner_file is None:
            raise DataError(f"{sdist} has no file {INNER}")
        with tarfile.open(fileobj=io.BytesIO(inner_file.read()), mode="r:gz") as inner:
            member = inner.extractfile(MEMBER)
            if member is None:
                raise DataError(f"{INNER} inside {sdist} has no file {MEMBER}")
            text = member.read().decode("utf-8")
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise DataError(f"{MEMBER} line {number}: {len(parts)} tab-separated fields, expected id, rating, text")
        rows.append((parts[0], parts[2].strip(), float(parts[1])))
    return rows


def label_examples(rows: list[tuple[str, str, float]]) -> tuple[list[dict[str, str]], dict[str, int]]:
    """Examples ``{id, text, label}`` (label by the sign of the mean rating) and what was left out, by reason."""
    counts: dict[str, int] = {}
    for _, text, _ in rows:
        counts[text] = counts.get(text, 0) + 1
    dropped = {"neutral": 0, "repeated_text": 0, "empty": 0}
    examples = []
    for ident, text, rating in rows:
        reason = ("empty" if not text else "repeated_text" if counts[text] > 1 else "neutral" if rating == 0
                  else None)
        if reason:
            dropped[reason] += 1
        else:
            examples.append({"id": ident, "text": text, "label": LABELS[rating > 0]})
    return examples, dropped


def split_examples(examples: list[dict[str, str]], *, seed: int, limit: int | None) -> dict[str, list[dict[str, str]]]:
    """Stratified, seeded splits; ``limit``: at most that many examples in all (the same share of each label)."""
    rng = random.Random(seed)
    by_label = {label: [e for e in examples if e["label"] == label] for label in LABELS}
    for group in by_label.values():
        rng.shuffle(group)
    if limit is not None:
        share = min(1.0, limit / len(examples))
        by_label = {label: group[:max(3, round(share * len(group)))] for label, group in by_label.items()}
    out: dict[str, list[dict[str, str]]] = {s: [] for s in SPLITS}
    for group in by_label.values():
        n_test, n_val = max(1, round(TEST * len(group))), max(1, round(VAL * len(group)))
        out["test"] += group[:n_test]
        out["val"] += group[n_test:n_test + n_val]
        out["train"] += group[n_test + n_val:]
    for split in SPLITS:  # one order that does not depend on the label grouping
        out[split].sort(key=lambda e: int(e["id"]))
    return out


def prepare(out_dir: Path, *, cache: Path, source: Path | None = None, seed: int = 0,
            limit: int | None = None) -> dict[str, Any]:
    """Write ``out_dir/{train,val,test}.csv`` (columns text, label, split) and ``out_dir/data.json`` (what they are).

    Args:
        out_dir: where the files go (created).
        cache: where the source distribution is fetched to (or found).
        source: a copy of the source distribution to use instead of fetching one.
        seed: seed of the split.
        limit: at most this many examples in all (for short runs); None: all.

    Raises:
        DataError: see :func:`fetch_sdist`.
    """
    sdist = source if source is not None else fetch_sdist(cache)
    check_sdist(sdist)
    rows = read_ratings(sdist)
    examples, dropped = label_examples(rows)
    splits = split_examples(examples, seed=seed, limit=limit)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, rows_ in splits.items():
        with (out_dir / f"{split}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label", "split"])
            writer.writerows([e["text"], e["label"], split] for e in rows_)
    info = {"name": "movie-review sentences, human-rated sentiment (VADER, Hutto & Gilbert 2014)",
            "source": f"{SDIST} from PyPI, sha256 {SHA256}, member {INNER} -> {MEMBER}", "license": LICENSE,
            "labelling": "positive: mean human rating > 0; negative: < 0; rated exactly 0 and repeated texts left out",
            "lines": len(rows), "examples": len(examples), "dropped": dropped, "seed": seed, "limit": limit,
            "splits": {s: {label: sum(e["label"] == label for e in r) for label in LABELS}
                       for s, r in splits.items()}}
    (out_dir / "data.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def load_split(data_dir: Path, split: str) -> tuple[list[str], list[str]]:
    """(texts, labels) of ``data_dir/SPLIT.csv``."""
    with (data_dir / f"{split}.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]
