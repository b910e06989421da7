"""`fkd runs`: every run folder in one table, best first, joined with the ledger's submissions of each run.

    $ fkd runs
"""
from __future__ import annotations

import time
from pathlib import Path

from ..errors import FkdError
from ..kaggle import ledger
from ..learn.runfiles import load_run, read_cv
from ..remote.run import read_state as read_remote


def run_table(runs_dir: str | Path = "runs") -> list[dict]:
    """One row per run folder: what it trained, how its folds were split (rows or near-duplicate groups) and the
    share of validation faces with a near-twin in training, how long, its CV without and with TTA, when, whether
    submitted;
    finished runs best first (CV with TTA), unfinished ones after them, and folders that cannot be read last,
    with the reason (a config of another fkd version, a damaged config.yaml)."""
    sent = ledger.best_per_run(ledger.rows())
    out = []
    for d in sorted(p for p in Path(runs_dir).glob("*") if (p / "config.yaml").is_file()):
        date = time.strftime("%Y-%m-%d %H:%M", time.localtime((d / "config.yaml").stat().st_mtime))
        try:
            cfg, _ = load_run(d)
        except FkdError as e:
            out.append({"run": d.name, "date": date, "unreadable": str(e)})
            continue
        cv = read_cv(d)
        done = sorted(int(p.parent.name[4:]) for p in d.glob("fold*/result.json"))
        s = sent.get(d.name) or {}
        remote = read_remote(d)
        out.append({"run": d.name, "model": cfg.model, "head": cfg.head, "epochs": cfg.epochs, "folds": cfg.folds,
                    "folds_done": len(done), "minutes": (cv.get("train_seconds") or 0) / 60 or None,
                    "cv": cv.get("cv_rmse_no_tta"), "cv_tta": cv.get("cv_rmse_tta"), "date": date,
                    "submitted": s.get("destination") or ("yes" if s else ""), "public": s.get("public_score"),
                    "folds_by": cfg.folds_by, "twins": cv.get("near_twin_share"),
                    "trained": f"kaggle v{remote['version']}" if remote.get("version") else "here"})
    return sorted(out, key=lambda r: ("unreadable" in r, r.get("cv_tta") is None, r.get("cv_tta") or 0.0))


def format_run_table(rows: list[dict]) -> str:
    if not rows:
        return "no runs yet: `fkd train` or `make submit`"
    f = lambda v: f"{v:7.4f}" if v is not None else f"{'-':>7}"
    head = (f"{'run':<40} {'model':<16} {'head':<8} {'epochs':>6} {'folds':>5} {'split':<6} {'twins':>6} {'min':>6} "
            f"{'CV':>7} {'CV+TTA':>7} {'trained':<10} {'date':<16} submitted (public)")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "unreadable" in r:
            lines.append(f"{r['run'][:40]:<40} not listed: {r['unreadable']}")
            continue
        folds = f"{r['folds_done']}/{r['folds']}"
        minutes = f"{r['minutes']:.1f}" if r["minutes"] else "-"
        sub = f"{r['submitted']} ({r['public']:.4f})" if r["public"] is not None else r["submitted"]
        twins = f"{r['twins']:.1%}" if r["twins"] is not None else "-"
        lines.append(f"{r['run'][:40]:<40} {r['model'][:16]:<16} {r['head'][:8]:<8} {r['epochs']:>6} {folds:>5} "
                     f"{r['folds_by']:<6} {twins:>6} {minutes:>6} {f(r['cv'])} {f(r['cv_tta'])} {r['trained']:<10} "
                     f"{r['date']:<16} {sub}")
    return "\n".join(lines)
