"""fkd blend: NNLS weights recover a known mix; a blend with a worse copy keeps the good run and writes a
submission through the lookup table."""
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fkd.infer.blend import _groups, apply_weights, blend, fit_weights
from fkd.learn.runfiles import read_oof, write_oof


def test_weights_recover_a_known_mix():
    rng = np.random.default_rng(0)
    y = rng.uniform(10, 80, (400, 30))
    y[::3, 4:] = np.nan                                   # partly labelled rows are skipped per value
    a, b = y + rng.normal(0, 2, y.shape), y + rng.normal(0, 2, y.shape)
    c = 0.3 * a + 0.7 * b
    w = fit_weights(np.stack([a, b]), c, np.ones(400, bool), np.ones(30, bool))
    assert np.allclose(w, [0.3, 0.7], atol=1e-6)
    src = (np.arange(400) % 2).astype(np.int64)
    groups = _groups("source", src)
    out = apply_weights(np.stack([a, b]), {"source0": np.array([1.0, 0.0]), "source1": np.array([0.0, 1.0])}, groups)
    assert np.array_equal(out[src == 0], a[src == 0], equal_nan=True)
    assert np.array_equal(out[src == 1], b[src == 1], equal_nan=True)


def test_blend_of_a_run_and_a_noisy_copy(trained_run, tmp_path, monkeypatch):
    cfg, cv = trained_run
    good = cfg.run_dir()
    bad = tmp_path / "runs" / "noisy-copy"
    shutil.copytree(good, bad)
    rng = np.random.default_rng(1)
    noisy = {tta: read_oof(bad, tta) + rng.normal(0, 4, (len(read_oof(bad, tta)), 30)).astype(np.float32)
             for tta in (False, True)}
    write_oof(bad, noisy[False], noisy[True])
    info = blend([str(good), str(bad)], per="source", out_dir=tmp_path / "submissions")
    for w in info["weights"].values():
        assert w[0] > 0.85 and w[1] < 0.15, info["weights"]  # the clean run carries the blend
    assert info["cv_rmse"] <= info["cv_single"][good.name] * 1.02
    assert info["cv_single"]["noisy-copy"] > info["cv_single"][good.name]
    sub = pd.read_csv(info["file"])
    lookup = pd.read_csv(cfg.data_dir + "/IdLookupTable.csv")
    assert sub.RowId.tolist() == lookup.RowId.tolist() and sub.Location.notna().all()
    assert "local_score" in info and info["local_score"]["all"]["rmse"] < 10


def test_blend_data_dir_scores_where_the_truth_is_and_refuses_other_training_data(trained_run, tmp_path):
    from fkd.competition.practice import make_practice
    from fkd.errors import FkdError

    cfg, _ = trained_run
    good = cfg.run_dir()
    twin = tmp_path / "runs" / "twin"
    shutil.copytree(good, twin)
    bare = tmp_path / "bare"                     # the same competition as Kaggle ships it: no solution.csv
    shutil.copytree(cfg.data_dir, bare, ignore=shutil.ignore_patterns("solution.csv", ".cache"))
    info = blend([str(good), str(twin)], out_dir=tmp_path / "s1", data_dir=str(bare))
    assert "local_score" not in info and Path(info["file"]).is_file()
    make_practice(tmp_path / "other", seed=99, n_train=60, n_test=10)
    with pytest.raises(FkdError, match="training data differs"):
        blend([str(good), str(twin)], out_dir=tmp_path / "s2", data_dir=str(tmp_path / "other"))


def _fold0_only(src: Path, dst: Path, noise: float, seed: int) -> Path:
    """A copy of a 2-fold run as if it had trained fold 0 only (fold 1's model and OOF rows gone), its OOF
    predictions perturbed by `noise` px."""
    import json

    from fkd.learn.runfiles import read_folds

    shutil.copytree(src, dst)
    shutil.rmtree(dst / "fold1")
    cv = json.loads((dst / "cv.json").read_text())
    cv["folds_trained"] = [0]
    (dst / "cv.json").write_text(json.dumps(cv))
    rng, out = np.random.default_rng(seed), read_folds(dst) != 0
    oofs = []
    for tta in (False, True):
        o = read_oof(dst, tta) + rng.normal(0, noise, (len(out), 30)).astype(np.float32)
        o[out] = np.nan
        oofs.append(o)
    write_oof(dst, *oofs)
    return dst


def test_blend_of_runs_that_trained_fold_0_only_scores_its_faces_and_refuses_mismatched_folds(trained_run, tmp_path):
    from fkd.errors import FkdError
    from fkd.infer.blend import cross_fit_parts, format_blend
    from fkd.learn.cv import training_data
    from fkd.learn.runfiles import read_folds

    cfg, _ = trained_run
    a = _fold0_only(cfg.run_dir(), tmp_path / "runs" / "a", noise=1.0, seed=1)
    b = _fold0_only(cfg.run_dir(), tmp_path / "runs" / "b", noise=1.0, seed=2)
    folds = read_folds(a)
    y = np.where((folds == 0)[:, None], training_data(cfg).keypoints, np.nan)
    oa, ob = read_oof(a, cfg.tta), read_oof(b, cfg.tta)

    info = blend([str(a), str(b)], per="equal", out_dir=tmp_path / "s1")
    assert info["folds_trained"] == [0] and info["faces_scored"] == int((folds == 0).sum())
    assert info["weights"] == {"all": [0.5, 0.5]}
    plain_average = np.sqrt(np.nanmean(((oa + ob) / 2 - y) ** 2))   # NaN outside fold 0 and where unlabelled
    assert info["cv_rmse"] == pytest.approx(plain_average, rel=1e-5)
    assert info["cv_rmse"] < min(info["cv_single"].values())        # two independent noises average down
    assert Path(info["file"]).is_file()
    assert "equal weights: nothing fitted" in format_blend(info) and "cross-fitted" not in format_blend(info)

    # fitted weights: cross-fitted on two halves of fold 0's groups, which split its faces and never a group
    parts = cross_fit_parts(a, folds, [0])
    group = pd.read_csv(a / "folds.csv")["group"].to_numpy()
    assert (parts[0] | parts[1]).sum() == (folds == 0).sum() and not (parts[0] & parts[1]).any()
    assert not set(group[parts[0]]) & set(group[parts[1]]) and parts[0].any() and parts[1].any()
    fitted = blend([str(a), str(b)], per="global", out_dir=tmp_path / "s2")
    assert fitted["cv_rmse"] >= fitted["cv_rmse_in_sample"] - 1e-9
    assert "cross-fitted weights; in-sample" in format_blend(fitted)

    full = cfg.run_dir()                                             # trained both folds: another fold set
    with pytest.raises(FkdError, match="trained different folds"):
        blend([str(a), str(full)], out_dir=tmp_path / "s3")
    c = _fold0_only(cfg.run_dir(), tmp_path / "runs" / "c", noise=1.0, seed=3)
    f = pd.read_csv(c / "folds.csv")
    f["fold"] = 1 - f["fold"]                                        # another split's fold 0
    f.to_csv(c / "folds.csv", index=False)
    with pytest.raises(FkdError, match="its folds differ"):
        blend([str(a), str(c)], out_dir=tmp_path / "s4")


def test_a_blend_says_which_cv_estimates_it():
    """Runs whose refit models trained on every row: the folds' blend is a pessimistic estimate of the submission;
    runs whose refit models held the fold out (refit_on=fold): the blend's CV is the submission's own average."""
    from fkd.config import make_config
    from fkd.infer.blend import estimate

    def runs(on):
        return [(None, make_config(preset="default", overrides=[f"refit_on={on}", f"model={m}"])) for m in
                ("resnet18", "regnety_004")]
    assert "slightly pessimistic" in estimate(runs("all"), [0], "equal")
    honest = estimate(runs("fold"), [0], "equal")
    assert "the submission itself" in honest and "2 refit models" in honest and "pessimistic" not in honest
