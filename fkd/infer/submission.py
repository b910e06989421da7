"""A submission: predictions written through IdLookupTable.csv, its sidecar JSON, ledger row and local score.

    >>> sub = submission_frame(pred, data)                                             # doctest: +SKIP
    >>> info = write_submission(sub, "my-run", data, {}, cv_rmse=1.9, tta=True)        # doctest: +SKIP

The CSV is written to a temp file and renamed, so a kill never leaves a partial file; the sidecar JSON holds
the run, its resolved config, CV RMSE, TTA on/off, data hash, git commit and fkd version; the ledger
(submissions/ledger.sqlite) gets a row, with the local score when the data folder has a solution.csv.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__, atomic
from ..competition import COMP, ROOT
from ..competition.data import CompetitionData, test_hash
from ..errors import FkdError
from ..kaggle import ledger


def submission_frame(pred: np.ndarray, data: CompetitionData) -> pd.DataFrame:
    """(M, 30) predictions -> RowId,Location in the lookup table's order, clipped to the image, never NaN."""
    lk = data.lookup
    values = pred[lk["img"].to_numpy(), lk["col"].to_numpy()].astype(np.float64)
    if not np.isfinite(values).all():
        raise FkdError("the model predicted NaN or inf for some test images; the run is broken, retrain it")
    values = np.clip(values, 0.0, float(COMP.image_size))
    sub = pd.DataFrame({"RowId": lk["RowId"].to_numpy(), "Location": values})
    if data.sample_rowids is not None:
        if len(sub) != len(data.sample_rowids) or not np.array_equal(np.sort(sub.RowId), np.sort(data.sample_rowids)):
            raise FkdError(f"{data.data_dir}: the submission's RowIds do not match {COMP.files['sample']}")
    return sub


def write_csv(sub: pd.DataFrame, path: Path) -> Path:
    text = "RowId,Location\n" + "".join(f"{r},{v:.6f}\n" for r, v in zip(sub.RowId.tolist(), sub.Location.tolist()))
    return atomic.write_text(path, text)


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def local_scores(csv: Path, data: CompetitionData) -> dict:
    """Overall, public and private RMSE of a written submission against the folder's solution.csv."""
    from ..competition.metric import read_lookup_sources, read_submission, score

    lk = data.data_dir / COMP.files["lookup"]
    lookup = read_lookup_sources(lk if lk.is_file() else data.solution_path.parent / COMP.files["lookup"])
    sub, sol = read_submission(csv), read_submission(data.solution_path)
    return {"all": score(sub, sol, lookup, where=str(csv)),
            "public": score(sub, sol, lookup, "public", str(csv))["rmse"],
            "private": score(sub, sol, lookup, "private", str(csv))["rmse"]}


def write_submission(sub: pd.DataFrame, name: str, data: CompetitionData, info: dict, cv_rmse: float | None,
                     tta: bool, out_dir: str | Path = "submissions") -> dict:
    """<out_dir>/<UTC time>-<name>.csv written atomically, its ledger row, its local score (where the folder has
    a solution.csv) and its sidecar JSON (`info` + provenance); returns the sidecar's content."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(out_dir) / f"{stamp}-{name}.csv"
    n = 1
    while out.exists():
        out = Path(out_dir) / f"{stamp}-{name}-{n}.csv"
        n += 1
    write_csv(sub, out)
    info = {**info, "file": str(out), "run": name, "cv_rmse": cv_rmse, "tta": tta,
            "data_dir": str(Path(data.data_dir).resolve()), "data_hash": data.data_hash, "test_hash": test_hash(data),
            "git_commit": git_commit(), "fkd_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": len(sub)}
    ledger.record(out, run=name, cv_rmse=cv_rmse, tta=int(tta), competition=COMP.slug, status="local",
                  data_hash=info["data_hash"], test_hash=info["test_hash"], trained_on=info.get("trained_on"))
    if data.solution_path is not None:
        s = info["local_score"] = local_scores(out, data)
        ledger.record(out, local_rmse=s["all"]["rmse"], local_public=s["public"], local_private=s["private"])
    atomic.write_json(out.with_suffix(".json"), info)
    return info


def describe(info: dict) -> str:
    """A written submission in a line or two: its run, folds, TTA, CV and (with a solution.csv) its local score."""
    cv = info["cv_rmse"] if info["cv_rmse"] is None else round(info["cv_rmse"], 4)
    lines = [f"submission from {info['run']} ({', '.join(info.get('models') or info.get('folds', []))}; TTA "
             f"{'on' if info['tta'] else 'off'}), CV RMSE {cv}"]
    if info.get("cv_estimates"):
        lines.append(f"the CV is {info['cv_estimates']}")
    if "local_score" in info:
        s = info["local_score"]
        lines.append(f"local score against solution.csv: {s['all']['rmse']:.4f} (full {s['all']['rmse_full']:.4f}, "
                     f"common {s['all']['rmse_common']:.4f}; public {s['public']:.4f}, private {s['private']:.4f})")
    return "\n".join(lines)
