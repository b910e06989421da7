"""`make submit` / `fkd submit`: data -> train -> predict (TTA) -> upload -> wait -> CV, public and private.

Online (credentials found, no --offline) it talks to kaggle.com through the official client. Offline (no
credentials, or --offline) it starts `fkd serve` on the practice competition (or on --data-dir) in this
process, aims the same client at it with FKD_KAGGLE_ENDPOINT, and says loudly that nothing reached kaggle.com.

    $ fkd submit --offline                                   # practice competition, preset quick
    $ fkd submit --offline --data-dir ../shared/benchmarks/ytf15   # preset default
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from .competition import COMP

PRACTICE_DIR = Path(COMP.data_dir) / "practice"


def _banner(text: str) -> None:
    line = "=" * 100
    print(f"{line}\n{text}\n{line}", flush=True)


def unfinished_submission(cfg, there) -> str | None:
    """The newest CSV of this run (same TTA) that the ledger holds as made or sent but not yet scored, for this
    destination: sent there, or made from the data it scores and not sent anywhere."""
    from . import ledger

    rows = ledger.rows(where="WHERE run = ? AND tta = ? AND competition = ? AND status IN ('local', 'pending', "
                             "'submitted')", args=(cfg.run_name(), int(cfg.tta), COMP.slug))
    rows = ledger.for_destination(rows, there.name, there.test_hash)
    return next((r["file"] for r in reversed(rows) if Path(r["file"]).is_file()), None)


def submit(preset: str | None = None, config_file: str | None = None, overrides: list[str] = (),
           data_dir: str | None = None, offline: bool = False, timeout: float = 600.0) -> dict:
    from . import kaggle
    from .config import make_config
    from .predict import predict_run
    from .train import format_cv, run_cv

    t0 = time.time()
    saved_env = {k: os.environ.get(k) for k in (kaggle.ENDPOINT_ENV, "KAGGLE_CONFIG_DIR", "KAGGLE_API_TOKEN",
                                                "KAGGLE_USERNAME", "KAGGLE_KEY")}
    reason = "OFFLINE=1 / --offline" if offline else "no Kaggle credentials found"
    offline = offline or kaggle.credentials_source() is None
    srv = None
    if offline:
        from .server import serve_in_thread

        if data_dir is None:
            comp_dir = PRACTICE_DIR
            if not (comp_dir / "solution.csv").is_file():
                from .practice import make_practice
                print(f"writing the practice competition into {comp_dir} ...", flush=True)
                make_practice(comp_dir)
        else:
            comp_dir = Path(data_dir)
        srv, url = serve_in_thread(comp_dir, port=0)
        os.environ[kaggle.ENDPOINT_ENV] = url
        # local credentials for the local server: real ones (if any) never leave for it
        os.environ["KAGGLE_CONFIG_DIR"] = tempfile.mkdtemp(prefix="fkd-offline-kaggle-")
        os.environ.pop("KAGGLE_API_TOKEN", None)
        os.environ["KAGGLE_USERNAME"], os.environ["KAGGLE_KEY"] = "fkd-offline", "local-server"
        _banner(f"OFFLINE ({reason}): no request goes to kaggle.com.\n"
                f"A local fkd server at {url} serves {comp_dir} through the same Kaggle API and scores uploads "
                f"against its solution.csv.\nNothing here reached kaggle.com; the scores below are local and the "
                f"ledger records them as sent to '{srv.state.identity}' (`fkd scores` keeps them apart from Kaggle's).")
        dest = Path(COMP.data_dir) / f"offline-{comp_dir.resolve().name}"
        preset = preset or ("quick" if data_dir is None else None)
    else:
        dest = Path(COMP.data_dir)
        print(f"online: talking to {kaggle.where()} with credentials from {kaggle.credentials_source()}")
    try:
        print(f"[1/4] data: {kaggle.where()} -> {dest}", flush=True)
        kaggle.download(dest)
        cfg = make_config(preset=preset, config_file=config_file, overrides=list(overrides), data_dir=str(dest))
        if offline and not cfg.name:   # one run folder per rehearsal data set: another folder's run is never refused
            from .config import replace
            cfg = replace(cfg, name=f"{cfg.run_name()}-{dest.name}")
        epochs = f"the epochs that fit {cfg.budget_min:g} min here" if cfg.budget_min > 0 else f"{cfg.epochs} epochs"
        print(f"[2/4] train: {cfg.run_name()} ({cfg.preset}: {cfg.model}/{cfg.head}, {cfg.folds} folds x {epochs}); "
              "a finished run with this config and data is reused", flush=True)
        cv = run_cv(cfg)
        print(format_cv(cv))
        there = kaggle.destination()
        earlier = unfinished_submission(cfg, there)
        if earlier is not None:  # an interrupted `make submit`: finish that upload instead of making another
            print(f"[3/4] predict: {earlier} of this run was made before and not yet scored; submitting it "
                  "(exactly once)", flush=True)
            info = {"file": earlier}
        else:
            print(f"[3/4] predict: fold ensemble, TTA {'on' if cfg.tta else 'off'}", flush=True)
            info = predict_run(cfg.run_dir(), tta=cfg.tta)
            print(f"      wrote {info['file']}")
        print(f"[4/4] upload to {kaggle.where()} and wait for the score", flush=True)
        row = kaggle.upload(info["file"], timeout=timeout, there=there)
    finally:
        if srv is not None:
            srv.shutdown()
            srv.server_close()
            for k, v in saved_env.items():  # the offline endpoint and local credentials end with the call
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    _banner(f"{'OFFLINE rehearsal (LOCAL ' + str(row.get('destination')) + ', nothing sent to kaggle.com)' if offline else 'Kaggle (' + str(row.get('destination')) + ')'} result for "
            f"{Path(info['file']).name}\n"
            f"  CV RMSE       {cv['cv_rmse']:.4f}  (mean-keypoint baseline {cv['mean_keypoint_rmse']:.4f})\n"
            f"  public score  {row['public_score']:.4f}\n  private score {row['private_score']:.4f}\n"
            f"  took {time.time() - t0:.0f}s; run in {cfg.run_dir()}, submission and sidecar in submissions/, "
            "ledger: `fkd scores`")
    return {"cv": cv, "submission": info, "ledger": row, "offline": offline, "seconds": time.time() - t0}

