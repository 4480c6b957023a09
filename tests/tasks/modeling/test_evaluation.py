"""The model layer's shared evaluation and loading: a run's validation passes (val metrics, train/val gap,
val_score, early stopping, best weights, the JSON-lines record the flow reads, resume state), the JSON-lines reader
with a line still being written, and exported task models loaded back into the multi-task module."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.modeling.encoding import IGNORE

VOCAB, PAD, EOS = 48, 0, 1
LABELS = ["a", "b", "c"]


def save_tokenizer(out: Path) -> Path:
    """A word-level tokenizer of VOCAB ids with pad and EOS, saved as transformers saves any tokenizer."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD, "</s>": EOS, **{f"w{i}": i for i in range(2, VOCAB)}}
    core = Tokenizer(WordLevel(vocab, unk_token="<pad>"))
    core.pre_tokenizer = Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>").save_pretrained(str(out))
    return out


def tiny_multitask(seed: int, *, tie: bool = True) -> Any:
    import torch

    from tasks.modeling.heads import build_multitask
    from tasks.modeling.llama import build_llama

    torch.manual_seed(seed)
    llama = build_llama(vocab_size=VOCAB, hidden_size=16, num_layers=2, num_heads=2, num_kv_heads=2,
                        intermediate_size=24, max_position_embeddings=32, rope_theta=10000.0, tie_word_embeddings=tie,
                        bos_token_id=None, eos_token_id=EOS, pad_token_id=PAD, dtype="float32")
    llama.config.use_cache = False
    return build_multitask(llama, heads={"cls": len(LABELS)}, dropout=0.0, pad_token_id=PAD)


def encoded(n: int, seed: int) -> dict[str, dict[str, Any]]:
    """Hand-made encoded splits: ``cls`` (a label per row) and ``gen`` (prompt positions ignored)."""
    rng = random.Random(seed)
    cls_ids = [[rng.randrange(2, VOCAB) for _ in range(rng.randrange(3, 9))] for _ in range(n)]
    gen_ids = [[rng.randrange(2, VOCAB) for _ in range(rng.randrange(4, 10))] + [EOS] for _ in range(n)]
    return {"cls": {"ids": cls_ids, "targets": [rng.randrange(len(LABELS)) for _ in range(n)], "dropped": 0,
                    "rows": [{}] * n},
            "gen": {"ids": gen_ids, "targets": [[IGNORE, IGNORE] + ids[2:] for ids in gen_ids], "dropped": 0,
                    "rows": [{}] * n}}


@pytest.fixture()
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real DeepSpeed engine in this process, its rendezvous variables set through monkeypatch and its process
    group destroyed afterwards: a later subprocess of this worker must not inherit RANK or MASTER_PORT (it would
    rendezvous on this port, which is still bound)."""
    import torch.distributed as dist

    from pipelines.net import free_port
    from tasks.training import engine as ds

    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(key, value)
    ds.init_distributed()
    model = tiny_multitask(0)
    config = ds.deepspeed_config(batch_size=4, grad_accum=1, grad_clip=1.0, zero_stage=0, precision="fp32")
    eng, _ = ds.build_engine(model, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0, ds_config=config)
    yield eng
    if dist.is_initialized():
        dist.destroy_process_group()


def evaluator(path: Path, *, min_delta: float = 0.0) -> Any:
    from tasks.modeling.evaluation import Evaluator
    from tasks.modeling.metrics import EarlyStopper

    data = {"val": encoded(10, 1), "train": encoded(12, 2)}
    return Evaluator(data=data, kinds={"cls": "classification", "gen": "sft"}, labels={"cls": LABELS}, batch_size=4,
                     pad_id=PAD, max_examples=None, stopper=EarlyStopper(patience=1, min_delta=min_delta),
                     evaluations_path=path)


def test_each_pass_scores_every_task_and_reaches_the_flow_as_data(engine: Any, tmp_path: Path) -> None:
    from tasks.modeling.evaluation import evaluate_split, read_evaluations, val_score

    path = tmp_path / "evaluations.jsonl"
    ev = evaluator(path, min_delta=10.0)  # nothing after the first pass counts as a gain: stop at the second
    assert ev(engine, 0) is False
    first = ev.history[0]
    own = {t: evaluate_split(engine, ev.val[t], task=t, kind=k, labels=ev.labels.get(t), batch_size=4, pad_id=PAD)
           for t, k in ev.kinds.items()}
    assert first["val_score"] == pytest.approx(val_score(ev.kinds, own))
    assert first["val_score"] == pytest.approx((own["cls"]["macro_f1"] - own["gen"]["loss"]) / 2)
    assert first["tasks"]["cls"]["train_loss"] is None and first["tasks"]["cls"]["gap"] is None  # nothing trained
    assert 0 <= first["tasks"]["cls"]["train_accuracy"] <= 1 and "train_accuracy" not in first["tasks"]["gen"]
    state = engine.module.state_dict()
    assert ev.best_state is not None and all((ev.best_state[k] == state[k]).all() for k in state)
    ev.record("gen", 2.0, 1)
    ev.record("gen", 4.0, 1)
    assert ev(engine, 5) is True  # patience 1, no gain above min_delta
    gen = ev.history[1]["tasks"]["gen"]
    assert gen["train_loss"] == pytest.approx(3.0) and gen["gap"] == pytest.approx(gen["loss"] - 3.0)
    assert ev.history[1]["tasks"]["cls"]["train_loss"] is None  # cls drew no batch since the last pass
    records, offset = read_evaluations(path)
    assert offset == path.stat().st_size
    assert [(r["step"], r["best"]) for r in records] == [(0, True), (5, False)]
    assert [r["val_score"] for r in records] == [h["val_score"] for h in ev.history]
    assert records[1]["tasks"]["gen"]["train_loss"] == pytest.approx(3.0)
    assert ev.best["step"] == 0
    again = evaluator(tmp_path / "other.jsonl")  # a resumed run continues from the checkpoint's state
    again.load_state_dict(json.loads(json.dumps({**ev.state_dict(), "best_state": None})))
    assert again.history == ev.history and again.stopper.best_step == 0 and again.stopper.bad == 1


def test_a_line_still_being_written_waits_for_the_next_read(tmp_path: Path) -> None:
    from tasks.modeling.evaluation import read_evaluations

    path = tmp_path / "evaluations.jsonl"
    assert read_evaluations(path) == ([], 0)  # no evaluation yet: no file
    path.write_text('{"step": 0, "val_score": -1.5}\n{"step": 10, "val_')
    records, offset = read_evaluations(path)
    assert records == [{"step": 0, "val_score": -1.5}] and offset == len('{"step": 0, "val_score": -1.5}\n')
    with path.open("a") as f:
        f.write('score": -1.25}\n')
    more, end = read_evaluations(path, offset)
    assert more == [{"step": 10, "val_score": -1.25}] and end == path.stat().st_size


@pytest.mark.parametrize("tie", [True, False])
def test_exported_task_models_load_back_into_the_multitask_module(tmp_path: Path, tie: bool) -> None:
    import torch

    from tasks.examples import CHAT_TEMPLATE
    from tasks.modeling.export import save_task_models
    from tasks.modeling.heads import load_exported
    tokenizer = save_tokenizer(tmp_path / "tokenizer")
    trained = tiny_multitask(1, tie=tie)
    from transformers import AutoTokenizer

    save_task_models(tmp_path / "out", module=trained, labels={"cls": LABELS}, sft_tasks=["gen"],
                     tokenizer=AutoTokenizer.from_pretrained(str(tokenizer)), dtype="float32",
                     chat_template=CHAT_TEMPLATE)
    dirs = {"cls": tmp_path / "out" / "cls", "gen": tmp_path / "out" / "gen"}
    fresh = load_exported(tiny_multitask(2, tie=tie), dirs)
    want, got = trained.state_dict(), fresh.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    x = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(fresh(input_ids=x, attention_mask=torch.ones_like(x), task="cls"),
                       trained(input_ids=x, attention_mask=torch.ones_like(x), task="cls"))
    heads_only = load_exported(tiny_multitask(3, tie=tie), dirs, heads_only=True)
    assert torch.equal(heads_only.heads["cls"].score.weight, trained.heads["cls"].score.weight)
    assert not torch.equal(heads_only.llama().model.embed_tokens.weight, trained.llama().model.embed_tokens.weight)
    with pytest.raises(KeyError):  # a task whose files are missing
        load_exported(tiny_multitask(2, tie=tie), {"gen": dirs["gen"]})
