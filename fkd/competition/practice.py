"""The practice competition: procedurally drawn faces in the exact Kaggle file layout, plus solution.csv.

Each face is drawn with OpenCV at twice the resolution in a canonical frame (oval with shading, eyes with
sclera, iris, pupil and lids, brows, nose with nostrils, lips, hair), placed over a cluttered background by
one affine warp (rotation +-20 deg, scale, shift) after a mild yaw, lit by a gradient and given sensor noise.
The 15 keypoints are the drawing's own control points sent through the same transform, so they are exact
(written in the pixel-edge convention, x = pixel index + 0.5, so the flip constant is 96 as on ytf15). Two
annotation sources as in the real data: the fully
labelled source (listed first) and a common-only source that labels 8 columns and puts the nose tip
lower and the bottom-lip point higher.

    $ fkd practice --out competition/data/practice --seed 0 --n-train 2000 --n-test 500
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import cv2
import numpy as np

from .. import atomic
from .spec import COMMON_MASK, COMP

S = COMP.image_size
HI = 2  # drawing supersampling factor

# Canonical keypoints (96-px frame, before yaw and pose), in COMP.keypoints order.
CANON = np.array([
    [66, 38], [30, 38],            # left / right eye centre (subject's left is the image's right)
    [58, 39], [75, 39],            # left eye inner / outer corner
    [38, 39], [21, 39],            # right eye inner / outer corner
    [57, 29], [79, 30],            # left brow inner / outer end
    [39, 29], [17, 30],            # right brow inner / outer end
    [48, 58],                      # nose tip
    [63, 76], [33, 76],            # mouth left / right corner
    [48, 72], [48, 81],            # top lip / bottom lip centre
], np.float64)
DEPTH = np.array([.35, .35, .3, .25, .3, .25, .35, .2, .35, .2, 1., .45, .45, .6, .55])  # yaw parallax
# The common-only source's labelling habit, in the face's own frame (pixels, +y = down the face).
COMMON_SHIFT = {"nose_tip": (0.0, 4.5), "mouth_center_bottom_lip": (0.0, -3.5)}


def _face_shape(rng) -> np.ndarray:
    """Per-person variation of the canonical keypoints (15, 2)."""
    k = CANON.copy()
    eye_sep = rng.normal(0, 1.8)
    k[[0, 2, 3, 6, 7], 0] += eye_sep
    k[[1, 4, 5, 8, 9], 0] -= eye_sep
    k[0:10, 1] += rng.normal(0, 1.5)             # eye line height
    k[6:10, 1] += rng.normal(0, 1.5)             # brow height
    k[10, 1] += rng.normal(0, 2.0)               # nose length
    mouth_y, mouth_w, lip = rng.normal(0, 2.0), rng.normal(0, 2.0), abs(rng.normal(4.5, 1.0))
    k[11:15, 1] += mouth_y
    k[11, 0] += mouth_w
    k[12, 0] -= mouth_w
    k[13, 1] = k[11, 1] - lip * 0.8 + rng.normal(0, 0.5)
    k[14, 1] = k[11, 1] + lip + rng.normal(0, 0.5)
    return k + rng.normal(0, 0.4, k.shape)


def _pose(rng) -> tuple[np.ndarray, float]:
    """Random affine (2x3, 96-px frame) of the face: rotation +-20 deg, scale, shift about the centre."""
    angle = rng.uniform(-20, 20)
    scale = rng.uniform(0.82, 1.12)
    m = cv2.getRotationMatrix2D(((S - 1) / 2, (S - 1) / 2), angle, scale)
    m[:, 2] += rng.uniform(-6, 6, 2)
    return m, angle


_XX = np.tile(np.arange(S, dtype=np.float32) / S - 0.5, (S, 1))               # (96, 96) x in [-0.5, 0.5)
_XX_HI = np.tile(np.arange(S * HI, dtype=np.float32) / (S * HI) - 0.5, (S * HI, 1))


def _hi(p) -> tuple[int, int]:
    """96-px pixel-index point -> fixed-point (4 fractional bits) point on the 2x canvas."""
    return (int(round((p[0] * HI + (HI - 1) / 2) * 16)), int(round((p[1] * HI + (HI - 1) / 2) * 16)))


def _hr(r: float) -> int:
    return int(round(r * HI * 16))


def _draw_face(rng, k: np.ndarray, yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """Draw the face on a 2x canvas in its canonical frame; returns (intensity, alpha) float32."""
    n = S * HI
    img = np.zeros((n, n), np.float32)
    alpha = np.zeros((n, n), np.float32)
    aa, sh = cv2.LINE_AA, 4
    skin = rng.uniform(110, 210)
    cx = 48 + yaw * 4
    # hair behind the head, then the face oval
    hair = rng.uniform(20, 90) if rng.random() < 0.8 else rng.uniform(170, 230)
    cv2.ellipse(img, _hi((cx, 40)), (_hr(33), _hr(34 + rng.uniform(0, 6))), 0, 180, 360, hair, -1, aa, sh)
    cv2.ellipse(alpha, _hi((cx, 40)), (_hr(33), _hr(34 + rng.uniform(0, 6))), 0, 180, 360, 1, -1, aa, sh)
    face_ax = (_hr(29 * (1 - 0.15 * abs(yaw)) + rng.normal(0, 1.5)), _hr(40 + rng.normal(0, 2)))
    cv2.ellipse(img, _hi((cx, 52)), face_ax, 0, 0, 360, skin, -1, aa, sh)
    cv2.ellipse(alpha, _hi((cx, 52)), face_ax, 0, 0, 360, 1, -1, aa, sh)
    # side shading of the oval (the face is lit from one side)
    img *= 1 + _XX_HI * rng.uniform(-0.35, 0.35) * (alpha > 0)
    # brows
    brow = skin * rng.uniform(0.2, 0.55)
    for a, b in ((6, 7), (8, 9)):
        cv2.line(img, _hi(k[a]), _hi(k[b]), brow, max(2, int(HI * rng.uniform(1.5, 3))), aa, sh)
    # eyes: sclera between the corners, iris and pupil at the centre, a lid line above
    iris = rng.uniform(30, 120)
    for c, i, o in ((0, 2, 3), (1, 4, 5)):
        ctr = (k[i] + k[o]) / 2
        half_w = abs(k[o, 0] - k[i, 0]) / 2
        ang = float(np.degrees(np.arctan2(k[o, 1] - k[i, 1], k[o, 0] - k[i, 0])))
        cv2.ellipse(img, _hi(ctr), (_hr(half_w), _hr(rng.uniform(2.6, 3.6))), ang, 0, 360,
                    min(255, skin + 40), -1, aa, sh)
        cv2.circle(img, _hi(k[c]), _hr(2.6), iris, -1, aa, sh)
        cv2.circle(img, _hi(k[c]), _hr(1.2), 15, -1, aa, sh)
        cv2.ellipse(img, _hi(ctr), (_hr(half_w + 0.5), _hr(3.8)), ang, 195, 345, skin * 0.35, HI, aa, sh)
    # nose: bridge shadow to the tip, nostrils beside it, a highlight on the tip
    tip = k[10]
    cv2.line(img, _hi((tip[0] - 2 + yaw * 2, k[0, 1] + 4)), _hi((tip[0] - 3, tip[1] - 2)), skin * 0.75, HI,
             aa, sh)
    for dx in (-3.5, 3.5):
        cv2.ellipse(img, _hi((tip[0] + dx, tip[1] + 1.5)), (_hr(1.8), _hr(1.1)), 0, 0, 360, skin * 0.35, -1,
                    aa, sh)
    cv2.circle(img, _hi((tip[0], tip[1] - 0.5)), _hr(1.6), min(255, skin * 1.15), -1, aa, sh)
    # mouth: upper and lower lip polygons through the corners and the lip centres
    lip_c = skin * rng.uniform(0.45, 0.75)
    lc, r, t, b = k[11], k[12], k[13], k[14]
    mid_y = (lc[1] + r[1]) / 2
    upper = np.array([_hi(lc), _hi((t[0] + 5, t[1] - 0.5)), _hi(t), _hi((t[0] - 5, t[1] - 0.5)), _hi(r),
                      _hi((t[0], mid_y + 0.5))], np.int32)
    lower = np.array([_hi(lc), _hi((t[0], mid_y + 0.5)), _hi(r), _hi(((r[0] + b[0]) / 2, b[1] - 1.5)), _hi(b),
                      _hi(((lc[0] + b[0]) / 2, b[1] - 1.5))], np.int32)
    cv2.fillPoly(img, [upper, lower], lip_c, aa, sh)
    cv2.line(img, _hi(lc), _hi(r), lip_c * 0.4, HI, aa, sh)
    return img, alpha


def _background(rng) -> np.ndarray:
    bg = np.full((S, S), rng.uniform(40, 220), np.float32)
    for _ in range(rng.integers(3, 9)):
        kind, col = rng.integers(3), float(rng.uniform(0, 255))
        p = rng.uniform(-10, S + 10, 4).astype(int)
        if kind == 0:
            cv2.rectangle(bg, (p[0], p[1]), (p[2], p[3]), col, -1)
        elif kind == 1:
            cv2.circle(bg, (p[0], p[1]), int(rng.uniform(4, 30)), col, -1)
        else:
            cv2.line(bg, (p[0], p[1]), (p[2], p[3]), col, int(rng.integers(1, 5)))
    return cv2.GaussianBlur(bg, (0, 0), rng.uniform(1.0, 3.0))


def draw(rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One face: (96, 96) uint8 image, its (30,) true keypoints in pixels, and its pose (2x3)."""
    yaw = rng.uniform(-0.3, 0.3)
    k = _face_shape(rng)
    k[:, 0] += yaw * DEPTH * 14 + (k[:, 0] - 48) * (-0.12 * abs(yaw))  # mild yaw: parallax + foreshortening
    face, alpha = _draw_face(rng, k, yaw)
    m, angle = _pose(rng)
    # the 2x canvas -> 96-px frame (x = (u - 0.5) / 2), then the pose
    down = np.array([[1 / HI, 0, -(HI - 1) / (2 * HI)], [0, 1 / HI, -(HI - 1) / (2 * HI)], [0, 0, 1]])
    full = m @ down
    face = cv2.GaussianBlur(face, (0, 0), 0.6)
    face = cv2.warpAffine(face, full, (S, S), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(alpha, full, (S, S), flags=cv2.INTER_LINEAR)
    img = _background(rng) * (1 - alpha) + face * alpha
    g = rng.uniform(-0.4, 0.4, 2)
    img = img * (1 + g[0] * _XX + g[1] * _XX.T) * rng.uniform(0.75, 1.15)
    img = img + rng.normal(0, rng.uniform(2, 8), img.shape)
    # labels in the pixel-edge convention (pixel i spans [i, i+1)): flip constant 96, like ytf15 (measured)
    kp = (np.c_[k, np.ones(15)] @ m.T).astype(np.float64) + 0.5  # (15, 2) in the image
    return np.clip(np.round(img), 0, 255).astype(np.uint8), kp.ravel(), m


def _source_labels(kp: np.ndarray, angle_m: np.ndarray) -> np.ndarray:
    """The common-only source's labels of the same face: nose tip lower, bottom lip higher (face frame)."""
    out = kp.copy().reshape(15, 2)
    lin = angle_m[:, :2]
    for name, shift in COMMON_SHIFT.items():
        out[COMP.keypoints.index(name)] += lin @ np.array(shift)
    return out.ravel()


def _generate(rng, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n faces: images (n,96,96), true keypoints (n,30), and each face's common-source labels (n,30)."""
    images = np.empty((n, S, S), np.uint8)
    true = np.empty((n, 30))
    common = np.empty((n, 30))
    for i in range(n):
        face_rng = np.random.default_rng(rng.integers(2**63))
        images[i], true[i], m = draw(face_rng)
        common[i] = _source_labels(true[i], m)  # the shift turns and scales with the face
    return images, true, common


_PIX = np.zeros((256, 4), np.uint8)  # each value's digits + a space, zero-padded
for _v in range(256):
    _b = f"{_v} ".encode()
    _PIX[_v, : len(_b)] = np.frombuffer(_b, np.uint8)


def image_strings(images: np.ndarray) -> list[bytes]:
    """(N, 96, 96) uint8 -> the Image column, one bytes string a row, without Python per pixel."""
    n = len(images)
    t = _PIX[images.reshape(n, -1)]                       # (N, 9216, 4)
    lens = (t != 0).sum(-1).reshape(n, -1).sum(1)         # bytes per row
    flat = t.reshape(-1)
    flat = flat[flat != 0]
    out, pos = [], 0
    for L in lens.tolist():
        out.append(flat[pos: pos + L - 1].tobytes())     # drop the trailing space
        pos += L
    return out


def _fmt(v: float) -> bytes:
    return b"" if not np.isfinite(v) else f"{v:.6f}".encode()


def _zip_bytes(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        info = zipfile.ZipInfo(name, date_time=(2013, 5, 7, 0, 0, 0))  # fixed: byte-identical output
        info.compress_type = zipfile.ZIP_DEFLATED
        info._compresslevel = 1
        info.external_attr = 0o644 << 16
        zf.writestr(info, data)
    return buf.getvalue()


def make_practice(out: str | Path, seed: int = 0, n_train: int = 2000, n_test: int = 500,
                  full_fraction: float = 0.3) -> dict:
    """Write the practice competition into `out`; returns figures (mean-keypoint RMSE, source gap)."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    images, true, common = _generate(rng, n)
    n_full_tr, n_full_te = round(n_train * full_fraction), round(n_test * full_fraction)
    is_full = np.zeros(n, bool)
    is_full[:n_full_tr] = True
    is_full[n_train: n_train + n_full_te] = True
    labels = _labels(rng, true, common, is_full)
    tr, te = slice(0, n_train), slice(n_train, n)
    out.mkdir(parents=True, exist_ok=True)
    written, lookup_rows = _write_files(out, images[tr], labels[tr], images[te], labels[te])
    # figures: the mean-keypoint baseline on the test set, and how far apart the sources label
    mean = np.nanmean(labels[tr], 0)
    err = (labels[te] - mean)[np.isfinite(labels[te])]
    src_gap = {name: float(np.nanmean(labels[tr][~is_full[tr], 2 * COMP.keypoints.index(name) + 1])
                             - np.nanmean(labels[tr][is_full[tr], 2 * COMP.keypoints.index(name) + 1]))
               for name in COMMON_SHIFT}
    return {"files": [str(p) for p in written], "mean_keypoint_rmse": float(np.sqrt(np.mean(err ** 2))),
            "source_gap_y": src_gap, "n_train": n_train, "n_test": n_test,
            "n_full_train": n_full_tr, "lookup_rows": lookup_rows}


def _labels(rng, true: np.ndarray, common: np.ndarray, is_full: np.ndarray) -> np.ndarray:
    """(n, 30) labels as the two sources give them: the full source's points, or the common source's 8."""
    n = len(true)
    labels = np.where(is_full[:, None], true, common)
    labels[np.ix_(~is_full, ~COMMON_MASK)] = np.nan
    # a few fully labelled rows miss some keypoints (kept: one beyond the common 8), a few common rows the lip
    for i in np.flatnonzero(is_full):
        if rng.random() < 0.06:
            kp_drop = rng.choice([2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13], size=rng.integers(1, 6), replace=False)
            labels[i, np.r_[kp_drop * 2, kp_drop * 2 + 1]] = np.nan
    for i in np.flatnonzero(~is_full):
        if rng.random() < 0.003:
            labels[i, 28:30] = np.nan
    # a label pushed outside the image is not labelled (as in Kaggle's files)
    outside = (labels < 0) | (labels > S)
    kp_out = outside.reshape(n, 15, 2).any(-1)
    labels.reshape(n, 15, 2)[kp_out] = np.nan
    return np.round(labels, 6)


def _write_files(out: Path, train_images, train_labels, test_images, test_labels) -> tuple[list[Path], int]:
    """The five files in Kaggle's layout (+ solution.csv); the number of lookup rows."""
    header = ",".join(COMP.columns + ["Image"]).encode()
    rows = [b",".join([_fmt(v) for v in lab] + [img]) for lab, img in zip(train_labels, image_strings(train_images))]
    training_csv = b"\n".join([header] + rows) + b"\n"
    test_ids = np.arange(1, len(test_images) + 1)
    rows = [b"%d,%s" % (i, img) for i, img in zip(test_ids, image_strings(test_images))]
    test_csv = b"\n".join([b"ImageId,Image"] + rows) + b"\n"
    # lookup: fully labelled test images ask for what they have labelled, the others for the common 8
    lk_rows, sol_rows, row_id = [b"RowId,ImageId,FeatureName,Location"], [b"RowId,Location"], 1
    for img_id, lab in zip(test_ids, test_labels):
        for j, col in enumerate(COMP.columns):
            if np.isfinite(lab[j]):
                lk_rows.append(b"%d,%d,%s," % (row_id, img_id, col.encode()))
                sol_rows.append(b"%d,%s" % (row_id, _fmt(lab[j])))
                row_id += 1
    sample = [b"RowId,Location"] + [b"%d,0" % r for r in range(1, row_id)]
    written = [
        atomic.write_bytes(out / "training.zip", _zip_bytes("training.csv", training_csv)),
        atomic.write_bytes(out / "test.zip", _zip_bytes("test.csv", test_csv)),
        atomic.write_bytes(out / COMP.files["lookup"], b"\n".join(lk_rows) + b"\n"),
        atomic.write_bytes(out / COMP.files["sample"], b"\n".join(sample) + b"\n"),
        atomic.write_bytes(out / "solution.csv", b"\n".join(sol_rows) + b"\n"),
    ]
    return written, row_id - 1


def describe(r: dict, out) -> str:
    """What make_practice wrote, in two lines."""
    return (f"practice competition in {out}: {r['n_train']} training faces ({r['n_full_train']} fully labelled), "
            f"{r['n_test']} test faces, {r['lookup_rows']} lookup rows\n"
            f"mean-keypoint RMSE on its test set: {r['mean_keypoint_rmse']:.3f} px; common-only source labels the "
            f"nose tip {r['source_gap_y']['nose_tip']:+.2f} px and the bottom lip "
            f"{r['source_gap_y']['mouth_center_bottom_lip']:+.2f} px lower (mean y) than the full source")
