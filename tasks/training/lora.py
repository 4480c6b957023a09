"""LoRA with peft: adapters on the backbone's linear layers, the adapter export and the merged model.

The update of a target layer is ``(alpha / rank) * B @ A``; B starts at zero, so training starts from the base model
exactly. The base weights stay frozen (bit-identical); the new classification heads train fully (they live outside
the peft model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def add_lora(llama: Any, *, rank: int, alpha: float, dropout: float, target_modules: list[str]) -> Any:
    """Wrap a LlamaForCausalLM in a peft model with adapters on ``target_modules`` (seed torch's RNG first: A is
    random). Only the adapters train."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(llama, config)


def backbone_state(state: dict[str, Any]) -> dict[str, Any]:
    """The backbone's entries of a multi-task state dict, keys without the ``backbone.`` prefix."""
    return {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}


def merged_llama(*, base_model_dir: Path, state: dict[str, Any], rank: int, alpha: float, dropout: float,
                 target_modules: list[str], dtype: str, adapter_dir: Path | None = None) -> Any:
    """A plain LlamaForCausalLM with the trained adapters of ``state`` merged into the base weights
    (``merge_and_unload``); the adapter alone is saved to ``adapter_dir`` first when given (loadable with
    ``PeftModel.from_pretrained`` on the base model).

    Args:
        base_model_dir: the base model the adapters were trained on.
        state: the multi-task module's state dict (backbone entries carry the peft names).
        rank, alpha, dropout, target_modules: the LoRA settings of the run.
        dtype: the merged model's parameter dtype.
        adapter_dir: where to save the adapter (``save_pretrained``), or None.
    """
    from tasks.training.multitask import load_backbone

    llama = load_backbone(base_model_dir, dtype=dtype)
    peft_model = add_lora(llama, rank=rank, alpha=alpha, dropout=dropout, target_modules=target_modules)
    missing, unexpected = peft_model.load_state_dict(backbone_state(state), strict=False)
    if unexpected or any("lora_" in k for k in missing):
        raise RuntimeError(f"LoRA state does not fit the peft model: missing {missing[:3]}, unexpected "
                           f"{unexpected[:3]}")
    peft_model.eval()
    if adapter_dir is not None:
        peft_model.save_pretrained(str(adapter_dir))
    return peft_model.merge_and_unload()
