"""The registered NER model: the pyfunc (``pipelines/serving_model.py``, which may not import lmforge) answers raw text
with the entities, character offsets and all, that lmforge's own path gives (``tasks.modeling.alignment`` words and
windows, ``tasks.evaluate.ner.predict_tags``, ``tasks.modeling.tagging.spans``), long texts included; and it is
logged, registered and loaded back through MLflow with its signature."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipelines import registry, tracking
from pipelines.config import TrackingParams
from pipelines.config.base import Section
from pipelines.config.registry import RegistryParams

LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
TEXTS = ["the cat sat on the mat.", "a dog ran to the tree, and the bird flew over it!",
         " ".join(["the cat sat on a log and the dog ran home."] * 6), "", "?!"]


@pytest.fixture(scope="module")
def tagger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT token classifier with a random head (varied tags) and 24 positions, so that long texts need
    windows; saved with its tokenizer and ``id2label``."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from tests.assets.checkpoints import save_checkpoint

    base = save_checkpoint("bert", tmp_path_factory.mktemp("bert"), positions=24)
    torch.manual_seed(3)
    model = AutoModelForTokenClassification.from_pretrained(
        str(base), num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={v: i for i, v in enumerate(LABELS)})
    with torch.no_grad():
        model.classifier.weight.normal_(0, 2.0)
    out = tmp_path_factory.mktemp("tagger")
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(out))
    return out


def lmforge_entities(model_dir: Path, text: str) -> list[dict[str, object]]:
    from tasks.evaluate.ner import predict_tags
    from tasks.modeling.alignment import char_spans, text_words
    from tasks.modeling.tagging import spans

    offsets = text_words(text)
    if not offsets:
        return []
    [tags] = predict_tags(model_dir=model_dir, sentences=[[text[a:b] for a, b in offsets]], scheme="IOB2")
    return char_spans(spans(tags), offsets, text)


def test_the_pyfunc_finds_the_entities_lmforge_finds(tagger: Path) -> None:
    import pandas as pd
    from mlflow.pyfunc import PythonModelContext

    from pipelines.serving_model import HFTextModel

    served = HFTextModel()
    served.load_context(PythonModelContext(artifacts={"model": str(tagger)}, model_config={}))
    out = served.predict(None, pd.DataFrame({"text": TEXTS}))
    assert list(out.columns) == ["entities"]
    found = 0
    for text, entities in zip(TEXTS, out["entities"], strict=True):
        assert [{k: e[k] for k in ("entity", "start", "end", "text")} for e in entities] == \
            lmforge_entities(tagger, text)
        assert all(0 < e["score"] <= 1 and text[e["start"]:e["end"]] == e["text"] for e in entities)
        found += len(entities)
    assert found > 5  # the random head tags something: the comparison is not between two empty lists


NoParams = type("NoParams", (Section,), {"__doc__": "A stage without params."})


def test_a_registered_tagger_loads_and_answers_with_spans(tagger: Path, tmp_path: Path) -> None:
    import mlflow
    import pandas as pd

    store = TrackingParams(uri="sqlite:///mlruns.db", artifact_root="mlartifacts", experiment="lmforge")
    (tmp_path / "dvc.yaml").write_text("stages:\n  finetune: {cmd: finetune, outs: [models/finetuned]}\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    try:
        with tracking.pipeline_run(store, tmp_path, ["finetune"]):
            with tracking.stage_run("finetune", NoParams(), root=tmp_path, tracking=store):
                version = registry.log_and_register(tagger, task="ner", kind="token_classification",
                                                    params=RegistryParams(), metrics={"test.entity_f1": 0.5},
                                                    digests={}, example=TEXTS[1])
    finally:
        while mlflow.active_run():
            mlflow.end_run()
    loaded = mlflow.pyfunc.load_model(f"models:/lmforge-ner/{version}")
    out = loaded.predict(pd.DataFrame({"text": TEXTS[:2]}))
    assert [[{k: e[k] for k in ("entity", "start", "end", "text")} for e in row] for row in out["entities"]] == \
        [lmforge_entities(tagger, t) for t in TEXTS[:2]]
    [schema] = loaded.metadata.get_output_schema().inputs
    assert schema.name == "entities" and "start: long" in str(schema.type)
