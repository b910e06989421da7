"""Optuna tuning: the objective is run_cv; exact trial counts across workers; dead workers; PostgreSQL; dashboard."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import children_of, gone, sigterm_ends_children, unavailable

from fkd.config import make_config

FAST = ["folds=2", "epochs=2", "limit_train=48", "batch_size=16", "model=baseline", "workers=0"]


def tiny_base(practice_dir, **kw):
    return make_config(preset="quick", overrides=FAST, data_dir=str(practice_dir), train_folds=(0,), **kw)


def states(study):
    from collections import Counter
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


def small_space(tmp_path):
    p = tmp_path / "space.yaml"
    p.write_text("lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
                 "dropout: {type: float, low: 0.0, high: 0.5}\n")
    return str(p)


def test_study_runs_run_cv_and_exports(practice_dir, tmp_path, trains):
    from fkd import atomic
    from fkd.learn import study as tune_study
    from fkd.learn import tune
    # a worker killed mid-write left a temp in a FAIL trial's folder, which no later trial revisits
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = Path(f"tuning/runs/t1/t1-trial0099/fold0/.loss.png.{atomic.HOST}-{dead.pid}.x1y2.tmp.png")
    live = stale.with_name(f".loss.png.{atomic.HOST}-{os.getpid()}.x1y2.tmp.png")   # a live worker's
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half"), live.write_bytes(b"half")
    study, summary = tune.tune(tiny_base(practice_dir), n_trials=4, study_name="t1",
                               storage_url=f"sqlite:///{tmp_path}/t1.db", space_file=small_space(tmp_path))
    s = states(study)
    assert s["COMPLETE"] + s["PRUNED"] == 4 and s["FAIL"] == 0
    assert not stale.exists() and live.exists()
    t = next(t for t in study.trials if t.state.name == "COMPLETE")
    assert {"config", "run_dir", "per_fold", "epochs", "minutes"} <= set(t.user_attrs)   # what a reader needs
    assert study.metric_names == ["CV RMSE, fold(s) 0 (px, flip TTA)"]
    assert Path(t.user_attrs["run_dir"], "cv.json").is_file()      # the same run_cv as `fkd train`
    assert t.user_attrs["config"]["lr"] == t.params["lr"]
    path, cfg = tune_study.export_best(study)
    assert path == Path("tuning/best.yaml") and cfg.lr == study.best_params["lr"]
    again = make_config(config_file=str(path))                      # fkd train --config tuning/best.yaml
    assert again.lr == cfg.lr and again.dropout == cfg.dropout
    # exported as the trial ran: its preset (quick) and every field that shapes the weights
    assert cfg.preset == "quick" == again.preset
    assert cfg.fingerprint() == again.fingerprint()
    ran = t.user_attrs["config"] if t.number == study.best_trial.number else study.best_trial.user_attrs["config"]
    assert {k: v for k, v in cfg.to_dict().items() if k not in ("name", "runs_dir", "train_folds", "threads")} == \
        {k: v for k, v in ran.items() if k not in ("name", "runs_dir", "train_folds", "threads")}
    plots = tune_study.write_plots(study)
    assert plots and all(p.read_bytes()[:4] == b"\x89PNG" for p in plots)


def test_set_keys_are_kept_not_searched(practice_dir, tmp_path, capsys):
    from fkd.learn import tune
    base = tiny_base(practice_dir, dropout=0.2)
    study, _ = tune.tune(base, n_trials=1, study_name="fixed", storage_url=f"sqlite:///{tmp_path}/f.db",
                         space_file=small_space(tmp_path), fixed={"dropout"})
    t = study.trials[0]
    assert "dropout" not in t.params and "lr" in t.params
    assert t.user_attrs["config"]["dropout"] == 0.2
    assert "dropout set with --set: kept at dropout=0.2" in capsys.readouterr().out


def _worker_cmd(practice_dir, db, n, space, study="par"):
    base = tiny_base(practice_dir, threads=1)
    from fkd.config import save_config
    cfg = Path(f"{study}-base.yaml")
    save_config(base, cfg)
    return [sys.executable, "-m", "fkd", "tune", "--worker", "--config", str(cfg), "--study", study,
            "--storage", f"sqlite:///{db}", "--trials", str(n), "--space", space]


def test_three_workers_finish_exactly_n_trials(practice_dir, tmp_path, trains):
    from fkd.learn import study as tune_study
    db = tmp_path / "par.db"
    study = tune_study.create_study("par", f"sqlite:///{db}", seed=0)
    cmd = _worker_cmd(practice_dir, db, 7, small_space(tmp_path))
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(3)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errs
    s = states(study)
    assert s["COMPLETE"] + s["PRUNED"] == 7 and s["FAIL"] == 0 and s["RUNNING"] == 0 and s["WAITING"] == 0
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(len(numbers)))             # none lost, none duplicated
    assert len({t.user_attrs["run_dir"] for t in study.trials}) == 7


def test_worker_killed_mid_trial_leaves_fail_and_the_study_completes(practice_dir, tmp_path, trains):
    from fkd.learn import study as tune_study
    db = tmp_path / "kill.db"
    study = tune_study.create_study("kill", f"sqlite:///{db}", seed=0)
    cmd = _worker_cmd(practice_dir, db, 3, small_space(tmp_path), study="kill")
    victim = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill the victim the moment its first trial has started training (it has a run folder, and a trial of
    # seconds cannot end in the milliseconds between seeing that and the kill)
    deadline, running = time.time() + 120, None
    while time.time() < deadline and running is None:
        running = next((t for t in study.get_trials(deepcopy=False)
                        if t.state.name == "RUNNING" and "run_dir" in t.user_attrs), None)
        time.sleep(0.05)
    assert running is not None, "the worker never started a trial"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    survivor = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert survivor.returncode == 0, survivor.stderr[-2000:]
    s = states(study)
    assert study.trials[running.number].state.name == "FAIL"       # the killed trial, and only it
    assert s["FAIL"] == 1 and s["COMPLETE"] + s["PRUNED"] == 3 and s["RUNNING"] == 0


def _pg_cluster():
    """Start a throwaway PostgreSQL cluster from Debian's package (pg_createcluster / pg_ctlcluster)."""
    if not shutil.which("pg_ctlcluster"):
        raise RuntimeError("pg_ctlcluster not found (apt-get install postgresql)")
    ver = sorted(os.listdir("/usr/lib/postgresql"))[-1]
    port = 54329
    subprocess.run(["pg_dropcluster", "--stop", ver, "fkdtest"], capture_output=True)
    subprocess.run(["pg_createcluster", ver, "fkdtest", "-p", str(port)], check=True, capture_output=True)
    subprocess.run(["pg_ctlcluster", ver, "fkdtest", "start"], check=True, capture_output=True)
    for sql in ("CREATE USER fkd WITH PASSWORD 'fkd'", "CREATE DATABASE fkd OWNER fkd"):
        subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-p", str(port), "-c", sql], check=True,
                       capture_output=True)
    return ver, f"postgresql://fkd:fkd@127.0.0.1:{port}/fkd"


@pytest.fixture(scope="module")
def postgres():
    try:
        ver, url = _pg_cluster()
    except (RuntimeError, subprocess.CalledProcessError, OSError) as e:
        unavailable(f"PostgreSQL could not start: {e}")
    yield url
    subprocess.run(["pg_dropcluster", "--stop", ver, "fkdtest"], capture_output=True)


def test_workers_share_a_postgresql_study(practice_dir, tmp_path, postgres, trains):
    from fkd.learn import study as tune_study
    study = tune_study.create_study("pg", postgres, seed=0)
    base = tiny_base(practice_dir, threads=1)
    from fkd.config import save_config
    save_config(base, "pg-base.yaml")
    cmd = [sys.executable, "-m", "fkd", "tune", "--worker", "--config", "pg-base.yaml", "--study", "pg",
           "--storage", postgres, "--trials", "4", "--space", small_space(tmp_path)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    s = states(study)
    assert s["COMPLETE"] + s["PRUNED"] == 4 and s["FAIL"] == 0


def test_dashboard_serves_the_study(practice_dir, tmp_path):
    from fkd.learn import study as tune_study
    db = tmp_path / "dash.db"
    url = f"sqlite:///{db}"
    tune_study.create_study("dash", url, seed=0, metric="CV RMSE, fold(s) 0 (px)")
    import json
    import socket
    import urllib.request
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    proc = tune_study.dashboard(url, port)                   # the real optuna-dashboard, headless
    try:
        body, deadline = None, time.time() + 60
        while body is None and time.time() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2).read()
            except OSError:
                time.sleep(0.3)
        assert body is not None, "optuna-dashboard did not answer"
        summaries = json.loads(body)["study_summaries"]
        assert [s["study_name"] for s in summaries] == ["dash"]
        detail = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/studies/{summaries[0]['study_id']}", timeout=5).read())
        assert detail["objective_names"] == ["CV RMSE, fold(s) 0 (px)"]     # the axis is named, not "Objective 0"
    finally:
        proc.terminate()
        proc.wait(10)
    # a missing study database is a clear error, not an empty file
    from fkd.errors import FkdError
    missing = tmp_path / "nope.db"
    with pytest.raises(FkdError, match="no study database"):
        tune_study.dashboard(f"sqlite:///{missing}", 8099)
    assert not missing.exists()


def test_fkd_dashboard_takes_its_child_with_it_on_sigterm(tmp_path):
    """Stopped with SIGTERM (a supervisor, `kill`), `fkd dashboard` ends optuna-dashboard too: the port is free."""
    import socket
    import urllib.request

    from fkd.learn import study as tune_study
    url = f"sqlite:///{tmp_path / 'd.db'}"
    tune_study.create_study("sig", url, seed=0)
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    fkd_proc = subprocess.Popen([sys.executable, "-m", "fkd", "dashboard", "--storage", url, "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, up = time.time() + 60, False
        while not up and time.time() < deadline:
            try:
                up = bool(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2).read())
            except OSError:
                time.sleep(0.3)
        assert up, "optuna-dashboard did not answer"
        kids = children_of(fkd_proc.pid)
        assert kids, "fkd dashboard started no child"
        fkd_proc.send_signal(signal.SIGTERM)
        fkd_proc.wait(20)
        assert all(gone(k) for k in kids), "optuna-dashboard outlived fkd dashboard"
        with socket.socket() as sk, pytest.raises(ConnectionRefusedError):
            sk.connect(("127.0.0.1", port))                  # nobody listens on the port any more
    finally:
        fkd_proc.kill()


def test_fkd_tune_takes_its_workers_with_it_on_sigterm(practice_dir, tmp_path, trains):
    cmd = [sys.executable, "-m", "fkd", "tune", "--data-dir", str(practice_dir), "--preset", "quick",
           *[a for s in FAST + ["epochs=50"] for a in ("--set", s)], "--workers", "2", "--trials", "4",
           "--storage", f"sqlite:///{tmp_path / 'w.db'}", "--study", "sig", "--space", small_space(tmp_path)]
    sigterm_ends_children(cmd, 2)                        # both tune workers end with fkd tune


def test_a_second_study_of_the_same_name_trains_its_own_trials(practice_dir, tmp_path, capsys, trains):
    """The default study `fkd` again after `rm tuning/fkd.db` (or on another --storage): its trials get folders of
    their own instead of meeting the first study's and failing as 'made with a different config'."""
    from fkd.learn import tune
    base = tiny_base(practice_dir)
    for db in ("first.db", "second.db"):
        study, summary = tune.tune(base, n_trials=2, study_name="fkd", storage_url=f"sqlite:///{tmp_path / db}",
                                   space_file=small_space(tmp_path))
        assert states(study)["FAIL"] == 0, capsys.readouterr().err
    assert len(list(Path("tuning/runs").glob("fkd-*"))) == 2


def test_a_failed_trial_says_one_line(practice_dir, tmp_path, capsys):
    """A trial that fails (here: its data folder does not exist) prints one line, not Optuna's traceback, and
    three in a row stop the study with one line."""
    from fkd.errors import FkdError
    from fkd.learn import tune
    base = tiny_base(tmp_path / "missing")
    with pytest.raises(FkdError, match="three trials in a row failed"):
        tune.tune(base, n_trials=3, study_name="bad", storage_url=f"sqlite:///{tmp_path / 'b.db'}",
                  space_file=small_space(tmp_path))
    err = capsys.readouterr().err
    assert err.count("failed: ") == 3 and "no such folder" in err and "Traceback" not in err


def test_every_value_of_the_shipped_space_is_a_valid_trial_of_every_preset():
    """A trial draws any value of tuning/space.yaml on top of any preset: none may be refused (BaselineNet in the
    model choices failed every trial that drew it under the default preset, whose head is simcc)."""
    from fkd.config import PRESETS
    from fkd.learn.tune import load_space, trial_config
    space = load_space()
    for preset in PRESETS:
        base = make_config(preset=preset)
        for name, spec in space.items():
            values = spec["choices"] if spec["type"] == "categorical" else [spec["low"], spec["high"]]
            for v in values:
                assert getattr(trial_config(base, {name: v}, "s", 0), name) == v
