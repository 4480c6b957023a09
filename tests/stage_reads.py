"""What each stage's flow reads, recorded while the flow tests run it on tiny data, against its dvc.yaml deps.

DVC re-runs a stage when a dep changes; a file the stage reads that is no dep changes its output without making it
stale (issue 23: evaluate read ``metrics/distill.json``). An audit hook (PEP 578), installed once per test process,
sees every ``open``, directory listing, ``mkdir`` and rename made through Python. While a Prefect flow named like a
dvc.yaml stage runs with a ``root`` parameter, each one under that root is recorded for the flow run; the tests'
conftest checks the records after every test with :func:`undeclared`, so the flow tests' own runs are the evidence
and no stage runs twice for it.

What a read may touch: the stage's deps (dvc.yaml's code deps and the data deps its params declare, as
``pipelines.versioning.sync_data_deps`` writes them), its outs (their staging and temporary siblings included: a
resumable stage reads back what a killed run of it staged), what the same run wrote or created before reading it
(its own report), and :data:`RUN_STATE`. A listing may also be of a directory that holds an out or something the
run writes (an atomic write sweeps what a killed run left beside its file first; MLflow walks a report directory to
log it); a listing of any other directory is a read, for which files a glob finds is an input too.

Not seen: reads by native code (pyarrow's parquet reader, safetensors, sqlite) and by other processes (training
under DeepSpeed, Dask workers). Those read the large data and model directories, which the deps name as a whole;
the files read from Python are the metrics, configs, manifests and plots, the ones that slip through.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVENTS = frozenset({"open", "os.listdir", "os.scandir", "os.mkdir", "os.rename"})
"""Audit events recorded (``os.replace`` raises ``os.rename``)."""
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
RUN_STATE = {
    "params.yaml": "read as DVC params (each stage's own sections), not as a dep",
    "dvc.yaml": "the stage graph itself (tracking reads the stage's deps and outs from it)",
    "dvc.lock": "DVC's record of the last run",
    ".dvc": "DVC's own state and cache",
    ".dvcignore": "DVC's ignore rules, read when it hashes a dep for the run's lineage",
    ".git": "the commit tagged on MLflow runs",
    "mlruns.db": "the MLflow store", "mlruns": "the MLflow store", "mlartifacts": "MLflow's artifacts",
    ".prefect": "Prefect's state",
    "checkpoints": "training checkpoints: resume state outside DVC (DESIGN: Artifacts)",
    "cache": "the data stages' incremental caches, keyed by content digests: the same output with or without them",
}
"""Paths under the repository a stage may read without declaring them, and why."""
CODE_PACKAGES = ("flows", "tasks", "pipelines")
"""Their Python modules are deps by import, which tests/test_stage_deps.py checks with the import graph."""


@dataclass
class FlowReads:
    """One flow run's file events under its root, in order: ``(kind, absolute path)``, kind read, list or write."""

    stage: str
    root: str
    params: Any
    events: list[tuple[str, str]] = field(default_factory=list)


class Recorder:
    """The process's audit hook and what it recorded, by flow run (start and stop with :meth:`clear`/:attr:`runs`)."""

    def __init__(self) -> None:
        self.runs: dict[Any, FlowReads] = {}
        self._busy = threading.local()

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        """The audit hook: never raises (an exception here would fail the program's own open)."""
        if event not in EVENTS or getattr(self._busy, "on", False):
            return
        self._busy.on = True
        try:
            self._record(event, args)
        except Exception:  # noqa: BLE001 - recording is best effort; the operation must go on
            pass
        finally:
            self._busy.on = False

    def _run(self) -> FlowReads | None:
        context = sys.modules.get("prefect.context")
        ctx = context.FlowRunContext.get() if context else None
        if ctx is None or ctx.flow is None or not ctx.parameters or "root" not in ctx.parameters:
            return None
        key = ctx.flow_run.id if ctx.flow_run is not None else id(ctx)
        if key not in self.runs:
            self.runs[key] = FlowReads(ctx.flow.name, os.path.abspath(ctx.parameters["root"]),
                                       ctx.parameters.get("params"))
        return self.runs[key]

    def _record(self, event: str, args: tuple[Any, ...]) -> None:
        run = self._run()
        if run is None:
            return
        if event == "open":
            path, kind = args[0], "write" if isinstance(args[2], int) and args[2] & _WRITE else "read"
        elif event == "os.mkdir":
            path, kind = args[0], "write"
            if isinstance(path, int | type(None)) or os.path.isdir(path):  # only a directory the run creates
                return
        elif event == "os.rename":
            path, kind = args[1], "write"
        else:
            path, kind = args[0] if args[0] is not None else ".", "list"
        if isinstance(path, int):  # a file descriptor: its path was recorded when it was opened
            return
        path = os.path.abspath(os.fsdecode(path))
        if path == run.root or path.startswith(run.root + os.sep):
            run.events.append((kind, path))


RECORDER = Recorder()
_installed = False


def install() -> Recorder:
    """Install the audit hook once in this process (hooks cannot be removed); returns the recorder."""
    global _installed
    if not _installed:
        sys.addaudithook(RECORDER.hook)
        _installed = True
    return RECORDER


_HIDDEN = re.compile(r"^\.(?P<name>.+)\.(staging|tmp|old)-[^/]*$")
"""``.NAME.staging-KEY`` (pipelines.artifacts.staged_output), ``.NAME.tmp-PID`` and ``.NAME.old-PID`` (tasks.atomic):
NAME being written, or what a killed run left of it (a resumable stage picks its staging directory up again)."""


def _published(rel: Path) -> Path:
    """The path a staging or temporary path becomes once published: ``data/.clean.staging-k1/x`` -> ``data/clean/x``."""
    return Path(*[m["name"] if (m := _HIDDEN.match(part)) else part for part in rel.parts])


def _under(rel: Path, entry: str) -> bool:
    parts = Path(entry).parts
    return rel.parts[: len(parts)] == parts


def declared(run: FlowReads) -> tuple[list[str], list[str]] | None:
    """The stage's deps and outs as ``lmforge`` keeps them in dvc.yaml (code deps from the file, data deps from the
    stage's params where its section declares them); None when the flow is no stage of the root's dvc.yaml."""
    from pipelines.versioning import CODE_PACKAGES as CODE
    from pipelines.versioning import read_stages, stage_data_deps

    spec = read_stages(Path(run.root)).get(run.stage)
    if spec is None:
        return None
    deps = list(spec.deps)
    wanted = stage_data_deps(run.params, run.stage, Path(run.root))
    if wanted is not None:
        deps = [d for d in deps if Path(d).parts[0] in CODE] + wanted
    return deps, list(spec.outs)


def undeclared(run: FlowReads) -> list[str]:
    """The paths (relative to the root) the run read or listed that are neither its deps, its outs, what it wrote
    before, nor :data:`RUN_STATE`; sorted, each once."""
    spec = declared(run)
    if spec is None:
        return []
    deps, outs = spec
    root = Path(run.root)
    allowed = [*deps, *outs, *RUN_STATE]
    written: list[Path] = []
    writes = [str(_published(Path(p).relative_to(root))) for kind, p in run.events if kind == "write" and p != run.root]
    bad: set[str] = set()
    for kind, path in run.events:
        rel = _published(Path(path).relative_to(root) if path != run.root else Path())
        if kind == "write":
            written.append(rel)
            continue
        if rel.parts and rel.parts[0] in CODE_PACKAGES and (rel.suffix in (".py", ".pyc") or "__pycache__" in
                                                            rel.parts):
            continue
        if any(_under(rel, str(w)) for w in written) or any(_under(rel, a) for a in allowed):
            continue
        if kind == "read" and Path(path).is_dir():  # a directory opened to fsync it after a write: no content read
            continue
        if kind == "list" and any(_under(Path(o), rel.as_posix()) for o in [*outs, *writes]):
            continue  # a directory the run writes into: swept of what a killed run left there, walked to log its files
        bad.add(f"{rel.as_posix() or '.'} ({kind})")
    return sorted(bad)
