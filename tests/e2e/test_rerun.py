"""A finished run run again, as a user does it: `lmforge run --force` reproduces every output byte for byte, a param
change makes its stage and what depends on it stale (`lmforge status` says which param), `dvc repro` runs the stale
stage's flow alone, and the checkout's own DVC remote (.dvc/config) takes the data and gives it back.

On a copy of the session's shared finished run (tests/e2e/conftest.py: all eight stages on the default corpus,
tiny models, every distill variant on), so that these checks cost one re-run, not a first run as well.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli
from tests.e2e.conftest import FinishedRun, lock_md5, lock_outs, run_dvc

pytestmark = pytest.mark.slow


def _set_section(repo: Path, section: str, **values: object) -> None:
    data = yaml.safe_load((repo / "params.yaml").read_text())
    data[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.timeout(2400)  # the first test to ask makes the shared run (minutes on a loaded machine)
def test_forced_rerun_reproduces_then_a_param_makes_its_stages_stale(finished_run: FinishedRun) -> None:
    repo = finished_run.repo
    env = {"PREFECT_API_URL": ""}  # the README path: ephemeral Prefect API, sqlite MLflow under the repo
    (repo / ".dvc/config.local").unlink()  # the retrain's CI remote: this test uses the checkout's own
    outs_first = lock_outs(repo)
    assert len(outs_first) > 10
    st = run_dvc(repo, "status")
    assert st.returncode == 0 and "Data and pipelines are up to date" in st.stdout, st.stdout + st.stderr

    # same inputs, same bytes: a forced re-run reproduces the output hash exactly
    forced = run_cli(repo, "run", "--force", timeout=1200, **env)
    assert forced.returncode == 0, forced.stdout[-4000:] + forced.stderr[-4000:]
    for stage in ("collect", "clean", "dedup", "tokenizer", "pretrain", "finetune", "distill", "evaluate"):
        assert f"{stage}: ran" in forced.stdout, forced.stdout
    # every stage reproduces its output byte for byte, the models included (their timings stay in checkpoints/);
    # only the files that carry this run's measurements (distill's batch-1 latencies, which evaluate reports beside
    # its scores, and the latency axis of the variants plot) may differ
    measured = {"metrics/distill.json", "metrics/evaluate.json", "reports/plots/distill/variants.png"}
    again_outs = lock_outs(repo)
    assert {k: v for k, v in again_outs.items() if k not in measured} == {
        k: v for k, v in outs_first.items() if k not in measured}
    assert measured <= set(again_outs)

    # issue 14: a finetune param makes finetune stale and, through it, distill and evaluate; nothing upstream
    original = (repo / "params.yaml").read_text()
    _set_section(repo, "finetune", lr=0.0002)
    st = run_cli(repo, "status")
    stale = {line.split(":")[0] for line in st.stdout.splitlines() if line.endswith(": stale")}
    assert st.returncode == 0 and stale == {"finetune", "distill", "evaluate"}, st.stdout
    assert "finetune.lr" in st.stdout, st.stdout
    (repo / "params.yaml").write_text(original)

    # a param change: status explains it, and dvc repro (no lmforge) runs the stage's flow alone; evaluate's, because
    # nothing is downstream of it
    _set_section(repo, "evaluate", seed=1)
    st = run_cli(repo, "status")
    assert st.returncode == 0 and "evaluate: stale" in st.stdout and "evaluate.seed" in st.stdout, st.stdout
    assert "collect: up to date" in st.stdout, st.stdout
    rep = run_dvc(repo, "repro", **env)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert "Running stage 'evaluate'" in rep.stdout and "Running stage 'collect'" not in rep.stdout, rep.stdout
    locked = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["evaluate"]["params"]["params.yaml"]
    assert locked["evaluate"]["seed"] == 1
    assert "Data and pipelines are up to date" in run_dvc(repo, "status").stdout

    # the local DVC remote is configured: push, lose the data, pull it back
    assert run_dvc(repo, "push").returncode == 0
    digest_before = lock_md5(repo)
    subprocess.run(["rm", "-rf", str(repo / "data/raw"), str(repo / ".dvc/cache")], check=True)
    pulled = run_dvc(repo, "pull")
    assert pulled.returncode == 0, pulled.stderr
    assert "Data and pipelines are up to date" in run_dvc(repo, "status").stdout
    assert lock_md5(repo) == digest_before
