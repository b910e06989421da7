"""The practice competition (determinism, real learning problem, two sources) and `fkd score`."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fkd.competition import COMP
from fkd.competition.data import FULL, load_data
from fkd.competition.metric import public_mask, score_files
from fkd.competition.practice import make_practice
from fkd.errors import FkdError


def test_same_seed_same_bytes(tmp_path):
    a = make_practice(tmp_path / "a", seed=3, n_train=60, n_test=20)
    b = make_practice(tmp_path / "b", seed=3, n_train=60, n_test=20)
    c = make_practice(tmp_path / "c", seed=4, n_train=60, n_test=20)
    for fa, fb in zip(a["files"], b["files"]):
        assert Path(fa).read_bytes() == Path(fb).read_bytes()
    assert Path(a["files"][0]).read_bytes() != Path(c["files"][0]).read_bytes()


def test_a_real_learning_problem_with_two_sources(practice_dir):
    d = load_data(practice_dir)
    sol = pd.read_csv(practice_dir / "solution.csv")
    lk = d.lookup.merge(sol, on="RowId")
    mean = np.nanmean(d.keypoints, 0)
    err = lk.Location.to_numpy() - mean[lk.col.to_numpy()]
    assert np.sqrt(np.mean(err ** 2)) >= 3.0  # the mean keypoint is far from good enough
    nose_y = 2 * COMP.keypoints.index("nose_tip") + 1
    lip_y = 2 * COMP.keypoints.index("mouth_center_bottom_lip") + 1
    full, common = d.source == FULL, d.source != FULL
    assert np.nanmean(d.keypoints[common, nose_y]) - np.nanmean(d.keypoints[full, nose_y]) > 2.5
    assert np.nanmean(d.keypoints[common, lip_y]) - np.nanmean(d.keypoints[full, lip_y]) < -2.0
    # a few fully labelled rows miss some keypoints, but still carry more than the common 8
    n_lab = np.isfinite(d.keypoints[full]).sum(1)
    assert (n_lab < 30).any() and (n_lab > 8).all()


def test_lookup_and_solution_belong_together(practice_dir):
    d = load_data(practice_dir)
    sol = pd.read_csv(practice_dir / "solution.csv")
    sample = pd.read_csv(practice_dir / "SampleSubmission.csv")
    assert list(sol.RowId) == list(d.lookup.RowId) == list(sample.RowId)
    assert sol.Location.notna().all() and ((sol.Location >= 0) & (sol.Location <= 96)).all()
    per_img = d.lookup.groupby("img").size()
    assert (per_img[d.test_source[per_img.index] != FULL] == 8).all()
    assert (per_img[d.test_source[per_img.index] == FULL] > 8).all()


def _write(path: Path, df: pd.DataFrame) -> Path:
    df.to_csv(path, index=False)
    return path


def test_score_of_the_solution_is_zero_and_of_an_offset_is_the_offset(practice_dir, tmp_path):
    sol = pd.read_csv(practice_dir / "solution.csv")
    r = score_files(_write(tmp_path / "s.csv", sol), practice_dir / "solution.csv")
    assert r["rmse"] == 0.0 and r["rows"] == len(sol)
    shifted = sol.assign(Location=sol.Location + 1.5)
    r = score_files(_write(tmp_path / "t.csv", shifted.sample(frac=1, random_state=0)), practice_dir / "solution.csv")
    assert r["rmse"] == pytest.approx(1.5) and r["rmse_full"] == pytest.approx(1.5)


def test_per_source_scores_and_subsets(practice_dir, tmp_path):
    d = load_data(practice_dir)
    sol = pd.read_csv(practice_dir / "solution.csv")
    full_rows = np.isin(d.lookup.img, np.flatnonzero(d.test_source == FULL))
    sub = sol.assign(Location=sol.Location + np.where(full_rows, 2.0, 0.5))
    p = _write(tmp_path / "s.csv", sub)
    r = score_files(p, practice_dir / "solution.csv")
    assert r["rmse_full"] == pytest.approx(2.0) and r["rmse_common"] == pytest.approx(0.5)
    pub, priv = (score_files(p, practice_dir / "solution.csv", subset=s) for s in ("public", "private"))
    assert pub["rows"] + priv["rows"] == r["rows"]
    assert priv["rows"] > 0 and 0.3 < pub["rows"] / r["rows"] < 0.7
    err2 = (pub["rmse"] ** 2 * pub["rows"] + priv["rmse"] ** 2 * priv["rows"]) / r["rows"]
    assert np.sqrt(err2) == pytest.approx(r["rmse"])
    ids = d.lookup.ImageId.to_numpy()
    assert np.array_equal(public_mask(ids), public_mask(ids.copy()))  # fixed split


REFUSED = {
    "wrong_header": (lambda s: s.rename(columns={"Location": "Loc"}), "expected 'RowId,Location'"),
    "missing_rows": (lambda s: s.iloc[:-3], "3 RowIds missing"),
    "extra_rows": (lambda s: pd.concat([s, pd.DataFrame({"RowId": [10**6], "Location": [1.0]})]),
                   "not in the solution"),
    "duplicate_rowid": (lambda s: pd.concat([s, s.iloc[:1]]), "appears twice"),
    "nan_value": (lambda s: s.assign(Location=s.Location.where(s.index != 4)), "line 6: Location"),
    "text_value": (lambda s: s.astype({"Location": object}).assign(
        Location=lambda x: x.Location.where(x.index != 2, "abc")), "'abc' is not a number"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_submissions_exit_2(practice_dir, tmp_path, case):
    make, expected = REFUSED[case]
    sol = pd.read_csv(practice_dir / "solution.csv")
    p = _write(tmp_path / "bad.csv", make(sol))
    with pytest.raises(FkdError, match=expected.replace("(", r"\(")):
        score_files(p, practice_dir / "solution.csv")
    r = subprocess.run([sys.executable, "-m", "fkd", "score", str(p), "--solution", str(practice_dir / "solution.csv")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0


def test_cli_score_json(practice_dir, tmp_path):
    sol = pd.read_csv(practice_dir / "solution.csv")
    p = _write(tmp_path / "s.csv", sol.assign(Location=sol.Location - 1))
    r = subprocess.run([sys.executable, "-m", "fkd", "score", str(p), "--solution", str(practice_dir / "solution.csv"),
                        "--json", "--subset", "public"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["rmse"] == pytest.approx(1.0) and out["subset"] == "public" and {"rmse_full", "rmse_common"} <= set(out)


def test_the_cvs_standard_error_draws_near_duplicates_together():
    """Faces copied four times over score the same RMSE as the originals; drawn by group, the copies carry the
    originals' standard error; drawn one by one, they would claim half of it (1/sqrt(4))."""
    from fkd.competition.metric import bootstrap_se
    rng = np.random.default_rng(0)
    y = rng.uniform(20, 70, (300, 30))
    y[::2, 8:] = np.nan                                                        # partly labelled rows
    pred = y + rng.normal(0, 1.5, y.shape) * rng.uniform(0.3, 2.0, (300, 1))  # some faces far harder than others
    alone = bootstrap_se(pred, y, np.arange(300))
    assert 0.02 < alone < 0.2
    assert bootstrap_se(np.tile(pred, (4, 1)), np.tile(y, (4, 1)), np.tile(np.arange(300), 4)) == pytest.approx(
        alone, rel=0.1)
    assert bootstrap_se(np.tile(pred, (4, 1)), np.tile(y, (4, 1)), np.arange(1200)) == pytest.approx(alone / 2, rel=0.1)
    assert bootstrap_se(y + 1.0, y, np.arange(300)) < 1e-9                     # one error everywhere: nothing to vary
