"""clean_shard when every document passes (issue 11 item 5): the rejected shard is still written, with no rows.

The documents are written by hand (no generator of ours), as a clean corpus without a single rule hit would be.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.clean.shard import REJECTED_DIR, clean_shard

DOCS = (
    "The harbour master opened the lock gates at six in the morning, as she had done every day for twenty years. "
    "Fishing boats waited in a long line behind the breakwater, and the smell of diesel and salt hung over the "
    "water. By seven the last of them had passed through, and the town began to wake up around the quiet basin. "
    "The bakery on the quay was the first shop to open its doors. Its owner said the early boats were her best "
    "customers.",
    "Our school garden started with a few pots of herbs on a windowsill. Today it covers half of the playground, "
    "with raised beds of beans, potatoes and strawberries that the children plant, water and harvest themselves. "
    "The kitchen uses what they grow, and the older pupils keep a record of every kilo that comes out of the soil. "
    "Parents help during the summer holidays. Last year the garden won a prize from the county.",
    "When the old railway line closed, the council turned it into a path for walkers and cyclists. It runs for "
    "eleven miles between the two market towns, through cuttings full of wild flowers and over a viaduct with a "
    "view of the whole valley. On a sunny weekend hundreds of families use it, and most of them stop at the cafe. "
    "The cafe is in the old station building. It still has the original clock above the platform door.",
)


def test_a_shard_where_nothing_is_rejected(tmp_path: Path) -> None:
    src = tmp_path / "raw" / "part-00000.parquet"
    src.parent.mkdir()
    ids = [hashlib.blake2b(t.encode(), digest_size=16).hexdigest() for t in DOCS]
    pq.write_table(pa.table({"id": ids, "text": list(DOCS), "source": ["hand"] * 3, "url": [""] * 3,
                             "path": ["a", "b", "c"], "metadata": ["{}"] * 3}), src)
    out = tmp_path / "clean"
    stats = clean_shard(shard=str(src), out_dir=str(out), fix_unicode=False, languages=None, min_language_score=0.0,
                        language_max_chars=1000, order=("gopher_repetition", "gopher_quality", "c4"), c4={},
                        gopher_quality={}, gopher_repetition={}, pii=None)
    assert stats["docs_in"] == stats["kept"] == 3
    assert not any(k.startswith("dropped_") and v for k, v in stats.items())
    assert pq.read_table(out / src.name).column("text").to_pylist() == list(DOCS)
    rejected = pq.read_table(out / REJECTED_DIR / src.name)
    assert rejected.num_rows == 0 and "reason" in rejected.schema.names


def test_a_shard_where_everything_is_rejected_still_counts_kept(tmp_path: Path) -> None:
    src = tmp_path / "raw" / "part-00000.parquet"
    src.parent.mkdir()
    text = "Too short to keep. Only three sentences here. Nothing else."
    pq.write_table(pa.table({"id": [hashlib.blake2b(text.encode(), digest_size=16).hexdigest()], "text": [text],
                             "source": ["hand"]}), src)
    stats = clean_shard(shard=str(src), out_dir=str(tmp_path / "clean"), fix_unicode=False, languages=None,
                        min_language_score=0.0, language_max_chars=1000, order=("c4",), c4={}, gopher_quality=None,
                        gopher_repetition=None, pii=None)
    assert stats["docs_in"] == 1 and stats["kept"] == 0 and stats["chars_kept"] == 0
    assert pq.read_table(tmp_path / "clean" / src.name).num_rows == 0
