"""The KD components in-process on tiny models: the KD loss against a hand computation (T^2 included), the top-k
form, the student's config and its layer-subset initialisation (Llama as lmforge built it before; BERT and GPT-2 with
their own layer and MLP names, GPT-2's Conv1D included), a student learning from a teacher, and the teacher cache
giving the live loss."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from tests.tasks.training.finetune_fixtures import SHAPE, sft_rows

TEACHER = {**SHAPE, "num_layers": 4}


def llama(vocab: int = 64, **shape: Any) -> Any:
    from tasks.modeling.llama import build_llama

    return build_llama(vocab_size=vocab, **{**TEACHER, **shape}, dtype="float32")


def test_kd_loss_equals_the_hand_computed_value_with_its_t_squared_factor() -> None:
    import torch

    from tasks.training.kd import kd_loss

    student, teacher = [1.0, 0.0, -1.0], [0.0, 2.0, 0.5]
    for temperature in (1.0, 2.0, 4.0):
        p = [math.exp(v / temperature) for v in teacher]
        p = [v / sum(p) for v in p]
        q = [math.exp(v / temperature) for v in student]
        q = [v / sum(q) for v in q]
        want = temperature**2 * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
        got = kd_loss(torch.tensor([student]), torch.tensor([teacher]), temperature=temperature)
        assert float(got) == pytest.approx(want, rel=1e-6)
    # mean over rows; zero when the student matches the teacher
    two = kd_loss(torch.tensor([student, teacher]), torch.tensor([teacher, teacher]), temperature=2.0)
    assert float(two) == pytest.approx(float(kd_loss(torch.tensor([student]), torch.tensor([teacher]),
                                                     temperature=2.0)) / 2, rel=1e-6)
    same = kd_loss(torch.tensor([teacher]), torch.tensor([teacher]), temperature=3.0)
    assert float(same) == pytest.approx(0, abs=1e-7)


def test_top_k_loss_is_exact_at_full_k_and_renormalises_below() -> None:
    import torch

    from tasks.training.kd import kd_loss, topk_kd_loss

    torch.manual_seed(0)
    s, t = torch.randn(5, 11), torch.randn(5, 11) * 3
    full = t.topk(11, dim=-1)
    assert float(topk_kd_loss(s, full.values, full.indices, temperature=2.0)) == pytest.approx(
        float(kd_loss(s, t, temperature=2.0)), rel=1e-6)
    top = t.topk(3, dim=-1)
    # by hand for row 0: the teacher's 3 kept logits renormalised, the student's full log-softmax at those indices
    p = torch.softmax(top.values[0] / 2.0, -1)
    log_q = torch.log_softmax(s[0] / 2.0, -1)[top.indices[0]]
    want = 4.0 * float((p * (p.log() - log_q)).sum())
    assert float(topk_kd_loss(s[:1], top.values[:1], top.indices[:1], temperature=2.0)) == pytest.approx(want,
                                                                                                          rel=1e-6)


def student_of(teacher: Any, seed: int = 1, **shape: Any) -> Any:
    """A fresh student backbone of ``teacher``'s architecture through the recipe's own path (student_config)."""
    import torch

    from tasks.training.student import new_backbone, student_config

    torch.manual_seed(seed)
    return new_backbone(student_config(teacher.config, **{"num_layers": 2, **shape}), causal=True)


def test_the_student_of_lmforges_llama_is_what_build_llama_made() -> None:
    """The generic path (the teacher's config with fewer layers) builds, for lmforge's own Llama, exactly the model
    the Llama-only builder did: same config, same fresh weights for a seed."""
    import torch

    from tasks.modeling.llama import build_llama

    torch.manual_seed(0)
    teacher = llama()
    student = student_of(teacher, seed=5, intermediate_size=48, pad_token_id=2)
    torch.manual_seed(5)
    before = build_llama(vocab_size=64, **{**TEACHER, "num_layers": 2, "intermediate_size": 48}, dtype="float32")
    before.config.use_cache = False  # as the recipe's student was built
    assert student.config.to_diff_dict() == before.config.to_diff_dict()
    assert student.generation_config.to_dict() == before.generation_config.to_dict()
    mine, theirs = student.state_dict(), before.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_layer_subset_init_copies_exactly_the_chosen_layers_and_embeddings() -> None:
    import torch

    from tasks.modeling.llama import count_params
    from tasks.training.student import init_from_teacher, layer_map

    torch.manual_seed(0)
    teacher = llama()
    student = student_of(teacher)
    assert student.config.num_key_value_heads == 2 and student.config.vocab_size == 64  # the teacher's GQA kept
    assert count_params(student) < count_params(teacher)
    mapping = layer_map(teacher_layers=4, student_layers=2)
    assert mapping == [0, 2]
    report = init_from_teacher(student, teacher, layers=mapping)
    assert not report["kept"]
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    assert torch.equal(student.lm_head.weight, teacher.model.embed_tokens.weight)  # tied
    assert torch.equal(student.model.norm.weight, teacher.model.norm.weight)
    for i, j in enumerate(mapping):
        mine, theirs = student.model.layers[i].state_dict(), teacher.model.layers[j].state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    q_proj = student.model.layers[1].self_attn.q_proj.weight
    assert not torch.equal(q_proj, teacher.model.layers[1].self_attn.q_proj.weight)
    # explicit indices; a narrower MLP takes the teacher layer's strongest neurons, a wider one stays fresh
    narrow = student_of(teacher, intermediate_size=48)
    report = init_from_teacher(narrow, teacher, layers=[3, 1])
    assert not report["kept"] and len(report["neurons"]) == 6
    assert torch.equal(narrow.model.layers[0].self_attn.o_proj.weight, teacher.model.layers[3].self_attn.o_proj.weight)
    assert torch.equal(narrow.model.layers[1].input_layernorm.weight, teacher.model.layers[1].input_layernorm.weight)
    mlp = teacher.model.layers[3].mlp
    score = mlp.gate_proj.weight.norm(dim=1) * mlp.up_proj.weight.norm(dim=1) * mlp.down_proj.weight.norm(dim=0)
    keep = sorted(score.argsort(descending=True)[:48].tolist())
    assert torch.equal(narrow.model.layers[0].mlp.up_proj.weight, mlp.up_proj.weight[keep])
    assert torch.equal(narrow.model.layers[0].mlp.down_proj.weight, mlp.down_proj.weight[:, keep])
    wide = student_of(teacher, intermediate_size=80)
    report = init_from_teacher(wide, teacher, layers=[0, 1])
    assert sorted(report["kept"]) == sorted(f"model.layers.{i}.mlp.{p}_proj.weight" for i in (0, 1)
                                            for p in ("gate", "up", "down"))


def test_a_smaller_student_learns_from_the_teacher() -> None:
    import torch

    from tasks.training.kd import kd_loss
    from tasks.training.student import init_from_teacher

    torch.manual_seed(0)
    teacher = llama().eval()
    student = student_of(teacher, num_layers=1, intermediate_size=32)
    init_from_teacher(student, teacher, layers=[0])
    x = torch.randint(3, 64, (8, 16))
    with torch.no_grad():
        target = teacher(input_ids=x).logits
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = kd_loss(student(input_ids=x).logits.flatten(0, 1), target.flatten(0, 1), temperature=2.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.fixture(scope="module")
def tokenizer(data: dict[str, Path]) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(data["tokenizer"]))


def test_cached_teacher_logits_with_full_k_give_the_live_loss(tokenizer: Any, tmp_path: Path) -> None:
    import torch

    from tasks.modeling.encoding import collate, encode
    from tasks.training.kd import TeacherCache, kd_loss, target_positions, teacher_forward, topk_kd_loss

    vocab = len(tokenizer)
    torch.manual_seed(0)
    teacher, student = llama(vocab).eval(), llama(vocab, num_layers=1).eval()
    data = encode(sft_rows(12, 0), kind="sft", tokenizer=tokenizer, max_length=64, eos_id=tokenizer.eos_token_id)
    cache = TeacherCache(kind="sft", top_k=vocab)
    cache.build(teacher, data, batch_size=5, pad_id=tokenizer.pad_token_id, device="cpu")
    cache.save(tmp_path / "c.pt", digest="abc")
    assert TeacherCache.load(tmp_path / "c.pt", kind="sft", top_k=vocab, digest="other") is None
    cache = TeacherCache.load(tmp_path / "c.pt", kind="sft", top_k=vocab, digest="abc")
    pick = [3, 0, 7, 3]  # another batch than the build's, with a repeat
    x, mask, y = collate([data["ids"][i] for i in pick], [data["targets"][i] for i in pick],
                         pad_id=tokenizer.pad_token_id, kind="sft")
    with torch.no_grad():
        rows, positions = target_positions(student(input_ids=x, attention_mask=mask).logits, y)
    live = kd_loss(rows, teacher_forward(teacher, x, mask)[:, :-1][positions], temperature=2.0)
    values, indices = cache.lookup(x, mask)
    assert values.shape == (int(positions.sum()), vocab)
    assert float(topk_kd_loss(rows, values, indices, temperature=2.0)) == pytest.approx(float(live), rel=1e-5)
    small = TeacherCache(kind="sft", top_k=8)
    small.build(teacher, data, batch_size=5, pad_id=tokenizer.pad_token_id, device="cpu")
    assert small.nbytes() * 30 < cache.nbytes()  # 8 of 288 logits per position
    approx = float(topk_kd_loss(rows, *small.lookup(x, mask), temperature=2.0))
    assert approx != pytest.approx(float(live), rel=1e-5) and math.isfinite(approx)


def test_cached_classifier_logits_equal_the_live_ones(tokenizer: Any) -> None:
    import torch
    from transformers import LlamaForSequenceClassification

    from tasks.modeling.encoding import collate, encode
    from tasks.training.kd import TeacherCache, teacher_forward
    from tests.tasks.training.finetune_fixtures import classification_rows

    torch.manual_seed(0)
    conf = llama(len(tokenizer)).config
    conf.num_labels, conf.pad_token_id = 2, tokenizer.pad_token_id
    teacher = LlamaForSequenceClassification(conf).eval()
    data = encode(classification_rows(10, 0), kind="classification", tokenizer=tokenizer, max_length=64,
                  labels=["pets", "sky"])
    cache = TeacherCache(kind="classification", top_k=1)
    cache.build(teacher, data, batch_size=4, pad_id=tokenizer.pad_token_id, device="cpu")
    x, mask, _ = collate(data["ids"][::-1], data["targets"][::-1], pad_id=tokenizer.pad_token_id,
                         kind="classification")
    assert torch.allclose(cache.lookup(x, mask), teacher_forward(teacher, x, mask), atol=1e-5)


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_layer_subset_init_of_bert_and_gpt2_students(arch: str, tmp_path: Path) -> None:
    """The same recipe on other architectures: the student is the teacher's architecture with one of its two layers
    (config through the architecture's own names: GPT-2's n_layer, n_inner), the chosen layer and everything outside
    the layers copied, a narrower MLP cut to the teacher layer's strongest neurons whatever the projections are called
    (BERT intermediate/output.dense, GPT-2's transposed Conv1D c_fc/c_proj, biases included)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from tasks.modeling.errors import ConfigError
    from tasks.training.student import init_from_teacher, new_backbone, student_config
    from tests.assets.checkpoints import save_checkpoint

    path = save_checkpoint(arch, tmp_path / arch)
    teacher = (AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=2) if arch == "bert"
               else AutoModelForCausalLM.from_pretrained(str(path))).eval()
    torch.manual_seed(0)
    student = new_backbone(student_config(teacher.config, num_layers=1, intermediate_size=16), causal=arch == "gpt2")
    assert type(student).__name__ == ("BertModel" if arch == "bert" else "GPT2LMHeadModel")
    assert student.config.num_hidden_layers == 1 and (arch == "bert" or student.config.n_layer == 1)
    report = init_from_teacher(student, teacher, layers=[1])
    assert not report["kept"] and len(report["neurons"]) == 4  # two weights and two biases of the MLP
    if arch == "bert":
        mine, theirs = student.encoder.layer[0], teacher.bert.encoder.layer[1]
        made, read = theirs.intermediate.dense, theirs.output.dense
        keep = (made.weight.norm(dim=1) * read.weight.norm(dim=0)).topk(16).indices.sort().values
        assert torch.equal(mine.intermediate.dense.weight, made.weight[keep])
        assert torch.equal(mine.intermediate.dense.bias, made.bias[keep])
        assert torch.equal(mine.output.dense.weight, read.weight[:, keep])
        assert torch.equal(mine.attention.self.query.weight, theirs.attention.self.query.weight)
        assert torch.equal(student.pooler.dense.weight, teacher.bert.pooler.dense.weight)
        assert torch.equal(student.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)
    else:
        mine, theirs = student.transformer.h[0], teacher.transformer.h[1]
        made, read = theirs.mlp.c_fc, theirs.mlp.c_proj  # Conv1D: weight (in, out)
        keep = (made.weight.norm(dim=0) * read.weight.norm(dim=1)).topk(16).indices.sort().values
        assert torch.equal(mine.mlp.c_fc.weight, made.weight[:, keep]) and mine.mlp.c_fc.nf == 16
        assert torch.equal(mine.mlp.c_fc.bias, made.bias[keep])
        assert torch.equal(mine.mlp.c_proj.weight, read.weight[keep])
        assert torch.equal(mine.attn.c_attn.weight, theirs.attn.c_attn.weight)
        assert torch.equal(student.transformer.ln_f.weight, teacher.transformer.ln_f.weight)
        assert student.lm_head.weight is student.transformer.wte.weight  # tied, as the teacher
        assert student.config.n_inner == 16
    x = torch.randint(5, 40, (2, 9))
    assert student(input_ids=x)[0].shape[:2] == (2, 9)  # the cut shapes agree with the config
    with pytest.raises(ConfigError, match="student.hidden_size 64 differs from the"):
        student_config(teacher.config, num_layers=1, hidden_size=64)
    same = student_config(teacher.config, num_layers=1, hidden_size=32, num_heads=4)  # the teacher's: allowed
    assert same.hidden_size == 32


def test_kd_on_a_packed_batch_equals_kd_on_the_padded_batch(tmp_path: Path) -> None:
    """distill packs sft/chat batches: the student and the teacher both see the packed rows (each example attending
    to itself only), so the hard and the KD loss equal those of the same examples padded, to 1e-5 in fp32; a
    teacher given the packed rows without their position ids (examples seeing each other) does not."""
    import random

    import torch

    from tasks.modeling.encoding import collate
    from tasks.modeling.heads import build_multitask
    from tasks.modeling.packing import IGNORE, collate_packed
    from tasks.training.teachers import Teachers

    torch.manual_seed(0)
    llama().save_pretrained(tmp_path / "teacher")
    teachers = Teachers({"t": tmp_path / "teacher"}, kinds={"t": "sft"}, labels={}, alpha=0.5, temperature=2.0)
    teachers.to(torch.device("cpu"))
    student = build_multitask(student_of(teachers.models["t"]), heads={}, dropout=0.0, pad_token_id=0,
                              types={"t": "sft"}).eval()
    rng = random.Random(0)
    ids = [[rng.randrange(3, 64) for _ in range(n)] for n in (5, 11, 3, 17, 8, 2)]
    targets = [[IGNORE] * (len(s) // 2) + s[len(s) // 2:] for s in ids]
    x, mask, y = collate(ids, targets, pad_id=0, kind="sft")
    px, pos, py = collate_packed(ids, targets, pad_id=0)
    assert px.shape[0] < x.shape[0]  # several examples share a row
    with torch.no_grad():
        padded, (hard, soft) = teachers.loss(student, "t", x, mask, y)
        teachers.packed = {"t"}
        packed, (p_hard, p_soft) = teachers.loss(student, "t", px, pos, py)
        teachers.packed = set()
        leaky, (_, l_soft) = teachers.loss(student, "t", px, torch.ones_like(px), py)
    assert abs(p_hard - hard) < 1e-5 and abs(p_soft - soft) < 1e-5 and abs(float(packed - padded)) < 1e-5
    assert abs(l_soft - soft) > 1e-4  # the control: the test notices examples that see each other
