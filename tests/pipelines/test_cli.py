"""The lmforge command line: stage selection, errors, the MLflow UI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from pipelines.stage_graph import StageGraphError, plan_run, stage_names
from tests.conftest import REPO, _free_port, run_cli, subprocess_env

GRAPH = """
stages:
  a: {cmd: a, deps: [a.py], outs: [data/a]}
  b: {cmd: b, deps: [data/a], outs: [data/b]}
  c: {cmd: c, deps: [data/b], outs: [data/c]}
  x: {cmd: x, deps: [x.py], outs: [data/x]}
"""


@pytest.fixture
def graph_root(tmp_path: Path) -> Path:
    (tmp_path / "dvc.yaml").write_text(GRAPH)
    return tmp_path


def test_plan_all_named_forced_and_from(graph_root: Path) -> None:
    assert plan_run(graph_root, [], False, None) == (["a", "b", "c", "x"], [])
    assert plan_run(graph_root, [], True, None) == (["a", "b", "c", "x"], ["a", "b", "c", "x"])
    # a named stage brings its upstream stages along (they run only if stale)
    assert plan_run(graph_root, ["c"], False, None) == (["a", "b", "c"], [])
    assert plan_run(graph_root, ["c"], True, None) == (["a", "b", "c"], ["c"])
    # --from forces the stage and everything downstream of it
    assert plan_run(graph_root, [], False, "b") == (["a", "b", "c"], ["b", "c"])


def test_a_checkpoint_for_finetune_takes_pretrain_out_of_its_plan(repo_copy: Path) -> None:
    """finetune.checkpoint replaces models/base: `lmforge run finetune` plans from the deps params name now."""
    from pipelines.config import load_params
    from pipelines.versioning import sync_data_deps

    assert "pretrain" in plan_run(repo_copy, ["finetune"], False, None)[0]
    (repo_copy / "hf" / "bert").mkdir(parents=True)
    data = yaml.safe_load((repo_copy / "params.yaml").read_text())
    data["finetune"].update(checkpoint={"path": "hf/bert"},
                            tasks=[{"name": "t", "type": "classification", "data": [{"kind": "default"}]}])
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert sync_data_deps(repo_copy, load_params(repo_copy))["finetune"][:2] == ["data/dedup", "hf/bert"]
    assert plan_run(repo_copy, ["finetune"], False, None)[0] == ["collect", "clean", "dedup", "finetune"]


def test_unknown_stage_is_an_error(graph_root: Path) -> None:
    with pytest.raises(StageGraphError, match="unknown stage\\(s\\): nope; stages are: a, b, c, x"):
        plan_run(graph_root, ["nope"], False, None)


def test_cli_unknown_stage_exits_2(repo_copy: Path) -> None:
    res = run_cli(repo_copy, "run", "nope")
    assert res.returncode == 2 and "unknown stage(s): nope" in res.stderr and "Traceback" not in res.stderr


def test_status_before_any_run(repo_copy: Path) -> None:
    res = run_cli(repo_copy, "status")
    assert res.returncode == 0
    assert res.stdout == "".join(f"{s}: stale\n    never run (no entry in dvc.lock)\n" for s in stage_names(repo_copy))


@pytest.mark.slow
def test_missing_source_is_one_clear_error(repo_copy: Path, prefect_api: str) -> None:
    data = yaml.safe_load((repo_copy / "params.yaml").read_text())
    data["collect"]["sources"].insert(0, {"name": "mine", "kind": "files", "paths": ["corpus/*.jsonl"]})
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(data))
    res = run_cli(repo_copy, "run")
    assert res.returncode == 2, res.stderr
    assert "lmforge: error: source 'mine': no files match 'corpus/*.jsonl'" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert not (repo_copy / "dvc.lock").exists() and not (repo_copy / "data" / "raw").exists()


@pytest.mark.slow
def test_ui_serves_the_embedded_store_on_loopback(repo_copy: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "ui", "--port", str(port)], cwd=repo_copy,
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        assert "MLflow UI for sqlite:///" in proc.stdout.readline()
        assert proc.stdout.readline().strip() == f"http://127.0.0.1:{port}"
        deadline, status = time.monotonic() + 120, None
        while time.monotonic() < deadline and status != 200:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    status = r.status
            except OSError:
                time.sleep(0.5)
        assert status == 200
        assert (repo_copy / "mlruns.db").is_file()
        # a second UI on the same port: a clear error and exit 2, not a URL then "Address already in use" and 0
        busy = run_cli(repo_copy, "ui", "--port", str(port))
        assert busy.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in busy.stderr, busy.stderr
        assert "http://" not in busy.stdout and "Traceback" not in busy.stderr
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_schedule_serves_a_cron_deployment(repo_copy: Path, prefect_api: str) -> None:
    bad = run_cli(repo_copy, "schedule", "--cron", "every day")
    assert bad.returncode == 2 and "not a valid cron expression" in bad.stderr
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "schedule", "--cron", "0 3 * * *", "--name",
                             "nightly-test"], cwd=repo_copy, env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        from prefect.client.orchestration import get_client

        deadline, deployment = time.monotonic() + 120, None
        while time.monotonic() < deadline and deployment is None:
            with get_client(sync_client=True) as client:
                found = [d for d in client.read_deployments() if d.name == "nightly-test"]
            deployment = found[0] if found else None
            time.sleep(1)
        assert deployment is not None, "the deployment never appeared"
        assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * *"]
        assert deployment.parameters == {"root": str(repo_copy), "force": False}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_run_ends_with_a_summary_of_results_outputs_and_the_mlflow_run(tmp_path: Path) -> None:
    # issue 16 item 1: the run ended with "collect: ran ... pretrain: ran" and nothing a user could act on
    import json
    import shutil

    from pipelines.cli import summary_table

    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/pretrain.json").write_text(json.dumps({"final_val_perplexity": 70.93, "params": 1054208,
                                                                "unigram_val_perplexity": 581.2}))
    (tmp_path / "metrics/finetune.json").write_text(json.dumps({"doc_section.test.accuracy": 0.8, "steps_run": 150}))
    text = summary_table(tmp_path, ["pretrain", "finetune"], {
        "pretrain": "ran in 2 s (re-exported the finished checkpoint, nothing trained)",
        "finetune": "ran in 1 min 50 s",
        "mlflow_run_id": "abc123"})
    lines = text.splitlines()
    assert lines[0].startswith("pretrain: ran in 2 s (re-exported") and lines[0].endswith(
        "final_val_perplexity 70.93, unigram_val_perplexity 581.2")
    assert lines[1].strip() == "-> models/base"
    assert lines[2].startswith("finetune: ran in 1 min 50 s") and lines[2].endswith("doc_section.test.accuracy 0.8")
    assert lines[3].strip() == "-> data/finetune models/finetuned"
    assert lines[4] == "MLflow: pipeline run abc123 (nested stage runs under it); see it with `lmforge ui`"


def test_tee_console_copies_this_process_and_its_children_to_the_log(tmp_path: Path, capfd) -> None:
    import os
    import subprocess
    import sys

    from pipelines.process import tee_console

    log = tmp_path / "logs" / "run.log"
    with tee_console(log):
        os.write(1, b"from stdout\n")  # what print() does outside pytest's capture, which swaps sys.stdout
        os.write(2, b"from stderr\n")
        subprocess.run([sys.executable, "-c", "print('from a child')"], check=True)
    seen = capfd.readouterr()
    assert seen.out.splitlines() == ["from stdout", "from a child"] and seen.err == "from stderr\n"
    assert sorted(log.read_text().splitlines()) == ["from a child", "from stderr", "from stdout"]
    os.write(1, b"after\n")  # the console is back, and the log no longer grows
    assert "after" not in log.read_text()


def test_a_sigterm_whose_exception_was_lost_still_ends_the_run_with_130() -> None:
    # Prefect's SIGTERM handler raised inside a weakref callback once: the exception was dropped and the run exited 0.
    # Simulate the loss with a handler that does nothing; the wakeup fd still tells the pipeline at its next check.
    script = ("import os, signal, sys\n"
              "from pipelines.process import raise_if_terminated\n"
              "from pipelines.runner import guarded\n"
              "def body():\n"
              "    signal.signal(signal.SIGTERM, lambda *a: None)\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n"
              "    raise_if_terminated()\n"
              "    return 0\n"
              "sys.exit(guarded(body))\n")
    res = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=subprocess_env(), capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 130 and "lmforge: terminated" in res.stderr, res.stderr


def test_stage_wall_time_reads_in_seconds_then_minutes() -> None:
    from pipelines.pipeline import duration

    assert [duration(x) for x in (0.2, 42.4, 59.6, 60.0, 451.2)] == ["0 s", "42 s", "1 min 0 s", "1 min 0 s",
                                                                     "7 min 31 s"]


def test_an_empty_prefect_api_url_means_no_server_and_the_notice_keeps_one_line(tmp_path: Path, monkeypatch) -> None:
    import logging

    from pipelines.runner import _NoUserTracebacks, prepare

    monkeypatch.setenv("PREFECT_API_URL", "")
    monkeypatch.chdir(Path.cwd())  # prepare() changes into the checkout; restored afterwards
    saved = dict(os.environ)
    try:
        prepare(Path(__file__).resolve().parents[2])
        assert "PREFECT_API_URL" not in os.environ  # left empty, Prefect's events worker stops at its first event
    finally:
        os.environ.clear()
        os.environ.update(saved)
    record = logging.LogRecord("prefect", logging.INFO, __file__, 1, "Starting temporary server on http://x:1\n"
                               "See https://www.prefect.io/docs/v3/concepts/server#how-to-guides for more.", (), None)
    assert _NoUserTracebacks().filter(record) and record.getMessage() == "Starting temporary server on http://x:1"
