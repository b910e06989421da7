"""Optuna tuning: the objective is `run_cv(cfg)` with a few fields overridden; no second training path.

    $ fkd tune --data-dir competition/data/practice --trials 20 --workers 2 --set epochs=6
    $ fkd tune --export            # tuning/best.yaml (then checked on all folds); `fkd train --config tuning/best.yaml`
    $ fkd dashboard                # optuna-dashboard on the study

The search space is tuning/space.yaml. Storage: an RDB URL (default sqlite:///<abs>/tuning/fkd.db) with
heartbeats, so a trial whose worker died becomes FAIL; the study is created once before any worker starts.
Each worker takes a trial under a lock (a file lock on one machine, a PostgreSQL advisory lock across
machines) and runs it with `study.optimize(n_trials=1)`: the study ends with exactly N
finished (COMPLETE or PRUNED) trials, none duplicated, and a dead worker's trial is replaced.
Validation RMSE is reported per epoch on the first searched fold; MedianPruner (or Hyperband) prunes.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from . import atomic
from .config import Config, FIELD_TYPES, config_from_dict, replace, save_config
from .errors import FkdError

TUNING = Path("tuning")
SPACE_FILE = TUNING / "space.yaml"
DEFAULT_STUDY = "fkd"


def default_storage() -> str:
    return f"sqlite:///{(TUNING / 'fkd.db').resolve()}"


def load_space(path: str | Path = SPACE_FILE) -> dict:
    path = Path(path)
    if not path.is_file():
        from .competition import ROOT
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


def storage_for(url: str):
    import optuna

    if url.startswith(("sqlite", "postgresql", "mysql")):
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url, heartbeat_interval=5, grace_period=20,
                                          engine_kwargs={"pool_pre_ping": True})
    raise FkdError(f"--storage {url!r}: use sqlite:///ABS/PATH.db or postgresql://user:pass@host/db")


def create_study(name: str, storage_url: str, seed: int, pruner: str = "median"):
    """Create the study once (before any worker starts) or load it."""
    import optuna

    p = (optuna.pruners.HyperbandPruner() if pruner == "hyperband"
         else optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    return optuna.create_study(study_name=name, storage=storage_for(storage_url), direction="minimize",
                               sampler=optuna.samplers.TPESampler(seed=seed), pruner=p, load_if_exists=True)


class StudyLock:
    """Mutual exclusion between workers: a PostgreSQL advisory lock, else a file lock under tuning/.

    `release()` is idempotent and may come before the `with` block ends: a worker takes its trial under the lock
    and lets go the moment the trial exists (the objective's first step), not after training it."""

    def __init__(self, study_name: str, storage_url: str):
        self.study_name, self.storage_url, self._release = study_name, storage_url, None

    def __enter__(self) -> "StudyLock":
        if self.storage_url.startswith("postgresql"):
            import sqlalchemy

            key = int(hashlib.sha1(self.study_name.encode()).hexdigest()[:15], 16)
            eng = sqlalchemy.create_engine(self.storage_url)
            conn = eng.connect()
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})

            def release():
                try:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                finally:
                    conn.close()
                    eng.dispose()
        else:
            TUNING.mkdir(exist_ok=True)
            f = open(TUNING / f".{self.study_name}.lock", "w")
            fcntl.flock(f, fcntl.LOCK_EX)

            def release():
                fcntl.flock(f, fcntl.LOCK_UN)
                f.close()
        self._release = release
        return self

    def release(self) -> None:
        release, self._release = self._release, None
        if release:
            release()

    def __exit__(self, *exc) -> None:
        self.release()


def trial_config(base: Config, params: dict, study_name: str, number: int) -> Config:
    """The config a trial trains: the base with the sampled values, in the study's own runs folder."""
    return replace(base, **params, name=f"{study_name}-trial{number:04d}", runs_dir=str(TUNING / "runs" / study_name))


def make_objective(base: Config, space: dict, study_name: str):
    import optuna

    from .train import run_cv

    def objective(trial):
        cfg = trial_config(base, suggest(trial, space), study_name, trial.number)
        trial.set_user_attr("config", cfg.to_dict())
        trial.set_user_attr("run_dir", str(cfg.run_dir().resolve()))

        def report(epoch: int, val: float) -> None:
            trial.report(val, epoch)
            trial.set_user_attr("epochs_run", epoch + 1)
            if trial.should_prune():
                raise optuna.TrialPruned()

        cv = run_cv(cfg, report=report, progress=False)
        trial.set_user_attr("per_fold", cv["per_fold"])
        trial.set_user_attr("cv_rmse_no_tta", cv["cv_rmse_no_tta"])
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

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage_for(storage_url),
                              sampler=optuna.samplers.TPESampler(seed=base.seed + os.getpid() % 997))
    objective = objective or make_objective(base, space, study_name)
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

            def run(trial):
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
    study = create_study(study_name, storage_url, base.seed, pruner)
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
        procs = [subprocess.Popen(cmd) for _ in range(workers)]
        codes = [p.wait() for p in procs]
        if any(codes):
            print(f"warning: worker exit codes {codes}", file=sys.stderr)
    return study, summarize(study, time.time() - t0)


def summarize(study, seconds: float | None = None) -> dict:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    count = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    epochs = sum(int(t.user_attrs.get("epochs_run", 0)) for t in trials if t.state in (TrialState.COMPLETE,
                                                                                      TrialState.PRUNED))
    epochs_full = sum(int(t.user_attrs.get("config", {}).get("epochs", 0))
                      for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
    out = {"trials": len(trials), "states": count, "first_fold_epochs_run": epochs,
           "first_fold_epochs_without_pruning": epochs_full, "seconds": seconds}
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if done:
        out["best_value"], out["best_params"] = study.best_value, study.best_params
    return out


def write_plots(study) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    from .plots import save

    out = []
    for name, fn in (("history", ovm.plot_optimization_history), ("importance", ovm.plot_param_importances)):
        try:
            ax = fn(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # too few finished trials for this plot
        fig = ax.figure if hasattr(ax, "figure") else plt.gcf()
        out.append(save(fig, TUNING / f"{study.study_name}-{name}.png", bbox_inches="tight"))
    return out


def export_best(study, path: Path = TUNING / "best.yaml") -> tuple[Path, Config]:
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not done:
        raise FkdError(f"study {study.study_name!r} has no completed trial to export yet; run `fkd tune` first")
    best = min(done, key=lambda t: t.value)
    saved = {k: v for k, v in best.user_attrs["config"].items()
             if k not in ("name", "runs_dir", "train_folds", "threads")}   # where and how it ran, not what
    cfg = config_from_dict(saved, where=f"study {study.study_name!r} trial {best.number}")
    save_config(cfg, path, {"study": study.study_name, "trial": best.number, "value": best.value})
    return path, cfg


def dashboard(storage_url: str | None, port: int, host: str = "127.0.0.1") -> subprocess.Popen:
    storage_url = storage_url or default_storage()
    if storage_url.startswith("sqlite:///") and not Path(storage_url[len("sqlite:///"):]).is_file():
        raise FkdError(f"no study database at {storage_url[len('sqlite:///'):]}; run `fkd tune` (make tune) first")
    exe = Path(sys.executable).parent / "optuna-dashboard"
    cmd = [str(exe) if exe.is_file() else "optuna-dashboard", storage_url, "--host", host, "--port", str(port)]
    return subprocess.Popen(cmd)
