"""Run a recipe (``python -m tests.tasks.training.zero3_probe PROBE_DIR tasks.training.X --config C``, under torchrun)
recording, at every ``deepspeed.initialize`` call, how much of the model handed over this process holds: its own
elements (a ZeRO-3 shard's, or the whole tensor's) against the model's full size. The record is taken before
DeepSpeed touches the model, so it says how the recipe loaded it, not how DeepSpeed partitioned it afterwards. The
recipe itself runs unchanged: the real ``deepspeed.initialize`` is called with the same arguments."""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path
from typing import Any


def holding(model: Any) -> dict[str, int]:
    """Elements of ``model``'s distinct parameters: ``local`` held by this process, ``full`` in the whole model,
    ``partitioned`` / ``whole`` how many parameters are ZeRO-3 shards / whole tensors."""
    seen: dict[int, Any] = {id(p): p for p in model.parameters()}
    out = {"local": 0, "full": 0, "partitioned": 0, "whole": 0}
    for p in seen.values():
        if hasattr(p, "ds_id"):
            out["local"] += int(p.ds_tensor.numel()) + int(p.numel())  # the shard, and any gathered copy left
            out["full"] += int(p.ds_numel)
            out["partitioned"] += 1
        else:
            out["local"] += int(p.numel())
            out["full"] += int(p.numel())
            out["whole"] += 1
    return out


def main() -> None:
    import deepspeed

    probe_dir, module = Path(sys.argv[1]), sys.argv[2]
    real = deepspeed.initialize

    def initialize(*args: Any, **kwargs: Any) -> Any:
        record = {"rank": int(os.environ.get("RANK", "0")), **holding(kwargs["model"]),
                  "trainable": any(p.requires_grad for p in kwargs["model"].parameters())}
        with open(probe_dir / f"rank{record['rank']}.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return real(*args, **kwargs)

    deepspeed.initialize = initialize
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
