"""Out-of-fold error analysis of a trained run (`fkd errors`): the worst faces, per-keypoint error by source.

    $ fkd errors runs/default-resnet18-1a2b3c4d      # writes errors-gallery.png and errors-per-keypoint.png there
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..competition import COMP, FULL
from ..competition.metric import per_keypoint
from ..config import replace
from ..learn.cv import training_data
from ..learn.runfiles import load_run, read_oof
from ..plots import face_grid, save


def error_report(run_dir: str | Path, worst: int = 16, tta: bool = True) -> dict:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    cfg, meta = load_run(run_dir)
    oof = read_oof(run_dir, tta)                                  # (N, 30)
    # the rows the run was trained on (limit_train samples them), so they line up with oof
    data = training_data(replace(cfg, data_dir=meta.get("data_dir") or cfg.data_dir))
    have = np.isfinite(oof).all(1)
    # rows outside the trained folds (a run of fold 0 only) have no out-of-fold prediction: ranked last
    err2 = np.where(np.isfinite(data.keypoints) & have[:, None], (oof - data.keypoints) ** 2, 0.0)
    per_img = np.where(have, np.sqrt(err2.sum(1) / np.isfinite(data.keypoints).sum(1).clip(1)), -1.0)
    order = np.argsort(-per_img)[:worst]
    # a row is scored on the values its source labels: a common-source face's other 11 outputs were never trained
    # (that source has no labels there), so only the scored values are drawn, prediction beside label
    scored = np.where(np.isfinite(data.keypoints[order]), oof[order], np.nan)
    gallery = face_grid(data.images[order], [(data.keypoints[order], "lime", "o", "label (truth)"),
                                             (scored, "red", "x", f"prediction of the values the row is scored on "
                                                                  f"(out of fold, TTA {'on' if tta else 'off'})")],
                        [f"row {i} {'full' if data.source[i] == FULL else 'common'}: {per_img[i]:.2f}px over "
                         f"{int(np.isfinite(data.keypoints[i]).sum() // 2)} points" for i in order],
                        run_dir / "errors-gallery.png")
    table = {}
    for name, sel in (("full", data.source == FULL), ("common", data.source != FULL)):
        table[name] = per_keypoint(oof[sel & have], data.keypoints[sel & have])
    fig, ax = plt.subplots(figsize=(9, 3.8))
    x = np.arange(15)
    for off, name in ((-0.2, "full"), (0.2, "common")):
        ax.bar(x + off, [table[name][k] for k in COMP.keypoints], width=0.4, label=f"{name} source")
    ax.set_xticks(x, COMP.keypoints, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("OOF RMSE (px)"), ax.legend(), ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{run_dir.name}: per-keypoint error by source ({'with' if tta else 'without'} TTA)")
    fig.tight_layout()
    per_kp = save(fig, run_dir / "errors-per-keypoint.png")
    return {"gallery": str(gallery), "per_keypoint_png": str(per_kp), "per_keypoint": table,
            "worst": [(int(i), float(per_img[i])) for i in order]}


def format_errors(r: dict) -> str:
    """The per-keypoint table by source and the worst faces of error_report."""
    lines = [f"{'keypoint':<26} {'full':>7} {'common':>7}"]
    for k in COMP.keypoints:
        f, c = r["per_keypoint"]["full"][k], r["per_keypoint"]["common"][k]
        lines.append(f"{k:<26} {f:7.3f} {c:7.3f}".replace("nan", "  -"))
    lines.append("worst faces (row, px): " + ", ".join(f"{i} {e:.2f}" for i, e in r["worst"][:8]))
    return "\n".join(lines)
