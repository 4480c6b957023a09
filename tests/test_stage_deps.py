"""A stage's DVC deps cover every module its flow runs: a code change makes exactly the stages it touches stale.

The import graph (grimp, the engine of import-linter) is followed from ``flows.STAGE``; every module it reaches in
``tasks`` and every params schema module in ``pipelines.config`` must lie in a dep of that stage (a file, or a
directory such as ``tasks/clean``). The package ``pipelines.config`` itself (loading, cross-cutting sections) and
the other pipelines support modules (tracking, artifacts, launch...) run the stage but do not shape its output,
so they are not deps: a change there would re-run every stage for nothing. ``pipelines.config`` imports every stage's
schema (its ``Params`` has a typed section per stage); from there a stage reaches its own schema only, because the
other sections are validated but read by their own stages alone.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grimp
import pytest

from pipelines.stage_graph import StageSpec, read_stages
from tests.conftest import REPO


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
