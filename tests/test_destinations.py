"""Offline rehearsal and real Kaggle never mix: every ledger row knows where it went and which data it was
predicted from; scores, the leaderboard rank and pending uploads keep to the destination in use."""
import json
import sqlite3
from pathlib import Path

import pytest
from conftest import noisy_submission

from fkd.competition.data import load_data
from fkd.competition.data import test_hash as data_test_hash
from fkd.competition.practice import make_practice
from fkd.errors import FkdError
from fkd.kaggle import ledger
from fkd.kaggle.destination import Destination, destination, offline_destination
from fkd.kaggle.download import download
from fkd.kaggle.server import serve_in_thread, served_identity
from fkd.kaggle.upload import upload, upload_pending


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory):
    """A second competition folder: other faces, other test set."""
    d = tmp_path_factory.mktemp("other")
    make_practice(d, seed=21, n_train=60, n_test=30)
    return d


@pytest.fixture
def creds(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    monkeypatch.setenv("KAGGLE_USERNAME", "dora")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)


@pytest.fixture
def two_servers(practice_dir, other_dir, tmp_path, monkeypatch, creds):
    servers = {}
    for key, d in (("A", practice_dir), ("B", other_dir)):
        srv, url = serve_in_thread(d, port=0, state_dir=tmp_path / f"state{key}", score_delay=0.1)
        servers[key] = (srv, url)
    yield servers
    for srv, _ in servers.values():
        srv.shutdown()
        srv.server_close()


def made_from(csv: Path, comp_dir: Path) -> Path:
    """A CSV as fkd writes it: a ledger row that knows the test set it was predicted from."""
    ledger.record(csv, status="local", test_hash=data_test_hash(load_data(comp_dir)), run=csv.stem)
    return csv


def test_the_server_names_itself_by_what_it_serves(two_servers, practice_dir, other_dir, monkeypatch):
    a, url_a = two_servers["A"]
    monkeypatch.setenv("FKD_KAGGLE_ENDPOINT", url_a)
    there = destination()
    assert there.name == served_identity(practice_dir) == a.state.identity and there.local
    assert there.test_hash == data_test_hash(load_data(practice_dir))
    assert served_identity(other_dir) != there.name                    # other data, other destination
    assert offline_destination(practice_dir) == Destination(there.name, None, there.test_hash)
    monkeypatch.delenv("FKD_KAGGLE_ENDPOINT")
    assert destination().name == "kaggle.com" and not destination().local


def test_every_upload_records_its_destination_and_scores_keep_them_apart(two_servers, practice_dir, other_dir,
                                                                         tmp_path, monkeypatch, capsys):
    from fkd.cli import main
    (a, url_a), (b, url_b) = two_servers["A"], two_servers["B"]
    sa = made_from(noisy_submission(practice_dir, tmp_path / "for-a.csv", noise=0.5), practice_dir)
    sb = made_from(noisy_submission(other_dir, tmp_path / "for-b.csv", noise=3.0), other_dir)
    monkeypatch.setenv("FKD_KAGGLE_ENDPOINT", url_a)
    row_a = upload(sa)
    monkeypatch.setenv("FKD_KAGGLE_ENDPOINT", url_b)
    row_b = upload(sb)
    assert row_a["destination"] == a.state.identity and row_a["endpoint"] == url_a
    assert row_b["destination"] == b.state.identity
    capsys.readouterr()
    assert main(["scores", "--local"]) == 0                             # aimed at B: only B's row
    out = capsys.readouterr().out
    assert "for-b.csv" in out and "for-a.csv" not in out and "1 row(s) of other destinations hidden" in out
    assert f"LOCAL {b.state.identity}" in out
    assert main(["scores", "--local", "--all"]) == 0
    out = capsys.readouterr().out
    assert "for-a.csv" in out and "for-b.csv" in out
    monkeypatch.delenv("FKD_KAGGLE_ENDPOINT")                           # offline: the folder's local server
    for v in ("KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(v)
    assert main(["scores", "--data-dir", str(practice_dir)]) == 0
    out = capsys.readouterr().out
    assert "for-a.csv" in out and "for-b.csv" not in out


def test_leaderboard_ranks_only_scores_from_its_own_board(two_servers, practice_dir, other_dir, tmp_path,
                                                          monkeypatch, capsys):
    from fkd.cli import main
    url_a, url_b = two_servers["A"][1], two_servers["B"][1]
    monkeypatch.setenv("FKD_KAGGLE_ENDPOINT", url_a)
    upload(made_from(noisy_submission(practice_dir, tmp_path / "great.csv", noise=0.01), practice_dir))
    monkeypatch.setenv("FKD_KAGGLE_ENDPOINT", url_b)
    capsys.readouterr()
    assert main(["leaderboard"]) == 0
    out = capsys.readouterr().out
    assert "our best" not in out                                        # A's 0.01 px never ranks on B's board
    upload(made_from(noisy_submission(other_dir, tmp_path / "meh.csv", noise=30.0), other_dir))
    assert main(["leaderboard"]) == 0
    out = capsys.readouterr().out
    best_b = ledger.get(tmp_path / "meh.csv")["public_score"]
    assert f"our best public score {best_b:.5f}" in out


def test_a_csv_made_from_other_data_is_never_sent(two_servers, practice_dir, other_dir, tmp_path, monkeypatch,
                                                  capsys):
    b, url_b = two_servers["B"]
    wrong = made_from(noisy_submission(practice_dir, tmp_path / "practice-made.csv"), practice_dir)
    monkeypatch.setenv("FKD_KAGGLE_ENDPOINT", url_b)
    with pytest.raises(FkdError, match="predicted from other data .* not sent"):
        upload(wrong)
    assert b.state.store.list_submissions("dora") == []


def test_pending_settles_only_its_own_destination(two_servers, practice_dir, other_dir, tmp_path, monkeypatch,
                                                  capsys):
    (a, url_a), (b, url_b) = two_servers["A"], two_servers["B"]
    monkeypatch.setenv("FKD_KAGGLE_ENDPOINT", url_a)
    a.state.store.set_fault("put", 1)                                         # the upload to A fails: pending for A
    sub = made_from(noisy_submission(practice_dir, tmp_path / "for-a.csv"), practice_dir)
    with pytest.raises(FkdError):
        upload(sub)
    assert ledger.get(sub)["status"] == "pending" and ledger.get(sub)["destination"] == a.state.identity
    monkeypatch.setenv("FKD_KAGGLE_ENDPOINT", url_b)
    capsys.readouterr()
    assert upload_pending() == []                                # B never sees A's CSV
    assert f"skipped for-a.csv: sent to {a.state.identity}" in capsys.readouterr().out
    assert b.state.store.list_submissions("dora") == []
    with pytest.raises(FkdError, match="was sent to .*settle it there"):
        upload(sub)
    monkeypatch.setenv("FKD_KAGGLE_ENDPOINT", url_a)                    # back at A, it settles
    assert [r["status"] for r in upload_pending()] == ["COMPLETE"]


def test_an_old_ledger_migrates_in_place_and_its_rows_stay_unknown(tmp_path):
    old = Path("submissions/ledger.sqlite")
    old.parent.mkdir()
    with sqlite3.connect(old) as con:       # the ledger as fkd wrote it before destinations were recorded
        con.execute("CREATE TABLE submissions (id INTEGER PRIMARY KEY AUTOINCREMENT, file TEXT UNIQUE NOT NULL, "
                    "created TEXT NOT NULL, run TEXT, cv_rmse REAL, tta INTEGER, local_rmse REAL, local_public REAL, "
                    "local_private REAL, competition TEXT, uid TEXT, description TEXT, status TEXT, ref TEXT, "
                    "public_score REAL, private_score REAL, error TEXT, updated TEXT)")
        con.execute("INSERT INTO submissions (file, created, status, public_score, private_score, cv_rmse) "
                    "VALUES ('/x/old.csv', '2026-01-01T00:00:00Z', 'COMPLETE', 1.5, 1.6, 1.4)")
        con.execute("INSERT INTO submissions (file, created, status) VALUES ('/x/never-sent.csv', "
                    "'2026-01-01T00:00:00Z', 'local')")
    rows = ledger.rows()
    assert [r["public_score"] for r in rows] == [1.5, None]             # nothing lost
    assert {c: rows[0][c] for c in ("destination", "endpoint", "data_hash", "test_hash")} == dict.fromkeys(
        ("destination", "endpoint", "data_hash", "test_hash"))
    assert ledger.where_label(rows[0]) == "unknown" and ledger.where_label(rows[1]) == "-"
    assert ledger.for_destination(rows, "kaggle.com", "abc") == []      # never guessed as Kaggle
    ledger.record("/x/old.csv", destination="kaggle.com")               # and the table takes new values
    assert ledger.get("/x/old.csv")["destination"] == "kaggle.com"
    with sqlite3.connect(old) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_download_marker_names_its_destination(two_servers, practice_dir, tmp_path, monkeypatch):
    (a, url_a), _ = two_servers["A"], two_servers["B"]
    monkeypatch.setenv("FKD_KAGGLE_ENDPOINT", url_a)
    download(tmp_path / "dl")
    m = json.loads((tmp_path / "dl" / ".fkd-download.json").read_text())
    assert m["destination"] == a.state.identity and m["test_hash"] == data_test_hash(load_data(practice_dir))


def test_the_cv_vs_leaderboard_title_is_never_cut_off():
    """A local server's destination name is long; the plot's title must fit inside the figure."""
    from fkd.kaggle.ledger import scatter_figure

    dest = "fkd serve a-competition-folder-with-a-rather-long-name-as-users-make-them@0123456789"
    rows = [{"destination": dest, "cv_rmse": 1.6 + i / 100, "public_score": 1.7 + i / 90, "private_score": 1.65}
            for i in range(3)]
    fig = scatter_figure(rows, dest)
    fig.canvas.draw()
    box, page = fig.axes[0].title.get_window_extent(), fig.bbox
    assert box.x0 >= page.x0 and box.x1 <= page.x1 and box.y1 <= page.y1, (box, page)
    assert dest.split("@")[1] in fig.axes[0].get_title().replace("\n", "")
