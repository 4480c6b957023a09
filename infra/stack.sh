#!/usr/bin/env bash
# The local production-shaped stack on 127.0.0.1: PostgreSQL, an S3-compatible store (moto), an MLflow server, a
# Prefect server and a process work-pool worker. See pipelines/stack.py and docs/operations.md ("Local
# production-shaped stack").
#   infra/stack.sh up       start what is not running, wait until every service answers (idempotent)
#   infra/stack.sh status   each service up (with its URL) or down; exit 3 when any is down
#   infra/stack.sh env      shell exports pointing MLflow, Prefect and DVC at the stack: eval "$(infra/stack.sh env)"
#   infra/stack.sh down     stop every service (process groups, then postgres); nothing left listening
# Settings from the environment: LMFORGE_STACK_DIR (default .stack/), LMFORGE_{PG,S3,MLFLOW,PREFECT}_PORT,
# LMFORGE_PG_PASSWORD, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (missing ones generated into the state dir, 0600).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${LMFORGE_PYTHON:-$root/.venv/bin/python}"
[ -x "$py" ] || py="$(command -v python3)"
cd "$root"
exec "$py" -m pipelines.stack "$@"
