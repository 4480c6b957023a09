"""The type check: mypy over the paths of ``[tool.mypy] files`` in pyproject.toml (the one list of them), strict.

It runs from a cold cache (a fresh directory per session), as on a fresh clone: about 9 CPU-s, 20-30 s on the
shared 2-core machine (see pyproject.toml for what it analyses and what it leaves out).
"""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO


def checked_files() -> list[Path]:
    """The Python files of ``[tool.mypy] files``."""
    paths = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]["files"]
    out: list[Path] = []
    for p in map(REPO.joinpath, paths):
        out += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return out


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


def mypy(cache_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "mypy"), "--cache-dir", str(cache_dir), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def test_the_checked_code_has_no_type_errors(cache_dir: Path) -> None:
    res = mypy(cache_dir)  # no paths given: mypy checks those of its config, and only those
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == f"Success: no issues found in {len(checked_files())} source files"


def test_the_checker_sees_each_stage_section_of_the_params(cache_dir: Path, tmp_path: Path) -> None:
    # Params declares its stage sections: params.dedup is a DedupParams to mypy, a misspelt section an error
    code = tmp_path / "uses_params.py"
    code.write_text("from pipelines.config import Params\n\n\n"
                    "def perms(params: Params) -> str:\n"
                    "    return params.dedup.minhash.num_perm\n\n\n"
                    "def typo(params: Params) -> object:\n"
                    "    return params.dedupe\n")
    res = mypy(cache_dir, str(code))  # a path given: this file instead of the configured ones
    assert res.returncode == 1, res.stdout + res.stderr
    assert 'error: Incompatible return value type (got "int", expected "str")  [return-value]' in res.stdout
    assert 'error: "Params" has no attribute "dedupe"; maybe "dedup"?  [attr-defined]' in res.stdout
