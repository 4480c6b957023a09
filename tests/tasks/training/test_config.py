"""The training settings are defined once: the params schema and the recipe's run config are the same classes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipelines.config.pretrain import PretrainParams
from tasks.training.blocks import load_config
from tasks.training.config import ConfigError, ModelShape, PretrainSettings
from tasks.training.pretrain import PretrainConfig


def test_params_schema_and_run_config_share_one_definition() -> None:
    assert issubclass(PretrainParams, PretrainSettings) and issubclass(PretrainConfig, PretrainSettings)
    shared = set(PretrainSettings.model_fields)
    # the one setting in both that is not shared has two meanings: a repo-relative string and an absolute path; the
    # checkpoint is named in params (a path or hub id) and handed to the recipe resolved (its digest, its revision)
    assert set(PretrainParams.model_fields) - shared == {"launch", "deepspeed_config", "checkpoint"}
    assert set(PretrainConfig.model_fields) - shared == {"tokens_dir", "tokenizer_dir", "out_dir", "checkpoint_dir",
                                                        "mlflow", "deepspeed_config", "base_checkpoint"}
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
    with pytest.raises(ConfigError) as bad:
        load_config(path, PretrainConfig)
    assert "model.num_heads: Input should be greater than or equal to 1" in str(bad.value)
    assert "lr: Input should be greater than 0" in str(bad.value)
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

    root = Path(__file__).resolve().parents[3]
    modules = ["pipelines.config.pretrain", "pipelines.config.finetune", "pipelines.config.distill"] + [
        f"tasks.{p.parent.name}.{p.stem}" for package in ("training", "modeling")
        for p in sorted((root / "tasks" / package).glob("*.py")) if p.stem != "__init__"]
    code = (f"import sys, {', '.join(modules)}; "
            "print([m for m in ('torch', 'deepspeed', 'mlflow', 'transformers') if m in sys.modules])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[3])
    assert res.stdout.strip() == "[]"


def test_task_recipes_compose_shared_blocks_each_field_defined_once() -> None:
    from pipelines.config.distill import DistillParams
    from pipelines.config.finetune import FinetuneParams
    from tasks.training import blocks
    from tasks.training.blocks import TaskTrainingSettings
    from tasks.training.config import DistillSettings, FinetuneSettings
    from tasks.training.distill import DistillConfig
    from tasks.training.finetune import FinetuneConfig

    parts = [blocks.RunBlock, blocks.OptimizerBlock, blocks.WarmupBlock, blocks.ScheduleBlock, blocks.EngineBlock,
             blocks.CadenceBlock, blocks.EvaluationBlock]
    owners: dict[str, list[str]] = {}
    for block in parts:
        own = set(block.model_fields) - {f for base in block.__mro__[1:] if hasattr(base, "model_fields")
                                         for f in base.model_fields}
        for name in own:
            owners.setdefault(name, []).append(block.__name__)
    assert {n: o for n, o in owners.items() if len(o) > 1} == {}  # no field in two blocks
    shared = set(TaskTrainingSettings.model_fields)
    assert {"lr", "betas", "grad_clip", "warmup_steps", "schedule", "eval_every", "early_stopping", "zero_stage",
            "checkpoint_every", "keep_checkpoints", "log_every", "max_length", "head_lr"} <= shared
    for recipe in (FinetuneSettings, DistillSettings):
        for name in shared:  # a recipe may change a default, never the type, bounds or description
            mine, theirs = recipe.model_fields[name], TaskTrainingSettings.model_fields[name]
            assert (mine.annotation, mine.description, mine.metadata) == \
                (theirs.annotation, theirs.description, theirs.metadata), (recipe.__name__, name)
    assert FinetuneSettings().lr == 3e-4 and DistillSettings().lr == 1e-3 and PretrainSettings().lr == 1e-3
    assert FinetuneSettings().eval_every == 25 and DistillSettings().eval_every == 20
    with pytest.raises(ValidationError, match="greater than 0"):
        FinetuneSettings(lr=0)  # the block's bound holds under the recipe's own default
    for params, run, settings in ((FinetuneParams, FinetuneConfig, FinetuneSettings),
                                  (DistillParams, DistillConfig, DistillSettings)):
        assert issubclass(params, settings) and issubclass(run, settings)
        for name in settings.model_fields:  # inherited, not redefined
            assert repr(params.model_fields[name]) == repr(settings.model_fields[name]), name
