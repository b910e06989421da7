"""Train on Kaggle's GPUs: push the run as a kernel once, poll it, bring its outputs back into runs/<name>/.

    $ fkd train --remote kaggle [--accelerator NvidiaTeslaT4] [--checkpoints]
    $ make submit REMOTE=kaggle            # the same, then the kernel's submission is uploaded from here

Exactly once, like uploads: runs/<name>/remote.json records the push (its id, written before the push; the
kernel's ref and version, written the moment Kaggle answers), so an interrupted command resumes polling instead
of pushing again; a push whose answer was lost is found by its id in the kernel's source. Before anything is
pushed: credentials, the competition's rules, `kaggle quota` (no GPU hours left: nothing is pushed), a kernel
slug that is not another kernel's, a run name Kaggle takes as a slug. Outputs are downloaded into
runs/<name>/.remote/v<N>/, checked (zip CRCs, the run's config and data, the submission's test set), and only
then unpacked into runs/<name>/; no name from the kernel's output can write outside it.
"""
from __future__ import annotations

import json
import os
import stat
import sys
import time
import zipfile
from pathlib import Path, PurePosixPath

import yaml

from .. import atomic
from ..competition import COMP
from ..config import Config
from ..errors import FkdError
from ..kaggle.client import call, explain, explain_403, explained, get_api, where
from . import DEFAULT_ACCELERATOR
from .build import build_kernel, kernel_slug

STATE = "remote.json"
TERMINAL = {"COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED", "CANCEL_REQUESTED"}
POLL_ENV = "FKD_KERNEL_POLL"          # seconds between the first polls (default 15; the tests poll faster)
POLL_MAX_S, POLL_GROWTH = 120.0, 1.5
WAIT_ENV = "FKD_KERNEL_WAIT"          # seconds to wait for the kernel before giving up (it keeps running there)
OUTPUT_TRIES = 3


def status_name(status) -> str:
    """QUEUED, RUNNING, COMPLETE, ERROR, CANCEL_ACKNOWLEDGED...: whatever spelling the client hands over."""
    return str(getattr(status, "name", status)).rsplit(".", 1)[-1].upper().replace("KERNEL_WORKER_STATUS_", "")


def read_state(run_dir: Path) -> dict:
    f = Path(run_dir) / STATE
    return json.loads(f.read_text()) if f.is_file() else {}


def write_state(run_dir: Path, **fields) -> dict:
    state = {**read_state(run_dir), **fields, "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic.write_json(Path(run_dir) / STATE, state)
    return state


def trained_on(run_dir: Path) -> str | None:
    """'kaggle <owner/slug> v<N> (<accelerator>)' for a run trained in a kernel; None for a local run."""
    s = read_state(run_dir)
    return f"kaggle {s['ref']} v{s['version']} ({s.get('accelerator')})" if s.get("version") else None


# ------------------------------------------------------------------------------------------ before a push
def preflight(api, owner: str, slug: str) -> None:
    """One line and nothing pushed: no GPU hours left, rules not accepted / competition not visible, a kernel of
    that slug that is not fkd's."""
    with explained(api):
        quota = api.quota_view()
    gpu = getattr(quota, "gpu_quota", None)
    if gpu is not None and gpu.total_time_allowed is not None:
        used = gpu.time_used.total_seconds() / 3600 if gpu.time_used else 0.0
        total = gpu.total_time_allowed.total_seconds() / 3600
        left = total - used
        print(f"kaggle quota: {used:.1f} of {total:.0f} GPU hours used this week; {max(left, 0):.1f} left", flush=True)
        if left <= 0:
            raise FkdError(f"no GPU hours left on {where()} this week ({used:.1f} of {total:.0f} h used; they come "
                           f"back at {quota.quota_refresh_time}); nothing pushed")
    entered(api)
    theirs = _kernel_source(api, owner, slug)
    if theirs is not None and "fkd/remote/build.py" not in theirs:
        raise FkdError(f"{owner}/{slug} on {where()} is another kernel, not fkd's; nothing pushed: pick another "
                       "run name (--set name=...)")


def entered(api) -> None:
    """The account sees the competition and has accepted its rules (Kaggle lists it as entered): a kernel can
    mount its data only then. One line with the fix otherwise."""
    from kagglesdk.competitions.types.competition_api_service import ApiListCompetitionsRequest
    from kagglesdk.competitions.types.competition_enums import CompetitionListTab

    with explained(api), api.build_kaggle_client() as k:
        req = ApiListCompetitionsRequest()
        req.group = CompetitionListTab.COMPETITION_LIST_TAB_EVERYTHING
        req.search = COMP.slug
        found = [c for c in k.competitions.competition_api_client.list_competitions(req).competitions or []
                 if c.ref.rstrip("/").rsplit("/", 1)[-1] == COMP.slug]
    if not found:
        raise explain_403(api)
    if not found[0].user_has_entered:
        raise FkdError(f"{where()}: this account has not accepted the rules of {COMP.slug!r}, so a kernel cannot "
                       f"mount its data: accept them on the website ({COMP.url}/rules); nothing pushed")


def _kernel_source(api, owner: str, slug: str, version: int | None = None) -> str | None:
    """The source of a kernel (of a version), or None where there is no such kernel."""
    import requests
    from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelRequest

    try:
        with api.build_kaggle_client() as k:
            req = ApiGetKernelRequest()
            req.user_name, req.kernel_slug = owner, slug
            if version:
                req.version_label = f"v{version}"
            res = call(k.kernels.kernels_api_client.get_kernel, req)
    except requests.HTTPError as e:
        if e.response is not None and e.response.status_code == 404:
            return None
        raise explain(e, api=api) from None
    return (res.blob.source if res.blob else "") or ""


# --------------------------------------------------------------------------------------------- the push
def push_once(api, cfg: Config, owner: str, accelerator: str, checkpoints: bool) -> dict:
    """The kernel version this run trains in: the one recorded, one an interrupted push left, or a new push."""
    run_dir, slug = cfg.run_dir(), kernel_slug(cfg)
    state = read_state(run_dir)
    if state.get("version") and state.get("status") not in ("ERROR", "CANCEL_ACKNOWLEDGED", "CANCEL_REQUESTED"):
        print(f"kernel {state['ref']} v{state['version']} was pushed before ({state['status']}); polling it, not "
              "pushing again", flush=True)
        return state
    if state.get("status") == "pushing" and state.get("push_id"):   # pushed, and the answer was lost?
        src = _kernel_source(api, owner, slug)
        if src is not None and state["push_id"] in src:
            version = _current_version(api, owner, slug)
            print(f"the interrupted push of {owner}/{slug} reached {where()} (v{version}); polling it", flush=True)
            return write_state(run_dir, ref=f"{owner}/{slug}", version=version, status="QUEUED")
    preflight(api, owner, slug)
    folder, push_id = build_kernel(cfg, owner, accelerator, run_dir / "kernel", checkpoints)
    write_state(run_dir, status="pushing", push_id=push_id, slug=slug, accelerator=accelerator, version=None,
                ref=f"{owner}/{slug}", pushed_from=str(folder))
    with explained(api):
        res = call(api.kernels_push, str(folder), acc=accelerator, idempotent=False)
    if res.error or res.invalid_competition_sources:
        bad = f" (competition sources not accepted: {res.invalid_competition_sources})" \
            if res.invalid_competition_sources else ""
        write_state(run_dir, status="refused", error=res.error)
        raise FkdError(f"{where()} refused the kernel {owner}/{slug}: {res.error or 'no reason given'}{bad}; "
                       "nothing runs")
    print(f"pushed {res.ref} version {res.version_number} ({accelerator}): {res.url}", flush=True)
    return write_state(run_dir, ref=f"{owner}/{slug}", version=res.version_number, url=res.url, status="QUEUED")


def _current_version(api, owner: str, slug: str) -> int:
    from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelRequest

    with explained(api), api.build_kaggle_client() as k:
        req = ApiGetKernelRequest()
        req.user_name, req.kernel_slug = owner, slug
        return int(call(k.kernels.kernels_api_client.get_kernel, req).metadata.current_version_number)


# ------------------------------------------------------------------------------------------------ polling
def wait(api, run_dir: Path, state: dict) -> str:
    """Poll the kernel version until it ends (back-off, Retry-After honoured by `call`); a progress line a poll:
    status, minutes, the log's last line. Returns the terminal status."""
    ref, version = state["ref"], state["version"]
    delay = float(os.environ.get(POLL_ENV) or 15)
    limit = float(os.environ.get(WAIT_ENV) or 12 * 3600)
    t0 = time.time()
    while True:
        with explained(api):
            res = call(api.kernels_status, f"{ref}/{version}")
        status = status_name(res.status)
        write_state(run_dir, status=status, failure=res.failure_message or None)
        print(f"\rkernel {ref} v{version}: {status.lower()}, {(time.time() - t0) / 60:.1f} min; "
              f"{_last_log_line(api, ref, version)[:80]}", end="", flush=True)
        if status in TERMINAL:
            print(flush=True)
            return status
        if time.time() - t0 > limit:
            print(flush=True)
            raise FkdError(f"kernel {ref} v{version} still {status.lower()} after {limit / 60:.0f} min; it keeps "
                           "running on Kaggle: rerun the same command to poll it again (nothing is pushed twice)")
        time.sleep(delay)
        delay = min(delay * POLL_GROWTH, POLL_MAX_S)


def _last_log_line(api, ref: str, version: int) -> str:
    try:
        log = api.kernels_logs(f"{ref}/{version}")
    except Exception:  # noqa: BLE001 - the progress line goes without the log's last line, nothing else depends on it
        return "(no log yet)"
    lines = [ln for ln in log_lines(log) if ln.strip()]
    return lines[-1].strip() if lines else "(no log yet)"


def log_lines(log: str) -> list[str]:
    """A kernel log as lines: Kaggle's is a JSON list of {stream_name, time, data} (or plain text)."""
    try:
        events = json.loads(log)
        return "".join(e.get("data", "") for e in events).splitlines() if isinstance(events, list) else [log]
    except (ValueError, TypeError, AttributeError):
        return (log or "").splitlines()


# -------------------------------------------------------------------------------------------- the outputs
def fetch(api, cfg: Config, state: dict) -> Path:
    """Download the version's outputs into runs/<name>/.remote/v<N>/ (retrying a download that broke off)."""
    import requests

    staging = cfg.run_dir() / ".remote" / f"v{state['version']}"
    for attempt in range(1, OUTPUT_TRIES + 1):
        try:
            api.kernels_output(f"{state['ref']}/{state['version']}", str(staging), force=True, quiet=True)
            return staging
        except ValueError as e:      # the client refuses a name that leads outside the folder
            raise FkdError(f"kernel {state['ref']} v{state['version']}: {e}; nothing unpacked") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
            if attempt == OUTPUT_TRIES:
                raise FkdError(f"the outputs of {state['ref']} v{state['version']} kept breaking off "
                               f"({type(e).__name__}); rerun the same command to fetch them again") from None
            print(f"the download broke off ({type(e).__name__}); again ({attempt}/{OUTPUT_TRIES - 1})", flush=True)
        except Exception as e:  # noqa: BLE001 - explained in one line
            raise explain(e, api=api) from None
    return staging


def unpack_run(staging: Path, cfg: Config, data_hash: str) -> dict:
    """Check the kernel's run against this config and data, unpack it into runs/<name>/; its cv.json."""
    from ..learn.runfiles import read_run_meta

    archive = staging / "fkd-run.zip"
    if not archive.is_file():
        raise FkdError(f"{staging}: the kernel left no fkd-run.zip; see {staging} for what it left")
    try:
        with zipfile.ZipFile(archive) as zf:
            if zf.testzip() is not None:
                raise zipfile.BadZipFile("a member fails its CRC")
            extract_within(zf, cfg.run_dir().parent, cfg.run_name())
    except zipfile.BadZipFile as e:
        raise FkdError(f"{archive}: not a whole zip ({e}); rerun to fetch the outputs again") from None
    meta = read_run_meta(cfg.run_dir())
    if meta.get("fingerprint") != cfg.fingerprint() or meta.get("data_hash") != data_hash:
        raise FkdError(f"{archive}: the kernel trained another config or other data than {cfg.run_name()}; "
                       "not used")
    meta["data_dir"], meta["trained_in"] = str(Path(cfg.data_dir).resolve()), meta.get("data_dir")
    atomic.write_text(cfg.run_dir() / "config.yaml", yaml.safe_dump(meta, sort_keys=False))   # read here now
    return json.loads((cfg.run_dir() / "cv.json").read_text())


def extract_within(zf: zipfile.ZipFile, parent: Path, top: str) -> None:
    """Unpack the members under `top/` into parent/top/: absolute names, '..', links and anything outside that
    one folder are refused before a byte is written."""
    parent = Path(parent).resolve()
    members = []
    for info in zf.infolist():
        p = PurePosixPath(info.filename)
        link = stat.S_ISLNK(info.external_attr >> 16)
        if p.is_absolute() or ".." in p.parts or link or not p.parts or p.parts[0] != top:
            raise FkdError(f"the kernel's output holds {info.filename!r}, which would land outside runs/{top}/ "
                           f"{'(a link)' if link else ''}; nothing unpacked")
        members.append(info)
    for info in members:
        if not info.is_dir():
            atomic.write_bytes(parent / info.filename, zf.read(info))


def train_remote(cfg: Config, data_hash: str, accelerator: str = DEFAULT_ACCELERATOR,
                 checkpoints: bool = False) -> dict:
    """The run trained in a Kaggle kernel (pushed once, polled, its outputs checked and unpacked); its cv."""
    run_dir = cfg.run_dir()
    if (run_dir / "cv.json").is_file() and read_state(run_dir).get("status") == "fetched":
        print(f"{cfg.run_name()} was trained in {trained_on(run_dir)} and fetched before; reused", flush=True)
        return json.loads((run_dir / "cv.json").read_text())
    api = get_api()
    owner = api.config_values.get(api.CONFIG_NAME_USER) or ""
    run_dir.mkdir(parents=True, exist_ok=True)
    state = push_once(api, cfg, owner, accelerator, checkpoints)
    status = wait(api, run_dir, state)
    if status != "COMPLETE":
        log = log_lines(api.kernels_logs(f"{state['ref']}/{state['version']}"))
        print("\n".join(["the kernel's log ends:", *log[-15:]]), file=sys.stderr, flush=True)
        failure = read_state(run_dir).get("failure") or "no reason given"
        raise FkdError(f"kernel {state['ref']} v{state['version']} ended {status.lower()}: {failure}; nothing "
                       "uploaded; rerun the same command to push a new version")
    cv = unpack_run(fetch(api, cfg, state), cfg, data_hash)
    write_state(run_dir, status="fetched")
    print(f"fetched {cfg.run_name()} from {state['ref']} v{state['version']}: CV {cv['cv_rmse']:.4f}", flush=True)
    return cv


def kernel_submission(cfg: Config, data) -> dict:
    """The submission the kernel made, written here like any other (CSV, sidecar naming the kernel, ledger row),
    once it is shown to be a prediction of this test set; the sidecar's content."""
    from ..competition.data import test_hash
    from ..competition.metric import read_submission
    from ..infer.submission import write_submission

    state = read_state(cfg.run_dir())
    staging = cfg.run_dir() / ".remote" / f"v{state['version']}"
    side = json.loads((staging / "submission.json").read_text())
    if side.get("test_hash") != test_hash(data):
        raise FkdError(f"{staging}/submission.csv predicts another test set ({side.get('test_hash')}) than "
                       f"{data.data_dir} holds ({test_hash(data)}); not used")
    sub = read_submission(staging / "submission.csv")
    keep = ("config", "tta_flip_const", "models", "cv_estimates", "folds", "git_commit", "fkd_version")
    info = {k: side[k] for k in keep if k in side} | {"trained_on": trained_on(cfg.run_dir()),
                                                       "kernel_sidecar": str(staging / "submission.json")}
    return write_submission(sub, cfg.run_name(), data, info, side.get("cv_rmse"), bool(side.get("tta")))
