"""infra/compose.yaml, checked as a file (no container engine on the machines the suite runs on): the services the
stack script starts, every port bound to 127.0.0.1, no credential written in it, telemetry off."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parents[1] / "infra" / "compose.yaml"


def _services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_the_stack_scripts_services_are_all_there() -> None:
    services = _services()
    assert {"postgres", "s3", "mlflow", "prefect-server", "prefect-worker"} <= set(services)
    assert "--serve-artifacts" in services["mlflow"]["command"] and "s3://mlflow" in services["mlflow"]["command"]
    assert "postgresql" in services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert "--pool lmforge --type process" in services["prefect-worker"]["command"]


def test_every_port_binds_127_0_0_1() -> None:
    ports = [p for s in _services().values() for p in s.get("ports", [])]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports), ports


def test_no_credential_is_written_in_it() -> None:
    for name, service in _services().items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|ACCESS_KEY|_USER$", key) and key != "POSTGRES_USER":
                assert str(value).startswith("${") and ":?" in str(value), f"{name}.{key} = {value!r}"
            for secret in re.findall(r"://[^:/@]+:([^@]+)@", str(value)):  # passwords inside URLs
                assert secret.startswith("${"), f"{name}.{key} holds a password"


def test_telemetry_is_off_in_every_python_service() -> None:
    for name in ("mlflow", "prefect-server", "prefect-worker"):
        env = _services()[name]["environment"]
        assert env["DO_NOT_TRACK"] == "1" and env["MLFLOW_DISABLE_TELEMETRY"] == "true", name


def test_the_prefect_server_serves_the_ui_that_calls_nobody() -> None:
    # the same settings as `lmforge ui --prefect` and the local stack (pipelines/ui.py: V2 calls Amplitude)
    from pipelines.ui import PREFECT_UI_ENV

    env = _services()["prefect-server"]["environment"]
    assert {k: env.get(k) for k in PREFECT_UI_ENV} == PREFECT_UI_ENV
