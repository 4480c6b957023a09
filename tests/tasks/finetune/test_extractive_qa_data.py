"""The data step on extractive QA tasks: a SQuAD 2.0 json file (format squad) and the same questions as Hugging Face
style jsonl; answers checked, unanswerable questions kept only where the task allows them, the options in the
manifest."""

from __future__ import annotations

import json
from pathlib import Path

from tests.assets.squad import squad_dataset, write_squad
from tests.tasks.finetune.conftest import rows, run, task


def test_a_squad_file_becomes_question_rows_with_its_bad_records_quarantined(tmp_path: Path,
                                                                              tokenizer_dir: Path) -> None:
    write_squad(tmp_path / "qa/train.json", 30, unanswerable=True, bad=True)
    qa = task("qa", "extractive_qa", [{"kind": "files", "paths": ["qa/*.json"], "format": "squad"}],
              extractive_qa={"unanswerable": True, "doc_stride": 16})
    counters = run(tmp_path, [qa], tokenizer_dir, max_length=64)
    assert counters["qa.examples_in"] == 30 * 4 and counters["qa.quarantined"] == 2
    assert counters["qa.quarantined.answer_mismatch"] == 1 and counters["qa.quarantined.missing_field"] == 1
    kept = [r for s in ("train", "val", "test") for r in rows(tmp_path, "qa", s)]
    assert len(kept) == 118 and set(kept[0]) == {"id", "context", "question", "answers"}
    assert sum(not r["answers"]["text"] for r in kept) == 30  # the unanswerable ones
    for r in kept:
        for text, start in zip(r["answers"]["text"], r["answers"]["answer_start"], strict=True):
            assert r["context"][start:start + len(text)] == text
    [mismatch] = [q for q in rows(tmp_path, "qa", "quarantine") if q["reason"] == "answer_mismatch"]
    assert mismatch["where"] == "qa/train.json#0" and "it occurs at" in mismatch["detail"]
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())["tasks"]["qa"]
    assert manifest["type"] == "extractive_qa" and manifest["labels"] is None
    assert manifest["settings"] == {"unanswerable": True, "doc_stride": 16, "max_answer_length": 30}


def test_hugging_face_style_records_and_unanswerable_questions_by_default(tmp_path: Path,
                                                                          tokenizer_dir: Path) -> None:
    questions = [{"passage": p["context"], "q": qa["question"],
                  "answers": {"text": [a["text"] for a in qa["answers"]],
                              "answer_start": [a["answer_start"] for a in qa["answers"]]}}
                 for article in squad_dataset(20, unanswerable=True)["data"] for p in article["paragraphs"]
                 for qa in p["qas"]]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    qa = task("qa", "extractive_qa", [{"kind": "files", "paths": ["qa.jsonl"],
                                       "fields": {"context": "passage", "question": "q"}}])
    counters = run(tmp_path, [qa], tokenizer_dir, max_length=128)
    assert counters["qa.quarantined"] == counters["qa.quarantined.unanswerable"] == 20  # not allowed by default
    assert counters["qa.train"] + counters["qa.val"] + counters["qa.test"] == 60
    [bad] = rows(tmp_path, "qa", "quarantine")[:1]
    assert bad["where"] == "qa.jsonl:4" and "unanswerable to true" in bad["detail"]


def test_splits_made_by_the_data_step_keep_every_passage_in_one_split(tmp_path: Path, tokenizer_dir: Path) -> None:
    """Three questions per passage: the splits are made by passage (val and test get whole passages), so no test
    question is about a passage a training question showed the model."""
    write_squad(tmp_path / "qa/all.json", 40)
    qa = task("qa", "extractive_qa", [{"kind": "files", "paths": ["qa/*.json"], "format": "squad"}])
    counters = run(tmp_path, [qa], tokenizer_dir, max_length=128)
    split_of: dict[str, set[str]] = {}
    for split in ("train", "val", "test"):
        for r in rows(tmp_path, "qa", split):
            split_of.setdefault(r["context"], set()).add(split)
    assert len(split_of) == 40 and all(len(s) == 1 for s in split_of.values())
    per_split = {s: sum(1 for v in split_of.values() if v == {s}) for s in ("train", "val", "test")}
    assert per_split == {"train": 32, "val": 4, "test": 4}  # shares of the passages (0.1 / 0.1 by default)
    assert (counters["qa.train"], counters["qa.val"], counters["qa.test"]) == (96, 12, 12)


def test_files_released_one_per_split_keep_their_split(tmp_path: Path, tokenizer_dir: Path) -> None:
    """SQuAD comes as train-v2.0.json and dev-v2.0.json: a data entry per file, the dev file's with its split."""
    write_squad(tmp_path / "qa/train.json", 30, seed=1)
    write_squad(tmp_path / "qa/dev.json", 6, seed=2)
    qa = task("qa", "extractive_qa", [{"kind": "files", "paths": ["qa/train.json"], "format": "squad"},
                                      {"kind": "files", "paths": ["qa/dev.json"], "format": "squad", "split": "test"}])
    counters = run(tmp_path, [qa], tokenizer_dir, max_length=128)
    # the dev file is the test split, whole and alone; the train file's passages are split into train and val only
    assert sorted({r["context"] for r in rows(tmp_path, "qa", "test")}) == sorted(
        p["context"] for a in squad_dataset(6, seed=2)["data"] for p in a["paragraphs"])
    assert (counters["qa.train"], counters["qa.val"], counters["qa.test"]) == (81, 9, 18)
