"""Serving a registered model as the README says (issue 27 item 2): its `lmforge predict` line and its Python snippet,
run verbatim in a checkout whose MLflow store holds a real tiny ``lmforge-doc_section`` classifier; neither leaves
a stray ``mlflow.db`` (MLflow 3's own default store) behind, and that file is git-ignored anyway."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from pipelines import registry, tracking
from pipelines.config import TrackingParams
from pipelines.config.base import Section
from pipelines.config.registry import RegistryParams
from tests.conftest import REPO, run_cli, subprocess_env

STORE = TrackingParams(uri="sqlite:///mlruns.db", artifact_root="mlartifacts", experiment="lmforge")
GRAPH = "stages:\n  finetune: {cmd: finetune, deps: [data/finetune], outs: [models/finetuned]}\n"
LEAST_PARAMS = "collect:\n  sources: [{name: docs, kind: default}]\n"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


class NoParams(Section):
    """A stage without params."""


def user_env(**extra: str) -> dict[str, str]:
    """A user's environment: none of the store addresses this test process gave MLflow (set_tracking_uri exports
    them), so that a snippet finds the store only by what it says itself."""
    return {k: v for k, v in subprocess_env(**extra).items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}


def readme_block(language: str, containing: str) -> str:
    """The README's one fenced ``language`` block that contains ``containing``, as written."""
    blocks = [body for lang, body in FENCE.findall((REPO / "README.md").read_text(encoding="utf-8"))
              if lang == language and containing in body]
    assert len(blocks) == 1, f"the README has {len(blocks)} {language} blocks with {containing!r}"
    return blocks[0]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    """A checkout (git, params, .venv) whose store holds two versions of lmforge-doc_section, v1 the champion."""
    import mlflow

    repo = tmp_path_factory.mktemp("served")
    (repo / "dvc.yaml").write_text(GRAPH)
    (repo / "params.yaml").write_text(LEAST_PARAMS)
    (repo / "data/finetune").mkdir(parents=True)
    (repo / "data/finetune/train.jsonl").write_text('{"text": "the cat", "label": "pets"}\n')
    (repo / ".venv").symlink_to(REPO / ".venv")
    (repo / ".gitignore").write_text((REPO / ".gitignore").read_text())
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    params = RegistryParams()
    try:
        with tracking.pipeline_run(STORE, repo, ["finetune"]):
            with tracking.stage_run("finetune", NoParams(), root=repo, tracking=STORE):
                for f1 in (0.6, 0.5):  # the second is refused: v1 stays champion
                    version = registry.log_and_register(model_dir, task="doc_section", kind="classification",
                                                        params=params, metrics={"test.macro_f1": f1}, digests={})
                    registry.gate("lmforge-doc_section", version, params=params)
    finally:
        while mlflow.active_run():
            mlflow.end_run()
    assert not (repo / "mlflow.db").exists()
    return repo


def test_the_readme_predict_command_runs_as_written(served: Path) -> None:
    [line] = [c for c in readme_block("bash", "lmforge predict").splitlines() if "lmforge predict" in c]
    # the working tree's code, not the installed copy's (the venv's console script imports `pipelines`)
    res = subprocess.run(["bash", "-c", line], cwd=served, capture_output=True, text=True, timeout=300,
                         env=user_env(PYTHONPATH=str(REPO)))
    assert res.returncode == 0, res.stderr
    head, *rows = res.stdout.splitlines()
    assert head == "lmforge-doc_section v1 (champion)"
    [(label, score, text)] = [r.split("\t") for r in rows]
    assert label in {"pets", "sky"} and 0.5 <= float(score) <= 1 and text.startswith("Return the absolute value")
    assert not (served / "mlflow.db").exists()


def test_the_readme_python_snippet_runs_as_written(served: Path) -> None:
    snippet = readme_block("python", "mlflow.pyfunc.load_model")
    res = subprocess.run([".venv/bin/python", "-c", snippet], cwd=served, capture_output=True, text=True,
                         timeout=300, env=user_env())
    assert res.returncode == 0, res.stderr
    header, row = res.stdout.strip().splitlines()
    assert header.split() == ["label", "score"] and row.split()[1] in {"pets", "sky"}
    assert not (served / "mlflow.db").exists()


def test_without_the_tracking_uri_mlflow_makes_a_stray_store_and_git_ignores_it(served: Path) -> None:
    # what the README warns about: MLflow 3's default store, a new mlflow.db here, knows no lmforge model
    code = ("import mlflow\ntry:\n    mlflow.pyfunc.load_model('models:/lmforge-doc_section@champion')\n"
            "except Exception as err:\n    print(type(err).__name__, err)\n")
    res = subprocess.run([".venv/bin/python", "-c", code], cwd=served, capture_output=True, text=True, timeout=300,
                         env=user_env())
    assert "not found" in res.stdout and (served / "mlflow.db").exists()
    ignored = subprocess.run(["git", "status", "--porcelain", "--ignored", "mlflow.db"], cwd=served,
                             capture_output=True, text=True, check=True).stdout
    assert ignored == "!! mlflow.db\n"
    (served / "mlflow.db").unlink()


def test_predict_a_version_as_json_and_errors_name_what_is_registered(served: Path) -> None:
    res = run_cli(served, "predict", "doc_section", "--version", "2", "--json", "a cat", "the sky", timeout=300,
                  PYTHONPATH=str(REPO))
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["a cat", "the sky"] and all(r["label"] in {"pets", "sky"} for r in rows)
    res = run_cli(served, "predict", "topic", "a cat", timeout=120, PYTHONPATH=str(REPO))
    assert res.returncode == 2
    assert res.stderr.startswith("lmforge: error: no registered model 'lmforge-topic' (registered: "
                                 "lmforge-doc_section)") and len(res.stderr.splitlines()) == 1
    res = run_cli(served, "predict", "doc_section", "--version", "7", "a cat", timeout=120, PYTHONPATH=str(REPO))
    assert (res.returncode, res.stderr) == (2, "lmforge: error: lmforge-doc_section has no version '7'; see "
                                               "`lmforge models`\n")
