"""The pipeline against the local production-shaped stack (infra/stack.sh: Postgres, moto S3, MLflow server, Prefect
server and a process worker, all on 127.0.0.1): lineage read back through MLflow's REST API, artifacts in the S3
bucket, `dvc push`/`dvc pull` through the S3 remote, a work-pool deployment run by the worker. One stack for the
module, stopped at the end with no process left."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from tests.conftest import BIN, REPO, _free_port, make_repo_copy, run_cli, subprocess_env

needs_postgres = pytest.mark.skipif(not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")),
                                    reason="PostgreSQL (Debian's package) is not installed: infra/bootstrap.sh "
                                    "installs it as root")

STAGES = ("collect", "clean", "dedup", "tokenizer", "pretrain", "finetune", "distill", "evaluate")
POOL = "lmforge"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _stack_cmd(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(REPO / "infra/stack.sh"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, str]]:
    """The stack on free ports, its state in a fresh directory the postgres OS user can reach; yields the client
    environment (``infra/stack.sh env``) plus the ports."""
    state = Path(tempfile.mkdtemp(prefix="lmforge-stack-", dir="/tmp"))
    state.chmod(0o711)
    ports = {k: str(_free_port()) for k in ("LMFORGE_PG_PORT", "LMFORGE_S3_PORT", "LMFORGE_MLFLOW_PORT",
                                           "LMFORGE_PREFECT_PORT")}
    # credentials from the environment, as a user gives them (none is written into the repository)
    creds = {"LMFORGE_PG_PASSWORD": secrets.token_urlsafe(12), "AWS_ACCESS_KEY_ID": "lmforge-test",
             "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(12)}
    env = subprocess_env(LMFORGE_STACK_DIR=str(state), LMFORGE_PYTHON=sys.executable, **ports, **creds)
    env.pop("PREFECT_API_URL", None)
    t0 = time.monotonic()
    up = _stack_cmd(env, "up")
    started = time.monotonic() - t0
    pids: list[int] = []
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        print(f"stack up in {started:.1f} s")
        again = _stack_cmd(env, "up")  # idempotent: everything already answers
        assert again.returncode == 0 and again.stdout.count(" up ") == 5, again.stdout + again.stderr
        status = _stack_cmd(env, "status")
        assert status.returncode == 0, status.stdout
        pids = [int(p.read_text().split()[0]) for p in (state / "run").glob("*.pid")]
        pids.append(int((state / "postgres/data/postmaster.pid").read_text().split()[0]))
        # every listening socket of the stack's processes is on 127.0.0.1
        for pid in pids:
            for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
                for conn in proc.net_connections(kind="inet"):
                    if conn.status == psutil.CONN_LISTEN:
                        assert conn.laddr.ip == "127.0.0.1", (proc.cmdline(), conn)
        exports = _stack_cmd(env, "env")
        assert exports.returncode == 0, exports.stderr
        client = dict(line.removeprefix("export ").split("=", 1) for line in exports.stdout.splitlines()
                      if line.startswith("export "))
        assert client["AWS_SECRET_ACCESS_KEY"] == creds["AWS_SECRET_ACCESS_KEY"]
        assert not (state / "credentials.env").exists()  # all three came from the environment
        yield {**client, **ports, "state": str(state), "stack_env": json.dumps(env)}
    finally:
        t0 = time.monotonic()
        down = _stack_cmd(env, "down")
        print(f"stack down in {time.monotonic() - t0:.1f} s")
        assert down.returncode == 0, down.stdout + down.stderr
        survivors = [pid for pid in pids if _alive(pid)]
        busy = [p for p in ports.values() if _listening(int(p))]
        shutil.rmtree(state, ignore_errors=True)
        assert not survivors and not busy, (survivors, busy)
        status = _stack_cmd(env, "status")
        assert status.returncode == 3 and status.stdout.count("down") == 5, status.stdout


def test_bad_settings_are_one_clear_error(tmp_path: Path) -> None:
    env = subprocess_env(LMFORGE_STACK_DIR=str(tmp_path / "state"), LMFORGE_PYTHON=sys.executable)
    for key in ("LMFORGE_PG_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(key, None)
    res = _stack_cmd(env, "env")  # nothing generated yet, nothing in the environment
    assert res.returncode == 2 and "LMFORGE_PG_PASSWORD is not set" in res.stderr, res.stderr
    res = _stack_cmd({**env, "LMFORGE_MLFLOW_PORT": "50x0"}, "status")
    assert res.returncode == 2 and "LMFORGE_MLFLOW_PORT='50x0' is not a port number" in res.stderr, res.stderr
    res = _stack_cmd(env, "start")
    assert res.returncode == 2 and "invalid choice: 'start'" in res.stderr, res.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = _stack_cmd({**env, "LMFORGE_PG_PORT": str(port)}, "up")
    assert res.returncode == 2 and f"port {port} on 127.0.0.1 (for pg) is taken" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not list((tmp_path / "state").glob("run/*.pid"))  # the ports are checked before anything starts
    # the credentials `up` generated: mode 0600, in the state dir, and `env` now prints them
    creds = tmp_path / "state/credentials.env"
    assert creds.stat().st_mode & 0o777 == 0o600
    res = _stack_cmd(env, "env")
    assert res.returncode == 0 and "export AWS_SECRET_ACCESS_KEY=" in res.stdout, res.stderr
    secret = next(line.split("=", 1)[1] for line in res.stdout.splitlines() if "AWS_SECRET_ACCESS_KEY=" in line)
    assert secret in creds.read_text()


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for init to reap it does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _tiny(repo: Path, mlflow: str, prefect: str) -> None:
    """Every stage on the default corpus with the smallest settings that still train, distil and register (about
    4 min on 2 busy cores), tracked on the stack's MLflow server, orchestrated by its Prefect server."""
    d = yaml.safe_load((repo / "params.yaml").read_text())
    d["tracking"].update(uri=mlflow, artifact_root="mlflow-artifacts:/lmforge")
    d["orchestration"]["prefect_api_url"] = prefect
    d["tokenizer"]["vocab_size"] = 512
    d["pretrain"].update(model={"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64,
                                "tie_word_embeddings": True}, steps=8, batch_size=4, warmup_steps=2, eval_every=4,
                         checkpoint_every=8)
    d["finetune"].update(steps=4, batch_size=8, warmup_steps=1, eval_every=2)
    d["distill"].update(student={"num_layers": 1, "hidden_size": 32, "num_heads": 2, "intermediate_size": 32,
                                 "init": "teacher_layers", "layers": None},
                        steps=4, batch_size=8, warmup_steps=1, eval_every=2, latency_examples=4,
                        variants={"magnitude": {"enabled": True, "sparsity": 0.5, "recovery_steps": 1},
                                  "structured": {"enabled": True, "heads_fraction": 0.5, "neurons_fraction": 0.25,
                                                 "recovery_steps": 1},
                                  "int8": {"enabled": True}})
    d["evaluate"].update(lm={"max_docs": 2, "max_train_docs": None, "batch_size": 2},
                         classification={"bootstrap": 50, "level": 0.95, "batch_size": 32, "tfidf_c": [1.0]},
                         generation={"max_examples": 3, "max_new_tokens": 4, "sft_batch_size": 3},
                         harness={"enabled": False, "limit": 2, "batch_size": 2}, threads=1)
    (repo / "params.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run(git + ["commit", "-qam", "tiny settings on the stack"], cwd=repo, check=True)


@pytest.fixture(scope="module")
def ran(stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A repository copy whose whole pipeline ran once against the stack."""
    repo = make_repo_copy(tmp_path_factory.mktemp("stack-repo") / "repo")
    _tiny(repo, stack["MLFLOW_TRACKING_URI"], stack["PREFECT_API_URL"])
    env = _client_env(stack)
    t0 = time.monotonic()
    res = run_cli(repo, "run", timeout=1800, **env)
    print(f"pipeline on the stack: {time.monotonic() - t0:.1f} s")
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    return {"repo": repo, "out": res.stdout, "env": env}


def _client_env(stack: dict[str, str]) -> dict[str, str]:
    keys = ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    # lmforge takes its servers from params.yaml; MLFLOW_TRACKING_URI and PREFECT_API_URL are for the tools' CLIs
    return {k: stack[k] for k in keys}


def _get(base: str, path: str, **query: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}", timeout=30) as r:
        return json.loads(r.read())


def _post(base: str, path: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _datasets(run: dict[str, Any], context: str) -> dict[str, str]:
    out = {}
    for d in run.get("inputs", {}).get("dataset_inputs", []):
        if {"key": "mlflow.data.context", "value": context} in d.get("tags", []):
            out[d["dataset"]["name"]] = d["dataset"]["digest"]
    return out


@pytest.mark.slow
@needs_postgres
def test_lineage_through_the_rest_api_and_artifacts_in_s3(ran: dict[str, Any], stack: dict[str, str]) -> None:
    repo, base = ran["repo"], stack["MLFLOW_TRACKING_URI"]
    for stage in STAGES:
        assert f"{stage}: ran" in ran["out"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    lock_md5 = {o["path"]: o["md5"] for st in lock.values() for o in st["outs"]}
    for task in ("doc_section", "docstring"):
        # registered model version (the champion) -> its source run -> the parent pipeline run
        version = _get(base, "registered-models/alias", name=f"lmforge-{task}", alias="champion")["model_version"]
        source = _get(base, "runs/get", run_id=version["run_id"])["run"]
        assert _tags(source)["lmforge.stage"] == "evaluate"
        parent_id = _tags(source)["mlflow.parentRunId"]
        assert {t["key"]: t["value"] for t in version["tags"]}["lmforge.pipeline_run_id"] == parent_id
        parent = _get(base, "runs/get", run_id=parent_id)["run"]
        assert _tags(parent)["lmforge.kind"] == "pipeline" and _tags(parent)["mlflow.source.git.commit"] == head
        # the model's files are in the S3 bucket behind the server's proxied artifact store
        model_id = version["source"].removeprefix("models:/")
        keys = _bucket_keys(stack, "mlflow", f"lmforge/models/{model_id}/")
        assert any(k.endswith("model.safetensors") for k in keys), keys
    # the parent's stage runs: every stage, each with the git commit and DVC's digests of its data
    children = _post(base, "/api/2.0/mlflow/runs/search", {
        "experiment_ids": [parent["info"]["experiment_id"]], "max_results": 100,
        "filter": f"tags.mlflow.parentRunId = '{parent_id}' and tags.`lmforge.kind` = 'stage'"})["runs"]
    by_stage = {_tags(r)["lmforge.stage"]: r for r in children}
    assert sorted(by_stage) == sorted(STAGES)
    for stage, run in by_stage.items():
        assert _tags(run)["mlflow.source.git.commit"] == head
        outputs = _datasets(run, "output")
        assert {o["path"] for o in lock[stage]["outs"] if not o["path"].startswith("metrics/")} <= set(outputs), stage
        for name, digest in {**outputs, **_datasets(run, "input")}.items():
            if name in lock_md5:
                assert digest == lock_md5[name], (stage, name)
    assert _datasets(by_stage["clean"], "input")["data/raw"] == lock_md5["data/raw"]
    assert _datasets(by_stage["evaluate"], "input")["models/finetuned"] == lock_md5["models/finetuned"]
    # a stage's artifacts lie in the bucket under its run id, the same bytes MLflow serves
    collect_id = by_stage["collect"]["info"]["run_id"]
    assert f"lmforge/{collect_id}/artifacts/params.json" in _bucket_keys(stack, "mlflow", f"lmforge/{collect_id}/")
    with urllib.request.urlopen(f"{base}/get-artifact?path=params.json&run_uuid={collect_id}", timeout=30) as r:
        served = r.read()
    assert served == _s3(stack).get_object(Bucket="mlflow", Key=f"lmforge/{collect_id}/artifacts/params.json")[
        "Body"].read()
    assert json.loads(served)["sources"][0]["kind"] == "default"


def _s3(stack: dict[str, str]) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=stack["MLFLOW_S3_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id=stack["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=stack["AWS_SECRET_ACCESS_KEY"])


def _bucket_keys(stack: dict[str, str], bucket: str, prefix: str) -> list[str]:
    pages = _s3(stack).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _tree_digest(repo: Path, outs: list[str]) -> dict[str, str]:
    files = {}
    for out in outs:
        path = repo / out
        for f in sorted([path] if path.is_file() else path.rglob("*")):
            if f.is_file():
                files[f.relative_to(repo).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return files


def _dvc(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=subprocess_env(**env), capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
@needs_postgres
def test_dvc_push_and_pull_through_the_s3_remote(ran: dict[str, Any], stack: dict[str, str]) -> None:
    repo, env = ran["repo"], ran["env"]
    config_before = (repo / ".dvc/config").read_text()
    for args in (("remote", "add", "--local", "-d", "-f", "stack", "s3://lmforge-dvc/cache"),
                 ("remote", "modify", "--local", "stack", "endpointurl", stack["MLFLOW_S3_ENDPOINT_URL"])):
        res = _dvc(repo, env, *args)
        assert res.returncode == 0, res.stderr
    # the committed config is untouched: endpoint and credentials stay local (.dvc/config.local, git-ignored)
    assert (repo / ".dvc/config").read_text() == config_before
    assert subprocess.run(["git", "status", "--porcelain", ".dvc"], cwd=repo, capture_output=True,
                          text=True).stdout == ""
    # the cached outs (metrics and plots are cache: false: in git, not in the remote)
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    outs = [o if isinstance(o, str) else next(iter(o)) for st in stages.values() for o in st.get("outs", [])
            if isinstance(o, str) or next(iter(o.values())).get("cache", True)]
    before = _tree_digest(repo, outs)
    assert len(before) > 10
    push = _dvc(repo, env, "push")
    assert push.returncode == 0, push.stdout + push.stderr
    assert _bucket_keys(stack, "lmforge-dvc", "cache/files/md5/")
    for out in outs:
        shutil.rmtree(repo / out) if (repo / out).is_dir() else (repo / out).unlink()
    shutil.rmtree(repo / ".dvc/cache")
    pull = _dvc(repo, env, "pull")
    assert pull.returncode == 0, pull.stdout + pull.stderr
    assert _tree_digest(repo, outs) == before  # byte for byte
    status = _dvc(repo, env, "status")
    assert status.returncode == 0 and "Data and pipelines are up to date" in status.stdout, status.stdout
    # and the cache agrees with the remote
    cstatus = _dvc(repo, env, "status", "--cloud")
    assert cstatus.returncode == 0 and "Cache and remote 'stack' are in sync" in cstatus.stdout, cstatus.stdout


@pytest.fixture(scope="module")
def pool_run(ran: dict[str, Any], stack: dict[str, str]) -> dict[str, Any]:
    """The pipeline as a work-pool deployment of the stack's Prefect server, one run of it triggered through the API
    and run by the stack's worker (the tests that look at that run share it, in whatever order they run)."""
    repo, env, api = ran["repo"], ran["env"], stack["PREFECT_API_URL"]
    # a cron that will not fire during the test (1 January): the run below is triggered through the API
    res = run_cli(repo, "schedule", "--cron", "0 0 1 1 *", "--pool", POOL, "--name", "stack-e2e", timeout=300, **env)
    assert res.returncode == 0, res.stdout + res.stderr
    deployment = _get_json(f"{api}/deployments/name/lmforge-scheduled/stack-e2e")
    pipelines_before = _pipeline_runs(stack)
    flow_run = _post(api, f"/deployments/{deployment['id']}/create_flow_run", {})
    deadline, run = time.monotonic() + 600, flow_run
    while time.monotonic() < deadline:
        run = _get_json(f"{api}/flow_runs/{flow_run['id']}")
        if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        time.sleep(2)
    return {"schedule_out": res.stdout, "deployment": deployment, "run": run, "pipelines_before": pipelines_before}


@pytest.mark.slow
@needs_postgres
def test_a_work_pool_deployment_runs_on_the_worker(ran: dict[str, Any], stack: dict[str, str],
                                                   pool_run: dict[str, Any]) -> None:
    repo, deployment, run = ran["repo"], pool_run["deployment"], pool_run["run"]
    assert f"run by the workers of pool '{POOL}'" in pool_run["schedule_out"]
    assert deployment["work_pool_name"] == POOL and deployment["parameters"] == {"root": str(repo), "force": False}
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 0 1 1 *"]
    worker_log = (Path(stack["state"]) / "logs/worker.log").read_text()
    assert run["state_type"] == "COMPLETED", worker_log[-4000:]
    assert run["work_pool_name"] == POOL and run["infrastructure_pid"]  # the process worker started it
    assert f"submitting flow run '{run['id']}'" in worker_log
    # the pipeline ran in the checkout (everything up to date) and was tracked on the stack's MLflow
    new = [r for r in _pipeline_runs(stack) if r not in pool_run["pipelines_before"]]
    assert len(new) == 1


@pytest.mark.slow
@needs_postgres
def test_the_deployment_run_in_the_stack_prefect_ui(ran: dict[str, Any], stack: dict[str, str],
                                                    pool_run: dict[str, Any]) -> None:
    """The stack's Prefect UI (the URL `lmforge ui --prefect` prints for this checkout) shows the deployment's run
    Completed, by name, on its runs page and its own page; it needs nothing beyond 127.0.0.1."""
    from tests.browser import copy_screenshots, offline_page, require_chromium

    require_chromium()
    run = pool_run["run"]
    assert run["state_type"] == "COMPLETED", run["state_type"]
    shown = run_cli(ran["repo"], "ui", "--prefect", timeout=120, **ran["env"])
    ui = stack["PREFECT_API_URL"].removesuffix("/api")
    assert shown.returncode == 0 and shown.stdout.splitlines()[1].strip() == ui, shown.stdout + shown.stderr
    shots = ran["repo"] / "reports" / "ui"
    shots.mkdir(parents=True, exist_ok=True)
    try:
        with offline_page(viewport=(1600, 1100)) as (page, log):
            page.set_default_timeout(90_000)
            page.goto(f"{ui}/runs")
            link = page.get_by_role("link", name=run["name"], exact=True)
            row = page.locator(".flow-run-list-item").filter(has=link)
            row.get_by_text("lmforge-scheduled", exact=True).wait_for()  # its flow's name loads after the row
            text = row.inner_text()
            assert re.search(rf"^lmforge-scheduled\s+{re.escape(run['name'])}\s+Completed\b", text), text
            page.screenshot(path=str(shots / "prefect-stack-01-flow-runs.png"))
            link.click()
            page.wait_for_url(re.compile(f"/runs/flow-run/{run['id']}"))
            heading = page.locator("header.page-heading-flow-run")
            # its deployment and the work pool that ran it, links once loaded
            heading.get_by_role("link", name="stack-e2e", exact=True).wait_for()
            heading.get_by_role("link", name=POOL, exact=True).wait_for()
            text = heading.inner_text()
            assert re.search(rf"{re.escape(run['name'])}\s+Completed\b", text), text
            page.screenshot(path=str(shots / "prefect-stack-02-deployment-flow-run.png"))
            assert log.blocked == [] and log.page_errors == [], log.problems()
    finally:
        copy_screenshots(shots)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def _pipeline_runs(stack: dict[str, str]) -> list[str]:
    base = stack["MLFLOW_TRACKING_URI"]
    exp = _get(base, "experiments/get-by-name", experiment_name="lmforge")["experiment"]["experiment_id"]
    runs = _post(base, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp], "max_results": 100,
                                                       "filter": "tags.`lmforge.kind` = 'pipeline'"})
    return [r["info"]["run_id"] for r in runs.get("runs", [])]
