"""Checkpoints as starting points (tasks/modeling/source.py, pipelines/config/checkpoint.py): local directories and
hub ids resolved, checked and described; the hub unreachable is one clear error after the retries, through the same
code path a stage runs (``huggingface_hub.snapshot_download`` against ``HF_ENDPOINT`` on 127.0.0.1)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.modeling import source
from tests.assets.checkpoints import save_checkpoint
from tests.conftest import REPO, _free_port, subprocess_env


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("source")
    return {a: save_checkpoint(a, root / a) for a in ("bert", "gpt2")}


def test_a_local_directory_resolves_in_place_and_a_revision_on_it_is_an_error(saved: dict[str, Path]) -> None:
    root = saved["bert"].parent
    assert source.resolve("bert", revision=None, root=root, setting="finetune.checkpoint") == saved["bert"]
    assert source.resolve(str(saved["gpt2"]), revision=None, root=Path("/"), setting="x") == saved["gpt2"]
    with pytest.raises(source.CheckpointError, match=r"finetune.checkpoint.revision is set but .* local directory"):
        source.resolve("bert", revision="main", root=root, setting="finetune.checkpoint")
    with pytest.raises(source.CheckpointError, match=r"pretrain.checkpoint.path './nope': no such directory"):
        source.resolve("./nope", revision=None, root=root, setting="pretrain.checkpoint")


def test_check_names_the_setting_and_what_is_wrong(saved: dict[str, Path], tmp_path: Path) -> None:
    assert source.check(saved["gpt2"], setting="s", needs_decoder=True, classification=True)["model_type"] == "gpt2"
    assert source.check(saved["bert"], setting="s", classification=True)["model_type"] == "bert"
    with pytest.raises(source.CheckpointError, match="s: .* is a bert encoder, which cannot generate"):
        source.check(saved["bert"], setting="s", needs_decoder=True)
    with pytest.raises(source.CheckpointError, match=r"s: .* is not a Hugging Face checkpoint \(no config.json\)"):
        source.check(tmp_path, setting="s")
    other = tmp_path / "other-vocabulary"
    shutil.copytree(saved["gpt2"], other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "vocab_size": 50}))
    with pytest.raises(source.CheckpointError, match=r"has \d+ tokens but the model's vocab_size is 50"):
        source.check(other, setting="s")
    broken = tmp_path / "no-tokenizer"
    shutil.copytree(saved["gpt2"], broken)
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"):
        (broken / name).unlink(missing_ok=True)
    with pytest.raises(source.CheckpointError, match="has no tokenizer"):
        source.check(broken, setting="s")
    (broken / "model.safetensors").unlink()
    with pytest.raises(source.CheckpointError, match="has no weights"):
        source.check(broken, setting="s")
    (broken / "config.json").write_text(json.dumps({"model_type": "not-a-model"}))
    with pytest.raises(source.CheckpointError, match="model_type 'not-a-model', which this transformers does not"):
        source.check(broken, setting="s")


def test_the_digest_follows_content_not_place_and_the_license_is_read(saved: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere"
    shutil.copytree(saved["bert"], copy)
    assert source.content_digest(copy) == source.content_digest(saved["bert"])
    (copy / ".cache").mkdir()  # hub download metadata is not content
    (copy / ".cache" / "x.lock").write_text("1")
    assert source.content_digest(copy) == source.content_digest(saved["bert"])
    (copy / "README.md").write_text("---\nlanguage: en\nlicense: apache-2.0\n---\n# a model\n")
    described = source.describe(copy, source="elsewhere", revision=None,
                                config=json.loads((copy / "config.json").read_text()))
    assert described.digest != source.content_digest(saved["bert"])[0] and described.files == 5
    assert described.license == "apache-2.0" and described.model_type == "bert" and not described.decoder
    assert described.commit is None
    assert source.describe(saved["gpt2"], source="x", revision=None, config=json.loads(
        (saved["gpt2"] / "config.json").read_text())).decoder


HARNESS = """
import logging, sys
from pathlib import Path
from pipelines.config import RetryParams
from pipelines.operations import retrying
from tasks.modeling.source import CheckpointError, resolve

logging.basicConfig(level=logging.WARNING)
retry = retrying(RetryParams(attempts=2, backoff_seconds=0.1, max_backoff_seconds=0.2), "downloading a checkpoint")
try:
    resolve("someone/tiny-model", revision="v1", root=Path("."), setting="finetune.checkpoint", retry=retry)
except CheckpointError as err:
    print("ERROR:", err)
    sys.exit(err.exit_code)
"""


def test_an_unreachable_hub_is_retried_then_one_clear_error(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there
    res = subprocess.run([sys.executable, "-c", HARNESS], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env=subprocess_env(PYTHONPATH=str(REPO), HF_ENDPOINT=f"http://127.0.0.1:{port}",
                                            HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "hf"),
                                            HF_HUB_ETAG_TIMEOUT="2", HF_HUB_DOWNLOAD_TIMEOUT="2"))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "ERROR: finetune.checkpoint.path 'someone/tiny-model' at revision 'v1' could not be fetched from the " \
           "Hugging Face hub" in res.stdout
    assert "downloading a checkpoint failed" in res.stderr and "try 2 of 2" in res.stderr  # the policy retried once
    assert "Traceback" not in res.stdout + res.stderr
    assert not any((tmp_path / "hf").rglob("*.safetensors"))


def test_params_make_a_local_checkpoint_a_dvc_dep_and_status_says_how_a_hub_id_is_pinned(tmp_path: Path) -> None:
    from pipelines.config.checkpoint import CheckpointParams

    (tmp_path / "ckpt").mkdir()
    local = CheckpointParams(path="ckpt")
    assert local.data_deps(tmp_path, "finetune") == ["ckpt"]
    assert "local checkpoint ckpt" in local.status_note("finetune.checkpoint", tmp_path)
    hub = CheckpointParams(path="org/model")
    assert hub.data_deps(tmp_path, "finetune") == []
    assert "unpinned" in hub.status_note("finetune.checkpoint", tmp_path)
    assert "pinned at revision abc" in CheckpointParams(path="org/model", revision="abc").status_note("x", tmp_path)
    with pytest.raises(ValueError, match="is a URL"):
        CheckpointParams(path="https://huggingface.co/org/model")
