"""The time budget survives a noisy machine: the probe keeps the fastest of several windows, since a neighbour
only ever slows a window down."""
import time
from types import SimpleNamespace

import numpy as np
import pytest

from fkd.competition.data import load_data
from fkd.config import make_config, replace
from fkd.errors import FkdError
from fkd.learn import budget


def test_the_fastest_window_is_kept():
    calls = iter([0.30, 0.25, 0.05, 0.20])        # a busy neighbour slowed all windows but the third
    assert budget.fastest(lambda: time.sleep(next(calls)), 4) < 0.1


def test_a_probe_beside_a_busy_neighbour_gives_the_quiet_figure(practice_dir, monkeypatch):
    """A neighbour that steals the first windows (each of the first three training windows, warm-up included,
    takes ten times longer) leaves the measured training speed where a quiet probe puts it."""
    d = load_data(practice_dir)
    cfg = make_config(preset="quick", overrides=["model=baseline", "batch_size=8", "aug=0", "threads=1"])
    quiet = budget.probe_speed(cfg, d, windows=3, steps=2)["train_img_s"]     # seconds per image
    delay = 9 * quiet * 16                              # a window of 2 steps x 8 faces, ten times as slow
    real, n = budget.train_one_epoch, [0]

    def busy(*a, **kw):
        n[0] += 1
        if n[0] <= 3:                                  # warm-up and the first two timed windows
            time.sleep(delay)
        return real(*a, **kw)

    monkeypatch.setattr(budget, "train_one_epoch", busy)
    noisy = budget.probe_speed(cfg, d, windows=3, steps=2)["train_img_s"]
    assert noisy < 3 * quiet, (quiet, noisy)           # one window (the first) would read ten times as slow


def _models_for(budget_min, epochs_max, refit=1, refit_max=4, train_img_s=1e-3):
    """What budget_min minutes buy fold 0 of 4 + refit models on 1,000 rows (500 test faces) at a probe's figures."""
    data = SimpleNamespace(images=np.zeros((1000, 1)), test_images=np.zeros((500, 1)))
    cfg = make_config(overrides=[f"budget_min={budget_min}", f"epochs_max={epochs_max}", f"refit={refit}",
                                 f"refit_max={refit_max}", "folds=4", "train_folds=0"])
    s = {"train_img_s": train_img_s, "eval_img_s": train_img_s / 4, "checkpoint_s": 0.01}
    return cfg, data, s, budget.models_for(cfg, data, s)


def test_a_budget_past_the_epoch_cap_buys_more_refit_models_of_the_capped_length():
    cfg, data, s, (epochs, refit, _, bought) = _models_for(budget_min=20, epochs_max=0)
    assert refit == 1 and epochs == bought > 200              # no cap: one long schedule a model
    uncapped = epochs
    cfg, data, s, (epochs, refit, _, bought) = _models_for(budget_min=20, epochs_max=100)
    assert epochs == 100 and refit > 1 and bought == uncapped  # the cap kept, more models trained
    assert budget.epochs_for(replace(cfg, refit=refit), data, s)[0] >= 100           # and they fit the minutes
    assert budget.epochs_for(replace(cfg, refit=refit + 1), data, s)[0] < 100 or refit == cfg.refit_max
    assert refit <= uncapped * 2 // 100 - 1                   # no more models than the uncapped epochs pay for
    assert _models_for(budget_min=20, epochs_max=100, refit_max=2)[3][:2] == (100, 2)   # refit_max is the most
    assert _models_for(budget_min=20, epochs_max=10_000)[3][:2] == (uncapped, 1)     # below the cap: untouched
    assert _models_for(budget_min=20, epochs_max=100, refit=6)[3][:2] == (100, 6)    # never fewer than asked for
    assert _models_for(budget_min=20, epochs_max=100, refit=0)[3][:2] == (100, 0)    # none where none are asked for


def test_a_capped_budget_records_its_refit_models_and_a_rerun_keeps_them(practice_dir, tmp_path, monkeypatch, capsys,
                                                                        trains):
    from fkd.learn.cv import run_cv
    from fkd.learn.runfiles import load_run

    fast = {"train_img_s": 1e-5, "eval_img_s": 1e-5, "checkpoint_s": 1e-3}       # a machine far faster than this
    monkeypatch.setattr(budget, "probe_speed", lambda *_: fast)
    sets = ["model=baseline", "folds=2", "train_folds=0", "refit=1", "batch_size=16", "limit_train=96", "aug=0",
            "budget_min=1", "epochs_max=2", "refit_max=3", "workers=0"]
    cfg = make_config(preset="quick", overrides=sets, data_dir=str(practice_dir), runs_dir=str(tmp_path / "runs"))
    cv = run_cv(cfg, progress=False)
    saved, _ = load_run(cfg.run_dir())
    assert (saved.epochs, saved.refit) == (2, 3)                                   # resolved and recorded
    assert cv["submission"]["models"] == ["fold0", "refit0", "refit1", "refit2"]
    assert [r["epochs_run"] for r in cv["refit_results"]] == [2, 2, 2]
    assert "the cap epochs_max=2: the minutes past it buy 2 more refit model(s)" in capsys.readouterr().out

    def no_probe(*_):
        raise AssertionError("a run that began under a budget must not be timed again")

    monkeypatch.setattr(budget, "probe_speed", no_probe)
    again = run_cv(cfg, progress=False)                                            # the same command again
    assert again["submission"]["models"] == cv["submission"]["models"]
    assert "2 epochs a model, 3 refit model(s), as resolved when" in capsys.readouterr().out
    worker = run_cv(replace(cfg, refit=0), progress=False)     # as a process that trains some folds is started
    assert worker["submission"]["models"] == ["fold0"] and worker["refit_results"] == []


def test_refit_models_on_the_folds_rows_cost_what_those_rows_cost():
    """refit_on=fold: a refit model trains on the fold's rows (750 of 1,000) and predicts its 250 held-out faces once;
    at equal minutes it gets the epochs that buys, more than a model of every row."""
    data = SimpleNamespace(images=np.zeros((1000, 1)), test_images=np.zeros((500, 1)))
    s = {"train_img_s": 1e-3, "eval_img_s": 0.0, "checkpoint_s": 0.0}     # only training costs: exact arithmetic
    for on, refit_rows in (("all", 1000), ("fold", 750)):
        cfg = make_config(overrides=["budget_min=10", "refit=1", "folds=4", "train_folds=0", f"refit_on={on}"])
        epochs, fold_epoch_s = budget.epochs_for(cfg, data, s)
        assert fold_epoch_s == 750 * 1e-3
        assert epochs == int(10 * 60 * 0.9 // ((750 + refit_rows) * 1e-3)), on


def test_the_refit_models_get_the_minutes_the_folds_left_at_the_speed_they_trained():
    """After the folds, the refit models' epochs come from the folds' own seconds (the probe read a slow moment or
    a fast one), with what is left of the budget: more where the folds ran faster than planned, fewer where slower
    but never under half the planned epochs, at most epochs_max; none re-timed without a plan (a resumed run)."""
    data = SimpleNamespace(images=np.zeros((1000, 1)), test_images=np.zeros((500, 1)))
    probe = {"train_img_s": 1e-3, "eval_img_s": 0.0, "checkpoint_s": 0.0}       # only training costs
    cfg = make_config(overrides=["budget_min=10", "refit=1", "folds=4", "train_folds=0", "refit_on=fold",
                                 "epochs_max=0"])
    planned = budget.epochs_for(cfg, data, probe)[0]           # 360: 540 s for two models of 750 rows at 1 ms
    cfg = replace(cfg, epochs=planned)

    def retimed(fold_s_per_img, c=cfg):                         # the fold trained `planned` epochs at that speed
        fold_s = planned * 750 * fold_s_per_img
        plan = {"probe": probe, "started": time.time() - fold_s}
        results = [{"seconds": fold_s, "epochs_run": planned, "n_train": 750}]
        return budget.retime_refits(c, data, plan, results).refit_epochs

    assert planned == 360
    assert abs(retimed(0.8e-3) - (540 - 360 * 750 * 0.8e-3) / (750 * 0.8e-3)) <= 1   # faster: 540 epochs, not 360
    assert 180 < retimed(1.1e-3) < 360                           # slower than planned: fewer, to keep the minutes
    assert retimed(2e-3) == 180                                  # never under half the planned epochs
    assert retimed(0.8e-3, replace(cfg, epochs_max=400)) == 400  # at most the cap
    assert budget.retime_refits(cfg, data, None, []).refit_epochs == 0                # a resumed run: as recorded
    assert "360 epochs a fold model, 540 a refit model" in replace(cfg, refit_epochs=540).models_line(resolved=True)
    with pytest.raises(FkdError, match="refit_epochs must be >= 0"):
        make_config(overrides=["refit_epochs=-1"])


def test_a_budgeted_run_records_the_refit_epochs_it_retimed_and_a_rerun_keeps_them(practice_dir, tmp_path,
                                                                                  monkeypatch, capsys, trains):
    """The probe reads a machine far slower than it is: the fold gets few epochs, the refit model the
    minutes the fold left (at most epochs_max), recorded in config.yaml before it trains; the CV still averages
    both models on fold 0's faces, and the same command again trains nothing."""
    from fkd.learn.cv import run_cv
    from fkd.learn.runfiles import load_run

    monkeypatch.setattr(budget, "probe_speed", lambda *_: {"train_img_s": 0.2, "eval_img_s": 1e-4,
                                                            "checkpoint_s": 1e-3})
    sets = ["model=baseline", "folds=4", "train_folds=0", "refit=1", "refit_on=fold", "batch_size=16",
            "limit_train=96", "aug=0", "budget_min=0.5", "epochs_max=6", "workers=0"]
    cfg = make_config(preset="quick", overrides=sets, data_dir=str(practice_dir), runs_dir=str(tmp_path / "runs"))
    cv = run_cv(cfg, progress=False)
    saved, _ = load_run(cfg.run_dir())
    assert saved.epochs == 1 and saved.refit_epochs == 6              # 30 s at 0.2 s an image buy one epoch
    assert [r["epochs_run"] for r in cv["refit_results"]] == [6] and cv["fold_results"][0]["epochs_run"] == 1
    assert "so the 1 refit model(s) get 6 epochs" in capsys.readouterr().out
    assert cv["submission"]["models"] == ["fold0", "refit0"] and "fold_model_alone" in cv

    monkeypatch.setattr(budget, "retime_refits", lambda *_: (_ for _ in ()).throw(AssertionError("re-timed")))
    again = run_cv(cfg, progress=False)
    assert again["cv_rmse"] == cv["cv_rmse"] and "as resolved when" in capsys.readouterr().out
