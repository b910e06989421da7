"""Run files have one reader and writer (fkd/runfiles.py); a saved config reloads exactly as saved; readers of a
run's out-of-fold arrays load the rows the run was trained on, also with limit_train."""
import numpy as np
import pytest

from fkd.competition.data import load_data, load_training_data
from fkd.config import PRESETS, make_config, training_fields
from fkd.errors import FkdError
from fkd.learn import runfiles


def test_a_saved_config_reloads_as_saved(tmp_path):
    cfg = make_config(preset="quick", overrides=["lr=3e-3", "epochs=2"], runs_dir=str(tmp_path))
    runfiles.save_run_config(cfg, tmp_path, {"fingerprint": cfg.fingerprint()})
    again, meta = runfiles.load_run(tmp_path)
    assert again == cfg and again.preset == "quick" and meta["fingerprint"] == cfg.fingerprint()
    # the default preset's values must not leak in (default trains 16 epochs with an L1 loss, quick 6 with MSE)
    assert again.loss == "mse" != PRESETS["default"]["loss"]


def test_text_fields_take_words_yaml_would_read_as_booleans(tmp_path):
    assert make_config(overrides=["amp=off"]).amp == "off"
    (tmp_path / "c.yaml").write_text("amp: off\n")
    assert make_config(config_file=str(tmp_path / "c.yaml")).amp == "off"


def test_epochs_asked_for_by_name_win_over_the_default_time_budget(tmp_path):
    cfg = make_config()
    assert cfg.preset == "default" and cfg.budget_min > 0          # the default fills its minutes here
    assert "epochs" not in training_fields(cfg)                     # resolved per machine, not in its name
    assert make_config(overrides=["epochs=3"]).budget_min == 0      # --set epochs=3 means 3 epochs
    (tmp_path / "c.yaml").write_text("epochs: 5\n")
    assert make_config(config_file=str(tmp_path / "c.yaml")).budget_min == 0
    both = make_config(overrides=["epochs=3", "budget_min=5"])       # both named: the budget decides
    assert both.budget_min == 5 and both.epochs == 3
    assert make_config(overrides=["budget_min=0"]).epochs == PRESETS["default"]["epochs"]


def test_out_of_fold_arrays_round_trip_with_named_fields(tmp_path):
    rng = np.random.default_rng(0)
    plain, tta = rng.normal(size=(2, 7, 30)).astype(np.float32)
    runfiles.write_oof(tmp_path, plain, tta)
    assert np.array_equal(runfiles.read_oof(tmp_path, tta=False), plain)
    assert np.array_equal(runfiles.read_oof(tmp_path, tta=True), tta)
    idx = np.array([4, 1, 6])
    runfiles.write_fold_predictions(tmp_path, idx, plain[:3], tta[:3])
    f = runfiles.read_fold_predictions(tmp_path)
    assert np.array_equal(f["idx"], idx) and np.array_equal(f["mirrored"], tta[:3])
    with pytest.raises(FkdError, match="no oof.npz"):
        runfiles.read_oof(tmp_path / "nothing", tta=True)


def test_fkd_errors_on_a_run_trained_with_limit_train(practice_dir, tmp_path):
    """`fkd errors` once loaded every row while the run's arrays held limit_train rows (a shape error)."""
    from fkd.report.error_analysis import error_report

    cfg = make_config(preset="quick", overrides=["limit_train=100"], data_dir=str(practice_dir),
                      runs_dir=str(tmp_path), name="limited")
    run = cfg.run_dir()
    run.mkdir()
    runfiles.save_run_config(cfg, run, {"data_dir": str(practice_dir)})
    rows = load_training_data(practice_dir, cfg.limit_train, cfg.fold_seed())
    assert len(rows.images) == 100 < len(load_data(practice_dir).images)
    truth = np.nan_to_num(rows.keypoints, nan=48.0)
    off = np.zeros_like(truth)
    off[:, 20:22] = 2.0                                        # the nose tip 2 px off, on every row
    runfiles.write_oof(run, truth, truth + off)
    r = error_report(run, worst=4, tta=True)
    assert r["per_keypoint"]["full"]["nose_tip"] == pytest.approx(2.0)
    assert r["per_keypoint"]["full"]["left_eye_center"] == pytest.approx(0.0)
    assert r["per_keypoint"]["common"]["left_eye_center"] == pytest.approx(0.0)   # rows line up: no error


def test_fkd_runs_lists_every_run_best_first(tmp_path, capsys):
    import json

    from fkd.cli import main
    from fkd.kaggle import ledger
    for name, model, cv in (("worse", "resnet34", 2.2), ("better", "resnet18", 1.9), ("unfinished", "baseline", None)):
        cfg = make_config(preset="default", overrides=[f"model={model}", f"name={name}", "folds=4"], runs_dir="runs")
        cfg.run_dir().mkdir(parents=True)
        runfiles.save_run_config(cfg, cfg.run_dir(), {})
        if cv is not None:
            (cfg.run_dir() / "cv.json").write_text(json.dumps({"cv_rmse_no_tta": cv + 0.05, "cv_rmse_tta": cv,
                                                               "train_seconds": 600}))
            for k in range(4):
                (cfg.run_dir() / f"fold{k}").mkdir()
                (cfg.run_dir() / f"fold{k}" / "result.json").write_text("{}")
    ledger.record("submissions/x.csv", run="better", status="COMPLETE", destination="kaggle.com", public_score=1.95)
    assert main(["runs"]) == 0
    lines = capsys.readouterr().out.splitlines()[2:]
    assert [ln.split()[0] for ln in lines] == ["better", "worse", "unfinished"]
    assert "kaggle.com (1.9500)" in lines[0] and "4/4" in lines[0] and "10.0" in lines[0]
    assert "0/4" in lines[2]


@pytest.mark.parametrize("field,typo,suggestion", [("model", "resnet81", "resnet18"), ("scheduler", "cosin", "cosine"),
                                                  ("head", "fpn", "fpn4")])
def test_names_are_checked_before_anything_is_written(practice_dir, tmp_path, field, typo, suggestion, capsys):
    from fkd.cli import main
    with pytest.raises(FkdError, match=f"unknown {field} '{typo}' \\(did you mean '{suggestion}'\\?\\)"):
        make_config(overrides=[f"{field}={typo}"])
    code = main(["train", "--data-dir", str(practice_dir), "--set", f"{field}={typo}",
                 "--set", f"runs_dir={tmp_path / 'runs'}"])
    assert code == 2 and f"did you mean '{suggestion}'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()                                # no config.yaml, no run folder


def test_the_presets_keep_the_fingerprints_their_runs_were_named_with():
    """Runs made before a change of code are found, resumed and reused only while the fingerprint of the same
    config stays the same: these are the names runs of each preset carry (README, docs/ablations.md). Runs from
    before grouped folds split by rows: with folds_by=rows they keep their names; a saved config without the
    field reads back as rows."""
    from fkd.config import config_from_dict, make_config

    named = {"quick": "389b59f0", "default": "2b644a12", "best": "7c232373", "baseline": "e339ce45"}
    before = ["folds_by=rows", "fold_weights=best", "aug_end=-1"]   # what the presets were before grouped folds
    before_of = {"default": [*before, "model=regnety_004", "folds=4", "refit_on=all", "budget_min=27"]}   # its before
    assert {p: make_config(preset=p, overrides=before_of.get(p, before)).fingerprint()[:8] for p in named} == named
    old = make_config(preset="default", overrides=before_of["default"]).to_dict()
    for later in ("folds_by", "group_z", "dup_labels", "fold_weights", "refit", "tta_shift", "tta_scale", "tta_rotate",
                  "swa", "rotate", "scale", "cutout", "aug_end", "pseudo", "refit_on"):
        del old[later]                                                    # a config.yaml written before them
    assert config_from_dict(old).folds_by == "rows" and config_from_dict(old).fingerprint()[:8] == "2b644a12"
    assert make_config(preset="default").folds_by == "groups"              # new runs: grouped folds
    assert make_config(preset="default").fingerprint()[:8] not in named.values()


def test_the_presets_submit_the_tta_views_they_were_measured_with():
    """default: the flip + views shifted, zoomed and turned by +-14 degrees (the turns decided on held-out faces,
    docs/ablations.md); best: shifted and zoomed only (not measured with turns). A preset edit that drops a view
    set changes what `make submit` uploads, and the README's figures with it."""
    from fkd.competition.keypoints import views_of

    views = {p: make_config(preset=p) for p in ("default", "best")}
    assert {p: len(views_of(c)) for p, c in views.items()} == \
        {"default": 8, "best": 6}
    assert views["default"].tta_rotate == 14
