"""The official `kaggle` client against `fkd serve`: download, submit, poll, scores, and the errors users hit."""
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import KEY, noisy_submission, unavailable

from fkd.competition.metric import score_files
from fkd.errors import FkdError
from fkd.kaggle import ledger
from fkd.kaggle.client import get_api, warn_permissions
from fkd.kaggle.download import download
from fkd.kaggle.server import serve_in_thread
from fkd.kaggle.upload import upload, upload_pending


def test_download_submit_poll_scores_equal_fkd_score(server, practice_dir, tmp_path):
    files = download(tmp_path / "dl")
    assert {f.name for f in files} == {"training.csv", "test.csv", "IdLookupTable.csv", "SampleSubmission.csv"}
    assert not (tmp_path / "dl" / "solution.csv").exists()       # never served
    assert not (tmp_path / "dl" / "facial-keypoints-detection.zip").exists()
    before = {f: f.stat().st_mtime_ns for f in files}
    download(tmp_path / "dl")                              # intact: skipped
    assert before == {f: f.stat().st_mtime_ns for f in files}
    sub = noisy_submission(practice_dir, tmp_path / "sub.csv")
    row = upload(sub)
    assert row["status"] == "COMPLETE"
    for subset, col in (("public", "public_score"), ("private", "private_score")):
        assert abs(row[col] - score_files(sub, practice_dir / "solution.csv", subset=subset)["rmse"]) < 1e-9
    assert f"uid={row['uid']}" in row["description"]
    # the same file is never submitted twice
    again = upload(sub)
    assert again["ref"] == row["ref"]
    assert len(server.state.store.list_submissions("alice")) == 1


def test_downloaded_data_loads_like_the_original(server, practice_dir, tmp_path):
    import numpy as np

    from fkd.competition.data import load_data
    download(tmp_path / "dl")
    a, b = load_data(practice_dir), load_data(tmp_path / "dl")
    assert np.array_equal(a.images, b.images) and a.data_hash == b.data_hash


def test_error_submission_shows_its_reason(server, practice_dir, tmp_path):
    sub = noisy_submission(practice_dir, tmp_path / "short.csv", drop=5)
    with pytest.raises(FkdError, match="ERROR: .*5 RowIds missing"):
        upload(sub)
    assert sub.is_file() and ledger.get(sub)["status"] == "ERROR"


def test_no_credentials(monkeypatch, tmp_path):
    for v in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "empty"))
    with pytest.raises(FkdError, match="no Kaggle credentials found.*kaggle.json"):
        get_api()


@pytest.mark.parametrize("fault,expected", [
    ("auth", "401 Unauthorized"),
    ("rules", "403 .*accept its rules .*facial-keypoints-detection/rules"),
    ("put", "upload .* failed"),
    ("down", "answered 503"),
])
def test_failures_keep_the_csv_and_a_pending_row(server, practice_dir, tmp_path, fault, expected):
    sub = noisy_submission(practice_dir, tmp_path / "sub.csv")
    server.state.store.set_fault(fault, 1 if fault == "auth" else -1)
    with pytest.raises(FkdError, match=expected):
        upload(sub)
    assert sub.is_file()
    row = ledger.get(sub)
    assert row["status"] == "pending" and row["error"]
    server.state.store.set_fault(fault, 0)
    done = upload_pending()                                # the retry settles it
    assert [r["status"] for r in done] == ["COMPLETE"]
    assert len(server.state.store.list_submissions("alice")) == 1


def test_reply_lost_after_accept_never_submits_twice(server, practice_dir, tmp_path):
    sub = noisy_submission(practice_dir, tmp_path / "sub.csv")
    server.state.store.set_fault("create-lost", 1)
    row = upload(sub)
    assert row["status"] == "COMPLETE"
    assert len(server.state.store.list_submissions("alice")) == 1


def test_daily_limit(server, practice_dir, tmp_path):
    for i in range(5):
        upload(noisy_submission(practice_dir, tmp_path / f"s{i}.csv", seed=i))
    sixth = noisy_submission(practice_dir, tmp_path / "s6.csv", seed=6)
    with pytest.raises(FkdError, match="daily submission limit reached .*5 a day"):
        upload(sixth)
    assert sixth.is_file() and ledger.get(sixth)["status"] == "pending"


def test_network_down(server, practice_dir, tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("FKD_KAGGLE_ENDPOINT", f"http://127.0.0.1:{port}")
    sub = noisy_submission(practice_dir, tmp_path / "sub.csv")
    with pytest.raises(FkdError, match="cannot reach .*kept"):
        upload(sub)


def test_an_upload_that_never_left_is_not_stuck_once_the_server_runs(practice_dir, tmp_path, monkeypatch, capsys):
    """FKD_KAGGLE_ENDPOINT names a port where no server runs yet: the upload fails in one line, keeps the CSV and
    leaves nothing pending under a guessed name; once `fkd serve` runs there, the same upload goes through and
    nothing stale waits in `fkd upload --pending`."""
    from fkd.kaggle.server import serve_in_thread
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("FKD_KAGGLE_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    sub = noisy_submission(practice_dir, tmp_path / "s.csv")
    with pytest.raises(FkdError, match="cannot reach .*nothing was sent, the CSV is kept"):
        upload(sub)
    assert sub.is_file() and ledger.get(sub) is None                  # pending nowhere
    srv, _ = serve_in_thread(practice_dir, port=port, state_dir=tmp_path / "state", users={"alice": KEY},
                             score_delay=0.2)
    try:
        row = upload(sub)
        assert row["status"] == "COMPLETE" and row["destination"] == srv.state.identity
        assert upload_pending() == []
    finally:
        srv.shutdown()
        srv.server_close()


def test_stalled_server_times_out(server, practice_dir, tmp_path, monkeypatch):
    """A server that accepts the connection and never answers: one clear line after FKD_KAGGLE_TIMEOUT."""
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)                                   # the kernel completes handshakes; nobody ever answers
        monkeypatch.setenv("FKD_KAGGLE_ENDPOINT", f"http://127.0.0.1:{s.getsockname()[1]}")
        monkeypatch.setenv("FKD_KAGGLE_TIMEOUT", "2")
        sub = noisy_submission(practice_dir, tmp_path / "sub.csv")
        t0 = time.monotonic()
        with pytest.raises(FkdError, match="did not answer within 2s .*kept"):
            upload(sub)
        assert time.monotonic() - t0 < 30
    assert sub.is_file() and ledger.get(sub) is None        # it reached no server: pending nowhere


def test_credentials_never_leak(server, practice_dir, tmp_path, capsys):
    sub = noisy_submission(practice_dir, tmp_path / "sub.csv")
    upload(sub)
    server.state.store.set_fault("auth", 1)
    with pytest.raises(FkdError) as e:
        upload(noisy_submission(practice_dir, tmp_path / "sub2.csv", seed=3))
    out = capsys.readouterr()
    assert KEY not in out.out + out.err + str(e.value)
    assert KEY.encode() not in Path("submissions/ledger.sqlite").read_bytes()
    con = sqlite3.connect(tmp_path / "state" / "server.sqlite")
    assert KEY not in repr(con.execute("SELECT * FROM submissions").fetchall())


def test_kaggle_json_readable_by_others_warns(tmp_path, monkeypatch, capsys):
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    os.chmod(d / "kaggle.json", 0o644)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(d))
    assert warn_permissions() and "chmod 600" in capsys.readouterr().err
    os.chmod(d / "kaggle.json", 0o600)
    assert warn_permissions() is None


def test_server_state_survives_a_restart(practice_dir, tmp_path, monkeypatch):
    state = tmp_path / "state"
    srv, url = serve_in_thread(practice_dir, port=0, state_dir=state, score_delay=0.1)
    monkeypatch.setenv("FKD_KAGGLE_ENDPOINT", url)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("KAGGLE_USERNAME", "bob")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    row = upload(noisy_submission(practice_dir, tmp_path / "a.csv"))
    srv.shutdown()
    srv.server_close()
    srv2, url2 = serve_in_thread(practice_dir, port=0, state_dir=state)
    subs = srv2.state.store.list_submissions("bob")
    assert len(subs) == 1 and float(subs[0]["publicScore"]) == row["public_score"]
    board = srv2.state.store.leaderboard()
    assert {"Sample Submission Benchmark", "Mean Keypoints Benchmark", "bob"} <= {b["teamName"] for b in board}
    srv2.shutdown()
    srv2.server_close()


def test_the_kaggle_cli_itself_lists_our_submission(practice_dir, tmp_path, monkeypatch):
    """The plain `kaggle` CLI can only be aimed at http://localhost:80 (KAGGLE_API_ENVIRONMENT=LOCALHOST)."""
    try:
        srv, _ = serve_in_thread(practice_dir, port=80, state_dir=tmp_path / "state80", score_delay=0.1)
    except OSError as e:  # a non-root user may not bind port 80; another server may hold it
        unavailable(f"cannot bind port 80 for the plain kaggle CLI ({e.strerror}): it needs root and a free port 80")
    try:
        monkeypatch.setenv("FKD_KAGGLE_ENDPOINT", "http://localhost")
        monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "c"))
        monkeypatch.setenv("KAGGLE_USERNAME", "carol")
        monkeypatch.setenv("KAGGLE_KEY", "k")
        sub = noisy_submission(practice_dir, tmp_path / "fkd-made.csv")
        upload(sub)
        exe = shutil.which("kaggle", path=str(Path(sys.executable).parent)) or "kaggle"
        env = {**os.environ, "KAGGLE_API_ENVIRONMENT": "LOCALHOST"}
        c = "facial-keypoints-detection"

        def cli(*args):
            r = subprocess.run([exe, "competitions", *args], capture_output=True, text=True, env=env, timeout=60,
                               cwd=tmp_path)
            assert r.returncode == 0, f"kaggle competitions {' '.join(args)}: {r.stdout}{r.stderr}"
            return r.stdout

        out = cli("submissions", c)
        assert "fkd-made.csv" in out and "uid=" in out
        ref = next(ln.split()[0] for ln in out.splitlines() if "fkd-made.csv" in ln)
        assert c in cli("list", "-s", "keypoints")
        assert "Remaining today: 4" in cli("submission-limits", c)
        assert "carol" in cli("leaderboard", c, "--show")
        cli("leaderboard", c, "--download", "-p", "lb")
        assert (tmp_path / "lb" / f"{c}.zip").is_file()
        cli("submission-download", ref, "-p", "back")
        assert (tmp_path / "back" / "fkd-made.csv").read_bytes() == sub.read_bytes()
        team = next(ln.split()[0] for ln in cli("leaderboard", c, "--show").splitlines() if "carol" in ln)
        assert ref in cli("team-submissions", team)
        assert "evaluation" in cli("pages", c, "list", c)   # the client wants the slug after `list` too
    finally:
        srv.shutdown()
        srv.server_close()


def test_scores_merge_the_competition_list_and_leaderboard_ranks_us(server, practice_dir, tmp_path, capsys):
    from fkd.cli import main
    a = noisy_submission(practice_dir, tmp_path / "a.csv", noise=0.5)
    b = noisy_submission(practice_dir, tmp_path / "b.csv", noise=2.0, seed=1)
    ledger.record(a, cv_rmse=0.6, run="run-a")
    ledger.record(b, cv_rmse=2.1, run="run-b")
    upload(a)
    upload(b)
    ledger.record(a, public_score=None, private_score=None, status="submitted")   # stale local view
    capsys.readouterr()
    assert main(["scores"]) == 0
    out = capsys.readouterr().out
    assert "merged 2 submission(s)" in out
    lines = [ln for ln in out.splitlines() if ln.startswith(("a.csv", "b.csv"))]
    assert [ln.split()[0] for ln in lines] == ["a.csv", "b.csv"]                  # best first
    assert ledger.get(a)["public_score"] is not None
    assert Path("submissions/cv-vs-leaderboard.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["leaderboard", "--private"]) == 0
    out = capsys.readouterr().out
    assert "Mean Keypoints Benchmark" in out and "would rank 1 of" in out


def test_submit_end_to_end_offline(practice_dir, tmp_path, monkeypatch, capsys, trains):
    """download -> train tiny -> predict -> submit -> poll, all through the official client and `fkd serve`."""
    from fkd.pipeline import submit
    for v in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "FKD_KAGGLE_ENDPOINT"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-credentials"))   # none: offline by itself
    r = submit(preset="quick", data_dir=str(practice_dir),
               overrides=["folds=2", "epochs=1", "limit_train=120", "batch_size=16", "model=baseline"])
    assert "FKD_KAGGLE_ENDPOINT" not in os.environ and "KAGGLE_USERNAME" not in os.environ  # restored
    out = capsys.readouterr().out
    assert "OFFLINE (no Kaggle credentials found)" in out and "Nothing here reached kaggle.com" in out
    assert "[3/4] predict: fold0 + fold1 averaged, TTA on" in out          # the models the submission averages
    assert r["offline"] and Path("competition/data/offline-" + practice_dir.name, "training.csv").is_file()
    sub = Path(r["submission"]["file"])
    row = r["ledger"]
    assert row["status"] == "COMPLETE"
    for subset, col in (("public", "public_score"), ("private", "private_score")):
        assert abs(row[col] - score_files(sub, practice_dir / "solution.csv", subset=subset)["rmse"]) < 1e-9
    assert f"CV RMSE       {r['cv']['cv_rmse']:.4f}" in out and "public score" in out


def test_submit_of_a_blend_trains_a_run_a_backbone_and_uploads_their_equal_average(practice_dir, tmp_path,
                                                                                    monkeypatch, capsys, trains):
    """`blend`: one run a backbone on the same split (fold 0 + a refit each), their four models averaged equally,
    the blend's CV the out-of-fold error of the two fold-0 models averaged, uploaded and scored like any other."""
    import json

    from fkd.infer.blend import blend_name
    from fkd.learn.cv import training_data
    from fkd.learn.runfiles import load_run, read_folds, read_oof
    from fkd.pipeline import submit
    for v in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "FKD_KAGGLE_ENDPOINT"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-credentials"))
    r = submit(preset="quick", data_dir=str(practice_dir), offline=True,
               overrides=["folds=2", "train_folds=0", "refit=1", "epochs=1", "limit_train=120", "batch_size=16",
                          "model=baseline", "blend=resnet18"])
    out = capsys.readouterr().out
    assert "(run 1 of 2: the budget is shared equally)" in out and "(run 2 of 2" in out
    info = r["submission"]
    runs = [Path(d) for d in info["runs"]]
    assert [json.loads((d / "cv.json").read_text())["run"] for d in runs] == [d.name for d in runs]
    assert "baseline" in runs[0].name and "resnet18" in runs[1].name
    assert Path(info["file"]).name.endswith(blend_name(runs) + ".csv")
    assert info["per"] == "equal" and info["models"] == [f"{d.name}/{m}" for d in runs for m in ("fold0", "refit0")]
    assert "refit models" in info["cv_estimates"] and "averaged equally" in info["cv_estimates"]

    # the CV: fold 0's out-of-fold predictions of both runs, averaged, against the labels
    folds = read_folds(runs[0])
    assert np.array_equal(folds, read_folds(runs[1]))                       # one split for both backbones
    y = training_data(load_run(runs[0])[0]).keypoints
    avg = (read_oof(runs[0], True) + read_oof(runs[1], True)) / 2
    err = (avg - y)[folds == 0]
    assert r["cv"]["cv_rmse"] == pytest.approx(float(np.sqrt(np.nanmean(err ** 2))), rel=1e-5)
    assert f"CV RMSE       {r['cv']['cv_rmse']:.4f}" in out and "and 1 more" in out

    row = r["ledger"]
    assert row["status"] == "COMPLETE" and row["run"] == blend_name(runs)
    assert abs(row["public_score"] - score_files(Path(info["file"]), practice_dir / "solution.csv",
                                                 subset="public")["rmse"]) < 1e-9
