"""Fixed start-up cost per stage: the data stages on a tiny corpus, inside one ``lmforge run`` and each alone.

    .venv/bin/python -m benchmarks.startup [--docs 200] [--repeats 3] [--rerun STAGE] [--source PATH] [--label NAME]
                                           [--baseline PATH [--baseline-label NAME]]
                                           [--json benchmarks/results/startup.json]

On a tiny corpus (``--docs`` generated English prose documents, about 1 KB each, one shard) a stage's own work
takes well under a second, so what a stage costs is its fixed cost: Prefect subflow and task-runner start-up
(an ephemeral API, a Dask cluster), Great Expectations, MLflow, DVC. Each repeat, in a fresh source-only copy of
``--source`` (default: this checkout; pass an older checkout to measure it side by side):

1. ``python -m pipelines.cli run collect clean dedup tokenizer`` (one process, one Prefect API): wall and CPU
   seconds of the whole command (its children included, ``resource.getrusage``), and per stage the wall and CPU
   time it adds to the run: from the end of the previous stage (the start of the pipeline flow for the first) to
   the end of its own subflow, read from the run's Prefect database, so it covers the DVC staleness check, the
   subflow and the DVC record; CPU seconds of the process tree are sampled every 0.2 s (psutil) and
   interpolated at those instants. What is left, process start (imports, the ephemeral API) and exit, is
   reported apart.
2. what a user who re-runs one stage pays, ``python -m pipelines.cli run STAGE --force`` (``--rerun``, default
   clean) in the same copy, its stores now made: wall and CPU seconds of the whole command, of the stage's subflow,
   and the rest, the command's fixed cost: its start (imports, DVC check, the Prefect API, until the pipeline flow
   starts), the pipeline flow around the subflow (MLflow, DVC record) and its exit (after the pipeline flow ends).
3. each stage's dvc.yaml cmd alone, ``python -m flows.STAGE`` (a fresh process each, so it pays every import
   again): wall and CPU seconds.
4. the import floor: CPU seconds of a bare ``python -c`` importing what every data stage imports besides lmforge's
   own code, and of the Prefect API process's server module; the re-run's fixed cost beyond the two is what
   lmforge itself adds to a one-stage command.

With ``--baseline PATH`` (another checkout, e.g. ``git worktree add /tmp/base <commit>``) both are measured in
the same session, repeat by repeat in alternating order (baseline first in odd repeats, last in even ones), so that
a change in the machine's load falls on both sides alike; a side-by-side table of CPU seconds follows the two
tables, and the JSON gets the baseline's results under ``baseline``.

On a shared, loaded machine wall times stretch with the load; CPU seconds much less (but they too grow with the
load: compare sides measured together). Medians over the repeats; the tables go to stdout, everything to the JSON
file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = ("collect", "clean", "dedup", "tokenizer")
RUN_STATE = ("dvc.lock", "metrics", "mlruns.db", "mlruns", "mlartifacts", ".prefect", "checkpoints", "reports",
             ".dvc-storage", ".dvc/cache", ".dvc/tmp", "benchmarks/results", "data", "models")
"""Never copied: what a run leaves in a checkout (the copy starts as a fresh clone would)."""


def source_copy(source: Path, dest: Path) -> Path:
    """Copy ``source``'s files that git tracks or would track, minus run outputs, into ``dest``; git-commit them."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=source, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for rel in files:
        parts = Path(rel).parts
        if not rel or any(parts[: len(Path(s).parts)] == Path(s).parts for s in RUN_STATE):
            continue
        if (source / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, dest / rel)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@lmforge.invalid"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "benchmark copy"]):
        subprocess.run(git + args, cwd=dest, check=True)
    return dest


def tiny_corpus(repo: Path, docs: int, seed: int = 0) -> None:
    """``docs`` prose documents (one in ten an exact copy) as a jsonl files source, and params that let such a
    small corpus pass the gates."""
    from benchmarks.curation import prose

    rng = random.Random(seed)
    texts = [prose(rng) for _ in range(docs)]
    texts[::10] = texts[1::10][: len(texts[::10])]  # some exact copies: dedup has something to remove
    corpus = repo / "corpus" / "tiny.jsonl"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    params["collect"]["sources"] = [{"name": "tiny", "kind": "files", "paths": ["corpus/*.jsonl"]}]
    params["collect"]["validation"]["min_rows"] = 1
    params["clean"]["validation"]["min_rows"] = 1
    params["dedup"]["validation"]["min_rows"] = 1
    params["tokenizer"]["vocab_size"] = 512
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def _env() -> dict[str, str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1",
           # on a loaded machine the ephemeral API can take longer than Prefect's default 20 s to answer
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    for key in ("PYTHONPATH", "PREFECT_API_URL"):  # the README path: the ephemeral API of each process
        env.pop(key, None)
    return env


def timed(cmd: list[str], cwd: Path) -> dict:
    """Run ``cmd`` to completion; wall and CPU seconds (user + system, its children included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0, started = time.perf_counter(), time.time()
    res = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "started": started, "ended": started + wall}


def _tree_cpu(proc: psutil.Process) -> float:
    """CPU seconds of ``proc`` and its descendants so far (live ones, and the reaped ones through children_*)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def sampled(cmd: list[str], cwd: Path, every: float = 0.2) -> tuple[dict, list[tuple[float, float]]]:
    """:func:`timed`, also sampling the process tree's cumulative CPU seconds: [(unix time, CPU s)]."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0, started = time.perf_counter(), time.time()
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples: list[tuple[float, float]] = [(started, 0.0)]
    ps = psutil.Process(proc.pid)
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read() if proc.stdout else ""), daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            samples.append((time.time(), _tree_cpu(ps)))
        except psutil.Error:
            pass
        time.sleep(every)
    reader.join()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{''.join(chunks)[-5000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    samples.append((started + wall, cpu))
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "started": started, "ended": started + wall}, samples


def _cpu_at(samples: list[tuple[float, float]], when: float) -> float:
    """Cumulative CPU seconds at ``when``, interpolated between samples."""
    for (t0, c0), (t1, c1) in zip(samples, samples[1:], strict=False):
        if t0 <= when <= t1:
            return c0 + (c1 - c0) * ((when - t0) / (t1 - t0) if t1 > t0 else 0.0)
    return samples[-1][1]


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def flow_runs(repo: Path) -> list[dict]:
    """Flow runs in the ephemeral API's database of ``repo`` (name, parent, start and end as Unix times)."""
    with sqlite3.connect(repo / ".prefect" / "prefect.db") as db:
        rows = db.execute("SELECT name, flow_id, start_time, end_time, parent_task_run_id FROM flow_run").fetchall()
        flows = dict(db.execute("SELECT id, name FROM flow").fetchall())
    return [{"flow": flows.get(fid), "start": _ts(start), "end": _ts(end), "nested": parent is not None}
            for _, fid, start, end, parent in rows]


def rerun_side(repo: Path, stage: str) -> dict:
    """``lmforge run STAGE --force`` in a copy whose stores (MLflow, Prefect) a run already made: the whole command,
    the stage's subflow, and the rest (the command's fixed cost)."""
    total, samples = sampled([sys.executable, "-m", "pipelines.cli", "run", stage, "--force"], repo)
    runs = [r for r in flow_runs(repo) if r["start"] is not None and r["start"] >= total["started"]]
    top = next(r for r in runs if r["flow"] == "lmforge" and not r["nested"])
    sub = next(r for r in runs if r["flow"] == stage and r["nested"])
    stage_cpu = _cpu_at(samples, sub["end"]) - _cpu_at(samples, sub["start"])
    start_cpu, exit_cpu = _cpu_at(samples, top["start"]), total["cpu_s"] - _cpu_at(samples, top["end"])
    return {**{k: total[k] for k in ("wall_s", "cpu_s")},
            "stage_wall_s": round(sub["end"] - sub["start"], 2), "stage_cpu_s": round(stage_cpu, 2),
            "fixed_wall_s": round(total["wall_s"] - (sub["end"] - sub["start"]), 2),
            "fixed_cpu_s": round(total["cpu_s"] - stage_cpu, 2),
            "start_s": round(top["start"] - total["started"], 2), "start_cpu_s": round(start_cpu, 2),
            "exit_s": round(total["ended"] - top["end"], 2), "exit_cpu_s": round(exit_cpu, 2)}


def parent_run_start(repo: Path) -> float:
    """When the pipeline's parent MLflow run started (after MLflow opened, and on a fresh store created, its db)."""
    with sqlite3.connect(repo / "mlruns.db") as db:
        (start_ms,) = db.execute("SELECT MIN(r.start_time) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                                 "WHERE t.key = 'lmforge.kind' AND t.value = 'pipeline'").fetchone()
    return float(start_ms) / 1000


def pipeline_side(repo: Path, stages: tuple[str, ...]) -> dict:
    """One ``lmforge run`` of ``stages``: totals, and the wall time each stage adds to it."""
    total, samples = sampled([sys.executable, "-m", "pipelines.cli", "run", *stages], repo)
    runs = flow_runs(repo)
    top = next(r for r in runs if r["flow"] == "lmforge" and not r["nested"])
    ends = {r["flow"]: r["end"] for r in runs if r["flow"] in stages and r["nested"]}
    # the first stage's share starts when the parent run is open: configuring MLflow (creating and migrating a
    # fresh sqlite store: several seconds, once per checkout) is the run's one-time cost, reported apart
    opened = parent_run_start(repo)
    per_stage, per_stage_cpu, prev = {}, {}, opened
    for stage in stages:
        per_stage[stage] = round(ends[stage] - prev, 2)
        per_stage_cpu[stage] = round(_cpu_at(samples, ends[stage]) - _cpu_at(samples, prev), 2)
        prev = ends[stage]
    return {**{k: total[k] for k in ("wall_s", "cpu_s")}, "stage_wall_s": per_stage, "stage_cpu_s": per_stage_cpu,
            "startup_s": round(top["start"] - total["started"], 2),
            "startup_cpu_s": round(_cpu_at(samples, top["start"]), 2),
            "open_tracking_s": round(opened - top["start"], 2),
            "open_tracking_cpu_s": round(_cpu_at(samples, opened) - _cpu_at(samples, top["start"]), 2),
            "exit_s": round(total["ended"] - prev, 2),
            "exit_cpu_s": round(total["cpu_s"] - _cpu_at(samples, prev), 2)}


FLOOR_IMPORTS = {
    # what every data stage's process imports besides lmforge's own code: the components the design names (Great
    # Expectations through tasks.validation, which imports it as the stages do: scipy.stats and altair deferred)
    "libraries": "import tasks.validation, mlflow, prefect, dvc.repo, pandas, pyarrow",
    # what the Prefect API process of an lmforge run imports before it answers (its own interpreter)
    "prefect_server": "import prefect.server.api.server",
}


def import_floor(repo: Path) -> dict:
    """CPU seconds of a bare ``python -c IMPORTS`` for :data:`FLOOR_IMPORTS`: the part of a command's fixed cost
    that is the libraries' own import, which no change in lmforge can remove while it uses them."""
    return {name: timed([sys.executable, "-c", code], repo)["cpu_s"] for name, code in FLOOR_IMPORTS.items()}


def standalone_side(repo: Path, stages: tuple[str, ...]) -> dict:
    """Each stage's dvc.yaml cmd in a process of its own (inputs from the pipeline side's run)."""
    out = {}
    for stage in stages:
        res = timed([sys.executable, "-m", f"flows.{stage}"], repo)
        out[stage] = {k: res[k] for k in ("wall_s", "cpu_s")}
    return out


RERUN_KEYS = ("wall_s", "cpu_s", "stage_wall_s", "stage_cpu_s", "fixed_wall_s", "fixed_cpu_s", "start_s",
              "start_cpu_s", "exit_s", "exit_cpu_s")


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def summarise(repeats: list[dict], stages: tuple[str, ...]) -> dict:
    """Medians over the repeats."""
    pipe = [r["pipeline"] for r in repeats]
    alone = [r["standalone"] for r in repeats]
    return {
        "pipeline": {"wall_s": _median([p["wall_s"] for p in pipe]), "cpu_s": _median([p["cpu_s"] for p in pipe]),
                     "startup_s": _median([p["startup_s"] for p in pipe]),
                     "startup_cpu_s": _median([p["startup_cpu_s"] for p in pipe]),
                     "open_tracking_s": _median([p["open_tracking_s"] for p in pipe]),
                     "open_tracking_cpu_s": _median([p["open_tracking_cpu_s"] for p in pipe]),
                     "exit_s": _median([p["exit_s"] for p in pipe]),
                     "exit_cpu_s": _median([p.get("exit_cpu_s", 0.0) for p in pipe]),
                     "stage_wall_s": {s: _median([p["stage_wall_s"][s] for p in pipe]) for s in stages},
                     "stage_cpu_s": {s: _median([p["stage_cpu_s"][s] for p in pipe]) for s in stages},
                     "mean_stage_wall_s": _median([statistics.mean(p["stage_wall_s"].values()) for p in pipe]),
                     "mean_stage_cpu_s": _median([statistics.mean(p["stage_cpu_s"].values()) for p in pipe]),
                     # the first stage also pays the process's one-time imports (GX, pyarrow, the task modules)
                     "mean_later_stage_wall_s": _median([statistics.mean(list(p["stage_wall_s"].values())[1:] or [0])
                                                         for p in pipe]),
                     "mean_later_stage_cpu_s": _median([statistics.mean(list(p["stage_cpu_s"].values())[1:] or [0])
                                                        for p in pipe])},
        "standalone": {s: {k: _median([a[s][k] for a in alone]) for k in ("wall_s", "cpu_s")} for s in stages
                       if all(s in a for a in alone)},
        "floor": ({k: _median([r["floor"][k] for r in repeats]) for k in FLOOR_IMPORTS}
                  if all(r.get("floor") for r in repeats) else {}),
        "rerun": ({"stage": repeats[0]["rerun"]["stage"],
                   **{k: _median([r["rerun"][k] for r in repeats]) for k in RERUN_KEYS}}
                  if all(r.get("rerun") for r in repeats) else {}),
    }


def table(label: str, summary: dict, stages: tuple[str, ...]) -> str:
    """The medians as a text table."""
    pipe, alone = summary["pipeline"], summary["standalone"]
    lines = [f"{label}: fixed cost per stage, tiny corpus (medians)",
             f"{'stage':<12}{'in lmforge run: wall s':>24}{'CPU s':>8}{'alone (python -m flows.X): wall s':>36}"
             f"{'CPU s':>8}"]
    def alone_cols(values: list[dict]) -> str:
        if not values:
            return f"{'-':>36}{'-':>8}"
        wall, cpu = statistics.mean(v["wall_s"] for v in values), statistics.mean(v["cpu_s"] for v in values)
        return f"{wall:>36.2f}{cpu:>8.2f}"

    for s in stages:
        lines.append(f"{s:<12}{pipe['stage_wall_s'][s]:>24.2f}{pipe['stage_cpu_s'][s]:>8.2f}"
                     f"{alone_cols([alone[s]] if s in alone else [])}")
    lines.append(f"{'mean/stage':<12}{pipe['mean_stage_wall_s']:>24.2f}{pipe['mean_stage_cpu_s']:>8.2f}"
                 f"{alone_cols(list(alone.values()))}")
    lines.append(f"{'mean 2nd..':<12}{pipe['mean_later_stage_wall_s']:>24.2f}{pipe['mean_later_stage_cpu_s']:>8.2f}"
                 f"{alone_cols([alone[s] for s in stages[1:] if s in alone])}")
    lines.append(f"lmforge run {' '.join(stages)}: {pipe['wall_s']:.2f} s wall, {pipe['cpu_s']:.2f} CPU-s; of it "
                 f"process start (imports, Prefect API) {pipe['startup_s']:.2f} s ({pipe['startup_cpu_s']:.2f} "
                 f"CPU-s), opening MLflow (fresh store) {pipe['open_tracking_s']:.2f} s "
                 f"({pipe['open_tracking_cpu_s']:.2f} CPU-s), exit {pipe['exit_s']:.2f} s "
                 f"({pipe['exit_cpu_s']:.2f} CPU-s)")
    if rerun := summary.get("rerun"):
        lines.append(f"lmforge run {rerun['stage']} --force (stores made): {rerun['wall_s']:.2f} s wall, "
                     f"{rerun['cpu_s']:.2f} CPU-s; the {rerun['stage']} subflow {rerun['stage_wall_s']:.2f} s "
                     f"({rerun['stage_cpu_s']:.2f} CPU-s); fixed cost {rerun['fixed_wall_s']:.2f} s "
                     f"({rerun['fixed_cpu_s']:.2f} CPU-s), of it start {rerun['start_s']:.2f} s "
                     f"({rerun['start_cpu_s']:.2f} CPU-s) and exit {rerun['exit_s']:.2f} s ({rerun['exit_cpu_s']:.2f} "
                     "CPU-s)")
    if (floor := summary.get("floor")) and rerun:
        libs, server = floor["libraries"], floor["prefect_server"]
        lines.append(f"import floor (bare python -c): the libraries every stage imports {libs:.2f} CPU-s, the Prefect "
                     f"API process {server:.2f} CPU-s; the one-stage command's fixed cost beyond them "
                     f"{rerun['fixed_cpu_s'] - libs - server:.2f} CPU-s")
    return "\n".join(lines)


def measure_once(source: Path, stages: tuple[str, ...], docs: int, pipeline_only: bool, rerun: str | None) -> dict:
    """One repeat: a fresh source-only copy of ``source`` with the tiny corpus; the pipeline side, the re-run of
    one stage, then each stage alone."""
    with tempfile.TemporaryDirectory(prefix="lmforge-startup-") as tmp:
        repo = source_copy(source, Path(tmp) / "repo")
        tiny_corpus(repo, docs)
        subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
        subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b.invalid", "commit", "-qm", "tiny"],
                       cwd=repo, check=True)
        out = {"pipeline": pipeline_side(repo, stages)}
        if rerun:
            out["rerun"] = {"stage": rerun, **rerun_side(repo, rerun)}
        out["standalone"] = {} if pipeline_only else standalone_side(repo, stages)
        out["floor"] = import_floor(repo)
        return out


def _side(source: Path, label: str | None) -> dict:
    source = source.resolve()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=source, capture_output=True,
                            text=True).stdout.strip()
    return {"label": label or commit or source.name, "source": source, "commit": commit, "repeats": []}


def side_by_side(base: dict, new: dict, stages: tuple[str, ...]) -> str:
    """CPU seconds of two sides measured together: baseline -> new, per stage and for the whole run."""
    b, n = base["summary"], new["summary"]

    def pair(old: float | None, now: float | None) -> str:
        if old is None or now is None:
            return "-"
        return f"{old:.2f} -> {now:.2f}"

    def alone(summary: dict, stage: str | None) -> float | None:
        values = summary["standalone"]
        if stage is not None:
            return values[stage]["cpu_s"] if stage in values else None
        return round(statistics.mean(v["cpu_s"] for v in values.values()), 2) if values else None

    lines = [f"CPU seconds per stage, {base['label']} -> {new['label']} (medians, measured together)",
             f"{'stage':<12}{'in lmforge run':>22}{'alone (python -m flows.X)':>30}"]
    for s in stages:
        lines.append(f"{s:<12}{pair(b['pipeline']['stage_cpu_s'][s], n['pipeline']['stage_cpu_s'][s]):>22}"
                     f"{pair(alone(b, s), alone(n, s)):>30}")
    lines.append(f"{'mean/stage':<12}{pair(b['pipeline']['mean_stage_cpu_s'], n['pipeline']['mean_stage_cpu_s']):>22}"
                 f"{pair(alone(b, None), alone(n, None)):>30}")
    for key, what in (("startup_cpu_s", "process start (imports, Prefect API)"),
                      ("open_tracking_cpu_s", "opening MLflow (fresh store)"), ("exit_cpu_s", "exit"),
                      ("cpu_s", "whole lmforge run")):
        lines.append(f"{what:<40}{pair(b['pipeline'].get(key), n['pipeline'].get(key)):>24}")
    br, nr = b.get("rerun") or {}, n.get("rerun") or {}
    if br and nr:
        lines.append(f"lmforge run {nr['stage']} --force (stores made), CPU-s (wall s)")
        for what, cpu, wall in (("fixed cost (all but the subflow)", "fixed_cpu_s", "fixed_wall_s"),
                                ("of it start", "start_cpu_s", "start_s"), ("of it exit", "exit_cpu_s", "exit_s"),
                                (f"the {nr['stage']} subflow", "stage_cpu_s", "stage_wall_s"),
                                ("whole command", "cpu_s", "wall_s")):
            lines.append(f"{what:<40}{pair(br[cpu], nr[cpu]):>24}{'(' + pair(br[wall], nr[wall]) + ')':>22}")
    return "\n".join(lines)


def main() -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=200, help="documents in the tiny corpus (default 200)")
    ap.add_argument("--repeats", type=int, default=3, help="fresh copies measured (default 3; medians reported)")
    ap.add_argument("--source", type=Path, default=REPO, help="checkout to measure (default: this one)")
    ap.add_argument("--label", default=None, help="name in the table and JSON (default: the source's git commit)")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="a second checkout measured side by side, repeats alternating (e.g. the previous commit)")
    ap.add_argument("--baseline-label", default=None, help="its name (default: its git commit)")
    ap.add_argument("--stages", nargs="+", default=list(STAGES), help="stages to run (default: the data stages)")
    ap.add_argument("--pipeline-only", action="store_true", help="skip the stages alone (python -m flows.X)")
    ap.add_argument("--rerun", default="clean", metavar="STAGE",
                    help="the stage re-run alone with lmforge run STAGE --force after the pipeline (default clean, "
                    "else the last of --stages; 'none' skips it)")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "startup.json")
    args = ap.parse_args()
    stages = tuple(args.stages)
    rerun = None if args.rerun == "none" else args.rerun if args.rerun in stages else stages[-1]
    sides = [_side(args.source, args.label)]
    if args.baseline is not None:
        sides.insert(0, _side(args.baseline, args.baseline_label))
        if sides[0]["label"] == sides[1]["label"]:
            sides[0]["label"] += " (baseline)"
    for i in range(args.repeats):
        for side in sides if i % 2 == 0 else sides[::-1]:
            rep = measure_once(side["source"], stages, args.docs, args.pipeline_only, rerun)
            side["repeats"].append(rep)
            print(f"{side['label']}: repeat {i + 1}/{args.repeats}: {json.dumps(rep)}", file=sys.stderr, flush=True)
    for side in sides:
        side["summary"] = summarise(side["repeats"], stages)
        print(table(side["label"], side["summary"], stages))
    *base, new = sides
    if base:
        print(side_by_side(base[0], new, stages))
    result = {"label": new["label"], "source": str(new["source"]), "commit": new["commit"], "docs": args.docs,
              "stages": list(stages), "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              **new["summary"], "repeats": new["repeats"]}
    if base:
        result["baseline"] = {"label": base[0]["label"], "source": str(base[0]["source"]),
                              "commit": base[0]["commit"], **base[0]["summary"], "repeats": base[0]["repeats"]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
