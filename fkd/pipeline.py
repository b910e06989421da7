"""`make submit` / `fkd submit`: data -> train -> predict (TTA) -> upload -> wait -> CV, public and private.

Online (credentials found, no --offline) it talks to kaggle.com through the official client. Offline (no
credentials, or --offline) it starts `fkd serve` on the practice competition (or on --data-dir) in this
process, aims the same client at it with FKD_KAGGLE_ENDPOINT, and says loudly that nothing reached kaggle.com.

    $ fkd submit --offline                                   # practice competition, preset quick
    $ fkd submit --offline --data-dir ../shared/benchmarks/ytf15   # preset default
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

from .competition import COMP, PRACTICE_DIR
from .kaggle.client import ENDPOINT_ENV, UPLOAD_TIMEOUT_S, credentials_source, where
from .remote import Remote

CREDENTIAL_ENV = (ENDPOINT_ENV, "KAGGLE_CONFIG_DIR", "KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY")


def train(cfg, remote: Remote | None) -> dict:
    """run_cv here, or in a Kaggle kernel (pushed once, polled, fetched): the run's cv either way."""
    if remote is None:
        from .learn.cv import run_cv
        return run_cv(cfg)
    from .competition.data import load_data
    from .remote.run import train_remote

    return train_remote(cfg, load_data(cfg.data_dir).data_hash, remote.accelerator, remote.checkpoints)


def kernel_submission(cfg) -> dict:
    from .competition.data import load_data
    from .remote.run import kernel_submission as made_there

    return made_there(cfg, load_data(cfg.data_dir))


def _banner(text: str) -> None:
    line = "=" * 100
    print(f"{line}\n{text}\n{line}", flush=True)


def unfinished_submission(run: str, tta: bool, there) -> str | None:
    """The newest CSV of this run or blend (same TTA) that the ledger holds as made or sent but not yet scored,
    for this destination: sent there, or made from the data it scores and not sent anywhere."""
    from .kaggle import ledger

    rows = ledger.rows(where="WHERE run = ? AND tta = ? AND competition = ? AND status IN ('local', 'pending', "
                             "'submitted')", args=(run, int(tta), COMP.slug))
    rows = ledger.for_destination(rows, there.name, there.test_hash)
    return next((r["file"] for r in reversed(rows) if Path(r["file"]).is_file()), None)


@contextlib.contextmanager
def offline_server(data_dir: str | None, reason: str):
    """A local `fkd serve` on the practice competition (written first if missing) or on data_dir, the official
    client aimed at it with local credentials (real ones never leave for it); the environment is restored after.
    Yields the folder the data is downloaded into."""
    from .kaggle.server import serve_in_thread

    comp_dir = Path(data_dir) if data_dir is not None else PRACTICE_DIR
    if data_dir is None and not (comp_dir / "solution.csv").is_file():
        from .competition.practice import make_practice
        print(f"writing the practice competition into {comp_dir} ...", flush=True)
        make_practice(comp_dir)
    saved = {k: os.environ.get(k) for k in CREDENTIAL_ENV}
    srv, url = serve_in_thread(comp_dir, port=0)
    try:
        os.environ[ENDPOINT_ENV] = url
        os.environ["KAGGLE_CONFIG_DIR"] = tempfile.mkdtemp(prefix="fkd-offline-kaggle-")
        os.environ.pop("KAGGLE_API_TOKEN", None)
        os.environ["KAGGLE_USERNAME"], os.environ["KAGGLE_KEY"] = "fkd-offline", "local-server"
        _banner(f"OFFLINE ({reason}): no request goes to kaggle.com.\n"
                f"A local fkd server at {url} serves {comp_dir} through the same Kaggle API and scores uploads "
                f"against its solution.csv.\nNothing here reached kaggle.com; the scores below are local and the "
                f"ledger records them as sent to '{srv.state.identity}' (`fkd scores` keeps them apart from Kaggle's).")
        yield Path(COMP.data_dir) / f"offline-{comp_dir.resolve().name}"
    finally:
        srv.shutdown()
        srv.server_close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def submit(preset: str | None = None, config_file: str | None = None, overrides: list[str] = (),
           data_dir: str | None = None, offline: bool = False, timeout: float = UPLOAD_TIMEOUT_S,
           remote: Remote | None = None) -> dict:
    """The whole job; returns the CV, the submission's sidecar, its ledger row and the seconds it took. With
    `remote` the training runs in a Kaggle kernel (fkd/remote/) and its submission is uploaded from here."""
    t0 = time.time()
    reason = "OFFLINE=1 / --offline" if offline else "no Kaggle credentials found"
    offline = offline or credentials_source() is None
    if offline:
        where_to = offline_server(data_dir, reason)
        preset = preset or ("quick" if data_dir is None else None)
    else:
        print(f"online: talking to {where()} with credentials from {credentials_source()}")
        where_to = contextlib.nullcontext(Path(COMP.data_dir))
    with where_to as dest:
        cfg, cv, info, row = _run(dest, preset, config_file, overrides, offline, timeout, remote)
    kind = (f"OFFLINE rehearsal (LOCAL {row.get('destination')}, nothing sent to kaggle.com)" if offline
            else f"Kaggle ({row.get('destination')})")
    estimate = (cv.get("submission") or {}).get("cv_estimates")
    _banner(f"{kind} result for {Path(info['file']).name}\n"
            f"  CV RMSE       {cv['cv_rmse']:.4f}"
            + (f" +- {cv['cv_se']:.3f} (its faces drawn again by near-duplicate group)" if cv.get("cv_se") else "")
            + f"  (mean-keypoint baseline {cv['mean_keypoint_rmse']:.4f})\n"
            + (f"  submitted     {', '.join(cv['submission']['models'])} averaged; the CV is {estimate}\n"
               if estimate else "") +
            f"  public score  {row['public_score']:.4f}\n  private score {row['private_score']:.4f}\n"
            f"  took {time.time() - t0:.0f}s; run in {cfg.run_dir()}"
            + (f" (and {len(info['runs']) - 1} more: {', '.join(Path(r).name for r in info['runs'][1:])})"
               if len(info.get("runs", [])) > 1 else "") + ", submission and sidecar in submissions/, "
            "ledger: `fkd scores`")
    return {"cv": cv, "submission": info, "ledger": row, "offline": offline, "seconds": time.time() - t0}


def _run(dest: Path, preset, config_file, overrides, offline: bool, timeout: float, remote: Remote | None):
    """Steps 1-4 against the destination in use: data, train (or reuse), predict (or finish an earlier upload),
    upload and wait for the score. A config with `blend` trains one run per backbone and submits their average."""
    from .config import make_config, replace
    from .infer.blend import members
    from .kaggle.destination import destination
    from .kaggle.download import download
    from .kaggle.upload import upload
    from .learn.cv import format_cv

    print(f"[1/4] data: {where()} -> {dest}", flush=True)
    download(dest)
    cfg = make_config(preset=preset, config_file=config_file, overrides=list(overrides), data_dir=str(dest))
    runs = members(cfg)
    if offline and not cfg.name:   # one run folder per rehearsal data set: another folder's run is never refused
        runs = [replace(m, name=f"{m.run_name()}-{dest.name}") for m in runs]
    if len(runs) > 1 and remote is not None and not remote.checkpoints:
        remote = Remote(remote.accelerator, True)     # a blend averages the runs' models here: bring them back
    where_train = f"in a Kaggle kernel ({remote.accelerator})" if remote else "here"
    cvs = []
    for i, m in enumerate(runs):
        which = f" (run {i + 1} of {len(runs)}: the budget is shared equally)" if len(runs) > 1 else ""
        print(f"[2/4] train {where_train}{which}: {m.run_name()} ({m.preset}: {m.model}/{m.head}, {m.models_line()}); "
              "a finished run with this config and data is reused", flush=True)
        cvs.append(train(m, remote))
        print(format_cv(cvs[-1]))
    there = destination()
    if len(runs) > 1:
        cv, info = _blended(runs, cvs, dest, there)
    else:
        cv, info = cvs[0], _predicted(runs[0], cvs[0], there, remote)
    print(f"[4/4] upload to {where()} and wait for the score", flush=True)
    return runs[0], cv, info, upload(info["file"], timeout=timeout, there=there)


def _predicted(cfg, cv: dict, there, remote: Remote | None) -> dict:
    """The run's submission: one made before and not yet scored (an interrupted `make submit`), or a new one."""
    from .infer.predict import predict_run
    from .learn.refit import what_is_submitted

    earlier = unfinished_submission(cfg.run_name(), cfg.tta, there)
    if earlier is not None:  # an interrupted `make submit`: finish that upload instead of making another
        print(f"[3/4] predict: {earlier} of this run was made before and not yet scored; submitting it "
              "(exactly once)", flush=True)
        return {"file": earlier}
    models = " + ".join(what_is_submitted(cfg, cv)["models"])
    print(f"[3/4] predict: {'the kernel made it' if remote else models + ' averaged'}, TTA "
          f"{'on' if cfg.tta else 'off'}", flush=True)
    info = kernel_submission(cfg) if remote else predict_run(cfg.run_dir(), tta=cfg.tta)
    print(f"      wrote {info['file']}" + (f"; {info['cv_estimates']}" if info.get("cv_estimates") else ""))
    return info


def _blended(runs: list, cvs: list[dict], dest: Path, there) -> tuple[dict, dict]:
    """The runs' models averaged equally (`fkd blend --per equal`), or the blend made before and not yet scored;
    with the cv the banner shows: the blend's out-of-fold RMSE and what it estimates."""
    import json

    from .infer.blend import blend, blend_name, format_blend
    from .remote.run import trained_on

    name = blend_name([m.run_dir() for m in runs])
    earlier = unfinished_submission(name, True, there)
    if earlier is not None and Path(earlier).with_suffix(".json").is_file():
        print(f"[3/4] predict: {earlier} of these runs was made before and not yet scored; submitting it "
              "(exactly once)", flush=True)
        info = {"file": earlier, **json.loads(Path(earlier).with_suffix(".json").read_text())}
    else:
        print(f"[3/4] predict: the {len(runs)} runs' models averaged equally, each with its TTA", flush=True)
        kernels = "; ".join(filter(None, (trained_on(m.run_dir()) for m in runs))) or None
        info = blend([str(m.run_dir()) for m in runs], per="equal", data_dir=str(dest), trained_on=kernels)
        print(format_blend(info))
    cv = {"cv_rmse": info["cv_rmse"], "mean_keypoint_rmse": cvs[0]["mean_keypoint_rmse"],
          "submission": {"models": info["models"], "cv_estimates": info["cv_estimates"]}}
    return cv, info
