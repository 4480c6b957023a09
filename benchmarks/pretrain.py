"""pretrain step throughput, side by side: our entry point (DeepSpeed ZeRO-2, 1 process) vs plain PyTorch AdamW.

    .venv/bin/python -m benchmarks.pretrain [--steps 30] [--precision both] [--json benchmarks/results/pretrain.json]

Both sides train the same Llama (vocab 4096, hidden 256, 6 layers, 4 heads, MLP 688: 5.8M parameters) on the same
seeded windows (context 256, batch 8) of the same token file, each in its own process with 2 torch threads; the
first steps are warm-up and not timed. Reported: tokens/s of both, the ratio ours/plain (target >= 0.9 on CPU) and
peak RSS of each process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPE = {"vocab_size": 4096, "hidden_size": 256, "num_layers": 6, "num_heads": 4, "num_kv_heads": 4,
         "intermediate_size": 688}
CONTEXT, BATCH, WARMUP = 256, 8, 5


def make_tokens(root: Path) -> Path:
    """A tokenizer and packed train/val token files from generated prose (the stages' own code)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.packing import pack_split, token_dtype, token_file, write_manifest
    from tasks.tokenizer import tokenizer_info, train_tokenizer

    rng = random.Random(0)
    words = "the of and to in a is that for it as was with be by on not he this are or his from at".split()
    for split, n in (("train", 3000), ("val", 200)):
        texts = [" ".join(rng.choices(words, k=rng.randint(100, 300))) + "." for _ in range(n)]
        (root / "dedup" / split).mkdir(parents=True)
        pq.write_table(pa.table({"id": [str(i) for i in range(n)], "text": texts}),
                       root / "dedup" / split / "part-00000.parquet")
    tok, tokens = root / "tokenizer", root / "tokens"
    train_tokenizer(train_dir=root / "dedup" / "train", out_dir=tok, vocab_size=512)
    info = tokenizer_info(tok)
    stats = {s: pack_split(split_dir=root / "dedup" / s, tokenizer_dir=tok, out_path=token_file(tokens, s))
             for s in ("train", "val")}
    write_manifest(tokens, splits=stats, dtype=token_dtype(SHAPE["vocab_size"]), vocab_size=int(info["vocab_size"]),
                   eos_id=info["eos_id"], bos_id=info["bos_id"], pad_id=info["pad_id"], tokenizer_dir=tok)
    return root


def plain_loop(root: Path, precision: str, steps: int) -> float:
    """The baseline: a plain PyTorch AdamW loop (bf16 autocast when asked); returns tokens/s after warm-up."""
    import torch
    import torch.nn.functional as F

    from tasks.lm_data import RandomWindows
    from tasks.model import build_llama
    from tasks.packing import load_tokens

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = build_llama(**SHAPE, max_position_embeddings=CONTEXT)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    windows = RandomWindows(load_tokens(root / "tokens", "train"), CONTEXT, BATCH, seed=0)
    t0 = time.perf_counter()
    for step in range(steps):
        if step == WARMUP:
            t0 = time.perf_counter()
        x, y = windows.batch(step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (steps - WARMUP) * BATCH * CONTEXT / (time.perf_counter() - t0)


def ours(root: Path, precision: str, steps: int) -> float:
    """Our entry point, ZeRO-2, one process; returns tokens/s after warm-up (from its log lines)."""
    run = root / f"zero2-{precision}"
    cfg = {"tokens_dir": str(root / "tokens"), "tokenizer_dir": str(root / "tokenizer"), "out_dir": str(run / "model"),
           "checkpoint_dir": str(run / "ckpt"), "model": {**SHAPE, "max_position_embeddings": CONTEXT},
           "context": CONTEXT, "batch_size": BATCH, "steps": steps, "zero_stage": 2, "precision": precision,
           "threads": 2, "log_every": WARMUP, "eval_every": 10_000, "eval_batches": 1, "checkpoint_every": 10_000}
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    out = subprocess.run([sys.executable, "-m", "tasks.training.pretrain", "--config", str(run / "run.json")],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
    rates = [float(line.split("tok/s")[1].split("|")[0]) for line in out.stdout.splitlines() if "tok/s" in line]
    timed = rates[1:] or rates  # the first log window holds the warm-up steps
    return sum(timed) / len(timed)


def _child(side: str, root: Path, precision: str, steps: int) -> None:
    rate = (plain_loop if side == "plain" else ours)(root, precision, steps)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"tokens_per_s": rate, "peak_rss_mb": max(own, kids)}))


def _measure(side: str, root: Path, precision: str, steps: int) -> dict:
    res = subprocess.run([sys.executable, "-m", "benchmarks.pretrain", "--child", side, str(root), precision,
                          str(steps)], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per side (first 5 untimed)")
    ap.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/pretrain.json"), help="results file")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child[0], Path(args.child[1]), args.child[2], int(args.child[3]))
        return 0
    if args.steps <= WARMUP + 1:
        ap.error(f"--steps must be above {WARMUP + 1}")
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    results = {}
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as tmp:
        root = make_tokens(Path(tmp))
        for p in precisions:  # alternate sides so a drifting machine load hits both alike
            results[p] = {"plain_adamw": _measure("plain", root, p, args.steps),
                          "ours_zero2": _measure("ours", root, p, args.steps)}
            results[p]["ratio"] = results[p]["ours_zero2"]["tokens_per_s"] / results[p]["plain_adamw"]["tokens_per_s"]
    print(f"pretrain benchmark: 5.8M-param Llama, context {CONTEXT}, batch {BATCH}, {args.steps} steps, 2 threads")
    print(f"{'precision':<10}{'plain tok/s':>12}{'ZeRO-2 tok/s':>14}{'ratio':>8}{'plain MB':>10}{'ZeRO-2 MB':>11}")
    for p, r in results.items():
        print(f"{p:<10}{r['plain_adamw']['tokens_per_s']:>12.0f}{r['ours_zero2']['tokens_per_s']:>14.0f}"
              f"{r['ratio']:>8.2f}{r['plain_adamw']['peak_rss_mb']:>10.0f}{r['ours_zero2']['peak_rss_mb']:>11.0f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"steps": args.steps, "results": results}, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
