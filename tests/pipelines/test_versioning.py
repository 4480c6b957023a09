"""The stage graph from dvc.yaml, and DVC digests."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from pipelines.stage_graph import StageGraphError, downstream_closure, read_stages, stage_names, topological_order
from pipelines.versioning import digest
from tests.conftest import BIN, REPO

GRAPH = """
stages:
  c: {cmd: c, deps: [data/b, c.py], outs: [data/c]}
  a: {cmd: a, deps: [a.py], outs: [data/a], metrics: [{m/a.json: {cache: false}}]}
  b: {cmd: b, deps: [data/a/part-1, flows/b.py, tasks/b], params: [b], outs: [data/b]}
  d: {cmd: d, deps: [data/a], outs: [data/d]}
"""


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "dvc.yaml").write_text(text)
    return tmp_path


def test_order_follows_data_not_file_order(tmp_path: Path) -> None:
    stages = read_stages(_write(tmp_path, GRAPH))
    assert stages["a"].outs == ("data/a", "m/a.json")
    assert stages["b"].data_deps == ("data/a/part-1",)
    assert topological_order(stages) == ["a", "b", "c", "d"]
    assert downstream_closure(stages, {"b"}) == {"b", "c"}
    assert downstream_closure(stages, {"a"}) == {"a", "b", "c", "d"}


def test_cycle_is_an_error(tmp_path: Path) -> None:
    text = "stages:\n  x: {cmd: x, deps: [y], outs: [x]}\n  y: {cmd: y, deps: [x], outs: [y]}\n"
    with pytest.raises(StageGraphError, match="cycle"):
        topological_order(read_stages(_write(tmp_path, text)))


def test_repo_graph_is_the_pipeline_in_order() -> None:
    stages = read_stages(REPO)
    assert stage_names(REPO) == ("collect", "clean", "dedup", "tokenizer", "pretrain", "finetune", "distill",
                                 "evaluate")
    assert tuple(topological_order(stages)) == tuple(stages), "dvc.yaml lists the stages in pipeline order"
    for name, spec in stages.items():
        assert spec.cmd == f"python -m flows.{name}"
        # a stage depends on its own params section only; evaluate also on the registry's gate, which it applies, and
        # the tokenizer on pretrain.checkpoint, whose own tokenizer it then packs the corpus with (evaluate reads the
        # checkpoints too, but a changed one re-runs the stage that made models/base or models/finetuned, its deps)
        extra = {"evaluate": ("registry",), "tokenizer": ("pretrain.checkpoint",)}
        assert spec.params == (name, *extra.get(name, ()))
        assert f"flows/{name}.py" in spec.deps
        assert f"pipelines/config/{name}.py" in spec.deps, "the schema's defaults shape the output"


def test_digest_is_what_dvc_records(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_text("alpha\n")
    (tmp_path / "d" / "sub" / "b.bin").write_bytes(bytes(range(256)))
    (tmp_path / "f.txt").write_text("file\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([str(BIN / "dvc"), "add", "-q", "d", "f.txt"], cwd=tmp_path, check=True)
    for name in ("d", "f.txt"):
        recorded = yaml.safe_load((tmp_path / f"{name}.dvc").read_text())["outs"][0]["md5"]
        assert digest(tmp_path / name) == recorded
    assert digest(tmp_path / "d").endswith(".dir")


def test_bytecode_caches_are_not_part_of_a_code_dep(tmp_path: Path) -> None:
    # a package dir dep (tasks/clean) holds __pycache__ as soon as Python imports it with bytecode writing on; DVC
    # and our stage hash must both leave it out, or every interpreter run would make the stage stale
    import shutil

    shutil.copy(REPO / ".dvcignore", tmp_path / ".dvcignore")
    pkg = tmp_path / "tasks" / "clean"
    pkg.mkdir(parents=True)
    (pkg / "shard.py").write_text("X = 1\n")
    before = digest(pkg, tmp_path)
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "shard.cpython-311.pyc").write_bytes(b"\x00bytecode")
    assert digest(pkg, tmp_path) == before
    assert digest(pkg) != before  # without the repo's ignore rules the cache would count


def test_collect_stage_hash_covers_its_source_data(repo_copy: Path, tmp_path: Path) -> None:
    from pipelines.versioning import stage_hash, sync_data_deps

    source = tmp_path / "outside" / "a.jsonl"
    source.parent.mkdir()
    source.write_text('{"text": "one"}\n')
    data = yaml.safe_load((repo_copy / "params.yaml").read_text())
    data["collect"]["sources"] = [{"name": "out", "kind": "files", "paths": [str(source.parent / "*.jsonl")]}]
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert sync_data_deps(repo_copy) == {"collect": [str(source.parent)]}
    assert sync_data_deps(repo_copy) == {}  # in step: dvc.yaml is left alone

    def current() -> str:
        return stage_hash(read_stages(repo_copy)["collect"], repo_copy, {"collect": data["collect"]})

    before = current()
    with source.open("a") as fh:
        fh.write('{"text": "two"}\n')
    assert current() != before  # the resume key changes with the source data


def test_status_reports_downstream_of_a_stale_stage_as_stale(tmp_path: Path) -> None:
    # issue 16 item 5: after tokenizer.vocab_size changed, status said "pretrain: up to date", then run ran it
    from types import SimpleNamespace

    from pipelines.versioning import Versioning

    _write(tmp_path, """
stages:
  first: {cmd: "echo one > a.txt", params: [first], outs: [a.txt]}
  second: {cmd: "cat a.txt > b.txt", deps: [a.txt], outs: [b.txt]}
  third: {cmd: "cat b.txt > c.txt", deps: [b.txt], outs: [c.txt]}
  apart: {cmd: "echo x > x.txt", outs: [x.txt]}
""")
    (tmp_path / "params.yaml").write_text("first: {size: 1}\n")
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "DVC_NO_ANALYTICS": "1", "HOME": str(tmp_path)}
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"], [str(BIN / "dvc"), "repro", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True)
    params = SimpleNamespace()  # no stage here names its inputs in params
    (tmp_path / "params.yaml").write_text("first: {size: 2, more: 3}\n")
    versioning = Versioning(tmp_path, params)
    try:
        stale = versioning.stale_map(["first", "second", "third", "apart"])
    finally:
        versioning.close()
    assert stale["first"] == ["param changed: first.more: (unset) -> 3", "param changed: first.size: 1 -> 2"]
    assert stale["second"] == ["upstream stage first is stale: runs after it when its outputs change"]
    assert stale["third"] == ["upstream stage second is stale: runs after it when its outputs change"]
    assert stale["apart"] == []


def test_status_names_a_changed_dotted_param_key(tmp_path: Path) -> None:
    # the tokenizer stage lists `pretrain.checkpoint` (a key inside another stage's section): DVC records it under
    # that dotted name, and the change is reported by its path, never as unset
    from types import SimpleNamespace

    from pipelines.versioning import Versioning

    _write(tmp_path, """
stages:
  tok: {cmd: "echo one > a.txt", params: [tok, pre.checkpoint], outs: [a.txt]}
""")
    (tmp_path / "params.yaml").write_text("tok: {size: 1}\npre: {steps: 3, checkpoint: {path: a}}\n")
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "DVC_NO_ANALYTICS": "1", "HOME": str(tmp_path)}
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"], [str(BIN / "dvc"), "repro", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True)
    (tmp_path / "params.yaml").write_text("tok: {size: 2}\npre: {steps: 4, checkpoint: {path: b}}\n")
    versioning = Versioning(tmp_path, SimpleNamespace())
    try:
        stale = versioning.stale_map(["tok"])
    finally:
        versioning.close()
    assert stale["tok"] == ["param changed: pre.checkpoint.path: a -> b", "param changed: tok.size: 1 -> 2"]


def _sources(repo: Path, *paths: str) -> None:
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data["collect"]["sources"] = [{"name": "mine", "kind": "files", "paths": list(paths)}]
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.parametrize(("glob", "reaches"), [
    ("data/**/*.jsonl", "data/raw (its own output)"),  # data/ holds every stage's outputs
    ("data/*/*.jsonl", "data/raw (its own output)"),
    ("**/*.jsonl", "data/raw (its own output)"),
    ("data/finetune/*.jsonl", "data/finetune (the output of stage 'finetune', which runs after it)"),
    ("metrics/collect.json", "metrics/collect.json (its own output)"),
])
def test_a_source_that_reaches_into_the_pipelines_outputs_is_refused(repo_copy: Path, glob: str, reaches: str) -> None:
    # seen: with `data/**/*.jsonl` the dep was `data`, which every stage writes into: collect was never up to date
    # again, and the glob read collect's own quarantine.jsonl and the finetune splits as source documents
    from pipelines.config.sources import OutputOverlapError
    from pipelines.versioning import sync_data_deps

    (repo_copy / "data" / "mine").mkdir(parents=True)
    (repo_copy / "data" / "mine" / "a.jsonl").write_text('{"text": "mine"}\n')
    _sources(repo_copy, glob)
    before = (repo_copy / "dvc.yaml").read_text()
    with pytest.raises(OutputOverlapError, match=re.escape(f"reaches into {reaches}")):
        sync_data_deps(repo_copy)
    assert (repo_copy / "dvc.yaml").read_text() == before


def test_a_source_beside_the_outputs_is_its_files_and_one_in_its_own_directory_is_the_directory(
        repo_copy: Path) -> None:
    from pipelines.versioning import sync_data_deps

    (repo_copy / "data" / "mine").mkdir(parents=True)
    (repo_copy / "data" / "mine" / "a.jsonl").write_text('{"text": "mine"}\n')
    (repo_copy / "data" / "extra.jsonl").write_text('{"text": "extra"}\n')
    _sources(repo_copy, "data/mine/**/*.jsonl")
    assert sync_data_deps(repo_copy) == {"collect": ["data/mine"]}  # a new file in data/mine is new data
    # data/ itself also holds data/raw, data/clean...: a dep on it would change with every run; its files are the dep
    _sources(repo_copy, "data/*.jsonl")
    assert sync_data_deps(repo_copy) == {"collect": ["data/extra.jsonl"]}


def test_finetune_may_read_upstream_outputs_but_not_what_runs_after_it(repo_copy: Path) -> None:
    from pipelines.config import load_params
    from pipelines.config.sources import OutputOverlapError

    data = yaml.safe_load((repo_copy / "params.yaml").read_text())
    task = {"name": "t", "type": "classification", "data": [{"kind": "files", "paths": ["data/dedup/train/*.parquet"]}]}
    data["finetune"]["tasks"] = [task]
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert "data/dedup/train" in load_params(repo_copy).finetune.data_deps(repo_copy)  # upstream: a plain input
    task["data"] = [{"kind": "files", "paths": ["models/student/**/*.json"]}]
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(OutputOverlapError, match="models/student \\(the output of stage 'distill'"):
        load_params(repo_copy).finetune.data_deps(repo_copy)


def test_cli_refuses_a_source_that_reaches_into_the_outputs_with_exit_2(repo_copy: Path) -> None:
    from tests.conftest import run_cli

    _sources(repo_copy, "data/**/*.jsonl")
    for args in (("status",), ("run", "collect")):
        res = run_cli(repo_copy, *args, PREFECT_API_URL="")
        assert res.returncode == 2, res.stdout + res.stderr
        assert "reaches into data/raw (its own output)" in res.stderr and "Traceback" not in res.stderr
    assert not (repo_copy / "mlruns.db").exists() and not (repo_copy / "data" / "raw").exists()  # nothing written
