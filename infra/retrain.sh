#!/usr/bin/env bash
# Retrain as CI does (.github/workflows/retrain.yml runs this): dvc pull, lmforge run, dvc push, commit dvc.lock and
# metrics/, `dvc metrics diff` against the starting commit and the registry gate's decisions into a markdown summary
# ($GITHUB_STEP_SUMMARY or --summary PATH). The steps live in pipelines/retrain.py; `bash infra/retrain.sh --help`.
#   bash infra/retrain.sh [--no-commit] [--push] [--skip-ci] [--summary PATH] [--remote NAME] [-- LMFORGE RUN ARGS]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${LMFORGE_PYTHON:-.venv/bin/python}"
if [ ! -x "$PY" ]; then
  echo "retrain: error: $PY not found: run \`bash infra/bootstrap.sh\` first (or set LMFORGE_PYTHON)" >&2
  exit 2
fi
exec "$PY" -m pipelines.retrain "$@"
