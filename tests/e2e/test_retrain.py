"""CI retraining as .github/workflows/retrain.yml runs it: `bash infra/retrain.sh` in a git checkout of the repo,
a local DVC remote (a directory, configured the way CI passes its secret), the embedded MLflow store, a tiny
configuration of all eight stages. The first run trains everything, registers and promotes the first versions, pushes
the data and commits dvc.lock and metrics/; a remote that does not answer stops the next run at `dvc pull`; a run on a
fresh checkout (no data, no DVC cache) with a worse fine-tuning setting pulls everything back, re-runs finetune,
distill and evaluate only, and its models are not promoted, the summary saying why and what the metrics did.

The first run is the session's shared finished run (tests/e2e/conftest.py makes it with this very command); the
test checks what it did on a copy of it, then runs the next retrains in that copy."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, _free_port, subprocess_env
from tests.e2e.conftest import STAGES, FinishedRun, edit_params, git, retrain

pytestmark = pytest.mark.slow

RERUN = ("finetune", "distill", "evaluate")
TASKS = ("doc_section", "docstring")


def _champions(repo: Path) -> dict[str, str]:
    from mlflow import MlflowClient

    uri = f"sqlite:///{repo / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return {t: str(client.get_model_version_by_alias(f"lmforge-{t}", "champion").version) for t in TASKS}


@pytest.mark.timeout(2400)  # the first test to ask makes the shared run (minutes on a loaded machine)
def test_retrain_promotes_first_then_refuses_a_worse_model(finished_run: FinishedRun) -> None:
    tmp_path, repo, origin = finished_run.root, finished_run.repo, finished_run.origin
    branch = finished_run.record["branch"]
    env = {"LMFORGE_DVC_REMOTE_URL": str(finished_run.dvc_remote)}

    # run 1 (the shared run, made in the original of this copy): empty remote, no dvc.lock, no registry
    summary = tmp_path / "summary-1.md"
    first, first_s = finished_run.output(), finished_run.seconds
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-5000:]
    for stage in STAGES:
        assert f"{stage}: ran" in first.stdout
    text = summary.read_text()
    for task in TASKS:
        assert re.search(rf"- promoted lmforge-{task} v1 \(finetuned\): test\.\w+ - -> [\d.]+ \(first version\)", text)
        assert f"- lmforge-{task}: champion none -> v" in text
    assert _champions(repo)["doc_section"] in re.findall(r"promoted lmforge-doc_section v(\d+)", text)
    assert "| metrics/finetune.json" in text and "doc_section.test.accuracy" in text  # new metrics, no old value
    for step in ("dvc pull", "lmforge run", "dvc push", "dvc metrics diff", "registry", "git commit"):
        assert f"| {step} |" in text
    assert f"| lmforge run | ran {', '.join(STAGES)} |" in text
    # the commit: dvc.lock and metrics only, by the bot, marked so that CI does not run again; pushed to origin
    head = git(repo, "rev-parse", "HEAD")
    assert git(repo, "show", "--format=", "--name-only", "HEAD").splitlines() == [
        "dvc.lock", *[f"metrics/{s}.json" for s in sorted(STAGES)]]
    subject, author = git(repo, "log", "-1", "--format=%s%n%an").splitlines()
    assert subject == "retrain: first recorded run [skip ci]" and author == "lmforge-retrain"
    assert "- first recorded run: " in text
    assert git(repo, "ls-remote", str(origin), f"refs/heads/{branch}").split()[0] == head
    assert head[:12] in text
    assert git(repo, "status", "--porcelain") == ""
    # the remote holds every out
    cloud = subprocess.run([str(BIN / "dvc"), "status", "-c"], cwd=repo, capture_output=True, text=True,
                           env=subprocess_env())
    assert cloud.returncode == 0 and "in sync" in cloud.stdout, cloud.stdout + cloud.stderr
    champions_1 = _champions(repo)

    # a fresh runner: no data, no DVC cache (the MLflow store stays: here it is the team's server)
    for path in ("data", "models", ".dvc/cache", "checkpoints"):
        shutil.rmtree(repo / path)
    # a remote that does not answer: the retrain stops at dvc pull, runs and commits nothing
    broken = retrain(repo, "--summary", str(tmp_path / "summary-broken.md"),
                      LMFORGE_DVC_REMOTE_URL="s3://lmforge-ci/none", AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y",
                      LMFORGE_DVC_REMOTE_ENDPOINT=f"http://127.0.0.1:{_free_port()}", AWS_MAX_ATTEMPTS="1")
    assert broken.returncode == 1, broken.stdout[-3000:] + broken.stderr[-3000:]
    assert "retrain: error in dvc pull: `dvc pull` failed (the remote is unreachable" in broken.stderr
    assert "Traceback" not in broken.stderr and "lmforge run" not in broken.stderr.split("error in dvc pull")[0]
    failed = (tmp_path / "summary-broken.md").read_text()
    assert "**Failed at dvc pull:**" in failed and "failed to connect to s3" in failed
    assert "- not reached (an earlier step failed)" in failed
    assert git(repo, "rev-parse", "HEAD") == head

    # run 2: learning rates far too small: the fine-tuned models and the students distilled from them get worse
    edit_params(repo, "smaller learning rates", finetune={"lr": 1e-7, "head_lr": 1e-7},
                 distill={"lr": 1e-7, "head_lr": 1e-7})
    before = {s: json.loads((repo / f"metrics/{s}.json").read_text()) for s in RERUN}
    summary = tmp_path / "summary-2.md"
    started = time.monotonic()
    second = retrain(repo, "--summary", str(summary), **env)
    second_s = time.monotonic() - started
    assert second.returncode == 0, second.stdout[-5000:] + second.stderr[-5000:]
    assert "pulled" in second.stderr
    for stage in STAGES:
        assert f"{stage}: {'ran' if stage in RERUN else 'up to date'}" in second.stdout
    assert _champions(repo) == champions_1
    text = summary.read_text()
    assert f"| lmforge run | ran {', '.join(RERUN)} |" in text
    assert "- finetune.lr: 0.001 -> 1e-07" in text and "- finetune.head_lr: 0.003 -> 1e-07" in text
    assert "- distill.lr: 0.003 -> 1e-07" in text
    for task in TASKS:
        refused = re.findall(rf"- not promoted: lmforge-{task} v(\d+) \((\w+)\): (.+)", text)
        assert refused and refused[0][1] == "finetuned", text
        assert "is not" in refused[0][2] and f"(champion v{champions_1[task]} " in refused[0][2]
        assert f"- lmforge-{task}: champion unchanged at v{champions_1[task]}" in text
    # dvc metrics diff: the fine-tuned classifier's test accuracy, old and new, in the summary
    after = json.loads((repo / "metrics/finetune.json").read_text())
    old, new = before["finetune"]["doc_section.test.accuracy"], after["doc_section.test.accuracy"]
    assert new < old
    row = next(line for line in text.splitlines() if "| doc_section.test.accuracy " in line)
    path, _, was, now, change = (cell.strip() for cell in row.strip().strip("|").split("|"))
    assert path == "metrics/finetune.json"  # dvc prints 5 significant digits
    assert float(was) == pytest.approx(old, rel=1e-4) and float(now) == pytest.approx(new, rel=1e-4)
    assert float(change) == pytest.approx(new - old, rel=1e-3, abs=1e-5)
    message = git(repo, "log", "-1", "--format=%B")
    assert message.startswith("retrain: params distill.head_lr, distill.lr, finetune.head_lr, finetune.lr")
    assert "[skip ci]" not in message
    assert f"finetune.doc_section.test.accuracy: {old} -> {new}" in message
    assert f"- finetune.doc_section.test.accuracy: {old} -> {new}" in text  # the summary's headline list

    # nothing changed since: nothing runs, nothing is registered or committed, and that is a success
    head = git(repo, "rev-parse", "HEAD")
    summary = tmp_path / "summary-3.md"
    third = retrain(repo, "--summary", str(summary), **env)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert "lmforge: nothing to do" in third.stdout and git(repo, "rev-parse", "HEAD") == head
    text = summary.read_text()
    assert "- no model version registered by this run" in text and "| git commit | nothing changed |" in text
    assert "| lmforge run | nothing to do (every stage up to date) |" in text and "\nno metric changed\n" in text
    print(f"retrain runs: first {first_s:.0f} s, second {second_s:.0f} s")
