"""Optuna tuning: the objective is `run_cv(cfg)` with a few fields overridden; no second training path.

    $ fkd tune --data-dir competition/data/practice --trials 20 --workers 2 --set epochs=6

The search space is tuning/space.yaml; the study's storage, lock, plots and export are fkd/learn/study.py's.
Each worker takes a trial under a lock (a file lock on one machine, a PostgreSQL advisory lock across
machines) and runs it with `study.optimize(n_trials=1)`: the study ends with exactly N
finished (COMPLETE or PRUNED) trials, none duplicated, and a dead worker's trial is replaced.
Validation RMSE is reported per epoch on the first searched fold; MedianPruner (or Hyperband) prunes.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import yaml

from .. import atomic
from ..children import spawn
from ..config import FIELD_TYPES, Config, replace, save_config
from ..errors import FkdError
from .study import DEFAULT_STUDY, TUNING, StudyLock, create_study, default_storage, storage_for, summarize

SPACE_FILE = TUNING / "space.yaml"


def load_space(path: str | Path = SPACE_FILE) -> dict:
    path = Path(path)
    if not path.is_file():
        from ..competition import ROOT
        path = ROOT / "tuning" / "space.yaml"
    space = yaml.safe_load(path.read_text()) or {}
    for name, spec in space.items():
        if name not in FIELD_TYPES:
            raise FkdError(f"{path}: {name!r} is not a config field")
        if spec.get("type") not in ("float", "int", "categorical"):
            raise FkdError(f"{path}: {name}: type must be float, int or categorical")
    return space


def suggest(trial, space: dict) -> dict:
    out = {}
    for name, s in space.items():
        if s["type"] == "float":
            out[name] = trial.suggest_float(name, float(s["low"]), float(s["high"]), log=bool(s.get("log")))
        elif s["type"] == "int":
            out[name] = trial.suggest_int(name, int(s["low"]), int(s["high"]), log=bool(s.get("log")))
        else:
            out[name] = trial.suggest_categorical(name, list(s["choices"]))
    return out


def study_folder(study_name: str, storage_url: str, study_id: int) -> Path:
    """tuning/runs/<study>-<key>: a study's trial runs, keyed by its identity (storage and study id), so that a
    second study of the same name (the database deleted, another --storage) never meets the first one's runs."""
    key = hashlib.sha1(f"{storage_url}#{study_id}".encode()).hexdigest()[:8]
    return TUNING / "runs" / f"{study_name}-{key}"


def trial_config(base: Config, params: dict, study_name: str, number: int, folder: Path | None = None) -> Config:
    """The config a trial trains: the base with the sampled values, in the study's own runs folder; no refit
    models (a trial is scored out of fold only) and no second backbone (a trial is one run)."""
    return replace(base, **params, name=f"{study_name}-trial{number:04d}",
                   runs_dir=str(folder or TUNING / "runs" / study_name), refit=0, blend="")


def make_objective(base: Config, space: dict, study_name: str, storage_url: str):
    import optuna

    from .cv import run_cv

    def objective(trial):
        folder = study_folder(study_name, storage_url, trial.study._study_id)
        cfg = trial_config(base, suggest(trial, space), study_name, trial.number, folder)
        trial.set_user_attr("config", cfg.to_dict())
        trial.set_user_attr("run_dir", str(cfg.run_dir().resolve()))

        def report(epoch: int, val: float) -> None:
            trial.report(val, epoch)
            trial.set_user_attr("epochs_run", epoch + 1)
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            cv = run_cv(cfg, report=report, progress=False)
        except FkdError as e:   # one line, not Optuna's traceback; the trial ends FAIL
            print(f"trial {trial.number} failed: {e}", file=sys.stderr, flush=True)
            raise
        trial.set_user_attr("per_fold", cv["per_fold"])
        trial.set_user_attr("cv_rmse_no_tta", cv["cv_rmse_no_tta"])
        trial.set_user_attr("epochs", max(r["epochs_run"] for r in cv["fold_results"]))
        trial.set_user_attr("minutes", round(cv["train_seconds"] / 60, 2))
        return cv["cv_rmse"]

    return objective


def run_worker(base: Config, study_name: str, storage_url: str, n_trials: int, timeout: float | None,
               space: dict, objective=None) -> int:
    """Run trials until the study holds n_trials finished ones (or the timeout passes); returns trials run.

    Under the study lock a worker counts the trials, and if a slot is free, creates its trial (`study.ask` inside
    `optimize`, which also takes a trial someone enqueued); the objective's first step lets the lock go. Taking the
    trial outside the lock is not safe on SQLite, which has no row locks: two workers popping the same enqueued
    trial both got it, and the trial the other had enqueued waited for ever while every worker counted it busy
    (a CI run hung so; tests/test_study_lock.py)."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)   # a failed trial says one line itself (objective)
    study = optuna.load_study(study_name=study_name, storage=storage_for(storage_url),
                              sampler=optuna.samplers.TPESampler(seed=base.seed + os.getpid() % 997))
    objective = objective or make_objective(base, space, study_name, storage_url)
    atomic.sweep(TUNING)  # plots and checkpoints a killed worker was writing (its trial ended FAIL, never rerun)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    worker = f"{atomic.HOST}-{os.getpid()}"
    t0, ran, failures = time.time(), 0, 0
    while timeout is None or time.time() - t0 < timeout:
        with StudyLock(study_name, storage_url) as lock:
            optuna.storages.fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            done = sum(t.state in finished for t in trials)
            busy = sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
            if done >= n_trials:
                break
            if done + busy >= n_trials:
                lock.release()
                time.sleep(2.0)              # others hold the remaining slots; one may die and free it
                continue
            mine: list[int] = []

            def run(trial, mine=mine):
                mine.append(trial.number)
                trial.set_user_attr("worker", worker)
                lock.release()
                return objective(trial)

            study.optimize(run, n_trials=1, catch=(FkdError,),
                           callbacks=[MaxTrialsCallback(n_trials, states=finished)])
        ran += 1
        state = next((t.state for t in study.get_trials(deepcopy=False) if mine and t.number == mine[0]), None)
        failures = failures + 1 if state == TrialState.FAIL else 0
        if failures >= 3:
            raise FkdError(f"study {study_name!r}: three trials in a row failed; see the messages above")
    return ran


def tune(base: Config, n_trials: int, study_name: str = DEFAULT_STUDY, storage_url: str | None = None,
         workers: int = 1, timeout: float | None = None, pruner: str = "median", space_file: str | None = None,
         fixed: set[str] = frozenset()):
    """Create the study, run `workers` processes (the cores split between them), write the plots.

    `fixed`: fields the user set on the command line; the study keeps them as set instead of searching them.
    """
    storage_url = storage_url or default_storage()
    space = load_space(space_file or SPACE_FILE)
    held = sorted(set(space) & set(fixed))
    if held:
        print(f"note: {', '.join(held)} set with --set: kept at {', '.join(f'{k}={getattr(base, k)}' for k in held)} "
              f"instead of searched (they are in {space_file or SPACE_FILE})", flush=True)
        space = {k: v for k, v in space.items() if k not in held}
    folds = ",".join(map(str, base.train_folds)) or "all"
    study = create_study(study_name, storage_url, base.seed, pruner,
                         metric=f"CV RMSE, fold(s) {folds} (px{', flip TTA' if base.tta else ''})")
    t0 = time.time()
    if workers <= 1:
        run_worker(base, study_name, storage_url, n_trials, timeout, space)
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        cfg_file = TUNING / f".{study_name}-base.yaml"
        save_config(replace(base, threads=threads), cfg_file)
        space_copy = atomic.write_text(TUNING / f".{study_name}-space.yaml", yaml.safe_dump(space, sort_keys=False))
        cmd = [sys.executable, "-m", "fkd", "tune", "--worker", "--config", str(cfg_file), "--study", study_name,
               "--storage", storage_url, "--trials", str(n_trials), "--space", str(space_copy)] \
            + (["--timeout", str(timeout)] if timeout else [])
        procs = [spawn(cmd) for _ in range(workers)]   # they end with this process (SIGTERM too)
        codes = [p.wait() for p in procs]
        if any(codes):
            print(f"warning: worker exit codes {codes}", file=sys.stderr)
    return study, summarize(study, time.time() - t0)


