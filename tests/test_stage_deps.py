"""A stage's DVC deps cover every module its flow runs and every file it reads: a change makes exactly the stages it
touches stale.

Modules: the import graph (grimp, the engine of import-linter) is followed from ``flows.STAGE``; every module it
reaches in ``tasks`` and every params schema module in ``pipelines.config`` must lie in a dep of that stage (a file,
or a directory such as ``tasks/clean``). The package ``pipelines.config`` itself (loading, cross-cutting sections)
and the other pipelines support modules (tracking, artifacts, launch...) run the stage but do not shape its output,
so they are not deps: a change there would re-run every stage for nothing.

Files: tests/stage_reads.py records what each stage's flow opens and lists while the flow tests (tests/flows) run
it on tiny data, and the conftest fails a test whose stage read a file under the repository that is neither a dep,
an out, nor its own write. The tests here show that check failing on an undeclared read and on a dropped dep.
``pipelines.config`` imports every stage's schema (its ``Params`` has a typed section per stage); from there a stage
reaches its own schema only, because the other sections are validated but read by their own stages alone.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import grimp
import pytest

from pipelines.config import load_params
from pipelines.stage_graph import StageSpec, read_stages
from tests.conftest import REPO
from tests.stage_reads import FlowReads, install, undeclared


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("flows", "tasks", "pipelines", cache_dir=None)


def _file(module: str) -> Path:
    path = REPO / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


CROSS_CUTTING = {"pipelines.config", "pipelines.config.registry"}
"""Sections every stage loads that shape no stage's files (like tracking): the registry's gate acts on MLflow only."""


def _shapes_output(module: str) -> bool:
    return module.startswith("tasks.") or (module.startswith("pipelines.config.") and module not in CROSS_CUTTING)


PARAMS_MODEL = "pipelines.config"
"""The module of the whole params model, which imports the schema module of every stage."""


def reached_by(stage: str, graph: grimp.ImportGraph) -> set[str]:
    """Every module ``flows.STAGE`` imports, directly or not, but through :data:`PARAMS_MODEL` only the stage's own
    schema (``pipelines.config.STAGE``), not the other stages' sections."""
    others = {f"{PARAMS_MODEL}.{s}" for s in read_stages(REPO)} - {f"{PARAMS_MODEL}.{stage}"}
    todo, seen = [f"flows.{stage}"], {f"flows.{stage}"}
    while todo:
        module = todo.pop()
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in seen and not (module == PARAMS_MODEL and imported in others):
                seen.add(imported)
                todo.append(imported)
    return seen


def uncovered(spec: StageSpec, graph: grimp.ImportGraph) -> list[str]:
    """Modules the stage's flow reaches that no dep of the stage covers."""
    flow = f"flows.{spec.name}"
    reached = {m for m in reached_by(spec.name, graph) if _shapes_output(m)} | {flow}
    deps = [(REPO / d).resolve() for d in spec.deps]
    missing = []
    for module in sorted(reached):
        path = _file(module).resolve()
        if not any(path == d or d in path.parents for d in deps):
            missing.append(f"{module} ({path.relative_to(REPO)})")
    return missing


@pytest.mark.parametrize("stage", list(read_stages(REPO)))
def test_every_module_a_stage_runs_is_a_dep(stage: str, graph: grimp.ImportGraph) -> None:
    spec = read_stages(REPO)[stage]
    assert uncovered(spec, graph) == [], f"add these to the {stage} deps in dvc.yaml"
    # and no dep names something that does not exist (a stale entry after a move)
    assert [d for d in spec.deps if d.split("/")[0] in ("flows", "tasks", "pipelines") and
            not (REPO / d).exists()] == []


def test_the_check_fails_when_a_shared_module_is_missing(graph: grimp.ImportGraph) -> None:
    spec = read_stages(REPO)["clean"]
    holed = dataclasses.replace(spec, deps=tuple(d for d in spec.deps if d != "tasks/records.py"))
    assert uncovered(holed, graph) == ["tasks.records (tasks/records.py)"]
    no_schema = dataclasses.replace(spec, deps=tuple(d for d in spec.deps if d != "pipelines/config/clean.py"))
    assert uncovered(no_schema, graph) == ["pipelines.config.clean (pipelines/config/clean.py)"]
    # flows.dedup reads its section as params.dedup: it reaches its schema through the params model only
    dedup = read_stages(REPO)["dedup"]
    no_schema = dataclasses.replace(dedup, deps=tuple(d for d in dedup.deps if d != "pipelines/config/dedup.py"))
    assert uncovered(no_schema, graph) == ["pipelines.config.dedup (pipelines/config/dedup.py)"]


TRAINING_STAGES = ("pretrain", "finetune", "distill")
"""Stages whose recipe lives in the shared tasks/training package (one recipe module each)."""


def test_a_stage_package_is_one_directory_dep() -> None:
    # a module added to a stage's package is covered without editing dvc.yaml
    for name, spec in read_stages(REPO).items():
        if name not in TRAINING_STAGES:
            assert f"tasks/{name}" in spec.deps, name


def test_a_training_stage_lists_its_recipe_not_the_others() -> None:
    # tasks/training holds every recipe: a directory dep would re-run pretrain when the finetune recipe changes
    stages = read_stages(REPO)
    for name in set(TRAINING_STAGES) & set(stages):
        deps = stages[name].deps
        assert "tasks/training" not in deps and f"tasks/training/{name}.py" in deps, name
        others = [f"tasks/training/{o}.py" for o in TRAINING_STAGES if o != name]
        assert not set(others) & set(deps), name


def _run_as_evaluate(root: Path, params: object) -> FlowReads:
    """A Prefect flow named like the evaluate stage that reads what evaluate reads from distill and clean, one file
    nothing declares, and its own output; returns what the recorder saw of it (and forgets it, so that the conftest's
    check after this test does not fail on the planted read)."""
    from prefect import flow

    @flow(name="evaluate", validate_parameters=False)
    def planted(params: object, root: Path) -> None:
        json.loads((root / "metrics/distill.json").read_text())
        json.loads((root / "metrics/clean.json").read_text())
        json.loads((root / "metrics/notes.json").read_text())  # no stage declares it
        sorted((root / "reports/plots/finetune").glob("*.png"))  # a listing: what the old report linked
        (root / "reports/evaluate").mkdir(parents=True)
        (root / "reports/evaluate/index.html").write_text("<p>")
        (root / "reports/evaluate/index.html").read_text()  # its own write
        (root / "metrics/evaluate.json").write_text("{}")
        (root / "metrics/evaluate.json").read_text()  # its out

    recorder = install()
    planted(params=params, root=root)
    [run] = [r for r in recorder.runs.values() if r.root == str(root)]
    recorder.runs.clear()
    return run


@pytest.fixture
def evaluate_root(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for rel in ("dvc.yaml", "params.yaml"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, root / rel)
    for rel in ("metrics/distill.json", "metrics/clean.json", "metrics/notes.json",
                "reports/plots/finetune/learning_curves.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("{}")
    return root


def test_the_read_check_fails_on_an_undeclared_read(evaluate_root: Path, prefect_api: str) -> None:
    # the deps as lmforge keeps them: dvc.yaml's code deps, the data deps from the evaluate section of params
    run = _run_as_evaluate(evaluate_root, load_params(evaluate_root))
    assert run.stage == "evaluate" and ("read", str(evaluate_root / "metrics/notes.json")) in run.events
    assert undeclared(run) == ["metrics/notes.json (read)", "reports/plots/finetune (list)"]


def test_the_read_check_fails_when_a_dep_is_dropped(evaluate_root: Path, prefect_api: str) -> None:
    # dvc.yaml alone (no params: dvc repro's view) without metrics/distill.json, as evaluate's deps were before
    stages = (evaluate_root / "dvc.yaml").read_text()
    assert stages.count("      - metrics/distill.json\n") == 1
    (evaluate_root / "dvc.yaml").write_text(stages.replace("      - metrics/distill.json\n", ""))
    bad = undeclared(_run_as_evaluate(evaluate_root, None))
    assert "metrics/distill.json (read)" in bad and "metrics/clean.json (read)" not in bad
