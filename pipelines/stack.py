"""The local production-shaped stack: PostgreSQL, an S3-compatible store, an MLflow server, a Prefect server and a
process work-pool worker, every one on 127.0.0.1, started and stopped by one command (``infra/stack.sh``).

    python -m pipelines.stack up | down | status | env

- PostgreSQL (Debian's package, ``/usr/lib/postgresql/*/bin``): a private cluster under the state dir, TCP on
  127.0.0.1 only (no unix socket), scram-sha-256 passwords; databases ``mlflow`` (MLflow's backend store) and
  ``prefect`` (the Prefect server's, through asyncpg). Run as the ``postgres`` OS user when this is root.
- S3: moto's server (``moto[server]``); buckets for MLflow's artifacts and the DVC remote. moto keeps objects in
  memory: they last as long as its process (``down`` loses them; the Postgres data stays).
- MLflow: ``mlflow server`` on the Postgres store, ``--serve-artifacts`` into the S3 bucket (clients send artifacts
  through the server: ``tracking.artifact_root: mlflow-artifacts:/lmforge``).
- Prefect: ``prefect server start`` on Postgres, a process work pool and one ``prefect worker``.

State (data, logs, pids, generated credentials) lives in ``$LMFORGE_STACK_DIR`` (default ``.stack/`` in the
repository, ignored by git and DVC). Credentials come from the environment (``LMFORGE_PG_PASSWORD``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``); a missing one is generated once into ``credentials.env`` (mode
0600) under the state dir. Ports: ``LMFORGE_PG_PORT``, ``LMFORGE_S3_PORT``, ``LMFORGE_MLFLOW_PORT``,
``LMFORGE_PREFECT_PORT``. ``up`` is idempotent: a running service is left alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.config import CODE_ROOT, TELEMETRY_OFF
from pipelines.ui import PREFECT_UI_ENV

if TYPE_CHECKING:
    import psycopg2.extensions

BIN = Path(sys.executable).parent
PG_USER = "lmforge"
DEFAULTS = {"LMFORGE_PG_PORT": 5433, "LMFORGE_S3_PORT": 9000, "LMFORGE_MLFLOW_PORT": 5000,
            "LMFORGE_PREFECT_PORT": 4200}
"""Ports on 127.0.0.1 (Postgres on 5433, not 5432: a system cluster may hold that one)."""
SECRETS = ("LMFORGE_PG_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
SERVICES = ("s3", "mlflow", "prefect", "worker")
"""The services this module runs as process groups (Postgres runs under pg_ctl), in start order."""
MLFLOW_BUCKET = os.environ.get("LMFORGE_MLFLOW_BUCKET", "mlflow")
DVC_BUCKET = os.environ.get("LMFORGE_DVC_BUCKET", "lmforge-dvc")
POOL = os.environ.get("LMFORGE_PREFECT_POOL", "lmforge")
REGION = "us-east-1"


class StackError(Exception):
    """The stack cannot be started or reached as asked. Exit code 2."""

    exit_code = 2


@dataclass(frozen=True)
class Stack:
    """Where the stack lives and how to reach it."""

    state: Path
    ports: dict[str, int]
    creds: dict[str, str]

    def url(self, service: str) -> str:
        port = self.ports[{"s3": "LMFORGE_S3_PORT", "mlflow": "LMFORGE_MLFLOW_PORT",
                           "prefect": "LMFORGE_PREFECT_PORT"}[service]]
        return f"http://127.0.0.1:{port}" + ("/api" if service == "prefect" else "")

    def pg_url(self, db: str, driver: str) -> str:
        return (f"{driver}://{PG_USER}:{self.creds['LMFORGE_PG_PASSWORD']}@127.0.0.1:"
                f"{self.ports['LMFORGE_PG_PORT']}/{db}")

    def client_env(self) -> dict[str, str]:
        """What a client of the stack needs in its environment (printed by ``env``)."""
        return {"MLFLOW_TRACKING_URI": self.url("mlflow"), "PREFECT_API_URL": self.url("prefect"),
                "MLFLOW_S3_ENDPOINT_URL": self.url("s3"), "AWS_ACCESS_KEY_ID": self.creds["AWS_ACCESS_KEY_ID"],
                "AWS_SECRET_ACCESS_KEY": self.creds["AWS_SECRET_ACCESS_KEY"], "AWS_DEFAULT_REGION": REGION}


# ------------------------------------------------------------------------------------------------ configuration
def state_dir() -> Path:
    """``$LMFORGE_STACK_DIR`` or ``.stack/`` in this checkout."""
    return Path(os.environ.get("LMFORGE_STACK_DIR") or CODE_ROOT / ".stack").resolve()


def _read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            key, sep, value = line.removeprefix("export ").partition("=")
            if sep and not key.startswith("#"):
                out[key.strip()] = shlex.split(value)[0] if value.strip() else ""
    return out


def load(create: bool = False) -> Stack:
    """The stack's settings: ports from the environment (or those ``up`` recorded), credentials from the environment
    (or generated once into ``credentials.env``, mode 0600, when ``create``)."""
    state = state_dir()
    ports = load_ports()
    cred_file = state / "credentials.env"
    saved = _read_env_file(cred_file)
    creds, generated = {}, {}
    for key in SECRETS:
        value = os.environ.get(key) or saved.get(key)
        if not value:
            if not create:
                raise StackError(f"{key} is not set and no generated one is in {cred_file}: export it, or run "
                                 "`infra/stack.sh up` once to generate one")
            value = generated[key] = secrets.token_urlsafe(18) if key != "AWS_ACCESS_KEY_ID" else (
                "lmforge" + secrets.token_hex(6))
        creds[key] = value
    if generated:
        state.mkdir(parents=True, exist_ok=True)
        keep = {**saved, **generated}
        fd = os.open(cred_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# generated by infra/stack.sh up; the environment's values win over these\n")
            f.writelines(f"{k}={shlex.quote(v)}\n" for k, v in keep.items())
        os.chmod(cred_file, 0o600)
    return Stack(state, ports, creds)


def service_env(stack: Stack) -> dict[str, str]:
    """Environment of a stack process: telemetry off, this venv on PATH, the S3 credentials, nothing pointing at
    another Prefect API."""
    s3 = {k: v for k, v in stack.client_env().items() if k.startswith(("AWS", "MLFLOW_S3"))}
    env = {**os.environ, **TELEMETRY_OFF, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONUNBUFFERED": "1", **s3}
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


# ------------------------------------------------------------------------------------------------------ helpers
def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            status: int = r.status  # urlopen's result is untyped (an HTTPResponse for http URLs)
            return 200 <= status < 300
    except (OSError, urllib.error.URLError):
        return False


def _wait(what: str, ready: Callable[[], bool], timeout: float, log: Path | None = None,
          alive: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if not alive() or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.is_file() else ""
            why = "exited" if not alive() else f"did not become ready in {timeout:.0f} s"
            raise StackError(f"{what} {why}" + (f"; end of {log}:\n{tail}" if tail
                                                                                   else ""))
        time.sleep(0.5)


def _pidfile(stack: Stack, name: str) -> Path:
    return stack.state / "run" / f"{name}.pid"


def _running(stack: Stack, name: str) -> int | None:
    """The pid (= process group) of a service this module started, if that process is still the one recorded."""
    import psutil

    path = _pidfile(stack, name)
    if not path.is_file():
        return None
    pid, started = path.read_text().split()
    try:
        if abs(psutil.Process(int(pid)).create_time() - float(started)) < 1.0:
            return int(pid)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return None


def _spawn(stack: Stack, name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    import psutil

    (stack.state / "logs").mkdir(parents=True, exist_ok=True)
    (stack.state / "run").mkdir(parents=True, exist_ok=True)
    with open(stack.state / "logs" / f"{name}.log", "ab") as log:
        # its own session: `down` stops the whole group (uvicorn/gunicorn workers, flow-run subprocesses)
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    _pidfile(stack, name).write_text(f"{proc.pid} {psutil.Process(proc.pid).create_time():.3f}\n")
    return proc


def _port_free(port: int, service: str) -> None:
    if _listening(port):
        raise StackError(f"port {port} on 127.0.0.1 (for {service}) is taken by another program: set "
                         f"LMFORGE_{service.upper()}_PORT to a free one")


# ----------------------------------------------------------------------------------------------------- postgres
def _pg_bin(tool: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"), key=lambda p: int(p.parts[-3]))
    if found:
        return str(found[-1])
    if path := shutil.which(tool):
        return path
    raise StackError(f"PostgreSQL's {tool} not found (Debian: apt-get install postgresql; infra/bootstrap.sh does it "
                     "as root)")


def _as_pg(cmd: list[str]) -> list[str]:
    """Postgres refuses to run as root: as root, run it as the ``postgres`` OS user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _pg_dir(stack: Stack) -> Path:
    return stack.state / "postgres"


def _pg_connect(stack: Stack, db: str = "postgres") -> psycopg2.extensions.connection:
    import psycopg2

    return psycopg2.connect(host="127.0.0.1", port=stack.ports["LMFORGE_PG_PORT"], user=PG_USER,
                            password=stack.creds["LMFORGE_PG_PASSWORD"], dbname=db, connect_timeout=5)


def _pg_running(stack: Stack) -> bool:
    data = _pg_dir(stack) / "data"
    if not (data / "postmaster.pid").exists():
        return False
    return subprocess.run(_as_pg([_pg_bin("pg_ctl"), "status", "-D", str(data)]), capture_output=True).returncode == 0


def _pg_up(stack: Stack) -> None:
    pgdir, port = _pg_dir(stack), stack.ports["LMFORGE_PG_PORT"]
    data = pgdir / "data"
    if not _pg_running(stack):
        _port_free(port, "pg")
        pgdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(pgdir, "postgres", "postgres")
            os.chmod(pgdir, 0o700)
            if subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(pgdir)]).returncode != 0:
                raise StackError(f"the postgres OS user cannot write {pgdir} (a parent directory is closed to it): "
                                 "set LMFORGE_STACK_DIR to a directory it can reach, e.g. under /tmp or /srv")
        if not (data / "PG_VERSION").exists():
            pwfile = pgdir / "initdb.pw"
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(stack.creds["LMFORGE_PG_PASSWORD"] + "\n")
            if os.geteuid() == 0:
                shutil.chown(pwfile, "postgres", "postgres")
            try:
                res = subprocess.run(_as_pg([_pg_bin("initdb"), "-D", str(data), "-U", PG_USER, "--pwfile", str(pwfile),
                                             "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"]),
                                     capture_output=True, text=True)
            finally:
                pwfile.unlink(missing_ok=True)
            if res.returncode != 0:
                raise StackError(f"initdb failed: {res.stderr.strip() or res.stdout.strip()}")
        log = pgdir / "postgres.log"
        res = subprocess.run(_as_pg([_pg_bin("pg_ctl"), "start", "-w", "-t", "60", "-D", str(data), "-l", str(log),
                                     "-o", f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories=''"]),
                             capture_output=True, text=True)
        if res.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise StackError(f"postgres did not start: {res.stderr.strip()}\n{tail}")
    import psycopg2

    try:
        conn = _pg_connect(stack)
    except psycopg2.OperationalError as err:
        raise StackError(f"cannot log in to the stack's postgres on port {port} as {PG_USER}: {err}".strip() +
                         " (LMFORGE_PG_PASSWORD must be the one the cluster was created with)") from None
    conn.autocommit = True  # CREATE DATABASE runs outside a transaction
    try:
        with conn.cursor() as cur:
            for db in ("mlflow", "prefect"):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{db}"')
    finally:
        conn.close()


def _pg_down(stack: Stack) -> None:
    import psutil

    if _pg_running(stack):
        data = _pg_dir(stack) / "data"
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
        subprocess.run(_as_pg([_pg_bin("pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(data)]), capture_output=True,
                       check=False)
        with contextlib.suppress(psutil.NoSuchProcess):  # pg_ctl returns when the pid file goes, the process after
            psutil.wait_procs([psutil.Process(postmaster)], timeout=30)


# ------------------------------------------------------------------------------------------- the other services
def _s3_client(stack: Stack) -> Any:  # a boto3 S3 client: boto3 has no types of its own
    import boto3

    return boto3.client("s3", endpoint_url=stack.url("s3"), region_name=REGION,
                        aws_access_key_id=stack.creds["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=stack.creds["AWS_SECRET_ACCESS_KEY"])


def _launch(stack: Stack, name: str, port: int | None, cmd: list[str], env: dict[str, str],
            ready: Callable[[], bool], timeout: float = 240) -> Callable[[], None]:
    """Start service ``name`` unless it runs; returns the wait for it to answer (services start side by side)."""
    log = stack.state / "logs" / f"{name}.log"
    if _running(stack, name):
        return lambda: _wait(name, ready, timeout, log)
    if port is not None:
        _port_free(port, name)
    proc = _spawn(stack, name, cmd, env, stack.state)
    return lambda: _wait(name, ready, timeout, log, alive=lambda: proc.poll() is None)


def _worker_online(stack: Stack) -> bool:
    req = urllib.request.Request(f"{stack.url('prefect')}/work_pools/{POOL}/workers/filter", data=b"{}",
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            return any(w.get("status") == "ONLINE" for w in json.loads(r.read()))
    except (OSError, urllib.error.URLError, ValueError):
        return False


def up() -> Stack:
    """Start every service not yet running (idempotent) and wait until each answers; returns the stack."""
    stack = load(create=True)
    stack.state.mkdir(parents=True, exist_ok=True)
    (stack.state / "stack.json").write_text(json.dumps(stack.ports, indent=1) + "\n")
    t0 = time.monotonic()
    # every port a service that is not running will need, checked before anything starts
    for name in ("s3", "mlflow", "prefect"):
        if not _running(stack, name):
            _port_free(stack.ports[f"LMFORGE_{name.upper()}_PORT"], name)
    if not _pg_running(stack):
        _port_free(stack.ports["LMFORGE_PG_PORT"], "pg")
    env = service_env(stack)
    s3_port = stack.ports["LMFORGE_S3_PORT"]
    s3_ready = _launch(stack, "s3", s3_port, [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)], env,
                       lambda: _http_ok(f"{stack.url('s3')}/moto-api/"))
    _pg_up(stack)
    s3_ready()
    s3 = _s3_client(stack)
    have = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in (MLFLOW_BUCKET, DVC_BUCKET):
        if bucket not in have:
            s3.create_bucket(Bucket=bucket)
    port = stack.ports["LMFORGE_MLFLOW_PORT"]
    mlflow_ready = _launch(
        stack, "mlflow", port, [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers",
                                "1", "--serve-artifacts", "--artifacts-destination", f"s3://{MLFLOW_BUCKET}"],
        # the store URI (with its password) in the environment, not on the command line that `ps` shows
        {**env, "MLFLOW_BACKEND_STORE_URI": stack.pg_url("mlflow", "postgresql+psycopg2")},
        lambda: _http_ok(f"{stack.url('mlflow')}/health"))
    port = stack.ports["LMFORGE_PREFECT_PORT"]
    # PREFECT_UI_ENV: the same UI as `lmforge ui --prefect` (V1: V2 calls Amplitude whatever the analytics setting)
    prefect_env = {**env, **PREFECT_UI_ENV, "PREFECT_HOME": str(stack.state / "prefect-home"),
                   "PREFECT_API_DATABASE_CONNECTION_URL": stack.pg_url("prefect", "postgresql+asyncpg"),
                   "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port),
                   "PREFECT_UI_API_URL": stack.url("prefect")}
    prefect_ready = _launch(stack, "prefect", port, [str(BIN / "prefect"), "server", "start"], prefect_env,
                            lambda: _http_ok(f"{stack.url('prefect')}/health"))
    mlflow_ready()
    prefect_ready()
    client_env = {**env, "PREFECT_HOME": str(stack.state / "prefect-home"), "PREFECT_API_URL": stack.url("prefect")}
    if not _http_ok(f"{stack.url('prefect')}/work_pools/{POOL}"):
        res = subprocess.run([str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process"], env=client_env,
                             capture_output=True, text=True, cwd=stack.state)
        if res.returncode != 0 and not _http_ok(f"{stack.url('prefect')}/work_pools/{POOL}"):
            raise StackError(f"cannot create the work pool {POOL}: {res.stderr.strip() or res.stdout.strip()}")
    # the worker runs flow runs as its subprocesses, in the deployment's directory, with this venv's python
    _launch(stack, "worker", None, [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process"],
            {**client_env, "MLFLOW_TRACKING_URI": stack.url("mlflow")}, lambda: _worker_online(stack))()
    print(f"stack up in {time.monotonic() - t0:.1f} s (state in {stack.state})", file=sys.stderr)
    return stack


def _stop_groups(pgids: list[int], timeout: float = 20) -> None:
    """SIGTERM every process group at once, SIGKILL what is left of them after ``timeout`` s."""
    import psutil

    def members() -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter():
            with contextlib.suppress(ProcessLookupError, psutil.Error):
                if os.getpgid(p.pid) in pgids:
                    found.append(p)
        return found

    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    _, alive = psutil.wait_procs(members(), timeout=timeout)
    if alive:
        for pgid in pgids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        psutil.wait_procs(members(), timeout=5)


def down() -> None:
    """Stop every service (each process group, then Postgres) and check that none of the stack's ports listens."""
    stack = Stack(state_dir(), load_ports(), {})  # stopping needs no credentials
    _stop_groups([pid for name in SERVICES if (pid := _running(stack, name))])
    for name in SERVICES:
        _pidfile(stack, name).unlink(missing_ok=True)
    _pg_down(stack)
    busy = [f"{k}={p}" for k, p in stack.ports.items() if _listening(p)]
    if busy:
        raise StackError(f"stopped the stack, but something still listens on {', '.join(busy)}: another program?")


def load_ports() -> dict[str, int]:
    """The ports of the stack (what ``up`` recorded, the environment winning), without needing its credentials."""
    state = state_dir()
    recorded = json.loads((state / "stack.json").read_text()) if (state / "stack.json").is_file() else {}
    ports: dict[str, int] = {}
    for key, default in DEFAULTS.items():
        raw = os.environ.get(key) or recorded.get(key) or default
        try:
            ports[key] = int(raw)
            if not 0 < ports[key] < 65536:
                raise ValueError
        except ValueError:
            raise StackError(f"{key}={raw!r} is not a port number (1-65535)") from None
    return ports


def status() -> dict[str, str]:
    """Each service: ``up URL`` or ``down``."""
    stack = Stack(state_dir(), load_ports(), {})
    out = {"postgres": f"up 127.0.0.1:{stack.ports['LMFORGE_PG_PORT']}" if _pg_running(stack) else "down",
           "s3": f"up {stack.url('s3')}" if _running(stack, "s3") and _http_ok(f"{stack.url('s3')}/moto-api/")
           else "down",
           "mlflow": f"up {stack.url('mlflow')}" if _running(stack, "mlflow") and _http_ok(
               f"{stack.url('mlflow')}/health") else "down",
           "prefect": f"up {stack.url('prefect')} (UI {stack.url('prefect').removesuffix('/api')})" if _running(
               stack, "prefect") and _http_ok(f"{stack.url('prefect')}/health") else "down",
           "worker": f"up (pool {POOL})" if _running(stack, "worker") and _worker_online(stack) else "down"}
    return out


def env_lines(stack: Stack) -> list[str]:
    """Shell lines that point a shell (MLflow, Prefect and DVC command lines) and lmforge at the stack."""
    lines = [f"export {k}={shlex.quote(v)}" for k, v in stack.client_env().items()]
    lines += [
        "# lmforge reads its servers from params.yaml (the environment does not override them):",
        f"#   tracking:      {{uri: {stack.url('mlflow')}, artifact_root: 'mlflow-artifacts:/lmforge'}}",
        f"#   orchestration: {{prefect_api_url: {stack.url('prefect')}}}",
        "# DVC remote in the stack's S3 (credentials from the AWS_* above; --local: nothing lands in .dvc/config):",
        f"#   dvc remote add --local -d -f stack s3://{DVC_BUCKET}/cache && "
        f"dvc remote modify --local stack endpointurl {stack.url('s3')}",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    """Command line of ``infra/stack.sh``."""
    p = argparse.ArgumentParser(prog="infra/stack.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["up", "down", "status", "env"])
    args = p.parse_args(argv)
    try:
        if args.command == "up":
            stack = up()
            for name, state in status().items():
                print(f"{name:9} {state}")
            print(f"env: eval \"$(infra/stack.sh env)\"   logs: {stack.state / 'logs'}")
        elif args.command == "down":
            down()
            print("stack down")
        elif args.command == "status":
            states = status()
            for name, state in states.items():
                print(f"{name:9} {state}")
            return 0 if all(s.startswith("up") for s in states.values()) else 3
        else:
            print("\n".join(env_lines(load(create=False))))
    except StackError as err:
        print(f"stack: error: {err}", file=sys.stderr)
        return StackError.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
