"""Kaggle's GPUs as fkd's second machine, rehearsed offline: the kernel fkd pushes runs for real under `fkd serve`
(on this machine's CPU), is polled, its outputs checked and brought back, its submission uploaded from here."""
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import KEY, unavailable

from fkd.config import make_config
from fkd.errors import FkdError
from fkd.kaggle.download import download

TINY = ["model=baseline", "folds=2", "epochs=2", "batch_size=16", "aug=0", "workers=0", "limit_train=160"]


@pytest.fixture
def kaggle_here(server, tmp_path, monkeypatch):
    """fkd serve (user alice) with its kernels, the competition downloaded through it, fast polling."""
    monkeypatch.setenv("FKD_KERNEL_POLL", "0.3")
    download(tmp_path / "data")
    return server


def tiny(tmp_path, *extra):
    return make_config(preset="quick", overrides=TINY + list(extra), data_dir=str(tmp_path / "data"),
                       runs_dir=str(tmp_path / "runs"))


def remote(cfg, **kw):
    from fkd.competition.data import load_data
    from fkd.remote.run import train_remote
    return train_remote(cfg, load_data(cfg.data_dir).data_hash, **kw)


# --------------------------------------------------------------------------------------- what is pushed
def test_the_pushed_kernel_carries_no_credential_and_fkds_own_code(tmp_path, monkeypatch):
    """What goes to Kaggle is read back: no kaggle.json, key, token, environment variable or ledger content."""
    from fkd.kaggle import ledger
    from fkd.remote.build import build_kernel
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_tokenvalue_0123456789")
    (tmp_path / "kaggle.json").write_text(json.dumps({"username": "alice", "key": KEY}))
    ledger.record(tmp_path / "secret-run-sub.csv", run="secret-run", description="uid=deadbeef0123")
    folder, push_id = build_kernel(make_config(preset="default"), "alice", "NvidiaTeslaT4", tmp_path / "k")
    pushed = "".join(p.read_text() for p in folder.iterdir())
    for secret in (KEY, "KGAT_tokenvalue", "deadbeef0123", "secret-run", str(Path.home()), "KAGGLE_KEY=",
                   "FKD_KAGGLE_ENDPOINT"):
        assert secret not in pushed, secret
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["is_private"] is True and meta["enable_gpu"] is True and meta["machine_shape"] == "NvidiaTeslaT4"
    assert meta["competition_sources"] == ["facial-keypoints-detection"] and meta["id"].startswith("alice/fkd-")
    script = (folder / meta["code_file"]).read_text()
    assert push_id in script and "fkd/remote/build.py" in script
    code = __import__("base64").b64decode(script.split("CODE = '")[1].split("'")[0])
    names = zipfile.ZipFile(io.BytesIO(code)).namelist()
    assert "fkd/learn/loop.py" in names and "competition/facial-keypoints-detection.yaml" in names
    assert not any(n.endswith((".json", ".sqlite", ".pt", ".csv")) for n in names)


def test_a_run_name_kaggle_would_not_take_is_refused_before_anything(tmp_path):
    from fkd.remote.build import kernel_slug
    with pytest.raises(FkdError, match="kernel slug .* pick a shorter run name"):
        kernel_slug(make_config(preset="quick", overrides=["name=" + "x" * 60]))
    assert kernel_slug(make_config(preset="quick", overrides=["name=My_Run.v2"])) == "fkd-my-run-v2"


@pytest.mark.parametrize("layout", ["competitions", "flat", "bundle"])
def test_the_kernel_finds_the_competition_wherever_kaggle_mounts_it(practice_dir, tmp_path, layout):
    from fkd.remote import kernel
    where = {"competitions": tmp_path / "in" / "competitions" / "facial-keypoints-detection",
             "flat": tmp_path / "in" / "facial-keypoints-detection", "bundle": tmp_path / "in" / "fkd-data"}[layout]
    where.mkdir(parents=True)
    if layout == "bundle":
        with zipfile.ZipFile(where / "facial-keypoints-detection.zip", "w") as zf:
            for f in practice_dir.glob("*"):
                if f.name != "solution.csv":
                    zf.write(f, f.name)
    else:
        for f in practice_dir.glob("*"):
            if f.name != "solution.csv":
                shutil.copy(f, where / f.name)
    (tmp_path / "in" / "other-dataset").mkdir()
    assert kernel.find_competition(tmp_path / "in", "facial-keypoints-detection") == where
    with pytest.raises(SystemExit, match="no training.csv"):
        kernel.find_competition(tmp_path / "in" / "other-dataset", "facial-keypoints-detection")


def test_outputs_never_land_outside_the_run_folder(tmp_path):
    from fkd.remote.run import extract_within
    for bad in ("../evil.py", "/etc/evil", "run/../../evil", "other-run/cv.json"):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("run/cv.json", "{}")
            zf.writestr(bad, "x")
        with pytest.raises(FkdError, match="outside runs/run/"):
            extract_within(zipfile.ZipFile(buf), tmp_path / "runs", "run")
        assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "evil.py").exists()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:                      # a symbolic link in the archive
        info = zipfile.ZipInfo("run/link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(FkdError, match="a link"):
        extract_within(zipfile.ZipFile(buf), tmp_path / "runs", "run")


# --------------------------------------------------------------------------------- the kernel, run for real
def test_train_in_a_kernel_end_to_end_and_exactly_once(kaggle_here, tmp_path, monkeypatch, capsys, trains):
    from fkd.remote import run
    cfg = tiny(tmp_path)
    real_wait, calls = run.wait, []

    def interrupted(*a):                      # `make submit` killed while the kernel runs
        calls.append(1)
        raise KeyboardInterrupt
    monkeypatch.setattr(run, "wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        remote(cfg)
    monkeypatch.setattr(run, "wait", real_wait)
    cv = remote(cfg)                          # resumes polling: no second push
    out = capsys.readouterr().out
    assert "pushed before" in out and out.count("pushed /code/") == 1
    assert len(kaggle_here.state.kernels.versions("alice", run.kernel_slug(cfg))) == 1
    assert cv["cv_rmse"] < cv["mean_keypoint_rmse"] and (cfg.run_dir() / "fold1" / "metrics.csv").is_file()
    assert not list(cfg.run_dir().glob("fold*/best.pt"))     # checkpoints stay there unless asked for
    assert run.trained_on(cfg.run_dir()).startswith("kaggle alice/fkd-") and "NvidiaTeslaT4" in run.trained_on(
        cfg.run_dir())
    from fkd.competition.data import load_data
    info = run.kernel_submission(cfg, load_data(cfg.data_dir))
    side = json.loads(Path(info["file"]).with_suffix(".json").read_text())
    assert side["trained_on"] == run.trained_on(cfg.run_dir()) and side["models"] == ["fold0", "fold1"]
    assert remote(cfg)["cv_rmse"] == cv["cv_rmse"] and "fetched before; reused" in capsys.readouterr().out


@pytest.mark.parametrize("fault,says", [
    ("kernel-error", "ended error: .*no training.csv"),
    ("kernel-cancel", "ended cancel_acknowledged"),
])
def test_a_kernel_that_fails_leaves_the_log_tail_and_the_run_resumable(kaggle_here, tmp_path, capsys, fault,
                                                                      says, trains):
    from fkd.remote import run
    kaggle_here.state.store.set_fault(fault, 1)
    cfg = tiny(tmp_path)
    with pytest.raises(FkdError, match=says + ".*nothing uploaded; rerun the same command to push a new version"):
        remote(cfg)
    assert "the kernel's log ends:" in capsys.readouterr().err
    assert not (cfg.run_dir() / "cv.json").exists() and not list(Path("submissions").glob("*.csv"))
    assert remote(cfg)["cv_rmse"] > 0                         # the rerun pushes version 2, which completes
    assert [v["version"] for v in kaggle_here.state.kernels.versions("alice", run.kernel_slug(cfg))] == [1, 2]


def test_a_kernel_stuck_in_the_queue_is_polled_again_not_pushed_again(kaggle_here, tmp_path, monkeypatch):
    from fkd.remote import run
    kaggle_here.state.store.set_fault("kernel-queued", 1)
    monkeypatch.setenv("FKD_KERNEL_WAIT", "2")
    cfg = tiny(tmp_path)
    with pytest.raises(FkdError, match="still queued after .* rerun the same command to poll it again"):
        remote(cfg)
    with pytest.raises(FkdError, match="still queued"):
        remote(cfg)
    assert len(kaggle_here.state.kernels.versions("alice", run.kernel_slug(cfg))) == 1


def test_an_output_download_that_breaks_off_is_fetched_again(kaggle_here, tmp_path, trains):
    """The first output file breaks off half way (the client resumes it with a Range request); the outputs still
    pass every check (zip CRCs, the run's config and data) and the run is whole."""
    kaggle_here.state.store.set_fault("reset", 1)
    cfg = tiny(tmp_path)
    assert remote(cfg)["cv_rmse"] > 0
    assert not kaggle_here.state.store.fault_armed("reset")            # the break-off happened
    assert (cfg.run_dir() / "fold0" / "val_pred.npz").is_file()


def test_nothing_is_pushed_without_gpu_hours_rules_or_a_free_slug(kaggle_here, tmp_path, monkeypatch):
    from fkd.kaggle.client import get_api
    from fkd.remote import run
    cfg = tiny(tmp_path)
    kaggle_here.state.store.set_fault("quota", -1)
    with pytest.raises(FkdError, match="no GPU hours left .* nothing pushed"):
        remote(cfg)
    kaggle_here.state.store.set_fault("quota", 0)
    kaggle_here.state.store.set_fault("rules", -1)
    with pytest.raises(FkdError, match="has not accepted the rules .* nothing pushed"):
        remote(cfg)
    kaggle_here.state.store.set_fault("rules", 0)
    other = tmp_path / "theirs"                              # a kernel of that slug that is not fkd's
    other.mkdir()
    (other / "k.py").write_text("print('mine')\n")
    (other / "kernel-metadata.json").write_text(json.dumps({
        "id": f"alice/{run.kernel_slug(cfg)}", "code_file": "k.py", "language": "python", "kernel_type": "script"}))
    get_api().kernels_push(str(other))
    with pytest.raises(FkdError, match="is another kernel, not fkd's; nothing pushed"):
        remote(cfg)
    assert len(kaggle_here.state.kernels.versions("alice", run.kernel_slug(cfg))) == 1


def test_a_push_kaggle_refuses_runs_nothing(kaggle_here, tmp_path, monkeypatch):
    import dataclasses

    import fkd.remote.build as build
    from fkd.remote import run
    monkeypatch.setattr(build, "COMP", dataclasses.replace(build.COMP, slug="titanic"))
    cfg = tiny(tmp_path)
    with pytest.raises(FkdError, match="refused the kernel .*competition sources not accepted: \\['titanic'\\]"):
        remote(cfg)
    assert kaggle_here.state.kernels.versions("alice", run.kernel_slug(cfg)) == []


def test_without_credentials_nothing_is_pushed(tmp_path, monkeypatch):
    for v in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "FKD_KAGGLE_ENDPOINT"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data").mkdir()
    from fkd.remote.run import train_remote
    with pytest.raises(FkdError, match="no Kaggle credentials found"):
        train_remote(tiny(tmp_path), "hash")


def test_folds_side_by_side_one_process_each(practice_dir, tmp_path, monkeypatch, trains):
    """What a machine with two GPUs does (two T4s on Kaggle): each fold in a process of its own; here on the CPU
    through FKD_PARALLEL_FOLDS. The run is the one a single process trains, fold for fold."""
    from fkd.learn.cv import run_cv
    monkeypatch.setenv("FKD_PARALLEL_FOLDS", "2")
    cfg = make_config(preset="quick", overrides=TINY + ["deterministic=false"], data_dir=str(practice_dir),
                      runs_dir=str(tmp_path / "runs"))
    cv = run_cv(cfg, progress=False)
    assert sorted(r["fold"] for r in cv["fold_results"]) == [0, 1] and cv["cv_rmse"] > 0



def test_fkd_train_takes_its_fold_processes_with_it_on_sigterm(practice_dir, tmp_path):
    """Stopped with SIGTERM, `fkd train` with folds side by side ends its fold processes too."""
    from conftest import sigterm_ends_children
    sets = [a for s in TINY + ["epochs=500", "deterministic=false", f"runs_dir={tmp_path / 'runs'}"]
            for a in ("--set", s)]
    sigterm_ends_children([sys.executable, "-m", "fkd", "train", "--data-dir", str(practice_dir), "--preset", "quick",
                           *sets], 2, env={**os.environ, "FKD_PARALLEL_FOLDS": "2"})


# -------------------------------------------------------------------------- the official CLI against fkd serve
def test_the_kaggle_cli_kernels_and_quota_commands_pass_against_fkd_serve(practice_dir, tmp_path, monkeypatch,
                                                                          trains):
    """Every `kaggle kernels ...` command and `kaggle quota` of the official CLI, aimed at fkd serve on
    http://localhost:80 (the only place the plain CLI can be aimed): init, push, status, output, pull, list,
    files, logs, delete."""
    from fkd.kaggle.server import serve_in_thread
    try:
        srv, _ = serve_in_thread(practice_dir, port=80, state_dir=tmp_path / "state80", score_delay=0.1)
    except OSError as e:
        unavailable(f"cannot bind port 80 for the plain kaggle CLI ({e.strerror}): it needs root and a free port 80")
    try:
        exe = shutil.which("kaggle", path=str(Path(sys.executable).parent)) or "kaggle"
        env = {**os.environ, "KAGGLE_API_ENVIRONMENT": "LOCALHOST", "KAGGLE_USERNAME": "dave", "KAGGLE_KEY": "k",
               "KAGGLE_CONFIG_DIR": str(tmp_path / "c")}

        def cli(*args, ok=True):
            r = subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path)
            assert (r.returncode == 0) == ok, f"kaggle {' '.join(args)}: {r.stdout}{r.stderr}"
            return r.stdout + r.stderr

        k = tmp_path / "k"
        k.mkdir()
        cli("kernels", "init", "-p", str(k))
        meta = json.loads((k / "kernel-metadata.json").read_text())
        meta.update(id="dave/hello-kernel", title="hello-kernel", code_file="hello.py", language="python",
                    kernel_type="script", competition_sources=["facial-keypoints-detection"])
        (k / "kernel-metadata.json").write_text(json.dumps(meta))
        (k / "hello.py").write_text("import os, pathlib\npathlib.Path('out.txt').write_text('hello ' + "
                                    "str(len(list(pathlib.Path(os.environ['FKD_KERNEL_INPUT']).rglob('*.zip')))))\n"
                                    "print('the kernel ran')\n")
        assert "version 1" in cli("kernels", "push", "-p", str(k)).lower()
        import time
        deadline = time.time() + 60
        while "COMPLETE" not in (s := cli("kernels", "status", "dave/hello-kernel")) and time.time() < deadline:
            time.sleep(0.5)
        assert "COMPLETE" in s
        cli("kernels", "output", "dave/hello-kernel", "-p", str(tmp_path / "out"))
        assert (tmp_path / "out" / "out.txt").read_text() == "hello 2"           # training.zip and test.zip mounted
        assert "the kernel ran" in cli("kernels", "logs", "dave/hello-kernel")
        cli("kernels", "pull", "dave/hello-kernel", "-p", str(tmp_path / "pulled"), "-m")
        assert "the kernel ran" in next((tmp_path / "pulled").glob("*.py")).read_text()
        assert "dave/hello-kernel" in cli("kernels", "list", "-m")
        assert "script.py" in cli("kernels", "files", "dave/hello-kernel")
        assert "GPU" in cli("quota")
        cli("kernels", "delete", "dave/hello-kernel", "-y")
        assert "dave/hello-kernel" not in cli("kernels", "list", "-m")
    finally:
        srv.shutdown()
        srv.server_close()


def test_make_submit_remote_kaggle_offline_end_to_end(practice_dir, tmp_path, monkeypatch, capsys, trains):
    """`make submit REMOTE=kaggle OFFLINE=1`: the local server takes the push, runs the kernel on this CPU, the
    outputs come back, the kernel's submission is uploaded from here and scored; the ledger says where the run
    trained."""
    from fkd.competition.metric import score_files
    from fkd.pipeline import submit
    from fkd.remote import Remote
    for v in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "FKD_KAGGLE_ENDPOINT"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("FKD_KERNEL_POLL", "0.3")
    r = submit(preset="quick", data_dir=str(practice_dir), overrides=TINY, offline=True, remote=Remote())
    out = capsys.readouterr().out
    assert "[2/4] train in a Kaggle kernel (NvidiaTeslaT4)" in out and "pushed /code/fkd-offline/" in out
    row = r["ledger"]
    assert row["status"] == "COMPLETE" and row["trained_on"].startswith("kaggle fkd-offline/fkd-quick-baseline")
    sub = Path(r["submission"]["file"])
    assert abs(row["public_score"] - score_files(sub, practice_dir / "solution.csv", subset="public")["rmse"]) < 1e-9
    again = submit(preset="quick", data_dir=str(practice_dir), overrides=TINY, offline=True, remote=Remote())
    assert "fetched before; reused" in capsys.readouterr().out and again["ledger"]["file"] != row["file"]


def test_submit_remote_of_a_blend_trains_each_backbone_in_a_kernel_and_averages_their_models_here(
        practice_dir, tmp_path, monkeypatch, capsys, trains):
    """`blend` with REMOTE=kaggle: one kernel a backbone, their checkpoints brought back (a blend averages the
    models here), the equal average uploaded and scored; the ledger names both kernels."""
    from fkd.pipeline import submit
    from fkd.remote import Remote
    for v in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "FKD_KAGGLE_ENDPOINT"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("FKD_KERNEL_POLL", "0.3")
    r = submit(preset="quick", data_dir=str(practice_dir), overrides=[*TINY, "blend=resnet18", "train_folds=0"],
               offline=True, remote=Remote())
    out = capsys.readouterr().out
    assert out.count("[2/4] train in a Kaggle kernel (NvidiaTeslaT4) (run ") == 2
    info, row = r["submission"], r["ledger"]
    assert [Path(d).name.split("-")[1] for d in info["runs"]] == ["baseline", "resnet18"]
    assert all((Path(d) / "fold0" / "best.pt").is_file() for d in info["runs"])     # brought back to average here
    assert row["status"] == "COMPLETE" and row["trained_on"].count("kaggle fkd-offline/") == 2
    assert info["cv_rmse"] < 100 and row["public_score"] is not None


def test_fkd_serve_takes_a_running_kernel_with_it_on_sigterm(practice_dir, tmp_path, monkeypatch):
    """Stopped with SIGTERM, `fkd serve` ends the kernel it was running (a subprocess), as Ctrl-C does."""
    import signal
    import socket
    import time

    from conftest import children_of, gone

    from fkd.kaggle.client import get_api
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    serve = subprocess.Popen([sys.executable, "-m", "fkd", "serve", str(practice_dir), "--port", str(port),
                              "--state", str(tmp_path / "state")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        monkeypatch.setenv("FKD_KAGGLE_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "c"))
        monkeypatch.setenv("KAGGLE_USERNAME", "alice")
        monkeypatch.setenv("KAGGLE_KEY", KEY)
        k = tmp_path / "k"
        k.mkdir()
        (k / "kernel-metadata.json").write_text(json.dumps({
            "id": "alice/sleeper", "title": "sleeper", "code_file": "sleep.py", "language": "python",
            "kernel_type": "script", "is_private": True, "competition_sources": ["facial-keypoints-detection"]}))
        (k / "sleep.py").write_text("import time\ntime.sleep(600)\n")
        deadline = time.time() + 60
        while True:                                     # the server takes a moment to listen
            try:
                get_api().kernels_push(str(k))
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        kernels = []
        while not kernels and time.time() < deadline:
            kernels = children_of(serve.pid)
            time.sleep(0.2)
        assert kernels, "fkd serve never started the pushed kernel"
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
        assert all(gone(p) for p in kernels), "the kernel outlived fkd serve"
    finally:
        serve.kill()
