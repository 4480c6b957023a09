"""The benchmarks still run (their numbers are not asserted: speed lives in the benchmark's output)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, subprocess_env

slow = pytest.mark.slow  # each benchmark runs its sides in subprocesses


@slow
def test_collect_benchmark_runs_both_sides_on_the_same_documents(tmp_path: Path) -> None:
    out = tmp_path / "collect.json"
    res = subprocess.run([sys.executable, "-m", "benchmarks.collect", "--docs", "3000", "--json", str(out)],
                         cwd=REPO, env=subprocess_env(HF_HOME=str(tmp_path / "hf")), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    result = json.loads(out.read_text())
    assert result["good_docs"] == 2970  # every 100th line is broken JSON
    assert result["results"]["ours"]["kept"] == result["results"]["baseline_hf_datasets"]["kept"] == 2970
    assert result["ratio_docs_per_cpu_s"] > 0 and "ratio ours/baseline" in res.stdout


@slow
def test_curation_benchmark_ours_only_runs_both_stages_and_scores_them(tmp_path: Path) -> None:
    out = tmp_path / "curation.json"
    res = subprocess.run([sys.executable, "-m", "benchmarks.curation", "--docs", "300", "--ours-only", "--json",
                          str(out)], cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    result = json.loads(out.read_text())
    assert result["docs"] == 300 and sum(result["kinds"].values()) == 300
    for stage in ("filter", "dedup"):
        run = result["stages"][stage]["lmforge"]
        assert run["cpu_s"] > 0 and run["peak_rss_mb"] > 0 and run["docs_per_cpu_s"] > 0
        assert "datatrove" not in result["stages"][stage]
        assert len(result["memory_lmforge"][stage]["peak_rss_mb"]) == 2
    quality = result["quality"]["lmforge"]
    assert 0 < quality["filter"]["kept"] < 300 and quality["filter"]["junk_dropped"] > 0.9
    assert 0 < quality["dedup"]["removed"] <= quality["dedup"]["should_remove"] + 5
    assert 0 <= quality["dedup"]["precision"] <= 1 and 0 <= quality["dedup"]["recall"] <= 1
    assert result["clean_dedup_docs_per_cpu_s"]["lmforge"] > 0 and "filter_agreement" not in result
    assert "dedup vs truth" in res.stdout


@slow
def test_pretrain_benchmark_runs_both_sides(tmp_path: Path) -> None:
    out = tmp_path / "pretrain.json"
    res = subprocess.run([sys.executable, "-m", "benchmarks.pretrain", "--steps", "8", "--repeats", "1", "--precision",
                          "fp32", "--json", str(out)], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    fp32 = json.loads(out.read_text())["results"]["fp32"]
    assert fp32["plain_adamw"]["tokens_per_s"] > 0 and fp32["ours_zero2"]["tokens_per_s"] > 0
    assert fp32["ratio"] > 0 and fp32["ours_zero2"]["peak_rss_mb"] > 100


@slow
def test_sizing_benchmark_compares_per_character_against_the_params_yaml_configuration(tmp_path: Path) -> None:
    from pipelines.config import load_params
    from tests.tasks.training.corpus import documents, write_split

    for split, (n, seed) in {"train": (300, 0), "val": (60, 1)}.items():
        write_split(tmp_path / "dedup" / split, documents(n, seed))
    out = tmp_path / "sizing.json"
    base = load_params(REPO).tokenizer.vocab_size  # the baseline is params.yaml's tokenizer and model
    res = subprocess.run([sys.executable, "-m", "benchmarks.sizing", "--budget", "2", "--vocabs", "259", "--sizes",
                          "S", "--data", str(tmp_path / "dedup"), "--json", str(out)], cwd=REPO,
                         env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {(r["vocab_asked"], r["size"]): r for r in result["results"]}
    assert result["baseline"]["vocab"] == rows[(base, result["baseline"]["size"])]["vocab"]
    assert rows[(base, result["baseline"]["size"])]["ratio_to_params_yaml"] == 1.0
    small = rows[(259, "S")]
    # bytes: one token per character (ASCII text; EOS counts as one); BPE merges make fewer tokens per character
    assert small["vocab"] == 259 and small["tokens_per_char"] == 1.0
    assert rows[(base, "S")]["tokens_per_char"] < 0.5
    for r in rows.values():  # each model beats a uniform guess over its vocabulary, per character
        assert r["steps"] >= 10 and r["train_seconds"] > 0
        assert 0 < r["bits_per_char"] < math.log2(r["vocab"]) * r["tokens_per_char"]
    assert "<- params.yaml" in res.stdout


@slow
def test_dedup_recall_benchmark_reports_recall_per_jaccard_bucket(tmp_path: Path) -> None:
    out = tmp_path / "dedup_recall.json"
    res = subprocess.run([sys.executable, "-m", "benchmarks.dedup_recall", "--pairs", "40", "--ours-only", "--json",
                          str(out)], cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    result = json.loads(out.read_text())
    ours = result["results"]["lmforge.defaults"]
    assert result["docs"] == 40 * 2 + 40 + 2 * 10 and "datatrove" not in result["results"]
    assert sum(b["pairs"] for b in ours["buckets"]) == 40
    assert ours["buckets"][-1]["recall"] == 1.0  # exact copies (up to case and spacing) are always found
    assert 0 < ours["recall"] <= 1 and ours["precision"] == 1.0
    assert "jaccard" in res.stdout and "lmforge.defaults" in res.stdout


@slow
def test_startup_benchmark_reports_the_fixed_cost_of_each_stage_in_a_run_and_alone(tmp_path: Path) -> None:
    out = tmp_path / "startup.json"
    res = subprocess.run([sys.executable, "-m", "benchmarks.startup", "--docs", "60", "--repeats", "1", "--stages",
                          "collect", "clean", "--json", str(out)], cwd=REPO, env=subprocess_env(), capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(out.read_text())
    assert result["stages"] == ["collect", "clean"] and len(result["repeats"]) == 1
    pipe = result["pipeline"]
    assert pipe["wall_s"] > pipe["startup_s"] > 0 and pipe["cpu_s"] > 0
    assert all(pipe["stage_wall_s"][s] > 0 for s in ("collect", "clean"))
    assert all(result["standalone"][s]["wall_s"] > 0 and result["standalone"][s]["cpu_s"] > 0
               for s in ("collect", "clean"))
    assert "fixed cost per stage" in res.stdout and "mean/stage" in res.stdout
    # the libraries' bare import is measured apart, and the re-run's fixed cost is more than it
    floor = result["floor"]
    assert floor["libraries"] > 0.5 and floor["prefect_server"] > 0.5
    assert result["rerun"]["fixed_cpu_s"] > floor["libraries"] and "import floor" in res.stdout


def test_startup_benchmark_side_by_side_table_pairs_baseline_and_new_cpu_seconds() -> None:
    from benchmarks.startup import side_by_side, summarise

    def repeat(stage_cpu: float, alone_cpu: float) -> dict:
        return {"pipeline": {"wall_s": 30.0, "cpu_s": 25.0, "startup_s": 9.0, "startup_cpu_s": 8.0,
                             "open_tracking_s": 2.0, "open_tracking_cpu_s": 1.5, "exit_s": 1.0,
                             "stage_wall_s": {"collect": 3.0, "clean": 4.0},
                             "stage_cpu_s": {"collect": stage_cpu, "clean": stage_cpu + 1}},
                "standalone": {s: {"wall_s": alone_cpu + 1, "cpu_s": alone_cpu} for s in ("collect", "clean")}}

    stages = ("collect", "clean")
    base = {"label": "old", "summary": summarise([repeat(4.0, 20.0), repeat(6.0, 22.0)], stages)}
    new = {"label": "new", "summary": summarise([repeat(2.0, 7.0)], stages)}
    text = side_by_side(base, new, stages)
    assert text.splitlines()[0].startswith("CPU seconds per stage, old -> new")
    assert "5.00 -> 2.00" in text and "21.00 -> 7.00" in text  # collect: medians of the baseline's two repeats
    assert "6.00 -> 3.00" in text  # clean in lmforge run
    assert "whole lmforge run" in text


@slow
def test_finetune_benchmark_runs_both_sides_on_the_same_batches(tmp_path: Path) -> None:
    out = tmp_path / "finetune.json"
    res = subprocess.run([sys.executable, "-m", "benchmarks.finetune", "--steps", "10", "--repeats", "1",
                          "--speed-only", "--json", str(out)], cwd=REPO, env=subprocess_env(), capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads(out.read_text())
    assert "quality" not in result
    speed = result["speed"]
    plain, ours = speed["results"]["plain_adamw"], speed["results"]["ours_deepspeed"]
    # both sides timed the same steps' non-pad tokens (the plain side checks it drew TaskBatches' schedule)
    assert plain["timed_tokens"] == ours["timed_tokens"] == speed["timed_tokens"] > 0
    assert plain["tokens_per_s"] > 0 and ours["tokens_per_s"] > 0 and speed["ratio"] > 0
    assert plain["peak_rss_mb"] > 100 and ours["peak_rss_mb"] > 100
    # same model, heads, batches and losses: the warm-up steps' losses agree (only dropout masks may differ)
    assert abs(plain["first_window_loss"] - ours["first_window_loss"]) < 0.05
    assert set(speed["tasks"]) == {"topic", "complete"} and "ratio ours/plain" in res.stdout


def _task_dir(root: Path) -> Path:
    """A classification task whose label is a keyword; one test row carries another label's keyword."""
    import random

    from tasks.examples import write_rows

    rng = random.Random(0)
    filler = "the of and to in a is that for it as was with be by on".split()
    keys = {"api": "function", "overview": "tutorial", "reference": "table"}

    def row(i: int, label: str, key_of: str | None = None) -> dict[str, str]:
        words = rng.choices(filler, k=8) + [keys[key_of or label]] * 2
        rng.shuffle(words)
        return {"id": str(i), "text": " ".join(words), "label": label}

    for split, n in (("train", 20), ("val", 6), ("test", 3)):
        rows = [row(i, label) for label in sorted(keys) for i in range(n)]
        if split == "test":
            rows[-1] = row(99, "reference", key_of="api")  # a reference passage that reads like api
        write_rows(root / f"{split}.jsonl", rows)
    return root


def test_finetune_benchmark_tfidf_baseline_scores_the_test_split(tmp_path: Path) -> None:
    from benchmarks.finetune import C_GRID, tfidf_baseline

    result = tfidf_baseline(_task_dir(tmp_path / "doc_section"), ["api", "overview", "reference"])
    assert result["test_examples"] == 9 and result["C"] in C_GRID
    assert result["accuracy"] == pytest.approx(8 / 9)  # all but the misleading row
    # F1 per class: api 2*(3/4)*1/(3/4+1) = 6/7, overview 1, reference 2*1*(2/3)/(1+2/3) = 4/5
    assert result["macro_f1"] == pytest.approx((6 / 7 + 1 + 4 / 5) / 3)
    assert set(result["val_macro_f1_by_C"]) == {str(c) for c in C_GRID}


def test_finetune_benchmark_quality_only_without_a_finetune_run_says_how_to_make_one(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "benchmarks.finetune", "--quality-only", "--checkout", str(tmp_path),
                          "--json", str(tmp_path / "out.json")], cwd=REPO, env=subprocess_env(), capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2 and "lmforge run finetune" in res.stderr and not (tmp_path / "out.json").exists()


def _fake_sdist(path: Path, lines: list[str]) -> Path:
    """A file laid out like the vaderSentiment source distribution, its movie-review file holding ``lines``."""
    import io
    import tarfile

    from benchmarks.sentiment_data import INNER, MEMBER

    def tar_gz(name: str, payload: bytes) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        return buf.getvalue()

    path.write_bytes(tar_gz(INNER, tar_gz(MEMBER, "\n".join(lines).encode())))
    return path


def test_checkpoint_benchmark_data_labels_by_the_rating_sign_and_splits_by_label_with_a_seed(tmp_path: Path) -> None:
    from benchmarks.sentiment_data import label_examples, read_ratings, split_examples

    lines = [f"{i}\t{(-1) ** i * (1 + i % 3) / 2}\tsentence number {i} of the reviews" for i in range(1, 101)]
    lines += ["101\t0.0\ta sentence nobody leans on", "102\t2.5\tsaid twice", "103\t-1.0\tsaid twice", ""]
    rows = read_ratings(_fake_sdist(tmp_path / "vader.tar.gz", lines))
    assert len(rows) == 103 and rows[0] == ("1", "sentence number 1 of the reviews", -1.0)
    examples, dropped = label_examples(rows)
    assert dropped == {"neutral": 1, "repeated_text": 2, "empty": 0}  # both copies of a repeated text go
    assert len(examples) == 100
    assert {e["label"] for e in examples if int(e["id"]) % 2} == {"negative"}  # odd ids were rated below 0
    assert {e["label"] for e in examples if not int(e["id"]) % 2} == {"positive"}
    splits = split_examples(examples, seed=0, limit=None)
    assert {s: len(r) for s, r in splits.items()} == {"train": 80, "val": 10, "test": 10}
    for rows_ in splits.values():  # stratified: half of each split is each label
        assert sum(e["label"] == "positive" for e in rows_) * 2 == len(rows_)
    ids = [e["id"] for r in splits.values() for e in r]
    assert sorted(ids, key=int) == sorted((e["id"] for e in examples), key=int)  # disjoint, nothing lost
    assert split_examples(examples, seed=0, limit=None) == splits
    assert split_examples(examples, seed=1, limit=None)["test"] != splits["test"]
    small = split_examples(examples, seed=0, limit=40)
    assert {s: len(r) for s, r in small.items()} == {"train": 32, "val": 4, "test": 4}


def test_checkpoint_benchmark_refuses_a_source_that_is_not_the_published_sdist(tmp_path: Path) -> None:
    fake = _fake_sdist(tmp_path / "vaderSentiment-3.3.2.tar.gz", ["1\t1.0\tgood"])
    res = subprocess.run([sys.executable, "-m", "benchmarks.checkpoint", "--data-only", "--data", str(tmp_path / "d"),
                          "--source", str(fake)], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and "SHA-256" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "d" / "train.csv").exists()


@slow
def test_checkpoint_benchmark_scores_the_checkpoint_and_tfidf_on_the_same_test_split(tmp_path: Path) -> None:
    # the checkpoint row through `lmforge run finetune` (collect, clean, dedup, finetune: no pretrain) beside TF-IDF;
    # the own-model row adds a pretrain run and is left to the benchmark itself (docs/measurements.md)
    out, work = tmp_path / "checkpoint.json", tmp_path / "work"
    short = ["finetune.steps=6", "finetune.warmup_steps=2", "finetune.eval_every=3", "finetune.checkpoint_every=3",
             "finetune.batch_size=8"]
    res = subprocess.run([sys.executable, "-m", "benchmarks.checkpoint", "--sides", "tfidf", "checkpoint", "--limit",
                          "200", "--work", str(work), "--json", str(out), *(a for s in short for a in ("--set", s))],
                         cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads(out.read_text())
    data, rows = result["data"], result["rows"]
    sizes = {s: sum(n.values()) for s, n in data["splits"].items()}
    assert sizes == {"train": 160, "val": 20, "test": 20} and "MIT" in data["license"]
    assert 0 <= rows["tfidf"]["accuracy"] <= 1 and rows["tfidf"]["test_examples"] == 20
    row = rows["checkpoint"]
    # lmforge kept exactly the benchmark's splits, and its own test figures are those of the exported model
    assert row["lmforge_splits"] == sizes and row["lmforge_quarantined"] == {}
    assert row["test_examples"] == 20 and row["recipe_test"]["examples"] == 20
    assert row["recipe_test"]["accuracy"] == pytest.approx(row["accuracy"])
    assert row["recipe_test"]["macro_f1"] == pytest.approx(row["macro_f1"])
    assert 20e6 < row["params"] < 25e6 and row["checkpoint"]["license"] == "apache-2.0" and row["wall_s"] > 0
    assert "all-MiniLM-L6-v2" in res.stdout and "TF-IDF" in res.stdout


@slow
def test_incremental_benchmark_runs_both_sides_and_compares_their_outputs(tmp_path: Path) -> None:
    out = tmp_path / "incremental.json"
    res = subprocess.run([sys.executable, "-m", "benchmarks.incremental", "--docs", "1000", "--json", str(out)],
                         cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    result = json.loads(out.read_text())
    assert result["identical_outputs"] is True and result["docs_before"] == 1000 and result["docs_new"] == 100
    inc, full = result["results"]["incremental"], result["results"]["full"]
    assert inc["kept"] == full["kept"] > 0 and inc["raw_docs"] == full["raw_docs"] == 1100
    assert result["ratio_cpu"] > 0 and "incremental / full" in res.stdout


@slow
def test_packing_benchmark_trains_the_same_batches_padded_and_packed(tmp_path: Path) -> None:
    out = tmp_path / "packing.json"
    res = subprocess.run([sys.executable, "-m", "benchmarks.packing", "--examples", "40", "--batch", "8", "--repeats",
                          "1", "--json", str(out)], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"single/llama", "single/gpt2", "chat/llama", "chat/gpt2"}
    for r in results.values():
        assert r["examples"] == 40 and r["first_loss_gap_fp32"] < 1e-5  # the sides score the same tokens
        assert r["padded"]["fill"] < r["packed"]["fill"] <= 1 and r["packed"]["tokens_per_s"] > 0
    assert "data/model" in res.stdout and "chat/gpt2" in res.stdout
