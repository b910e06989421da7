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
from conftest import TINY

from fkd.config import make_config
from fkd.errors import FkdError
from fkd.learn.cv import run_cv
from fkd.learn.runfiles import read_oof


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
    from fkd.competition.data import load_training_data
    from fkd.competition.folds import make_folds
    from fkd.competition.metric import mean_baseline
    data = load_training_data(cfg.data_dir, cfg.limit_train, cfg.fold_seed())
    folds = make_folds(data.source, 2, cfg.fold_seed())
    for k, rmse in enumerate(cv["per_fold"]):
        assert rmse <= 0.8 * mean_baseline(data.keypoints, data.source, folds, [k]), (k, rmse)
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


def test_resume_after_kill_matches_uninterrupted_run(practice_dir, tmp_path, trains):
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


def test_a_budgeted_run_records_its_epochs_and_never_retimes(practice_dir, tmp_path, monkeypatch, capsys, trains):
    import fkd.learn.budget
    from fkd.learn.runfiles import load_run
    base = dict(data_dir=str(practice_dir), runs_dir=str(tmp_path / "runs"))
    sets = ["model=baseline", "folds=2", "batch_size=16", "limit_train=96", "aug=0", "budget_min=0.4",
            "epochs=999", "workers=0"]
    cfg = make_config(preset="quick", overrides=sets + ["train_folds=0"], **base)
    cv = run_cv(cfg, progress=False)
    saved, _ = load_run(cfg.run_dir())
    assert 1 <= saved.epochs < 999 and saved.budget_min == 0.4             # resolved, and recorded
    assert cv["fold_results"][0]["epochs_run"] == saved.epochs
    assert "epochs a model x 1 fold(s) (measured here" in capsys.readouterr().out

    def no_probe(*_):
        raise AssertionError("a run that began under a budget must not be timed again")

    monkeypatch.setattr(fkd.learn.budget, "probe_speed", no_probe)
    cfg_all = make_config(preset="quick", overrides=sets, **base)         # the same run, now every fold
    assert cfg_all.run_dir() == cfg.run_dir()                               # epochs are not in its name
    cv = run_cv(cfg_all, progress=False)
    assert [r["epochs_run"] for r in cv["fold_results"]] == [saved.epochs] * 2
    assert "as resolved when" in capsys.readouterr().out


@pytest.mark.parametrize("head", ["fpn4", "simcc"])
def test_every_new_head_learns_on_practice_faces(practice_dir, tmp_path, head, trains):
    """Trained through the normal run_cv path (masked loss, source-aware outputs, flip augmentation and TTA),
    each head ends well below the mean keypoint on the held-out fold."""
    cfg = make_config(preset="quick", overrides=TINY + [f"head={head}", "train_folds=0", "epochs=8", "aug=0.5"],
                      data_dir=str(practice_dir), runs_dir=str(tmp_path / "runs"))
    cv = run_cv(cfg, progress=False)
    assert cv["cv_rmse_tta"] <= 0.8 * cv["mean_keypoint_rmse"], (head, cv["cv_rmse_tta"], cv["mean_keypoint_rmse"])
    assert np.isfinite(cv["tta_flip_const"])


def test_swa_keeps_the_average_of_the_last_epochs_weights(practice_dir, tmp_path, monkeypatch, trains):
    """--set swa=0.5: the fold keeps the average of the weights at the end of each of its last half of epochs."""
    import torch

    from fkd.learn import loop
    cfg = make_config(preset="quick", overrides=TINY + ["epochs=4", "swa=0.5", "train_folds=0", "model=baseline",
                                                        "fold_weights=last", "limit_train=96"],
                      data_dir=str(practice_dir), runs_dir=str(tmp_path / "runs"))
    ends, real = [], loop.FoldState.swa_step

    def record(self, cfg, epoch):
        ends.append({k: v.detach().clone().float() for k, v in self.model.state_dict().items()})
        real(self, cfg, epoch)
    monkeypatch.setattr(loop.FoldState, "swa_step", record)
    run_cv(cfg, progress=False)
    kept = torch.load(cfg.run_dir() / "fold0" / "best.pt", weights_only=False)["model"]
    for k in ("features.0.weight", "features.3.bias"):
        key = next(n for n in kept if n.endswith(k))
        expect = (ends[2][key] + ends[3][key]) / 2                   # epochs 3 and 4 of 4
        assert torch.allclose(kept[key].float(), expect, atol=1e-6), key
