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

    Returns:
        Counters: ``docs_in``, ``chars_in``, ``kept``, ``chars_kept``, ``dropped_<reason>``, the funnel
        ``funnel.<step>.{docs,chars}`` (``input``, ``unicode``, ``language``, then each family), ``pii.<kind>``,
        ``unicode_fixed``, ``resumed`` (1 when the shard was already done).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.clean.chain import build_filter_chain
    from tasks.clean.pii import mask_pii
    from tasks.clean.text import LanguageDetector, fix_text
    from tasks.records import ParquetRows

    src, out = Path(shard), Path(out_dir)
    done = finished_counters(out, src)
    if done is not None:
        return {**done, "resumed": 1}
    (out / REJECTED_DIR).mkdir(parents=True, exist_ok=True)
    (out / DONE_DIR).mkdir(parents=True, exist_ok=True)

    pf = pq.ParquetFile(src)
    base = pf.schema_arrow
    kept_schema = pa.schema([*base, pa.field("lang", pa.string()), pa.field("lang_score", pa.float64())])
    rejected_schema = pa.schema([*kept_schema, pa.field("reason", pa.string())])
    kept = ParquetRows(out / src.name, kept_schema)
    rejected = ParquetRows(out / REJECTED_DIR / src.name, rejected_schema)
    detector = LanguageDetector(max_chars=language_max_chars) if languages else None
    wanted = set(languages or ())
    chain = build_filter_chain(order, c4=c4, gopher_quality=gopher_quality, gopher_repetition=gopher_repetition)
    stats: Counter[str] = Counter({"kept": 0, "chars_kept": 0})  # present when a shard keeps nothing

    def count(step: str, text: str) -> None:
        stats[f"funnel.{step}.docs"] += 1
        stats[f"funnel.{step}.chars"] += len(text)

    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            original = row["text"] or ""
            stats["docs_in"] += 1
            stats["chars_in"] += len(original)
            count("input", original)
            text = fix_text(original) if fix_unicode else original
            stats["unicode_fixed"] += text != original
            count("unicode", text)
            lang, score = detector.detect(text) if detector else (None, None)
            row.update(lang=lang, lang_score=score)
            if detector and (lang not in wanted or score < min_language_score):
                stats[f"dropped_{LANGUAGE_REASON}"] += 1
                rejected.add({**row, "reason": LANGUAGE_REASON})
                continue
            count("language", text)
            cleaned, reason = chain(text)
            if cleaned is None:
                rejected.add({**row, "reason": reason})
                continue
            if pii is not None:
                cleaned, masked = mask_pii(cleaned, **pii)
                stats.update({f"pii.{kind}": n for kind, n in masked.items()})
            stats["kept"] += 1
            stats["chars_kept"] += len(cleaned)
            kept.add({**row, "text": cleaned})
    kept.close()
    rejected.close()
    for key, value in chain.counters.items():
        if key.startswith(("funnel.", "dropped_", "c4.")):
            stats[key] += value
    stats["resumed"] = 0
    result = dict(sorted(stats.items()))
    marker = _marker(out, src)
    atomic_write_text(marker, json.dumps(result, sort_keys=True))
    return result
