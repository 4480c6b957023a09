"""The untouched checkpoint as a classifier: a linear probe (the frozen checkpoint's features and a trained linear
head), the row that says whether fine-tuning the checkpoint helped and by how much.

The features are exactly what the architecture's own sequence-classification head reads
(``AutoModelForSequenceClassification`` of the checkpoint, untouched): the input of its last linear layer, at the
last non-pad token for the decoders (whose ``score`` runs over every position and is pooled there), BERT's pooled
``[CLS]`` as its ``classifier`` sees it. The head is scikit-learn's logistic regression on standardised features,
its C chosen on the validation split, as the TF-IDF baseline chooses its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def features(model_dir: Path, texts: Sequence[str], *, batch_size: int = 16) -> Any:
    """``(len(texts), hidden)`` float32 features of the untouched checkpoint in ``model_dir`` (see the module doc)."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tasks.modeling.encoding import special_ids

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    _, pad = special_ids(tokenizer)
    tokenizer.padding_side = "right"
    torch.manual_seed(0)  # the random head is never used: only what enters it
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=2, dtype=torch.float32)
    model.config.pad_token_id = pad
    model.eval()
    final = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    seen: list[Any] = []
    hook = final.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    limit = int(getattr(model.config, "max_position_embeddings", 0) or 512)
    out = []
    try:
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                enc = tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=limit,
                                return_tensors="pt")
                seen.clear()
                model(input_ids=enc.input_ids, attention_mask=enc.attention_mask)
                x = seen[-1]
                if x.dim() == 3:  # every position: pooled at the last real token, as the decoders' heads pool
                    last = enc.attention_mask.sum(-1) - 1
                    x = x[torch.arange(x.shape[0]), last]
                out.append(x.float().numpy())
    finally:
        hook.remove()
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def linear_probe(*, model_dir: Path, splits: dict[str, Sequence[dict[str, Any]]], labels: Sequence[str],
                 c_grid: Sequence[float] = (0.01, 0.1, 1.0, 10.0), seed: int = 0,
                 batch_size: int = 16) -> dict[str, Any]:
    """Fit the probe on the train split, pick C on val, predict the test split.

    Returns:
        ``{"predictions": [label per test row], "c": the chosen C, "val_macro_f1": its validation score}``.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = {s: features(model_dir, [r["text"] for r in splits[s]], batch_size=batch_size) for s in ("train", "val",
                                                                                                   "test")}
    y = {s: np.array([r["label"] for r in splits[s]]) for s in ("train", "val")}
    best: tuple[float, float, Any] | None = None
    for c in c_grid:
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
        probe.fit(x["train"], y["train"])
        score = float(f1_score(y["val"], probe.predict(x["val"]), labels=list(labels), average="macro",
                               zero_division=0))
        if best is None or score > best[0]:
            best = (score, c, probe)
    assert best is not None  # c_grid is never empty
    return {"predictions": [str(p) for p in best[2].predict(x["test"])], "c": best[1], "val_macro_f1": best[0]}
