"""An Optuna study's storage and what is read from it: storage URLs, the study lock, the summary, plots, the
exported best config, optuna-dashboard.

    $ fkd tune --export            # tuning/best.yaml (then checked on all folds); `fkd train --config tuning/best.yaml`
    $ fkd dashboard                # optuna-dashboard on the study

Storage: an RDB URL (default sqlite:///<abs>/tuning/fkd.db) with heartbeats, so a trial whose worker died
becomes FAIL; the study is created once before any worker starts.
"""
from __future__ import annotations

import fcntl
import hashlib
import subprocess
import sys
from pathlib import Path

from ..children import spawn
from ..config import Config, config_from_dict, save_config
from ..errors import FkdError

TUNING = Path("tuning")
DEFAULT_STUDY = "fkd"


def default_storage() -> str:
    return f"sqlite:///{(TUNING / 'fkd.db').resolve()}"


def storage_for(url: str):
    import optuna

    if url.startswith(("sqlite", "postgresql", "mysql")):
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url, heartbeat_interval=5, grace_period=20,
                                          engine_kwargs={"pool_pre_ping": True})
    raise FkdError(f"--storage {url!r}: use sqlite:///ABS/PATH.db or postgresql://user:pass@host/db")


def create_study(name: str, storage_url: str, seed: int, pruner: str = "median", metric: str = "CV RMSE (px)"):
    """Create the study once (before any worker starts) or load it; `metric` names its objective (what the
    dashboard's axes say instead of "Objective 0")."""
    import optuna

    p = (optuna.pruners.HyperbandPruner() if pruner == "hyperband"
         else optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    study = optuna.create_study(study_name=name, storage=storage_for(storage_url), direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=seed), pruner=p, load_if_exists=True)
    study.set_metric_names([metric])
    return study


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

    from ..plots import save

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
    return spawn(cmd)


def export_and_check(study_name: str, storage_url: str, data_dir: str | None, check: bool) -> tuple[Path, dict | None]:
    """tuning/best.yaml from the study's best trial and, unless check is False, its CV on every fold (a run named
    <study>-best-allfolds): a trial searched on one fold is only adopted on all of them."""
    import optuna

    from ..config import replace
    from .cv import format_cv, run_cv

    path, cfg = export_best(optuna.load_study(study_name=study_name, storage=storage_for(storage_url)))
    print(f"best trial of {study_name!r} -> {path}")
    if not check:
        return path, None
    cfg = replace(cfg, data_dir=data_dir or cfg.data_dir, name=f"{study_name}-best-allfolds")
    print(f"checking it on all {cfg.folds} folds: {cfg.run_dir()}", flush=True)
    cv = run_cv(cfg)
    print(format_cv(cv))
    return path, cv


def format_summary(summary: dict) -> str:
    lines = [f"trials {summary['trials']}: " + ", ".join(f"{k.lower()} {v}" for k, v in summary["states"].items() if v),
             f"first-fold epochs run {summary['first_fold_epochs_run']} (without pruning: "
             f"{summary['first_fold_epochs_without_pruning']})"]
    if "best_value" in summary:
        lines.append(f"best CV RMSE {summary['best_value']:.4f} with {summary['best_params']}")
    return "\n".join(lines)
