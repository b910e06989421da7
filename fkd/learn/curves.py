"""Live training curves where Kagglers look for them: TensorBoard event files beside each fold's metrics.csv.

Every epoch of every fold (and refit model) adds its train and validation RMSE, learning rate and seconds under
the same tags, so runs and folds compare on one chart: `make board` (tensorboard --logdir runs) shows them as
they train, run/fold by run/fold. Without the tensorboard package the logger does nothing (metrics.csv and
loss.png remain).

    >>> with Curves(Path("runs/x/fold0")) as curves:      # doctest: +SKIP
    ...     curves.epoch(1, {"train_rmse": 3.1, "val_rmse": 2.8, "lr": 1e-3, "seconds": 9.6})
"""
from __future__ import annotations

from pathlib import Path

TAGS = {"train_rmse": "rmse/train (augmented, px)", "val_rmse": "rmse/validation (px)", "lr": "learning rate",
        "seconds": "seconds per epoch"}


class Curves:
    """A TensorBoard writer for one fold's folder, or one that does nothing where tensorboard is missing."""

    def __init__(self, folder: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:           # the package is optional: the curves are a view, metrics.csv the record
            self.writer = None
        else:
            self.writer = SummaryWriter(log_dir=str(folder), flush_secs=10)

    def epoch(self, epoch: int, row: dict) -> None:
        if self.writer is None:
            return
        for key, tag in TAGS.items():
            if row.get(key) is not None:
                self.writer.add_scalar(tag, row[key], epoch)
        self.writer.flush()          # visible in a running TensorBoard at once

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> "Curves":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
