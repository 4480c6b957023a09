"""``pretrain.checkpoint`` in params: the tokenizer stage reads it too, a local directory is a DVC dep of both stages
(never inside what they or later stages write), a hub id's pin is in `lmforge status`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.config import ParamsError, parse_params
from pipelines.config.sources import OutputOverlapError
from tests.conftest import REPO


@pytest.fixture
def params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_no_checkpoint_is_the_from_scratch_llama_with_the_deps_of_before(params: dict) -> None:
    p = parse_params(params)
    assert p.pretrain.checkpoint is None and p.tokenizer.checkpoint is None
    assert p.tokenizer.data_deps(REPO) == ["data/dedup"]
    assert p.pretrain.data_deps(REPO) == ["data/tokens", "models/tokenizer"]
    assert p.tokenizer.status_notes(REPO) == p.pretrain.status_notes(REPO) == []
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert "pretrain.checkpoint" in stages["tokenizer"]["params"]  # switching it makes the tokenizer stale too
    assert "checkpoint" in params["pretrain"]  # DVC needs the key it tracks, null included


def test_a_local_checkpoint_is_a_dep_of_both_stages(params: dict, tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    (tmp_path / "ckpt" / "gpt2").mkdir(parents=True)
    params["pretrain"]["checkpoint"] = {"path": "ckpt/gpt2"}
    p = parse_params(params)
    assert p.tokenizer.checkpoint == p.pretrain.checkpoint
    assert p.tokenizer.data_deps(tmp_path) == ["data/dedup", "ckpt/gpt2"]
    assert p.pretrain.data_deps(tmp_path) == ["data/tokens", "models/tokenizer", "ckpt/gpt2"]
    assert p.pretrain.status_notes(tmp_path) == ["pretrain.checkpoint: local checkpoint ckpt/gpt2 (a DVC dep: its "
                                                 "content is tracked)"]


def test_a_checkpoint_inside_what_the_pipeline_writes_is_refused(params: dict, tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    params["pretrain"]["checkpoint"] = {"path": "./models/base"}  # pretrain's own output: a cycle
    p = parse_params(params)
    with pytest.raises(OutputOverlapError, match="reaches into models/base"):
        p.pretrain.data_deps(tmp_path)
    with pytest.raises(OutputOverlapError, match="the output of stage 'pretrain', which runs after it"):
        p.tokenizer.data_deps(tmp_path)


def test_status_says_how_a_hub_checkpoint_is_pinned(params: dict) -> None:
    params["pretrain"]["checkpoint"] = {"path": "org/model"}
    p = parse_params(params)
    unpinned = ("pretrain.checkpoint: hub checkpoint org/model: unpinned: the hub checkpoint can change without "
                "notice (set `revision` to pin it)")
    assert p.tokenizer.status_notes(REPO) == p.pretrain.status_notes(REPO) == [unpinned]
    assert p.tokenizer.data_deps(REPO) == ["data/dedup"]  # a hub id is no file: its revision pins it
    params["pretrain"]["checkpoint"] = {"path": "org/model", "revision": "abc123"}
    assert parse_params(params).pretrain.status_notes(REPO) == [
        "pretrain.checkpoint: hub checkpoint org/model: pinned at revision abc123"]


def test_bad_checkpoint_settings_name_their_key(params: dict) -> None:
    params["pretrain"]["checkpoint"] = {"path": "https://huggingface.co/gpt2"}
    with pytest.raises(ParamsError, match=r"pretrain\.checkpoint: .*is a URL"):
        parse_params(params)
    params["pretrain"]["checkpoint"] = {"path": "gpt2", "revison": "main"}
    with pytest.raises(ParamsError, match=r"pretrain\.checkpoint\.revison: unknown key"):
        parse_params(params)

