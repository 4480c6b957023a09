"""The training settings are defined once: the params schema and the recipe's run config are the same classes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipelines.config.pretrain import PretrainParams
from tasks.training.config import ConfigError, ModelShape, PretrainSettings, load_config
from tasks.training.pretrain import PretrainConfig


def test_params_schema_and_run_config_share_one_definition() -> None:
    assert issubclass(PretrainParams, PretrainSettings) and issubclass(PretrainConfig, PretrainSettings)
    shared = set(PretrainSettings.model_fields)
    # the one setting in both that is not shared has two meanings: a repo-relative string and an absolute path
    assert set(PretrainParams.model_fields) - shared == {"launch", "deepspeed_config"}
    assert set(PretrainConfig.model_fields) - shared == {"tokens_dir", "tokenizer_dir", "out_dir", "checkpoint_dir",
                                                        "mlflow", "deepspeed_config"}
    for name in shared:  # inherited, not redefined: same default, same bounds, same description
        assert PretrainParams.model_fields[name] is PretrainSettings.model_fields[name] or \
            repr(PretrainParams.model_fields[name]) == repr(PretrainSettings.model_fields[name]), name
    paths = {"tokens_dir": "t", "tokenizer_dir": "k", "out_dir": "o", "checkpoint_dir": "c"}
    run = PretrainConfig.model_validate(paths)
    assert run.model_dump(include=shared) == PretrainParams().model_dump(include=shared)


def test_every_field_has_a_description() -> None:
    for model in (ModelShape, PretrainSettings, PretrainConfig, PretrainParams):
        missing = [name for name, f in model.model_fields.items() if not f.description]
        assert not missing, (model.__name__, missing)


@pytest.mark.parametrize(("over", "message"), [
    ({"warmup_steps": 10, "steps": 10}, "warmup_steps (10) must be below steps (10)"),
    ({"min_lr": 1.0, "lr": 0.1}, "min_lr (1.0) is above lr (0.1)"),
    ({"offload_params": True}, "offload_params needs zero_stage 3"),
    ({"offload_optimizer": True, "zero_stage": 0}, "offload_optimizer needs zero_stage 1, 2 or 3"),
    ({"context": 4}, "greater than or equal to 8"),
    ({"model": {"hidden_size": 256, "num_heads": 5}}, "num_heads (5) must divide hidden_size (256)"),
    ({"stepz": 3}, "Extra inputs are not permitted"),
])
def test_cross_field_checks_hold_on_both_sides(over: dict[str, object], message: str) -> None:
    paths = {"tokens_dir": "t", "tokenizer_dir": "k", "out_dir": "o", "checkpoint_dir": "c"}
    for schema, extra in ((PretrainParams, {}), (PretrainConfig, paths)):
        with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
            schema.model_validate({**extra, **over})


def test_load_config_names_every_bad_key(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"tokens_dir": "t", "tokenizer_dir": "k", "out_dir": "o", "checkpoint_dir": "c",
                                "model": {"num_heads": 0}, "lr": -1}))
    with pytest.raises(ConfigError, match=r"model\.num_heads: Input should be greater than or equal to 1; lr: "):
        load_config(path, PretrainConfig)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read config") as err:
        load_config(path, PretrainConfig)
    assert err.value.exit_code == 2
    path.write_text(json.dumps({"tokens_dir": "t", "tokenizer_dir": "k", "out_dir": "o", "checkpoint_dir": "c"}))
    assert load_config(path, PretrainConfig).warmup_steps == 100  # params.yaml's default, the one definition


def test_settings_recipe_and_components_import_nothing_heavy() -> None:
    # params validation imports the settings; the flow imports the recipe: neither may pay for torch or DeepSpeed
    import subprocess
    import sys

    modules = ["pipelines.config.pretrain", "tasks.training.pretrain"] + [
        f"tasks.training.{m}" for m in ("config", "model", "data", "engine", "schedule", "losses", "checkpoint",
                                        "telemetry", "export")]
    code = (f"import sys, {', '.join(modules)}; "
            "print([m for m in ('torch', 'deepspeed', 'mlflow', 'transformers') if m in sys.modules])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[3])
    assert res.stdout.strip() == "[]"
