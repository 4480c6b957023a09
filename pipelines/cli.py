"""``lmforge``: one command line for the whole pipeline.

    lmforge run [STAGE ...] [--force] [--from STAGE] [--wait [SECONDS]] [-S KEY=VALUE ...]   run stale stages
    lmforge status [STAGE ...] [-S KEY=VALUE ...]      which stages are stale (with the overrides: would be), and why
    lmforge schedule --cron "0 3 * * *" [--pool P]    run the pipeline on a schedule (no server: in the foreground;
                                                       Prefect server: a served or work-pool deployment)
    lmforge ui [--prefect] [--port N]                  MLflow UI (--prefect: Prefect's, the flow runs) on 127.0.0.1
    lmforge models                                     registered models: versions, aliases, gate metric, verdict
    lmforge promote NAME VERSION --reason TEXT         move the champion alias by hand (rollback: an older version)
    lmforge predict TASK TEXT [TEXT ...] [--version N] answer texts with a task's registered model (the champion)

The no-op path (nothing stale) asks DVC and exits before Prefect, MLflow or any heavy library is imported.
``run`` and ``promote`` hold the checkout's workspace lock (pipelines.lock): a second one refuses at once, naming
the first, or queues behind it with ``--wait``; ``status``, ``models`` and ``ui`` only read and never take it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from pipelines import overrides
from pipelines.config import Params, apply_orchestration, load_params
from pipelines.lock import workspace_lock
from pipelines.notify import RUN_LOG_ENV
from pipelines.operations import apply_retries
from pipelines.prefect_api import command_api
from pipelines.process import exit_without_teardown, mark_owner, raise_if_terminated, reap_orphans, tee_console
from pipelines.runner import EXIT_OK, LOGS_DIR, guarded, prepare, quiet_user_errors
from pipelines.stage_graph import check_stage_names, plan_run, read_stages, topological_order
from pipelines.ui import MLFLOW_PORT, PREFECT_PORT
from pipelines.versioning import Versioning, status_notes, sync_data_deps


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lmforge", description="Reproducible pipeline from raw text to evaluated LMs.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run stale stages (all, or the ones named) as one Prefect flow",
                         description="Run the pipeline: every stage DVC reports stale, in DAG order. Named stages "
                         "run with whatever stale upstream stages they need.")
    run.add_argument("stages", nargs="*", metavar="STAGE",
                     help="stages to run (default: all, in the order of dvc.yaml's graph)")
    run.add_argument("--force", action="store_true", help="run the selected stages even if they are up to date")
    run.add_argument("--from", dest="from_stage", metavar="STAGE",
                     help="force STAGE and every stage downstream of it")
    run.add_argument("--wait", nargs="?", type=_seconds, const=math.inf, default=0.0, metavar="SECONDS",
                     help="when another lmforge command holds this checkout, wait for it (at most SECONDS; no "
                     "value: as long as it takes) instead of refusing at once")
    run.add_argument(*SET_FLAGS, **_set_option("set params.yaml's KEY (a dotted path: finetune.steps, "
                     "finetune.tasks[0].weight) to VALUE (YAML) before running, validated against the schema; as "
                     "`dvc exp run -S` does, the value is written into params.yaml, so that dvc.lock records what ran "
                     "(`git diff params.yaml` shows it); repeatable"))
    st = sub.add_parser("status", help="which stages are stale and why (from DVC)",
                        description="Show, per stage, whether it is up to date and what changed (deps, params, outs).")
    st.add_argument("stages", nargs="*", metavar="STAGE", help="stages to check (default: all)")
    st.add_argument(*SET_FLAGS, **_set_option("which stages would be stale with params.yaml's KEY set to VALUE, as "
                    "`lmforge run -S KEY=VALUE` would set it (nothing is written); repeatable"))
    sc = sub.add_parser("schedule", help="run the pipeline on a cron (or interval) schedule",
                        description="Run the stale stages of this checkout at cron (UTC) or interval times. With no "
                        "Prefect server (orchestration.prefect_api_url null, no PREFECT_API_URL): a foreground "
                        "scheduler that starts `lmforge run` at each fire time, until Ctrl-C. With a server: the "
                        "Prefect deployment 'lmforge-scheduled/NAME', served from this process until Ctrl-C, or, "
                        "with --pool, registered with a work pool whose workers run it (the command returns).")
    when = sc.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help='cron expression in UTC, e.g. "0 3 * * *" (daily at 03:00)')
    when.add_argument("--every", type=float, metavar="SECONDS", help="an interval instead of a cron expression")
    sc.add_argument("--name", default="nightly", help="deployment name (default nightly; with a server)")
    sc.add_argument("--pool", metavar="POOL", help="register the deployment with this Prefect work pool and return "
                    "(its workers run it; needs a server)")
    sc.add_argument("--force", action="store_true", help="each scheduled run forces every stage")
    ui = sub.add_parser("ui", help="start the MLflow UI (or, with --prefect, the Prefect UI) on 127.0.0.1",
                        description="Serve the MLflow UI for the tracking store in params.yaml and print its URL. "
                        "--prefect: the Prefect UI instead, for the flow runs of this checkout's `lmforge run`s (the "
                        "pipeline and one subflow per stage): with no Prefect server configured, a Prefect server on "
                        "the checkout's own Prefect database (.prefect/prefect.db); with one configured "
                        "(orchestration.prefect_api_url or PREFECT_API_URL), its UI address, starting nothing.")
    ui.add_argument("--prefect", action="store_true", help="the Prefect UI (flow runs) instead of MLflow's")
    ui.add_argument("--port", type=_port, metavar="PORT",
                    help=f"port on 127.0.0.1 (default {MLFLOW_PORT}; with --prefect {PREFECT_PORT})")
    sub.add_parser("models", help="registered models, their versions, aliases and gate metric",
                   description="List every registered model's versions, newest first: aliases (champion), the "
                   "metric its gate compares (with its confidence interval) and what the gate decided.")
    pr = sub.add_parser("promote", help="move the champion alias to a version by hand (also a rollback)",
                        description="Point the champion alias of model NAME at VERSION, whatever the gate said, and "
                        "tag the version with the reason. A rollback is a promote of an older version.")
    pr.add_argument("name", metavar="NAME", help="registered model, e.g. lmforge-doc_section")
    pr.add_argument("version", metavar="VERSION", help="its version number (see `lmforge models`)")
    pr.add_argument("--reason", required=True, help="why, recorded on the version (lmforge.promotion tag)")
    pt = sub.add_parser("predict", help="answer texts with a task's registered model (the champion by default)",
                        description="Load the registered model of TASK (lmforge-TASK) at the champion alias, or "
                        "--version, from the MLflow store in params.yaml, as mlflow.pyfunc.load_model does, and print "
                        "its answer to each TEXT: label and score for a classifier, the generated text for an sft "
                        "model.")
    pt.add_argument("task", metavar="TASK", help="fine-tuning task (e.g. doc_section) or registered model name")
    pt.add_argument("texts", nargs="+", metavar="TEXT", help="input texts, one answer each")
    pt.add_argument("--version", metavar="N", help="this version instead of the champion (see `lmforge models`)")
    pt.add_argument("--max-new-tokens", type=int, metavar="N", help="tokens to generate (sft models; default 32)")
    pt.add_argument("--json", action="store_true", help="one JSON object per text instead of the table")
    return p


SET_FLAGS = ("-S", "--set")


def _set_option(help_text: str) -> dict[str, Any]:
    return {"dest": "overrides", "action": "append", "default": [], "metavar": "KEY=VALUE", "help": help_text}


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"seconds must be 0 or more, got {text!r}")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    root = prepare()
    # params errors (overrides included) before any work
    params = overrides.resolve(root, args.overrides)[0] if args.overrides else load_params(root)
    plan, forced = plan_run(root, args.stages, args.force, args.from_stage)
    # what is stale is read under the lock: another run may be rewriting outputs and dvc.lock right now
    with workspace_lock(root, wait=args.wait):
        if args.overrides:  # written under the lock: params.yaml is what the run reads, then records in dvc.lock
            params, changes = overrides.apply(root, args.overrides)
            print(overrides.announce(changes))
            os.environ[overrides.OVERRIDES_ENV] = json.dumps({c.key: c.new for c in changes}, default=str)
        # the graph as params make it (finetune.checkpoint replaces models/base): upstream stages are planned from
        # the data deps params name now, not from those dvc.yaml held before
        if sync_data_deps(root, params):
            plan, forced = plan_run(root, args.stages, args.force, args.from_stage)
        return _run_locked(root, params, plan, forced)


def _run_locked(root: Path, params: Params, plan: list[str], forced: list[str]) -> int:
    from pipelines.artifacts import finish_publication

    finish_publication(root)  # outputs a killed stage was publishing together, before DVC compares them
    versioning = Versioning(root, params)
    try:
        stale = {s: r for s, r in versioning.stale_map([s for s in plan if s not in forced]).items() if r}
    finally:
        versioning.close()
    if not forced and not stale:
        print(f"lmforge: nothing to do: {', '.join(plan)} up to date")
        return EXIT_OK
    reap_orphans(root)  # an ephemeral Prefect API left serving by a run killed with SIGKILL
    mark_owner()
    apply_orchestration(params.orchestration)
    apply_retries(params.operations.retries)
    log_file = root / LOGS_DIR / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    os.environ[RUN_LOG_ENV] = str(log_file.relative_to(root))  # named by the failure notification
    try:
        # the Prefect API starts while the pipeline's modules import, and stops before the console copy ends
        with tee_console(log_file), command_api() as api:
            from pipelines import tracking
            from pipelines.pipeline import pipeline, stage_preflight

            quiet_user_errors()
            for stage in plan:  # import each stage's flow module (and its libraries) while the API starts
                with contextlib.suppress(Exception):  # the pipeline's own preflight imports it again and reports
                    stage_preflight(stage)
            tracking.import_mlflow()
            api.ready()
            outcome = pipeline(params=params, root=root, plan=plan, forced=forced)
            raise_if_terminated()  # a SIGTERM whose exception was swallowed must not end as success
            print(summary_table(root, plan, outcome))
    finally:  # named last, whatever happened: the one place with the training processes' whole output
        print(f"lmforge: the whole log of this run: {log_file.relative_to(root)}", file=sys.stderr)
    return EXIT_OK


def summary_table(root: Path, plan: list[str], outcome: dict[str, str]) -> str:
    """What a run did, for the console: per stage what happened, its headline numbers and outputs, then where the
    MLflow runs are and how to see them."""
    from pipelines.artifacts import headline
    from pipelines.pipeline import RUN_ID_KEY

    stages = read_stages(root)
    rows = []
    for stage in plan:
        numbers = ", ".join(f"{k} {_number(v)}" for k, v in headline(root, stage).items())
        outs = " ".join(o for o in stages[stage].outs if not o.startswith(("metrics/", "reports/")))
        rows.append((f"{stage}: {outcome.get(stage, 'not run')}", numbers, outs))
    width = max(len(r[0]) for r in rows)
    lines = [f"{head:<{width}}  {numbers}" + (f"\n{'':<{width}}  -> {outs}" if outs else "")
             for head, numbers, outs in rows]
    if run_id := outcome.get(RUN_ID_KEY):
        lines.append(f"MLflow: pipeline run {run_id} (nested stage runs under it); see it with `lmforge ui`")
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def cmd_status(args: argparse.Namespace) -> int:
    root = prepare()
    params, changes = overrides.resolve(root, args.overrides) if args.overrides else (load_params(root), [])
    graph = read_stages(root)
    order = topological_order(graph)
    check_stage_names(args.stages, order)
    versioning = Versioning(root, load_params(root) if changes else params)  # DVC reads params.yaml as it is
    notes = status_notes(root, params)
    try:
        stale = versioning.stale_map(order)
    finally:
        versioning.close()
    if changes:
        stale = overrides.stale_with(graph, stale, changes)
        print(f"with {' '.join(f'-S {c.key}={json.dumps(c.new)}' for c in changes)} (not written: `lmforge run -S "
              "...` writes it into params.yaml and runs):")
    for stage, reasons in stale.items():
        if not args.stages or stage in args.stages:
            print(f"{stage}: {'stale' if reasons else 'up to date'}")
            for r in reasons + notes.get(stage, []):
                print(f"    {r}")
    for line in overrides.explain(root):
        print(line)
    return EXIT_OK


def cmd_schedule(args: argparse.Namespace) -> int:
    from pipelines import deploy

    root = prepare()
    params = load_params(root)
    apply_orchestration(params.orchestration)
    deploy.check_schedule(args.cron, args.every)
    if not os.environ.get("PREFECT_API_URL"):
        if args.pool:
            raise deploy.ScheduleError("--pool needs a Prefect server with workers: set orchestration.prefect_api_url "
                                       "in params.yaml (infra/stack.sh up starts one); without a server, leave --pool "
                                       "out to schedule in the foreground")
        return deploy.run_embedded(root, cron=args.cron, every=args.every, force=args.force)
    quiet_user_errors()
    what = f"cron {args.cron!r}" if args.cron else f"every {args.every:g} s"
    if args.pool:
        dep_id = deploy.deploy_to_pool(root, name=args.name, pool=args.pool, cron=args.cron, every=args.every,
                                       force=args.force)
        print(f"deployment {deploy.DEPLOYMENT_FLOW}/{args.name} ({dep_id}) on {what}, run by the workers of pool "
              f"{args.pool!r} in {root}")
        return EXIT_OK
    print(f"serving deployment {deploy.DEPLOYMENT_FLOW}/{args.name} on {what} (Ctrl-C stops)", flush=True)
    deploy.serve(root, name=args.name, cron=args.cron, every=args.every, force=args.force)
    return EXIT_OK


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {text!r}")
    return value


def cmd_ui(args: argparse.Namespace) -> int:
    from pipelines.ui import open_ui

    root = prepare()
    return open_ui(root, load_params(root), prefect=args.prefect, port=args.port)


def _open_registry() -> Params:
    """Params and an MLflow client pointed at their store; a server that is down fails fast, not after retries."""
    root = prepare()
    params = load_params(root)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from pipelines.registry import open_store

    open_store(params.tracking, root)
    return params


def cmd_models(args: argparse.Namespace) -> int:
    params = _open_registry()
    from pipelines.catalog import models_table

    print(models_table(params.registry))
    return EXIT_OK


def cmd_promote(args: argparse.Namespace) -> int:
    with workspace_lock(prepare()):  # a run's evaluate stage moves aliases too
        params = _open_registry()
        from pipelines.registry import promote

        d = promote(args.name, args.version, reason=args.reason, params=params.registry)
    before = f"v{d.champion_before}" if d.champion_before else "none"
    print(f"{d.model}: {params.registry.alias} {before} -> v{d.champion_after} ({d.reason})")
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    params = _open_registry()
    from pipelines.predict import predict, render

    answers = predict(args.task, args.texts, params=params.registry, version=args.version,
                      max_new_tokens=args.max_new_tokens)
    print(render(answers, args.texts, as_json=args.json))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    args = _parser().parse_args(argv)
    handler = {"run": cmd_run, "status": cmd_status, "schedule": cmd_schedule, "ui": cmd_ui, "models": cmd_models,
               "promote": cmd_promote, "predict": cmd_predict}[args.command]
    code = guarded(lambda: handler(args))
    return exit_without_teardown(code) if argv is None else code  # as the command: no module teardown at exit


if __name__ == "__main__":
    raise SystemExit(main())
