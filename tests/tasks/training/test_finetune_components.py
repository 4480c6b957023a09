"""The fine-tuning components in-process, on a tiny Llama (and BERT, GPT-2, Llama checkpoints where the architecture
matters): the sft loss mask, the classification head against the architecture's own sequence classifier, the
unfreezing schedule, LoRA's merge, batches, schedules, early stopping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.assets.checkpoints import ARCHITECTURES, save_checkpoint
from tests.tasks.training.finetune_fixtures import classification_rows, save_base_model, write_examples


@pytest.fixture(scope="module")
def inputs(data: dict[str, Path]) -> dict[str, Path]:
    root = data["root"] / "ft-components"
    return {"base": save_base_model(data["tokenizer"], root / "base"),
            "examples": write_examples(root / "examples", n_train=12, n_eval=4), "tokenizer": data["tokenizer"],
            "tokens": data["tokens"], "root": root}


def test_prompt_tokens_carry_no_loss(inputs: dict[str, Path]) -> None:
    import torch
    from transformers import AutoTokenizer

    from tasks.examples import render_prompt
    from tasks.modeling.encoding import IGNORE, collate, encode
    from tasks.modeling.tasktypes import task_type

    tok = AutoTokenizer.from_pretrained(str(inputs["tokenizer"]))
    enc = encode([{"id": "a", "prompt": "the cat", "response": "sat on the mat."}], kind="sft", tokenizer=tok,
                 max_length=64, eos_id=tok.eos_token_id)
    ids, targets = enc["ids"][0], enc["targets"][0]
    n_prompt = len(tok(render_prompt("the cat"))["input_ids"])
    assert targets[:n_prompt] == [IGNORE] * n_prompt and targets[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == tok.eos_token_id and ids[:n_prompt] == tok(render_prompt("the cat"))["input_ids"]
    x, _, y = collate(enc["ids"] * 2, enc["targets"] * 2, pad_id=tok.pad_token_id, kind="sft")
    logits = torch.randn(2, x.shape[1], len(tok), requires_grad=True)
    task_type("sft").loss(logits, y).backward()
    # positions t predict t + 1: the logits before the first response token are the last ones with any gradient
    grad_rows = logits.grad.abs().sum(-1)[0]
    assert grad_rows[:n_prompt - 1].abs().max() == 0 and (grad_rows[n_prompt - 1:-1] > 0).all()
    assert grad_rows[-1] == 0  # nothing follows the EOS


@pytest.mark.parametrize("architecture", ["lmforge", *ARCHITECTURES])
def test_classification_head_exports_as_the_architectures_sequence_classifier(inputs: dict[str, Path],
                                                                               tmp_path: Path,
                                                                               architecture: str) -> None:
    """lmforge's own Llama and checkpoints of other architectures: the exported task model is transformers' own
    sequence classifier of that architecture and gives the training module's logits on a padded batch."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tasks.examples import CHAT_TEMPLATE
    from tasks.modeling.encoding import collate, encode, special_ids
    from tasks.modeling.export import save_task_models
    from tasks.modeling.heads import build_multitask, load_backbone

    base = inputs["base"] if architecture == "lmforge" else save_checkpoint(architecture, tmp_path / architecture)
    tok = AutoTokenizer.from_pretrained(str(base))
    _, pad = special_ids(tok)  # GPT-2's tokenizer has no pad token: its EOS pads
    torch.manual_seed(0)
    module = build_multitask(load_backbone(base), heads={"topic": 2}, dropout=0.3, pad_token_id=pad).eval()
    save_task_models(tmp_path / "out", module=module, labels={"topic": ["pets", "sky"]}, sft_tasks=[],
                     tokenizer=tok, dtype="float32", chat_template=CHAT_TEMPLATE)
    exported = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "out" / "topic")).eval()
    assert type(exported).__name__.endswith("ForSequenceClassification")
    assert exported.config.model_type == ("llama" if architecture == "lmforge" else architecture)
    assert exported.config.id2label == {0: "pets", 1: "sky"} and exported.config.label2id == {"pets": 0, "sky": 1}
    rows = [{**row, "text": row["text"] + " and the dog ran home." * (i % 3)}  # lengths differ on every tokenizer
            for i, row in enumerate(classification_rows(6, 0))]
    enc = encode(rows, kind="classification", tokenizer=tok, max_length=64, labels=["pets", "sky"])
    x, mask, _ = collate(enc["ids"], enc["targets"], pad_id=pad, kind="classification")
    assert (mask == 0).any()  # the batch is padded: pooling must find the last real token
    with torch.no_grad():
        mine = module(input_ids=x, attention_mask=mask, task="topic")
        theirs = exported(input_ids=x, attention_mask=mask).logits
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    # the exported tokenizer pads as training did
    assert AutoTokenizer.from_pretrained(str(tmp_path / "out" / "topic")).pad_token_id == pad


def test_unfreezing_schedule_opens_a_layer_from_the_top_every_k_steps_and_embeddings_last(
        inputs: dict[str, Path]) -> None:
    from tasks.modeling.heads import build_multitask, load_backbone
    from tasks.training.freezing import apply_trainable, part_of, trainable_parts, unfreeze_steps

    def at(step: int, **kw: Any) -> set[str]:
        return trainable_parts(step, num_layers=3, **kw)

    assert at(0, unfreeze_every=5) == {"head", "norm", "lm_head"}
    assert at(4, unfreeze_every=5) == {"head", "norm", "lm_head"}
    assert at(5, unfreeze_every=5) == {"head", "norm", "lm_head", "layer.2"}
    assert at(10, unfreeze_every=5) == {"head", "norm", "lm_head", "layer.2", "layer.1"}
    assert at(15, unfreeze_every=5) == {"head", "norm", "lm_head", "layer.2", "layer.1", "layer.0"}
    assert at(20, unfreeze_every=5) == at(0) == {"head", "norm", "lm_head", "embed", "layer.0", "layer.1",
                                                 "layer.2"}
    assert at(20, unfreeze_every=5, freeze_embeddings=True, freeze_layers=1) == {"head", "norm", "lm_head",
                                                                                  "layer.1", "layer.2"}
    assert at(7, strategy="lora") == {"head", "adapter"}
    assert unfreeze_steps(num_layers=3, unfreeze_every=5) == [5, 10, 15, 20]

    module = build_multitask(load_backbone(inputs["base"]), heads={"topic": 2}, dropout=0.0, pad_token_id=2)
    apply_trainable(module, trainable_parts(0, num_layers=2, unfreeze_every=4))
    trainable = {part_of(n) for n, p in module.named_parameters() if p.requires_grad}
    assert trainable == {"head", "norm"}  # the tied LM head is the embedding: it waits for the embeddings
    apply_trainable(module, trainable_parts(4, num_layers=2, unfreeze_every=4))
    assert {part_of(n) for n, p in module.named_parameters() if p.requires_grad} == {"head", "norm", "layer.1"}


def test_lora_merge_is_base_plus_scaled_low_rank_update_and_the_adapter_loads(inputs: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    import torch
    from peft import PeftModel

    from tasks.modeling.heads import build_multitask, load_backbone
    from tasks.training.freezing import add_lora, merged_backbone, part_of

    base = load_backbone(inputs["base"])
    torch.manual_seed(0)
    module = build_multitask(add_lora(load_backbone(inputs["base"]), rank=4, alpha=8.0, dropout=0.0,
                                      target_modules=["q_proj", "v_proj"]), heads={"topic": 2}, dropout=0.0,
                             pad_token_id=2)
    assert {part_of(n) for n, p in module.named_parameters() if p.requires_grad} == {"head", "adapter"}
    with torch.no_grad():  # what training would do: B leaves zero
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    merged = merged_backbone(base_model_dir=inputs["base"], state=state, rank=4, alpha=8.0, dropout=0.0,
                             target_modules=["q_proj", "v_proj"], dtype="float32", causal=True,
                             adapter_dir=tmp_path / "adapter")
    prefix = "backbone.base_model.model.model.layers.1.self_attn.q_proj"
    a, b = state[f"{prefix}.lora_A.default.weight"], state[f"{prefix}.lora_B.default.weight"]
    expected = base.model.layers[1].self_attn.q_proj.weight + (8.0 / 4) * b @ a
    torch.testing.assert_close(merged.model.layers[1].self_attn.q_proj.weight, expected)
    assert torch.equal(merged.model.layers[1].self_attn.k_proj.weight, base.model.layers[1].self_attn.k_proj.weight)
    adapted = PeftModel.from_pretrained(load_backbone(inputs["base"]), str(tmp_path / "adapter")).eval()
    x = torch.tensor([[0, 5, 9, 17, 23]])
    with torch.no_grad():
        torch.testing.assert_close(adapted(input_ids=x).logits, merged.eval()(input_ids=x).logits, rtol=1e-4,
                                   atol=1e-5)


def test_task_batches_are_a_function_of_seed_and_step_and_balanced_sampling_evens_classes() -> None:
    from tasks.modeling.encoding import TaskBatches, class_weights

    train = {"a": {"ids": [[5, 6, 7]] * 90 + [[8, 9]] * 10, "targets": [0] * 90 + [1] * 10},
             "b": {"ids": [[5, 6, 1]] * 20, "targets": [[-100, 6, 1]] * 20}}
    kinds = {"a": "classification", "b": "sft"}
    one = TaskBatches(train, kinds=kinds, weights={"a": 3.0, "b": 1.0}, batch_size=4, seed=7, pad_id=2)
    two = TaskBatches(train, kinds=kinds, weights={"a": 3.0, "b": 1.0}, batch_size=4, seed=7, pad_id=2)
    assert [one.task(s) for s in range(200)] == [two.task(s) for s in range(200)]
    assert 120 < sum(one.task(s) == "a" for s in range(200)) < 180  # weights 3:1
    step = next(s for s in range(50) if one.task(s) == "a")
    assert all((x == y).all() for x, y in zip(one.batch(step)[1], two.batch(step)[1], strict=True))
    balanced = TaskBatches({"a": train["a"]}, kinds=kinds, weights={"a": 1.0}, batch_size=50, seed=7, pad_id=2,
                           balanced=True)
    drawn = [int(t) for s in range(20) if balanced.task(s) == "a" for t in balanced.batch(s)[1][2]]
    assert 0.35 < sum(drawn) / len(drawn) < 0.65  # 10% of the data, half the draws
    assert class_weights([0] * 90 + [1] * 10, 2) == pytest.approx([100 / 180, 100 / 20])
    # two ranks split one global batch
    r0 = TaskBatches(train, kinds=kinds, weights={"a": 1.0, "b": 1.0}, batch_size=2, seed=7, pad_id=2, rank=0,
                     world_size=2)
    assert r0.batch(step)[1][0].shape[0] == 2


def test_schedules_and_early_stopping() -> None:
    from tasks.modeling.evaluation import val_score
    from tasks.modeling.metrics import EarlyStopper
    from tasks.training.schedule import Plateau, lr_factor

    assert lr_factor(0, warmup_steps=3, steps=10, decay="cosine", min_ratio=0.1) == pytest.approx(0.25)
    assert lr_factor(3, warmup_steps=3, steps=10, decay="cosine", min_ratio=0.1) == pytest.approx(1.0)
    assert lr_factor(9, warmup_steps=3, steps=10, decay="cosine", min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(6, warmup_steps=3, steps=10, decay="linear", min_ratio=0.0) == pytest.approx(0.5)
    assert lr_factor(9, warmup_steps=3, steps=10, decay="plateau", min_ratio=0.1) == 1.0
    plateau = Plateau(factor=0.5, patience=2)
    assert [plateau.update(s) for s in (1.0, 0.9, 0.9, 1.1, 1.0, 1.0)] == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    again = Plateau(factor=0.5, patience=2)
    again.load_state_dict(plateau.state_dict())
    assert again.update(0.0) == plateau.update(0.0)
    stopper = EarlyStopper(patience=2, min_delta=0.05)
    assert [stopper.update(s, i) for i, s in enumerate((0.5, 0.6, 0.62, 0.64, 0.66))] == [True, True, False, False,
                                                                                           True]
    assert stopper.best_step == 4 and not stopper.stop
    stopper.update(0.0, 5)
    stopper.update(0.0, 6)
    assert stopper.stop and stopper.best_step == 4
    assert val_score({"a": "classification", "b": "sft"}, {"a": {"macro_f1": 0.8}, "b": {"loss": 2.0}}) == -0.6


def test_bad_task_data_is_named_before_training(inputs: dict[str, Path]) -> None:
    from tasks.examples import ExamplesError, write_rows
    from tasks.modeling.encoding import check_tasks

    assert set(check_tasks(inputs["examples"])) == {"topic", "complete"}
    bad = write_examples(inputs["root"] / "bad-examples", n_train=4, n_eval=2)
    write_rows(bad / "topic" / "val.jsonl", [{"id": "x", "text": "the cat", "label": "fish"}])
    with pytest.raises(ExamplesError, match=r"val.jsonl:1: label 'fish' is not one of \['pets', 'sky'\]"):
        check_tasks(bad)
    with pytest.raises(ExamplesError, match="run the finetune stage's data step first"):
        check_tasks(inputs["root"] / "nowhere")


@pytest.mark.parametrize("architecture", ["bert", "gpt2"])
def test_freezing_and_unfreezing_find_the_layers_whatever_the_architecture_calls_them(tmp_path: Path,
                                                                                      architecture: str) -> None:
    """BERT's encoder.layer.N and embeddings.*, GPT-2's h.N, wte and wpe: the same parts as lmforge's Llama."""
    from tasks.modeling.heads import build_multitask, load_backbone
    from tasks.training.freezing import apply_trainable, layer_count, part_of, trainable_parts

    base = save_checkpoint(architecture, tmp_path / architecture)
    module = build_multitask(load_backbone(base), heads={"topic": 2}, dropout=0.0, pad_token_id=0)
    assert layer_count(module) == 2
    names = {n: part_of(n) for n, _ in module.named_parameters()}
    embeddings = {"bert": ("word_embeddings", "position_embeddings", "token_type_embeddings", "embeddings.LayerNorm"),
                  "gpt2": ("wte", "wpe")}[architecture]
    assert all(names[n] == "embed" for n in names if any(e in n for e in embeddings)) and "embed" in names.values()
    assert {p for p in names.values() if p.startswith("layer.")} == {"layer.0", "layer.1"}
    assert {p for n, p in names.items() if n.startswith("heads.")} == {"head"}
    apply_trainable(module, trainable_parts(0, num_layers=2, freeze_embeddings=True, freeze_layers=1))
    trainable = {part_of(n) for n, p in module.named_parameters() if p.requires_grad}
    assert "embed" not in trainable and "layer.0" not in trainable and {"layer.1", "head"} <= trainable
    apply_trainable(module, trainable_parts(0, num_layers=2, unfreeze_every=3))  # heads and what follows the layers
    assert {part_of(n) for n, p in module.named_parameters() if p.requires_grad} <= {"head", "norm", "lm_head"}
