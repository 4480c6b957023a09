"""DeepSpeed engine pieces: the generated config, the parameter groups, a process group that compiles nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.training.engine import deepspeed_config, merge, param_groups
from tests.conftest import REPO


def test_deepspeed_config_follows_the_settings_and_merges_an_override(tmp_path: Path) -> None:
    ds = deepspeed_config(batch_size=4, grad_accum=2, grad_clip=0.5, zero_stage=3, precision="bf16",
                          offload_optimizer=True, offload_params=True)
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_accumulation_steps"] == 2
    assert ds["gradient_clipping"] == 0.5 and ds["bf16"] == {"enabled": True}
    assert ds["zero_optimization"] == {"stage": 3, "offload_optimizer": {"device": "cpu", "pin_memory": False},
                                       "offload_param": {"device": "cpu", "pin_memory": False}}
    assert ds["zero_force_ds_cpu_optimizer"] is False  # our torch AdamW stays
    override = tmp_path / "ds.json"
    override.write_text(json.dumps({"zero_optimization": {"reduce_bucket_size": 1000}, "bf16": {"enabled": False}}))
    merged = deepspeed_config(batch_size=4, grad_accum=1, grad_clip=1.0, zero_stage=2, precision="bf16",
                              override=override)
    assert merged["zero_optimization"] == {"stage": 2, "reduce_bucket_size": 1000} and not merged["bf16"]["enabled"]
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}, "d": 4}) == {"a": {"b": 1, "c": 3}, "d": 4}


def test_only_matrices_are_decayed() -> None:
    from tasks.modeling.llama import build_llama

    model = build_llama(vocab_size=64, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=2,
                        intermediate_size=32, max_position_embeddings=8)
    decay, no_decay = param_groups(model, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_joining_the_group_compiles_no_shm_op(tmp_path: Path) -> None:
    # a fresh machine: an empty extensions cache. DeepSpeed's CPU backend would JIT-build deepspeed_shm_comm here
    # (~50 s of C++ before step 0), though only DeepSpeed inference and AutoTP layers use it
    code = ("from tasks.training.engine import init_distributed, setup_single_process_env; "
            "setup_single_process_env(); print(init_distributed())")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**env, "TORCH_EXTENSIONS_DIR": str(tmp_path), "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-1] == "(0, 1)"
    assert "built successfully" not in res.stdout + res.stderr
    assert not list(tmp_path.rglob("*shm*")) and time.monotonic() - start < 40


def test_the_shm_op_is_left_alone_where_deepspeed_would_use_it() -> None:
    import deepspeed.ops

    from tasks.training.engine import SHM_COMM_OP, skip_shm_build

    before = deepspeed.ops.__compatible_ops__.get(SHM_COMM_OP)
    assert skip_shm_build(on_cpu=True, tensor_parallel=True) is False  # AutoTP layers all-reduce through it
    assert skip_shm_build(on_cpu=False) is False  # CUDA: DeepSpeed has no such op
    assert deepspeed.ops.__compatible_ops__.get(SHM_COMM_OP) == before


def test_auto_precision_takes_bf16_only_where_the_cpu_has_bf16_kernels() -> None:
    # on an AVX2-only CPU (seen: AMD EPYC) bf16 matmuls ran ~70x slower than fp32 and the default run took an hour:
    # auto must follow the CPU's instruction set, read here from /proc/cpuinfo, not from torch
    from pathlib import Path

    import torch

    from tasks.training.engine import cpu_has_fast_bf16, resolve_precision

    cpuinfo = Path("/proc/cpuinfo")
    if torch.cuda.is_available() or not cpuinfo.is_file():
        pytest.skip("the CPU rule is checked on Linux CPU machines")
    flags = set(next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split())
    fast = bool(flags & {"avx512bw", "avx512_bf16", "amx_bf16"})
    assert cpu_has_fast_bf16() == fast
    assert resolve_precision("auto") == ("bf16" if fast else "fp32")
    assert resolve_precision("bf16") == "bf16" and resolve_precision("fp32") == "fp32"
