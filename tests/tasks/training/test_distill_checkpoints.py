"""The distill stage's recipes on teachers lmforge did not pretrain: a tiny BERT classifier and a tiny GPT-2 (a
classifier and an sft causal LM), fine-tuned-style task models of checkpoints with their own tokenizers
(tests/assets/checkpoints.py), distilled into a 1-of-2-layer student of the same architecture and compressed. The
student and every variant load with plain transformers (int8 with ``load_int8``) and predict as training did; what
the architecture does not allow (BERT/GPT-2 head pruning, GPT-2's Conv1D in int8) is a recorded skip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.tasks.training.distill_fixtures import distill, run_config, save_teachers
from tests.tasks.training.finetune_fixtures import write_examples

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")]
CLASSIFIERS = {"bert": "BertForSequenceClassification", "gpt2": "GPT2ForSequenceClassification"}


@pytest.fixture(scope="module", params=["bert", "gpt2"])
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One KD + compress run over the architecture's teachers (GPT-2: topic and complete; BERT: topic)."""
    from tests.assets.checkpoints import save_checkpoint

    arch: str = request.param
    root = tmp_path_factory.mktemp(f"distill-{arch}")
    checkpoint = save_checkpoint(arch, root / "checkpoint")
    tasks = ("topic", "complete") if arch == "gpt2" else ("topic",)
    teachers = save_teachers(checkpoint, tokenizer_dir=checkpoint, out=root / "teachers", sft=arch == "gpt2")
    inputs = {"examples": write_examples(root / "examples", tasks=tasks), "teachers": teachers,
              "tokenizer": teachers / "topic", "tokens": root}  # the teacher's own tokenizer, as the flow passes
    config = run_config(inputs, root / "run", student={"mlp_fraction": 0.5}, steps=8, eval_every=4, checkpoint_every=8,
                        variants={"magnitude": {"recovery_steps": 1}, "structured": {"recovery_steps": 1}})
    res = distill(config)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = config.parent / "model"
    return {"arch": arch, "config": config, "out": out, "tasks": tasks, "teachers": teachers, "stdout": res.stdout,
            "summary": json.loads((out / "distill_summary.json").read_text())}


def test_the_student_is_the_teachers_architecture_with_half_its_layers(run: dict[str, Any]) -> None:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    s, out = run["summary"], run["out"]
    init = s["student_init"]  # params.yaml's default student: half the layers, half of each MLP's neurons
    assert init["layers"] == [0] and init["heads_from_teacher"] == ["topic"] and init["kept"] == []
    assert init["neuron_subsets"] == 4  # the one layer's MLP: two weights, two biases
    classifier = AutoModelForSequenceClassification.from_pretrained(str(out / "topic"))
    teacher = AutoModelForSequenceClassification.from_pretrained(str(run["teachers"] / "topic"))
    assert type(classifier).__name__ == CLASSIFIERS[run["arch"]] and classifier.config.num_hidden_layers == 1
    assert teacher.config.num_hidden_layers == 2 and classifier.num_parameters() < teacher.num_parameters()
    key = "intermediate_size" if run["arch"] == "bert" else "n_inner"
    assert getattr(classifier.config, key) == (32 if run["arch"] == "bert" else 64)  # half the teacher's 64 / 4 x 32
    assert classifier.config.id2label == {0: "pets", 1: "sky"}
    if run["arch"] == "gpt2":
        lm = AutoModelForCausalLM.from_pretrained(str(out / "complete"))
        assert type(lm).__name__ == "GPT2LMHeadModel" and lm.config.n_layer == 1
        assert "chat_template" in json.loads((out / "complete" / "tokenizer_config.json").read_text()) or \
            (out / "complete" / "chat_template.jinja").is_file()
    for variant in ("teacher", "student", "magnitude", "structured", "int8"):
        assert set(s["variants"][variant]) == set(run["tasks"]), variant


def test_the_exported_student_predicts_as_the_training_module(run: dict[str, Any]) -> None:
    """The module the recipes train (rebuilt from the export as compress does) and plain transformers give the same
    logits, and the export's validation loss is the one the KD run recorded for its best step."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from tasks.modeling.encoding import collate
    from tasks.modeling.heads import build_multitask, load_exported
    from tasks.modeling.measure import quality
    from tasks.training.teachers import DistillConfig, new_student, preflight, task_set

    cfg = DistillConfig.model_validate_json((run["config"].parent / "compress.json").read_text())
    info = preflight(cfg, resume=False)
    from transformers import AutoTokenizer

    ts = task_set(cfg, info, tokenizer=AutoTokenizer.from_pretrained(str(cfg.tokenizer_dir)))
    torch.manual_seed(0)
    module = build_multitask(new_student(cfg, info, pad_id=ts.pad_id), heads={"topic": 2}, dropout=0.0,
                             pad_token_id=ts.pad_id)
    module = load_exported(module, {t: run["out"] / t for t in run["tasks"]}).eval()
    classifier = AutoModelForSequenceClassification.from_pretrained(str(run["out"] / "topic")).eval()
    val = ts.data["val"]["topic"]
    x, mask, _ = collate(val["ids"][:8], val["targets"][:8], pad_id=ts.pad_id, kind="classification")
    with torch.no_grad():
        mine, theirs = module(input_ids=x, attention_mask=mask, task="topic"), classifier(input_ids=x,
                                                                                          attention_mask=mask).logits
    assert float((mine - theirs).abs().max()) < 1e-5
    s = run["summary"]
    best = next(h for h in s["history"] if h["step"] == s["best_step"])
    exported = quality(classifier, val, kind="classification", labels=["pets", "sky"], pad_id=ts.pad_id,
                       batch_size=8)
    assert exported["loss"] == pytest.approx(best["tasks"]["topic"]["loss"], rel=1e-4, abs=1e-5)
    assert exported["accuracy"] == pytest.approx(best["tasks"]["topic"]["accuracy"])


def test_variants_load_and_predict_with_skips_recorded(run: dict[str, Any]) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    from flows.distill import summary_metrics
    from tasks.modeling.quantize import load_int8

    s, out, arch = run["summary"], run["out"], run["arch"]
    want = {"structured.heads"} | ({"int8.layers"} if arch == "gpt2" else set())
    assert set(s["skipped"]) == want and "prune_heads" in s["skipped"]["structured.heads"]
    assert f"skipped structured.heads: {arch}" in run["stdout"]
    metrics = summary_metrics(s, {})
    assert metrics["skipped.structured.heads"] == s["skipped"]["structured.heads"]
    assert s["recovery"]["structured"]["heads_fraction"] == 0.0  # asked 0.5: skipped, neurons only
    student = AutoModelForSequenceClassification.from_pretrained(str(out / "topic")).eval()
    x = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        ref = student(input_ids=x).logits
    magnitude = AutoModelForSequenceClassification.from_pretrained(str(out / "variants/magnitude/topic")).eval()
    assert s["variants"]["magnitude"]["topic"]["nonzero_params"] < 0.85 * s["variants"]["magnitude"]["topic"]["params"]
    structured = AutoModelForSequenceClassification.from_pretrained(str(out / "variants/structured/topic")).eval()
    key = "intermediate_size" if arch == "bert" else "n_inner"
    width = getattr(student.config, key) or 4 * student.config.hidden_size
    assert getattr(structured.config, key) == width * 3 // 4
    int8 = load_int8(out / "variants/int8/topic")
    assert type(int8).__name__ == CLASSIFIERS[arch]
    with torch.no_grad():
        for model in (magnitude, structured):
            assert model(input_ids=x).logits.shape == (1, 2)
        quantized = int8(input_ids=x).logits
    assert float((quantized - ref).abs().max()) < 0.1 * float(ref.abs().max()) + 1e-3
    assert s["variants"]["int8"]["topic"]["size_bytes"] < s["variants"]["student"]["topic"]["size_bytes"]


def test_a_gpt2_base_teacher_distils_into_a_gpt2_lm(tmp_path: Path) -> None:
    """``teacher: base`` with models/base a GPT-2 (after continued pretraining, say): the packed tokens of its own
    tokenizer distilled into a 1-layer GPT-2 LM, from the teacher cache, pruned and int8 (embeddings) as recorded."""
    from transformers import AutoModelForCausalLM

    from tasks.modeling.quantize import load_int8
    from tasks.tokenizer.packing import pack_splits
    from tests.assets.checkpoints import save_checkpoint
    from tests.tasks.training.corpus import documents, write_split

    base = save_checkpoint("gpt2", tmp_path / "base")
    dirs = {n: write_split(tmp_path / "dedup" / n, texts) for n, texts in (("train", documents(200, 0)),
                                                                            ("val", documents(30, 1)))}
    pack_splits(split_dirs=dirs, tokenizer_dir=base, out_dir=tmp_path / "tokens")
    inputs = {"examples": tmp_path, "teachers": base, "tokenizer": base, "tokens": tmp_path / "tokens"}
    config = run_config(inputs, tmp_path / "run", teacher="base", examples_dir=None, student={"num_layers": 1},
                        cache_teacher=True, cache_top_k=16, max_length=32, steps=6, eval_every=3,
                        checkpoint_every=6, variants={"magnitude": {"recovery_steps": 1},
                                                      "structured": {"recovery_steps": 1}})
    res = distill(config)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = config.parent / "model"
    s = json.loads((out / "distill_summary.json").read_text())
    assert s["student_init"]["kept"] == [] and s["cache"]["enabled"] and set(s["variants"]["student"]) == {"lm"}
    assert set(s["skipped"]) == {"structured.heads", "int8.layers"}
    lm = AutoModelForCausalLM.from_pretrained(str(out / "lm"))
    assert type(lm).__name__ == "GPT2LMHeadModel" and lm.config.n_layer == 1
    assert type(load_int8(out / "variants/int8/lm")).__name__ == "GPT2LMHeadModel"
    assert s["variants"]["student"]["lm"]["params"] < s["variants"]["teacher"]["lm"]["params"]


@pytest.mark.parametrize(("student", "message"), [
    ({"num_layers": 1, "hidden_size": 64}, "student.hidden_size 64 differs from the bert teacher's 32"),
    ({"num_layers": 1, "num_heads": 2}, "student.num_heads 2 differs from the bert teacher's 4"),
    ({"num_layers": 2, "layers": [0, 2]}, "names a layer the teacher lacks"),
])
def test_a_shape_only_llama_students_take_exits_2_naming_the_key(tmp_path: Path, student: dict[str, Any],
                                                                   message: str) -> None:
    from tests.assets.checkpoints import save_checkpoint
    from tests.tasks.training.distill_fixtures import recipe

    checkpoint = save_checkpoint("bert", tmp_path / "checkpoint")
    teachers = save_teachers(checkpoint, tokenizer_dir=checkpoint, out=tmp_path / "teachers", sft=False)
    inputs = {"examples": write_examples(tmp_path / "examples", tasks=("topic",)), "teachers": teachers,
              "tokenizer": teachers / "topic", "tokens": tmp_path}
    res = recipe("distill", run_config(inputs, tmp_path / "run", student=student), timeout=120)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("distill: error: ") and message in lines[0], res.stderr
    assert not (tmp_path / "run" / "student").exists()
