"""The GitHub Actions workflows: valid YAML of the right shape, the triggers docs/operations.md promises, and every step
calling a script or command that exists here with options that script accepts (no GitHub here: the workflows are
checked as files; infra/retrain.sh itself runs for real in tests/e2e/test_retrain.py)."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

WORKFLOWS = REPO / ".github" / "workflows"


def _load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(data, dict) and data.get("jobs"), f"{name}: no jobs"
    # YAML 1.1 reads the key `on` as the boolean true
    data["on"] = data.pop(True, data.get("on"))
    return data


def _steps(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in data["jobs"].values() for step in job["steps"]]


def _commands(step: dict[str, Any]) -> list[list[str]]:
    """The shell command lines of a ``run`` step, split into words (continuations and comments removed)."""
    text = step.get("run", "").replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in text.splitlines() if shlex.split(line, comments=True)]


@pytest.mark.parametrize("name", ["ci.yml", "retrain.yml"])
def test_workflow_shape_and_referenced_files(name: str) -> None:
    data = _load(name)
    assert data["name"] and data["on"]
    for job_name, job in data["jobs"].items():
        assert job["runs-on"] == "ubuntu-latest", job_name
        # Debian with Python 3.11 as the suite was measured on; root in the container for bootstrap's apt-get
        assert re.fullmatch(r"python:3\.11-(bookworm|slim-bookworm)", job["container"]["image"]), job["container"]
        assert isinstance(job["timeout-minutes"], int) and job["timeout-minutes"] >= 60
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), step
            if "uses" in step:
                assert re.fullmatch(r"actions/[a-z-]+@v\d+", step["uses"]), step["uses"]
            for words in _commands(step):
                if words[0] == "bash":
                    script = REPO / words[1]
                    assert script.is_file() and os.access(script, os.X_OK), f"{name} runs a missing {words[1]}"
                else:
                    assert words[0] in {"git", "if", "args=()"} or "=" in words[0], f"{name}: unexpected {words}"


def test_ci_runs_the_readme_test_command() -> None:
    data = _load("ci.yml")
    job = data["jobs"]["test"]
    assert job["timeout-minutes"] == 90
    assert [w for s in job["steps"] for w in _commands(s)][-1] == ["bash", ".ci/run"]
    assert "bash infra/bootstrap.sh && .venv/bin/python -m pytest" in (REPO / ".ci/run").read_text()
    assert "bash .ci/run" in (REPO / "README.md").read_text()
    assert {"push", "pull_request"} <= set(data["on"])


def test_retrain_triggers_concurrency_and_permissions() -> None:
    from prefect.client.schemas.schedules import CronSchedule

    data = _load("retrain.yml")
    on = data["on"]
    assert on["push"]["branches"] == ["main"]
    assert set(on["push"]["paths"]) == {"params.yaml", "dvc.yaml", "dvc.lock", "**/*.dvc"}
    for entry in on["schedule"]:
        CronSchedule(cron=entry["cron"])  # raises on an invalid expression
    inputs = on["workflow_dispatch"]["inputs"]
    assert inputs["force"]["type"] == "boolean" and inputs["from_stage"]["type"] == "string"
    # two retrains never overlap: one group for the whole repository, and a queued run waits, it is not cancelled
    assert data["concurrency"] == {"group": "retrain", "cancel-in-progress": False}
    assert data["permissions"] == {"contents": "write"}
    job = data["jobs"]["retrain"]
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 2


def test_retrain_step_calls_the_script_with_options_it_accepts() -> None:
    from pipelines.retrain import REMOTE_ENDPOINT_ENV, REMOTE_URL_ENV, _parser

    job = _load("retrain.yml")["jobs"]["retrain"]
    step = next(s for s in job["steps"] if "infra/retrain.sh" in s.get("run", ""))
    line = next(words for words in _commands(step) if words[:2] == ["bash", "infra/retrain.sh"])
    args, rest = _parser().parse_known_args(line[2:])
    assert args.push and args.skip_ci and not args.no_commit and rest == ["--", "${args[@]}"]
    # lmforge run's own options, built from the dispatch inputs (passed through env, never pasted into the script)
    assert '--force' in step["run"] and '--from "$FROM_STAGE"' in step["run"] and "${{ inputs" not in step["run"]
    env = step["env"]
    assert env[REMOTE_URL_ENV] == "${{ secrets.DVC_REMOTE_URL }}"
    assert env[REMOTE_ENDPOINT_ENV] == "${{ secrets.DVC_REMOTE_ENDPOINT }}"
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)
    # the step order of the issue: checkout, bootstrap, then the script
    order = [s.get("uses", "") + s.get("run", "") for s in job["steps"]]
    assert order.index(next(o for o in order if "checkout" in o)) < order.index(
        next(o for o in order if "infra/bootstrap.sh" in o)) < order.index(next(o for o in order if "retrain.sh" in o))


def test_retrain_push_trigger_cannot_loop() -> None:
    # the bot commits dvc.lock, a path of the push trigger: its commit must never start another retrain
    job = _load("retrain.yml")["jobs"]["retrain"]
    condition = " ".join(job["if"].split())
    assert "github.event_name != 'push' ||" in condition
    assert "github.event.head_commit.author.name != 'github-actions[bot]'" in condition
    assert "!contains(github.event.head_commit.message, '[skip ci]')" in condition
    setup = next(s for s in job["steps"] if "user.name" in s.get("run", ""))
    assert 'user.name "github-actions[bot]"' in setup["run"]


def test_retrain_commit_message_carries_the_skip_marker_only_when_asked() -> None:
    from pipelines.retrain import Report, commit_message

    report = Report(base="0" * 40, params=["finetune.lr: 0.003 -> 1e-07"],
                    metrics={"distill.student.doc_section.latency_p50_ms": (1.2, 1.3), "collect.kept": (522, 522),
                             "finetune.doc_section.test.accuracy": (0.71, 0.42)},
                    headline={"finetune.doc_section.test.accuracy"},
                    registry=["not promoted: lmforge-doc_section v6 (finetuned): test.macro_f1 0.2 is not > 0.5"])
    skipped = commit_message(report, skip_ci=True)
    assert skipped.splitlines()[0] == "retrain: params finetune.lr [skip ci]"
    lines = skipped.splitlines()
    # the headline number first, then the other changes; unchanged metrics are not named
    assert lines.index("  finetune.doc_section.test.accuracy: 0.71 -> 0.42") < lines.index(
        "  distill.student.doc_section.latency_p50_ms: 1.2 -> 1.3") and "collect.kept" not in skipped
    assert "- finetune.doc_section.test.accuracy: 0.71 -> 0.42" in report.markdown()
    assert "Registry: not promoted: lmforge-doc_section v6" in skipped
    assert "[skip ci]" not in commit_message(report, skip_ci=False)


def test_retrain_usage_errors(tmp_path: Path) -> None:
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "pipelines.retrain", "--push", "--no-commit"], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 2 and "cannot go with --no-commit" in res.stderr
    script = subprocess.run(["bash", str(REPO / "infra/retrain.sh"), "--help"], capture_output=True, text=True,
                            env={**os.environ, "LMFORGE_PYTHON": sys.executable})
    assert script.returncode == 0 and "--no-commit" in script.stdout and "lmforge run" in script.stdout
    missing = subprocess.run(["bash", str(REPO / "infra/retrain.sh")], capture_output=True, text=True,
                             env={**os.environ, "LMFORGE_PYTHON": str(tmp_path / "nope")})
    assert missing.returncode == 2 and "run `bash infra/bootstrap.sh` first" in missing.stderr


def test_retrain_refuses_uncommitted_run_state_and_a_checkout_without_git(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    from tests.conftest import make_repo_copy, subprocess_env

    repo = make_repo_copy(tmp_path / "repo")
    (repo / "metrics").mkdir()
    (repo / "metrics/collect.json").write_text("{}\n")  # a run the user did not commit: the bot would take it along
    env = subprocess_env(LMFORGE_PYTHON=sys.executable)
    res = subprocess.run(["bash", "infra/retrain.sh"], cwd=repo, capture_output=True, text=True, env=env)
    assert res.returncode == 2 and "uncommitted changes" in res.stderr and "metrics/" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and not (repo / "dvc.lock").exists()
    shutil.rmtree(repo / ".git")
    res = subprocess.run(["bash", "infra/retrain.sh", "--no-commit"], cwd=repo, capture_output=True, text=True,
                         env=env)
    assert res.returncode == 2 and "is not a git checkout" in res.stderr and "Traceback" not in res.stderr
