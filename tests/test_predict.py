"""Submissions: lookup order, clipping, no NaN, flip TTA, fold ensemble, atomic writes, the ledger."""
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fkd.competition.data import load_data
from fkd.competition.keypoints import flip_keypoints
from fkd.errors import FkdError
from fkd.infer.predict import predict_run
from fkd.infer.submission import submission_frame, write_csv
from fkd.kaggle import ledger
from fkd.learn.models import predict_images


def test_rows_follow_the_lookup_table_clipped_and_finite(practice_dir, tmp_path):
    d = load_data(practice_dir)
    pred = np.random.default_rng(0).uniform(-10, 110, (len(d.test_ids), 30)).astype(np.float32)
    sub = submission_frame(pred, d)
    lk = pd.read_csv(practice_dir / "IdLookupTable.csv")
    assert list(sub.RowId) == list(lk.RowId)
    assert sub.Location.between(0, 96).all() and sub.Location.notna().all()
    assert (sub.Location == 0).any() and (sub.Location == 96).any()  # clipped, not dropped
    i = 5
    assert sub.Location[i] == np.clip(pred[d.lookup.img[i], d.lookup.col[i]], 0, 96)
    pred[0, 0] = np.nan
    with pytest.raises(FkdError, match="NaN"):
        submission_frame(pred, d)


class Symmetrized(torch.nn.Module):
    """eq(x) = (m(x) + flip(m(mirror x))) / 2 is exactly flip-equivariant for any model m."""

    def __init__(self, base, c):
        super().__init__()
        self.base, self.c = base, c

    def forward(self, x, source, target=None):
        from fkd.competition.keypoints import flip_keypoints_torch
        p = self.base(x, source)["preds"]
        pf = self.base(x.flip(-1), source)["preds"]
        return {"preds": (p + flip_keypoints_torch(pf, self.c)) / 2}


def test_flip_equivariant_model_passes_tta_unchanged():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (6, 96, 96), dtype=np.uint8)
    src = np.array([0, 1, 0, 1, 0, 1])
    from fkd.learn.models import create_model
    torch.manual_seed(0)
    m = Symmetrized(create_model("baseline", dropout=0.0), 95.0).eval()
    dev = torch.device("cpu")
    plain = predict_images(m, imgs, src, dev, None, tta=False, channels_last=False)
    tta = predict_images(m, imgs, src, dev, None, tta=True, flip_const=95.0, channels_last=False)
    assert np.allclose(plain, tta, atol=1e-4)
    # and the plain prediction of a mirrored image is the mirrored prediction
    mirrored = predict_images(m, imgs[:, :, ::-1].copy(), src, dev, None, channels_last=False)
    assert np.allclose(flip_keypoints(mirrored, 95.0), plain, atol=1e-4)


def test_kill_during_writing_leaves_no_partial_csv(tmp_path):
    out = tmp_path / "sub.csv"
    code = f"""
import sys, pandas as pd, numpy as np
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
import fkd.atomic as a
orig = a.Path.write_bytes
def slow(self, data):
    with open(self, 'wb') as f:
        f.write(data[:100]); f.flush()
        print('writing', flush=True)
        import time; time.sleep(30)
        f.write(data[100:])
a.Path.write_bytes = slow
from fkd.infer.submission import write_csv
write_csv(pd.DataFrame({{'RowId': np.arange(1, 5000), 'Location': np.ones(4999)}}), a.Path({str(out)!r}))
"""
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not out.exists()                      # never a partial file under the final name
    assert list(tmp_path.glob(".sub.csv.*.tmp*"))   # the killed writer's temp...
    write_csv(pd.DataFrame({"RowId": [1, 2], "Location": [1.0, 2.0]}), out)
    assert out.read_text() == "RowId,Location\n1,1.000000\n2,2.000000\n"
    assert not list(tmp_path.glob(".*.tmp*"))    # ...is swept by the next write into its folder


def test_an_atomic_write_gets_the_mode_a_plain_write_would(tmp_path):
    """mkstemp makes its files 0600: a run folder or submission shared with a team (or served by a web server)
    would be unreadable to them. Written then renamed, a file still gets 0666 less the umask, as open() gives."""
    import os
    import stat

    import fkd.atomic as a
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    for mask in (0o022, 0o077):
        old = os.umask(mask)
        try:
            a.UMASK = mask
            a.write_text(tmp_path / f"atomic-{mask:o}.txt", "x")
        finally:
            os.umask(old)
            a.UMASK = old
        assert stat.S_IMODE((tmp_path / f"atomic-{mask:o}.txt").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE(a.write_text(tmp_path / "atomic.txt", "x").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_predict_a_trained_run(practice_dir, tmp_path, trained_run):
    cfg, cv = trained_run
    assert cv["cv_rmse_tta"] <= cv["cv_rmse_no_tta"]      # flip TTA helps out of fold
    info = predict_run(cfg.run_dir())
    f = Path(info["file"])
    assert f.parent == Path("submissions") and f.is_file() and f.with_suffix(".json").is_file()
    side = json.loads(f.with_suffix(".json").read_text())
    assert side["tta"] is True and side["config"]["model"] == "resnet18" and side["cv_rmse"] == cv["cv_rmse_tta"]
    assert {"data_hash", "git_commit", "fkd_version", "run"} <= set(side)
    sub = pd.read_csv(f)
    assert list(sub.columns) == ["RowId", "Location"]
    assert list(sub.RowId) == list(pd.read_csv(practice_dir / "SampleSubmission.csv").RowId)
    local = info["local_score"]["all"]["rmse"]
    assert local < cv["mean_keypoint_rmse"]
    no_tta = predict_run(cfg.run_dir(), tta=False)
    row, row2 = ledger.get(f), ledger.get(no_tta["file"])
    assert row["local_rmse"] == pytest.approx(local) and row["tta"] == 1 and row2["tta"] == 0
    assert len(ledger.rows()) == 2
    out = subprocess.run([sys.executable, "-m", "fkd", "scores", "--local"], capture_output=True, text=True,
                         timeout=120)
    assert f.name[:40] in out.stdout
    # bad inputs: a run without checkpoints, and a test set other than the run's
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.yaml").write_text((cfg.run_dir() / "config.yaml").read_text())
    with pytest.raises(FkdError, match="no finished fold checkpoints"):
        predict_run(empty)
    from fkd.competition.practice import make_practice
    other = tmp_path / "other"
    make_practice(other, seed=99, n_train=50, n_test=20)
    n_before = len(list(Path("submissions").glob("*.csv")))
    with pytest.raises(FkdError, match="test set differs"):
        predict_run(cfg.run_dir(), data_dir=str(other))
    assert len(list(Path("submissions").glob("*.csv"))) == n_before


def test_error_report_of_a_trained_run(trained_run, capsys):
    from fkd.cli import main
    cfg, cv = trained_run
    assert main(["errors", str(cfg.run_dir()), "--worst", "8"]) == 0
    out = capsys.readouterr().out
    assert "nose_tip" in out and "worst faces" in out
    for name in ("errors-gallery.png", "errors-per-keypoint.png"):
        assert (cfg.run_dir() / name).read_bytes()[:4] == b"\x89PNG"


def test_the_error_gallery_draws_only_what_a_face_is_scored_on(trained_run, monkeypatch):
    """A common-source face is scored on 8 values: its other 11 outputs were never trained and must not be drawn
    (they sat in a red cluster around the nose)."""
    import fkd.report.error_analysis as ea
    cfg, _ = trained_run
    drawn = {}
    real = ea.face_grid

    def spy(images, point_sets, titles, out, **kw):
        drawn["sets"], drawn["titles"] = point_sets, titles
        return real(images, point_sets, titles, out, **kw)

    monkeypatch.setattr(ea, "face_grid", spy)
    ea.error_report(cfg.run_dir(), worst=16)
    (labels, *_), (preds, _, _, legend) = drawn["sets"]
    assert np.array_equal(np.isfinite(preds), np.isfinite(labels))           # a point drawn only where labelled
    assert any(np.isfinite(lab).sum() == 8 for lab in labels)                # common-source faces are among them
    assert "scored on" in legend and all("points" in t for t in drawn["titles"])


def test_refit_models_join_the_submission_and_say_what_the_cv_estimates(practice_dir, tmp_path):
    """--set refit=1: after the trained folds, a model on every row; the submission averages fold 0 and it, and
    the sidecar names the models and what the CV estimates."""
    import json

    from fkd.config import make_config
    from fkd.learn.cv import run_cv
    from fkd.learn.runfiles import checkpoints

    cfg = make_config(preset="quick", overrides=["model=baseline", "folds=2", "train_folds=0", "refit=1", "epochs=2",
                                                 "limit_train=96", "batch_size=16", "aug=0", "workers=0",
                                                 "tta_shift=1.5", "tta_scale=0.05"],
                      data_dir=str(practice_dir), runs_dir=str(tmp_path / "runs"))
    cv = run_cv(cfg, progress=False)
    assert 0 <= cv["tta_views_weight"] <= 1 and cv["cv_rmse_tta"] <= cv["cv_rmse_flip_only"] + 1e-9   # fitted
    assert [c.parent.name for c in checkpoints(cfg.run_dir())] == ["fold0", "refit0"]
    assert cv["refit_results"][0]["n_train"] == 96 and cv["submission"]["models"] == ["fold0", "refit0"]
    assert "trained on every row" in cv["submission"]["cv_estimates"]
    assert "submission averages fold0, refit0" in (cfg.run_dir() / "cv.txt").read_text()
    info = predict_run(cfg.run_dir(), out_dir=tmp_path / "subs")
    side = json.loads(Path(info["file"]).with_suffix(".json").read_text())
    assert side["models"] == ["fold0", "refit0"] and "every row" in side["cv_estimates"]
    assert side["tta_views_weight"] == cv["tta_views_weight"]
    again = make_config(preset="quick", overrides=["model=baseline", "folds=2", "train_folds=0", "refit=0", "epochs=2",
                                                   "limit_train=96", "batch_size=16", "aug=0", "workers=0"],
                        data_dir=str(practice_dir), runs_dir=str(tmp_path / "runs"))
    assert again.run_dir() == cfg.run_dir()          # refit models are extra files of the same run, not another run


def test_refit_models_on_the_folds_rows_make_the_cv_the_submissions_own_average(practice_dir, tmp_path, monkeypatch):
    """--set refit_on=fold: the refit models train on fold 0's training rows (seeds of their own) and predict its
    held-out faces; the CV is the submission's own average of all three models there (checked against the
    checkpoints, predicted afresh), the fold model alone is kept beside it, and the sidecar says what is estimated."""
    from fkd.config import make_config
    from fkd.device import select_device
    from fkd.learn import refit as refit_module
    from fkd.learn.cv import run_cv, training_data
    from fkd.learn.models import load_fold_model
    from fkd.learn.runfiles import checkpoints, read_folds

    trained_on = []
    real_ds = refit_module.fold_dataset

    def dataset(cfg, data, folds, fold, tr, *a, **kw):
        trained_on.append(np.array(tr))
        return real_ds(cfg, data, folds, fold, tr, *a, **kw)
    monkeypatch.setattr(refit_module, "fold_dataset", dataset)
    sets = ["model=baseline", "folds=4", "train_folds=0", "refit=2", "refit_on=fold", "epochs=2", "limit_train=96",
            "batch_size=16", "aug=0", "workers=0"]
    cfg = make_config(preset="quick", overrides=sets, data_dir=str(practice_dir), runs_dir=str(tmp_path / "runs"))
    cv = run_cv(cfg, progress=False)
    folds = read_folds(cfg.run_dir())
    val, tr = np.flatnonzero(folds == 0), np.flatnonzero(folds != 0)
    assert len(trained_on) == 2 and all(np.array_equal(t, tr) for t in trained_on)   # never a fold-0 face
    assert [r["n_train"] for r in cv["refit_results"]] == [len(tr)] * 2
    assert [c.parent.name for c in checkpoints(cfg.run_dir())] == ["fold0", "refit0", "refit1"]

    data = training_data(cfg)
    dev, amp = select_device(cfg.device, cfg.amp)
    preds = [predict_images(load_fold_model(cfg, c, dev), data.images[val], data.source[val], dev, amp)
             for c in checkpoints(cfg.run_dir())]
    y = data.keypoints[val]
    rmse = lambda p: float(np.sqrt(np.nanmean((p - y) ** 2)))
    assert not np.allclose(preds[1], preds[2])                   # two refit models, two seeds
    assert abs(cv["cv_rmse_no_tta"] - rmse(np.mean(preds, 0))) < 1e-3                 # the three averaged
    assert abs(cv["fold_model_alone"]["cv_rmse_no_tta"] - rmse(preds[0])) < 1e-3     # the fold model alone
    assert abs(cv["refit_results"][1]["val_rmse"] - rmse(preds[2])) < 1e-3
    assert "the submission itself: its 3 models averaged" in cv["submission"]["cv_estimates"]
    assert "the fold model alone" in (cfg.run_dir() / "cv.txt").read_text()
    assert 0 < cv["cv_se"] < cv["cv_rmse"] and "standard error" in (cfg.run_dir() / "cv.txt").read_text()
    again = run_cv(cfg, progress=False)                          # a rerun trains nothing and scores the same
    assert again["cv_rmse"] == cv["cv_rmse"] and len(trained_on) == 2
    with pytest.raises(FkdError, match="refit_on=fold holds out the trained fold"):
        make_config(preset="quick", overrides=["refit=1", "refit_on=fold", "train_folds=0,1"])
    assert cfg.fingerprint() != make_config(preset="quick", overrides=[*sets[:4], "refit_on=all", *sets[5:]],
                                            data_dir=str(practice_dir)).fingerprint()
