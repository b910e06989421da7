"""The `fkd` command line: thin commands, each building a Config or reading arguments and making one call.

    $ fkd --help
    $ fkd practice --out competition/data/practice && fkd train --data-dir competition/data/practice --preset quick

Bad input prints one line (`fkd: error: ...`) and exits 2; every command ends by printing the files it wrote.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from .errors import FkdError  # noqa: E402


def _wrote(*paths) -> None:
    print("wrote:")
    for p in paths:
        print(f"  {p}")


def _config_args(p: argparse.ArgumentParser, data_default: str | None = None) -> None:
    p.add_argument("--data-dir", default=data_default, help="competition folder (Kaggle layout)")
    p.add_argument("--config", help="YAML file of config fields (e.g. tuning/best.yaml)")
    from .config import PRESETS

    p.add_argument("--preset", choices=list(PRESETS), help="preset defaults (default: default)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set lr=1e-3 --set model=convnext_atto")


def _make_cfg(a):
    from .config import make_config

    extra = {"data_dir": a.data_dir} if getattr(a, "data_dir", None) else {}
    return make_config(preset=a.preset, config_file=a.config, overrides=a.sets, **extra)


# ------------------------------------------------------------------------------------------ commands
def cmd_data(a):
    from .data import cache_dir, load_data, preview, summary

    d = load_data(a.data_dir)
    print(summary(d))
    out = Path(a.out) if a.out else cache_dir() / f"preview-{Path(a.data_dir).resolve().name}.png"
    preview(d, out)
    _wrote(out)


def cmd_practice(a):
    from .practice import make_practice

    r = make_practice(a.out, seed=a.seed, n_train=a.n_train, n_test=a.n_test)
    print(f"practice competition in {a.out}: {r['n_train']} training faces ({r['n_full_train']} fully labelled), "
          f"{r['n_test']} test faces, {r['lookup_rows']} lookup rows")
    print(f"mean-keypoint RMSE on its test set: {r['mean_keypoint_rmse']:.3f} px; common-only source labels the "
          f"nose tip {r['source_gap_y']['nose_tip']:+.2f} px and the bottom lip "
          f"{r['source_gap_y']['mouth_center_bottom_lip']:+.2f} px lower (mean y) than the full source")
    _wrote(*r["files"])


def cmd_score(a):
    from .metric import score_files

    r = score_files(a.submission, a.solution, a.lookup, subset=a.subset)
    if a.json:
        print(json.dumps(r))
    else:
        print(f"rmse {r['rmse']:.5f}  rmse_full {r['rmse_full']:.5f}  rmse_common {r['rmse_common']:.5f}  "
              f"({r['rows']} rows, {r['subset']})")


def cmd_train(a):
    from .train import format_cv, run_cv

    cfg = _make_cfg(a)
    if a.fold is not None:
        from .config import replace
        cfg = replace(cfg, train_folds=(a.fold,))
    epochs = f"the epochs that fit {cfg.budget_min:g} min here" if cfg.budget_min > 0 else f"{cfg.epochs} epochs"
    print(f"training {cfg.run_name()} on {cfg.data_dir}: {cfg.model}/{cfg.head}, {cfg.folds} folds, {epochs}",
          flush=True)
    cv = run_cv(cfg)
    print(format_cv(cv))
    rd = cfg.run_dir()
    _wrote(rd / "config.yaml", rd / "cv.json", rd / "cv.txt", rd / "oof.npz",
           *[rd / f"fold{k}" / n for k in cv["folds_trained"] for n in ("best.pt", "metrics.csv", "loss.png")])


def cmd_predict(a):
    from .predict import predict_run

    info = predict_run(a.run_dir, tta=False if a.no_tta else None, data_dir=a.data_dir)
    print(f"submission from {info['run']} ({len(info['folds'])} folds, TTA {'on' if info['tta'] else 'off'}), "
          f"CV RMSE {info['cv_rmse'] if info['cv_rmse'] is None else round(info['cv_rmse'], 4)}")
    if "local_score" in info:
        s = info["local_score"]
        print(f"local score against solution.csv: {s['all']['rmse']:.4f} (full {s['all']['rmse_full']:.4f}, "
              f"common {s['all']['rmse_common']:.4f}; public {s['public']:.4f}, private {s['private']:.4f})")
    _wrote(info["file"], str(Path(info["file"]).with_suffix(".json")), "submissions/ledger.sqlite")


def _destination_in_use(data_dir: str | None):
    """kaggle.com or the server FKD_KAGGLE_ENDPOINT names when online; offline, the local server that
    `make submit OFFLINE=1` would start for --data-dir (default: the practice competition); None if unknown."""
    from . import kaggle
    from .pipeline import PRACTICE_DIR

    if kaggle.endpoint() or (kaggle.credentials_source() and not data_dir):
        return kaggle.destination()
    d = Path(data_dir) if data_dir else PRACTICE_DIR
    return kaggle.offline_destination(d) if (d / "solution.csv").is_file() else None


def cmd_scores(a):
    from . import kaggle, ledger

    online = kaggle.credentials_source() or kaggle.endpoint()
    if not a.local and online:
        try:
            n = kaggle.sync_ledger()
            print(f"merged {n} submission(s) from {kaggle.where()}")
            left = kaggle.submission_limits()
            print(f"submissions left today on {kaggle.where()}: {left['num_allowed_now']} "
                  f"({left['num_today']} used today, {left['num_total']} in all)")
        except FkdError as e:
            print(f"(not merged with {kaggle.where()}: {e})")
    items = ledger.best_first(ledger.rows())
    there = _destination_in_use(a.data_dir)
    if a.all or there is None:
        print("all destinations" + ("" if there else " (no destination in use: offline, and no --data-dir with a "
                                                       "solution.csv)") + ":")
        shown = items
    else:
        shown = ledger.for_destination(items, there.name, there.test_hash)
        print(f"destination: {'LOCAL ' if there.local else ''}{there.name}"
              + (" (a local rehearsal server: these scores are not Kaggle's)" if there.local else "")
              + (f"; {len(items) - len(shown)} row(s) of other destinations hidden (--all shows them)"
                 if len(shown) < len(items) else ""))
    print(ledger.format_table(shown))
    plot = ledger.scatter(items, there.name) if there is not None else None
    if plot:
        _wrote(plot)


def cmd_runs(a):
    from .runfiles import format_run_table, run_table

    print(format_run_table(run_table(a.runs_dir)))


def cmd_serve(a):
    from .server import make_server

    srv = make_server(a.dir, a.port, state_dir=a.state, score_delay=a.score_delay)
    for f in a.fail:
        kind, _, n = f.partition(":")
        srv.state.set_fault(kind, int(n) if n else -1)
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    print(f"serving {a.dir} as {url} (state in {srv.state.state_dir}); aim fkd at it with\n"
          f"  export FKD_KAGGLE_ENDPOINT={url}\nCtrl-C stops it.", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


def cmd_download(a):
    from .kaggle import download

    files = download(a.dest, force=a.force)
    _wrote(*files)


def cmd_upload(a):
    from . import kaggle, ledger

    if a.pending:
        rows = kaggle.upload_pending(timeout=a.timeout)
        print(f"{len(rows)} pending submission(s) settled")
    elif a.file:
        rows = [kaggle.upload(a.file, timeout=a.timeout)]
    else:
        raise FkdError("give a submission FILE or --pending")
    print(ledger.format_table(rows))
    _wrote("submissions/ledger.sqlite")


def cmd_leaderboard(a):
    from . import kaggle, ledger

    board = kaggle.leaderboard(private=a.private)
    there = kaggle.destination()
    if a.download:
        csv = kaggle.download_leaderboard(a.download)
        print(f"the full public board: {len(board)} teams")
        _wrote(csv)
    print(f"leaderboard of {'LOCAL ' if there.local else ''}{there.name}")
    print(f"{'rank':>4}  {'team':<40} {'score':>9}")
    for i, r in enumerate(board[: a.top]):
        print(f"{i + 1:>4}  {r['team'][:40]:<40} {r['score']:9.5f}")
    col = "private_score" if a.private else "public_score"
    # only scores that came from this same board: a rehearsal server's scores never rank on Kaggle's
    ours = [r[col] for r in ledger.rows() if r.get(col) is not None and r.get("destination") == there.name]
    if ours:
        best = min(ours)
        rank = 1 + sum(r["score"] < best for r in board)
        print(f"our best {('private' if a.private else 'public')} score {best:.5f} would rank {rank} of {len(board) + 1}")


def cmd_blend(a):
    from .blend import blend, format_blend

    print(format_blend(blend(a.runs, per=a.per, data_dir=a.data_dir)))


def cmd_errors(a):
    from .competition import COMP
    from .analysis import error_report

    r = error_report(a.run_dir, worst=a.worst, tta=not a.no_tta)
    print(f"{'keypoint':<26} {'full':>7} {'common':>7}")
    for k in COMP.keypoints:
        f, c = r["per_keypoint"]["full"][k], r["per_keypoint"]["common"][k]
        print(f"{k:<26} {f:7.3f} {c:7.3f}".replace("nan", "  -"))
    print("worst faces (row, px): " + ", ".join(f"{i} {e:.2f}" for i, e in r["worst"][:8]))
    _wrote(r["gallery"], r["per_keypoint_png"])


def cmd_tune(a):
    from . import tune

    if a.worker:  # one of the processes `fkd tune --workers N` starts
        base = _make_cfg(a)
        tune.run_worker(base, a.study, a.storage, a.trials, a.timeout, tune.load_space(a.space or tune.SPACE_FILE))
        return
    import optuna

    storage = a.storage or tune.default_storage()
    if a.export:
        study = optuna.load_study(study_name=a.study, storage=tune.storage_for(storage))
        path, cfg = tune.export_best(study)
        print(f"best trial of {a.study!r} -> {path}")
        if not a.no_check:
            from .config import replace
            from .train import format_cv, run_cv
            cfg = replace(cfg, data_dir=a.data_dir or cfg.data_dir, name=f"{a.study}-best-allfolds")
            print(f"checking it on all {cfg.folds} folds: {cfg.run_dir()}", flush=True)
            print(format_cv(run_cv(cfg)))
        _wrote(path)
        return
    base = _make_cfg(a)
    from .config import replace
    if a.folds:
        base = replace(base, train_folds=a.folds)
    print(f"study {a.study!r} in {storage}: {a.trials} trials, {a.workers} worker(s), folds "
          f"{list(base.train_folds) or 'all'}, {base.epochs} epochs a trial", flush=True)
    from .config import parse_sets
    study, summary = tune.tune(base, a.trials, a.study, storage, a.workers, a.timeout, a.pruner, a.space,
                               fixed=set(parse_sets(a.sets)))
    plots = tune.write_plots(study)
    print(f"trials {summary['trials']}: " + ", ".join(f"{k.lower()} {v}" for k, v in summary["states"].items() if v))
    print(f"first-fold epochs run {summary['first_fold_epochs_run']} (without pruning: "
          f"{summary['first_fold_epochs_without_pruning']})")
    if "best_value" in summary:
        print(f"best CV RMSE {summary['best_value']:.4f} with {summary['best_params']}")
    print(f"watch it: fkd dashboard --storage {storage}   export: fkd tune --export --study {a.study}")
    _wrote(storage, *plots)


def cmd_dashboard(a):
    from . import tune

    p = tune.dashboard(a.storage, a.port)
    print(f"optuna-dashboard at http://127.0.0.1:{a.port}/ (Ctrl-C stops it)", flush=True)
    try:
        p.wait()
    except KeyboardInterrupt:
        p.terminate()


def cmd_submit(a):
    from .pipeline import submit

    submit(preset=a.preset, config_file=a.config, overrides=a.sets, data_dir=a.data_dir, offline=a.offline,
           timeout=a.timeout)


# ---------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    from .tune import DEFAULT_STUDY

    p = argparse.ArgumentParser(prog="fkd", description="Facial Keypoints Detection: data to scored submission")
    p.add_argument("--version", action="version", version=f"fkd {__import__('fkd').__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    s = sub.add_parser("data", help="load, validate, cache and summarise a competition folder; preview PNG")
    s.add_argument("--data-dir", default="competition/data", help="competition folder")
    s.add_argument("--out", help="preview PNG path (default: competition/data/.cache/preview-<name>.png)")
    s.set_defaults(fn=cmd_data)

    s = sub.add_parser("practice", help="write the practice competition (Kaggle layout + solution.csv)")
    s.add_argument("--out", default="competition/data/practice", help="output folder")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--n-train", type=int, default=2000)
    s.add_argument("--n-test", type=int, default=500)
    s.set_defaults(fn=cmd_practice)

    s = sub.add_parser("score", help="RMSE of a submission against a solution.csv (overall and per source)")
    s.add_argument("submission")
    s.add_argument("--solution", required=True, help="solution.csv (RowId,Location)")
    s.add_argument("--lookup", help="IdLookupTable.csv (default: beside the solution)")
    s.add_argument("--subset", choices=["public", "private"], help="score one side of the leaderboard split")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(fn=cmd_score)

    s = sub.add_parser("train", help="K-fold cross-validation into runs/<name>/")
    _config_args(s)
    s.add_argument("--fold", type=int, help="train this fold only (parallel folds on several machines)")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("predict", help="fold ensemble + flip TTA -> submissions/<time>-<run>.csv")
    s.add_argument("run_dir")
    s.add_argument("--no-tta", action="store_true", help="turn off horizontal-flip TTA")
    s.add_argument("--data-dir", help="competition folder (default: the run's)")
    s.set_defaults(fn=cmd_predict)

    s = sub.add_parser("scores", help="the ledger merged with the competition's submissions: CV vs public vs "
                                      "private, best first; a CV-vs-leaderboard scatter PNG")
    s.add_argument("--local", action="store_true", help="do not ask the server, print the ledger as it is")
    s.add_argument("--all", action="store_true", help="every destination's rows (default: the one in use)")
    s.add_argument("--data-dir", help="offline: the competition folder whose local server's rows to show "
                                      "(default: the practice competition)")
    s.set_defaults(fn=cmd_scores)

    s = sub.add_parser("runs", help="every run in runs/: model, head, epochs, minutes, CV without/with TTA, date, "
                                    "submitted; best first")
    s.add_argument("--runs-dir", default="runs")
    s.set_defaults(fn=cmd_runs)

    s = sub.add_parser("serve", help="local Kaggle-API-compatible server for one competition folder")
    s.add_argument("dir", help="competition folder with solution.csv")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--state", help="state folder (default: competition/data/.server/<name>-<hash>)")
    s.add_argument("--score-delay", type=float, default=0.5, help="seconds a submission stays PENDING")
    s.add_argument("--fail", action="append", default=[], metavar="KIND[:N]",
                   help="inject faults: auth, rules, put, create-lost, down, ratelimit, reset "
                        "(N requests, default all)")
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("download", help="competition files into competition/data/ (verified, extracted)")
    s.add_argument("--dest", help="target folder (default competition/data)")
    s.add_argument("--force", action="store_true", help="download even when intact files are present")
    s.set_defaults(fn=cmd_download)

    s = sub.add_parser("upload", help="submit a CSV once, wait for its score, record it")
    s.add_argument("file", nargs="?")
    s.add_argument("--pending", action="store_true", help="retry every pending upload in the ledger")
    s.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the score")
    s.set_defaults(fn=cmd_upload)

    s = sub.add_parser("leaderboard", help="the competition's top N and where our best would rank")
    s.add_argument("--top", type=int, default=20)
    s.add_argument("--private", action="store_true", help="the private board (the competition is closed)")
    s.add_argument("--download", metavar="DIR", help="also keep the whole public board as CSV in DIR "
                                                     "(Kaggle's leaderboard download)")
    s.set_defaults(fn=cmd_leaderboard)

    s = sub.add_parser("blend", help="weighted average of runs, NNLS weights fitted out of fold -> a submission")
    s.add_argument("runs", nargs="+", help="run folders (all folds trained, same data)")
    s.add_argument("--per", choices=["source", "keypoint", "global"], default="source",
                   help="one weight set per annotation source (default), per keypoint, or one for all")
    s.add_argument("--data-dir", help="competition folder (default: the first run's); one with solution.csv "
                                      "scores the blend locally")
    s.set_defaults(fn=cmd_blend)

    s = sub.add_parser("errors", help="worst out-of-fold faces (gallery PNG) and per-keypoint error by source")
    s.add_argument("run_dir")
    s.add_argument("--worst", type=int, default=16)
    s.add_argument("--no-tta", action="store_true")
    s.set_defaults(fn=cmd_errors)

    s = sub.add_parser("tune", help="Optuna study over tuning/space.yaml; --export writes tuning/best.yaml")
    _config_args(s)
    s.add_argument("--trials", type=int, default=20, help="finished trials the study ends with")
    s.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    s.add_argument("--folds", type=lambda v: tuple(int(x) for x in v.split(",")), default=(0,),
                   help="folds searched, e.g. 0 or 0,1 (default 0; the exported best is checked on all)")
    s.add_argument("--workers", type=int, default=1, help="worker processes on this machine (cores split)")
    s.add_argument("--storage", help="RDB URL (default sqlite:///<abs>/tuning/fkd.db; postgresql://... for "
                                     "workers on several machines)")
    s.add_argument("--study", default=DEFAULT_STUDY, help="study name")
    s.add_argument("--pruner", choices=["median", "hyperband"], default="median")
    s.add_argument("--space", help="search space YAML (default tuning/space.yaml)")
    s.add_argument("--export", action="store_true", help="write the best trial to tuning/best.yaml")
    s.add_argument("--no-check", action="store_true", help="with --export: skip the all-folds check")
    s.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    s.set_defaults(fn=cmd_tune)

    s = sub.add_parser("dashboard", help="optuna-dashboard on the tuning study")
    s.add_argument("--storage", help="RDB URL (default the tuning/fkd.db study)")
    s.add_argument("--port", type=int, default=8080)
    s.set_defaults(fn=cmd_dashboard)

    s = sub.add_parser("submit", help="end to end: data, train, predict, upload, score (--offline: local server)")
    _config_args(s)
    s.add_argument("--offline", action="store_true", help="use the local server even when credentials exist")
    s.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the score")
    s.set_defaults(fn=cmd_submit)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except FkdError as e:
        print(f"fkd: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fkd: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
