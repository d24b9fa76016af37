"""``python -m peftsent.tune RECIPE [key=value ...] --trials N``: search a recipe's ``tune:`` section with Optuna.

A recipe's optional ``tune`` section holds the search space (dotted recipe keys
mapped to a distribution) and a few settings::

    tune:
      metric: accuracy                 # validation metric to optimise (default: train.metric_for_best_model)
      sampler_seed: 42                 # seed of the TPE sampler (default: train.seed)
      pruner: median                   # median (optuna MedianPruner) or none
      n_startup_trials: 5              # MedianPruner: trials that are never pruned
      n_warmup_steps: 0                # MedianPruner: optimizer steps before a trial can be pruned
      train.learning_rate: {log_uniform: [1.0e-5, 3.0e-3]}
      train.warmup_steps: {uniform: [0.0, 0.2]}
      method.r: {choice: [4, 8, 16]}
      train.per_device_train_batch_size: {int: [8, 32, 8]}   # low, high[, step]

Each trial is an ordinary peftsent run (``peftsent.train.train``) of the recipe
with the trial's values as overrides, trained into ``OUT/trials/trial-<n>``; it
evaluates the validation split only (``eval.test=false``): the test split is
reported once, by training ``OUT/best.yaml``. The objective is always a
validation metric; the median pruner reads the same metric at every
evaluation during training and can stop a trial before its last step (give it
evaluations within an epoch with ``train.eval_strategy=steps train.eval_steps=K
train.save_strategy=steps train.save_steps=K``). ``train`` validates a ``tune`` section and otherwise
ignores it; run directories and ``best.yaml`` hold one concrete recipe, without it.

Outputs in ``--out`` (default ``runs/tune/<recipe name>``): ``tune.db`` (the
Optuna study; ``--storage`` names another), ``trials.csv``, ``history.png``,
``importance.png``, ``intermediate.png``, ``study.json`` and ``best.yaml``.

Many workers, one study (docs/scale-out.md): start the same command, with the same
``--storage URL --study-name NAME --out DIR --trials N``, in several processes or on several
machines. The storage is a PostgreSQL URL (``postgresql+psycopg://user:pw@host/db``, extra
``peftsent[postgres]``), optuna's journal file on a shared filesystem (``journal:///shared/tune.log``)
or, on one machine, SQLite. The storage numbers trials uniquely, so trial directories
(``DIR/trials/trial-<number>``) never collide. A worker starts a trial only while the study has
fewer than N finished (complete or pruned) plus running trials, and stops when it has N finished:
the study ends with exactly N. A running trial sends a heartbeat every ``--heartbeat`` seconds; one
silent for ``--grace`` seconds (its worker was killed) is marked FAIL by any live worker and retried
once, with the same parameters, by the next worker that asks for a trial; workers with nothing to start
wait for the running trials to end, so a dead worker's trial is always taken over. ``--report``
writes trials.csv, study.json, the plots and best.yaml from the whole study without training.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import peftsent.train as train_module  # through the module: tests replace train_module.train
from peftsent.cli import check_out_dir, make_parser, positive_int, run_cli
from peftsent.errors import PeftsentError, RecipeError
from peftsent.metrics import SCALAR_METRICS
from peftsent.recipe import SECTIONS, load_recipe, section_schema
from peftsent.rundir import open_run, write_json
from peftsent.search_space import TuneSpec, parse_tune, yaml_text

EPILOG = """examples:
  python -m peftsent.tune recipes/quick/lora.yaml --trials 20
  python -m peftsent.tune recipes/quick/lora.yaml data.max_train_samples=1000 --trials 12 --timeout 3600
  python -m peftsent.tune recipes/quick/lora.yaml --trials 20 --storage sqlite:///runs/tune/lora/tune.db
  python -m peftsent.train runs/tune/lora/best.yaml        # the best trial's recipe, test split included

  # several workers (processes or machines) on one study; any of them, or a third process, reports:
  python -m peftsent.tune recipes/quick/lora.yaml --trials 40 --out /shared/tune/lora \\
      --storage postgresql+psycopg://peftsent:secret@db-host/optuna --study-name lora-1
  python -m peftsent.tune recipes/quick/lora.yaml --trials 40 --out /shared/tune/lora \\
      --storage journal:///shared/tune/lora.journal --study-name lora-1
  python -m peftsent.tune recipes/quick/lora.yaml --trials 40 --out /shared/tune/lora \\
      --storage journal:///shared/tune/lora.journal --study-name lora-1 --report

--trials N is the study's total of finished (complete or pruned) trials: run the same command again
to resume an interrupted study (numbering continues), or start it in several processes on one
storage to share the work (sqlite for one machine; PostgreSQL or a journal file on a shared
filesystem for several: docs/scale-out.md). Workers stop when the study has N finished trials.
A trial whose worker was killed is marked failed after --grace seconds without a heartbeat and
retried once with the same parameters by another worker (or by the next run of the command).
Exit status: 0 with best.yaml written, 1 if no trial completed, 2 for bad input.
"""

#: a trial scores validation only: no test split, no baseline, no out-of-domain datasets (seconds to minutes each)
TRIAL_OVERRIDES = ("eval.test=false", "eval.baseline=none", "eval.also=[]")
#: seconds between a running trial's heartbeats; a trial silent for GRACE_S is failed and retried
HEARTBEAT_S, GRACE_S = 60, 180
#: trial system attribute holding a journal-storage trial's last heartbeat (UTC seconds since the epoch)
JOURNAL_HEARTBEAT_ATTR = "peftsent:heartbeat"
#: the --storage prefix of optuna's journal file storage
JOURNAL_PREFIX = "journal://"


class SurplusTrial(Exception):
    """A trial asked for when the study already had ``--trials`` finished or running ones (two workers asked
    at once for the last place): failed before it trains, never counted."""


def tune_spec(recipe) -> TuneSpec:
    """The validated search of ``recipe`` (a Recipe). Raises RecipeError if it has no ``tune`` section."""
    if not recipe.tune:
        raise RecipeError("no tune section: add one with the keys to search, e.g.\n"
                          "  tune:\n    train.learning_rate: {log_uniform: [1.0e-5, 3.0e-3]}\n"
                          "    method.r: {choice: [4, 8, 16]}", recipe.source)
    raw = {"method": dict(recipe.method)}
    spec, problems = parse_tune(recipe.tune, SECTIONS, lambda s: section_schema(s, raw),
                                recipe.train["metric_for_best_model"], recipe.train["seed"])
    if problems:
        raise RecipeError(problems, recipe.source)
    return spec


def param_overrides(spec: TuneSpec, values: dict) -> list[str]:
    """``key=value`` overrides (as ``train`` takes them) of recipe values keyed by search key."""
    return [f"{p.key}={yaml_text(values[p.key])}" for p in spec.params if p.key in values]


def check_values(path: str, overrides: list[str], spec: TuneSpec) -> None:
    """Resolve the recipe at every corner of the search space (each bound, each choice) before any trial.

    Catches values the recipe rules reject (a batch size of 0, a negative rate, a method option of the
    wrong type). Raises one RecipeError listing every bad value.
    """
    problems = []
    for param in spec.params:
        for value in param.corners():
            override = param_overrides(spec, {param.key: value})
            try:
                load_recipe(path, [*overrides, *override])
            except RecipeError as err:
                found = "; ".join(p for p in err.problems)
                problems.append(f"tune: {param.key}: the value {yaml_text(value)} makes the recipe invalid: {found}")
    if problems:
        raise RecipeError(problems, path)


# ---------------------------------------------------------------- trials


def pruning_callback(trial, spec: TuneSpec):
    """A ``transformers.TrainerCallback`` that reports ``spec.metric`` at every evaluation to the optuna
    ``trial`` (step = optimizer step) and raises ``optuna.TrialPruned`` when the pruner says so, except
    at the final step (a finished run is kept and counts)."""
    import optuna
    from transformers import TrainerCallback

    key = f"eval_{spec.metric}"

    class OptunaPruning(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if metrics is None or metrics.get(key) is None:
                return
            trial.report(float(metrics[key]), step=state.global_step)
            # the last evaluation ends the run anyway: its compute is spent, so the trial counts
            if state.global_step < state.max_steps and trial.should_prune():
                raise optuna.TrialPruned(f"validation {spec.metric} {metrics[key]:.4f} at step "
                                         f"{state.global_step} is worse than the median of earlier trials")

    return OptunaPruning()


def _validation_scalars(metrics: dict) -> dict:
    return {k: metrics[k] for k in SCALAR_METRICS if metrics.get(k) is not None}


def _objective(path: str, overrides: list[str], spec: TuneSpec, out: Path):
    """The optuna objective: train one trial as an ordinary run, return its validation metric."""

    def objective(trial) -> float:
        values = {p.key: p.suggest(trial) for p in spec.params}
        run_dir = out / "trials" / f"trial-{trial.number}"
        trial.set_user_attr("run_dir", str(run_dir))
        recipe = load_recipe(path, [*overrides, *param_overrides(spec, values), *TRIAL_OVERRIDES,
                                    f"train.output_dir={run_dir}"])
        print(f"peftsent.tune: trial {trial.number}: {' '.join(param_overrides(spec, values))}", file=sys.stderr)
        train_module.train(recipe, callbacks=[pruning_callback(trial, spec)])
        summary = open_run(run_dir).metrics()
        validation = _validation_scalars(summary["validation"])
        trial.set_user_attr("validation", validation)
        trial.set_user_attr("train_seconds", summary["timing"]["train_seconds"])
        if spec.report_key not in validation:  # roc_auc with one class in the validation split
            raise PeftsentError(f"tune.metric {spec.metric}: undefined on this validation split "
                                f"({run_dir / 'metrics.json'}); choose another metric, e.g. accuracy or log_loss")
        return validation[spec.report_key]

    return objective


# ---------------------------------------------------------------- the study


def _worker() -> str:
    """This worker's name in the study (trial user attribute ``worker``): host:pid."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def _sampler(spec: TuneSpec, number: int):
    """The TPE sampler of trial ``number``: seeded with ``tune.sampler_seed + number`` (workers that ask at once
    draw different values; a resumed study samples anew) and a constant liar (running trials of other
    workers count as bad, so concurrent trials spread out)."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=spec.sampler_seed + number, constant_liar=True)


def _journal_storage(path: str, heartbeat_s: int, grace_s: int, retry):
    """Optuna's journal storage on the file ``path`` (shared filesystem), with heartbeats.

    Optuna's JournalStorage has no heartbeat of its own (5.1): a running trial's heartbeat is the trial
    system attribute JOURNAL_HEARTBEAT_ATTR (UTC seconds), written every ``heartbeat_s``; a RUNNING trial
    whose last heartbeat, or start, is older than ``grace_s`` is stale (the workers' clocks must agree
    to within the grace period, e.g. NTP). Every process that writes to the file must be a peftsent tune
    worker (a trial of a worker without heartbeats would be failed after ``grace_s``).
    """
    from datetime import datetime, timezone

    from optuna.storages import JournalStorage
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
        def record_heartbeat(self, trial_id: int) -> None:
            self.set_trial_system_attr(trial_id, JOURNAL_HEARTBEAT_ATTR, datetime.now(timezone.utc).timestamp())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now = datetime.now(timezone.utc).timestamp()
            stale = []
            for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                # a retried trial carries its predecessor's heartbeat: its own start counts as one
                beats = [trial.system_attrs.get(JOURNAL_HEARTBEAT_ATTR, 0.0)]
                if trial.datetime_start is not None:
                    beats.append(trial.datetime_start.timestamp())
                if now - max(beats) > grace_s:
                    stale.append(trial._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int | None:
            return heartbeat_s

        def get_heartbeat_stale_trial_callback(self):
            return retry

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return HeartbeatJournalStorage(JournalFileBackend(path))


def _storage(url: str, heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S):
    """The optuna storage at ``url`` with heartbeats: a trial whose worker died (no heartbeat for ``grace_s``
    seconds) is failed and retried once. ``url``: an SQLAlchemy URL (sqlite:///FILE,
    postgresql+psycopg://USER:PASSWORD@HOST[:PORT]/DB, mysql+pymysql://...) or journal://FILE (optuna's
    journal file; journal:///abs/path). Raises PeftsentError when it cannot be opened."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats: stable since 2.8
    retry = RetryHeartbeatStaleTrialCallback(max_retry=1)
    if url.startswith(JOURNAL_PREFIX):
        path = url[len(JOURNAL_PREFIX):]
        if not path or path.endswith("/"):
            raise PeftsentError(f"--storage {url}: expected a journal file, e.g. journal:///shared/tune/NAME.journal")
        try:
            return _journal_storage(path, heartbeat_s, grace_s, retry)
        except OSError as err:
            raise PeftsentError(f"--storage {url}: cannot open the journal file ({err})") from None
    for attempt in range(3):
        try:
            return RDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=grace_s,
                              heartbeat_stale_trial_callback=retry)
        except ImportError as err:
            extra = " (pip install 'peftsent[postgres]')" if url.startswith("postgresql") else ""
            raise PeftsentError(f"--storage {url}: its database driver is not installed{extra}: {err}") from None
        except (ValueError, optuna.exceptions.OptunaError) as err:
            raise PeftsentError(f"--storage {url}: cannot open it as an optuna storage ({err}); expected e.g. "
                                f"sqlite:///runs/tune/NAME/tune.db, postgresql+psycopg://USER:PASSWORD@HOST/DB "
                                f"or journal:///shared/tune/NAME.journal") from None
        except Exception as err:  # sqlalchemy's errors: bad driver, unreachable server
            # workers that create optuna's tables at the same moment collide (a unique violation): try again
            if "IntegrityError" in type(err).__name__ and attempt < 2:
                time.sleep(1.0 + attempt)
                continue
            raise PeftsentError(f"--storage {url}: cannot open it ({type(err).__name__}: {err})") from None


def _fingerprint(path: str, overrides: list[str], spec: TuneSpec) -> dict:
    """What must be equal for trials to belong to one study: the base recipe (no output_dir) and the search."""
    import json

    base = load_recipe(path, [*overrides, *TRIAL_OVERRIDES]).to_dict()
    base["train"].pop("output_dir", None)
    return json.loads(json.dumps({"recipe": base, "tune": spec.raw}, default=str))


def _open_study(storage, name: str, spec: TuneSpec, fingerprint: dict, pruner=None, create: bool = True):
    """The study ``name`` in ``storage``, created if absent (``create``); raises PeftsentError if it optimises
    another direction or was started with another recipe or search space, or (not ``create``) is absent."""
    import optuna

    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    if name not in existing and not create:
        found = ", ".join(sorted(existing)) or "none"
        raise PeftsentError(f"--report: no study '{name}' in this storage (studies there: {found}); "
                            f"give the workers' --storage and --study-name")
    if name in existing and existing[name].direction.name.lower() != spec.direction:
        raise PeftsentError(f"study '{name}' in this storage maximises/minimises another metric; "
                            f"use another --study-name or --out")
    if pruner is None:
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=spec.n_startup_trials,
                                              n_warmup_steps=spec.n_warmup_steps)
                  if spec.pruner == "median" else optuna.pruners.NopPruner())
    study = optuna.create_study(storage=storage, study_name=name, direction=spec.direction, load_if_exists=True,
                                sampler=_sampler(spec, 0), pruner=pruner)
    saved = study.user_attrs.get("peftsent")
    if saved is None:
        study.set_user_attr("peftsent", fingerprint)
    elif saved != fingerprint:
        raise PeftsentError(f"study '{name}' in this storage was started with another recipe or search space; "
                            f"its trials would not be comparable: use another --out, --storage or --study-name")
    return study


def _counts(study) -> dict[str, int]:
    """Trials of the study by state name (COMPLETE, PRUNED, RUNNING, WAITING, FAIL)."""
    from collections import Counter

    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


def _finished(study) -> int:
    counts = _counts(study)
    return counts["COMPLETE"] + counts["PRUNED"]


def _claimed(objective, trials: int, spec: TuneSpec):
    """``objective`` run only if the trial has a place among the study's ``trials``: fewer than ``trials``
    trials numbered before it are finished, running or waiting. Trial numbers are allocated uniquely by the
    storage, so of two workers that asked at once for the last place exactly one trains; the other trial
    raises SurplusTrial (state FAIL, user attribute ``surplus``) before any compute."""
    from optuna.trial import TrialState

    holding = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)

    def run(trial) -> float:
        run.last = trial
        trial.set_user_attr("worker", _worker())
        earlier = [t for t in trial.study.get_trials(deepcopy=False, states=holding) if t.number < trial.number]
        if len(earlier) >= trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number} not run: the study already has --trials {trials} "
                               f"finished or running trials (another worker asked at the same moment)")
        trial.study.sampler = _sampler(spec, trial.number)
        return objective(trial)

    run.last = None
    return run


def _taken_over(study, objective, err: Exception) -> bool:
    """Whether ``err`` (from ``study.optimize``) says that this worker's trial was failed by another worker
    while it ran (no heartbeat for --grace seconds: a stall, not a death), so it is retried there."""
    import optuna

    last = getattr(objective, "last", None)
    if last is None or not isinstance(err, (ValueError, optuna.exceptions.UpdateFinishedTrialError)):
        return False
    return study._storage.get_trial(last._trial_id).state.name == "FAIL"


def _work(study, objective, trials: int, timeout: float | None, poll_s: float) -> None:
    """Run trials of ``study`` until it has ``trials`` finished ones, or ``timeout`` seconds passed (then no
    new trial starts). While the other workers' running trials fill the remaining places, wait (polling
    every ``poll_s``) and fail those whose heartbeat stopped: their retries are then run here."""
    import warnings

    import optuna

    deadline = None if timeout is None else time.monotonic() + timeout
    waiting_said = False
    while True:
        counts = _counts(study)
        finished = counts["COMPLETE"] + counts["PRUNED"]
        if finished >= trials or (deadline is not None and time.monotonic() >= deadline):
            return
        if counts["WAITING"] or finished + counts["RUNNING"] < trials:
            try:
                study.optimize(objective, n_trials=1, catch=(SurplusTrial,))
            except Exception as err:
                if not _taken_over(study, objective, err):
                    raise
                print(f"peftsent.tune: trial {objective.last.number} was marked failed by another worker (no "
                      f"heartbeat for --grace seconds) and is retried there; its result is dropped. Raise --grace "
                      f"if this worker was alive", file=sys.stderr)
            waiting_said = False
            continue
        if not waiting_said:
            print(f"peftsent.tune: waiting: {counts['RUNNING']} trial(s) of other workers running, "
                  f"{finished} of {trials} finished", file=sys.stderr)
            waiting_said = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial: FAIL, and a WAITING retry
        time.sleep(poll_s)


def tune(path: str, overrides: list[str] = (), trials: int = 10, timeout: float | None = None,
         storage: str | None = None, out: str | None = None, study_name: str | None = None, pruner=None,
         heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S, report_only: bool = False) -> dict:
    """Run (or resume, or join) the study of the recipe at ``path``'s ``tune`` section until it has ``trials``
    finished trials or ``timeout`` seconds passed (no new trial starts after that); write the reports.

    Several calls (processes, machines) with the same ``storage``, ``study_name`` and ``out`` share the study
    (module docstring). ``heartbeat_s``/``grace_s``: seconds between a running trial's heartbeats, and without
    one before the trial is failed and retried. ``report_only``: train nothing, write the reports of the
    study as it is (it must exist).

    Returns {"study": optuna Study, "out": Path, "best": Path | None (best.yaml), "summary": dict}.
    Raises RecipeError/PeftsentError for bad input before any trial trains. ``pruner`` (an optuna pruner)
    replaces the section's pruner (tests).
    """
    import optuna

    overrides = list(overrides)
    base = load_recipe(path, overrides)
    spec = tune_spec(base)
    check_values(path, overrides, spec)
    if heartbeat_s <= 0 or grace_s <= heartbeat_s:
        raise PeftsentError(f"--heartbeat {heartbeat_s} --grace {grace_s}: expected 0 < heartbeat < grace seconds")
    out_dir = Path(out) if out else Path("runs") / "tune" / Path(path).stem
    check_out_dir(out_dir)
    if not report_only:
        train_module.preflight(load_recipe(path, [*overrides, *TRIAL_OVERRIDES,
                                                  f"train.output_dir={out_dir / 'trials' / 'probe'}"]))
    url = storage or f"sqlite:///{(out_dir / 'tune.db').resolve()}"
    if storage is None:
        if report_only and not (out_dir / "tune.db").is_file():
            raise PeftsentError(f"--report: no study in {out_dir} ({out_dir / 'tune.db'} does not exist); "
                                f"give the workers' --out, or their --storage and --study-name")
        out_dir.mkdir(parents=True, exist_ok=True)
    name = study_name or f"peftsent-{Path(path).stem}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_study(_storage(url, heartbeat_s, grace_s), name, spec, _fingerprint(path, overrides, spec), pruner,
                        create=not report_only)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if report_only:
        pass
    elif _finished(study) < trials:
        _work(study, _claimed(_objective(path, overrides, spec, out_dir), trials, spec), trials, timeout,
              poll_s=min(float(heartbeat_s), 5.0))
    else:
        print(f"peftsent.tune: study '{name}' already has {_finished(study)} finished trials (--trials {trials}); "
              f"raise --trials to add more", file=sys.stderr)
    summary = write_reports(study, spec, out_dir, url, time.perf_counter() - started)
    best = write_best(study, spec, path, overrides, out_dir, summary)
    return {"study": study, "out": out_dir, "best": best, "summary": summary}


# ---------------------------------------------------------------- reports


def _tmp(path: Path) -> Path:
    """A temporary name beside ``path`` of this process only: workers that report at once never share one."""
    return path.with_name(f".{path.name}.{_worker().replace(':', '-')}.tmp")


def _shown(url: str) -> str:
    """``url`` without its password (for study.json and messages)."""
    if url.startswith(JOURNAL_PREFIX):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL: nothing to hide
        return url


def _trial_rows(study, spec: TuneSpec) -> list[dict]:
    rows = []
    trials = study.get_trials(deepcopy=False)
    # the metrics of the run's label set (binary: precision/recall/f1; more classes: weighted_f1, per-grade ones)
    shown = [m for m in SCALAR_METRICS if any(m in t.user_attrs.get("validation", {}) for t in trials)] or \
        [m for m in SCALAR_METRICS if m not in ("weighted_f1", "mae", "off_by_one")]
    for t in trials:
        wall = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        row = {"number": t.number, "state": t.state.name, f"objective: validation {spec.metric}": t.value}
        by_key = {p.key: p for p in spec.params}
        row.update({f"param {k}": yaml_text(by_key[k].decode(v)) if k in by_key else v for k, v in t.params.items()})
        validation = t.user_attrs.get("validation", {})
        row.update({f"val {m}": validation.get(m) for m in shown})
        steps = sorted(t.intermediate_values)
        row["last reported step"] = steps[-1] if steps else None
        row["train seconds"] = t.user_attrs.get("train_seconds")
        row["wall seconds"] = None if wall is None else round(wall, 1)
        row["run dir"] = t.user_attrs.get("run_dir")
        row["worker"] = t.user_attrs.get("worker")
        row["retry of"] = t.system_attrs.get("failed_trial")
        rows.append(row)
    return rows


def _write_csv(rows: list[dict], path: Path) -> None:
    import csv

    columns = list(dict.fromkeys(key for row in rows for key in row))
    tmp = _tmp(path)
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def _plots(study, spec: TuneSpec, out: Path) -> list[str]:
    """history.png, importance.png (two complete trials or more) and intermediate.png; returns what was skipped."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots = {"history.png": ovm.plot_optimization_history}
    if len(complete) >= 2 and len({repr(sorted(t.params.items())) for t in complete}) >= 2:
        plots["importance.png"] = ovm.plot_param_importances
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        plots["intermediate.png"] = ovm.plot_intermediate_values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        for name, plot in plots.items():
            axes = plot(study)
            if name != "importance.png":
                axes.set_ylabel(f"validation {spec.metric}")
            figure = axes.figure
            figure.set_size_inches(8, 4.5)
            figure.tight_layout()
            tmp = _tmp(out / name)
            figure.savefig(tmp, dpi=110, format="png")
            plt.close(figure)
            tmp.replace(out / name)
    return [n for n in ("history.png", "importance.png", "intermediate.png") if n not in plots]


def write_reports(study, spec: TuneSpec, out: Path, url: str, seconds: float) -> dict:
    """Write trials.csv, the plots and study.json; returns the study.json summary."""
    from collections import Counter

    rows = _trial_rows(study, spec)
    _write_csv(rows, out / "trials.csv")
    skipped = _plots(study, spec, out)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    best = study.best_trial if complete else None
    summary = {
        "study_name": study.study_name, "storage": _shown(url), "metric": f"validation {spec.metric}",
        "direction": spec.direction, "trials": dict(Counter(row["state"] for row in rows)),
        "best_trial": None if best is None else best.number,
        "best_value": None if best is None else best.value,
        "best_params": {} if best is None else {p.key: p.decode(best.params[p.key]) for p in spec.params
                                                 if p.key in best.params},
        "this_invocation_seconds": round(seconds, 1),
        "trial_wall_seconds": round(sum(r["wall seconds"] or 0 for r in rows), 1),
        "plots_skipped": skipped,
    }
    tmp = _tmp(out / "study.json")
    write_json(tmp, summary)
    tmp.replace(out / "study.json")
    return summary


def write_best(study, spec: TuneSpec, path: str, overrides: list[str], out: Path, summary: dict) -> Path | None:
    """Write ``best.yaml``: the recipe with the best trial's values, resolved, test split on, no tune section,
    training into ``OUT/best``. Returns its path, or None when no trial has completed."""
    import yaml

    if summary["best_trial"] is None:
        return None
    values = summary["best_params"]
    recipe = load_recipe(path, [*overrides, *param_overrides(spec, values), f"train.output_dir={out / 'best'}"])
    target = out / "best.yaml"
    header = (
        f"# Best trial of the peftsent tune study '{study.study_name}': trial {summary['best_trial']}, "
        f"{summary['metric']} = {summary['best_value']:.4f}\n"
        f"# from {path}{(' with ' + ' '.join(overrides)) if overrides else ''}; trials: {summary['trials']}\n"
        f"#   run:      python -m peftsent.train {target}\n"
        f"#   override: python -m peftsent.train {target} train.output_dir={out / 'best-seed1'} train.seed=43\n"
        f"# Searched values: {' '.join(param_overrides(spec, values))}\n"
        f"# One concrete recipe: the search space (tune section) stays in {path}.\n"
    )
    tmp = _tmp(target)
    tmp.write_text(header + yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    tmp.replace(target)
    return target


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python -m peftsent.tune", "Search a recipe's tune: section with Optuna (TPE, median pruning).",
                         EPILOG)
    parser.add_argument("recipe", help="recipe YAML file with a tune: section")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override a recipe key, as in train")
    parser.add_argument("--trials", type=positive_int, default=None,
                        help="finished (complete or pruned) trials the study should have in total, "
                             "all workers together (required unless --report)")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="start no new trial after S seconds (a running trial finishes)")
    parser.add_argument("--storage", default=None, metavar="URL",
                        help="optuna storage URL (default: sqlite:///OUT/tune.db)")
    parser.add_argument("--out", default=None, metavar="DIR", help="output directory (default: runs/tune/<recipe name>)")
    parser.add_argument("--study-name", default=None, help="study name in the storage (default: peftsent-<recipe name>)")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: write trials.csv, study.json, the plots and best.yaml of the whole "
                             "study as it is in --storage (any worker's, or a third process)")
    parser.add_argument("--heartbeat", type=positive_int, default=HEARTBEAT_S, metavar="S",
                        help=f"seconds between a running trial's heartbeats (default {HEARTBEAT_S})")
    parser.add_argument("--grace", type=positive_int, default=GRACE_S, metavar="S",
                        help=f"a running trial without a heartbeat for S seconds (its worker died) is marked "
                             f"failed and retried once by another worker (default {GRACE_S}; more than --heartbeat)")
    args = parser.parse_intermixed_args(argv)
    if args.trials is None and not args.report:
        parser.error("--trials N is required (or --report to write the reports of an existing study)")

    def body() -> int:
        if args.timeout is not None and args.timeout <= 0:
            raise PeftsentError(f"--timeout {args.timeout}: expected seconds > 0")
        result = tune(args.recipe, args.overrides, args.trials or 0, args.timeout, args.storage, args.out,
                      args.study_name, heartbeat_s=args.heartbeat, grace_s=args.grace, report_only=args.report)
        summary, out = result["summary"], result["out"]
        print(f"\nstudy '{summary['study_name']}': {summary['trials']}; {summary['metric']} ({summary['direction']})")
        print(f"written: {out / 'trials.csv'}, {out / 'study.json'}, plots in {out}")
        if result["best"] is None:
            print("no trial completed, so there is no best.yaml; run again (the study resumes) or loosen the pruner",
                  file=sys.stderr)
            return 1
        print(f"best: trial {summary['best_trial']}, {summary['metric']} = {summary['best_value']:.4f}: "
              f"{' '.join(f'{k}={yaml_text(v)}' for k, v in summary['best_params'].items())}")
        print(f"train it (test split included): python -m peftsent.train {result['best']}")
        return 0

    return run_cli(body, "peftsent.tune")


if __name__ == "__main__":
    raise SystemExit(main())
