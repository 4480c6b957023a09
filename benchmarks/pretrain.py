"""pretrain step throughput, side by side: our entry point (DeepSpeed ZeRO-2, 1 process) vs plain PyTorch AdamW.

    .venv/bin/python -m benchmarks.pretrain [--steps 30] [--repeats 3] [--precision both] [--json FILE]
    .venv/bin/python -m benchmarks.pretrain --device cuda        # GPT-2-small-sized, context 1024, bf16, with MFU

Both sides train the same Llama on the same seeded windows of the same token file, each in its own process; the
first steps are warm-up and not timed. On CPU (the default): vocab 4096, hidden 256, 6 layers, 4 heads, MLP 688
(5.8M parameters), context 256, batch 8, 2 torch threads. With ``--device cuda``: a GPT-2-small-sized Llama (vocab
50304, hidden 768, 12 layers, 12 heads, SwiGLU MLP 2048: 124M parameters), context 1024, bf16, and model FLOPs
utilisation for both sides on GPUs whose peak is known (tasks.training.telemetry). The plain side uses bf16 autocast
(fused AdamW on GPU). Reported: tokens/s of both, the ratio ours/plain (target >= 0.9 on CPU), peak memory.
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

PRESETS = {
    "cpu": {"shape": {"vocab_size": 4096, "hidden_size": 256, "num_layers": 6, "num_heads": 4, "num_kv_heads": 4,
                      "intermediate_size": 688}, "context": 256, "batch": 8, "name": "5.8M-param Llama"},
    "cuda": {"shape": {"vocab_size": 50304, "hidden_size": 768, "num_layers": 12, "num_heads": 12,
                       "num_kv_heads": 12, "intermediate_size": 2048}, "context": 1024, "batch": 16,
             "name": "GPT-2-small-sized (124M) Llama"},
}
WARMUP = 5
THREADS = 2  # on CPU, both sides


def make_tokens(root: Path) -> Path:
    """A tokenizer and packed train/val token files from generated prose (the stages' own code)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.tokenizer.bpe import train_tokenizer
    from tasks.tokenizer.packing import pack_splits

    rng = random.Random(0)
    words = "the of and to in a is that for it as was with be by on not he this are or his from at".split()
    for split, n in (("train", 3000), ("val", 200)):
        texts = [" ".join(rng.choices(words, k=rng.randint(100, 300))) + "." for _ in range(n)]
        (root / "dedup" / split).mkdir(parents=True)
        pq.write_table(pa.table({"id": [str(i) for i in range(n)], "text": texts}),
                       root / "dedup" / split / "part-00000.parquet")
    tok, tokens = root / "tokenizer", root / "tokens"
    train_tokenizer(train_dir=root / "dedup" / "train", out_dir=tok, vocab_size=512)
    pack_splits(split_dirs={s: root / "dedup" / s for s in ("train", "val")}, tokenizer_dir=tok, out_dir=tokens)
    return root


def plain_loop(root: Path, device: str, precision: str, steps: int) -> dict[str, float]:
    """The baseline: a plain PyTorch AdamW loop (bf16 autocast when asked); tokens/s after warm-up (and MFU)."""
    import torch
    import torch.nn.functional as F

    from tasks.modeling.llama import build_llama, count_params
    from tasks.tokens import load_tokens
    from tasks.training.data import RandomWindows

    preset = PRESETS[device]
    context, batch = preset["context"], preset["batch"]
    if device == "cpu":
        torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    model = build_llama(**preset["shape"], max_position_embeddings=context).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=device == "cuda")
    windows = RandomWindows(load_tokens(root / "tokens", "train"), context, batch, seed=0)
    t0 = time.perf_counter()
    for step in range(steps):
        if step == WARMUP:
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        x, y = (t.to(device, non_blocking=True) for t in windows.batch(step))
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    rate = (steps - WARMUP) * batch * context / (time.perf_counter() - t0)
    out = {"tokens_per_s": rate}
    if device == "cuda":
        from tasks.training.telemetry import mfu, peak_flops

        out["gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
        if peak := peak_flops():
            shape = preset["shape"]
            out["mfu"] = mfu(rate, params=count_params(model), layers=shape["num_layers"],
                             hidden=shape["hidden_size"], context=context, peak_flops=peak)
    return out


def ours(root: Path, device: str, precision: str, steps: int) -> dict[str, float]:
    """Our entry point, ZeRO-2, one process; tokens/s after warm-up (and MFU), from its log lines."""
    preset = PRESETS[device]
    run = Path(tempfile.mkdtemp(prefix=f"zero2-{precision}-", dir=root))  # one per repeat
    cfg = {"tokens_dir": str(root / "tokens"), "tokenizer_dir": str(root / "tokenizer"), "out_dir": str(run / "model"),
           "checkpoint_dir": str(run / "ckpt"), "model": {**preset["shape"], "max_position_embeddings":
                                                          preset["context"]},
           "context": preset["context"], "batch_size": preset["batch"], "steps": steps, "warmup_steps": 0,
           "zero_stage": 2, "sample_prompts": [],
           "precision": precision, "threads": THREADS if device == "cpu" else None, "log_every": WARMUP,
           "eval_every": 10_000, "eval_batches": 1, "checkpoint_every": 10_000}
    (run / "run.json").write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    out = subprocess.run([sys.executable, "-m", "tasks.training.pretrain", "--config", str(run / "run.json")],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
    lines = [line for line in out.stdout.splitlines() if "tok/s" in line]
    timed = lines[1:] or lines  # the first log window holds the warm-up steps

    def field(name: str, line: str) -> float:
        return float(line.split(name)[1].split("|")[0].strip().rstrip("%"))

    result = {"tokens_per_s": sum(field("tok/s", ln) for ln in timed) / len(timed)}
    if timed and "mfu" in timed[0]:
        result["mfu"] = sum(field("mfu", ln) for ln in timed) / len(timed) / 100
    return result


def _child(side: str, root: Path, device: str, precision: str, steps: int) -> None:
    result = (plain_loop if side == "plain" else ours)(root, device, precision, steps)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({**result, "peak_rss_mb": max(own, kids)}))


def _measure(side: str, root: Path, device: str, precision: str, steps: int) -> dict:
    res = subprocess.run([sys.executable, "-m", "benchmarks.pretrain", "--child", side, str(root), device, precision,
                          str(steps)], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"benchmarks.pretrain: the {side} side failed:\n{res.stdout[-3000:]}{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _median_run(runs: list[dict]) -> dict:
    """Median of every measure over the repeats, and the tokens/s of each repeat."""
    import statistics

    out = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return {**out, "tokens_per_s_runs": [round(r["tokens_per_s"], 1) for r in runs]}


def _device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    import platform

    return f"{platform.processor() or platform.machine()}, {THREADS} threads"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per side (first 5 untimed)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per side, alternating; medians are reported")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: the GPT-2-small-sized preset")
    ap.add_argument("--precision", choices=["fp32", "bf16", "both"], default=None,
                    help="default: both on CPU, bf16 on CUDA")
    ap.add_argument("--json", type=Path, default=None, help="results file (default benchmarks/results/"
                    "pretrain.json, pretrain-cuda.json with --device cuda)")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child[0], Path(args.child[1]), args.child[2], args.child[3], int(args.child[4]))
        return 0
    if args.steps <= WARMUP + 1:
        ap.error(f"--steps must be above {WARMUP + 1}")
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            ap.error("--device cuda: torch sees no CUDA device here")
    precision = args.precision or ("both" if args.device == "cpu" else "bf16")
    precisions = ["fp32", "bf16"] if precision == "both" else [precision]
    out_json = args.json or Path(f"benchmarks/results/pretrain{'-cuda' if args.device == 'cuda' else ''}.json")
    preset = PRESETS[args.device]
    results = {}
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as tmp:
        root = make_tokens(Path(tmp))
        for p in precisions:
            runs: dict[str, list[dict]] = {"plain_adamw": [], "ours_zero2": []}
            for _ in range(args.repeats):  # alternate the sides so a drifting machine load hits both alike
                runs["plain_adamw"].append(_measure("plain", root, args.device, p, args.steps))
                runs["ours_zero2"].append(_measure("ours", root, args.device, p, args.steps))
            results[p] = {side: _median_run(r) for side, r in runs.items()}
            results[p]["ratio"] = results[p]["ours_zero2"]["tokens_per_s"] / results[p]["plain_adamw"]["tokens_per_s"]
    device = _device_name(args.device)
    print(f"pretrain benchmark on {device}: {preset['name']}, context {preset['context']}, batch {preset['batch']}, "
          f"{args.steps} steps, median of {args.repeats} alternating runs per side")
    print(f"{'precision':<10}{'plain tok/s':>12}{'ZeRO-2 tok/s':>14}{'ratio':>8}{'plain MB':>10}{'ZeRO-2 MB':>11}"
          + (f"{'plain MFU':>11}{'ZeRO-2 MFU':>12}" if args.device == "cuda" else ""))
    for p, r in results.items():
        mfus = ""
        if args.device == "cuda":
            mfus = "".join(f"{r[k]['mfu']:>11.1%}" if "mfu" in r[k] else f"{'n/a':>11}"
                           for k in ("plain_adamw", "ours_zero2"))
        print(f"{p:<10}{r['plain_adamw']['tokens_per_s']:>12.0f}{r['ours_zero2']['tokens_per_s']:>14.0f}"
              f"{r['ratio']:>8.2f}{r['plain_adamw']['peak_rss_mb']:>10.0f}{r['ours_zero2']['peak_rss_mb']:>11.0f}"
              + mfus)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps({"device": device, "model": preset["name"], "context": preset["context"],
                                    "batch": preset["batch"], "steps": args.steps, "repeats": args.repeats,
                                    "results": results}, indent=2)
                        + "\n")
    print(f"wrote {out_json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
