"""The clean stage's shard job: Unicode repair, language id, C4/Gopher rules and PII masking on one shard.

One call cleans one record shard into a kept shard (columns of the input plus ``lang`` and ``lang_score``)
and a rejected shard (the original record plus ``reason``: the first rule that dropped it). A marker with
the shard's counters is written last, atomically: a re-run finds finished shards by their markers and
redoes only the others, so a stage killed part way resumes. Shards are independent, so the output is the
same whatever the number of workers that ran them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.atomic import atomic_write_text

REJECTED_DIR = "rejected"
DONE_DIR = ".done"
LANGUAGE_REASON = "language"


def _marker(out_dir: Path, shard: Path) -> Path:
    return out_dir / DONE_DIR / f"{shard.stem}.json"


def finished_counters(out_dir: Path, shard: Path) -> dict[str, int] | None:
    """The counters of a shard a previous run already finished, or None."""
    marker = _marker(out_dir, shard)
    if marker.is_file() and (out_dir / shard.name).is_file():
        return dict(json.loads(marker.read_text(encoding="utf-8")))
    return None


def clean_shard(
    *,
    shard: str,
    out_dir: str,
    fix_unicode: bool,
    languages: Sequence[str] | None,
    min_language_score: float,
    language_max_chars: int,
    order: Sequence[str],
    c4: Mapping[str, Any] | None,
    gopher_quality: Mapping[str, Any] | None,
    gopher_repetition: Mapping[str, Any] | None,
    pii: Mapping[str, bool] | None,
    cache_dir: str | None = None,
) -> dict[str, int]:
    """Clean one shard; skip it if a previous run finished it.

    Args:
        shard: input record shard (``part-NNNNN.parquet``).
        out_dir: output directory: kept shard at ``out_dir/<name>``, rejected at ``out_dir/rejected/<name>``.
        fix_unicode: repair mojibake and NFC-normalise (ftfy).
        languages: keep only these languages (ISO 639-1), or None to skip language identification.
        min_language_score: lowest normalised probability of the detected language.
        language_max_chars: characters the identifier looks at.
        order: rule families to run, in order (``gopher_repetition``, ``gopher_quality``, ``c4``).
        c4, gopher_quality, gopher_repetition: keyword arguments of each family's filter.
        pii: ``{"emails": bool, "ips": bool, "phones": bool}`` to mask PII in kept text, or None.
        cache_dir: the stage's decision cache (``tasks.clean.decisions``): documents decided before are not
            filtered again, and this shard's decisions are stored there; None: every document is filtered.

    Returns:
        Counters: ``docs_in``, ``chars_in``, ``kept``, ``chars_kept``, ``dropped_<reason>``, the funnel
        ``funnel.<step>.{docs,chars}`` (``input``, ``unicode``, ``language``, then each family), ``pii.<kind>``,
        ``unicode_fixed``, ``resumed`` (1 when the shard was already done), and ``incremental.docs_reused`` /
        ``incremental.docs_filtered`` (what the cache gave; the flow keeps them out of the stage metrics).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.clean.chain import build_filter_chain
    from tasks.clean.decisions import DecisionCache, shard_key
    from tasks.records import ParquetRows

    src, out = Path(shard), Path(out_dir)
    done = finished_counters(out, src)
    if done is not None:
        return {**done, "resumed": 1}
    (out / REJECTED_DIR).mkdir(parents=True, exist_ok=True)
    (out / DONE_DIR).mkdir(parents=True, exist_ok=True)

    settings = dict(fix_unicode=fix_unicode, languages=languages, min_language_score=min_language_score,
                    language_max_chars=language_max_chars, order=order, c4=c4, gopher_quality=gopher_quality,
                    gopher_repetition=gopher_repetition, pii=pii)
    pf = pq.ParquetFile(src)
    cache = DecisionCache(Path(cache_dir), settings) if cache_dir else None
    key = shard_key(src) if cache else ""
    known = cache.shard(key, pq.read_table(src, columns=["id"]).column("id").to_pylist()) if cache else None
    chain = build_filter_chain(order, c4=c4, gopher_quality=gopher_quality, gopher_repetition=gopher_repetition)
    decide = _Decider(chain, fix_unicode, languages, min_language_score, language_max_chars, pii)

    kept_schema = pa.schema([*pf.schema_arrow, pa.field("lang", pa.string()), pa.field("lang_score", pa.float64())])
    kept = ParquetRows(out / src.name, kept_schema)
    rejected = ParquetRows(out / REJECTED_DIR / src.name, pa.schema([*kept_schema, pa.field("reason", pa.string())]))
    stats: Counter[str] = Counter({"kept": 0, "chars_kept": 0})  # present when a shard keeps nothing
    stored: list[tuple[str, Any, str]] = []  # what goes into the cache: (id, decision, original text)
    reused = position = 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            original = row["text"] or ""
            d = known[position] if known is not None else None
            position += 1
            reused += d is not None
            if d is None:
                d = decide(original)
            for name, value in d.counts.items():
                stats[name] += value
            row.update(lang=d.lang, lang_score=d.lang_score)
            if d.reason is not None:
                rejected.add({**row, "reason": d.reason})
            else:  # a cached decision that kept the text unchanged does not store it
                kept.add({**row, "text": d.text if d.text is not None else row["text"]})
            if cache is not None:
                stored.append((row["id"], d.without_text(row["text"]), row["text"]))
    kept.close()
    rejected.close()
    for name, value in decide.initial.items():  # the chain's counters exist even where no document reached them
        stats[name] += value
    stats["resumed"] = 0
    result = dict(sorted(stats.items()))
    if cache is not None:
        cache.save(key, stored)
        result["incremental.docs_reused"] = reused
        result["incremental.docs_filtered"] = position - reused
    marker = _marker(out, src)
    atomic_write_text(marker, json.dumps(result, sort_keys=True))
    return result


_CHAIN_PREFIXES = ("funnel.", "dropped_", "c4.")


class _Decider:
    """One document's decision, computed: Unicode repair, language, the rule families, PII masking, and the
    document's own counters (the chain's are taken as the difference it made to them)."""

    def __init__(self, chain: Any, fix_unicode: bool, languages: Sequence[str] | None, min_score: float,
                 max_chars: int, pii: Mapping[str, bool] | None) -> None:
        from tasks.clean.text import LanguageDetector

        self.chain, self.fix_unicode, self.pii, self.min_score = chain, fix_unicode, pii, min_score
        self.detector = LanguageDetector(max_chars=max_chars) if languages else None
        self.wanted = set(languages or ())
        self.initial = {k: v for k, v in chain.counters.items() if k.startswith(_CHAIN_PREFIXES)}

    def __call__(self, original: str) -> Any:
        from tasks.clean.decisions import Decision
        from tasks.clean.pii import mask_pii
        from tasks.clean.text import fix_text

        counts: Counter[str] = Counter()

        def count(step: str, text: str) -> None:
            counts[f"funnel.{step}.docs"] += 1
            counts[f"funnel.{step}.chars"] += len(text)

        counts["docs_in"] += 1
        counts["chars_in"] += len(original)
        count("input", original)
        text = fix_text(original) if self.fix_unicode else original
        counts["unicode_fixed"] += text != original
        count("unicode", text)
        lang, score = self.detector.detect(text) if self.detector else (None, None)
        if self.detector and (lang not in self.wanted or score < self.min_score):
            counts[f"dropped_{LANGUAGE_REASON}"] += 1
            return Decision(None, lang, score, LANGUAGE_REASON, dict(counts))
        count("language", text)
        before = self.chain.counters
        cleaned, reason = self.chain(text)
        for name, value in self.chain.counters.items():
            if name.startswith(_CHAIN_PREFIXES) and (name not in before or value != before[name]):
                counts[name] += value - before.get(name, 0)
        if cleaned is None:
            return Decision(None, lang, score, reason, dict(counts))
        if self.pii is not None:
            cleaned, masked = mask_pii(cleaned, **self.pii)
            counts.update({f"pii.{kind}": n for kind, n in masked.items()})
        counts["kept"] += 1
        counts["chars_kept"] += len(cleaned)
        return Decision(cleaned, lang, score, None, dict(counts))
