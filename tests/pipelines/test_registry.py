"""The model registry: a real tiny Llama classifier logged into stage runs of a real (sqlite) MLflow store, the gate
that moves ``champion``, manual promotion and rollback, lineage through the MLflow API only, and ``lmforge models``."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipelines import catalog, registry, tracking
from pipelines.config import ParamsError, TrackingParams, parse_params
from pipelines.config.base import Section
from pipelines.config.registry import GateRule, RegistryParams
from pipelines.versioning import digest
from tests.conftest import REPO, _free_port, run_cli

STORE = TrackingParams(uri="sqlite:///mlruns.db", artifact_root="mlartifacts", experiment="lmforge")
GRAPH = """
stages:
  tokenizer: {cmd: tokenizer, deps: [data/dedup], outs: [models/tokenizer]}
  finetune: {cmd: finetune, deps: [models/tokenizer, data/finetune], outs: [models/finetuned]}
"""
# the registering stage here is finetune (the last of the graph), as evaluate will be in the pipeline: real stage
# names, so that the checkout's params.yaml validates for `lmforge models`
LEAST_PARAMS = "collect:\n  sources: [{name: docs, kind: default}]\n"
"""params.yaml with the one section that has no defaults (collect's sources); every other section takes its own."""
NAME = "lmforge-topic"
# the checkouts here hold no code: the CLI runs from this one (its installed copy may be another checkout)


class NoParams(Section):
    """A stage without params (the runs here only carry lineage)."""


@pytest.fixture
def repo(tmp_path: Path, model_dir: Path) -> Iterator[Path]:
    """A git checkout with a two-stage dvc.yaml, its data, and MLflow pointed at its sqlite store."""
    import shutil

    import mlflow

    (tmp_path / "dvc.yaml").write_text(GRAPH)
    for split in ("data/dedup", "data/finetune"):
        (tmp_path / split).mkdir(parents=True)
        (tmp_path / split / "train.jsonl").write_text('{"text": "the cat", "label": "pets"}\n')
    shutil.copytree(model_dir, tmp_path / "models/finetuned/topic")
    shutil.copytree(model_dir.parent / "tokenizer", tmp_path / "models/tokenizer")
    (tmp_path / "params.yaml").write_text(LEAST_PARAMS)
    for cmd in (["init", "-q"], ["add", "dvc.yaml"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm",
                                                       "graph"]):
        subprocess.run(["git", *cmd], cwd=tmp_path, check=True)
    yield tmp_path
    while mlflow.active_run():
        mlflow.end_run()


Candidate = tuple[dict[str, float], dict[str, tuple[float, float]] | None, RegistryParams | None]


def _pipeline(repo: Path, *candidates: Candidate) -> tuple[str, list[tuple[str, registry.Decision]]]:
    """One pipeline run (tokenizer + finetune stage runs); the last stage logs, registers and gates the model once per
    candidate (its metrics, intervals and registry params). Returns the pipeline run id and (version, decision)s."""
    digests = {d: digest(repo / d, repo) for d in ("data/finetune", "models/tokenizer")}
    out = []
    with tracking.pipeline_run(STORE, repo, ["tokenizer", "finetune"]) as parent:
        with tracking.stage_run("tokenizer", NoParams(), root=repo, tracking=STORE):
            pass
        with tracking.stage_run("finetune", NoParams(), root=repo, tracking=STORE):
            for metrics, intervals, params in candidates:
                params = params or RegistryParams()
                version = registry.log_and_register(repo / "models/finetuned/topic", task="topic",
                                                    kind="classification", params=params, metrics=metrics,
                                                    intervals=intervals, digests=digests)
                out.append((version, registry.gate(NAME, version, params=params)))
    return parent, out


def test_gate_first_better_worse_and_not_significant(repo: Path) -> None:
    from mlflow import MlflowClient

    strict = RegistryParams(gates={"classification": GateRule(metric="test.macro_f1", margin=0.01, require_ci=True)})
    f1 = "test.macro_f1"
    _, done = _pipeline(repo, ({f1: 0.60}, {f1: (0.55, 0.65)}, None), ({f1: 0.70}, {f1: (0.66, 0.74)}, strict),
                        ({f1: 0.65}, {f1: (0.60, 0.70)}, strict),
                        # better by the point estimate, but its interval reaches below champion + margin
                        ({f1: 0.74}, {f1: (0.69, 0.79)}, strict),
                        # the same numbers pass when the interval is not asked for
                        ({f1: 0.74}, {f1: (0.69, 0.79)}, None))
    (v1, first), (v2, better), (v3, worse), (v4, unsure), (v5, loose) = done
    assert (first.promoted, first.champion_before, first.champion_after) == (True, None, v1)
    assert better.promoted and better.champion_before == v1 and better.champion_after == v2
    assert not worse.promoted and worse.champion_after == v2
    assert worse.reason.startswith("test.macro_f1 0.65 is not > 0.71 (champion v2 0.7 + margin 0.01)")
    assert not unsure.promoted and unsure.champion_after == v2 and "confidence interval [0.69, 0.79]" in unsure.reason
    assert loose.promoted and loose.champion_before == v2
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v5
    tags = {v: client.get_model_version(NAME, v).tags["lmforge.promotion"] for v in (v1, v3, v4)}
    assert tags[v1].startswith("promoted: first version")
    assert tags[v3].startswith("refused: test.macro_f1 0.65 is not > 0.71")
    assert tags[v4].startswith("refused: ") and "not significantly better than champion v2" in tags[v4]


def test_register_all_gates_in_order_and_never_registers_the_same_bytes_twice(repo: Path) -> None:
    # what the evaluate stage does with a task's models: the first becomes champion, a better one takes over, a re-run
    # of the same bytes moves nothing; the flat metrics say so, with the champion's gate metric
    import json
    import shutil

    student, int8 = repo / "models/student/topic", repo / "models/student/variants/int8/topic"
    for other, note in ((student, "student"), (int8, "int8")):
        shutil.copytree(repo / "models/finetuned/topic", other)
        config = json.loads((other / "config.json").read_text())
        (other / "config.json").write_text(json.dumps({**config, "lmforge_note": note}))
    f1 = "test.macro_f1"
    candidates = {("finetuned", "topic"): registry.Candidate(repo / "models/finetuned/topic", "classification",
                                                             {f1: 0.6}, {}, base="models/base"),
                  ("student", "topic"): registry.Candidate(student, "classification", {f1: 0.7}, {f1: (0.65, 0.75)},
                                                           base="finetuned"),
                  ("int8", "topic"): registry.Candidate(int8, "classification", {f1: 0.69}, {f1: (0.64, 0.74)},
                                                        base="student")}
    with tracking.pipeline_run(STORE, repo, ["finetune"]):
        with tracking.stage_run("finetune", NoParams(), root=repo, tracking=STORE):
            decisions, stats = registry.register_all(candidates, params=RegistryParams(), digests={})
            again, stats_again = registry.register_all(candidates, params=RegistryParams(), digests={})
    assert [(d.model, d.version, d.promoted) for d in decisions.values()] == [(NAME, "1", True), (NAME, "2", True),
                                                                              (NAME, "3", False)]
    assert stats == {"finetuned.topic.promoted": 1, "finetuned.topic.registry_version": 1,
                     "student.topic.promoted": 1, "student.topic.registry_version": 2,
                     "int8.topic.promoted": 0, "int8.topic.registry_version": 3, "topic.champion_version": 2,
                     "topic.champion.test.macro_f1": 0.7}
    assert [(d.version, d.promoted) for d in again.values()] == [("1", False), ("2", False), ("3", False)]
    assert "the same model bytes as v2, the champion" in again["student", "topic"].reason
    assert stats_again == {**stats, "finetuned.topic.promoted": 0, "student.topic.promoted": 0}
    # issue 27 item 3: what each version is, made from what, and its key metric, in `lmforge models` and in the
    # version's description (the first thing the MLflow UI shows of it)
    table = [re.split(" {2,}", line)[:6] for line in catalog.models_table(RegistryParams()).splitlines()]
    assert table == [["MODEL", "VERSION", "ALIASES", "KIND", "BASE", "METRIC"],
                     [NAME, "3", "-", "int8", "student v2", "test.macro_f1 0.69 [0.64, 0.74]"],
                     [NAME, "2", "champion", "student", "finetuned v1", "test.macro_f1 0.7 [0.65, 0.75]"],
                     [NAME, "1", "-", "fine-tuned", "models/base", "test.macro_f1 0.6"]]
    from mlflow import MlflowClient

    assert MlflowClient().get_model_version(NAME, "3").description == (
        "int8-quantized student model of task topic (classification), from student v2. "
        "test.macro_f1 0.69 [0.64, 0.74]")


def test_lower_is_better_and_missing_metric() -> None:
    rule = GateRule(metric="test.perplexity", direction="lower", margin=0.5, require_ci=True)
    ok, why = registry.judge(rule, 10.0, (9.0, 11.4), 12.0, "1")
    assert ok and why.startswith("test.perplexity 10 < 11.5")
    ok, why = registry.judge(rule, 10.0, (9.0, 11.6), 12.0, "1")
    assert not ok and "confidence interval [9, 11.6]" in why
    assert registry.judge(rule, 11.6, (11.0, 11.7), 12.0, "1")[0] is False
    assert registry.judge(rule, None, None, 12.0, "1") == (False, "the candidate has no test.perplexity (log it "
                                                                  "with the model)")


def test_lineage_from_the_champion_through_the_mlflow_api(repo: Path) -> None:
    from mlflow import MlflowClient

    parent, [(version, _)] = _pipeline(repo, ({"test.macro_f1": 0.5}, None, None))
    client = MlflowClient()
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert str(champion.version) == version
    source = client.get_run(champion.run_id)  # the evaluate stage run
    assert source.info.run_name == "finetune" and source.data.tags["lmforge.kind"] == "stage"
    pipeline_id = source.data.tags["mlflow.parentRunId"]
    assert pipeline_id == parent == champion.tags["lmforge.pipeline_run_id"]
    pipeline = client.get_run(pipeline_id)
    assert pipeline.data.tags["lmforge.kind"] == "pipeline"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert pipeline.data.tags["mlflow.source.git.commit"] == head == champion.tags["mlflow.source.git.commit"]
    stages = client.search_runs([pipeline.info.experiment_id], f"tags.mlflow.parentRunId = '{pipeline_id}'")
    inputs = {r.info.run_name: {d.dataset.name: d.dataset.digest for d in r.inputs.dataset_inputs
                                if {(t.key, t.value) for t in d.tags} >= {("mlflow.data.context", "input")}}
              for r in stages}
    md5 = {d: digest(repo / d, repo) for d in ("data/dedup", "data/finetune", "models/tokenizer")}
    assert inputs == {"tokenizer": {"data/dedup": md5["data/dedup"]},
                      "finetune": {"models/tokenizer": md5["models/tokenizer"], "data/finetune": md5["data/finetune"]}}
    assert all(v.endswith(".dir") for v in md5.values())
    assert champion.tags["lmforge.digest.data/finetune"] == md5["data/finetune"]
    assert champion.tags["lmforge.digest.models/tokenizer"] == md5["models/tokenizer"]


def test_logged_model_loads_and_classifies(repo: Path) -> None:
    import mlflow
    import pandas as pd

    _pipeline(repo, ({"test.macro_f1": 0.5}, None, None))
    loaded = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    out = loaded.predict(pd.DataFrame({"text": ["the cat sat.", "a bird flew over the tree."]}))
    assert list(out.columns) == ["label", "score"] and set(out["label"]) <= {"pets", "sky"}
    assert ((out["score"] >= 0.5) & (out["score"] <= 1)).all()  # the winning class of two
    assert [c.name for c in loaded.metadata.get_input_schema().inputs] == ["text"]


def test_sft_model_generates_and_is_gated_lower_is_better(repo: Path, model_dir: Path) -> None:
    import mlflow
    import pandas as pd

    params = RegistryParams(gates={"sft": GateRule(metric="test.perplexity", direction="lower", margin=0.5)})
    with tracking.pipeline_run(STORE, repo, ["finetune"]):
        with tracking.stage_run("finetune", NoParams(), root=repo, tracking=STORE):
            versions = [registry.log_and_register(model_dir.parent / "lm", task="complete", kind="sft", params=params,
                                                  metrics={"test.perplexity": ppl}, digests={})
                        for ppl in (40.0, 39.8, 30.0)]
    decisions = [registry.gate("lmforge-complete", v, params=params) for v in versions]
    assert [d.promoted for d in decisions] == [True, False, True]
    assert decisions[1].reason.startswith("test.perplexity 39.8 is not < 39.5 (champion v1 40 - margin 0.5)")
    loaded = mlflow.pyfunc.load_model("models:/lmforge-complete@champion")
    assert loaded.metadata.run_id == mlflow.MlflowClient().get_model_version("lmforge-complete", versions[2]).run_id
    out = loaded.predict(pd.DataFrame({"text": ["the cat", "the dog"]}), params={"max_new_tokens": 3})
    assert list(out.columns) == ["text"] and len(out) == 2 and all(isinstance(t, str) for t in out["text"])


def test_manual_promote_rollback_and_models_table(repo: Path) -> None:
    from mlflow import MlflowClient

    _, [(v1, _), (v2, second)] = _pipeline(repo, ({"test.macro_f1": 0.5}, None, None),
                                           ({"test.macro_f1": 0.8}, None, None))
    assert second.promoted
    lines = catalog.models_table(RegistryParams()).splitlines()
    assert lines[0].split() == ["MODEL", "VERSION", "ALIASES", "KIND", "BASE", "METRIC", "PROMOTION"]
    # registered without saying what they are (as before the kind and base tags): "-"
    assert lines[1].split()[:8] == [NAME, v2, "champion", "-", "-", "test.macro_f1", "0.8", "promoted:"]
    assert lines[2].split()[:8] == [NAME, v1, "-", "-", "-", "test.macro_f1", "0.5", "promoted:"]
    # rollback: promote the older version by hand, with a reason
    d = registry.promote(NAME, v1, reason="v2 mislabels pets", params=RegistryParams())
    assert (d.champion_before, d.champion_after) == (v2, v1)
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v1
    promotion = client.get_model_version(NAME, v1).tags["lmforge.promotion"]
    assert promotion == f"manual: v2 mislabels pets (champion was v{v2})"
    assert catalog.models_table(RegistryParams()).splitlines()[2].split()[:3] == [NAME, v1, "champion"]
    with pytest.raises(registry.RegistryError, match=f"^{NAME} has no version '9'; see `lmforge models`$"):
        registry.promote(NAME, "9", reason="x", params=RegistryParams())
    with pytest.raises(registry.RegistryError, match="needs a reason"):
        registry.promote(NAME, v2, reason=" ", params=RegistryParams())


@pytest.mark.slow
def test_cli_models_promote_and_errors(repo: Path) -> None:
    _, [(v1, _), (v2, _)] = _pipeline(repo, ({"test.macro_f1": 0.5}, None, None), ({"test.macro_f1": 0.8}, None, None))
    res = run_cli(repo, "models", timeout=120, PYTHONPATH=str(REPO))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[1].split()[:7] == [NAME, v2, "champion", "-", "-", "test.macro_f1", "0.8"]
    res = run_cli(repo, "promote", NAME, v1, "--reason", "roll back", timeout=120, PYTHONPATH=str(REPO))
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{NAME}: champion v{v2} -> v{v1} (manual: roll back (champion was v{v2}))\n"
    res = run_cli(repo, "promote", "lmforge-nope", "1", "--reason", "x", timeout=120, PYTHONPATH=str(REPO))
    assert res.returncode == 2
    assert res.stderr == (f"lmforge: error: no registered model 'lmforge-nope' (registered: {NAME}); "
                          "see `lmforge models`\n")


def test_without_a_store_or_server_exits_2(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text(GRAPH)
    (tmp_path / "params.yaml").write_text(LEAST_PARAMS)
    res = run_cli(tmp_path, "models", timeout=60, PYTHONPATH=str(REPO))
    assert res.returncode == 2 and res.stderr.startswith("lmforge: error: no MLflow store at ")
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "mlruns.db").exists()
    # a tracking server that does not answer: one line, quickly (no retries with back-off)
    (tmp_path / "params.yaml").write_text(f"{LEAST_PARAMS}tracking:\n  uri: http://127.0.0.1:{_free_port()}\n")
    started = time.perf_counter()
    res = run_cli(tmp_path, "promote", NAME, "1", "--reason", "x", timeout=60, PYTHONPATH=str(REPO))
    assert res.returncode == 2 and res.stderr.startswith("lmforge: error: the MLflow store at http://127.0.0.1:")
    assert "does not answer" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert time.perf_counter() - started < 30


def test_registry_section_defaults_and_validation() -> None:
    least = yaml.safe_load(LEAST_PARAMS)
    params = parse_params(least)
    assert params.registry == RegistryParams()
    assert params.registry.gates["sft"].direction == "lower"
    with pytest.raises(ParamsError, match=r"registry\.gates\.sft\.direction"):
        parse_params({**least, "registry": {"gates": {"sft": {"metric": "test.perplexity", "direction": "down"}}}})

