"""int8 for CPU inference, and the layer projections that compression touches.

:func:`quantize_int8`: torchao's int8 weight-only scheme through transformers' ``TorchAoConfig``, for any architecture
whose layers are ``nn.Linear`` (Llama, BERT...). GPT-2's layers are transformers' ``Conv1D`` (``x @ W + b`` through
``torch.addmm``), which torchao's int8 tensors do not implement (0.18: ``NotImplementedError`` for ``aten.addmm``):
its layers stay float and only its embeddings and LM head become int8; :func:`int8_skips` says so, and the compress
recipe records it in the summary and the stage's metrics.
``torch.ao.quantization.quantize_dynamic`` warns it is deprecated (torch 2.13); torchao's dynamic-activation scheme
ran about 4x slower than float32 on this CPU, weight-only about as fast. The saved directory loads with plain
``AutoModelFor...from_pretrained`` (torchao installed), or ``model = load_int8(path)``: the one documented call the
evaluate stage and users use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

class CompressionError(ValueError):
    """A compression setting does not fit the model; the message says which values would."""

    exit_code = 2


def prunable_weights(model: Any) -> dict[str, torch.nn.Parameter]:
    """``{parameter name: weight}`` of the transformer layers' projections, ``nn.Linear`` or GPT-2's ``Conv1D``
    (Llama's q/k/v/o/gate/up/down, BERT's query/key/value/dense, GPT-2's c_attn/c_proj/c_fc): what pruning touches.
    """
    from tasks.modeling.layout import layer_projections

    out = {f"{name}.weight": m.weight for name, m in layer_projections(model).items()}
    if not out:
        raise CompressionError(f"{type(model).__name__} has no transformer-layer projections to compress: pass a "
                               "transformers model or the multi-task module around one (not a peft-wrapped one)")
    return out


def int8_skips(model: Any) -> dict[str, str]:
    """What :func:`quantize_int8` leaves in float for this model, and why (empty: every layer projection is int8)."""
    from tasks.modeling.layout import is_conv1d, layer_projections

    if any(is_conv1d(m) for m in layer_projections(model).values()):
        return {"layers": f"{model.config.model_type}'s layer projections are transformers Conv1D, which torchao's "
                          "int8 tensors cannot multiply (no aten.addmm): they stay float32; the embeddings and LM "
                          "head are int8"}
    return {}


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
    """An int8 copy of a transformers model for CPU inference: the layers' Linear weights become int8 with a float
    scale per output row (torchao ``Int8WeightOnlyConfig``; biases stay float) and so do the embedding tables, one
    scale per row (``IntxWeightOnlyConfig``; a tied LM head gets its own int8 copy); a classification head (and
    BERT's pooler) stays float32, and so do Conv1D layers (:func:`int8_skips`).
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

    from tasks.modeling.layout import layer_projections

    # a module's name also selects its bias, which transformers would then quantize too (int8 biases fail in the
    # forward): a biased projection is named by its weight
    plan: dict[str, Any] = {n if m.bias is None else f"{n}.weight": Int8WeightOnlyConfig()
                            for n, m in layer_projections(model).items() if isinstance(m, nn.Linear)}
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
