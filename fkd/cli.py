"""The `fkd` command line: thin commands, each parsing its arguments, building a Config, and making one call.

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

from . import __version__
from .competition import COMP
from .errors import FkdError
from .kaggle.client import UPLOAD_TIMEOUT_S
from .remote import Remote


def _wrote(*paths) -> None:
    print("wrote:")
    for p in paths:
        print(f"  {p}")


def _make_cfg(a, **extra):
    from .config import make_config

    if getattr(a, "data_dir", None):
        extra["data_dir"] = a.data_dir
    return make_config(preset=a.preset, config_file=a.config, overrides=a.sets, **extra)


# ------------------------------------------------------------------------------------------ commands
def cmd_data(a):
    from .competition.data import cache_dir, load_data, summary
    from .config import Config
    from .report.faces import duplicates_report, preview

    d = load_data(a.data_dir)
    print(summary(d))
    name = Path(a.data_dir).resolve().name
    text, groups_png = duplicates_report(d, Config.group_z, cache_dir() / f"duplicates-{name}.png")
    print(text)
    _wrote(preview(d, Path(a.out) if a.out else cache_dir() / f"preview-{name}.png"), *filter(None, [groups_png]))


def cmd_practice(a):
    from .competition.practice import describe, make_practice

    r = make_practice(a.out, seed=a.seed, n_train=a.n_train, n_test=a.n_test)
    print(describe(r, a.out))
    _wrote(*r["files"])


def cmd_score(a):
    from .competition.metric import score_files

    r = score_files(a.submission, a.solution, a.lookup, subset=a.subset)
    print(json.dumps(r) if a.json else f"rmse {r['rmse']:.5f}  rmse_full {r['rmse_full']:.5f}  "
          f"rmse_common {r['rmse_common']:.5f}  ({r['rows']} rows, {r['subset']})")


def cmd_train(a):
    from .infer.blend import members
    from .learn.cv import format_cv
    from .pipeline import train

    runs = members(_make_cfg(a, **({"train_folds": (a.fold,)} if a.fold is not None else {})))
    for i, cfg in enumerate(runs):
        if len(runs) > 1:
            print(f"run {i + 1} of {len(runs)} (blend: one run a backbone, the budget shared): {cfg.run_name()}",
                  flush=True)
        cv = train(cfg, Remote.from_args(a))
        print(format_cv(cv))
        rd = cfg.run_dir()
        _wrote(rd / "config.yaml", rd / "cv.json", rd / "cv.txt", rd / "oof.npz",
               *[rd / f"fold{k}" / n for k in cv["folds_trained"] for n in ("best.pt", "metrics.csv", "loss.png")])
    if len(runs) > 1:
        print("average them into a submission: fkd blend --per equal " + " ".join(str(c.run_dir()) for c in runs))


def cmd_predict(a):
    from .infer.predict import predict_run
    from .infer.submission import describe

    info = predict_run(a.run_dir, tta=False if a.no_tta else None, data_dir=a.data_dir)
    print(describe(info))
    _wrote(info["file"], str(Path(info["file"]).with_suffix(".json")), "submissions/ledger.sqlite")


def cmd_scores(a):
    from .report.scores import scores

    text, plot = scores(a.all, a.local, a.data_dir)
    print(text)
    if plot:
        _wrote(plot)


def cmd_runs(a):
    from .report.runs import format_run_table, run_table

    print(format_run_table(run_table(a.runs_dir)))


def cmd_serve(a):
    from .kaggle.server import make_server

    srv = make_server(a.dir, a.port, state_dir=a.state, score_delay=a.score_delay, kernel_mount=a.kernel_mount)
    for f in a.fail:
        kind, _, n = f.partition(":")
        srv.state.store.set_fault(kind, int(n) if n else -1)
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    print(f"serving {a.dir} as {url} (state in {srv.state.state_dir}); aim fkd at it with\n"
          f"  export FKD_KAGGLE_ENDPOINT={url}\nCtrl-C stops it.", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


def cmd_download(a):
    from .kaggle.download import download

    _wrote(*download(a.dest, force=a.force))


def cmd_upload(a):
    from .kaggle import ledger
    from .kaggle.upload import upload, upload_pending

    if a.pending:
        rows = upload_pending(timeout=a.timeout)
        print(f"{len(rows)} pending submission(s) settled")
    elif a.file:
        rows = [upload(a.file, timeout=a.timeout)]
    else:
        raise FkdError("give a submission FILE or --pending")
    print(ledger.format_table(rows))
    _wrote("submissions/ledger.sqlite")


def cmd_leaderboard(a):
    from .kaggle.board import download_leaderboard, format_board, leaderboard
    from .kaggle.destination import destination

    board = leaderboard(private=a.private)
    if a.download:
        print(f"the full public board: {len(board)} teams")
        _wrote(download_leaderboard(a.download))
    print(format_board(board, destination(), a.top, a.private))


def cmd_blend(a):
    from .infer.blend import blend, format_blend

    print(format_blend(blend(a.runs, per=a.per, data_dir=a.data_dir)))


def cmd_errors(a):
    from .report.error_analysis import error_report, format_errors

    r = error_report(a.run_dir, worst=a.worst, tta=not a.no_tta)
    print(format_errors(r))
    _wrote(r["gallery"], r["per_keypoint_png"])


def cmd_report(a):
    from .report.page import write_report

    _wrote(write_report(a.run_dir))


def cmd_tune(a):
    from .config import parse_sets
    from .learn import study, tune

    storage = a.storage or study.default_storage()
    if a.worker:  # one of the processes `fkd tune --workers N` starts
        space = tune.load_space(a.space or tune.SPACE_FILE)
        tune.run_worker(_make_cfg(a), a.study, storage, a.trials, a.timeout, space)
    elif a.export:
        path, _ = study.export_and_check(a.study, storage, a.data_dir, check=not a.no_check)
        _wrote(path)
    else:
        base = _make_cfg(a, train_folds=a.folds)
        s, summary = tune.tune(base, a.trials, a.study, storage, a.workers, a.timeout, a.pruner, a.space,
                               fixed=set(parse_sets(a.sets)))
        print(study.format_summary(summary))
        print(f"watch it: fkd dashboard --storage {storage}   export: fkd tune --export --study {a.study}")
        _wrote(storage, *study.write_plots(s))



def cmd_dashboard(a):
    from .learn.study import dashboard

    p = dashboard(a.storage, a.port)
    print(f"optuna-dashboard at http://127.0.0.1:{a.port}/ (Ctrl-C stops it)", flush=True)
    try:
        p.wait()
    except KeyboardInterrupt:
        p.terminate()


def cmd_submit(a):
    from .pipeline import submit

    submit(preset=a.preset, config_file=a.config, overrides=a.sets, data_dir=a.data_dir, offline=a.offline,
           timeout=a.timeout, remote=Remote.from_args(a))



# ---------------------------------------------------------------------------------------------- parser
def _config_args(p: argparse.ArgumentParser) -> None:
    from .config import PRESETS

    p.add_argument("--data-dir", help="competition folder in Kaggle's layout (default: the preset's, "
                                      f"{COMP.data_dir})")
    p.add_argument("--config", help="YAML file of config fields (e.g. tuning/best.yaml)")
    p.add_argument("--preset", choices=list(PRESETS), help="preset defaults (default: default)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set lr=1e-3 --set model=convnext_atto")


def _data_commands(sub) -> None:
    s = sub.add_parser("data", help="load, validate, cache and summarise a competition folder; preview PNG")
    s.add_argument("--data-dir", default=COMP.data_dir, help="competition folder")
    s.add_argument("--out", help="preview PNG path (default: competition/data/.cache/preview-<name>.png)")
    s.set_defaults(fn=cmd_data)

    s = sub.add_parser("practice", help="write the practice competition (Kaggle layout + solution.csv)")
    s.add_argument("--out", default=str(Path(COMP.data_dir) / "practice"), help="output folder")
    s.add_argument("--seed", type=int, default=0, help="the faces drawn follow this seed")
    s.add_argument("--n-train", type=int, default=2000, help="training faces")
    s.add_argument("--n-test", type=int, default=500, help="test faces")
    s.set_defaults(fn=cmd_practice)

    s = sub.add_parser("score", help="RMSE of a submission against a solution.csv (overall and per source)")
    s.add_argument("submission", help="the submission CSV (RowId,Location)")
    s.add_argument("--solution", required=True, help="solution.csv (RowId,Location)")
    s.add_argument("--lookup", help="IdLookupTable.csv (default: beside the solution)")
    s.add_argument("--subset", choices=["public", "private"], help="score one side of the leaderboard split")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(fn=cmd_score)


def _learn_commands(sub) -> None:
    from .learn.study import DEFAULT_STUDY

    s = sub.add_parser("train", help="K-fold cross-validation into runs/<name>/")
    _config_args(s)
    Remote.add_args(s)
    s.add_argument("--fold", type=int, help="train this fold only (parallel folds on several machines)")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("runs", help="every run in runs/: model, head, epochs, minutes, CV without/with TTA, date, "
                                    "submitted; best first")
    s.add_argument("--runs-dir", default="runs", help="the folder of run folders")
    s.set_defaults(fn=cmd_runs)

    s = sub.add_parser("errors", help="worst out-of-fold faces (gallery PNG) and per-keypoint error by source")
    s.add_argument("run_dir", help="a run folder (runs/<name>)")
    s.add_argument("--worst", type=int, default=16, help="how many of the worst faces to draw")
    s.add_argument("--no-tta", action="store_true", help="the out-of-fold predictions without flip TTA")
    s.set_defaults(fn=cmd_errors)

    s = sub.add_parser("report", help="one self-contained HTML page of a run: config, CV, curves, errors, scores")
    s.add_argument("run_dir", help="a run folder (runs/<name>)")
    s.set_defaults(fn=cmd_report)

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
    s.add_argument("--pruner", choices=["median", "hyperband"], default="median", help="Optuna's pruner")
    s.add_argument("--space", help="search space YAML (default tuning/space.yaml)")
    s.add_argument("--export", action="store_true", help="write the best trial to tuning/best.yaml")
    s.add_argument("--no-check", action="store_true", help="with --export: skip the all-folds check")
    s.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    s.set_defaults(fn=cmd_tune)

    s = sub.add_parser("dashboard", help="optuna-dashboard on the tuning study")
    s.add_argument("--storage", help="RDB URL (default the tuning/fkd.db study)")
    s.add_argument("--port", type=int, default=8080, help="the dashboard's port on 127.0.0.1")
    s.set_defaults(fn=cmd_dashboard)


def _infer_commands(sub) -> None:
    s = sub.add_parser("predict", help="fold ensemble + flip TTA -> submissions/<time>-<run>.csv")
    s.add_argument("run_dir", help="a run folder (runs/<name>)")
    s.add_argument("--no-tta", action="store_true", help="turn off horizontal-flip TTA")
    s.add_argument("--data-dir", help="competition folder (default: the run's)")
    s.set_defaults(fn=cmd_predict)

    s = sub.add_parser("blend", help="weighted average of runs, NNLS weights fitted out of fold -> a submission")
    s.add_argument("runs", nargs="+", help="run folders (same data; the same folds trained, e.g. all, or fold 0 "
                                           "of one split)")
    s.add_argument("--per", choices=["source", "keypoint", "global", "equal"], default="source",
                   help="one weight set per annotation source (default), per keypoint, one for all, or equal "
                        "weights (nothing fitted: best where few faces are out of fold)")
    s.add_argument("--data-dir", help="competition folder (default: the first run's); one with solution.csv "
                                      "scores the blend locally")
    s.set_defaults(fn=cmd_blend)


def _kaggle_commands(sub) -> None:
    from .kaggle.server import DEFAULT_PORT
    from .kaggle.server.state import SCORE_DELAY_S

    s = sub.add_parser("scores", help="the ledger merged with the competition's submissions: CV vs public vs "
                                      "private, best first; a CV-vs-leaderboard scatter PNG")
    s.add_argument("--local", action="store_true", help="do not ask the server, print the ledger as it is")
    s.add_argument("--all", action="store_true", help="every destination's rows (default: the one in use)")
    s.add_argument("--data-dir", help="offline: the competition folder whose local server's rows to show "
                                      "(default: the practice competition)")
    s.set_defaults(fn=cmd_scores)

    s = sub.add_parser("serve", help="local Kaggle-API-compatible server for one competition folder")
    s.add_argument("dir", help="competition folder with solution.csv")
    s.add_argument("--port", type=int, default=DEFAULT_PORT, help="port on 127.0.0.1 (0: a free one)")
    s.add_argument("--state", help="state folder (default: competition/data/.server/<name>-<hash>)")
    s.add_argument("--score-delay", type=float, default=SCORE_DELAY_S, help="seconds a submission stays PENDING")
    s.add_argument("--fail", action="append", default=[], metavar="KIND[:N]",
                   help="inject faults: auth, rules, put, create-lost, down, ratelimit, reset; for kernels "
                        "kernel-error, kernel-queued, kernel-cancel, quota (N requests, default all)")
    s.add_argument("--kernel-mount", choices=["competitions", "flat"], default="competitions",
                   help="where a pushed kernel finds the data: input/competitions/<slug>/ zipped (default) or "
                        "input/<slug>/ extracted")
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("download", help="competition files into competition/data/ (verified, extracted)")
    s.add_argument("--dest", help=f"target folder (default {COMP.data_dir})")
    s.add_argument("--force", action="store_true", help="download even when intact files are present")
    s.set_defaults(fn=cmd_download)

    s = sub.add_parser("upload", help="submit a CSV once, wait for its score, record it")
    s.add_argument("file", nargs="?", help="the submission CSV")
    s.add_argument("--pending", action="store_true", help="retry every pending upload in the ledger")
    s.add_argument("--timeout", type=float, default=UPLOAD_TIMEOUT_S, help="seconds to wait for the score")
    s.set_defaults(fn=cmd_upload)

    s = sub.add_parser("leaderboard", help="the competition's top N and where our best would rank")
    s.add_argument("--top", type=int, default=20, help="how many teams to print")
    s.add_argument("--private", action="store_true", help="the private board (the competition is closed)")
    s.add_argument("--download", metavar="DIR", help="also keep the whole public board as CSV in DIR "
                                                     "(Kaggle's leaderboard download)")
    s.set_defaults(fn=cmd_leaderboard)

    s = sub.add_parser("submit", help="end to end: data, train, predict, upload, score (--offline: local server)")
    _config_args(s)
    s.add_argument("--offline", action="store_true", help="use the local server even when credentials exist")
    s.add_argument("--timeout", type=float, default=UPLOAD_TIMEOUT_S, help="seconds to wait for the score")
    Remote.add_args(s)
    s.set_defaults(fn=cmd_submit)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fkd", description="Facial Keypoints Detection: data to scored submission")
    p.add_argument("--version", action="version", version=f"fkd {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for add in (_data_commands, _learn_commands, _infer_commands, _kaggle_commands):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from . import children

    args = build_parser().parse_args(argv)
    children.install()                    # SIGTERM ends fkd in order, and every process it started with it
    try:
        args.fn(args)
    except FkdError as e:
        print(f"fkd: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fkd: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        children.end_children()
    return 0


if __name__ == "__main__":
    sys.exit(main())
