"""clean and dedup flows on generated corpora: workers don't change the output, resume, duplicates found."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.config import load_params
from tests.assets.corpora import dedup_corpus, prose, write_raw
from tests.conftest import subprocess_env

pytestmark = pytest.mark.slow


def _set(repo: Path, section: str, **values: object) -> None:
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _bytes(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _mixed_texts(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            texts.append("Lorem ipsum dolor sit amet. " + prose(rng, 8))      # c4.lorem_ipsum
        elif kind == 1:
            texts.append("The shop on the corner is open now and it sells bread. " * 30)  # repetition
        elif kind == 2:
            texts.append("Le conseil municipal a approuvé le budget annuel de la région. " * 3
                         + "Les habitants ont été surpris par la décision du maire.")  # language
        else:
            texts.append(prose(rng, 12) + f"\nContact me at person{i}@example.org for details.")
    return texts


def test_clean_same_output_with_1_and_2_workers_and_funnel(repo_copy: Path, prefect_api: str) -> None:
    from flows.clean import clean

    write_raw(repo_copy, _mixed_texts(60), shard_size=12)
    _set(repo_copy, "clean", validation={"min_rows": 10, "min_language_share": 0.95},
         pii={"enabled": True}, parallel={"workers": 1})
    dask_vars = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_")
    environ = {k: os.environ.get(k) for k in dask_vars}
    one = clean(params=load_params(repo_copy), root=repo_copy)
    # the Dask nannies' variables for their workers do not stay in this process (a later training would inherit)
    assert {k: os.environ.get(k) for k in dask_vars} == environ
    first = _bytes(repo_copy / "data/clean")
    _set(repo_copy, "clean", parallel={"workers": 2})
    two = clean(params=load_params(repo_copy), root=repo_copy)
    assert _bytes(repo_copy / "data/clean") == first
    assert {k: v for k, v in one.items() if k != "resumed"} == {k: v for k, v in two.items() if k != "resumed"}
    assert one["docs_in"] == 60 and one["shards"] == 5 and one["kept"] == 24
    assert one["dropped_c4.lorem_ipsum"] == 12 and one["dropped_language"] == 12
    assert sum(v for k, v in one.items() if k.startswith("dropped_gopher_repetition")) == 12
    assert one["pii.email"] == 24
    rows = [r for p in sorted((repo_copy / "data/clean").glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert all("<EMAIL>" in r["text"] and r["lang"] == "en" for r in rows)
    rejected = pq.read_table(repo_copy / "data/clean/rejected").to_pylist()
    assert len(rejected) == 36 and {r["reason"] for r in rejected} >= {"language", "c4.lorem_ipsum"}
    assert not (repo_copy / "data/clean/.done").exists()
    assert (repo_copy / "reports/plots/clean/funnel.png").stat().st_size > 5000


def test_clean_killed_part_way_resumes_only_unfinished_shards(repo_copy: Path, prefect_api: str) -> None:
    write_raw(repo_copy, _mixed_texts(400, seed=3), shard_size=10)  # 40 shards
    _set(repo_copy, "clean", validation={"min_rows": 10, "min_language_share": 0.95}, parallel={"workers": 1})
    proc = subprocess.Popen([sys.executable, "-m", "flows.clean"], cwd=repo_copy, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    markers: list[Path] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and len(markers) < 5:
        markers = list((repo_copy / "data").glob(".clean.staging-*/.done/*.json"))
        time.sleep(0.05)
    assert 5 <= len(markers) < 40, "clean was not caught part way"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list((repo_copy / "data").glob(".clean.staging-*/.done/*.json")))
    assert not (repo_copy / "data/clean").exists()

    from flows.clean import clean

    stats = clean(params=load_params(repo_copy), root=repo_copy)
    assert stats["resumed"] == done_before and stats["shards"] == 40
    resumed = _bytes(repo_copy / "data/clean")
    # the same as a run from scratch
    _set(repo_copy, "clean", parallel={"workers": 2})  # another stage hash: starts over
    fresh = clean(params=load_params(repo_copy), root=repo_copy)
    assert fresh["resumed"] == 0 and _bytes(repo_copy / "data/clean") == resumed


def test_dedup_finds_known_duplicates_and_splits(repo_copy: Path, prefect_api: str) -> None:
    from flows.dedup import dedup

    texts, pairs = dedup_corpus()
    raw = write_raw(repo_copy, texts, shard_size=40)
    (repo_copy / "data/clean").mkdir(parents=True)
    ids = {}
    for shard in sorted(raw.glob("part-*.parquet")):  # dedup reads data/clean: give it clean-format shards
        table = pq.read_table(shard)
        import pyarrow as pa

        table = table.append_column("lang", pa.array(["en"] * len(table))).append_column(
            "lang_score", pa.array([1.0] * len(table)))
        pq.write_table(table, repo_copy / "data/clean" / shard.name)
        ids.update({r["path"]: r["id"] for r in table.select(["id", "path"]).to_pylist()})
    pair_ids = [(ids[f"gen#L{a + 1}"], ids[f"gen#L{b + 1}"]) for a, b in pairs]
    _set(repo_copy, "dedup", validation={"min_rows": 10, "split_tolerance": 0.05},
         splits={"val": 0.1, "test": 0.1, "seed": 0})
    stats = dedup(params=load_params(repo_copy), root=repo_copy)
    out = repo_copy / "data/dedup"
    removed = pq.read_table(out / "removed").to_pylist()
    removed_ids = {r["id"] for r in removed}
    # of each (original, copy) pair exactly one is dropped, the one with the larger id; nothing else is dropped
    caught = [p for p in pair_ids if len(set(p) & removed_ids) == 1 and max(p) in removed_ids]
    assert len(caught) / len(pair_ids) >= 0.9
    assert removed_ids <= {i for p in pair_ids for i in p}
    kept = {r["id"] for s in ("train", "val", "test") for r in pq.read_table(out / s).select(["id"]).to_pylist()}
    assert all(r["duplicate_of"] in kept for r in removed)
    assert stats["dropped_exact"] >= 10 and stats["dropped_minhash"] >= 15
    assert stats["kept"] == len(kept) == len(texts) - len(removed)
    assert stats["split.train"] + stats["split.val"] + stats["split.test"] == stats["kept"]
    assert not (out / "_work").exists() and (out / "duplicates.parquet").is_file()
    assert json.loads((repo_copy / "metrics/dedup.json").read_text())["gx_failed"] == 0
    # the same bytes with 2 workers signing shards in parallel
    first = _bytes(out)
    data = yaml.safe_load((repo_copy / "params.yaml").read_text())
    data["dedup"]["parallel"] = {"workers": 2 if data["dedup"]["parallel"]["workers"] == 1 else 1}
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    again = dedup(params=load_params(repo_copy), root=repo_copy)
    assert _bytes(out) == first and again["kept"] == stats["kept"]


def test_clean_gate_failure_publishes_nothing_and_runs_on_an_existing_dask_cluster(repo_copy: Path,
                                                                                      prefect_api: str) -> None:
    from distributed import LocalCluster

    from flows.clean import clean
    from tasks.validation import DataValidationError

    write_raw(repo_copy, _mixed_texts(20), shard_size=10)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        _set(repo_copy, "clean", validation={"min_rows": 1000, "min_language_share": 0.95},
             parallel={"workers": 1, "scheduler_address": cluster.scheduler_address})
        with pytest.raises(DataValidationError, match="expect_table_row_count_to_be_between"):
            clean(params=load_params(repo_copy), root=repo_copy)
    assert not (repo_copy / "data/clean").exists() and not (repo_copy / "metrics/clean.json").exists()
    assert (repo_copy / "reports/gx/clean/index.html").is_file()


def _clean_format(repo: Path, texts: list[str], shard_size: int) -> None:
    """``texts`` as data/clean shards (raw records plus the clean stage's language columns)."""
    import pyarrow as pa

    raw = write_raw(repo, texts, shard_size=shard_size)
    (repo / "data/clean").mkdir(parents=True)
    for shard in sorted(raw.glob("part-*.parquet")):
        table = pq.read_table(shard)
        table = table.append_column("lang", pa.array(["en"] * len(table))).append_column(
            "lang_score", pa.array([1.0] * len(table)))
        pq.write_table(table, repo / "data/clean" / shard.name)


def _hand_written(n: int) -> list[str]:
    """``n`` distinct documents of random dictionary-free words (no generator of ours, no shared 5-gram)."""
    rng = random.Random(11)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [" ".join("".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(rng.randint(40, 90))) + "."
            for _ in range(n)]


def test_dedup_of_a_corpus_without_duplicates_publishes_an_empty_removed_dir(repo_copy: Path,
                                                                             prefect_api: str) -> None:
    """Issue 11 item 5: no duplicate at all used to crash on ``os.replace(kept/removed)``; one shard too."""
    from flows.dedup import dedup

    _clean_format(repo_copy, _hand_written(60), shard_size=1000)  # one shard
    _set(repo_copy, "dedup", validation={"min_rows": 10, "split_tolerance": 0.05},
         splits={"val": 0.1, "test": 0.1, "seed": 0})
    stats = dedup(params=load_params(repo_copy), root=repo_copy)
    out = repo_copy / "data/dedup"
    assert stats["docs_in"] == stats["kept"] == 60 and stats["shards"] == 1
    assert stats["dropped_exact"] == stats["dropped_minhash"] == 0
    assert (out / "removed").is_dir() and pq.read_table(out / "removed").num_rows == 0
    assert pq.read_table(out / "duplicates.parquet").num_rows == 0
    assert sum(pq.read_table(out / s).num_rows for s in ("train", "val", "test")) == 60


def test_dedup_of_one_document_fails_its_gate_with_a_message_not_a_traceback(repo_copy: Path,
                                                                               prefect_api: str) -> None:
    from flows.dedup import dedup
    from tasks.validation import DataValidationError

    _clean_format(repo_copy, _hand_written(1), shard_size=10)
    with pytest.raises(DataValidationError, match="expect_table_row_count_to_be_between") as err:
        dedup(params=load_params(repo_copy), root=repo_copy)  # the default gate wants 50 rows
    assert getattr(err.value, "exit_code", 0) != 0
    assert not (repo_copy / "data/dedup").exists()
