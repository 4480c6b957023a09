"""int8 for CPU inference, and the decoder projections that compression touches.

:func:`quantize_int8`: torchao's int8 weight-only scheme through transformers' ``TorchAoConfig``.
``torch.ao.quantization.quantize_dynamic`` warns it is deprecated (torch 2.13); torchao's dynamic-activation scheme
ran about 4x slower than float32 on this CPU, weight-only about as fast. The saved directory loads with plain
``AutoModelFor...from_pretrained`` (torchao installed), or ``model = load_int8(path)``: the one documented call the
evaluate stage and users use.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_PROJ = re.compile(r"(^|\.)layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)$")


class CompressionError(ValueError):
    """A compression setting does not fit the model; the message says which values would."""

    exit_code = 2


def prunable_weights(model: Any) -> dict[str, torch.nn.Parameter]:
    """``{parameter name: weight}`` of the decoder layers' Linear projections (what pruning and int8 touch)."""
    from torch import nn

    out = {f"{name}.weight": m.weight for name, m in model.named_modules()
           if isinstance(m, nn.Linear) and _PROJ.search(name)}
    if not out:
        raise CompressionError(f"{type(model).__name__} has no Llama decoder-layer projections to compress: pass a "
                               "transformers Llama or finetune's multi-task module (not a peft-wrapped one)")
    return out


def _torchao_quietly() -> None:
    """Import torchao without its import-time noise: CUDA kernels that fail to load with a CPU-only torch, torch's
    deprecation notes about its enum registrations."""
    import logging

    loggers = {logger: logger.level for logger in map(logging.getLogger, ("torchao", "torch.utils._pytree"))}
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        import torchao  # noqa: F401
    finally:
        for logger, level in loggers.items():
            logger.setLevel(level)


def quantize_int8(model: Any) -> Any:
    """An int8 copy of a transformers model for CPU inference: the decoder layers' Linear weights become int8 with a
    float scale per output row (torchao ``Int8WeightOnlyConfig``) and so does the token embedding, one scale per row
    (``IntxWeightOnlyConfig``; a tied LM head reads the same int8 table); a classification ``score`` stays float32.
    The embedding is half the parameters of the default student: without it the file shrank only 1.6x, with it 3.8x.
    ``model`` itself is left as it was (a bf16 model is converted to float32 first).

    Returns:
        The quantized model in eval mode, ready for :func:`save_int8`.
    """
    import copy
    import tempfile

    import torch
    from torch import nn

    if not hasattr(model, "save_pretrained"):
        raise CompressionError(f"quantize_int8 needs a transformers model, not {type(model).__name__}: export the "
                               "task model first (tasks.modeling.export.save_task_models)")
    prunable_weights(model)
    _torchao_quietly()
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, ModuleFqnToConfig
    from torchao.quantization.granularity import PerAxis
    from transformers import TorchAoConfig

    plan: dict[str, Any] = {n: Int8WeightOnlyConfig() for n, m in model.named_modules()
                            if isinstance(m, nn.Linear) and _PROJ.search(n)}
    plan.update({n: IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))
                 for n, m in model.named_modules() if isinstance(m, nn.Embedding)})
    float_copy = copy.deepcopy(model).float()
    tied = bool(getattr(float_copy.config, "tie_word_embeddings", False)) and hasattr(float_copy, "lm_head")
    if tied:  # transformers cannot re-tie two int8 tensors on load: the LM head gets its own int8 copy
        float_copy.lm_head.weight = nn.Parameter(float_copy.lm_head.weight.detach().clone())
        float_copy.config.tie_word_embeddings = False
        plan["lm_head"] = Int8WeightOnlyConfig()
    # transformers attaches its torchao quantizer only when loading, and only a model with it saves: go through files
    with tempfile.TemporaryDirectory(prefix="lmforge-int8-") as tmp:
        float_copy.save_pretrained(tmp)
        quant = TorchAoConfig(quant_type=ModuleFqnToConfig(plan), include_input_output_embeddings=True)
        out = type(model).from_pretrained(tmp, quantization_config=quant, dtype=torch.float32, device_map="cpu")
    return out.eval()


def save_int8(model: Any, out_dir: Path, *, tokenizer_dir: Path | None = None) -> None:
    """Write :func:`quantize_int8`'s model (safetensors + config with its ``quantization_config``) and, if given,
    the tokenizer of ``tokenizer_dir`` beside it. Load it with ``model = load_int8(out_dir)``."""
    quantizer = getattr(model, "hf_quantizer", None)
    if getattr(getattr(quantizer, "quantization_config", None), "quant_method", None) != "torchao":
        raise CompressionError("save_int8 takes the model quantize_int8 returned; quantize it first")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    for weights in sorted(Path(out_dir).glob("*.safetensors")):
        _sort_metadata(weights)
    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(out_dir))


def _sort_metadata(path: Path) -> None:
    """Rewrite a safetensors header with its ``__metadata__`` keys sorted, in place. torchao records each int8
    tensor's layout there in an order that changes from process to process (hash seeding), so two exports of the
    same weights differed in bytes; the tensor entries and the data stay exactly where they are."""
    import json
    import struct

    with path.open("r+b") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        if "__metadata__" not in header:
            return
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(encoded) > size:  # same keys and values: never longer; keep the file as written if it were
            return
        f.seek(8)
        f.write(encoded + b" " * (size - len(encoded)))  # safetensors pads its header with spaces


def load_int8(out_dir: Path) -> Any:
    """``model = load_int8(path)``: the int8 model :func:`save_int8` wrote, in eval mode (the same as
    ``AutoModelForSequenceClassification`` / ``AutoModelForCausalLM.from_pretrained(path)`` with torchao installed).
    """
    _torchao_quietly()
    import transformers
    from transformers import AutoConfig

    architecture = (AutoConfig.from_pretrained(str(out_dir)).architectures or ["LlamaForCausalLM"])[0]
    return getattr(transformers, architecture).from_pretrained(str(out_dir), device_map="cpu").eval()
