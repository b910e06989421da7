"""What every benchmark measures on: --data-dir, else ytf15 beside the checkout, else the practice competition.

    >>> d, label = bench_data(None)   # doctest: +SKIP
"""
from __future__ import annotations

import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
YTF15 = ROOT.parent / "shared" / "benchmarks" / "ytf15"
# The default preset's settings before grouped folds (2026-11-30), as --set arguments: the tables measured then
# (ablations.py, equal_time.py) pin them, so their rows still train what they trained then. Training fields first
# (folds by rows, the best epoch's weights, one augmentation strength throughout), then what would only add work
# or change the reported TTA (no refit model, flip TTA alone).
BEFORE_GROUPED = [x for v in ("folds_by=rows", "fold_weights=best", "aug_end=-1", "refit=0", "tta_shift=0",
                              "tta_scale=0", "tta_rotate=0") for x in ("--set", v)]


def bench_data(arg: str | None, n_train: int = 2000) -> tuple[Path, str]:
    """(folder, label). Without --data-dir and without ../shared (a fresh clone elsewhere), the practice
    competition is written into a temporary folder, and the benchmark says so."""
    if arg:
        return Path(arg), Path(arg).name
    if (YTF15 / "training.zip").is_file() or (YTF15 / "training.csv").is_file():
        return YTF15, "ytf15"
    import sys
    sys.path.insert(0, str(ROOT))
    from fkd.competition.practice import make_practice

    d = Path(tempfile.mkdtemp(prefix="fkd-bench-")) / "practice"
    print(f"no --data-dir and no {YTF15}: measuring on the practice competition instead (written to {d}; "
          "its faces are drawn, so compare ratios, not absolute figures, with ytf15's)", flush=True)
    make_practice(d, seed=0, n_train=n_train, n_test=100)
    return d, "practice"
