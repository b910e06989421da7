"""The reliability harness: SIGKILL anywhere, the malformed-input corpus, the server under abuse, one report.

    python tests/reliability.py --kills 4          # `make reliability`: prints the table, writes reliability.json

Kill anywhere: each of `fkd train`, `fkd predict`, `fkd upload`, `fkd tune` and `fkd submit --offline` (what
`make submit OFFLINE=1` runs) is started on a small practice competition and SIGKILLed at seeded random moments
(uniform over its uninterrupted duration), `kills` times in a row; then the same command runs to the end. After
every kill nothing under the final names may be half-written (checkpoints load, CSVs parse whole, JSON parses);
at the end: the CV RMSE, out-of-fold predictions and submission equal an uninterrupted run's (deterministic
mode), no temp file is left, the ledger and the Optuna study pass SQLite's integrity check, the study holds
exactly N finished trials, and the server holds exactly one submission per submitted file.
`tests/test_reliability.py` runs the same with fewer kills.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# small and deterministic: a run takes seconds on 2 CPU cores (plus ~5 s of imports per process)
RECIPE = ["model=resnet18", "folds=2", "epochs=3", "batch_size=16", "lr=1e-3", "aug=0.5", "dropout=0.1",
          "deterministic=true", "workers=0", "threads=1"]
PRESET = ["--preset", "quick"] + [a for s in RECIPE for a in ("--set", s)]
USER, KEY = "alice", "secret-key"


def fkd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fkd", *args]


def base_env(work: Path) -> dict:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1", TQDM_DISABLE="1", PYTHONHASHSEED="0",
               FKD_CACHE_DIR=str(work / "cache"), KAGGLE_CONFIG_DIR=str(work / "kaggle"),
               KAGGLE_USERNAME=USER, KAGGLE_KEY=KEY, CUDA_VISIBLE_DEVICES="")
    env.pop("KAGGLE_API_TOKEN", None)
    return env


def run(cmd: list[str], cwd: Path, env: dict, timeout: float = 900) -> float:
    """Run to the end; returns the seconds it took. A failure raises with the command's last lines."""
    t0 = time.monotonic()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} exited {r.returncode}:\n{(r.stdout + r.stderr)[-3000:]}")
    return time.monotonic() - t0


def kill_then_finish(cmd, cwd: Path, env: dict, rng: random.Random, kills: int, duration: float, after_kill,
                     tally: Counter, name: str) -> None:
    """SIGKILL `cmd` `kills` times at random moments, check the leftovers after each, then run it to the end."""
    for _ in range(kills):
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        at = rng.uniform(0.15, 1.0) * duration
        try:
            p.wait(at)
            tally[f"{name}: finished before its kill"] += 1
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # the process and anything it started
            p.wait()
            tally["faults injected"] += 1
            tally[f"{name}: kills"] += 1
        after_kill()
    run(cmd, cwd, env)


# ------------------------------------------------------------------------------------------ checks
def temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp*")] if folder.exists() else []


def check_artifacts(folder: Path, problems: list[str], where: str) -> None:
    """Every file under its final name is whole: checkpoints load, JSON parses, CSVs parse with all rows."""
    import numpy as np
    import torch

    from fkd.competition.metric import read_submission

    for p in folder.rglob("*"):
        if not p.is_file() or p.name.startswith("."):
            continue
        try:
            if p.suffix == ".pt":
                torch.load(p, map_location="cpu", weights_only=False)
            elif p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix in (".npy", ".npz"):
                with np.load(p) as z:
                    [z[k] for k in z.files]
            elif p.suffix == ".csv" and p.parent.name == "submissions":
                if len(read_submission(p)) == 0:
                    raise ValueError("no rows")
        except Exception as e:  # noqa: BLE001 - any failure to load is what we look for
            problems.append(f"{where}: {p.name} is corrupt ({type(e).__name__}: {e})")


def same_submission(a: Path, b: Path, tol: float = 1e-4) -> bool:
    """Same RowIds in the same order and values equal to `tol` px (float kernels may differ in the 6th decimal)."""
    import numpy as np
    import pandas as pd

    x, y = pd.read_csv(a), pd.read_csv(b)
    return x.RowId.tolist() == y.RowId.tolist() and bool(np.allclose(x.Location, y.Location, atol=tol, rtol=0))


def sqlite_ok(path: Path) -> bool:
    with sqlite3.connect(path) as con:
        return con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# ------------------------------------------------------------------------------------------ harness
def kill_anywhere(work: Path, comp: Path, kills: int, seed: int = 0, only: set[str] | None = None) -> dict:
    """The five commands under SIGKILL; returns {"tally": ..., "problems": [...], "seconds": {...}}."""
    import numpy as np

    from fkd.kaggle.server import serve_in_thread
    from fkd.learn.runfiles import read_oof

    rng = random.Random(seed)
    tally, problems, seconds = Counter(), [], {}
    want = only or {"train", "predict", "upload", "tune", "submit"}
    ref, hit = work / "reference", work / "killed"
    for d in (ref, hit):
        d.mkdir(parents=True, exist_ok=True)
    env_ref, env_hit = base_env(ref), base_env(hit)
    train = fkd("train", "--data-dir", str(comp), *PRESET)

    # train -----------------------------------------------------------------------------------------------
    seconds["train"] = run(train, ref, env_ref)
    name = next((ref / "runs").iterdir()).name
    if "train" in want:
        kill_then_finish(train, hit, env_hit, rng, kills, seconds["train"],
                         lambda: check_artifacts(hit / "runs", problems, "train"), tally, "train")
        a, b = (json.loads((d / "runs" / name / "cv.json").read_text()) for d in (ref, hit))
        tally["checks"] += 1
        if a["cv_rmse"] != b["cv_rmse"] or not all(
                np.array_equal(read_oof(ref / "runs" / name, tta), read_oof(hit / "runs" / name, tta), equal_nan=True)
                for tta in (False, True)):
            problems.append(f"train: CV after kills {b['cv_rmse']} differs from uninterrupted {a['cv_rmse']}")
    else:
        run(train, hit, env_hit)

    # predict ---------------------------------------------------------------------------------------------
    predict = fkd("predict", f"runs/{name}")
    seconds["predict"] = run(predict, ref, env_ref)
    ref_csv = next((ref / "submissions").glob("*.csv"))
    if "predict" in want:
        kill_then_finish(predict, hit, env_hit, rng, kills, seconds["predict"],
                         lambda: check_artifacts(hit / "submissions", problems, "predict"), tally, "predict")
        tally["checks"] += 1
        made = sorted((hit / "submissions").glob("*.csv"))
        if not made or not all(same_submission(p, ref_csv) for p in made):
            problems.append("predict: a submission after kills differs from the uninterrupted one")
    else:
        run(predict, hit, env_hit)
    hit_csv = sorted((hit / "submissions").glob("*.csv"))[-1]

    # upload ----------------------------------------------------------------------------------------------
    if "upload" in want:
        srv, url = serve_in_thread(comp, port=0, state_dir=work / "server", users={USER: KEY}, score_delay=1.5)
        try:
            env_up = dict(env_hit, FKD_KAGGLE_ENDPOINT=url)
            upload = fkd("upload", str(hit_csv), "--timeout", "120")
            seconds["upload"] = 5.0  # import (~3 s) + three requests + polling a 1.5 s scoring delay
            kill_then_finish(upload, hit, env_up, rng, kills, seconds["upload"],
                             lambda: check_artifacts(hit / "submissions", problems, "upload"), tally, "upload")
            tally["checks"] += 1
            subs = srv.state.store.list_submissions(USER)
            if len(subs) != 1:
                problems.append(f"upload: the server holds {len(subs)} submissions of one file (expected 1)")
            with sqlite3.connect(hit / "submissions" / "ledger.sqlite") as con:
                st = con.execute("SELECT status FROM submissions WHERE file = ?", (str(hit_csv.resolve()),)).fetchone()
            if not st or st[0] != "COMPLETE":
                problems.append(f"upload: the ledger row is {st[0] if st else 'missing'}, not COMPLETE")
            if not sqlite_ok(hit / "submissions" / "ledger.sqlite"):
                problems.append("upload: the ledger fails its integrity check")
        finally:
            srv.shutdown()
            srv.server_close()

    # tune ------------------------------------------------------------------------------------------------
    if "tune" in want:
        n = 3
        db = hit / "tuning" / "kill.db"
        def tune_into(db_file: Path) -> list[str]:
            return fkd("tune", "--data-dir", str(comp), *PRESET, "--set", "epochs=2", "--trials", str(n),
                       "--study", "kill", "--storage", f"sqlite:///{db_file}")

        tune = tune_into(db)
        seconds["tune"] = run(tune_into(ref / "kill.db"), ref, env_ref)
        kill_then_finish(tune, hit, env_hit, rng, kills, seconds["tune"], lambda: None, tally, "tune")
        import optuna
        from optuna.trial import TrialState

        study = optuna.load_study(study_name="kill", storage=f"sqlite:///{db}")
        trials = study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        tally["checks"] += 1
        tally["tune: trials FAIL (killed)"] += sum(t.state == TrialState.FAIL for t in trials)
        if len(finished) != n:
            problems.append(f"tune: {len(finished)} finished trials, expected exactly {n}")
        if len({t.number for t in trials}) != len(trials):
            problems.append("tune: duplicate trial numbers")
        if any(t.state == TrialState.RUNNING for t in trials):
            problems.append("tune: a trial is left RUNNING")
        if not sqlite_ok(db):
            problems.append("tune: the study database fails its integrity check")

    # make submit OFFLINE=1 -------------------------------------------------------------------------------
    if "submit" in want:
        submit = fkd("submit", "--offline", "--data-dir", str(comp), *PRESET, "--timeout", "120")
        sref, shit = work / "submit-reference", work / "submit-killed"
        for d in (sref, shit):
            d.mkdir(exist_ok=True)
        seconds["submit"] = run(submit, sref, base_env(sref))
        kill_then_finish(submit, shit, base_env(shit), rng, kills, seconds["submit"],
                         lambda: check_artifacts(shit, problems, "submit"), tally, "submit")
        tally["checks"] += 1
        servers = list((shit / "competition" / "data" / ".server").glob("*/server.sqlite"))
        with sqlite3.connect(servers[0]) as con:
            descs = [r[0] for r in con.execute("SELECT description FROM submissions WHERE reference = 0")]
        uids = [d.split("uid=")[-1] for d in descs]
        # every CSV reaches the server at most once (a rerun after a kill finishes the same upload); each
        # `fkd submit` that ran to its end submitted one, a killed one at most one
        completed = 1 + tally["submit: finished before its kill"]
        if len(set(uids)) != len(uids):
            problems.append(f"submit: a CSV was submitted twice (uids {uids})")
        if not completed <= len(uids) <= completed + tally["submit: kills"]:
            problems.append(f"submit: {len(uids)} submissions after {completed} completed and "
                            f"{tally['submit: kills']} killed runs")
        a, b = (sorted((d / "submissions").glob("*.csv")) for d in (sref, shit))
        if not b or not all(same_submission(p, a[0]) for p in b):
            problems.append("submit: a submission after kills differs from the uninterrupted one")
        for d in (shit / "submissions",):
            if not sqlite_ok(d / "ledger.sqlite"):
                problems.append("submit: the ledger fails its integrity check")

    for d in (hit, work / "submit-killed"):
        for t in temps(d):
            problems.append(f"temp file left behind: {t.relative_to(work)}")
    tally["survived"] = tally["faults injected"] if not problems else tally["faults injected"] - len(problems)
    return {"tally": dict(tally), "problems": problems, "seconds": {k: round(v, 1) for k, v in seconds.items()}}


def corpus_check(work: Path) -> dict:
    """Every corpus case through the CLI in a subprocess: exit 2, one line, no traceback, nothing written."""
    from corpus import build_corpus, cli_args

    from fkd.competition.practice import make_practice

    make_practice(work / "_clean", seed=7, n_train=120, n_test=20)
    cases = build_corpus(work / "_clean", work / "cases")
    env = base_env(work)
    tally, problems = Counter(), []
    for c in cases:
        cache = work / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        r = subprocess.run(fkd(*cli_args(c)), cwd=work, env=env, capture_output=True, text=True, timeout=300)
        written = list(cache.rglob("*.npz")) if cache.exists() else []
        if c.valid:
            tally["valid variants tried"] += 1
            tally["valid variants accepted"] += r.returncode == 0
            if r.returncode:
                problems.append(f"{c.name}: a valid variant was refused: {r.stderr.strip()}")
            continue
        tally["bad inputs tried"] += 1
        clean = (r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
                 and c.expect in r.stderr and not written)
        tally["bad inputs rejected cleanly"] += clean
        if not clean:
            problems.append(f"{c.name}: exit {r.returncode}, stderr {r.stderr.strip()[-300:]!r}, wrote {written}")
    return {"tally": dict(tally), "problems": problems}


def server_abuse(work: Path, seed: int = 0) -> dict:
    from abuse import abuse

    from fkd.competition.practice import make_practice
    from fkd.kaggle.server import serve_in_thread

    make_practice(work / "abuse-comp", seed=3, n_train=60, n_test=10)
    srv, _ = serve_in_thread(work / "abuse-comp", port=0, state_dir=work / "abuse-state", users={USER: KEY},
                             client_timeout=3, max_clients=16)
    try:
        out = abuse(srv, seed=seed)
    finally:
        srv.shutdown()
        srv.server_close()
    return {"tally": out["tally"], "problems": out["wrong"]}


def report(results: dict) -> str:
    k, c, a = results.get("kill", {}), results.get("corpus", {}), results.get("abuse", {})
    kt, ct, at = k.get("tally", {}), c.get("tally", {}), a.get("tally", {})
    rows = [
        ("faults injected (SIGKILL)", kt.get("faults injected", 0), "survived", kt.get("survived", 0)),
        ("bad inputs tried", ct.get("bad inputs tried", 0), "rejected cleanly",
         ct.get("bad inputs rejected cleanly", 0)),
        ("valid variants tried", ct.get("valid variants tried", 0), "accepted", ct.get("valid variants accepted", 0)),
        ("requests thrown at the server", at.get("thrown", 0), "answered", at.get("answered", 0)),
    ]
    lost = sum(len(x.get("problems", [])) for x in (k, c, a))
    out = [f"{a_:32}{b_:>8}  {c_:18}{d_:>8}" for a_, b_, c_, d_ in rows]
    out.append(f"{'anything lost or corrupt':32}{lost:>8}")
    extra = {key: v for key, v in kt.items() if ":" in key}
    if extra:
        out.append("per command: " + ", ".join(f"{key} {v}" for key, v in sorted(extra.items())))
    if at:
        out.append(f"server: {at.get('concurrent_503', 0)} of the concurrent clients got 503 (over the limit), "
                   f"stalled clients dropped, {at.get('handler_crashes', 0)} handler crashes")
    for x in (k, c, a):
        for p in x.get("problems", []):
            out.append(f"  PROBLEM: {p}")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=4, help="SIGKILLs per command before it runs to the end")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="reliability.json")
    args = ap.parse_args(argv)
    os.environ.update(HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1")
    t0 = time.time()
    work = Path(tempfile.mkdtemp(prefix="fkd-reliability-"))
    from fkd.competition.practice import make_practice

    make_practice(work / "comp", seed=11, n_train=160, n_test=24)
    results = {"corpus": corpus_check(work / "corpus"), "abuse": server_abuse(work / "abuse", args.seed),
               "kill": kill_anywhere(work / "kill", work / "comp", args.kills, args.seed)}
    results["seconds"] = round(time.time() - t0, 1)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(report(results))
    print(f"harness took {results['seconds']:.0f}s; details in {args.out}; work folder {work}")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if any(r.get("problems") for r in results.values() if isinstance(r, dict)) else 0


if __name__ == "__main__":
    sys.exit(main())
