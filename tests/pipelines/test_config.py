"""params.yaml schema: every error names its key path; the CLI exits 2 without a traceback."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from pipelines.config import STAGE_SECTIONS, ParamsError, find_root, load_params, parse_params
from pipelines.stage_graph import stage_names
from tests.conftest import REPO, run_cli


@pytest.fixture
def params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def _error(data: dict) -> str:
    with pytest.raises(ParamsError) as info:
        parse_params(data)
    return str(info.value)


def test_repo_params_are_valid() -> None:
    p = load_params(REPO)
    assert p.collect.sources[0].kind == "default"
    assert p.collect.validation.min_rows >= 1


def test_unknown_key_names_its_path(params: dict) -> None:
    params["collect"]["shard_max_recrods"] = 5
    assert "collect.shard_max_recrods: unknown key" in _error(params)


def test_unknown_key_inside_a_source_names_the_index(params: dict) -> None:
    params["collect"]["sources"][0]["max_doc"] = 3
    msg = _error(params)
    assert "collect.sources[0].max_doc: unknown key" in msg
    assert "default" not in msg.split("collect.sources[0]")[1].split(":")[0]  # no union tag in the path


def test_wrong_type(params: dict) -> None:
    params["collect"]["shard_max_records"] = "many"
    assert "collect.shard_max_records:" in _error(params)


def test_out_of_range(params: dict) -> None:
    params["collect"]["sources"][0]["weight"] = 1.5
    params["collect"]["shard_max_records"] = 0
    msg = _error(params)
    assert "2 problem(s)" in msg
    assert "collect.sources[0].weight: Input should be less than or equal to 1" in msg
    assert "collect.shard_max_records: Input should be greater than or equal to 1" in msg


def test_unknown_source_kind_and_duplicate_names(params: dict) -> None:
    bad = copy.deepcopy(params)
    bad["collect"]["sources"] = [{"name": "x", "kind": "ftp"}]
    assert "unknown source kind 'ftp'" in _error(bad)
    bad["collect"]["sources"] = [{"name": "x", "kind": "default"}, {"name": "x", "kind": "default"}]
    assert "source names must be unique; repeated: x" in _error(bad)


def test_min_max_rows_cross_check(params: dict) -> None:
    params["collect"]["validation"] = {"min_rows": 10, "max_rows": 5}
    assert "collect.validation: max_rows (5) is below min_rows (10)" in _error(params)


def test_files_source_needs_paths(params: dict) -> None:
    params["collect"]["sources"] = [{"name": "f", "kind": "files", "paths": []}]
    assert "collect.sources[0].paths:" in _error(params)


def test_not_yaml_and_no_checkout(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("collect: [unclosed\n")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path)
    with pytest.raises(ParamsError, match="no lmforge checkout"):
        find_root(tmp_path.parent)


def test_a_left_out_stage_section_takes_its_schemas_defaults(params: dict) -> None:
    from pipelines.config.dedup import DedupParams

    parsed = parse_params({"collect": params["collect"]})
    assert parsed.dedup == DedupParams() and parsed.dedup.minhash.num_perm == 128
    assert "collect: Field required" in _error({"dedup": params["dedup"]})  # a section with a required field
    assert "dedupe: unknown key" in _error({**params, "dedupe": {}})  # no such section


def test_every_stage_of_dvc_yaml_has_a_params_section(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    graph = yaml.safe_load((REPO / "dvc.yaml").read_text())
    graph["stages"]["report"] = {"cmd": "python -m flows.report", "deps": ["metrics/evaluate.json"]}
    del graph["stages"]["distill"]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(graph, sort_keys=False))
    with pytest.raises(ParamsError) as info:
        load_params(tmp_path)
    assert str(info.value) == ("dvc.yaml names stage 'report' but pipelines.config.Params has no section for it (a "
                               "schema in pipelines/config/report.py and a field of Params)")
    del graph["stages"]["report"]  # a checkout cut down to some of the stages: every section is still validated
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(graph, sort_keys=False))
    assert load_params(tmp_path).distill.teacher == "finetuned"
    assert STAGE_SECTIONS == stage_names(REPO), "Params declares a section per stage of dvc.yaml, in its order"


@pytest.mark.parametrize("command", [["run"], ["status"]])
def test_cli_reports_params_errors_with_exit_2(repo_copy: Path, command: list[str]) -> None:
    data = yaml.safe_load((repo_copy / "params.yaml").read_text())
    data["collect"]["bogus"] = 1
    data["collect"]["sources"][0]["max_docs"] = -3
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(data))
    res = run_cli(repo_copy, *command)
    assert res.returncode == 2, res.stderr
    assert "collect.bogus: unknown key" in res.stderr
    assert "collect.sources[0].max_docs: Input should be greater than or equal to 1" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert not (repo_copy / "data").exists()


def test_pretrain_shape_errors_name_the_key(params: dict) -> None:
    params["pretrain"] = {"model": {"hidden_size": 256, "num_heads": 5}}
    assert "pretrain.model: num_heads (5) must divide hidden_size (256)" in _error(params)
    params["pretrain"] = {"warmup_steps": 500, "steps": 100, "launch": {"launcher": "mpirun"}}
    msg = _error(params)
    assert "pretrain.launch.launcher: Input should be 'python', 'torchrun' or 'deepspeed'" in msg
    params["pretrain"] = {"warmup_steps": 500, "steps": 100}
    assert "pretrain: warmup_steps (500) must be below steps (100)" in _error(params)


def test_pretrain_setting_errors_name_the_key_path(params: dict) -> None:
    # the settings come from tasks.training.config; the key path is still params.yaml's
    params["pretrain"] = {"model": {"num_heads": 0}, "launch": {"nproc": 0}}
    msg = _error(params)
    assert "pretrain.model.num_heads: Input should be greater than or equal to 1" in msg
    assert "pretrain.launch.nproc: Input should be greater than or equal to 1" in msg


def test_pretrain_defaults_are_unchanged() -> None:
    # the defaults params.yaml relies on (the single definition took params' side of every former drift)
    from pipelines.config.pretrain import PretrainParams

    assert PretrainParams().model_dump() == {
        "model": {"vocab_size": None, "hidden_size": 128, "num_layers": 4, "num_heads": 4, "num_kv_heads": None,
                  "intermediate_size": 344, "max_position_embeddings": None, "rope_theta": 10000.0,
                  "tie_word_embeddings": True},
        "context": 256, "seed": 0, "steps": 1000, "batch_size": 8, "grad_accum": 1, "lr": 1e-3, "min_lr": 1e-4,
        "warmup_steps": 100, "weight_decay": 0.1, "betas": (0.9, 0.95), "grad_clip": 1.0, "zero_stage": 2,
        "offload_optimizer": False, "offload_params": False, "precision": "auto", "activation_checkpointing": False,
        "threads": None, "log_every": 10, "eval_every": 250, "eval_batches": 8, "checkpoint_every": 250,
        "keep_checkpoints": 2, "sample_prompts": ["def ", "The "], "sample_max_new_tokens": 32,
        "deepspeed_config": None, "checkpoint": None,
        "launch": {"launcher": "python", "nproc": 1, "hostfile": None, "master_addr": None, "master_port": None,
                   "node_rank": None}}


def test_finetune_errors_name_the_key_path(params: dict) -> None:
    bad = copy.deepcopy(params)
    bad["finetune"]["tasks"][0]["data"][0]["pathz"] = ["x.csv"]
    assert "finetune.tasks[0].data[0].pathz: unknown key" in _error(bad)
    bad = copy.deepcopy(params)
    bad["finetune"]["tasks"][1]["type"] = "regression"
    assert "finetune.tasks[1].type:" in _error(bad)
    bad = copy.deepcopy(params)
    bad["finetune"]["tasks"].append(copy.deepcopy(bad["finetune"]["tasks"][0]))
    assert "task names repeat" in _error(bad)
    bad = copy.deepcopy(params)
    bad["finetune"].update(unfreeze_every=10, zero_stage=2)
    assert "unfreeze_every needs zero_stage 0" in _error(bad)
    bad = copy.deepcopy(params)
    bad["finetune"]["tasks"][1]["data"] = [{"kind": "folders", "path": "by_label"}]
    assert "folders gives labels" in _error(bad)
    bad = copy.deepcopy(params)
    bad["finetune"]["search"] = {"enabled": True, "trials": 2}
    assert "names no range" in _error(bad)


def test_finetune_default_tasks_are_the_offline_ones() -> None:
    from pipelines.config.finetune import FinetuneParams

    tasks = FinetuneParams().tasks
    assert [(t.name, t.type, t.data[0].kind) for t in tasks] == [("doc_section", "classification", "default"),
                                                                 ("docstring", "sft", "default")]
    assert load_params(REPO).finetune.tasks == tasks  # params.yaml spells out the defaults


def test_quoted_numbers_and_booleans_are_errors_not_changes(params: dict) -> None:
    # issue 16 item 6: "1000" was accepted, then DVC compared the YAML text and status printed 1000 -> 1000
    bad = copy.deepcopy(params)
    bad["pretrain"]["steps"] = "1000"
    assert "pretrain.steps: Input should be a valid integer" in _error(bad)
    bad = copy.deepcopy(params)
    bad["finetune"]["early_stopping"]["enabled"] = "yes"
    assert "finetune.early_stopping.enabled: Input should be a valid boolean" in _error(bad)
    ok = copy.deepcopy(params)
    ok["pretrain"]["lr"] = 1  # an integer where a float goes is a number all the same
    assert parse_params(ok).pretrain.lr == 1.0


def test_finetune_task_data_are_deps_and_hub_tasks_say_how_they_are_pinned(tmp_path: Path) -> None:
    from pipelines.config.finetune import PIPELINE_INPUTS, FinetuneParams

    (tmp_path / "tasks_data/by_label").mkdir(parents=True)
    cfg = FinetuneParams.model_validate_json(json.dumps({"tasks": [
        {"name": "a", "type": "classification", "data": [{"kind": "files", "paths": ["tasks_data/csv/*.csv"]},
                                                          {"kind": "folders", "path": "tasks_data/by_label"}]},
        {"name": "b", "type": "sft", "data": [{"kind": "hf", "path": "org/instructions", "revision": "abc"},
                                              {"kind": "files", "paths": ["/elsewhere/qa.jsonl"]}]}]}))
    assert cfg.data_deps(tmp_path) == [*PIPELINE_INPUTS, "/elsewhere/qa.jsonl", "tasks_data/by_label",
                                       "tasks_data/csv"]
    assert cfg.status_notes(tmp_path) == ["task 'b': hub dataset org/instructions: pinned at revision abc"]


def test_evaluate_scores_whole_splits_by_default_and_declares_what_it_reads(params: dict) -> None:
    from pipelines.config.evaluate import INPUTS, REPORTED, EvaluateParams

    cfg = load_params(REPO).evaluate
    # null: data/dedup's whole test split, for the stage's own figures and the harness alike
    assert cfg.lm.max_docs is None and cfg.harness.limit is None
    assert EvaluateParams().lm.max_docs is None
    # every file it reads from the stages before it is a dep, the other stages' metrics included
    assert {"metrics/distill.json", "metrics/clean.json", "metrics/finetune.json"} <= set(INPUTS + REPORTED)
    assert cfg.data_deps(REPO) == [*INPUTS, *REPORTED]
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert [d for d in stages["evaluate"]["deps"] if d.split("/")[0] not in ("flows", "tasks", "pipelines")] == [
        *INPUTS, *REPORTED]
    params["evaluate"]["lm"]["max_docs"] = 0
    assert "evaluate.lm.max_docs: Input should be greater than or equal to 1" in _error(params)


@pytest.mark.parametrize("stage", ["pretrain", "finetune", "distill"])
def test_a_training_stage_declares_its_deepspeed_json_and_hostfile(stage: str, params: dict) -> None:
    # both decide how the stage trains (the hostfile's slots are its processes): editing one makes it stale
    default = load_params(REPO)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert getattr(default, stage).data_deps(REPO) == [d for d in stages[stage]["deps"]
                                                       if d.split("/")[0] not in ("flows", "tasks", "pipelines")]
    params[stage]["deepspeed_config"] = "infra/deepspeed/extra.json"
    params[stage]["launch"] = {"launcher": "deepspeed", "hostfile": "infra/deepspeed/hostfile"}
    deps = getattr(parse_params(params), stage).data_deps(REPO)
    assert deps[-2:] == ["infra/deepspeed/extra.json", "infra/deepspeed/hostfile"]
    assert deps[:-2] == getattr(default, stage).data_deps(REPO)
