"""One finished tiny eight-stage run on the local stores, made once per session and shared by the e2e tests that
inspect a finished run (CI retraining, lineage in the UIs, re-runs and DVC): each test gets a copy of its own.

Every eight-stage run costs minutes on 2 cores, most of it fixed (processes, Prefect, MLflow, validation), so the
tests that only need one finished run share it instead of each running its own. The run is made the way CI makes
it (``bash infra/retrain.sh --push --skip-ci``: a git checkout with an origin, a directory as its DVC remote, the
embedded sqlite MLflow store) while ``lmforge ui --prefect`` serves the checkout's Prefect database. Under xdist
the workers share the session's temporary directory: the first worker that needs the run makes it under a file
lock, the others wait for it and then copy it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from tests.conftest import (
    BIN,
    _free_port,
    _group_members,
    make_repo_copy,
    stop_process_group,
    subprocess_env,
    wait_http,
)
from tests.flows.test_distill import STUDENT
from tests.flows.test_evaluate import SMALL
from tests.flows.test_finetune import TUNE
from tests.flows.test_pretrain import TINY

STAGES = ("collect", "clean", "dedup", "tokenizer", "pretrain", "finetune", "distill", "evaluate")
GIT_ID = {"GIT_AUTHOR_NAME": "dev", "GIT_AUTHOR_EMAIL": "dev@lmforge.invalid", "GIT_COMMITTER_NAME": "dev",
          "GIT_COMMITTER_EMAIL": "dev@lmforge.invalid"}
_TEXT_FILES = ("run.json", "repo/.git/config", "repo/.dvc/config.local")
"""Files of a finished run that name its directory (the origin, the DVC remote, the recorded output)."""
_DATABASES = ("repo/mlruns.db", "repo/.prefect/prefect.db")
"""Stores that name it too (MLflow's artifact locations are absolute file URIs)."""


def git(repo: Path, *args: str) -> str:
    """``git ARGS`` in ``repo`` as the developer; fails the test on an error; returns stdout, stripped."""
    res = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, env=subprocess_env(**GIT_ID))
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def edit_params(repo: Path, message: str, **sections: dict[str, Any]) -> None:
    """Change params.yaml and commit it, as the push that triggers a retrain does."""
    data = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in sections.items():
        data[section] = {**data[section], **values}
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    git(repo, "commit", "-qam", message)


def tiny(repo: Path) -> None:
    """Every stage on the default corpus, the models tiny, every distill variant on: a run in a few minutes."""
    # 100 + 80 steps: the first run's models must be clearly better than those of a run with far too small learning
    # rates (macro-F1 about 0.35 against about 0.28 for always answering the majority class), or the retrain gate's
    # refusal would be luck; the variants (pruning with recovery, int8) on, so that a forced re-run checks them too
    edit_params(repo, "tiny models", pretrain={**TINY, "context": 256, "steps": 100, "eval_every": 50,
                                               "checkpoint_every": 50},
                finetune={**TUNE, "max_length": 256, "steps": 80, "batch_size": 16, "lr": 0.001, "head_lr": 0.003,
                          "warmup_steps": 10, "eval_every": 20, "checkpoint_every": 20},
                distill={**STUDENT, "max_length": 256}, evaluate={**SMALL, "harness": {"enabled": False}})


def retrain(repo: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``bash infra/retrain.sh ARGS`` in ``repo`` as a fresh CI runner starts it (no git identity of its own)."""
    empty = repo.parent / "empty-gitconfig"
    empty.touch()
    run_env = subprocess_env(LMFORGE_PYTHON=str(BIN / "python"), PREFECT_API_URL="", GIT_CONFIG_GLOBAL=str(empty),
                             GIT_CONFIG_NOSYSTEM="1", **env)
    for key in GIT_ID:
        run_env.pop(key, None)
    return subprocess.run(["bash", "infra/retrain.sh", *args], cwd=repo, env=run_env, capture_output=True, text=True,
                          timeout=1800)


@contextmanager
def serving(repo: Path, *args: str, log: Path, health: str) -> Iterator[str]:
    """``lmforge ui ARGS`` on a free port of 127.0.0.1, in its own process group like a person's terminal (its
    server's workers stop with it); yields its base URL once ``health`` answers, and checks nothing of it survives."""
    port = _free_port()
    with log.open("w") as out:
        ui = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "ui", *args, "--port", str(port)], cwd=repo,
                              env=subprocess_env(PREFECT_API_URL=""), stdout=out, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        base, t0 = f"http://127.0.0.1:{port}", time.monotonic()
        command = " ".join(["lmforge ui", *args])
        wait_http(f"{base}{health}", ui, log, what=f"`{command}`")
        print(f"`{command}` serving after {time.monotonic() - t0:.0f} s")
        yield base
        # the server and its workers: in a process group of their own, which `lmforge ui` stops when it is stopped
        started = psutil.Process(ui.pid).children(recursive=True)
        assert started
    finally:
        stop_process_group(ui)  # SIGTERM, as a person's terminal or a service manager sends it
    gone, alive = psutil.wait_procs(started, timeout=30)
    assert alive == [] and _group_members(ui.pid) == []  # no survivor of `lmforge ui`


def prefect_api(base: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """A call to the REST API of the Prefect server at ``base``."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{base}/api{path}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _served_flow_runs(base: str) -> dict[str, list[str]]:
    """Flow name -> the states of its flow runs, as the Prefect server at ``base`` serves them."""
    runs = prefect_api(base, "/flow_runs/filter", {})
    names = {f["id"]: f["name"] for f in prefect_api(base, "/flows/filter", {})}
    served: dict[str, list[str]] = {}
    for run in runs:
        served.setdefault(names[run["flow_id"]], []).append(run["state_type"])
    return served


def _build(base: Path) -> None:
    """The finished run in ``base``: ``repo/`` (run, committed, pushed), ``origin.git``, ``dvc-remote``, the
    retrain's summary ``summary-1.md`` and ``run.json`` (its output, and what the Prefect UI served meanwhile)."""
    repo = make_repo_copy(base / "repo")
    branch = git(repo, "symbolic-ref", "--short", "HEAD")
    subprocess.run(["git", "init", "-q", "--bare", str(base / "origin.git")], check=True)
    git(repo, "remote", "add", "origin", str(base / "origin.git"))
    (base / "dvc-remote").mkdir()
    tiny(repo)
    git(repo, "push", "-q", "origin", branch)
    ui_log = base / "lmforge-ui-prefect.log"
    # `lmforge ui --prefect` before any run, on the checkout's Prefect database (it creates it): the run records its
    # flow runs through its own ephemeral API into the database this server made and serves, while it serves it
    with serving(repo, "--prefect", log=ui_log, health="/api/health") as prefect:
        ui_started = ui_log.read_text()
        t0 = time.monotonic()
        res = retrain(repo, "--push", "--skip-ci", "--summary", str(base / "summary-1.md"),
                      LMFORGE_DVC_REMOTE_URL=str(base / "dvc-remote"))
        seconds = time.monotonic() - t0
        served = _served_flow_runs(prefect) if res.returncode == 0 else {}
    (base / "run.json").write_text(json.dumps({
        "base": str(base), "branch": branch, "returncode": res.returncode, "stdout": res.stdout, "stderr": res.stderr,
        "seconds": seconds, "ui_started": ui_started, "served_during_run": served}))


@dataclass(frozen=True)
class FinishedRun:
    """A test's own copy of the finished run (see the module's docstring)."""

    root: Path
    record: dict[str, Any]

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def origin(self) -> Path:
        return self.root / "origin.git"

    @property
    def dvc_remote(self) -> Path:
        return self.root / "dvc-remote"

    @property
    def seconds(self) -> float:
        """How long the retrain that made it took."""
        return float(self.record["seconds"])

    def output(self) -> subprocess.CompletedProcess[str]:
        """The retrain's exit status and output."""
        r = self.record
        return subprocess.CompletedProcess(["bash", "infra/retrain.sh"], r["returncode"], r["stdout"], r["stderr"])


def _relocate(src: Path, dest: Path) -> None:
    """Point what the copy ``dest`` of ``src`` names of ``src`` at ``dest`` (text files and the sqlite stores)."""
    old, new = str(src), str(dest)
    for rel in _TEXT_FILES:
        if (path := dest / rel).is_file():
            path.write_text(path.read_text().replace(old, new))
    for rel in _DATABASES:
        if not (dest / rel).is_file():
            continue
        with sqlite3.connect(dest / rel) as db:
            tables = [r[0] for r in db.execute("select name from sqlite_master where type = 'table'")]
            for table in tables:
                for col in [r[1] for r in db.execute(f'pragma table_info("{table}")')]:
                    db.execute(f'update "{table}" set "{col}" = replace("{col}", ?, ?) '
                               f'where typeof("{col}") = \'text\' and instr("{col}", ?) > 0', (old, new, old))


@pytest.fixture(scope="session")
def _finished_run_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The session's finished run, made by the first worker that asks (the others wait on the lock)."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    shared = shared if worker_id == "master" else shared.parent  # xdist: the workers' common directory
    base, failed = shared / "finished-run", shared / "finished-run.failed"
    with FileLock(str(shared / "finished-run.lock")):
        if not (base / "run.json").is_file() and not failed.is_file():
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir()
            try:
                _build(base)
            except BaseException as exc:  # told once; the other workers fail on it instead of trying again
                failed.write_text(f"{type(exc).__name__}: {exc}")
                raise
    if failed.is_file():
        pytest.fail(f"the shared finished run could not be made: {failed.read_text()[-3000:]}")
    return base


@pytest.fixture
def finished_run(_finished_run_dir: Path, tmp_path: Path) -> FinishedRun:
    """A copy of the session's finished run of its own (``cp -a``: the DVC cache, stores and git history too)."""
    record = json.loads((_finished_run_dir / "run.json").read_text())
    run = _finished_run_dir / "repo"
    assert record["returncode"] == 0, record["stdout"][-5000:] + record["stderr"][-5000:]
    assert (run / "dvc.lock").is_file()
    dest = tmp_path / "run"
    subprocess.run(["cp", "-a", str(_finished_run_dir), str(dest)], check=True)
    shutil.rmtree(dest / "repo/.dvc/tmp", ignore_errors=True)  # DVC's state of the original's files (by inode)
    _relocate(_finished_run_dir, dest)
    return FinishedRun(dest, json.loads((dest / "run.json").read_text()))


def lock_md5(repo: Path, out: str = "data/raw", stage: str = "collect") -> str:
    """The hash ``dvc.lock`` records for one out of one stage."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return str(next(o["md5"] for o in lock["stages"][stage]["outs"] if o["path"] == out))


def lock_outs(repo: Path) -> dict[str, str]:
    """Every out ``dvc.lock`` records, with its hash."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for st in lock["stages"].values() for o in st["outs"]}


def run_dvc(repo: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``dvc ARGS`` in ``repo`` with the tests' environment."""
    return subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=subprocess_env(**env), capture_output=True,
                          text=True, timeout=600)
