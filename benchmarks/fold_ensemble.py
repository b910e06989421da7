"""Fold ensembling, measured: each fold model alone on the test set vs their average (both with flip TTA).

    $ python benchmarks/fold_ensemble.py runs/default-resnet18-c4fe8165 --data-dir ../shared/benchmarks/ytf15

Needs a folder with solution.csv (the practice competition, ytf15); prints one row per fold model, the mean
and std of those single-model scores, and the ensemble's score. Nothing is written and no ledger row is made.
"""
import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np

from fkd.competition import COMP
from fkd.competition.data import load_data
from fkd.competition.metric import read_lookup_sources, read_submission, score
from fkd.infer.predict import ensemble_predict
from fkd.infer.submission import submission_frame
from fkd.learn.runfiles import (
    checkpoints,
    load_run,
    tta_constant,
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--data-dir", help="competition folder with solution.csv (default: the run's)")
    ap.add_argument("--no-tta", action="store_true")
    a = ap.parse_args(argv)
    run = Path(a.run_dir)
    cfg, meta = load_run(run)
    data = load_data(a.data_dir or meta.get("data_dir") or cfg.data_dir)
    if data.solution_path is None:
        sys.exit(f"{data.data_dir}: no solution.csv; fold ensembling can only be scored where the truth is known")
    cv = json.loads((run / "cv.json").read_text()) if (run / "cv.json").is_file() else {}
    tta, const = not a.no_tta, tta_constant(cfg, cv)
    sol = read_submission(data.solution_path)
    lookup = read_lookup_sources(data.solution_path.parent / COMP.files["lookup"])

    def rmse(pred: np.ndarray) -> float:
        return score(submission_frame(pred, data), sol, lookup)["rmse"]

    preds, single = [], []
    for ck in checkpoints(run):
        preds.append(ensemble_predict(cfg, [ck], data, tta, const))
        single.append(rmse(preds[-1]))
        print(f"{ck.parent.name:<8} alone        test RMSE {single[-1]:.4f}", flush=True)
    ens = rmse(np.mean(preds, 0))
    sd = statistics.stdev(single) if len(single) > 1 else 0.0
    print(f"single fold models: mean {statistics.mean(single):.4f} ± {sd:.4f} (best {min(single):.4f})")
    print(f"{len(single)}-fold ensemble: test RMSE {ens:.4f}  "
          f"({ens - statistics.mean(single):+.4f} vs the mean single model; "
          f"TTA {'c = %.3f' % const if tta else 'off'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
