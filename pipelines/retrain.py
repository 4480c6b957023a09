"""Retraining as CI runs it (``bash infra/retrain.sh``, the steps of .github/workflows/retrain.yml), in order:

    1. dvc pull          data and models of the last recorded run (a remote without them yet is tolerated)
    2. lmforge run       the stale stages (arguments passed through: stages, --force, --from STAGE)
    3. dvc push          what this run made, to the remote
    4. metrics diff      params changed since the starting commit's dvc.lock, ``dvc metrics diff BASE --md``
    5. registry          the gate's decision on every model version this run registered, read back from MLflow
    6. git commit        dvc.lock, metrics/ (and dvc.yaml when the run rewrote its data deps), naming what changed
                         (hence after 4 and 5); ``--push`` pushes it

Each step is logged and the first failure ends the run with a message that names the step (exit 1); a model the
gate did not promote is a result, not a failure. The summary (markdown) goes to ``--summary PATH`` or
``$GITHUB_STEP_SUMMARY`` (appended, as GitHub Actions expects) and to stdout.

A support module: it starts DVC, git and ``lmforge run`` as processes and reads MLflow through
:mod:`pipelines.registry`; it imports neither flows nor tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.artifacts import headline
from pipelines.config import PARAMS_FILE, TrackingParams, load_params
from pipelines.config.registry import RegistryParams
from pipelines.incremental import reuse_lines
from pipelines.runner import EXIT_FAILED, EXIT_OK, EXIT_USAGE, guarded, prepare

COMMITTED = ("dvc.lock", "metrics", "dvc.yaml")
"""What a retrain commits: the lock, the metrics files and dvc.yaml (``lmforge run`` rewrites its data deps when a
source's files change); data and models go to the DVC remote."""
REMOTE_URL_ENV, REMOTE_ENDPOINT_ENV = "LMFORGE_DVC_REMOTE_URL", "LMFORGE_DVC_REMOTE_ENDPOINT"
"""When set, the DVC remote to pull from and push to (and its S3 endpoint), written to .dvc/config.local as remote
``ci`` (CI passes them from secrets; credentials come from the usual AWS_* variables, which dvc-s3 reads)."""
CI_REMOTE = "ci"
BOT = ("lmforge-retrain", "retrain@lmforge.invalid")
"""Commit identity when git has none configured (a CI runner); the workflow sets the Actions bot's."""


class RetrainError(Exception):
    """A retrain step failed. Exit code 1; ``step`` names it."""

    exit_code = EXIT_FAILED

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


class RetrainUsageError(RetrainError):
    """The retrain cannot start as asked (not a git checkout, uncommitted run state, a detached HEAD). Exit 2."""

    exit_code = EXIT_USAGE


@dataclass
class Report:
    """What the summary says: steps with their durations, then the sections the steps filled in."""

    base: str
    steps: list[tuple[str, str, float]] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    first: bool = False
    metrics_md: str = ""
    metrics: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    headline: set[str] = field(default_factory=set)
    registry: list[str] = field(default_factory=list)
    reuse: list[str] = field(default_factory=list)
    commit: str = ""
    notes: list[str] = field(default_factory=list)
    failure: str = ""

    def markdown(self) -> str:
        done = {name for name, _, _ in self.steps}
        missing = "not reached (an earlier step failed)" if self.failure else "none"
        lines = [f"## lmforge retrain from {self.base[:12]}", ""]
        if self.failure:
            step, _, message = self.failure.partition(": ")
            lines += [f"**Failed at {step}:**", "", "```", message.strip(), "```", ""]
        lines += ["| step | result | seconds |", "| --- | --- | ---: |"]
        lines += [f"| {name} | {result} | {seconds:.1f} |" for name, result, seconds in self.steps]
        lines += ["", "### Params changed (dvc.lock)", ""]
        if "dvc metrics diff" not in done:
            lines.append(f"- {missing}")
        elif self.first:
            lines.append(f"- first recorded run: {self.base[:12]} has no dvc.lock")
        else:
            lines += [f"- {p}" for p in self.params] or ["- none"]
        lines += ["", "### Headline metrics changed", ""]
        lines += [f"- {k}: {_short(old)} -> {_short(new)}" for k, (old, new) in self.changed_metrics()
                  if k in self.headline] or [f"- {missing}"]
        lines += ["", f"### Metrics (`dvc metrics diff {self.base[:12]}`)", "", self.metrics_md.strip() or missing]
        lines += ["", "### Data stages: reused from their caches", ""]
        lines += [f"- {r}" for r in self.reuse] or [f"- {missing}"]
        lines += ["", "### Model registry", ""]
        lines += [f"- {r}" for r in self.registry] or [f"- {missing}"]
        lines += ["", "### Commit", "", self.commit or missing]
        if self.notes:
            lines += ["", "### Notes", "", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"

    def changed_metrics(self) -> list[tuple[str, tuple[Any, Any]]]:
        """Metrics whose value changed (none on the first recorded run), the stages' headline numbers first."""
        if self.first:
            return []
        changed = [(k, v) for k, v in self.metrics.items() if v[0] != v[1]]
        return sorted(changed, key=lambda item: item[0] not in self.headline)


def log(message: str) -> None:
    print(f"retrain: {message}", file=sys.stderr, flush=True)


def _run(cmd: Sequence[str], *, root: Path, capture: bool = True, env: Mapping[str, str] | None = None,
         stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in ``root`` (output captured, or passed straight to the console)."""
    return subprocess.run(list(cmd), cwd=root, text=True, capture_output=capture, input=stdin,
                          env={**os.environ, **(env or {})})


def _git(root: Path, *args: str, check: bool = True, stdin: str | None = None) -> str:
    res = _run(["git", *args], root=root, stdin=stdin)
    if check and res.returncode != 0:
        raise RetrainError("git", f"`git {' '.join(args)}` failed: {(res.stderr or res.stdout).strip()}")
    return res.stdout.strip()


def _dvc() -> list[str]:
    """DVC of this interpreter's environment (the venv's, whatever PATH says)."""
    exe = Path(sys.executable).with_name("dvc")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "dvc"]


def _tail(res: subprocess.CompletedProcess[str], lines: int = 15) -> str:
    return "\n".join(((res.stderr or "") + (res.stdout or "")).strip().splitlines()[-lines:])


# ------------------------------------------------------------------------------------------------------- the steps
def configure_remote(root: Path) -> str | None:
    """The remote named by ``$LMFORGE_DVC_REMOTE_URL``, written to .dvc/config.local as the default; its name."""
    url = os.environ.get(REMOTE_URL_ENV, "").strip()
    if not url:
        return None
    for args in (["remote", "add", "--local", "--default", "--force", CI_REMOTE, url],
                 *([["remote", "modify", "--local", CI_REMOTE, "endpointurl", ep]]
                   if (ep := os.environ.get(REMOTE_ENDPOINT_ENV, "").strip()) else [])):
        res = _run([*_dvc(), *args], root=root)
        if res.returncode != 0:
            raise RetrainError("dvc remote", f"could not configure the DVC remote from ${REMOTE_URL_ENV}: {_tail(res)}")
    return CI_REMOTE


def pull(root: Path, remote: str | None) -> str:
    """``dvc pull``; outs missing from the remote are tolerated (their stages run again), any other failure is not.

    DVC's ``--allow-missing`` skips only objects the remote lacks; an unreachable or misconfigured remote still fails.
    """
    if not (root / "dvc.lock").is_file():
        return "nothing to pull (no dvc.lock yet: first run)"
    res = _run([*_dvc(), "pull", "--allow-missing", *(["-r", remote] if remote else [])], root=root)
    if res.returncode != 0:
        raise RetrainError("dvc pull", f"`dvc pull` failed (the remote is unreachable or misconfigured, not merely "
                                       f"empty): {_tail(res)}")
    missing = _missing_outs(root)
    if missing:
        return f"pulled; not in the remote (their stages will run): {', '.join(missing)}"
    return "pulled"


def _missing_outs(root: Path) -> list[str]:
    lock = yaml.safe_load((root / "dvc.lock").read_text()) or {}
    outs = [o["path"] for st in lock.get("stages", {}).values() for o in st.get("outs", [])]
    return [o for o in outs if not (root / o).exists()]


def run_pipeline(root: Path, args: Sequence[str]) -> str:
    """``lmforge run ARGS``, its output passed on to the console (CI's log) as it comes; what it did, in a few words."""
    cmd = [sys.executable, "-m", "pipelines.cli", "run", *args]
    log(f"$ lmforge run {shlex.join(args)}".rstrip())
    ran: list[str] = []
    nothing = False
    with subprocess.Popen(cmd, cwd=root, text=True, stdout=subprocess.PIPE, bufsize=1,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            stage, _, outcome = line.partition(": ")
            if outcome.startswith("ran") and stage.isidentifier():
                ran.append(stage)
            nothing = nothing or line.startswith("lmforge: nothing to do")
    if proc.returncode != 0:
        raise RetrainError("lmforge run", f"the pipeline failed (exit {proc.returncode}); its output is above and in "
                                          "reports/logs/; nothing was pushed or committed")
    return "nothing to do (every stage up to date)" if nothing else f"ran {', '.join(ran) or 'no stage'}"


def push(root: Path, remote: str | None) -> str:
    res = _run([*_dvc(), "push", *(["-r", remote] if remote else [])], root=root)
    if res.returncode != 0:
        raise RetrainError("dvc push", f"`dvc push` failed; nothing was committed: {_tail(res)}")
    return (res.stdout.strip().splitlines() or ["pushed"])[-1]


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out |= _flat(f"{prefix}.{k}" if prefix else str(k), v)
        return out
    return {prefix: value}


def locked_params(lock_text: str | None) -> dict[str, Any]:
    """Every param a stage of ``dvc.lock`` ran with, as flat dotted keys (``finetune.lr``)."""
    lock = yaml.safe_load(lock_text or "") or {}
    out: dict[str, Any] = {}
    for stage in lock.get("stages", {}).values():
        out |= _flat("", stage.get("params", {}).get(PARAMS_FILE, {}))
    return out


def param_changes(root: Path, base: str) -> list[str] | None:
    """The params this run's stages ran with that differ from those recorded in ``base``'s dvc.lock; None when
    ``base`` has no dvc.lock (the first recorded run: every param would be new)."""
    old_lock = _run(["git", "show", f"{base}:dvc.lock"], root=root)
    if old_lock.returncode != 0:
        return None
    old = locked_params(old_lock.stdout)
    new = locked_params((root / "dvc.lock").read_text() if (root / "dvc.lock").is_file() else None)
    return [f"{k}: {_short(old.get(k, '-'))} -> {_short(new.get(k, '-'))}" for k in sorted(old.keys() | new.keys())
            if old.get(k, "-") != new.get(k, "-")]


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def metrics_diff(root: Path, base: str) -> tuple[str, dict[str, tuple[Any, Any]]]:
    """``dvc metrics diff BASE`` as markdown (for the summary) and as {metric file: key -> (old, new)} changes."""
    md = _run([*_dvc(), "metrics", "diff", base, "--md"], root=root)
    js = _run([*_dvc(), "metrics", "diff", base, "--json"], root=root)
    if md.returncode != 0 or js.returncode != 0:
        failed = md if md.returncode else js
        raise RetrainError("dvc metrics diff", f"`dvc metrics diff {base}` failed: {_tail(failed)}")
    changes: dict[str, tuple[Any, Any]] = {}
    for path, keys in (json.loads(js.stdout or "{}") or {}).items():
        for key, entry in keys.items():
            changes[f"{Path(path).stem}.{key}"] = (entry.get("old"), entry.get("new"))
    return md.stdout, changes


def commit(root: Path, report: Report, *, skip_ci: bool) -> str:
    """Commit the run's state files when they changed; returns the new commit's id, or '' when nothing changed."""
    paths = [p for p in COMMITTED if (root / p).exists()]
    if not _git(root, "status", "--porcelain", "--", *paths):
        return ""
    _git(root, "add", "--", *paths)
    ident = [] if _git(root, "config", "user.email", check=False) else [
        "-c", f"user.name={BOT[0]}", "-c", f"user.email={BOT[1]}"]
    # only these paths: whatever else the checkout has staged stays out of the bot's commit
    _git(root, *ident, "commit", "-q", "-F", "-", "--", *paths, stdin=commit_message(report, skip_ci=skip_ci))
    return _git(root, "rev-parse", "HEAD")


def commit_message(report: Report, *, skip_ci: bool, limit: int = 12) -> str:
    """``retrain: ...`` subject, then the changed params (the first ``limit``), the changed headline metrics and the
    first ``limit`` other changed metrics, and the registry's decisions."""
    changed = report.changed_metrics()
    subject = "retrain: " + ("first recorded run" if report.first else
                             f"params {', '.join(p.split(':')[0] for p in report.params[:4])}" if report.params else
                             "data or code changed")
    if len(report.params) > 4:
        subject += f" (+{len(report.params) - 4})"
    body = ["Params (dvc.lock):", *[f"  {p}" for p in report.params[:limit]]] if report.params else []
    if len(report.params) > limit:
        body.append(f"  ... {len(report.params) - limit} more")
    # every changed headline number (a few per stage), then the first ``limit`` others
    shown = [item for item in changed if item[0] in report.headline]
    shown += [item for item in changed if item[0] not in report.headline][:limit]
    if shown:
        body += ["Metrics:", *[f"  {k}: {_short(old)} -> {_short(new)}" for k, (old, new) in shown]]
        if len(changed) > len(shown):
            body.append(f"  ... {len(changed) - len(shown)} more (dvc metrics diff)")
    body += [f"Registry: {r}" for r in report.registry]
    return subject + (" [skip ci]" if skip_ci else "") + "\n\n" + "\n".join(body) + "\n"


def push_commit(root: Path) -> str:
    """``git push origin HEAD:BRANCH`` of the retrain commit (CI's checkout of the branch the run started from)."""
    branch = _git(root, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    if not branch:
        raise RetrainError("git push", "HEAD is detached: check out the branch to push the retrain commit to")
    res = _run(["git", "push", "origin", f"HEAD:refs/heads/{branch}"], root=root)
    if res.returncode != 0:
        raise RetrainError("git push", f"`git push origin {branch}` failed (did the branch move meanwhile? the data is "
                                       f"in the DVC remote; rerun the retrain on the new head): {_tail(res)}")
    return branch


# ------------------------------------------------------------------------------------------------------- registry
def _open_store(tracking: TrackingParams, root: Path) -> Any | None:
    """An MLflow client on the store in params; None when the embedded store does not exist yet."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from mlflow import MlflowClient

    from pipelines.registry import RegistryError, open_store

    try:
        open_store(tracking, root)
    except RegistryError as err:
        if "no MLflow store at" in str(err):
            return None
        raise RetrainError("registry", str(err)) from None
    return MlflowClient()


def registry_snapshot(tracking: TrackingParams, registry: RegistryParams, root: Path) -> dict[str, tuple[int, str]]:
    """Before the run: every registered model's newest version and the version its alias points at
    (``{name: (newest, champion or '')}``)."""
    client = _open_store(tracking, root)
    if client is None:
        return {}
    return {m.name: (max((int(v.version) for v in client.search_model_versions(f"name = '{m.name}'")), default=0),
                     str(m.aliases.get(registry.alias, ""))) for m in client.search_registered_models()}


def _which_models(root: Path) -> dict[tuple[str, int], str]:
    """``(task, registry version) -> model`` (finetuned, student, a variant) from metrics/evaluate.json."""
    try:
        stats = json.loads((root / "metrics" / "evaluate.json").read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for key, value in stats.items():
        model, _, rest = key.partition(".")
        task, _, leaf = rest.rpartition(".")
        if leaf == "registry_version" and task:
            out[(task, int(value))] = model
    return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _tag_float(tags: Mapping[str, str], key: str) -> float | None:
    try:
        return float(tags[key]) if key in tags else None
    except ValueError:
        return None


def registry_decisions(tracking: TrackingParams, registry: RegistryParams, root: Path,
                       before: Mapping[str, tuple[int, str]]) -> list[str]:
    """One line per model version registered since ``before`` (what the gate decided, with the gate metric of the
    champion it was judged against and its own), then one line per model on where its alias ended up."""
    from pipelines.registry import KIND_TAG, METRIC_TAG, PROMOTION_TAG, TASK_TAG

    client = _open_store(tracking, root)
    if client is None:
        return ["no MLflow store: nothing was registered"]
    models = _which_models(root)
    lines: list[str] = []
    for model in sorted(client.search_registered_models(), key=lambda m: m.name):
        newest, champ_version = before.get(model.name, (0, ""))
        versions = sorted((v for v in client.search_model_versions(f"name = '{model.name}'")
                           if int(v.version) > newest), key=lambda v: int(v.version))
        if not versions:
            continue
        champion = client.get_model_version(model.name, champ_version) if champ_version else None
        for mv in versions:
            rule = registry.gates.get(mv.tags.get(KIND_TAG, ""))
            metric = rule.metric if rule else "?"
            value = _tag_float(mv.tags, f"{METRIC_TAG}{metric}")
            which = models.get((mv.tags.get(TASK_TAG, ""), int(mv.version)))
            label = f"{model.name} v{mv.version}" + (f" ({which})" if which else "")
            verdict = mv.tags.get(PROMOTION_TAG, "")
            if verdict.startswith("promoted"):
                old = None if champion is None else _tag_float(champion.tags, f"{METRIC_TAG}{metric}")
                was = f"over v{champion.version}" if champion is not None else "first version"
                lines.append(f"promoted {label}: {metric} {_fmt(old)} -> {_fmt(value)} ({was})")
                champion = mv
            else:
                reason = verdict.partition(": ")[2] or "no verdict recorded on the version"
                lines.append(f"not promoted: {label}: {reason}")
        after = str(model.aliases.get(registry.alias, ""))
        lines.append(f"{model.name}: {registry.alias} " + (
            f"unchanged at v{after}" if after == champ_version else
            f"{f'v{champ_version}' if champ_version else 'none'} -> {f'v{after}' if after else 'none'}"))
    return lines or ["no model version registered by this run (evaluate did not run, or register_models is off)"]


# ---------------------------------------------------------------------------------------------------------- main
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="infra/retrain.sh", allow_abbrev=False,
        description="Retrain as CI does: dvc pull, lmforge run, dvc push, commit dvc.lock and metrics/, "
        "dvc metrics diff against the starting commit and the registry gate's decisions into a markdown summary. "
        "Arguments it does not know (after -- or not) go to `lmforge run`.",
        epilog=f"The DVC remote: the default of .dvc/config, or --remote NAME, or ${REMOTE_URL_ENV} (with "
        f"${REMOTE_ENDPOINT_ENV} for an S3-compatible endpoint) written to .dvc/config.local.")
    p.add_argument("--no-commit", action="store_true", help="leave dvc.lock and metrics/ uncommitted")
    p.add_argument("--push", action="store_true", help="git push the retrain commit to origin (the current branch)")
    p.add_argument("--skip-ci", action="store_true",
                   help="end the commit's subject with [skip ci] (CI: the bot's push must not start workflows again)")
    p.add_argument("--summary", type=Path, metavar="PATH",
                   help="append the markdown summary here (default: $GITHUB_STEP_SUMMARY if set)")
    p.add_argument("--remote", metavar="NAME", help="DVC remote to pull from and push to (default: DVC's default)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m pipelines.retrain`` (``bash infra/retrain.sh``)."""
    args, run_args = _parser().parse_known_args(argv)
    args.summary = args.summary.resolve() if args.summary else None  # before prepare() changes into the checkout
    run_args = run_args[1:] if run_args[:1] == ["--"] else run_args
    if args.push and args.no_commit:
        print("retrain: error: --push pushes the retrain commit; it cannot go with --no-commit", file=sys.stderr)
        return EXIT_USAGE
    return guarded(lambda: retrain(args, run_args))


def _check_checkout(root: Path, *, committing: bool) -> str:
    res = _run(["git", "rev-parse", "--verify", "HEAD"], root=root)
    if res.returncode != 0:
        raise RetrainUsageError("start", f"{root} is not a git checkout with a commit: the retrain diffs against and "
                                         "commits to git")
    if committing and (dirty := _git(root, "status", "--porcelain", "--", *COMMITTED)):
        raise RetrainUsageError("start", "dvc.lock, metrics/ or dvc.yaml have uncommitted changes that the retrain "
                                         f"commit would take along:\n{dirty}\ncommit or discard them, or use "
                                         "--no-commit")
    return res.stdout.strip()


def retrain(args: argparse.Namespace, run_args: list[str]) -> int:
    root = prepare()
    summary_path = args.summary or (Path(os.environ["GITHUB_STEP_SUMMARY"]) if os.environ.get("GITHUB_STEP_SUMMARY")
                                    else None)
    report = Report(base=_check_checkout(root, committing=not args.no_commit))
    params = load_params(root)  # bad params: one clear error before any step
    if os.environ.get("GITHUB_ACTIONS") == "true" and params.tracking.uri.startswith("sqlite:"):
        report.notes.append("tracking.uri is the embedded sqlite store, which lives only as long as this runner: every "
                            "retrain registers first versions. Point tracking.uri at an MLflow server to gate against "
                            "the last champion.")
    if os.environ.get("GITHUB_ACTIONS") == "true" and not (args.remote or os.environ.get(REMOTE_URL_ENV)):
        report.notes.append(f"no ${REMOTE_URL_ENV} (secret DVC_REMOTE_URL): the data went to the default remote of "
                            ".dvc/config, which may be a directory on this runner, gone after the job.")
    step = "start"
    try:
        remote = args.remote or configure_remote(root)
        before = registry_snapshot(params.tracking, params.registry, root)
        step = "dvc pull"
        _timed(report, step, lambda: pull(root, remote))
        step = "lmforge run"
        started = time.time()
        _timed(report, step, lambda: run_pipeline(root, run_args))
        report.reuse = reuse_lines(root, since=started)
        step = "dvc push"
        _timed(report, step, lambda: push(root, remote))
        step = "dvc metrics diff"

        def diff() -> str:
            changes = param_changes(root, report.base)
            report.params, report.first = changes or [], changes is None
            report.metrics_md, report.metrics = metrics_diff(root, report.base)
            if not report.first and not report.changed_metrics():
                report.metrics_md = "no metric changed"
            report.headline = {f"{stage}.{key}" for stage in {k.split(".")[0] for k in report.metrics}
                               for key in headline(root, stage)}
            return f"{sum(old != new for old, new in report.metrics.values())} metrics changed"

        _timed(report, step, diff)
        step = "registry"

        def gate() -> str:
            report.registry = registry_decisions(params.tracking, params.registry, root, before)
            promoted = sum(line.startswith("promoted") for line in report.registry)
            return f"{promoted} promoted"

        _timed(report, step, gate)
        step = "git commit"

        def record() -> str:
            if args.no_commit:
                report.commit = "not committed (--no-commit)"
                return report.commit
            sha = commit(root, report, skip_ci=args.skip_ci)
            report.commit = f"`{sha[:12]}` " + _git(root, "log", "-1", "--format=%s") if sha else "nothing changed"
            if sha and args.push:
                report.commit += f", pushed to origin/{push_commit(root)}"
            return report.commit.replace("`", "")

        _timed(report, step, record)
    except RetrainError as err:
        report.failure = f"{err.step}: {err}"
        print(f"retrain: error in {err.step}: {err}", file=sys.stderr)
        _write_summary(report, summary_path)
        return err.exit_code
    except BaseException:
        report.failure = f"{step}: interrupted or crashed (see the log)"
        _write_summary(report, summary_path)
        raise
    _write_summary(report, summary_path)
    return EXIT_OK


def _timed(report: Report, name: str, body: Callable[[], str]) -> str:
    log(f"{name} ...")
    start = time.monotonic()
    text = body()
    seconds = time.monotonic() - start
    report.steps.append((name, text, seconds))
    log(f"{name}: {text} ({seconds:.1f} s)")
    return text


def _write_summary(report: Report, path: Path | None) -> None:
    text = report.markdown()
    print(text)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(text)
        log(f"summary appended to {path}")


if __name__ == "__main__":
    raise SystemExit(main())
