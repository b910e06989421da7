"""Pictures people would rather look at than read: faces with keypoints drawn on them, loss curves.

    >>> face_grid(images[:8], [(kp[:8], "lime", "o")], [f"row {i}" for i in range(8)], "faces.png")  # doctest: +SKIP
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from . import atomic


def save(fig, out: str | Path, **savefig_kw) -> Path:
    """Write a matplotlib figure atomically as PNG and close it: every PNG fkd writes goes through here."""
    import matplotlib.pyplot as plt

    with atomic.atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, format="png", **savefig_kw)
    plt.close(fig)
    return Path(out)


def face_grid(images: np.ndarray, point_sets: list[tuple], titles: list[str], out: str | Path, cols: int = 4) -> Path:
    """images (n, 96, 96); point_sets: (keypoints (n, 30), colour or per-face colours, marker[, legend label])
    drawn in order; labelled sets get a legend above the grid."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, (len(images) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.4 * rows))
    axes = np.atleast_1d(axes).ravel()
    for ax in axes:
        ax.axis("off")
    for j, (ax, img) in enumerate(zip(axes, images)):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        for kp, colour, marker, *label in point_sets:
            k = kp[j].reshape(15, 2)
            c = colour[j] if isinstance(colour, (list, tuple, np.ndarray)) else colour
            ax.scatter(k[:, 0], k[:, 1], s=9, c=c, marker=marker, label=label[0] if label and j == 0 else None)
        ax.set_title(titles[j], fontsize=7)
    fig.tight_layout()
    if any(len(ps) > 3 for ps in point_sets):
        fig.subplots_adjust(top=1 - 0.6 / fig.get_figheight())
        fig.legend(loc="upper center", ncol=len(point_sets), fontsize=8, frameon=False)
    return save(fig, out)


def loss_curve(history: list[dict], path: str | Path, title: str) -> Path:
    """A fold's training and validation RMSE by epoch (log scale): loss.png beside its metrics.csv."""
    return save(loss_figure(history, title), path)


def loss_figure(history: list[dict], title: str):
    """The figure of loss_curve."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(ep, [h["train_rmse"] for h in history], label="train RMSE (augmented, px)")
    if "val_rmse" in history[0]:                  # a refit model trains on every row: no validation curve
        ax.plot(ep, [h["val_rmse"] for h in history], label="validation RMSE (px)")
    ax.set_xlabel("epoch"), ax.set_ylabel("RMSE (px)"), ax.grid(alpha=0.3), ax.legend()
    ax.set_title(textwrap.fill(title, 48), fontsize=10)     # a run's name is long: wrapped, never clipped
    ax.set_yscale("log")
    fig.tight_layout()
    return fig
