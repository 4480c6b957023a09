"""A throwaway lmforge project for a benchmark: a copy of this checkout's source, committed in a temporary git
repository, its params.yaml edited, stages run with ``lmforge run`` as a user runs them.

The copy takes what git would track (tracked files and untracked ones git does not ignore), so uncommitted work is
measured too and run outputs never are. Each command runs in its own process group with this venv first on PATH (the
dvc.yaml commands say ``python``), offline for the Hugging Face libraries, with the project's own stores (MLflow
sqlite, Prefect's ephemeral API) rather than any server the caller's environment names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.name=lmforge-benchmark", "-c", "user.email=benchmark@lmforge.invalid"]
# what would send the project's runs elsewhere, or make its recipe think it is a rank of another launch
_DROPPED_ENV = ("PYTHONPATH", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "PREFECT_API_URL",
                "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LMFORGE_LAUNCH_TIME")


def make_project(dest: Path, source: Path = REPO) -> Path:
    """Copy ``source``'s source files into ``dest`` (a new directory) and commit them in a new git repository."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=source, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for rel in listed:
        if rel and (source / rel).is_file():  # a tracked file deleted in the work tree is listed too
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, dest / rel)
    subprocess.run(GIT + ["init", "-q"], cwd=dest, check=True)
    commit(dest, "benchmark copy of the lmforge source")
    return dest


def commit(project: Path, message: str) -> None:
    """Commit everything in ``project`` (a no-op when nothing changed)."""
    subprocess.run(GIT + ["add", "-A"], cwd=project, check=True)
    if subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=project).returncode:
        subprocess.run(GIT + ["commit", "-q", "-m", message], cwd=project, check=True)


def add_tree(project: Path, src: Path, rel: str) -> str:
    """Copy the directory ``src`` to ``project/rel`` (replacing it) and return ``rel``."""
    target = project / rel
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(src, target)
    return rel


def set_params(project: Path, values: dict[str, Any], message: str) -> None:
    """Set dotted keys of ``project/params.yaml`` (``finetune.steps`` -> ``{finetune: {steps: ...}}``) and commit.

    Raises:
        KeyError: a key's section is not in params.yaml.
    """
    import yaml

    path = project / "params.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key, value in values.items():
        *parents, last = key.split(".")
        node = data
        for i, part in enumerate(parents):
            if i == 0 and part not in node:
                raise KeyError(f"params.yaml has no section {part!r} (key {key!r})")
            node = node.setdefault(part, {})
        node[last] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    commit(project, message)


def lmforge_env() -> dict[str, str]:
    """The environment of a ``lmforge`` command in the project (see the module docstring)."""
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1"})
    return env


def lmforge(project: Path, *args: str, timeout: float, log: Path) -> dict[str, Any]:
    """``lmforge ARGS`` in ``project``: ``{returncode, wall_s, tail}``; its output goes to ``log``.

    Past ``timeout`` seconds its whole process group (the Prefect API and training processes it started included)
    is stopped and the returncode is 124.
    """
    cmd = [sys.executable, "-m", "pipelines.cli", *args]
    t0 = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, cwd=project, env=lmforge_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            code = 124
    wall = time.perf_counter() - t0
    text = log.read_text(encoding="utf-8", errors="replace")
    return {"command": "lmforge " + " ".join(args), "returncode": code, "wall_s": round(wall, 1),
            "tail": text[-2500:] if code else "", "log": str(log)}


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``proc``'s process group, SIGKILL what is left of it after at most 20 s; reap ``proc``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):  # what ignored SIGTERM, or outlived the leader
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
