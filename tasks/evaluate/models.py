"""The models the evaluate stage scores, and what each one is, read from its files (never from what we expect).

A task's models are its fine-tuned model, its distilled student and the student's compressed variants, whichever
were exported (a directory with a ``config.json``). :func:`model_facts` reads the architecture from ``config.json``
and counts the parameters from the safetensors headers (the tensor shapes, no weights loaded), so a model card
states what the model is, for any size.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

VARIANTS = ("magnitude", "structured", "int8")
"""The student's compressed variants, as distill names them (``STUDENT/variants/NAME/TASK``)."""


class ModelFilesError(Exception):
    """A model directory cannot be described: no config.json or no readable safetensors. Exit code 2."""

    exit_code = 2


def task_models(*, finetuned_dir: Path, student_dir: Path, task: str) -> dict[str, Path]:
    """The exported models of ``task`` that exist, by name: ``finetuned``, ``student``, then each variant."""
    dirs = {"finetuned": finetuned_dir / task, "student": student_dir / task,
            **{v: student_dir / "variants" / v / task for v in VARIANTS}}
    return {name: d for name, d in dirs.items() if (d / "config.json").is_file()}


def made_from(name: str) -> str | None:
    """The model of the same task that ``name`` was made from (``student`` <- ``finetuned``, a variant <- ``student``),
    or None for the fine-tuned model (made from the pretrained backbone, which the flow names)."""
    return "student" if name in VARIANTS else "finetuned" if name == "student" else None


@dataclass(frozen=True)
class ModelFacts:
    """What a saved model is: its architecture and size, as its files say."""

    architecture: str
    """``config.json``'s first ``architectures`` entry, e.g. ``LlamaForSequenceClassification``."""
    model_type: str | None
    """``config.json``'s ``model_type``, e.g. ``llama``."""
    parameters: int
    """Elements of every stored weight, a tied LM head counted once with the embedding it shares; a quantized
    weight counts its int8 values (as ``model.num_parameters()`` of the loaded model does)."""
    layers: int | None
    hidden_size: int | None
    attention_heads: int | None
    vocab_size: int | None
    context: int | None
    """``max_position_embeddings``: the longest input, in tokens."""
    quantization: str | None
    """``quantization_config.quant_method`` (``torchao``) or None."""
    weight_bytes: int
    """Bytes of the safetensors files."""

    def as_dict(self) -> dict[str, Any]:
        """The facts as a flat dict (None where the config does not say)."""
        return asdict(self)


def _header(path: Path) -> dict[str, Any]:
    """A safetensors file's JSON header: ``{name: {dtype, shape, data_offsets}, "__metadata__": {...}}``."""
    with path.open("rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(size))


def _stored_tensors(header: dict[str, Any]) -> dict[str, int]:
    """Elements per logical tensor of one safetensors file. torchao stores a quantized weight ``A.B.weight`` as data
    entries ``A.B._weight_qdata``, ``A.B._weight_scale``... and names the logical tensors in ``__metadata__``: such a
    weight counts its ``qdata`` elements, not its scales or zero points."""
    meta = header.get("__metadata__") or {}
    shapes = {k: v["shape"] for k, v in header.items() if k != "__metadata__"}
    if "tensor_names" not in meta:
        return {name: math.prod(shape) for name, shape in shapes.items()}
    out = {}
    for name in json.loads(meta["tensor_names"]):
        if name in shapes:  # a plain tensor
            out[name] = math.prod(shapes[name])
            continue
        parent, _, leaf = name.rpartition(".")
        data = json.loads(meta[name]).get("_tensor_data_names") or ["qdata"]
        out[name] = math.prod(shapes[f"{parent}._{leaf}_{'qdata' if 'qdata' in data else data[0]}"])
    return out


def model_facts(model_dir: Path) -> ModelFacts:
    """The architecture and size of the model saved in ``model_dir`` (Hugging Face format, safetensors).

    Raises:
        ModelFilesError: no ``config.json``, or no safetensors file, or one that cannot be read.
    """
    model_dir = Path(model_dir)
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelFilesError(f"no readable config.json in {model_dir} ({err}): export the model first") from None
    weights = sorted(model_dir.glob("*.safetensors"))
    if not weights:
        raise ModelFilesError(f"no *.safetensors in {model_dir}: the model was not saved in safetensors format")
    try:
        tensors = {k: v for w in weights for k, v in _stored_tensors(_header(w)).items()}
    except (OSError, ValueError, KeyError, struct.error) as err:
        raise ModelFilesError(f"cannot read the safetensors header of {model_dir} ({type(err).__name__}: {err})"
                              ) from None
    if config.get("tie_word_embeddings"):  # one table read twice; an int8 export stores the head's copy as well
        tensors = {k: v for k, v in tensors.items() if not k.endswith("lm_head.weight")}
    parameters = sum(tensors.values())
    return ModelFacts(architecture=(config.get("architectures") or [config.get("model_type", "unknown")])[0],
                      model_type=config.get("model_type"), parameters=parameters,
                      layers=config.get("num_hidden_layers"), hidden_size=config.get("hidden_size"),
                      attention_heads=config.get("num_attention_heads"), vocab_size=config.get("vocab_size"),
                      context=config.get("max_position_embeddings"),
                      quantization=(config.get("quantization_config") or {}).get("quant_method"),
                      weight_bytes=sum(w.stat().st_size for w in weights))
