"""Training end to end on tiny practice data: it learns, it resumes after a kill, it refuses a foreign run dir."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fkd.config import make_config
from fkd.errors import FkdError
from fkd.runfiles import read_oof
from fkd.train import run_cv

pytestmark = pytest.mark.slow

from conftest import TINY


def test_two_folds_beat_the_mean_keypoint_by_20_percent(trained_run):
    cfg, cv = trained_run
    run = cfg.run_dir()
    assert (run / "cv.json").is_file() and (run / "folds.csv").is_file() and (run / "config.yaml").is_file()
    for k in (0, 1):
        r = cv["fold_results"][k]
        mean_k = json.loads((run / f"fold{k}" / "result.json").read_text())
        assert (run / f"fold{k}" / "best.pt").is_file() and (run / f"fold{k}" / "loss.png").is_file()
        assert mean_k == r
    # each fold against its own mean-keypoint baseline (means of its training folds, per source)
    from fkd.data import load_training_data, make_folds
    from fkd.train import mean_baseline
    data = load_training_data(cfg.data_dir, cfg.limit_train, cfg.seed)
    folds = make_folds(data.source, 2, cfg.seed)
    for k, rmse in enumerate(cv["per_fold"]):
        assert rmse <= 0.8 * mean_baseline(data, folds, [k]), (k, rmse)
    assert set(cv["per_keypoint"]) and np.isfinite(cv["rmse_full"]) and np.isfinite(cv["rmse_common"])


def test_ema_weights_are_as_good_as_the_raw_ones(practice_dir, tmp_path, trained_run):
    """A short run with EMA (decay warmup) ends near the run without it; a plain EMA kept ~16 % of the
    initial weights after these 180 steps and was far worse."""
    _, cv = trained_run
    cfg = make_config(preset="quick", overrides=TINY + ["ema=0.99", "train_folds=0"], data_dir=str(practice_dir),
                      runs_dir=str(tmp_path / "runs"))
    ema = run_cv(cfg, progress=False)
    assert ema["fold_results"][0]["val_rmse"] <= 1.15 * cv["fold_results"][0]["val_rmse"], \
        (ema["fold_results"][0]["val_rmse"], cv["fold_results"][0]["val_rmse"])


def test_other_config_never_reuses_a_run_dir(practice_dir, tmp_path):
    base = dict(data_dir=str(practice_dir), runs_dir=str(tmp_path / "runs"))
    cfg = make_config(preset="quick", overrides=TINY + ["epochs=1", "name=mine", "limit_train=80"], **base)
    run_cv(cfg, progress=False)
    again = run_cv(cfg, progress=False)           # same config: finished folds are reused
    assert again["fold_results"] == json.loads((cfg.run_dir() / "cv.json").read_text())["fold_results"]
    other = make_config(preset="quick", overrides=TINY + ["epochs=1", "name=mine", "limit_train=80", "lr=1e-4"], **base)
    with pytest.raises(FkdError, match="different config .*lr"):
        run_cv(other, progress=False)


def _train_cmd(practice_dir, runs, name):
    return [sys.executable, "-m", "fkd", "train", "--data-dir", str(practice_dir), "--preset", "quick",
            *sum((["--set", s] for s in TINY + ["epochs=4", "limit_train=160", "deterministic=true",
                                                f"runs_dir={runs}", f"name={name}"]), [])]


def test_resume_after_kill_matches_uninterrupted_run(practice_dir, tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "TQDM_DISABLE": "1"}
    ref = subprocess.run(_train_cmd(practice_dir, runs, "ref"), capture_output=True, text=True, env=env)
    assert ref.returncode == 0, ref.stderr[-2000:]
    # kill the second run as soon as fold 0 has saved its second epoch, then rerun the same command
    p = subprocess.Popen(_train_cmd(practice_dir, runs, "killed"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=env)
    metrics = runs / "killed" / "fold0" / "metrics.csv"
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (runs / "killed" / "cv.json").exists()
    resumed = subprocess.run(_train_cmd(practice_dir, runs, "killed"), capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming after epoch" in resumed.stdout
    a = json.loads((runs / "ref" / "cv.json").read_text())
    b = json.loads((runs / "killed" / "cv.json").read_text())
    assert a["cv_rmse"] == b["cv_rmse"] and a["per_fold"] == b["per_fold"]
    for tta in (False, True):
        assert np.array_equal(read_oof(runs / "ref", tta), read_oof(runs / "killed", tta))
    assert not list(Path(runs).rglob("*.tmp*")), "no temp files left behind"
