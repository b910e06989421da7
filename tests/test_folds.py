"""Folds that keep near-duplicate faces together: found from pixels and labels, grouped, never split; the leak
measured; duplicates with disagreeing labels reported and handled by a flag; bad splits refused in one line."""
import subprocess
import sys

import cv2
import numpy as np
import pytest

from fkd.competition.data import load_data, resolve_duplicates
from fkd.competition.folds import duplicate_groups, face_embeddings, make_folds, near_twin_share
from fkd.config import Config
from fkd.errors import FkdError

COPIES = (10, 20, 30, 40)         # rows that get a near copy (another frame of the same face)
EXACT = 5                         # a row copied pixel for pixel, with other labels


def with_twins(data):
    """The practice faces (every one drawn anew) plus another frame of four of them (moved a pixel, brighter,
    noisier) and an identical copy of one, labelled 2 px off: as Kaggle's file holds them."""
    rng = np.random.default_rng(0)
    images, kp = [data.images], [data.keypoints]
    for r in COPIES:
        m = np.float32([[1, 0, 1.0], [0, 1, -1.0]])
        frame = cv2.warpAffine(data.images[r].astype(np.float32), m, (96, 96), borderMode=cv2.BORDER_REPLICATE)
        frame = np.clip(frame * 1.08 + 6 + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8)
        k = data.keypoints[r].copy()
        k[0::2] += 1.0
        k[1::2] -= 1.0
        images.append(frame[None])
        kp.append(k[None])
    images.append(data.images[EXACT][None])
    kp.append(data.keypoints[EXACT][None] + 2.0)
    data.images, data.keypoints = np.concatenate(images), np.concatenate(kp).astype(np.float32)
    data.source = np.concatenate([data.source, data.source[list(COPIES)], data.source[[EXACT]]])
    return data


def test_twins_are_found_grouped_and_never_split(practice_dir):
    d = with_twins(load_data(practice_dir))
    n = len(d.images) - len(COPIES) - 1
    g = duplicate_groups(d.images, d.keypoints, Config.group_z)
    for i, r in enumerate(COPIES):
        assert g.group[r] == g.group[n + i], f"row {r} and its other frame are not one group"
    assert g.group[EXACT] == g.group[-1]
    assert [list(s) for s in g.exact] == [[EXACT, len(d.images) - 1]] and len(g.conflicting) == 1
    assert (g.sizes == 1).mean() > 0.95                       # the other practice faces, all different, stay apart
    emb = face_embeddings(d.images, d.keypoints)
    grouped = make_folds(d.source, 4, seed=1, groups=g.group)
    for grp in np.unique(g.group):
        assert len(np.unique(grouped[g.group == grp])) == 1
    assert near_twin_share(emb, grouped, Config.group_z) == 0.0
    leaky = [near_twin_share(emb, make_folds(d.source, 4, seed=s), Config.group_z) for s in range(6)]
    assert max(leaky) > 0.0                                   # random rows put some twins on both sides
    for k in range(4):                                        # still stratified by annotation source
        assert abs(d.source[grouped == k].mean() - d.source.mean()) < 0.05


def test_one_group_or_too_few_groups_is_one_line_naming_the_fix():
    src = np.zeros(10, np.int8)
    with pytest.raises(FkdError, match="1 near-duplicate group.*fewer folds.*folds_by=rows"):
        make_folds(src, 4, 0, groups=np.zeros(10, np.int64))
    with pytest.raises(FkdError, match="3 near-duplicate group.*fewer than the 4 folds"):
        make_folds(src, 4, 0, groups=np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2]))
    with pytest.raises(FkdError, match="holds 7 of 10 faces, more than a fold.*group_z"):
        make_folds(src, 4, 0, groups=np.array([0] * 7 + [1, 2, 3]))


def test_a_folder_of_one_face_fails_before_training(practice_copy, tmp_path):
    """Every training face the same image: one group, one line, nothing trained."""
    import zipfile
    lines = zipfile.ZipFile(practice_copy / "training.zip").read("training.csv").decode().splitlines()
    same = [lines[0]] + [lines[1]] * 40
    with zipfile.ZipFile(practice_copy / "training.zip", "w") as z:
        z.writestr("training.csv", "\n".join(same) + "\n")
    r = subprocess.run([sys.executable, "-m", "fkd", "train", "--data-dir", str(practice_copy), "--preset", "quick",
                        "--set", f"runs_dir={tmp_path / 'runs'}"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "1 near-duplicate group" in r.stderr and "folds_by=rows" in r.stderr
    assert not list((tmp_path / "runs").rglob("*.pt"))


@pytest.mark.parametrize("policy", ["keep", "average", "drop"])
def test_identical_images_with_other_labels_are_kept_averaged_or_dropped(practice_dir, policy):
    d = with_twins(load_data(practice_dir))
    n, last = len(d.images), d.keypoints[-1].copy()
    before = d.keypoints[EXACT].copy()
    out = resolve_duplicates(d, policy)
    if policy == "keep":
        assert len(out.images) == n and np.array_equal(out.keypoints[-1], last, equal_nan=True)
    elif policy == "average":
        assert len(out.images) == n - 1
        np.testing.assert_allclose(out.keypoints[EXACT], before + 1.0, rtol=0, atol=1e-5)   # the mean of the two
    else:
        assert len(out.images) == n - 2                   # both rows of the disagreeing pair
    # the other frames (not identical) are never touched by the flag
    assert sum(np.array_equal(out.images[i], d.images[COPIES[0]]) for i in range(len(out.images))) >= 1


def test_fkd_data_reports_duplicates_and_draws_groups(practice_dir, tmp_path):
    import shutil
    import zipfile
    comp = tmp_path / "comp"
    shutil.copytree(practice_dir, comp)
    lines = zipfile.ZipFile(comp / "training.zip").read("training.csv").decode().splitlines()
    with zipfile.ZipFile(comp / "training.zip", "w") as z:     # row 3 twice, once with its labels moved
        moved = ",".join([str(float(v) + 3) if v else v for v in lines[4].split(",")[:30]] + [lines[4].split(",")[-1]])
        z.writestr("training.csv", "\n".join(lines + [lines[4], moved]) + "\n")
    r = subprocess.run([sys.executable, "-m", "fkd", "data", "--data-dir", str(comp), "--out", str(tmp_path / "p.png")],
                       capture_output=True, text=True, env={**__import__("os").environ, "FKD_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert "identical images  3 rows in 1 sets; 1 set(s) labelled differently (rows 3/" in r.stdout
    assert "near duplicates" in r.stdout and "largest 3" in r.stdout
    png = tmp_path / f"duplicates-{comp.name}.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and str(png) in r.stdout
