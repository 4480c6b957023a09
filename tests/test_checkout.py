"""The checkout after a run, and the test fixtures' independence from it.

What a run leaves in the checkout must not leak into the tests' repository copies (issue 11, item 1), must
not show up in ``git status`` except what the user commits (item 2), and the suite's Prefect server must not
outlive it (item 4).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psutil
import pytest

import tests.conftest as conftest
from pipelines.stage_graph import read_stages, topological_order
from pipelines.versioning import Versioning
from tests.conftest import _group_members, make_repo_copy, prefect_server

RUN_STATE = ("mlruns.db", ".prefect/prefect.db", "mlartifacts/1/a.txt", "checkpoints/base/step-1.pt",
             "reports/gx/collect/index.html", ".dvc-storage/ab/cdef", ".dvc/cache/files/md5/ab/cd")


def _fake_run_outputs(repo: Path) -> None:
    """What a run of every stage leaves behind: each dvc.yaml out (data, models, metrics, plots) and run state."""
    for spec in read_stages(repo).values():
        for out in spec.outs:
            path = repo / out
            if path.suffix:  # a file out: metrics/X.json, a plot
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("{}\n")
            else:
                (path / "sub").mkdir(parents=True, exist_ok=True)
                (path / "part-00000.parquet").write_bytes(b"fake shard")
                (path / "sub" / "weights.bin").write_bytes(b"fake weights")
    for rel in RUN_STATE:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(b"state")
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args], cwd=repo,
                          capture_output=True, text=True, check=True).stdout


def test_repo_copy_holds_source_only_whatever_was_run_in_the_checkout(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_repo_copy(tmp_path / "checkout")
    _fake_run_outputs(src)
    # the README tells users to commit dvc.lock and metrics/ after a run: tracked, they must stay out too
    _git(src, "add", "-f", "dvc.lock", "metrics")
    _git(src, "commit", "-q", "-m", "run results")
    # a developer's work in progress: a new module not yet added, an edited tracked file, a local data source
    (src / "tasks" / "wip_module.py").write_text("X = 1\n")
    (src / "params.yaml").write_text((src / "params.yaml").read_text() + "# edited\n")
    (src / "corpus").mkdir()
    (src / "corpus" / "mine.jsonl").write_text('{"text": "hello"}\n')
    monkeypatch.setattr(conftest, "REPO", src)

    copy = make_repo_copy(tmp_path / "copy")

    left = sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file() and ".git" not in p.parts)
    leaked = [p for p in left if p == "dvc.lock" or p.split("/")[0] in ("data", "models", "metrics", "mlruns.db",
                                                                        ".prefect", "mlartifacts", "checkpoints",
                                                                        "reports", ".dvc-storage")
              or p.startswith(".dvc/cache")]
    assert leaked == []
    assert (copy / "tasks" / "wip_module.py").read_text() == "X = 1\n"
    assert (copy / "params.yaml").read_text().endswith("# edited\n")
    assert (copy / "corpus" / "mine.jsonl").is_file()
    assert (copy / "dvc.yaml").is_file() and (copy / ".dvc" / "config").is_file()
    assert _git(copy, "status", "--porcelain") == ""


def test_after_a_run_git_status_shows_only_what_the_user_commits(repo_copy: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    repo = repo_copy
    monkeypatch.chdir(repo)  # DVC resolves stage names against the working directory, as in `lmforge run`
    _fake_run_outputs(repo)
    versioning = Versioning(repo)
    try:
        for stage in topological_order(read_stages(repo)):
            versioning.record(stage)  # what `lmforge run` does after each stage
    finally:
        versioning.close()
    status = sorted(_git(repo, "status", "--porcelain", "--untracked-files=normal").splitlines())
    assert status == ["?? dvc.lock", "?? metrics/"]
    # so `git add -A` after a run adds no data
    _git(repo, "add", "-A")
    added = _git(repo, "diff", "--cached", "--name-only").split()
    assert added == ["dvc.lock", *sorted(f"metrics/{s}.json" for s in read_stages(repo))]


@pytest.mark.slow
def test_prefect_server_leaves_no_process_behind(tmp_path: Path) -> None:
    with prefect_server(tmp_path / "home") as (url, proc):
        pgid = os.getpgid(proc.pid)
        assert pgid != os.getpgid(0), "the server runs in a process group of its own, so teardown can stop it all"
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    assert proc.poll() is not None
    _, alive = psutil.wait_procs(family, timeout=5)
    assert [p.pid for p in alive] == [], f"still running after teardown: {[p.cmdline() for p in alive]}"
    assert _group_members(pgid) == []


def test_every_dvc_out_but_metrics_is_git_ignored_and_metrics_are_not() -> None:
    from tests.conftest import REPO

    outs = [o for spec in read_stages(REPO).values() for o in spec.outs]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *outs], cwd=REPO, capture_output=True,
                             text=True).stdout.split()
    assert sorted(ignored) == sorted(o for o in outs if not o.startswith("metrics/"))
