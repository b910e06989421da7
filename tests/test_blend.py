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
