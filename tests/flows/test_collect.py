"""The collect flow on a mix of every source kind, with every kind of bad record, in a repo copy."""

from __future__ import annotations

import gzip
import json
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.config import load_params
from tests.conftest import run_cli, subprocess_env
from tests.tasks.collect.test_warc import PAGE, SCRIPT_ONLY, conversion, response


def _write_corpus(root: Path) -> None:
    c = root / "corpus"
    (c / "hf").mkdir(parents=True)
    good = [json.dumps({"text": f"jsonl document number {i}"}) for i in range(3)]
    bad = ['{"text": "unterminated', json.dumps({"body": "no text field"}), json.dumps({"text": "   "}),
           json.dumps({"text": 42}), json.dumps(["not", "an", "object"])]
    (c / "a.jsonl").write_bytes(("\n".join(good + bad) + "\n").encode() + b'{"text": "caf\xe9 latin-1"}\n')
    whole = gzip.compress(("\n".join(json.dumps({"text": f"gz line {i} " + "x" * 200}) for i in range(200))).encode())
    (c / "b.jsonl.gz").write_bytes(whole[: len(whole) // 2])  # truncated download
    (c / "c.json").write_text(json.dumps([{"text": "array item one"}, {"text": "array item two"}]))
    pq.write_table(pa.table({"text": ["parquet row a", "parquet row b", None]}), c / "d.parquet")
    (c / "e.txt").write_text("A whole text file is one document.\n")
    (c / "hf" / "train.jsonl").write_text("\n".join(json.dumps({"content": t}) for t in ["hf one", "hf two", ""]))
    (c / "crawl.warc.gz").write_bytes(b"".join(gzip.compress(r) for r in [
        response("http://a.example/", PAGE), response("http://b.example/", SCRIPT_ONLY),
        conversion("http://c.example/", b"plain WET text of a page")]))


@pytest.fixture
def mixed_repo(repo_copy: Path) -> Path:
    _write_corpus(repo_copy)
    data = yaml.safe_load((repo_copy / "params.yaml").read_text())
    data["collect"].update(
        sources=[
            {"name": "stdlib", "kind": "default", "max_docs": 5},
            {"name": "local", "kind": "files", "paths": ["corpus/*.jsonl", "corpus/*.jsonl.gz", "corpus/*.json",
                                                        "corpus/*.parquet", "corpus/*.txt"]},
            {"name": "hub", "kind": "hf", "path": "json", "data_files": ["corpus/hf/*.jsonl"], "text_field": "content"},
            {"name": "cc", "kind": "warc", "paths": ["corpus/*.warc.gz"]},
        ],
        shard_max_records=7,
        validation={"min_rows": 10, "max_rows": 300},
    )
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return repo_copy


def test_collect_every_source_kind_with_quarantine(mixed_repo: Path, prefect_api: str) -> None:
    from flows.collect import collect

    stats = collect(params=load_params(mixed_repo), root=mixed_repo)
    raw = mixed_repo / "data" / "raw"
    rows = [r for p in sorted(raw.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    by_source = Counter(r["source"] for r in rows)
    gz_kept = stats["source.local.kept"] - 3 - 2 - 2 - 1  # jsonl, json array, parquet, txt
    assert by_source == {"stdlib": 5, "local": 8 + gz_kept, "hub": 2, "cc": 2}
    assert 0 < gz_kept < 200  # the truncated gzip gave what it had before the cut
    assert len(list(raw.glob("part-*.parquet"))) == -(-len(rows) // 7)
    assert len({r["id"] for r in rows}) == len(rows)
    web = {r["url"] for r in rows if r["source"] == "cc"}
    assert web == {"http://a.example/", "http://c.example/"}
    assert any(r["path"].endswith("corpus/a.jsonl#L1") for r in rows if r["source"] == "local")

    quarantine = [json.loads(line) for line in (raw / "quarantine.jsonl").read_text().splitlines()]
    reasons = Counter((q["source"], q["reason"]) for q in quarantine)
    assert reasons == {("local", "invalid_json"): 1, ("local", "missing_text"): 2, ("local", "empty_text"): 1,
                       ("local", "non_string_text"): 1, ("local", "not_an_object"): 1, ("local", "undecodable"): 1,
                       ("local", "truncated"): 1, ("hub", "empty_text"): 1, ("cc", "no_text_extracted"): 1}
    assert stats["quarantined"] == sum(reasons.values()) == 10
    assert stats["quarantined_missing_text"] == 2 and stats["quarantined_truncated"] == 1
    assert stats["kept"] == len(rows)

    metrics = json.loads((mixed_repo / "metrics" / "collect.json").read_text())
    assert metrics == stats and stats["gx_expectations"] == 7 and stats["gx_failed"] == 0


def test_missing_source_is_a_clear_error_before_any_output(mixed_repo: Path, prefect_api: str) -> None:
    from flows.collect import collect
    from tasks.collect.items import SourceNotFoundError

    data = yaml.safe_load((mixed_repo / "params.yaml").read_text())
    data["collect"]["sources"].append({"name": "gone", "kind": "files", "paths": ["nowhere/*.jsonl"]})
    (mixed_repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SourceNotFoundError, match="source 'gone': no files match 'nowhere/\\*.jsonl'"):
        collect(params=load_params(mixed_repo), root=mixed_repo)
    assert not (mixed_repo / "data").exists() or not any((mixed_repo / "data").iterdir())
    assert SourceNotFoundError.exit_code == 2


def _mlflow_runs(repo: Path) -> int:
    """How many runs the repo's embedded MLflow store holds (0 when it was never created)."""
    db = repo / "mlruns.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        return int(con.execute("SELECT COUNT(*) FROM runs").fetchone()[0])


@pytest.mark.parametrize("entry", ["lmforge run", "python -m flows.collect"])
def test_a_missing_source_writes_nothing_not_even_mlflow_runs(repo_copy: Path, prefect_api: str, tmp_path: Path,
                                                              entry: str) -> None:
    gone = tmp_path / "elsewhere" / "*.jsonl"  # an absolute path outside the repo
    data = yaml.safe_load((repo_copy / "params.yaml").read_text())
    data["collect"]["sources"].append({"name": "gone", "kind": "files", "paths": [str(gone)]})
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    if entry == "lmforge run":
        res = run_cli(repo_copy, "run", "collect")
    else:
        res = subprocess.run([sys.executable, "-m", "flows.collect"], cwd=repo_copy, env=subprocess_env(),
                             capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert _mlflow_runs(repo_copy) == 0
    assert f"lmforge: error: source 'gone': no files match '{gone}'; fix the paths" in res.stderr
    assert "relative to" not in res.stderr and "Traceback" not in res.stderr
    assert not (repo_copy / "data").exists() or not any((repo_copy / "data").rglob("*"))


def _jsonl(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


def _set_sources(repo: Path, sources: list[dict[str, object]]) -> None:
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["collect"]["sources"] = sources
    data["collect"]["validation"] = {"min_rows": 1}
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def test_hub_sources_say_how_they_are_pinned(repo_copy: Path) -> None:
    _set_sources(repo_copy, [{"name": "wiki", "kind": "hf", "path": "someone/wiki", "revision": "abc123"},
                             {"name": "news", "kind": "hf", "path": "someone/news"}])
    status = run_cli(repo_copy, "status", "collect")
    assert status.returncode == 0, status.stderr
    assert status.stdout == ("collect: stale\n    never run (no entry in dvc.lock)\n"
                             "    source 'wiki': hub dataset someone/wiki: pinned at revision abc123\n"
                             "    source 'news': hub dataset someone/news: unpinned: hub data can change without "
                             "notice (set `revision` to pin it)\n")


def test_changed_source_data_makes_collect_stale(repo_copy: Path, prefect_api: str, tmp_path: Path) -> None:
    inside, outside = repo_copy / "corpus" / "a.jsonl", tmp_path / "outside" / "b.jsonl"
    _jsonl(inside, [f"inside the repo, document {i}" for i in range(3)])
    _jsonl(outside, [f"outside the repo, document {i}" for i in range(3)])
    _set_sources(repo_copy, [{"name": "in", "kind": "files", "paths": ["corpus/*.jsonl"]},
                             {"name": "out", "kind": "files", "paths": [str(outside.parent / "*.jsonl")]}])
    first = run_cli(repo_copy, "run", "collect")
    assert first.returncode == 0, first.stderr
    assert run_cli(repo_copy, "status", "collect").stdout == "collect: up to date\n"
    with outside.open("a") as fh:  # a record appended to a source outside the repository
        fh.write(json.dumps({"text": "a record appended later"}) + "\n")
    stale = run_cli(repo_copy, "status", "collect").stdout
    assert stale.startswith("collect: stale\n") and str(outside.parent) in stale, stale
    again = run_cli(repo_copy, "run", "collect")
    assert again.returncode == 0 and "collect: ran" in again.stdout, again.stderr
    raw = repo_copy / "data" / "raw"
    rows = [r for p in sorted(raw.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert "a record appended later" in {r["text"] for r in rows}
    # the sources are deps in dvc.yaml itself: `dvc status` alone sees a new file in the source's directory
    deps = yaml.safe_load((repo_copy / "dvc.yaml").read_text())["stages"]["collect"]["deps"]
    assert deps[-2:] == [str(outside.parent), "corpus"] and "flows/collect.py" in deps
    _jsonl(repo_copy / "corpus" / "new.jsonl", ["a new file in the source's directory"])
    dvc = subprocess.run([str(Path(sys.executable).parent / "dvc"), "status", "collect"], cwd=repo_copy,
                         env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert "modified:" in dvc.stdout and "corpus" in dvc.stdout, dvc.stdout + dvc.stderr
    assert run_cli(repo_copy, "status", "collect").stdout.startswith("collect: stale\n")


def test_one_document_one_shard_nothing_quarantined(repo_copy: Path, prefect_api: str) -> None:
    from flows.collect import collect
    from tests.tasks.collect.test_warc import wget_record

    (repo_copy / "crawl").mkdir()
    (repo_copy / "crawl" / "one.warc.gz").write_bytes(gzip.compress(wget_record(PAGE)))
    data = yaml.safe_load((repo_copy / "params.yaml").read_text())
    data["collect"].update(sources=[{"name": "one", "kind": "warc", "paths": ["crawl/*.warc.gz"]}],
                           validation={"min_rows": 1})
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    stats = collect(params=load_params(repo_copy), root=repo_copy)
    raw = repo_copy / "data" / "raw"
    assert [p.name for p in sorted(raw.glob("part-*.parquet"))] == ["part-00000.parquet"]
    rows = pq.read_table(raw / "part-00000.parquet").to_pylist()
    assert [(r["url"], r["text"]) for r in rows] == [("http://127.0.0.1:18777/index.html",
                                                      "The quick brown fox jumps over the lazy dog.")]
    assert (raw / "quarantine.jsonl").read_text() == ""
    assert stats["kept"] == 1 and stats["quarantined"] == 0 and stats["shards"] == 1 and stats["gx_failed"] == 0


def _stage_run_tags(repo: Path, stage: str) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns.db'}")
    exp = client.get_experiment_by_name("lmforge")
    (run,) = [r for r in client.search_runs([exp.experiment_id]) if r.info.run_name == stage]
    return dict(run.data.tags)


@pytest.mark.parametrize("api", ["none", "in params.yaml"])
def test_collect_alone_runs_as_a_prefect_flow_only_where_an_api_is_configured(repo_copy: Path, prefect_api: str,
                                                                              api: str) -> None:
    """``python -m flows.X`` (the dvc.yaml cmd) without a Prefect API runs the stage function without the Prefect
    engine (no ephemeral API is started for one stage); with an API, here named only in params.yaml, the stage is a
    flow run on it and its id tags the MLflow run."""
    _jsonl(repo_copy / "corpus" / "a.jsonl", ["one document", "another document"])
    _set_sources(repo_copy, [{"name": "a", "kind": "files", "paths": ["corpus/*.jsonl"]}])
    if api != "none":
        data = yaml.safe_load((repo_copy / "params.yaml").read_text())
        data["orchestration"] = {"prefect_api_url": prefect_api}
        (repo_copy / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    res = subprocess.run([sys.executable, "-m", "flows.collect"], cwd=repo_copy, env=subprocess_env(PREFECT_API_URL=""),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads((repo_copy / "metrics" / "collect.json").read_text())["kept"] == 2
    assert (repo_copy / "reports" / "gx" / "collect" / "index.html").is_file()
    tags = _stage_run_tags(repo_copy, "collect")
    assert len(tags["lmforge.dvc_stage_hash"]) == 32 and "mlflow.source.git.commit" in tags
    if api == "none":
        assert "Starting temporary server" not in res.stdout + res.stderr
        assert not (repo_copy / ".prefect" / "prefect.db").exists()
        assert "lmforge.prefect_flow_run_id" not in tags
        assert "without a flow run id" not in res.stderr  # Prefect's API log handler stays quiet
    else:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            run = client.read_flow_run(tags["lmforge.prefect_flow_run_id"])
            assert client.read_flow(run.flow_id).name == "collect"
            assert run.state is not None and run.state.is_completed()
