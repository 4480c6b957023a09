"""``-S/--set KEY=VALUE`` on ``lmforge run`` and ``lmforge status`` (issue 27 item 4): validated against the schema
with errors naming the key, written into params.yaml as ``dvc exp run -S`` does (comments and layout kept) so that
dvc.lock records what ran, tagged on the MLflow runs, and explained by ``lmforge status``."""

from __future__ import annotations

import difflib
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines import overrides
from pipelines.config import ParamsError
from pipelines.stage_graph import read_stages
from tests.conftest import REPO, run_cli, subprocess_env


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The repository's params.yaml and dvc.yaml, nothing else (enough to resolve and write overrides)."""
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def test_overrides_are_validated_and_errors_name_the_key(checkout: Path) -> None:
    params, changes = overrides.resolve(checkout, ["finetune.steps=600", "pretrain.lr=3e-4",
                                                   "finetune.tasks[0].weight=2", "evaluate.harness.enabled=false"])
    assert (params.finetune.steps, params.pretrain.lr, params.finetune.tasks[0].weight) == (600, 3e-4, 2)
    assert params.evaluate.harness.enabled is False
    assert [c.show() for c in changes] == ["finetune.steps 150 -> 600", "pretrain.lr 0.001 -> 0.0003",
                                           "finetune.tasks[0].weight (unset) -> 2",
                                           "evaluate.harness.enabled true -> false"]
    cases = {"finetune.stepz=600": r"finetune\.stepz: unknown key",
             "finetune.steps=many": r"with -S finetune\.steps=\"many\": 1 problem\(s\):\n  finetune\.steps: Input "
                                    r"should be a valid integer",
             "finetune.steps=-3": r"finetune\.steps: Input should be greater than",
             "finetune.tasks[7].weight=2": r"^-S finetune\.tasks\[7\]\.weight=\.\.\.: finetune\.tasks is a list of 2 "
                                           r"item\(s\); index it with 0 to 1$",
             "tracking.uri.host=x": r"^-S tracking\.uri\.host=\.\.\.: tracking\.uri is a value",
             "finetune.steps": r"^-S finetune\.steps: expected KEY=VALUE",
             "finetune..steps=1": r"is not a key path"}
    for given, message in cases.items():
        with pytest.raises(ParamsError, match=message):
            overrides.resolve(checkout, [given])
    assert (checkout / "params.yaml").read_bytes() == (REPO / "params.yaml").read_bytes()  # nothing written


def test_apply_changes_only_the_overridden_lines_and_status_explains_them(checkout: Path) -> None:
    before = (checkout / "params.yaml").read_text()
    _, changes = overrides.apply(checkout, ["finetune.steps=600", "evaluate.harness.enabled=false",
                                            "params.yaml:registry.gates.classification.margin=0.02"])
    after = (checkout / "params.yaml").read_text()
    changed = [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), n=0, lineterm="")
               if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    gate = "    classification: {metric: test.macro_f1, direction: higher, margin: %s, require_ci: false}"
    assert changed == [f"-{gate % '0.01'}", f"+{gate % '0.02'}", "-  steps: 150", "+  steps: 600",
                       "-  harness: {enabled: true, limit: null, batch_size: 8}    # limit null: the same documents as "
                       "the lm figures",
                       "+  harness: {enabled: false, limit: null, batch_size: 8}   # limit null: the same documents as "
                       "the lm figures"]
    assert overrides.announce(changes).startswith("lmforge: params.yaml: finetune.steps 150 -> 600; ")
    lines = overrides.explain(checkout)
    assert lines[0].startswith("params.yaml holds overrides set by `lmforge run -S` at ")
    assert lines[1:4] == ["    finetune.steps 150 -> 600", "    evaluate.harness.enabled true -> false",
                          "    registry.gates.classification.margin 0.01 -> 0.02"]
    # what status says with -S: the stages whose params change, then every stage after them
    graph = read_stages(checkout)
    fresh = {stage: [] for stage in graph}
    _, more = overrides.resolve(checkout, ["finetune.steps=700"])
    would = overrides.stale_with(graph, fresh, more)
    assert would["finetune"] == ["-S would change param finetune.steps 600 -> 700"]
    assert would["distill"] == ["upstream stage finetune would run: runs after it when its outputs change"]
    assert would["pretrain"] == [] and would["evaluate"]
    # a key put back by hand is no longer explained
    (checkout / "params.yaml").write_text(after.replace("steps: 600", "steps: 150"))
    assert [line.strip() for line in overrides.explain(checkout)[1:3]] == [
        "evaluate.harness.enabled true -> false", "registry.gates.classification.margin 0.01 -> 0.02"]


def _mlflow_tags(repo: Path, kind: str) -> dict[str, str]:
    with sqlite3.connect(repo / "mlruns.db") as db:
        run = db.execute("SELECT run_uuid FROM tags WHERE key = 'lmforge.kind' AND value = ? ORDER BY rowid DESC "
                         "LIMIT 1", (kind,)).fetchone()[0]
        return dict(db.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run,)).fetchall())


@pytest.mark.slow
def test_run_with_set_records_what_ran_in_dvc_lock_and_mlflow(repo_copy: Path, prefect_api: str) -> None:
    repo = repo_copy
    res = run_cli(repo, "run", "collect", "-S", "collect.sources[0].max_docs=nine")
    assert res.returncode == 2 and "collect.sources[0].max_docs: Input should be a valid integer" in res.stderr
    assert "Traceback" not in res.stderr and not (repo / "dvc.lock").exists()
    res = run_cli(repo, "run", "collect", "-S", "collect.sources[0].max_docs=150", "--set", "collect.seed=7")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("lmforge: params.yaml: collect.sources[0].max_docs (unset) -> 150; collect.seed "
                                 "1234 -> 7 (-S: kept in params.yaml")
    # what ran is what params.yaml says and what dvc.lock records: DVC finds the stage up to date
    params = yaml.safe_load((repo / "params.yaml").read_text())["collect"]
    locked = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["collect"]["params"]["params.yaml"]["collect"]
    assert params["sources"][0]["max_docs"] == locked["sources"][0]["max_docs"] == 150
    assert params["seed"] == locked["seed"] == 7
    dvc = subprocess.run([str(Path(sys.executable).parent / "dvc"), "status", "collect"], cwd=repo,
                         env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert dvc.returncode == 0 and "changed" not in dvc.stdout, dvc.stdout + dvc.stderr
    assert json.loads((repo / "metrics/collect.json").read_text())["kept"] <= 150
    expected = 'collect.sources[0].max_docs=150 collect.seed=7'
    assert _mlflow_tags(repo, "pipeline")["lmforge.overrides"] == expected
    assert _mlflow_tags(repo, "stage")["lmforge.overrides"] == expected
    # status: up to date, the overrides explained; with another -S, what would run and why (nothing written)
    res = run_cli(repo, "status", "collect", "clean")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "collect: up to date" and lines[1] == "clean: stale"
    assert "    collect.sources[0].max_docs (unset) -> 150" in lines and "    collect.seed 1234 -> 7" in lines
    text = (repo / "params.yaml").read_text()
    res = run_cli(repo, "status", "collect", "-S", "collect.seed=8")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[:3] == [
        'with -S collect.seed=8 (not written: `lmforge run -S ...` writes it into params.yaml and runs):',
        "collect: stale", "    -S would change param collect.seed 7 -> 8"]
    assert (repo / "params.yaml").read_text() == text
