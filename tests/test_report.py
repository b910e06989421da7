"""What a user looks at: the one-page HTML report of a run (opened in a real browser where one is installed),
and the live curves TensorBoard reads."""
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import unavailable

from fkd.cli import main

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# what the workplace's checks start Chromium with: no network chatter, a fresh profile
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_a_run_reports_itself_in_one_page_whose_pictures_load(trained_run, tmp_path, capsys):
    cfg, cv = trained_run
    assert main(["report", str(cfg.run_dir())]) == 0
    page = cfg.run_dir() / "report.html"
    assert str(page) in capsys.readouterr().out
    text = page.read_text()
    assert f"{cv['cv_rmse_tta']:.4f}" in text and "nose_tip" in text and "folds: by" in text
    assert text.count("data:image/png;base64,") >= 4      # two curves, per-keypoint chart, error gallery
    exe = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if exe is None:
        unavailable("no Chromium to open the report in (Debian: apt-get install chromium)")
    dom = subprocess.run([exe, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert 'data-images="ok ' in dom, dom[-500:]          # every picture decoded in the browser


def test_training_writes_curves_tensorboard_reads(trained_run):
    """Each fold's folder holds TensorBoard event files with the train and validation RMSE of every epoch."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg, cv = trained_run
    acc = EventAccumulator(str(Path(cfg.run_dir()) / "fold0")).Reload()
    val = acc.Scalars("rmse/validation (px)")
    assert [e.step for e in val] == list(range(1, cfg.epochs + 1))
    assert {"rmse/train (augmented, px)", "learning rate"} <= set(acc.Tags()["scalars"])


def test_a_curves_title_is_never_cut_off():
    """A run's name is long (a refit model's title longer still): the curve's title fits inside the figure."""
    from fkd.plots import loss_figure

    title = "default-regnety_004-3f7fb2c8-offline-a-rather-long-competition-folder refit 0 (every training row)"
    fig = loss_figure([{"epoch": e, "train_rmse": 3.0 / e} for e in range(1, 6)], title)
    fig.canvas.draw()
    box, page = fig.axes[0].title.get_window_extent(), fig.bbox
    assert box.x0 >= page.x0 and box.x1 <= page.x1 and box.y1 <= page.y1, (box, page)
    assert "".join(fig.axes[0].get_title().split()) == "".join(title.split())   # all of it, only wrapped


def test_the_report_says_which_models_a_run_trains():
    from fkd.config import make_config

    default = make_config(preset="default")
    assert default.models_line() == ("fold 0 of an 8-fold split + 1 refit model on fold 0's training rows, the epochs "
                                     "that fit 29 min here (at most 136; minutes past that buy more refit models)")
    assert default.models_line(resolved=True).endswith(", 75 epochs each")
    assert make_config(preset="best").models_line() == (
        "fold 0 of a 4-fold split + 1 refit model on every row, the epochs that fit 110 min here (at most 150; "
        "minutes past that buy more refit models); a run each for "
        "resnet18, regnety_004, the minutes shared")
    assert make_config(preset="quick", overrides=["epochs=6"]).models_line() == "3 folds, 6 epochs each"


def test_the_report_shows_the_views_column_only_where_views_were_used():
    from fkd.report.page import _cv_section

    cv = {"cv_rmse_no_tta": 2.0, "cv_rmse_tta": 1.8, "cv_rmse_flip_only": 1.9, "mean_keypoint_rmse": 5.0,
          "tta_views_weight": 0.9, "fold_results": [], "rmse_full": 1.9, "rmse_common": 1.7, "per_keypoint": {},
          "folds_by": "groups", "flip_const": 97.0}
    assert "flip + views (the CV)" in _cv_section(cv) and "1.9000" in _cv_section(cv)
    assert "flip + views" not in _cv_section({**cv, "tta_views_weight": 0.0})


def test_a_blend_trains_one_run_a_backbone_on_an_equal_share_of_the_budget():
    from fkd.config import make_config
    from fkd.errors import FkdError
    from fkd.infer.blend import members

    cfg = make_config(preset="best", overrides=["blend=regnety_004", "name=mine"])
    runs = members(cfg)
    assert [m.model for m in runs] == ["resnet18", "regnety_004"] and [m.name for m in runs] == ["mine-resnet18",
                                                                                                 "mine-regnety_004"]
    assert [m.budget_min for m in runs] == [cfg.budget_min / 2] * 2 and not any(m.blend for m in runs)
    assert all((m.ema, m.refit, m.train_folds, m.aug_end) == (cfg.ema, cfg.refit, cfg.train_folds, cfg.aug_end)
               for m in runs)                                              # the recipe, shared
    assert members(make_config(preset="best", overrides=["blend="])) == [make_config(preset="best",
                                                                                      overrides=["blend="])]
    with pytest.raises(FkdError, match="blend repeats a backbone"):
        make_config(preset="best", overrides=["blend=regnety_004,resnet18"])
