"""sft training-step throughput, padded against packed batches: same model, same examples, same order, one run.

    .venv/bin/python -m benchmarks.packing [--examples 512] [--batch 16] [--repeats 3] [--precision bf16]
                                           [--json FILE]

The examples are the default ``docstring`` sft task's kind (a signature line -> the first sentences of its docstring),
taken from the standard library at hand, rendered through lmforge's chat template and tokenized with a byte-level BPE
of 2048 tokens trained on them (the tokenizer stage's own code): ``single`` is one exchange per conversation, ``chat``
the same pairs grouped 1-4 exchanges to a conversation (longer, more varied). The models: lmforge's default Llama
shape (hidden 128, 4 layers, 4 heads, MLP 344) and a GPT-2 config of the same width and depth, context 256, sdpa.

Each side trains a fresh copy of the same initial weights on the same seeded micro-batches of ``--batch`` examples
(forward, backward, AdamW step; the collate included): ``padded`` right-pads each batch to its longest example (what
finetune does without packing), ``packed`` puts the batch's examples into rows of the longest one's length,
``packed_256`` into rows of max_length (``tasks.modeling.packing``). Reported: real (non-padding) tokens per second,
median of ``--repeats`` runs alternating the sides, the share of computed positions that are real, and the largest
difference of the first batch's loss between the sides (fp32: they train on the same tokens, so it is ~0).
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

MODULES = ("json", "os", "os.path", "re", "string", "textwrap", "collections", "itertools", "functools", "shutil",
           "pathlib", "statistics", "random", "heapq", "bisect", "csv", "urllib.parse", "base64", "difflib", "fnmatch",
           "glob", "html", "inspect", "email.utils", "gzip", "zipfile", "tarfile", "tempfile", "calendar", "datetime",
           "decimal", "fractions", "operator", "copy", "pprint", "logging", "argparse", "subprocess", "threading",
           "queue", "socket", "ssl", "http.client", "sqlite3", "unittest", "typing", "dataclasses", "enum", "abc")
SIDES = ("padded", "packed", "packed_256")
MAX_LENGTH = 256
THREADS = 2
WARMUP = 2
SHAPE = {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 344}


def docstring_pairs() -> list[tuple[str, str]]:
    """(signature line, first paragraph of its docstring up to 300 characters) of the standard library's public
    functions and methods, in a fixed order."""
    import importlib

    pairs = []
    for name in MODULES:
        module = importlib.import_module(name)
        for attr, obj in sorted(vars(module).items()):
            members = [(attr, obj)]
            if inspect.isclass(obj) and not attr.startswith("_"):
                members += [(f"{attr}.{a}", o) for a, o in sorted(vars(obj).items()) if not a.startswith("_")]
            for qual, fn in members:
                doc = inspect.getdoc(fn) if inspect.isfunction(fn) and not qual.startswith("_") else None
                try:
                    sig = str(inspect.signature(fn)) if doc else ""
                except (TypeError, ValueError):
                    continue
                if doc and doc.split("\n\n")[0].strip():
                    pairs.append((f"{qual}{sig}", doc.split("\n\n")[0].strip().replace("\n", " ")[:300]))
    return list(dict.fromkeys(pairs))


def make_examples(root: Path, n: int) -> tuple[Any, dict[str, list[tuple[list[int], list[int]]]]]:
    """A tokenizer trained on the pairs, and ``{"single", "chat"}`` -> n (ids, targets) examples within MAX_LENGTH."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from tasks.modeling.chat import encode_conversation, fit_conversation, from_prompt_response
    from tasks.tokenizer.bpe import train_tokenizer

    pairs = docstring_pairs()
    random.Random(0).shuffle(pairs)
    (root / "docs").mkdir(parents=True)
    texts = [f"{p}\n{r}" for p, r in pairs]
    pq.write_table(pa.table({"id": [str(i) for i in range(len(texts))], "text": texts}),
                   root / "docs" / "part-00000.parquet")
    train_tokenizer(train_dir=root / "docs", out_dir=root / "tok", vocab_size=2048, min_frequency=2)
    tok = AutoTokenizer.from_pretrained(str(root / "tok"))
    rng = random.Random(1)
    conversations: dict[str, list[list[dict[str, str]]]] = {"single": [], "chat": []}
    at = 0
    while at < len(pairs):
        k = rng.randint(1, 4)
        conversations["chat"].append([m for p, r in pairs[at:at + k] for m in from_prompt_response(p, r)])
        at += k
    conversations["single"] = [from_prompt_response(p, r) for p, r in pairs]
    out: dict[str, list[tuple[list[int], list[int]]]] = {}
    for kind, convs in conversations.items():
        out[kind] = []
        for conv in convs:
            fitted = fit_conversation(conv, tokenizer=tok, max_length=MAX_LENGTH)
            if isinstance(fitted, tuple):
                enc = encode_conversation(fitted[0], tokenizer=tok)
                out[kind].append((enc["ids"], enc["targets"]))
            if len(out[kind]) == n:
                break
    return tok, out


def build(arch: str, vocab: int, pad: int) -> Any:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from tasks.modeling.llama import build_llama

    torch.manual_seed(0)
    if arch == "llama":
        model = build_llama(vocab_size=vocab, num_kv_heads=SHAPE["num_heads"], max_position_embeddings=MAX_LENGTH,
                            pad_token_id=pad, **SHAPE)
    else:
        model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=SHAPE["hidden_size"], n_layer=SHAPE["num_layers"],
                                           n_head=SHAPE["num_heads"], n_inner=SHAPE["intermediate_size"],
                                           n_positions=MAX_LENGTH, attn_implementation="sdpa"))
    model.config.use_cache = False
    return model.train()


def logits_of(model: Any, side: str, ids: list[list[int]], targets: list[list[int]], pad: int) -> tuple[Any, Any, int]:
    """(logits, targets, computed positions) of one micro-batch on one side."""
    from tasks.modeling.encoding import collate
    from tasks.modeling.packing import collate_packed, packed_forward

    if side == "padded":
        x, mask, y = collate(ids, targets, pad_id=pad, kind="sft")
        return model(input_ids=x, attention_mask=mask, use_cache=False).logits, y, x.numel()
    x, pos, y = collate_packed(ids, targets, pad_id=pad, capacity=MAX_LENGTH if side == "packed_256" else None)
    return packed_forward(model, x, pos), y, x.numel()


def run_sides(init: Any, batches: list[Any], pad: int, precision: str) -> dict[str, dict[str, float]]:
    """Train a copy of ``init`` per side on ``batches``, the sides taking turns batch by batch (so a drifting machine
    load hits them alike; the first WARMUP batches untimed): each side's real tokens/s, wall and CPU, and fill."""
    import torch

    from tasks.modeling.tasktypes import task_type

    states = {}
    for side in SIDES:
        model = copy.deepcopy(init)
        states[side] = (model, torch.optim.AdamW(model.parameters(), lr=1e-3))
    wall = dict.fromkeys(SIDES, 0.0)
    cpu = dict.fromkeys(SIDES, 0.0)
    computed = dict.fromkeys(SIDES, 0)
    real = 0
    for i, (ids, targets) in enumerate(batches):
        for side, (model, opt) in states.items():
            t0, c0 = time.perf_counter(), time.process_time()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits, y, positions = logits_of(model, side, ids, targets, pad)
            task_type("chat").loss(logits, y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= WARMUP:
                wall[side] += time.perf_counter() - t0
                cpu[side] += time.process_time() - c0
                computed[side] += positions
        if i >= WARMUP:
            real += sum(len(s) for s in ids)
    return {side: {"tokens_per_s": real / wall[side], "tokens_per_cpu_s": real / cpu[side], "seconds": wall[side],
                   "real_tokens": real, "fill": real / computed[side]} for side in SIDES}


def first_loss_gap(init: Any, batch: Any, pad: int) -> float:
    """The largest difference of the first batch's fp32 loss between the sides (they score the same tokens)."""
    import torch

    from tasks.modeling.tasktypes import task_type

    model = copy.deepcopy(init).float().eval()  # no dropout: the sides must see the same function
    with torch.no_grad():
        losses = [float(task_type("chat").loss(*logits_of(model, s, *batch, pad)[:2])) for s in SIDES]
    return max(losses) - min(losses)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=512, help="examples per data set (timed: all but the warm-up)")
    ap.add_argument("--batch", type=int, default=16, help="examples per micro-batch (finetune's default batch_size)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per side, alternating; medians are reported")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16", help="bf16: CPU autocast (the default "
                    "finetune precision on AVX-512 CPUs)")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/packing.json"), help="results file")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(THREADS)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as tmp:
        tok, data = make_examples(Path(tmp), args.examples)
    pad = int(tok.pad_token_id)
    for kind, examples in data.items():
        order = list(range(len(examples)))
        random.Random(2).shuffle(order)
        chunks = [order[at:at + args.batch] for at in range(0, len(order), args.batch)]
        batches = [([examples[i][0] for i in c], [examples[i][1] for i in c]) for c in chunks]
        lengths = [len(e[0]) for e in examples]
        for arch in ("llama", "gpt2"):
            init = build(arch, len(tok), pad)
            runs: dict[str, list[dict[str, float]]] = {s: [] for s in SIDES}
            for _ in range(args.repeats):
                for side, r in run_sides(init, batches, pad, args.precision).items():
                    runs[side].append(r)
            row = {s: {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in rs), "fill": rs[0]["fill"],
                       "tokens_per_cpu_s": statistics.median(r["tokens_per_cpu_s"] for r in rs),
                       "runs_tokens_per_s": [r["tokens_per_s"] for r in rs]} for s, rs in runs.items()}
            row["speedup_packed"] = row["packed"]["tokens_per_s"] / row["padded"]["tokens_per_s"]
            row["speedup_packed_256"] = row["packed_256"]["tokens_per_s"] / row["padded"]["tokens_per_s"]
            row["first_loss_gap_fp32"] = first_loss_gap(init, batches[0], pad)
            row |= {"examples": len(examples), "mean_tokens": statistics.mean(lengths), "max_tokens": max(lengths)}
            results[f"{kind}/{arch}"] = row
    print(f"packing benchmark on {platform.processor() or platform.machine()}, {THREADS} threads, {args.precision}, "
          f"batch {args.batch}, max_length {MAX_LENGTH}, median of {args.repeats} alternating runs per side")
    print(f"{'data/model':<14}{'ex':>5}{'mean':>6}{'padded tok/s':>14}{'packed tok/s':>14}{'x':>6}"
          f"{'packed256 tok/s':>17}{'x':>6}{'fill pad/pk/256':>18}{'loss gap':>10}")
    for key, r in results.items():
        fills = "/".join(f"{r[s]['fill']:.2f}" for s in SIDES)
        print(f"{key:<14}{r['examples']:>5}{r['mean_tokens']:>6.0f}{r['padded']['tokens_per_s']:>14.0f}"
              f"{r['packed']['tokens_per_s']:>14.0f}{r['speedup_packed']:>6.2f}{r['packed_256']['tokens_per_s']:>17.0f}"
              f"{r['speedup_packed_256']:>6.2f}{fills:>18}{r['first_loss_gap_fp32']:>10.1e}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"precision": args.precision, "batch": args.batch, "max_length": MAX_LENGTH,
                                     "threads": THREADS, "repeats": args.repeats, "results": results}, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
