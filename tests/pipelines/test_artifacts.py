"""Atomic stage outputs: the previous output or none, never a half; also under SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.artifacts import atomic_write_text, staged_output, write_metrics


def _tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_success_replaces_previous_output(tmp_path: Path) -> None:
    final = tmp_path / "data" / "raw"
    with staged_output(final) as out:
        (out / "a.txt").write_text("one")
    with staged_output(final) as out:
        assert out != final and not (out / "a.txt").exists()
        (out / "b.txt").write_text("two")
    assert _tree(final) == {"b.txt": b"two"}
    assert sorted(p.name for p in final.parent.iterdir()) == ["raw"]


def test_failure_keeps_previous_output(tmp_path: Path) -> None:
    final = tmp_path / "raw"
    with staged_output(final) as out:
        (out / "a.txt").write_text("one")
    with pytest.raises(RuntimeError), staged_output(final) as out:
        (out / "a.txt").write_text("half")
        raise RuntimeError("boom")
    assert _tree(final) == {"a.txt": b"one"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_failure_without_previous_output_leaves_none(tmp_path: Path) -> None:
    final = tmp_path / "raw"
    with pytest.raises(ValueError), staged_output(final):
        raise ValueError
    assert list(tmp_path.iterdir()) == []


_WRITER = """
import sys, time
from pathlib import Path
from pipelines.artifacts import staged_output
final = Path(sys.argv[1])
with staged_output(final) as out:
    for i in range(10_000):
        (out / f"part-{i:05d}").write_text("x" * 1000)
        if i == 20:
            print("writing", flush=True)
        time.sleep(0.01)
"""


def test_sigkill_mid_write_leaves_previous_output(tmp_path: Path) -> None:
    final = tmp_path / "raw"
    with staged_output(final) as out:
        (out / "old.txt").write_text("previous")
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(final)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    staging = [p for p in tmp_path.iterdir() if p.name.startswith(".raw.staging-")]
    assert staging and len(list(staging[0].iterdir())) > 10  # really mid-write
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert _tree(final) == {"old.txt": b"previous"}
    # the next run sweeps the abandoned staging directory
    with staged_output(final) as out:
        (out / "new.txt").write_text("next")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
    assert _tree(final) == {"new.txt": b"next"}


def test_metrics_are_sorted_and_atomic(tmp_path: Path) -> None:
    path = write_metrics(tmp_path, "collect", {"b": 2, "a": 1})
    assert path == tmp_path / "metrics" / "collect.json"
    assert path.read_text() == '{\n  "a": 1,\n  "b": 2\n}\n'
    atomic_write_text(path, json.dumps({"c": 3}))
    assert json.loads(path.read_text()) == {"c": 3}
    assert [p.name for p in path.parent.iterdir()] == ["collect.json"]


def test_resumable_staging_survives_failure_and_is_reused(tmp_path: Path) -> None:
    final = tmp_path / "clean"
    with pytest.raises(RuntimeError), staged_output(final, resume_key="abc") as out:
        (out / "part-00000.parquet").write_text("done shard")
        raise RuntimeError("killed half way")
    assert not final.exists()
    with staged_output(final, resume_key="abc") as out:
        assert (out / "part-00000.parquet").read_text() == "done shard"  # finished work is found again
        (out / "part-00001.parquet").write_text("second")
    assert sorted(p.name for p in final.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    # another key (params or inputs changed) starts from scratch and sweeps the old staging directory
    with pytest.raises(RuntimeError), staged_output(final, resume_key="old") as out:
        (out / "x").write_text("x")
        raise RuntimeError
    with staged_output(final, resume_key="new") as out:
        assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean"]
