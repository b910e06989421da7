"""`fkd report RUN`: one self-contained HTML page per run that opens in any browser, offline.

The config, the CV (per fold, per source, per keypoint), how the folds were split and what leaks through them,
every fold's curve, the out-of-fold error gallery and per-keypoint chart, and the run's submissions with their
scores. Pictures are embedded (data: URIs), so the page can be mailed or attached as it is.

    $ fkd report runs/default-regnety_004-2b644a12       # writes runs/<name>/report.html
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from .. import atomic
from ..competition import COMP
from ..kaggle import ledger
from ..learn.cv import folds_line
from ..learn.runfiles import load_run, read_cv

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
.grid{display:flex;flex-wrap:wrap;gap:8px}.grid img{width:48%}.note{color:#666}"""
# sets body[data-images] to "ok N" once every picture decoded (or "broken K of N"): what a browser test reads
CHECK = """<script>window.addEventListener('load',()=>{const i=[...document.images];
const bad=i.filter(x=>!(x.complete&&x.naturalWidth>0)).length;
document.body.dataset.images=bad?`broken ${bad} of ${i.length}`:`ok ${i.length}`})</script>"""


def _img(path: Path, alt: str) -> str:
    if not path.is_file():
        return f'<p class="note">({html.escape(path.name)} not made yet)</p>'
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(head: list[str], rows: list[list]) -> str:
    cell = lambda v: f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))
    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows) + "</table>")


def _cv_section(cv: dict) -> str:
    if not cv:
        return "<p>No cv.json yet: the run is not finished (`fkd train` resumes it).</p>"
    folds = [[r["fold"], r["best_epoch"], r.get("kept_epoch", r["best_epoch"]), r["epochs_run"], r["val_rmse"],
              r["val_rmse_tta"], r["n_val"]] for r in cv.get("fold_results", [])]
    views = bool(cv.get("tta_views_weight"))          # shifted and zoomed views joined the flip (weight > 0)
    head = ["", "without TTA", "flip TTA", "flip + views (the CV)"] if views else ["", "without TTA", "flip TTA"]
    row = ["CV RMSE", cv["cv_rmse_no_tta"], *([cv["cv_rmse_flip_only"]] if views else []), cv["cv_rmse_tta"]]
    out = [_table(head + ["mean keypoint"], [row + [cv["mean_keypoint_rmse"]]]),
           f"<p>{html.escape(folds_line(cv))}</p>"]
    if cv.get("submission"):
        out.append(f"<p>The submission averages {html.escape(', '.join(cv['submission']['models']))}; this CV is "
                   f"{html.escape(cv['submission']['cv_estimates'])}.</p>")
    out.append(_table(["fold", "best epoch", "weights of epoch", "epochs", "val RMSE",
                       f"flip TTA (constant {cv.get('flip_const', '-')})", "faces"], folds))
    out.append(_table(["source", "RMSE"], [["fully labelled", cv["rmse_full"]], ["common 8 only", cv["rmse_common"]]]))
    out.append(_table(["keypoint", "RMSE"], [[k, v] for k, v in cv["per_keypoint"].items()]))
    return "\n".join(out)


def _submissions(run: str) -> str:
    rows = [r for r in ledger.rows() if r.get("run") == run]
    if not rows:
        return "<p>No submission of this run yet (`fkd predict`, `make submit`).</p>"
    return _table(["file", "CV", "local", "public", "private", "sent to", "status"],
                  [[Path(r["file"]).name, r["cv_rmse"] or "-", r["local_rmse"] or "-", r["public_score"] or "-",
                    r["private_score"] or "-", ledger.where_label(r), r["status"] or "local"] for r in rows])


def write_report(run_dir: str | Path) -> Path:
    """runs/<name>/report.html for a run folder (the error pictures are made first if missing)."""
    from .error_analysis import error_report

    run_dir = Path(run_dir)
    cfg, meta = load_run(run_dir)
    cv = read_cv(run_dir)
    if cv and not (run_dir / "errors-gallery.png").is_file() and len(cv.get("folds_trained", [])):
        error_report(run_dir)
    curves = "".join(_img(p, p.parent.name) for p in sorted(run_dir.glob("*/loss.png")))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(run_dir.name)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(run_dir.name)}</h1>
<p class="note">{html.escape(COMP.title)}: {html.escape(cfg.model)}/{html.escape(cfg.head)},
{html.escape(cfg.models_line(resolved=True))}, preset {html.escape(cfg.preset)};
data {html.escape(str(meta.get("data_dir")))}
(content hash {html.escape(str(meta.get("data_hash")))}); fkd {html.escape(str(meta.get("fkd_version")))}</p>
<h2>Cross-validation</h2>{_cv_section(cv)}
<h2>Curves</h2><div class="grid">{curves or '<p class="note">(no fold finished yet)</p>'}</div>
<h2>Where it errs (out of fold)</h2>{_img(run_dir / "errors-per-keypoint.png", "per-keypoint error")}
{_img(run_dir / "errors-gallery.png", "worst faces")}
<h2>Submissions</h2>{_submissions(run_dir.name)}
<h2>Config</h2><pre>{html.escape(json.dumps(cfg.to_dict(), indent=1))}</pre>
{CHECK}</body></html>"""
    return atomic.write_text(run_dir / "report.html", page)
