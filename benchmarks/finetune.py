"""finetune, side by side: step throughput of our recipe vs a plain PyTorch loop, and the fine-tuned classifier's
quality vs TF-IDF + logistic regression.

    .venv/bin/python -m benchmarks.finetune [--steps 40] [--repeats 3] [--json FILE] [--quality-only|--speed-only]
                                            [--checkout DIR] [--task doc_section]

Speed (CPU, fp32, 2 torch threads per side, each side in its own process, sides alternating per repeat): our entry
point ``python -m tasks.training.finetune --config run.json`` (DeepSpeed, ZeRO stage 0, the FinetuneSettings
defaults otherwise) against a plain PyTorch loop over the same components: the model from ``load_backbone`` +
``build_multitask``, torch AdamW over ``multitask.param_groups`` (backbone ``lr``, heads ``head_lr``), the same
learning-rate factor, the batches ``TaskBatches`` draws for each step (same tasks, same examples, same order),
the task types' losses, global-norm clipping. Both read their settings from the same run.json.
The inputs are built in a temp dir with project code: a byte-level BPE (vocab 2048) and packed tokens, a random base
Llama the size of params.yaml's (hidden 128, 4 layers, 4 heads, MLP 344, vocab 2048, 256 positions) saved with
``save_pretrained``, and task data written with ``tasks.examples`` (one classification and one sft task of generated
text, 400 training examples each, every example at most max_length 256 tokens). Tokens/s counts the non-pad input
tokens (attention-mask sum) of the steps after the first ``WARMUP``, over the seconds those steps took: ours from its
``tokens_per_second`` log lines (the first log window is the warm-up), plain from its own clock. The recipe times only
the step body, so its evaluations (one before step 0 and one after the last step, which ``eval_every`` cannot turn
off), the last-step checkpoint, the shift report and the export fall outside the timed window; they count only in
wall time and peak memory.

Quality, on the default classification task ``doc_section`` of a checkout where ``lmforge run finetune`` ran: the
exported ``models/finetuned/doc_section`` (``AutoModelForSequenceClassification``) against TF-IDF (word 1-2 grams)
+ logistic regression fitted on train with C chosen on val by macro-F1; accuracy and macro-F1 on the test split.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WARMUP = 5
"""Untimed steps at the start of each side (also ours' log interval, so its first log window is the warm-up)."""
THREADS = 2
SHAPE = {"vocab_size": 2048, "hidden_size": 128, "num_layers": 4, "num_heads": 4, "num_kv_heads": 4,
         "intermediate_size": 344, "max_position_embeddings": 256}
"""params.yaml's pretrain.model (and tokenizer.vocab_size, pretrain.context)."""
MAX_LENGTH = 256
TRAIN_EXAMPLES, EVAL_EXAMPLES = 400, 32
CLS_LABELS = ("alpha", "beta", "gamma")
TASK = "doc_section"
C_GRID = (0.1, 1.0, 10.0, 100.0)
TARGET_RATIO = 0.95
SPREAD_LIMIT = 1.25
"""Per-repeat ratios further apart than this factor make the comparison inconclusive (a shared, drifting machine)."""
EVAL_IN_WINDOW = ("none: eval_every and checkpoint_every are beyond the run, so the recipe evaluates only before step "
                  "0 and after the last step (eval_max_examples 8 per task; it cannot be turned off), checkpoints and "
                  "exports once at the end; all of it outside the step body the recipe times")


# ---------------------------------------------------------------------------------------------------------- inputs

def _words(rng: random.Random, n: int) -> list[str]:
    """``n`` distinct pronounceable pseudo-words (enough merges for a 2048-token BPE)."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + ["th", "sh", "ch", "qu", "x"]
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choices(syllables, k=rng.randint(1, 4))))
    return sorted(out)


def _sentence(rng: random.Random, vocab: list[str], weights: list[float], n: int) -> str:
    words = rng.choices(vocab, weights=weights, k=n)
    return " ".join(words).capitalize() + "."


def make_inputs(root: Path) -> dict[str, Path]:
    """Tokenizer, packed tokens, a base Llama saved like ``models/base``, and two tasks' data under ``root``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    import transformers
    from transformers import AutoTokenizer

    from tasks.examples import write_manifest, write_rows
    from tasks.modeling.llama import build_llama
    from tasks.tokenizer.bpe import train_tokenizer
    from tasks.tokenizer.packing import pack_splits

    transformers.utils.logging.disable_progress_bar()
    rng = random.Random(0)
    vocab = _words(rng, 3000)
    zipf = [1.0 / (i + 1) for i in range(len(vocab))]
    for split, n in (("train", 1500), ("val", 100)):
        texts = [" ".join(_sentence(rng, vocab, zipf, rng.randint(6, 20)) for _ in range(rng.randint(5, 15)))
                 for _ in range(n)]
        (root / "dedup" / split).mkdir(parents=True)
        pq.write_table(pa.table({"id": [str(i) for i in range(n)], "text": texts}),
                       root / "dedup" / split / "part-00000.parquet")
    tok_dir, tokens_dir, base_dir = root / "tokenizer", root / "tokens", root / "base"
    train_tokenizer(train_dir=root / "dedup" / "train", out_dir=tok_dir, vocab_size=SHAPE["vocab_size"])
    pack_splits(split_dirs={s: root / "dedup" / s for s in ("train", "val")}, tokenizer_dir=tok_dir,
                out_dir=tokens_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(0)
    model = build_llama(**{**SHAPE, "vocab_size": max(SHAPE["vocab_size"], len(tokenizer))},
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(str(base_dir))
    tokenizer.save_pretrained(str(base_dir))

    # one classification task (the label shifts which words are frequent) and one sft task, lengths up to ~250 tokens
    favoured = {label: set(rng.sample(range(len(vocab)), len(vocab) // 7)) for label in CLS_LABELS}
    topical = {label: [w * (3.0 if i in favoured[label] else 1.0) for i, w in enumerate(zipf)]
               for label in CLS_LABELS}

    def fits(*texts: str) -> bool:
        return sum(len(tokenizer(t)["input_ids"]) for t in texts) + 8 <= MAX_LENGTH  # + the prompt layout, EOS

    def cls_rows(n: int, tag: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        while len(rows) < n:
            label = rng.choice(CLS_LABELS)
            text = " ".join(_sentence(rng, vocab, topical[label], rng.randint(5, 15)) for _ in range(rng.randint(1, 8)))
            if fits(text):
                rows.append({"id": f"{tag}-{len(rows)}", "text": text, "label": label})
        return rows

    def sft_rows(n: int, tag: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        while len(rows) < n:
            prompt = _sentence(rng, vocab, zipf, rng.randint(4, 25))
            response = " ".join(_sentence(rng, vocab, zipf, rng.randint(5, 15)) for _ in range(rng.randint(1, 6)))
            if fits(prompt, response):
                rows.append({"id": f"{tag}-{len(rows)}", "prompt": prompt, "response": response})
        return rows

    examples = root / "examples"
    manifest = {}
    for name, kind, make in (("topic", "classification", cls_rows), ("complete", "sft", sft_rows)):
        splits = {s: make(TRAIN_EXAMPLES if s == "train" else EVAL_EXAMPLES, f"{name}-{s}")
                  for s in ("train", "val", "test")}
        for split, rows in splits.items():
            write_rows(examples / name / f"{split}.jsonl", rows)
        labels = list(CLS_LABELS) if kind == "classification" else None
        manifest[name] = {"type": kind, "weight": 1.0, "labels": labels,
                          "splits": {s: len(r) for s, r in splits.items()}, "quarantined": {}, "augmented": 0,
                          "label_counts": {s: {k: sum(r["label"] == k for r in rows) for k in CLS_LABELS}
                                           for s, rows in splits.items()} if labels else None}
    write_manifest(examples, manifest)
    return {"root": root, "tokenizer": tok_dir, "tokens": tokens_dir, "base": base_dir, "examples": examples}


def write_run_config(inputs: dict[str, Path], run: Path, steps: int) -> Path:
    """The recipe's run.json: FinetuneSettings defaults, except fp32, 2 threads, nothing periodic in the run, and padded
    batches (the plain loop draws TaskBatches' padded ones: both sides train on the same batches; packing has its own
    benchmark, benchmarks/packing.py)."""
    cfg = {"examples_dir": str(inputs["examples"]), "base_model_dir": str(inputs["base"]),
           "tokenizer_dir": str(inputs["tokenizer"]), "tokens_dir": str(inputs["tokens"]),
           "out_dir": str(run / "model"), "checkpoint_dir": str(run / "ckpt"), "plots_dir": str(run / "plots"),
           "steps": steps, "warmup_steps": min(20, steps // 2), "max_length": MAX_LENGTH, "zero_stage": 0,
           "precision": "fp32", "threads": THREADS, "log_every": WARMUP, "eval_every": 1_000_000,
           "eval_max_examples": 8, "checkpoint_every": 1_000_000, "keep_checkpoints": 1,
           "early_stopping": {"enabled": False}, "sample_max_new_tokens": 8, "packing": False}
    run.mkdir(parents=True, exist_ok=True)
    (run / "run.json").write_text(json.dumps(cfg, indent=2))
    return run / "run.json"


def _setup(config: Path) -> tuple[Any, dict[str, Any], Any, dict[str, list[str]]]:
    """(cfg, tasks, TaskBatches, labels) exactly as the recipe builds them from its run config."""
    from transformers import AutoTokenizer

    from tasks.examples import load_split
    from tasks.modeling.encoding import TaskBatches, check_tasks, encode
    from tasks.training.blocks import load_config
    from tasks.training.finetune import FinetuneConfig

    cfg = load_config(config, FinetuneConfig)
    tasks = check_tasks(cfg.examples_dir)
    names = sorted(tasks)
    kinds = {t: tasks[t]["type"] for t in names}
    labels = {t: list(tasks[t]["labels"]) for t in names if kinds[t] == "classification"}
    tokenizer = AutoTokenizer.from_pretrained(str(cfg.tokenizer_dir))
    train = {t: encode(load_split(cfg.examples_dir, t, "train"), kind=kinds[t], tokenizer=tokenizer,
                       max_length=cfg.max_length, labels=labels.get(t), eos_id=tokenizer.eos_token_id) for t in names}
    batches = TaskBatches(train, kinds=kinds, weights={t: float(tasks[t].get("weight", 1.0)) for t in names},
                          batch_size=cfg.batch_size, seed=cfg.seed, pad_id=tokenizer.pad_token_id,
                          balanced=cfg.sampling == "balanced")
    return cfg, tasks, batches, labels


def step_tokens(config: Path) -> dict[str, Any]:
    """Non-pad input tokens and the task of every step the run draws (both sides must see exactly these)."""
    cfg, _, batches, _ = _setup(config)
    tokens, tasks = [], []
    for step in range(cfg.steps):
        task, (_, mask, _) = batches.batch(step, 0)
        tokens.append(int(mask.sum()))
        tasks.append(task)
    return {"tokens": tokens, "tasks": tasks}


# ----------------------------------------------------------------------------------------------------------- sides

def plain_loop(config: Path, steps_info: dict[str, Any]) -> dict[str, Any]:
    """The baseline: the recipe's model, groups, batches and losses in a plain torch AdamW loop."""
    import torch

    from tasks.modeling.heads import build_multitask, load_backbone, param_groups
    from tasks.modeling.tasktypes import task_type
    from tasks.training.schedule import lr_factor, set_scaled_lr

    cfg, _, batches, labels = _setup(config)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    llama = load_backbone(cfg.base_model_dir, attention_dropout=cfg.dropout)
    model = build_multitask(llama, heads={t: len(labels[t]) for t in labels}, dropout=cfg.dropout,
                            pad_token_id=batches.pad_id)
    model.train()
    opt = torch.optim.AdamW(param_groups(model, lr=cfg.lr, head_lr=cfg.head_lr, weight_decay=cfg.weight_decay),
                            lr=cfg.lr, betas=cfg.betas)
    tokens, seen, losses = 0, [], []
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        if step == WARMUP:
            t0, tokens = time.perf_counter(), 0
        set_scaled_lr(opt, lr_factor(step, warmup_steps=cfg.warmup_steps, steps=cfg.steps, decay=cfg.schedule,
                                     min_ratio=cfg.min_lr_ratio))
        task, (x, mask, y) = batches.batch(step, 0)
        out = model(input_ids=x, attention_mask=mask, task=task)
        loss = task_type(batches.kinds[task]).loss(out, y)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        tokens += int(mask.sum())
        seen.append(task)
    seconds = time.perf_counter() - t0
    if seen != steps_info["tasks"] or tokens != sum(steps_info["tokens"][WARMUP:]):
        raise RuntimeError("the plain loop drew other batches than TaskBatches' schedule")
    per_task = {t: statistics.fmean(v for v, s in zip(losses[:WARMUP], seen, strict=False) if s == t)
                for t in set(seen[:WARMUP])}  # as the recipe's first log line: a mean per task, then over tasks
    return {"tokens_per_s": tokens / seconds, "timed_tokens": tokens, "timed_seconds": seconds,
            "first_window_loss": statistics.fmean(per_task.values())}


def ours(config: Path, steps_info: dict[str, Any]) -> dict[str, Any]:
    """Our entry point in a subprocess; tokens/s of the log windows after the first (the warm-up)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "LMFORGE_LAUNCH_TIME", "MLFLOW_RUN_ID")}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "tasks.training.finetune", "--config", str(config)], cwd=REPO,
                         capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(out.stdout[-3000:] + out.stderr[-3000:])
    windows = []  # (steps done at the log line, {field: value} of the line)
    for line in out.stdout.splitlines():
        if "tokens_per_second" in line and line.startswith("step"):
            fields = [f.strip().split(" ") for f in line.split("|")]
            windows.append((int(fields[0][-1]), {f[0]: float(f[-1]) for f in fields[1:]}))
    done = [s for s, _ in windows]
    if not windows or done[0] != WARMUP:
        raise RuntimeError(f"expected a log line after the {WARMUP} warm-up steps, got steps {done}")
    timed_tokens, timed_seconds, prev = 0, 0.0, WARMUP
    for s, f in windows[1:]:
        n = sum(steps_info["tokens"][prev:s])
        timed_tokens, timed_seconds, prev = timed_tokens + n, timed_seconds + n / f["tokens_per_second"], s
    stats = json.loads((Path(json.loads(config.read_text())["checkpoint_dir"]) / "run_stats.json").read_text())
    # the recipe's whole-run count (warm-up included) must be the same non-pad token count we compute
    counted = stats["tokens_per_second"] * stats["train_seconds"]
    if abs(counted - sum(steps_info["tokens"])) > 0.01 * sum(steps_info["tokens"]):
        raise RuntimeError(f"the recipe counted {counted:.0f} tokens, TaskBatches' schedule has "
                           f"{sum(steps_info['tokens'])}")
    first = windows[0][1]
    first_loss = statistics.fmean(v for k, v in first.items() if k.startswith("train_loss_"))
    return {"tokens_per_s": timed_tokens / timed_seconds, "timed_tokens": timed_tokens, "timed_seconds": timed_seconds,
            "run_stats_tokens_per_s_with_warmup": stats["tokens_per_second"], "wall_s": wall,
            "first_window_loss": first_loss}


def _child(side: str, config: Path, steps_file: Path) -> None:
    steps_info = json.loads(steps_file.read_text())
    result = (plain_loop if side == "plain" else ours)(config, steps_info)
    # plain: this process; ours: the recipe's process (this one only waits for it)
    who = resource.RUSAGE_SELF if side == "plain" else resource.RUSAGE_CHILDREN
    print(json.dumps({**result, "peak_rss_mb": resource.getrusage(who).ru_maxrss / 1024}))


def _measure(side: str, config: Path, steps_file: Path) -> dict[str, Any]:
    res = subprocess.run([sys.executable, "-m", "benchmarks.finetune", "--child", side, str(config), str(steps_file)],
                         cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"benchmarks.finetune: the {side} side failed:\n{res.stdout[-3000:]}{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in runs[0] if isinstance(runs[0][k], (int, float))]
    return {**{k: statistics.median(r[k] for r in runs) for k in keys},
            "tokens_per_s_runs": [round(r["tokens_per_s"], 1) for r in runs]}


def speed(steps: int, repeats: int) -> dict[str, Any]:
    """Both sides ``repeats`` times, alternating, on inputs built once in a temp dir; medians."""
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-ft-") as tmp:
        inputs = make_inputs(Path(tmp))
        config = write_run_config(inputs, Path(tmp) / "runs" / "probe", steps)
        info = step_tokens(config)
        steps_file = Path(tmp) / "steps.json"
        steps_file.write_text(json.dumps(info))
        runs: dict[str, list[dict[str, Any]]] = {"plain_adamw": [], "ours_deepspeed": []}
        for r in range(repeats):  # alternate so a drifting machine load hits both alike
            runs["plain_adamw"].append(_measure("plain", config, steps_file))
            runs["ours_deepspeed"].append(_measure("ours", write_run_config(inputs, Path(tmp) / "runs" / f"ours-{r}",
                                                                            steps), steps_file))
        cfg = json.loads(config.read_text())
        tasks = json.loads((inputs["examples"] / "manifest.json").read_text())["tasks"]
    results = {side: _median(r) for side, r in runs.items()}
    ratio = results["ours_deepspeed"]["tokens_per_s"] / results["plain_adamw"]["tokens_per_s"]
    # each repeat's pair ran back to back: their ratio is less exposed to a load that drifts between repeats
    paired = [o["tokens_per_s"] / p["tokens_per_s"] for p, o in zip(runs["plain_adamw"], runs["ours_deepspeed"],
                                                                     strict=True)]
    spread = max(paired) / min(paired)
    verdict = (f"inconclusive: the per-repeat ratios range {min(paired):.2f}-{max(paired):.2f}, the machine's load "
               "changed during the run; re-run on a quiet machine (or with more --repeats)" if spread > SPREAD_LIMIT
               else f"{'meets' if ratio >= TARGET_RATIO else 'misses'} the target >= {TARGET_RATIO}")
    return {"verdict": verdict,
            "model": {**SHAPE, "params_note": "params.yaml pretrain.model"}, "steps": steps, "warmup_steps_untimed":
            WARMUP, "repeats": repeats, "threads": THREADS, "precision": "fp32", "zero_stage": 0,
            "batch_size": cfg.get("batch_size", 16), "max_length": MAX_LENGTH,
            "tasks": {t: {"type": e["type"], "splits": e["splits"]} for t, e in tasks.items()},
            "steps_per_task": {t: info["tasks"].count(t) for t in sorted(set(info["tasks"]))},
            "timed_tokens": sum(info["tokens"][WARMUP:]), "eval_in_timed_window": EVAL_IN_WINDOW,
            "results": results, "ratio": ratio, "ratio_runs": [round(x, 3) for x in paired],
            "ratio_paired_median": statistics.median(paired), "target_ratio": TARGET_RATIO}


# --------------------------------------------------------------------------------------------------------- quality

def _scores(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))}


Split = tuple[list[str], list[str]]
"""(texts, labels) of one split."""


def _split(task_dir: Path, split: str) -> Split:
    from tasks.examples import read_rows

    rows = list(read_rows(task_dir / f"{split}.jsonl"))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def tfidf_baseline(task_dir: Path, labels: list[str]) -> dict[str, Any]:
    """TF-IDF + logistic regression on ``task_dir``'s train/val/test jsonl files (see :func:`tfidf_logreg`)."""
    train, val, test = (_split(task_dir, s) for s in ("train", "val", "test"))
    return tfidf_logreg(train, val, test, labels)


def tfidf_logreg(train: Split, val: Split, test: Split, labels: list[str]) -> dict[str, Any]:
    """TF-IDF (word 1-2 grams, sublinear tf) + logistic regression: fit on train, C by val macro-F1, test scores.

    Args:
        train: (texts, labels) to fit on.
        val: (texts, labels) that choose C from ``C_GRID``.
        test: (texts, labels) scored.
        labels: the label set (macro-F1 averages over all of them).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = train, val, test
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    matrix = vec.fit_transform(x_train)
    val_f1, fitted = {}, {}
    for c in C_GRID:
        fitted[c] = LogisticRegression(C=c, max_iter=5000).fit(matrix, y_train)
        val_f1[c] = _scores(y_val, list(fitted[c].predict(vec.transform(x_val))), labels)["macro_f1"]
    best = max(C_GRID, key=lambda c: (val_f1[c], -c))  # ties: the stronger regularisation
    scores = _scores(y_test, list(fitted[best].predict(vec.transform(x_test))), labels)
    return {**scores, "C": best, "val_macro_f1_by_C": {str(c): v for c, v in val_f1.items()},
            "test_examples": len(y_test), "features": len(vec.vocabulary_)}


def finetuned_scores(task_dir: Path, model_dir: Path, labels: list[str], batch_size: int = 16) -> dict[str, Any]:
    """The exported classifier on ``task_dir``'s test split (see :func:`classifier_scores`)."""
    texts, gold = _split(task_dir, "test")
    return classifier_scores(model_dir, texts, gold, labels, batch_size)


def classifier_scores(model_dir: Path, texts: list[str], gold: list[str], labels: list[str],
                      batch_size: int = 16) -> dict[str, Any]:
    """An exported classifier, loaded as a user would (``AutoModelForSequenceClassification``), scored on ``texts``
    against ``gold`` (right-padded batches, as the recipe); texts past the model's positions are cut and counted."""
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if sorted(names) != sorted(labels):
        raise SystemExit(f"benchmarks: {model_dir} predicts {names}, the task's labels are {labels}: "
                         "re-run `lmforge run finetune` so model and data match")
    limit = int(getattr(model.config, "max_position_embeddings", 0) or 1_000_000)
    predictions, truncated = [], 0
    torch.set_num_threads(THREADS)
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            ids = [tokenizer(t)["input_ids"] for t in texts[i:i + batch_size]]
            truncated += sum(len(s) > limit for s in ids)
            ids = [s[:limit] for s in ids]
            width = max(len(s) for s in ids)
            x = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(ids), width), dtype=torch.long)
            for j, s in enumerate(ids):
                x[j, :len(s)], mask[j, :len(s)] = torch.tensor(s), 1
            predictions += [names[k] for k in model(input_ids=x, attention_mask=mask).logits.argmax(-1).tolist()]
    return {**_scores(gold, predictions, labels), "test_examples": len(gold), "truncated": truncated,
            "params": sum(p.numel() for p in model.parameters())}


def quality(checkout: Path, task: str = TASK) -> dict[str, Any]:
    """Fine-tuned classifier vs TF-IDF + LR on ``checkout``'s task data; ``{"skipped": why}`` if a run is missing."""
    task_dir, model_dir = checkout / "data" / "finetune" / task, checkout / "models" / "finetuned" / task
    missing = [str(p) for p in (task_dir / "test.jsonl", model_dir / "config.json") if not p.is_file()]
    if missing:
        return {"skipped": f"no {' and no '.join(missing)}: make them with `.venv/bin/lmforge run finetune` "
                           f"(in {checkout}), then re-run this benchmark"}
    manifest = json.loads((checkout / "data" / "finetune" / "manifest.json").read_text())
    labels = list(manifest["tasks"][task]["labels"])
    results = {"finetuned": finetuned_scores(task_dir, model_dir, labels), "tfidf_logreg": tfidf_baseline(task_dir,
                                                                                                          labels)}
    summary = checkout / "models" / "finetuned" / "finetune_summary.json"
    if summary.is_file():  # what the recipe itself measured on the exported model (its encode drops too-long rows)
        test = json.loads(summary.read_text())["tasks"].get(task, {}).get("test", {})
        results["finetuned"]["recipe_summary_test"] = {k: test.get(k) for k in ("accuracy", "macro_f1", "examples")}
    return {"task": task, "checkout": str(checkout), "labels": labels, "results": results,
            "winner": _winner(results)}


def _winner(results: dict[str, Any]) -> str:
    ft, tf = results["finetuned"], results["tfidf_logreg"]
    diff = ft["macro_f1"] - tf["macro_f1"]
    if abs(diff) < 1e-9:
        return f"tie on test macro-F1 ({ft['macro_f1']:.3f})"
    who = "the fine-tuned classifier" if diff > 0 else "TF-IDF + logistic regression"
    return (f"{who} wins on test macro-F1 by {abs(diff):.3f} ({ft['macro_f1']:.3f} vs {tf['macro_f1']:.3f}); "
            f"accuracy {ft['accuracy']:.3f} vs {tf['accuracy']:.3f}")


# ------------------------------------------------------------------------------------------------------------ main

def _machine() -> str:
    import platform

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {THREADS} torch threads per side "
            "(the machine may be shared: numbers are medians of alternating repeats)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40, help=f"optimizer steps per side (first {WARMUP} untimed)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per side, alternating; medians are reported")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "finetune.json",
                    help="results file (default benchmarks/results/finetune.json)")
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--quality-only", action="store_true", help="only the classifier vs TF-IDF comparison")
    only.add_argument("--speed-only", action="store_true", help="only the throughput comparison")
    ap.add_argument("--checkout", type=Path, default=REPO, help="where data/finetune and models/finetuned are "
                    "(default: this checkout)")
    ap.add_argument("--task", default=TASK, help=f"the classification task of the quality part (default {TASK})")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return 0
    if args.steps < 2 * WARMUP:
        ap.error(f"--steps must be at least {2 * WARMUP}")
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    out: dict[str, Any] = {"machine": _machine()}
    if not args.speed_only:
        out["quality"] = quality(args.checkout.resolve(), args.task)
        if "skipped" in out["quality"] and args.quality_only:
            print(f"benchmarks.finetune: quality: {out['quality']['skipped']}", file=sys.stderr)
            return 2
    if not args.quality_only:
        out["speed"] = speed(args.steps, args.repeats)
    print(f"finetune benchmark on {out['machine']}")
    if "speed" in out:
        s, r = out["speed"], out["speed"]["results"]
        print(f"speed: {s['tasks'].__len__()} tasks (classification + sft), Llama hidden 128 x 4 layers, vocab 2048, "
              f"batch {s['batch_size']}, max_length {MAX_LENGTH}, fp32, {s['steps']} steps ({WARMUP} untimed), "
              f"median of {s['repeats']} alternating runs per side")
        print(f"{'side':<28}{'tok/s':>9}{'peak RSS MB':>13}{'1st-window loss':>17}  runs tok/s")
        for side, label in (("plain_adamw", "plain torch AdamW"), ("ours_deepspeed", "ours (DeepSpeed ZeRO-0)")):
            print(f"{label:<28}{r[side]['tokens_per_s']:>9.0f}{r[side]['peak_rss_mb']:>13.0f}"
                  f"{r[side]['first_window_loss']:>17.4f}  {r[side]['tokens_per_s_runs']}")
        print(f"ratio ours/plain {s['ratio']:.3f} (of the medians); per repeat {s['ratio_runs']}, their median "
              f"{s['ratio_paired_median']:.3f}: {s['verdict']}")
        print(f"ours' wall per run {r['ours_deepspeed']['wall_s']:.0f} s (start-up, evaluations before step 0 and "
              "after the last, checkpoint and export: outside the timed steps)")
    if "quality" in out:
        q = out["quality"]
        if "skipped" in q:
            print(f"quality: skipped: {q['skipped']}")
        else:
            ft, tf = q["results"]["finetuned"], q["results"]["tfidf_logreg"]
            print(f"quality: task {q['task']} ({len(q['labels'])} labels), test split of {q['checkout']}")
            print(f"{'model':<34}{'accuracy':>10}{'macro-F1':>10}{'examples':>10}")
            print(f"{'fine-tuned classifier':<34}{ft['accuracy']:>10.3f}{ft['macro_f1']:>10.3f}"
                  f"{ft['test_examples']:>10}")
            print(f"{'TF-IDF + logreg (C=' + str(tf['C']) + ')':<34}{tf['accuracy']:>10.3f}{tf['macro_f1']:>10.3f}"
                  f"{tf['test_examples']:>10}")
            print(f"winner: {q['winner']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
