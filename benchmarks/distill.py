"""distill, side by side in one run: the distilled student against its teacher, the same student trained on hard
labels only (no teacher), and the compressed variants; plus what the teacher-logits cache saves.

    .venv/bin/python -m benchmarks.distill [--checkout DIR] [--steps N] [--task doc_section] [--json FILE]
                                           [--no-cache-side]

On a checkout where ``lmforge run finetune`` ran (default: this one), the distill stage's recipes
(``python -m tasks.training.distill``, then ``tasks.training.compress``) run in subprocesses with the checkout's
params.yaml ``distill`` section, nothing else changed between sides but:

- ``kd``: the section as it is (``alpha`` 0.5: KD term plus hard labels);
- ``hard``: ``alpha`` 0, the same student, initialisation, data order and steps, trained on hard labels only: the
  value of distillation is the difference, not assumed;
- ``cache`` (unless ``--no-cache-side``): ``kd`` with ``cache_teacher`` on, for the cache's build time, the teacher
  work per step live and from the cache, and the break-even step count.

Each side measures every model in the same process the same way (``tasks.modeling.measure.measure_model``: batch-1
CPU latency p50/p95 after warm-up over the test split's first ``latency_examples`` examples, size on disk, quality on
the whole test split), so the speed-up is teacher p50 / student p50 within one process. The goals of the distill
issue are checked on the default classification task: student <= 50% of the teacher's parameters, >= 90% of its
accuracy and macro-F1, >= 1.8x faster at batch 1; int8 >= 2x smaller weights than the float32 student with at most
one accuracy point lost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TASK = "doc_section"
GOALS = {"params_ratio_max": 0.5, "retention_min": 0.9, "speedup_min": 1.8, "int8_size_ratio_min": 2.0,
         "int8_accuracy_drop_max": 0.01}


def side_config(checkout: Path, run: Path, **over: Any) -> Path:
    """The KD recipe's run.json for one side (the flow's own config, params.yaml's distill section, with ``over``)
    and beside it the compress recipe's compress.json, as the distill stage writes them."""
    sys.path.insert(0, str(REPO))
    from flows.distill import run_config
    from pipelines.config import load_params

    cfg = load_params(checkout).distill
    config = run_config(cfg, checkout, out_dir=run / "student", checkpoint_dir=run / "ckpt",
                        plots_dir=run / "plots", run_id="unused", tracking_uri="unused")
    config.update(mlflow=None, **over)
    run.mkdir(parents=True, exist_ok=True)
    (run / "run.json").write_text(json.dumps(config, indent=2))
    (run / "compress.json").write_text(json.dumps({**config, "out_dir": str(run / "model"),
                                                   "student_dir": str(run / "student")}, indent=2))
    return run / "run.json"


def run_side(name: str, config: Path) -> dict[str, Any]:
    """Run the stage's two recipes once (KD, then compress); returns the summary, run stats and wall time."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_RUN_ID", None)
    start = time.perf_counter()
    for recipe, path in (("distill", config), ("compress", config.parent / "compress.json")):
        res = subprocess.run([sys.executable, "-m", f"tasks.training.{recipe}", "--config", str(path)], cwd=REPO,
                             env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"benchmarks.distill: side {name}, {recipe} failed ({res.returncode}):\n"
                             f"{res.stderr[-3000:]}")
    wall = time.perf_counter() - start
    run = config.parent
    summary = json.loads((run / "model" / "distill_summary.json").read_text())
    stats = json.loads((run / "ckpt" / "run_stats.json").read_text())
    return {"wall_s": round(wall, 1), "summary": summary, "run_stats": stats}


def _entry(side: dict[str, Any], model: str, task: str) -> dict[str, Any]:
    entry = dict(side["summary"]["variants"][model][task])
    entry.update(side["run_stats"]["measurements"][model][task])
    return entry


def table(sides: dict[str, dict[str, Any]], task: str) -> list[dict[str, Any]]:
    """One row per (side, model) on ``task``: params, weights size, latency, quality, retention."""
    rows = []
    for name, side in sides.items():
        for model in side["summary"]["variants"]:
            if name != "kd" and model != "student":
                continue  # the other sides differ from kd only in how the student was trained
            e = _entry(side, model, task)
            rows.append({"side": name, "model": model, "params": e["params"], "nonzero": e["nonzero_params"],
                         "weights_bytes": e["weights_bytes"], "p50_ms": e["latency_p50_ms"],
                         "p95_ms": e["latency_p95_ms"], "speedup": e["speedup_p50"],
                         **{k: e["test"].get(k) for k in ("accuracy", "macro_f1", "perplexity")},
                         **{f"retention_{k}": v for k, v in e["retention"].items()}})
    return rows


def goals(sides: dict[str, dict[str, Any]], task: str) -> dict[str, Any]:
    """The distill issue's goals on ``task`` from the kd side, each with its value and whether it is met."""
    kd = sides["kd"]
    teacher, student = _entry(kd, "teacher", task), _entry(kd, "student", task)
    out: dict[str, Any] = {
        "params_ratio": {"value": student["params_ratio"], "met": student["params_ratio"] <= GOALS["params_ratio_max"]},
        "speedup_p50": {"value": student["speedup_p50"], "met": student["speedup_p50"] >= GOALS["speedup_min"]},
    }
    for k, v in student["retention"].items():
        out[f"retention_{k}"] = {"value": v, "met": v is not None and v >= GOALS["retention_min"]}
    if "int8" in kd["summary"]["variants"]:
        int8 = _entry(kd, "int8", task)
        ratio = student["weights_bytes"] / int8["weights_bytes"]
        out["int8_size_ratio"] = {"value": ratio, "met": ratio >= GOALS["int8_size_ratio_min"]}
        if "accuracy" in int8["test"]:
            drop = student["test"]["accuracy"] - int8["test"]["accuracy"]
            out["int8_accuracy_drop"] = {"value": drop, "met": drop <= GOALS["int8_accuracy_drop_max"]}
    if "hard" in sides:
        hard = _entry(sides["hard"], "student", task)
        out["kd_minus_hard"] = {k: student["test"][k] - hard["test"][k] for k in ("accuracy", "macro_f1", "perplexity")
                                if student["test"].get(k) is not None and hard["test"].get(k) is not None}
    out["teacher"] = {k: teacher["test"].get(k) for k in ("accuracy", "macro_f1", "perplexity")}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkout", type=Path, default=REPO, help="where data/finetune and models/finetuned are")
    ap.add_argument("--steps", type=int, default=None, help="student steps per side (default: params.yaml's)")
    ap.add_argument("--task", default=TASK, help=f"task whose goals are checked (default {TASK})")
    ap.add_argument("--no-cache-side", action="store_true", help="skip the teacher-cache side")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "distill.json")
    args = ap.parse_args()
    checkout = args.checkout.resolve()
    missing = [p for p in ("data/finetune/manifest.json", "models/finetuned") if not (checkout / p).exists()]
    if missing:
        print(f"benchmarks.distill: {checkout} lacks {missing}: run `lmforge run finetune` there first",
              file=sys.stderr)
        return 2
    over = {"steps": args.steps} if args.steps else {}
    sides: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-distill-") as tmp:
        plan = {"kd": {}, "hard": {"alpha": 0.0}}
        if not args.no_cache_side:
            plan["cache"] = {"cache_teacher": True, "variants": {"magnitude": {"enabled": False},
                                                                 "structured": {"enabled": False},
                                                                 "int8": {"enabled": False}}}
        for name, changes in plan.items():
            print(f"benchmarks.distill: side {name} ...", flush=True)
            sides[name] = run_side(name, side_config(checkout, Path(tmp) / name, **over, **changes))
    rows, met = table(sides, args.task), goals(sides, args.task)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"distill benchmark on {machine}: task {args.task}, test split of {checkout}")
    print(f"{'side':<6}{'model':<12}{'params':>9}{'nonzero':>9}{'weights KB':>11}{'p50 ms':>8}{'p95 ms':>8}"
          f"{'speedup':>8}{'acc':>7}{'F1':>7}{'ret acc':>8}{'ret F1':>8}")
    for r in rows:
        print(f"{r['side']:<6}{r['model']:<12}{r['params']:>9}{r['nonzero']:>9}{r['weights_bytes'] / 1024:>11.0f}"
              f"{r['p50_ms']:>8.2f}{r['p95_ms']:>8.2f}{r['speedup']:>8.2f}"
              + "".join(f"{r.get(k) or float('nan'):>{w}.3f}" for k, w in
                        (("accuracy", 7), ("macro_f1", 7), ("retention_accuracy", 8), ("retention_macro_f1", 8))))
    for name, value in met.items():
        if isinstance(value, dict) and "met" in value:
            print(f"goal {name:<22} {value['value']:.3f}  {'met' if value['met'] else 'NOT met'}")
    if "kd_minus_hard" in met:
        print("kd - hard-labels student: " + ", ".join(f"{k} {v:+.3f}" for k, v in met["kd_minus_hard"].items()))
    if "cache" in sides:
        c = sides["cache"]["run_stats"]["cache"]
        print(f"teacher cache: built in {c['build_seconds']:.1f} s; teacher work per step live "
              f"{(c['live_teacher_seconds'] / sides['cache']['summary']['cache']['probe_steps']) * 1000:.1f} ms, "
              f"cached {(c['cached_teacher_seconds'] / sides['cache']['summary']['cache']['probe_steps']) * 1000:.1f}"
              f" ms; pays off after {c['break_even_steps']} steps")
    print("wall per side: " + ", ".join(f"{n} {s['wall_s']:.0f} s" for n, s in sides.items()))
    out = {"machine": machine, "task": args.task, "checkout": str(checkout), "goals": GOALS, "rows": rows,
           "checks": met, "sides": {n: {"wall_s": s["wall_s"], "run_stats": s["run_stats"],
                                        "summary": {k: v for k, v in s["summary"].items() if k != "history"}}
                                    for n, s in sides.items()}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
