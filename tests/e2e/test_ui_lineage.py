"""Lineage as a person sees it: headless Chromium (Debian's) driving `lmforge ui` after a whole pipeline run.

The session's shared finished run (tests/e2e/conftest.py: a tiny configuration of all eight stages, run while
`lmforge ui --prefect` served the checkout's Prefect database, so evaluate registered models and the gate named a
champion) is copied; then `lmforge ui` serves the copy's MLflow store on 127.0.0.1 and the browser, which may reach
nothing else, opens the experiment, expands the pipeline's parent run to its nested stage runs, opens the parent
and one stage run (its dataset inputs and outputs with their DVC digests, the git commit, the parent), the stage's
Data Docs in MLflow's artifact viewer, and the model registry: the champion version of a registered model, followed
to the run that logged it; then `lmforge ui --prefect` on the copy's Prefect database shows the pipeline's flow run
and its stage subflow runs. Every step asserts on visible text and leaves a screenshot in ``reports/ui/`` of the
repository copy (and in ``$LMFORGE_UI_SCREENSHOTS`` when set).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser import copy_screenshots, network_loads, offline_page, require_chromium
from tests.e2e.conftest import STAGES, FinishedRun, prefect_api, serving

pytestmark = pytest.mark.slow

TIMEOUT_MS = 90_000  # a React page on a busy 2-core machine; every wait is for a selector, never a sleep


def _truth(repo: Path) -> dict[str, Any]:
    """What the store holds (read with MLflow's client): what the pages must show."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{repo / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("lmforge")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("lmforge.kind") == "pipeline")
    stages = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(stages) == set(STAGES)
    dedup = stages["dedup"]
    datasets = {d.dataset.name: (d.dataset.digest, next(t.value for t in d.tags if t.key == "mlflow.data.context"))
                for d in dedup.inputs.dataset_inputs}
    model = "lmforge-doc_section"
    champion = client.get_model_version_by_alias(model, "champion")
    source = client.get_run(champion.run_id)
    assert source.data.tags["mlflow.parentRunId"] == parent.info.run_id  # the model was logged by a stage run
    return {"exp": exp.experiment_id, "parent": parent, "stages": stages, "dedup": dedup, "datasets": datasets,
            "model": model, "champion": champion, "source": source}


@pytest.mark.timeout(2400)  # the first test to ask makes the shared run (minutes on a loaded machine)
def test_lineage_in_the_mlflow_ui(finished_run: FinishedRun) -> None:
    require_chromium()
    repo = finished_run.repo
    shots = repo / "reports" / "ui"
    # `lmforge ui --prefect` was started before the run, on the checkout's Prefect database (it created it): the run
    # recorded its flow runs through its own ephemeral API into the database that server made and served, while it
    # served it (so a run after `lmforge ui --prefect` works), and that server showed them once the run had ended
    started = finished_run.record["ui_started"]
    assert f"Prefect UI for the flow runs in {repo / '.prefect' / 'prefect.db'} (no `lmforge run`" in started
    res = finished_run.output()
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    print(f"pipeline (the shared run): {finished_run.seconds:.0f} s")
    for stage in STAGES:
        assert f"{stage}: ran" in res.stdout
    served = finished_run.record["served_during_run"]
    assert served["lmforge"] == ["COMPLETED"] and all(served[s] == ["COMPLETED"] for s in STAGES), served
    truth = _truth(repo)
    # the commit the stages ran at: the one before the retrain's own commit of dvc.lock and metrics/
    assert subprocess.run(["git", "log", "-1", "--format=%an"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip() == "lmforge-retrain"
    head = subprocess.run(["git", "rev-parse", "HEAD~1"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()
    dedup = truth["dedup"]
    assert dedup.data.tags["mlflow.source.git.commit"] == head
    assert {"data/clean", "data/dedup"} <= set(truth["datasets"])
    # `lmforge ui --prefect` on this copy's Prefect database serves the browser below
    with serving(repo, "--prefect", log=repo.parent / "lmforge-ui-prefect.log", health="/api/health") as prefect:
        # every report the run wrote (each stage's Data Docs, the evaluation report) is static and offline
        pages = sorted((repo / "reports" / "gx").rglob("*.html")) + [repo / "reports" / "evaluate" / "index.html"]
        assert {p.relative_to(repo / "reports" / "gx").parts[0] for p in pages[:-1]} >= {"collect", "clean",
                                                                                         "dedup", "finetune"}
        for page_file in pages:
            assert network_loads(page_file.read_text(encoding="utf-8")) == [], page_file

        shots.mkdir(parents=True, exist_ok=True)
        try:
            with serving(repo, log=shots / "lmforge-ui.log", health="/health") as base:
                t1 = time.monotonic()
                with offline_page(viewport=(1600, 1100)) as (page, log):
                    page.set_default_timeout(TIMEOUT_MS)
                    # MLflow 3 lays announcements over its pages (a "Detect Issues" tour on the experiment's GenAI
                    # overview, the "new Model Registry UI" on the registry): close them as a person would
                    page.add_locator_handler(page.get_by_role("button", name="Got it", exact=True),
                                             lambda b: b.click())
                    page.add_locator_handler(page.get_by_role("dialog").filter(has_text="Model Registry UI"),
                                             lambda dialog: page.keyboard.press("Escape"))
                    _experiment_and_parent(page, base, truth, shots)
                    _stage_run(page, truth, head, shots)
                    _data_docs_in_artifact_viewer(page, base, truth, shots)
                    _champion_to_its_run(page, truth, shots)
                    print(f"browser, MLflow: {time.monotonic() - t1:.0f} s")
                    t2 = time.monotonic()
                    _flow_runs_in_the_prefect_ui(page, prefect, truth, shots)
                    print(f"browser, Prefect: {time.monotonic() - t2:.0f} s")
                    # neither UI needed anything beyond 127.0.0.1
                    assert log.blocked == [], log.blocked
                    assert log.page_errors == [], log.page_errors
        finally:
            copy_screenshots(shots)
    assert [p.name for p in sorted(shots.glob("*.png"))] == [
        "01-experiment-runs.png", "02-nested-stage-runs.png", "03-pipeline-run.png", "04-stage-run-dedup.png",
        "05-dedup-datasets.png", "06-collect-data-docs-in-mlflow.png", "07-model-registry.png",
        "08-champion-version.png", "09-champion-source-run.png", "prefect-01-flow-runs.png",
        "prefect-02-pipeline-flow-run.png", "prefect-03-stage-subflow-runs.png"]


def _about_panel(page: Any) -> Any:
    """The run page's "About this run" panel (run id, status, parent or child runs, source, datasets)."""
    heading = page.get_by_text("About this run", exact=True).first
    heading.wait_for()
    return heading.locator("xpath=..")


def _about(page: Any) -> str:
    return str(_about_panel(page).inner_text())


def _experiment_and_parent(page: Any, base: str, truth: dict[str, Any], shots: Path) -> None:
    parent = truth["parent"]
    page.goto(f"{base}/#/experiments/{truth['exp']}")
    # MLflow 3 opens an experiment in its GenAI view; runs are under "Model training"
    toggle = page.get_by_text("Model training", exact=True).first
    toggle.wait_for()
    toggle.click()
    row = page.get_by_role("row").filter(has_text=parent.info.run_name).first
    row.wait_for()
    page.screenshot(path=str(shots / "01-experiment-runs.png"))
    # the parent row folds its nested stage runs: unfold it
    row.locator('[col-id="attributes.`Run Name`"] button').first.click()
    grid = page.get_by_role("grid").first
    for stage in STAGES:
        grid.get_by_role("link", name=stage, exact=True).first.wait_for()
    page.screenshot(path=str(shots / "02-nested-stage-runs.png"))

    row.get_by_role("link", name=parent.info.run_name).first.click()
    page.wait_for_url(re.compile(f"/runs/{parent.info.run_id}"))
    panel = _about_panel(page)
    for stage in STAGES:  # "Child runs": a link to each stage run (they load after the panel)
        panel.get_by_role("link", name=stage, exact=True).first.wait_for()
    about = _about(page)
    assert parent.info.run_id in about and "Child runs" in about
    assert re.search(r"lmforge.kind\s*:?\s*pipeline", page.inner_text("body"))
    page.screenshot(path=str(shots / "03-pipeline-run.png"), full_page=True)


def _stage_run(page: Any, truth: dict[str, Any], head: str, shots: Path) -> None:
    dedup, parent = truth["dedup"], truth["parent"]
    # follow the parent's "Child runs" link to the dedup stage run
    page.get_by_role("link", name="dedup", exact=True).first.click()
    page.wait_for_url(re.compile(f"/runs/{dedup.info.run_id}"))
    # the first dataset, "NAME (DIGEST)", once the run's inputs have loaded
    page.get_by_text(re.compile(r"^\S+ \([0-9a-f]{32}(\.dir)?\)$")).first.wait_for()
    about = _about(page)
    assert dedup.info.run_id in about
    assert "Parent run" in about and parent.info.run_name in about
    assert head[:7] in about  # the Source: the git commit the stage ran at
    body = page.inner_text("body")
    assert "lmforge.dvc_stage_hash" in body and dedup.data.tags["lmforge.dvc_stage_hash"] in body
    # the datasets: the first is listed, the others behind "+N"; each with its DVC digest and its role
    datasets = truth["datasets"]
    shown = [f"{name} ({digest})" for name, (digest, _) in datasets.items() if f"{name} ({digest})" in body]
    assert shown, body
    page.screenshot(path=str(shots / "04-stage-run-dedup.png"), full_page=True)
    more = page.get_by_text(re.compile(r"^\+\d+$")).first
    more.click()
    popup = page.get_by_role("dialog").filter(has_text="data/dedup").first
    popup.wait_for()
    listed = popup.inner_text() + body
    for name, (digest, context) in datasets.items():  # each with its role: input or output
        assert re.search(re.escape(f"{name} ({digest})") + rf"\s*{context}", listed, re.I), (name, listed)
    page.screenshot(path=str(shots / "05-dedup-datasets.png"))
    page.keyboard.press("Escape")


def _data_docs_in_artifact_viewer(page: Any, base: str, truth: dict[str, Any], shots: Path) -> None:
    collect = truth["stages"]["collect"]
    page.goto(f"{base}/#/experiments/{truth['exp']}/runs/{collect.info.run_id}/artifacts/data_docs/index.html")
    frame = page.frame_locator("iframe.mlflow-html-iframe")
    row = frame.locator("table tbody tr", has_text="collect").first
    row.wait_for()  # the index's table, in MLflow's sandboxed viewer with no network
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row.inner_text())
    page.screenshot(path=str(shots / "06-collect-data-docs-in-mlflow.png"))


def _champion_to_its_run(page: Any, truth: dict[str, Any], shots: Path) -> None:
    model, champion, source = truth["model"], truth["champion"], truth["source"]
    page.get_by_text("Model training", exact=True).first.click()
    page.get_by_role("link", name="Model registry").first.click()  # the left navigation of the training view
    row = page.get_by_role("row").filter(has_text=model).first
    row.wait_for()
    assert re.search(rf"champion\s*:?\s*Version {champion.version}\b", row.inner_text()), row.inner_text()
    page.screenshot(path=str(shots / "07-model-registry.png"))
    row.get_by_role("link", name=model, exact=True).click()
    page.wait_for_url(re.compile(f"/models/{model}$"))
    page.get_by_role("link", name=f"Version {champion.version}", exact=True).first.click()
    page.wait_for_url(re.compile(f"/models/{model}/versions/{champion.version}$"))
    page.get_by_text("Source Run").first.wait_for()
    body = page.inner_text("body")
    assert re.search(r"Aliases\s*:?\s*@\s*champion", body), body[:2000]
    assert "lmforge.promotion" in body and "promoted" in body
    assert re.search(rf"Source Run\s*:?\s*{re.escape(source.info.run_name)}", body)
    page.screenshot(path=str(shots / "08-champion-version.png"), full_page=True)
    page.get_by_role("link", name=source.info.run_name, exact=True).first.click()
    page.wait_for_url(re.compile(f"/runs/{source.info.run_id}"))
    about = _about(page)
    assert source.info.run_id in about and "Parent run" in about
    assert truth["parent"].info.run_name in about  # the run that logged the model is a stage of the pipeline run
    page.screenshot(path=str(shots / "09-champion-source-run.png"), full_page=True)


def _flow_runs_in_the_prefect_ui(page: Any, base: str, truth: dict[str, Any], shots: Path) -> None:
    """`lmforge ui --prefect`: the pipeline's flow run (the one the MLflow parent run names) Completed on the runs
    page, its page, and its stage subflow runs, each Completed."""
    flow_run_id = truth["parent"].data.tags["lmforge.prefect_flow_run_id"]
    # what the server holds (its REST API): the pipeline flow run and one subflow run per stage, named by its flow
    run = prefect_api(base, f"/flow_runs/{flow_run_id}")
    assert run["state_type"] == "COMPLETED" and prefect_api(base, f"/flows/{run['flow_id']}")["name"] == "lmforge"
    subflows = prefect_api(base, "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [flow_run_id]}}})
    flows = {f["id"]: f["name"] for f in prefect_api(base, "/flows/filter", {
        "flows": {"id": {"any_": sorted({r["flow_id"] for r in subflows})}}})}
    stage_runs = {flows[r["flow_id"]]: r for r in subflows}
    assert set(STAGES) <= set(stage_runs) and {stage_runs[s]["state_type"] for s in STAGES} == {"COMPLETED"}

    page.set_viewport_size({"width": 1600, "height": 1500})  # the eight subflow runs in one screenshot
    page.goto(f"{base}/runs")
    row = page.locator(".flow-run-list-item").filter(has=page.get_by_role("link", name=run["name"], exact=True))
    row.get_by_text("lmforge", exact=True).wait_for()  # its flow's name loads after the row
    assert re.search(rf"^lmforge\s+{re.escape(run['name'])}\s+Completed\b", row.inner_text()), row.inner_text()
    page.screenshot(path=str(shots / "prefect-01-flow-runs.png"))
    row.get_by_role("link", name=run["name"], exact=True).click()
    page.wait_for_url(re.compile(f"/runs/flow-run/{flow_run_id}"))
    heading = page.locator("header.page-heading-flow-run")
    heading.get_by_text("lmforge", exact=True).wait_for()  # its flow, once loaded
    text = heading.inner_text()
    assert re.search(rf"{re.escape(run['name'])}\s+Completed\b.*\sFlow\s+lmforge\b", text, re.S), text
    page.screenshot(path=str(shots / "prefect-02-pipeline-flow-run.png"))
    page.get_by_text("Subflow Runs", exact=True).click()
    for stage in STAGES:  # "STAGE > RUN NAME", Completed
        sub = page.locator(".flow-run-list-item").filter(
            has=page.get_by_role("link", name=stage_runs[stage]["name"], exact=True))
        sub.get_by_text(stage, exact=True).wait_for()
        assert re.search(rf"^{stage}\s+{re.escape(stage_runs[stage]['name'])}\s+Completed\b", sub.inner_text())
    page.screenshot(path=str(shots / "prefect-03-stage-subflow-runs.png"), full_page=True)
