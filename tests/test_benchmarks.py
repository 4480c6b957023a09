"""The benchmarks still run (their numbers are not asserted: speed lives in the benchmark's output)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, subprocess_env


def test_collect_benchmark_runs_both_sides_on_the_same_documents(tmp_path: Path) -> None:
    out = tmp_path / "collect.json"
    res = subprocess.run([sys.executable, "-m", "benchmarks.collect", "--docs", "3000", "--json", str(out)],
                         cwd=REPO, env=subprocess_env(HF_HOME=str(tmp_path / "hf")), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    result = json.loads(out.read_text())
    assert result["good_docs"] == 2970  # every 100th line is broken JSON
    assert result["results"]["ours"]["kept"] == result["results"]["baseline_hf_datasets"]["kept"] == 2970
    assert result["ratio_docs_per_cpu_s"] > 0 and "ratio ours/baseline" in res.stdout
