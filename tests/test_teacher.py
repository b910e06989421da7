"""Teacher labels (fkd/teacher.py): what gets filled, that labels and face move together, that they train
only the full-source outputs, that a teacher must be nested (same data, same folds), and a student run."""
import dataclasses

import numpy as np
import pytest
import torch
from conftest import TINY

from fkd.competition import COMMON, FULL
from fkd.config import make_config
from fkd.errors import FkdError
from fkd.learn.augment import Augmenter
from fkd.learn.models import create_model
from fkd.learn.teacher import fill_missing


def test_fill_missing_gives_the_full_source_outputs_every_value_they_lack():
    kp = np.full((3, 30), np.nan, np.float32)
    kp[0] = 40.0                     # a fully labelled row: nothing to fill
    kp[1, :20] = 41.0                # a full-source row with gaps
    kp[2, [0, 1, 2, 3, 20, 21, 28, 29]] = 42.0   # a common-source row: its 8 values train the common outputs
    src = np.array([FULL, FULL, COMMON])
    pred = np.full((3, 30), 50.0, np.float32)
    t = fill_missing(kp, src, pred, source_aware=True)
    assert np.isnan(t[0]).all()
    assert np.isnan(t[1, :20]).all() and (t[1, 20:] == 50).all()
    assert (t[2] == 50).all()                                   # all 30: the full source labelled none of them
    t = fill_missing(kp, src, pred, source_aware=False)        # one set of outputs: only the gaps
    assert np.isnan(t[2, [0, 1, 2, 3, 20, 21, 28, 29]]).all() and np.isfinite(t[2]).sum() == 22


def test_augmenter_moves_every_label_set_with_the_face_and_leaves_the_single_set_path_unchanged():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (96, 96), dtype=np.uint8)
    kp = rng.uniform(30, 66, 30).astype(np.float32)
    kp[4:8] = np.nan
    aug = Augmenter(strength=1.0, flip_p=0.5, flip_const=97.0)
    for seed in range(12):                       # flips and affine transforms both happen among these seeds
        im1, k1 = aug(img, kp, seed=seed)
        im2, k2 = aug(img, np.stack([kp, kp + 1.0]), seed=seed)
        assert k2.shape == (2, 30) and np.array_equal(im1, im2)
        np.testing.assert_array_equal(k1, k2[0])                 # the real labels exactly as without a teacher
        both = np.isfinite(k2[0]) & np.isfinite(k2[1])
        # the shifted set went through the same affine map: it stays ~1 px (scaled, rotated) off the first
        assert both.sum() >= 20 and np.abs(k2[1] - k2[0])[both].max() < 1.6, seed


@pytest.mark.parametrize("head", ["flatten", "simcc"])
def test_teacher_labels_train_only_the_full_source_outputs(head):
    torch.manual_seed(0)
    model = create_model("resnet18", head=head, dropout=0.0, source_aware=True, loss="l1")
    x = torch.rand(4, 1, 96, 96)
    src = torch.full((4,), COMMON)
    target = torch.full((4, 30), float("nan"))
    target[:, [0, 1, 20, 21]] = 45.0
    teacher = torch.full((4, 30), 47.0)
    last = model.head.fc if head == "flatten" else model.head.proj

    def grads(**kw):
        model.zero_grad()
        model(x, src, target, **kw)["loss"].backward()
        g = last.weight.grad.reshape(2, -1)          # output channels: [common set, full set]
        return g[COMMON].abs().sum().item(), g[FULL].abs().sum().item()

    common, full = grads()
    assert common > 0 and full == 0                  # real common labels never reach the full-source outputs
    common_t, full_t = grads(teacher=teacher, teacher_weight=0.5)
    assert full_t > 0 and common_t == pytest.approx(common, rel=1e-5)
    assert grads(teacher=teacher, teacher_weight=0.0) == (common, 0.0)


def _fake_run(runs, name, cfg, data_hash, folds):
    from fkd.competition.folds import save_folds
    from fkd.learn.runfiles import save_run_config

    d = runs / name
    d.mkdir(parents=True)
    save_run_config(cfg, d, {"fingerprint": cfg.fingerprint(), "data_hash": data_hash})
    save_folds(d / "folds.csv", folds, np.zeros(len(folds), np.int8))
    return d


def test_a_teacher_that_is_not_nested_is_refused(practice_dir, tmp_path):
    from fkd.competition.data import load_training_data
    from fkd.competition.folds import make_folds
    from fkd.learn.teacher import check_teacher

    cfg = make_config(preset="quick", overrides=TINY, data_dir=str(practice_dir), runs_dir=str(tmp_path))
    data = load_training_data(cfg.data_dir, 0, cfg.fold_seed())
    folds = make_folds(data.source, 2, cfg.fold_seed())
    student = dataclasses.replace(cfg, teacher="t")
    with pytest.raises(FkdError, match="no run folder"):
        check_teacher(student, data, folds)
    _fake_run(tmp_path, "t", cfg, data.data_hash, make_folds(data.source, 2, 99))
    with pytest.raises(FkdError, match="folds .* differ"):
        check_teacher(student, data, folds)
    _fake_run(tmp_path, "t2", cfg, "another-data-hash", folds)
    with pytest.raises(FkdError, match="other data"):
        check_teacher(dataclasses.replace(cfg, teacher="t2"), data, folds)
    assert check_teacher(dataclasses.replace(cfg, teacher=str(_fake_run(tmp_path, "t3", cfg, data.data_hash, folds))),
                         data, folds).name == "t3"


def test_a_student_learns_from_its_teachers_same_fold(trained_run, tmp_path, monkeypatch):
    """Fold k's teacher labels come from the teacher's fold-k model (never from one that saw fold k)."""
    import fkd.learn.teacher
    from fkd.learn.cv import run_cv

    teacher_cfg, teacher_cv = trained_run
    loaded = []
    real_load = torch.load
    monkeypatch.setattr(fkd.learn.teacher.torch, "load", lambda f, **kw: loaded.append(str(f)) or real_load(f, **kw))
    cfg = make_config(preset="quick", overrides=TINY + [f"teacher={teacher_cfg.run_dir()}"],
                      data_dir=teacher_cfg.data_dir, runs_dir=str(tmp_path))
    cv = run_cv(cfg, progress=False)
    assert [p.split("/")[-2] for p in loaded if str(teacher_cfg.run_dir()) in p] == ["fold0", "fold1"]
    assert cv["cv_rmse"] < 0.8 * cv["mean_keypoint_rmse"]
    assert cfg.fingerprint() != dataclasses.replace(cfg, teacher="").fingerprint()


def spy_pseudo_rows(monkeypatch) -> list:
    """Every call of teacher.pseudo_rows, recorded as (fold, (images, labels, source)) in the list returned."""
    import fkd.learn.teacher as teacher

    seen, real = [], teacher.pseudo_rows

    def spy(cfg, data, fold, dev, amp, folds=None):
        rows = real(cfg, data, fold, dev, amp, folds)
        seen.append((fold, rows))
        return rows
    monkeypatch.setattr(teacher, "pseudo_rows", spy)
    return seen


def test_pseudo_labelled_test_faces_train_beside_the_rows_nested(trained_run, tmp_path, monkeypatch, capsys):
    """--set pseudo=1: the test faces join each fold's training rows, labelled by the teacher's model of the same
    fold (never one that saw the fold's validation rows), on the values the lookup asks of each face; a refit
    model takes them from the teacher's whole submission."""
    from fkd.competition.data import load_data
    from fkd.learn.cv import run_cv

    teacher_cfg, _ = trained_run
    seen = spy_pseudo_rows(monkeypatch)
    cfg = make_config(preset="quick", overrides=TINY + [f"teacher={teacher_cfg.run_dir()}", "pseudo=1",
                                                        "teacher_weight=0", "epochs=2", "refit=1"],
                      data_dir=teacher_cfg.data_dir, runs_dir=str(tmp_path))
    cv = run_cv(cfg, progress=False)
    assert [f for f, _ in seen] == [0, 1, None]
    data = load_data(teacher_cfg.data_dir)
    images, kp, src = seen[0][1]
    assert len(images) == len(data.test_images) and np.array_equal(src, data.test_source)
    asked = np.zeros(kp.shape, bool)
    asked[data.lookup["img"], data.lookup["col"]] = True
    assert np.array_equal(np.isfinite(kp), asked)                 # labelled exactly where the lookup asks
    assert not np.allclose(seen[0][1][1][asked], seen[1][1][1][asked])   # fold 0's and fold 1's own teachers
    assert f"{len(images)} test faces labelled by" in capsys.readouterr().out and cv["cv_rmse"] > 0
    with pytest.raises(FkdError, match="pseudo=1 needs a teacher"):
        make_config(preset="quick", overrides=["pseudo=1"])


def test_pseudo_faces_val_self_trains_on_the_folds_own_validation_faces_unlabelled(trained_run, tmp_path,
                                                                                   monkeypatch, capsys):
    """--set pseudo_faces=val (measuring self-training out of fold): fold k's validation faces join its training
    rows, labelled by the teacher's fold-k model on the values they have labels for, never with the labels
    themselves; a refit model has none, so refit with it is a one-line error."""
    from fkd.competition.data import load_data
    from fkd.learn.cv import run_cv
    from fkd.learn.runfiles import read_folds

    teacher_cfg, _ = trained_run
    seen = spy_pseudo_rows(monkeypatch)
    cfg = make_config(preset="quick", overrides=TINY + [f"teacher={teacher_cfg.run_dir()}", "pseudo=1",
                                                        "pseudo_faces=val", "teacher_weight=0", "epochs=1"],
                      data_dir=teacher_cfg.data_dir, runs_dir=str(tmp_path))
    run_cv(cfg, progress=False)
    data = load_data(teacher_cfg.data_dir)
    folds = read_folds(cfg.run_dir())
    assert [f for f, _ in seen] == [0, 1]
    for fold, (images, kp, src) in seen:
        va = np.flatnonzero(folds == fold)
        truth = data.keypoints[va]
        assert np.array_equal(images, data.images[va]) and np.array_equal(src, data.source[va])
        assert np.array_equal(np.isfinite(kp), np.isfinite(truth))        # asked where a label exists
        assert np.abs(kp - truth)[np.isfinite(truth)].mean() > 0.05        # the teacher's guesses, not the labels
    assert "of its validation faces (unlabelled: pseudo_faces=val)" in capsys.readouterr().out
    with pytest.raises(FkdError, match="a refit model has no validation faces"):
        make_config(preset="quick", overrides=[f"teacher={teacher_cfg.run_dir()}", "pseudo=1", "pseudo_faces=val",
                                               "teacher_weight=0", "refit=1"])
    assert cfg.fingerprint() != dataclasses.replace(cfg, pseudo_faces="test").fingerprint()


def test_refit_models_learn_what_rows_lack_from_their_own_runs_fold_models(practice_dir, tmp_path, monkeypatch,
                                                                             capsys):
    """--set refit_teacher=W: once the folds are trained, their models (averaged, flip TTA at the constant fitted out
    of fold) label every value a training row has no full-source label for, and the refit model learns those at
    weight W; the fold models train without teacher labels, as the CV they give is measured without."""
    from fkd.device import select_device
    from fkd.learn.cv import run_cv, training_data
    from fkd.learn.models import load_fold_model, predict_images
    from fkd.learn.models.model import KeypointModel

    calls = {"fold": [], "refit": []}                # (teacher labels given, weight) of every training step
    phase = ["fold"]
    real = KeypointModel.forward

    def spy(self, x, src, target=None, teacher=None, teacher_weight=0.0):
        if target is not None and self.training:
            calls[phase[0]].append((teacher is not None, teacher_weight))
        return real(self, x, src, target, teacher=teacher, teacher_weight=teacher_weight)
    monkeypatch.setattr(KeypointModel, "forward", spy)
    import fkd.learn.cv as cv_module
    given = []
    real_refit = cv_module.train_refit

    def refit(*a, **kw):
        phase[0] = "refit"
        given.append(kw["teach"])
        return real_refit(*a, **kw)
    monkeypatch.setattr(cv_module, "train_refit", refit)

    cfg = make_config(preset="quick", overrides=TINY + ["epochs=1", "refit=1", "refit_teacher=0.7", "limit_train=96"],
                      data_dir=str(practice_dir), runs_dir=str(tmp_path))
    cv = run_cv(cfg, progress=False)
    assert calls["fold"] and set(calls["fold"]) == {(False, 0.0)}
    assert calls["refit"] and set(calls["refit"]) == {(True, 0.7)}
    assert "teacher-labelled keypoints from this run's fold models (weight 0.7)" in capsys.readouterr().out

    data = training_data(cfg)
    teach = given[0]
    have_full = np.isfinite(data.keypoints) & (data.source == FULL)[:, None]
    assert np.array_equal(np.isfinite(teach), ~have_full) and (~have_full).sum() > 0
    full = np.full(len(data.images), FULL, np.int64)
    dev, amp = select_device(cfg.device, cfg.amp)   # as training predicts them (bf16 where the CPU has it)
    mean = np.mean([predict_images(load_fold_model(cfg, cfg.run_dir() / f"fold{k}" / "best.pt", dev), data.images,
                                   full, dev, amp, tta=True, flip_const=cv["tta_flip_const"]) for k in (0, 1)], 0)
    np.testing.assert_allclose(teach[~have_full], mean[~have_full], atol=1e-3)   # the two fold models' average
    assert "taught by the fold models" in cv["submission"]["cv_estimates"]
    assert cfg.fingerprint() != dataclasses.replace(cfg, refit_teacher=0.0).fingerprint()
    with pytest.raises(FkdError, match="refit_teacher teaches refit models"):
        make_config(preset="quick", overrides=["refit_teacher=0.5", "refit=0"])


def test_refit_models_self_train_on_the_test_faces_their_runs_fold_models_labelled(practice_dir, tmp_path,
                                                                                    monkeypatch, capsys):
    """--set refit_pseudo=1: once the folds are trained, their models (averaged, flip TTA at the constant fitted out
    of fold) label the test faces on the values the lookup table asks, and the refit model trains on them beside
    every row; the fold models train on their rows alone."""
    import fkd.learn.cv as cv_module
    from fkd.device import select_device
    from fkd.learn import loop
    from fkd.learn.cv import run_cv, training_data
    from fkd.learn.models import load_fold_model, predict_images

    sizes, given = [], []
    real_ds, real_refit = loop.fold_dataset, cv_module.train_refit

    def dataset(*a, **kw):
        ds = real_ds(*a, **kw)
        sizes.append(("refit" if a[3] is None else f"fold{a[3]}", len(ds)))
        return ds

    def refit(*a, **kw):
        given.append(kw["pseudo"])
        return real_refit(*a, **kw)
    monkeypatch.setattr(loop, "fold_dataset", dataset)
    monkeypatch.setattr(cv_module, "train_refit", refit)
    monkeypatch.setattr("fkd.learn.refit.fold_dataset", dataset)
    cfg = make_config(preset="quick", overrides=TINY + ["epochs=3", "refit=1", "refit_pseudo=1", "limit_train=96"],
                      data_dir=str(practice_dir), runs_dir=str(tmp_path))
    cv = run_cv(cfg, progress=False)
    data = training_data(cfg)
    n, n_test = len(data.images), len(data.test_images)
    refit_epochs = max(1, round(3 * n / (n + n_test)))                         # a refit's steps, not more
    assert cv["refit_results"][0]["epochs_run"] == refit_epochs < 3
    assert cv["fold_results"][0]["epochs_run"] == 3
    folds = {k: v for k, v in sizes if k != "refit"}
    assert sum(folds.values()) == n and sizes[-1] == ("refit", n + n_test)    # folds: their rows alone
    assert f"refit: {n_test} test faces labelled by this run's fold models join its {n} training faces " \
           "(refit_pseudo=1)" in capsys.readouterr().out

    images, kp, src = given[0]
    assert np.array_equal(images, data.test_images) and np.array_equal(src, data.test_source)
    asked = np.zeros(kp.shape, bool)
    asked[data.lookup["img"], data.lookup["col"]] = True
    assert np.array_equal(np.isfinite(kp), asked)
    dev, amp = select_device(cfg.device, cfg.amp)
    mean = np.mean([predict_images(load_fold_model(cfg, cfg.run_dir() / f"fold{k}" / "best.pt", dev),
                                   data.test_images, data.test_source, dev, amp, tta=True,
                                   flip_const=cv["tta_flip_const"]) for k in (0, 1)], 0)
    np.testing.assert_allclose(kp[asked], mean[asked], atol=1e-3)              # the two fold models' average
    assert "self-trained on the test faces the fold models labelled (the same steps, fewer epochs)" in \
        cv["submission"]["cv_estimates"]
    assert cfg.fingerprint() != dataclasses.replace(cfg, refit_pseudo=False).fingerprint()
    with pytest.raises(FkdError, match="refit_pseudo trains refit models"):
        make_config(preset="quick", overrides=["refit_pseudo=1", "refit=0"])
