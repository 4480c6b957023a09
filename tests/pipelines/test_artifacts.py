"""Atomic stage outputs: the previous output or none, never a half; also under SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.artifacts import (
    PUBLISH_JOURNAL,
    atomic_write_text,
    finish_publication,
    staged_output,
    staged_outputs,
    write_metrics,
)


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


_TOGETHER = """
import os, signal, sys, time
from pathlib import Path
import pipelines.artifacts as artifacts
root, when = Path(sys.argv[1]), sys.argv[2]
renames = []
real = artifacts.replace_dir
def replace_dir(staging, final):  # SIGKILL between the two renames of the publication
    real(staging, final)
    renames.append(final)
    if when == "between":
        os.kill(os.getpid(), signal.SIGKILL)
artifacts.replace_dir = replace_dir
with artifacts.staged_outputs(root, root / "data/task", root / "models/tuned") as (data, model):
    (data / "v.txt").write_text("new data")
    (model / "v.txt").write_text("new model")
    if when == "body":
        print("staged", flush=True)
        time.sleep(600)
"""


def _old_outputs(root: Path) -> None:
    for final, text in ((root / "data/task", "old data"), (root / "models/tuned", "old model")):
        with staged_output(final) as out:
            (out / "v.txt").write_text(text)


def test_outputs_staged_together_survive_a_sigkill_in_the_body_unpublished(tmp_path: Path) -> None:
    # issue 27 item 6: a stage with two outputs (finetune's data and models) publishes both or neither
    _old_outputs(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", _TOGETHER, str(tmp_path), "body"], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout is not None and proc.stdout.readline().strip() == "staged"
    assert (tmp_path / "data/.task.staging-together/v.txt").read_text() == "new data"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _tree(tmp_path / "data/task") == {"v.txt": b"old data"}
    assert _tree(tmp_path / "models/tuned") == {"v.txt": b"old model"}
    assert finish_publication(tmp_path) == []  # nothing was being published
    # the next run's staging starts empty (the killed run's is dropped) and publishes both
    with staged_outputs(tmp_path, tmp_path / "data/task", tmp_path / "models/tuned") as (data, model):
        assert list(data.iterdir()) == [] and list(model.iterdir()) == []
        (data / "v.txt").write_text("next data")
        (model / "v.txt").write_text("next model")
    assert _tree(tmp_path / "data/task") == {"v.txt": b"next data"}
    assert _tree(tmp_path / "models/tuned") == {"v.txt": b"next model"}
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["task"]
    assert not (tmp_path / PUBLISH_JOURNAL).exists()


def test_a_sigkill_between_the_renames_is_finished_by_the_next_command(tmp_path: Path) -> None:
    _old_outputs(tmp_path)
    proc = subprocess.run([sys.executable, "-c", _TOGETHER, str(tmp_path), "between"],
                          cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert proc.returncode == -signal.SIGKILL
    # killed after the first rename: new data beside the old model, and the journal that says what remains
    assert _tree(tmp_path / "data/task") == {"v.txt": b"new data"}
    assert _tree(tmp_path / "models/tuned") == {"v.txt": b"old model"}
    assert (tmp_path / PUBLISH_JOURNAL).is_file()
    assert finish_publication(tmp_path) == [tmp_path / "models/tuned"]  # what `lmforge run` does first
    assert _tree(tmp_path / "models/tuned") == {"v.txt": b"new model"}
    assert not (tmp_path / PUBLISH_JOURNAL).exists() and finish_publication(tmp_path) == []
