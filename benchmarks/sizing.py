"""Tokenizer and model size by measurement: validation loss per character reached in a fixed CPU budget.

    .venv/bin/python -m benchmarks.sizing [--budget 60] [--vocabs 259,1024,2048,4096,8192] [--sizes S,M,L]
                                          [--data data/dedup] [--json benchmarks/results/sizing.json]

For each vocabulary size a byte-level BPE is trained on the train split (vocab 259 = the 256 bytes and 3 special
tokens, no merges: a byte-level model) and the train and val splits are packed, with the tokenizer stage's own
code. For each (vocabulary, model size) the pretrain entry point (DeepSpeed ZeRO-2, bf16, 1 process, 2 threads)
trains for as many steps as fit the budget at the rate a short plain-PyTorch probe of the same model measures, with
the default schedule (warmup 10%, cosine), and reports its val loss. Losses are per token, so they are compared per
character: nats/token x val tokens / val characters (a document's EOS counts as one character), as bits per
character. The baseline is the configuration in params.yaml (tokenizer.vocab_size x pretrain.model); the ratio is
each one's bits/char over the baseline's (below 1: better).

The data is the dedup stage's output for the default corpus; when it is missing the command runs
``lmforge run dedup`` first.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SIZES: dict[str, dict[str, int]] = {
    "S": {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 344},
    "M": {"hidden_size": 256, "num_layers": 6, "num_heads": 4, "intermediate_size": 688},
    "L": {"hidden_size": 384, "num_layers": 6, "num_heads": 6, "intermediate_size": 1024},
}
CONTEXT, BATCH, THREADS = 256, 8, 2


def ensure_data(data: Path) -> None:
    """The dedup stage's splits; produced by ``lmforge run dedup`` when absent."""
    if (data / "train").is_dir() and (data / "val").is_dir():
        return
    print(f"{data} is missing: running `lmforge run dedup` first", flush=True)
    subprocess.run([str(Path(sys.executable).parent / "lmforge"), "run", "dedup"], cwd=ROOT, check=True)


def val_chars(split_dir: Path) -> int:
    """Characters of the split's documents, one more per document for the EOS that follows it."""
    import pyarrow.parquet as pq

    total = 0
    for shard in sorted(split_dir.glob("part-*.parquet")):
        texts = pq.read_table(shard, columns=["text"]).column("text").to_pylist()
        total += sum(len(t) for t in texts) + len(texts)
    return total


def prepare_tokens(data: Path, work: Path, vocab: int) -> dict[str, Any]:
    """Train a tokenizer of ``vocab`` ids and pack train/val with it; returns dirs and counts."""
    from tasks.tokenizer.bpe import train_tokenizer
    from tasks.tokenizer.packing import pack_splits
    from tasks.tokens import read_manifest

    tok, tokens = work / f"tokenizer-{vocab}", work / f"tokens-{vocab}"
    train_tokenizer(train_dir=data / "train", out_dir=tok, vocab_size=vocab, min_frequency=2)
    stats = pack_splits(split_dirs={s: data / s for s in ("train", "val")}, tokenizer_dir=tok, out_dir=tokens)
    real_vocab = int(read_manifest(tokens)["vocab_size"])
    return {"tokenizer": tok, "tokens": tokens, "vocab": real_vocab, "val_tokens": int(stats["val"]["tokens"]),
            "train_tokens": int(stats["train"]["tokens"])}


def probe_rate(shape: dict[str, int], vocab: int, steps: int = 6, warmup: int = 2) -> float:
    """Training tokens/s of this model in pure bf16 with torch AdamW (plain PyTorch), after warm-up steps."""
    import torch
    import torch.nn.functional as F

    from tasks.modeling.llama import build_llama

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    model = build_llama(vocab_size=vocab, **shape, num_kv_heads=shape["num_heads"],
                        max_position_embeddings=CONTEXT).to(torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, vocab, (BATCH, CONTEXT + 1))
    t0 = 0.0
    for i in range(steps + warmup):
        if i == warmup:
            t0 = time.perf_counter()
        loss = F.cross_entropy(model(input_ids=x[:, :-1]).logits.float().flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * BATCH * CONTEXT / (time.perf_counter() - t0)


def _train(work: Path, tok: dict[str, Any], size: str, steps: int, attempt: int) -> dict[str, Any]:
    """One run of the pretrain entry point for ``steps``; its summary and timings."""
    shape = SIZES[size]
    eval_batches = max(1, min(32, tok["val_tokens"] // (BATCH * CONTEXT)))  # cover the val split once or more
    run = work / f"run-{tok['vocab']}-{size}-{attempt}"
    cfg = {"tokens_dir": str(tok["tokens"]), "tokenizer_dir": str(tok["tokenizer"]), "out_dir": str(run / "model"),
           "checkpoint_dir": str(run / "ckpt"), "model": {**shape, "max_position_embeddings": CONTEXT},
           "context": CONTEXT, "batch_size": BATCH, "steps": steps, "lr": 1e-3, "min_lr": 1e-4,
           "warmup_steps": max(1, steps // 10), "zero_stage": 2, "precision": "bf16", "threads": THREADS,
           "log_every": max(1, steps // 5), "eval_every": steps, "eval_batches": eval_batches,
           "checkpoint_every": steps, "sample_prompts": []}
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    out = subprocess.run([sys.executable, "-m", "tasks.training.pretrain", "--config", str(run / "run.json")],
                         cwd=ROOT, capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise RuntimeError(f"vocab {tok['vocab']} size {size}: " + out.stdout[-2000:] + out.stderr[-2000:])
    summary = json.loads((run / "model" / "train_summary.json").read_text())
    stats = json.loads((run / "ckpt" / "run_stats.json").read_text())
    shutil.rmtree(run / "ckpt" / f"step{steps}", ignore_errors=True)  # checkpoints are not needed here
    return {**summary, **stats}


def train_one(work: Path, tok: dict[str, Any], size: str, budget: float) -> dict[str, Any]:
    """Train (vocab, size) for about ``budget`` seconds with the pretrain entry point; returns its measures.

    The step count comes from a short probe of the rate; when the run's training time misses the budget by more
    than 15% (a busy machine during the probe), it is run once more with the steps scaled by the miss.
    """
    steps = max(10, int(budget * probe_rate(SIZES[size], tok["vocab"]) / (BATCH * CONTEXT)))
    result = _train(work, tok, size, steps, attempt=0)
    corrected = max(10, round(steps * budget / result["train_seconds"]))
    if abs(result["train_seconds"] / budget - 1) > 0.15 and corrected != steps:
        steps = corrected
        result = _train(work, tok, size, steps, attempt=1)
    loss = float(result["final_val_loss"])
    return {"vocab": tok["vocab"], "size": size, "params": result["params"], "steps": steps,
            "train_seconds": result["train_seconds"], "tokens_per_second": result["tokens_per_second"],
            "val_loss_per_token": loss, "nats_per_char": loss * tok["val_tokens"] / tok["val_chars"],
            "tokens_per_char": tok["val_tokens"] / tok["val_chars"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=60.0, help="training seconds per configuration")
    ap.add_argument("--vocabs", default="259,1024,2048,4096,8192", help="comma-separated vocabulary sizes")
    ap.add_argument("--sizes", default="S,M,L", help=f"comma-separated model sizes from {sorted(SIZES)}")
    ap.add_argument("--data", type=Path, default=ROOT / "data/dedup", help="dedup output (train/ and val/)")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/sizing.json", help="results file")
    args = ap.parse_args()
    try:
        vocabs = sorted({int(v) for v in args.vocabs.split(",")})
    except ValueError:
        ap.error(f"--vocabs: comma-separated integers, got {args.vocabs!r}")
    sizes = [s.strip() for s in args.sizes.split(",")]
    if bad := [s for s in sizes if s not in SIZES]:
        ap.error(f"--sizes: unknown {bad}; choose from {sorted(SIZES)}")
    if min(vocabs) < 259:
        ap.error("--vocabs: at least 259 (256 bytes + 3 special tokens)")

    from pipelines.config import load_params

    params = load_params(ROOT)
    default_shape = params.pretrain.model
    base_vocab = params.tokenizer.vocab_size
    base_size = next((k for k, v in SIZES.items() if all(getattr(default_shape, f) == n for f, n in v.items())), None)
    if base_size is None:  # params.yaml's model is not on the grid: add it as its own size
        SIZES["params"] = {f: getattr(default_shape, f) for f in SIZES["M"]}
        base_size = "params"
    if base_size not in sizes:
        sizes.append(base_size)
    if base_vocab not in vocabs:
        vocabs.append(base_vocab)

    ensure_data(args.data)
    chars = val_chars(args.data / "val")
    rows = []
    with tempfile.TemporaryDirectory(prefix="lmforge-sizing-") as tmp:
        work = Path(tmp)
        for vocab in vocabs:
            tok = {**prepare_tokens(args.data, work, vocab), "val_chars": chars}
            for size in sizes:
                rows.append({"vocab_asked": vocab, **train_one(work, tok, size, args.budget)})
                r = rows[-1]
                print(f"vocab {r['vocab']:>5} size {size:<6} {r['steps']:>5} steps  "
                      f"{r['nats_per_char'] / math.log(2):.3f} bits/char", flush=True)
    base = next(r for r in rows if r["size"] == base_size and r["vocab_asked"] == base_vocab)
    for r in rows:
        r["bits_per_char"] = r["nats_per_char"] / math.log(2)
        r["ratio_to_params_yaml"] = r["nats_per_char"] / base["nats_per_char"]
    best = min(rows, key=lambda r: r["nats_per_char"])
    print(f"\nsizing: val loss per character after ~{args.budget:.0f} s of bf16 ZeRO-2 training each, "
          f"{THREADS} threads, context {CONTEXT}, batch {BATCH}; val split {chars:,} chars")
    print(f"{'vocab':>6}{'size':>7}{'params':>10}{'steps':>7}{'train s':>9}{'tok/s':>8}{'tok/char':>10}"
          f"{'loss/tok':>10}{'bits/char':>11}{'ratio':>7}")
    for r in rows:
        mark = "  <- params.yaml" if r is base else ("  <- best" if r is best else "")
        print(f"{r['vocab']:>6}{r['size']:>7}{r['params'] / 1e6:>9.2f}M{r['steps']:>7}{r['train_seconds']:>9.1f}"
              f"{r['tokens_per_second']:>8.0f}"
              f"{r['tokens_per_char']:>10.3f}{r['val_loss_per_token']:>10.3f}{r['bits_per_char']:>11.3f}"
              f"{r['ratio_to_params_yaml']:>7.3f}{mark}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"budget_seconds": args.budget, "val_chars": chars, "context": CONTEXT,
                                     "batch": BATCH, "sizes": SIZES, "baseline": {"vocab": base["vocab"],
                                                                                  "size": base_size},
                                     "results": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
